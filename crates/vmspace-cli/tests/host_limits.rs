//! The limits a vmscript cannot reach, checked through the library's API
//! against the host kernel: the same calls with the same arguments on both,
//! the same result (`ok` or the errno) expected.
//!
//! * **The address limit.** On x86-64 with 4-level page tables a user
//!   mapping must end at or below `2^47 - 4096` (Linux's `TASK_SIZE`): the
//!   last page below `2^47` is never mappable. vmscript's pages are relative
//!   to a 256 MiB window, so only this test reaches that end.
//! * **`vm.max_map_count`.** Linux lets an `mmap` in while the map count is
//!   at most the limit, so the count reaches the limit plus one; a split
//!   needs the count below the limit. The host's limit is global (65 530
//!   here) and its process holds mappings of its own, so the test compares
//!   counts relative to the limit: on the host, the mappings the child has
//!   left room for; in the library, an address space with `max_map_count`
//!   of 8.
//!
//! The host side runs in a forked child that makes raw system calls only
//! (the test harness has other threads, so the child must not allocate) and
//! writes its results into a shared page made before the fork.
//!
//! Every case is printed; any difference fails the test.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::sync::Arc;

use vmspace::{AddressSpace, Config, FrameAllocator, MapFlags, MapSource, Prot, RemapFlags};

const PAGE: u64 = 4096;
/// The top of a 4-level x86-64 address space.
const TOP: u64 = 1 << 47;
/// The library's `max_map_count` for the map-count cases.
const VMSPACE_MAX_MAP_COUNT: usize = 8;
/// Results the shared page has room for.
const SLOTS: usize = 64;

/// One comparison: a case name, the host's result and the library's.
struct Outcome {
    case: &'static str,
    host: String,
    vmspace: String,
}

/// `0` for success, else the errno.
fn code<T>(result: Result<T, vmspace::Errno>) -> i64 {
    match result {
        Ok(_) => 0,
        Err(errno) => i64::from(errno.code()),
    }
}

/// `ok`, or the errno's name.
fn errno_name(code: i64) -> String {
    let names = [
        (libc::ENOMEM, "ENOMEM"),
        (libc::EINVAL, "EINVAL"),
        (libc::EFAULT, "EFAULT"),
        (libc::EEXIST, "EEXIST"),
    ];
    match names.iter().find(|&&(errno, _)| i64::from(errno) == code) {
        _ if code == 0 => "ok".to_owned(),
        Some(&(_, name)) => name.to_owned(),
        None => format!("errno {code}"),
    }
}

/// Counts the lines of `/proc/self/maps` with system calls and a buffer on
/// the stack (no allocation: safe in a forked child).
///
/// # Safety
///
/// Makes raw system calls only.
unsafe fn maps_lines() -> i64 {
    let mut buffer = [0u8; 4096];
    let mut lines = 0;
    // SAFETY: reads into a stack buffer of the length passed.
    unsafe {
        let fd = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY);
        loop {
            let read = libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len());
            if read <= 0 {
                break;
            }
            lines += buffer[..read as usize]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as i64;
        }
        libc::close(fd);
    }
    lines
}

// ---- the host ----

/// The address-limit cases on the host, in the order of [`ADDRESS_CASES`].
///
/// # Safety
///
/// Call only in a freshly forked child: it maps and unmaps at the top of the
/// address space, where nothing of the process lives.
unsafe fn host_address_cases(out: &mut [i64]) {
    let fixed = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    let noreplace = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
    // SAFETY: raw system calls on addresses no Rust object lives at.
    unsafe {
        out[0] = host_mmap(TOP - PAGE, PAGE, fixed);
        out[1] = host_mmap(TOP - 2 * PAGE, PAGE, fixed);
        out[2] = host_mmap(TOP - 2 * PAGE, 2 * PAGE, fixed);
        out[3] = host_mmap(TOP, PAGE, fixed);
        out[4] = host_mmap(TOP - PAGE, PAGE, noreplace);
        out[5] = result(libc::munmap((TOP - PAGE) as *mut _, PAGE as usize));
        out[6] = result(libc::munmap((TOP - 2 * PAGE) as *mut _, PAGE as usize));
        out[7] = result(libc::munmap((TOP - 2 * PAGE) as *mut _, 2 * PAGE as usize));
        let prot = libc::PROT_READ;
        out[8] = result(libc::mprotect((TOP - PAGE) as *mut _, PAGE as usize, prot));
        let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        for (slot, dest) in [(9, TOP - PAGE), (10, TOP - 2 * PAGE)] {
            let source = libc::mmap(std::ptr::null_mut(), PAGE as usize, prot, anon, -1, 0);
            let moved = libc::mremap(source, PAGE as usize, PAGE as usize, flags, dest);
            out[slot] = match moved == libc::MAP_FAILED {
                true => i64::from(*libc::__errno_location()),
                false => 0,
            };
            libc::munmap(source, PAGE as usize);
            libc::munmap(dest as *mut _, PAGE as usize);
        }
    }
}

/// `mmap` of anonymous read-only memory; unmapped again on success.
///
/// # Safety
///
/// As [`host_address_cases`].
unsafe fn host_mmap(addr: u64, len: u64, flags: i32) -> i64 {
    // SAFETY: see the function's contract.
    unsafe {
        let mapped = libc::mmap(addr as *mut _, len as usize, libc::PROT_READ, flags, -1, 0);
        if mapped == libc::MAP_FAILED {
            return i64::from(*libc::__errno_location());
        }
        libc::munmap(mapped, len as usize);
        0
    }
}

/// `0` or the errno of a call returning 0 or -1.
///
/// # Safety
///
/// Reads this thread's errno.
unsafe fn result(ret: i32) -> i64 {
    match ret {
        0 => 0,
        // SAFETY: errno is this thread's, read right after the call.
        _ => i64::from(unsafe { *libc::__errno_location() }),
    }
}

/// The map-count sequence on the host, filled up to the host's limit:
/// `out[0]` is the number of one-page mmaps that succeeded after a
/// three-page one, `out[1..6]` the results of the calls at and around the
/// limit (as [`vmspace_map_count`]), `out[SLOTS - 1]` the lines of
/// `/proc/self/maps` before the filling.
///
/// # Safety
///
/// Call only in a freshly forked child.
unsafe fn host_map_count(out: &mut [i64]) {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    let prot = libc::PROT_READ;
    // SAFETY: raw system calls in a range the child reserved and released
    // (nothing else of the child is mapped there or allocates meanwhile).
    unsafe {
        let span = 2 * 70_000 * PAGE as usize;
        let area = libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        ) as u64;
        libc::munmap(area as *mut _, span);
        let at = |page: u64| (area + page * PAGE) as *mut libc::c_void;
        libc::mmap(at(0), 3 * PAGE as usize, prot, flags, -1, 0);
        out[SLOTS - 1] = maps_lines();
        let mut count = 0;
        while libc::mmap(at(4 + 2 * count), PAGE as usize, prot, flags, -1, 0) != libc::MAP_FAILED {
            count += 1;
        }
        out[0] = count as i64;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let page = PAGE as usize;
        out[1] = result(libc::mprotect(at(0), page, rw));
        out[2] = result(libc::munmap(at(1), page));
        libc::munmap(at(4), page);
        out[3] = result(libc::mprotect(at(0), page, rw));
        out[4] = result(libc::munmap(at(2), page));
        libc::munmap(at(6), page);
        out[5] = result(libc::munmap(at(1), page));
    }
}

/// Runs `cases` in a forked child and returns what it wrote.
fn on_host(cases: unsafe fn(&mut [i64])) -> Vec<i64> {
    // SAFETY: a fresh shared anonymous page, unmapped below.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(shared, libc::MAP_FAILED);
    // SAFETY: the child only makes system calls and writes the shared page
    // (no allocation, no lock), then leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: the page is SLOTS i64s long and only this process writes it.
        unsafe {
            let out = std::slice::from_raw_parts_mut(shared as *mut i64, SLOTS);
            cases(out);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child made above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the host child failed: status {status}"
    );
    // SAFETY: the child has exited; the page is ours alone.
    let results = unsafe { std::slice::from_raw_parts(shared as *const i64, SLOTS).to_vec() };
    // SAFETY: unmaps the page mapped above.
    unsafe { libc::munmap(shared, PAGE as usize) };
    results
}

// ---- the library ----

fn space(max_map_count: usize) -> Arc<AddressSpace> {
    let frames = Arc::new(FrameAllocator::new(1 << 20).unwrap());
    let config = Config {
        max_map_count,
        ..Config::default()
    };
    AddressSpace::new(config, frames).unwrap()
}

fn fixed() -> MapFlags {
    MapFlags {
        fixed: true,
        ..MapFlags::default()
    }
}

/// The address-limit cases in the library, as [`host_address_cases`].
fn vmspace_address_cases() -> Vec<i64> {
    let space = space(Config::default().max_map_count);
    let map = |addr: u64, len: u64, flags: MapFlags| {
        let mapped = space.mmap(addr, len, Prot::READ, flags, MapSource::Anon);
        if let Ok(addr) = mapped {
            space.munmap(addr, len).unwrap();
        }
        code(mapped)
    };
    let noreplace = MapFlags {
        fixed_noreplace: true,
        ..MapFlags::default()
    };
    let mut out = vec![
        map(TOP - PAGE, PAGE, fixed()),
        map(TOP - 2 * PAGE, PAGE, fixed()),
        map(TOP - 2 * PAGE, 2 * PAGE, fixed()),
        map(TOP, PAGE, fixed()),
        map(TOP - PAGE, PAGE, noreplace),
        code(space.munmap(TOP - PAGE, PAGE)),
        code(space.munmap(TOP - 2 * PAGE, PAGE)),
        code(space.munmap(TOP - 2 * PAGE, 2 * PAGE)),
        code(space.mprotect(TOP - PAGE, PAGE, Prot::READ)),
    ];
    for dest in [TOP - PAGE, TOP - 2 * PAGE] {
        let source = space
            .mmap(0, PAGE, Prot::READ, MapFlags::default(), MapSource::Anon)
            .unwrap();
        let flags = RemapFlags {
            may_move: true,
            fixed: Some(dest),
        };
        out.push(code(space.mremap(source, PAGE, PAGE, flags)));
        let _ = space.munmap(source, PAGE);
        let _ = space.munmap(dest, PAGE);
    }
    out
}

/// The names of the address-limit cases, in order.
const ADDRESS_CASES: [&str; 11] = [
    "mmap FIXED, the last page below 2^47",
    "mmap FIXED, the page before it",
    "mmap FIXED, two pages up to 2^47",
    "mmap FIXED at 2^47",
    "mmap FIXED_NOREPLACE, the last page below 2^47",
    "munmap the last page below 2^47",
    "munmap the page before it",
    "munmap two pages up to 2^47",
    "mprotect the last page below 2^47",
    "mremap FIXED to the last page below 2^47",
    "mremap FIXED to the page before it",
];

/// The map-count sequence in the library, as [`host_map_count`], and
/// whether `check_invariants` passed at the limit plus one.
fn vmspace_map_count() -> (Vec<i64>, bool) {
    let space = space(VMSPACE_MAX_MAP_COUNT);
    let base = 1 << 30;
    let at = |page: u64| base + page * PAGE;
    let map = |page: u64, pages: u64| {
        space.mmap(at(page), pages * PAGE, Prot::READ, fixed(), MapSource::Anon)
    };
    map(0, 3).unwrap();
    let mut count = 0;
    while map(4 + 2 * count, 1).is_ok() && count < 1000 {
        count += 1;
    }
    let invariants = space.check_invariants().is_ok();
    let rw = Prot::READ_WRITE;
    let mut out = vec![count as i64];
    out.push(code(space.mprotect(at(0), PAGE, rw)));
    out.push(code(space.munmap(at(1), PAGE)));
    space.munmap(at(4), PAGE).unwrap();
    out.push(code(space.mprotect(at(0), PAGE, rw)));
    out.push(code(space.munmap(at(2), PAGE)));
    space.munmap(at(6), PAGE).unwrap();
    out.push(code(space.munmap(at(1), PAGE)));
    (out, invariants)
}

/// Whether `/proc/self/maps` lists the `[vsyscall]` page, which is not a
/// VMA of the process (the map count leaves it out).
fn host_has_vsyscall_line() -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|line| line.ends_with("[vsyscall]"))
}

// ---- the test ----

#[test]
fn limits_match_the_host() {
    let mut outcomes = Vec::new();
    let la57 = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .split_whitespace()
        .any(|flag| flag == "la57");
    if la57 {
        eprintln!("host_limits: 5-level paging: the address-limit cases are skipped");
    } else {
        let host = on_host(host_address_cases);
        let library = vmspace_address_cases();
        for (index, case) in ADDRESS_CASES.into_iter().enumerate() {
            outcomes.push(Outcome {
                case,
                host: errno_name(host[index]),
                vmspace: errno_name(library[index]),
            });
        }
    }
    map_count_outcomes(&mut outcomes);
    judge(&outcomes);
}

/// Compares the map-count sequences, relative to each side's limit.
fn map_count_outcomes(outcomes: &mut Vec<Outcome>) {
    let limit: i64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let host = on_host(host_map_count);
    let (library, invariants) = vmspace_map_count();
    let before = host[SLOTS - 1] - i64::from(host_has_vsyscall_line());
    // How many mmaps got in beyond `limit` mappings, from `mapped` mappings.
    let over = |limit: i64, mapped: i64, filled: i64| {
        format!("count reached the limit + {}", mapped + filled - limit)
    };
    outcomes.push(Outcome {
        case: "max_map_count: mmaps allowed from empty",
        host: over(limit, before, host[0]),
        vmspace: over(VMSPACE_MAX_MAP_COUNT as i64, 1, library[0]),
    });
    outcomes.push(Outcome {
        case: "max_map_count: check_invariants at the limit plus one",
        host: "ok".to_owned(),
        vmspace: if invariants { "ok" } else { "violation" }.to_owned(),
    });
    let steps = [
        "max_map_count: mprotect splitting at the limit plus one",
        "max_map_count: munmap of a middle at the limit plus one",
        "max_map_count: mprotect splitting at the limit",
        "max_map_count: munmap of a tail page at the limit",
        "max_map_count: munmap of a middle below the limit",
    ];
    for (index, case) in steps.into_iter().enumerate() {
        outcomes.push(Outcome {
            case,
            host: errno_name(host[index + 1]),
            vmspace: errno_name(library[index + 1]),
        });
    }
}

/// Prints every case and fails on any difference.
fn judge(outcomes: &[Outcome]) {
    let mut failures = Vec::new();
    for outcome in outcomes {
        let line = format!(
            "{}: host {}, vmspace {}",
            outcome.case, outcome.host, outcome.vmspace
        );
        eprintln!("host_limits: {line}");
        if outcome.host != outcome.vmspace {
            failures.push(line);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
