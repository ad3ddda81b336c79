//! The library API: behaviours a user relies on, on every strategy, plus bad
//! input (every bad argument is an error value, never a panic).

use std::sync::Arc;
use vmspace::*;

const P: u64 = PAGE_SIZE;

fn space(strategy: Strategy, arena_pages: u64) -> Arc<AddressSpace> {
    let frames = Arc::new(FrameAllocator::new(arena_pages * P).unwrap());
    AddressSpace::new(
        Config {
            strategy,
            ..Config::default()
        },
        frames,
    )
    .unwrap()
}

fn anon(s: &AddressSpace, addr: u64, len: u64, prot: Prot, fixed: bool) -> Result<u64, Errno> {
    let flags = MapFlags {
        fixed,
        ..MapFlags::default()
    };
    s.mmap(addr, len, prot, flags, MapSource::Anon)
}

fn each_strategy(f: impl Fn(Strategy)) {
    for s in Strategy::ALL {
        f(s);
    }
}

#[test]
fn bad_arguments_are_errors() {
    each_strategy(|st| {
        let s = space(st, 64);
        let rw = Prot::READ_WRITE;
        assert_eq!(anon(&s, 0x10000, 0, rw, true), Err(Errno::EINVAL));
        assert_eq!(anon(&s, 0x10001, P, rw, true), Err(Errno::EINVAL));
        assert_eq!(anon(&s, 0x10000, u64::MAX, rw, true), Err(Errno::ENOMEM));
        assert_eq!(
            anon(&s, ADDR_LIMIT - P, 2 * P, rw, true),
            Err(Errno::ENOMEM)
        );
        assert_eq!(anon(&s, 0x1000, P, rw, true), Err(Errno::EPERM));
        assert_eq!(s.munmap(0x10001, P), Err(Errno::EINVAL));
        assert_eq!(s.munmap(0x10000, 0), Err(Errno::EINVAL));
        assert_eq!(s.munmap(!(P - 1), 2 * P), Err(Errno::EINVAL));
        assert_eq!(s.mprotect(0x10001, P, rw), Err(Errno::EINVAL));
        assert_eq!(s.mprotect(0x10000, 0, rw), Ok(()));
        assert_eq!(s.mprotect(0x10000, P, rw), Err(Errno::ENOMEM));
        assert_eq!(s.mprotect(0x10000, u64::MAX, rw), Err(Errno::ENOMEM));
        assert_eq!(
            s.mremap(0x10001, P, P, RemapFlags::default()),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mremap(0x10000, P, 0, RemapFlags::default()),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mremap(0x10000, P, P, RemapFlags::default()),
            Err(Errno::EFAULT)
        );
        let fixed_only = RemapFlags {
            may_move: false,
            fixed: Some(0x20000),
        };
        assert_eq!(s.mremap(0x10000, P, P, fixed_only), Err(Errno::EINVAL));
        assert_eq!(s.madvise_dontneed(0x10001, P), Err(Errno::EINVAL));
        assert_eq!(s.madvise_dontneed(0x10000, P), Err(Errno::ENOMEM));
        let file = File::new(4, Box::new(ZeroStore), s.frames().clone());
        let src = MapSource::File {
            file,
            pgoff: u64::MAX - 1,
        };
        assert_eq!(
            s.mmap(0x10000, 4 * P, rw, MapFlags::default(), src),
            Err(Errno::EOVERFLOW)
        );
        assert_eq!(s.map_count(), 0);
    });
}

#[test]
fn placement_is_top_down_and_respects_noreplace() {
    let s = space(Strategy::PerVma, 64);
    let base = s.config().mmap_base;
    let a = anon(&s, 0, 3 * P, Prot::READ, false).unwrap();
    assert_eq!(a, base - 3 * P);
    let b = anon(&s, 0, P, Prot::READ_WRITE, false).unwrap();
    assert_eq!(b, a - P);
    let hint = 0x4000_0000;
    assert_eq!(anon(&s, hint, P, Prot::READ, false), Ok(hint));
    let noreplace = MapFlags {
        fixed_noreplace: true,
        ..MapFlags::default()
    };
    assert_eq!(
        s.mmap(hint, P, Prot::READ, noreplace, MapSource::Anon),
        Err(Errno::EEXIST)
    );
    // A hint that is taken is only a hint.
    let c = anon(&s, hint, P, Prot::READ, false).unwrap();
    assert_ne!(c, hint);
}

#[test]
fn map_count_limit_is_enforced() {
    let frames = Arc::new(FrameAllocator::new(16 * P).unwrap());
    let s = AddressSpace::new(
        Config {
            max_map_count: 3,
            ..Config::default()
        },
        frames,
    )
    .unwrap();
    let base = 0x100_0000;
    anon(&s, base, 16 * P, Prot::READ_WRITE, true).unwrap();
    // Alternate protections: each mprotect splits.
    s.mprotect(base + P, P, Prot::READ).unwrap();
    assert_eq!(s.map_count(), 3);
    assert_eq!(s.mprotect(base + 3 * P, P, Prot::READ), Err(Errno::ENOMEM));
    assert_eq!(s.munmap(base + 10 * P, P), Err(Errno::ENOMEM));
    assert_eq!(s.map_count(), 3);
}

#[test]
fn frames_come_back_after_each_unmap() {
    each_strategy(|st| {
        let s = space(st, 512);
        let mut cpu = s.cpu();
        for round in 0..200u64 {
            let a = anon(&s, 0, 256 * P, Prot::READ_WRITE, false).unwrap();
            for p in 0..256 {
                cpu.write_u8(a + p * P, round as u8).unwrap();
            }
            assert_eq!(s.frames().in_use(), 256);
            s.munmap(a, 256 * P).unwrap();
            assert_eq!(s.frames().in_use(), 0, "round {round} leaked frames");
        }
    });
}

#[test]
fn anonymous_memory_zero_fill_cow_and_dontneed() {
    each_strategy(|st| {
        let s = space(st, 64);
        let mut cpu = s.cpu();
        let a = anon(&s, 0, 4 * P, Prot::READ_WRITE, false).unwrap();
        assert_eq!(cpu.read_u8(a + 10).unwrap(), 0);
        assert_eq!(s.frames().in_use(), 0, "a read maps the zero frame");
        cpu.write_u8(a + 10, 3).unwrap();
        assert_eq!(cpu.read_u8(a + 10).unwrap(), 3);
        assert_eq!(s.frames().in_use(), 1);
        s.madvise_dontneed(a, 4 * P).unwrap();
        assert_eq!(cpu.read_u8(a + 10).unwrap(), 0);
        assert_eq!(s.frames().in_use(), 0);
        s.mprotect(a, 4 * P, Prot::READ).unwrap();
        let f = cpu.write_u8(a, 1).unwrap_err();
        assert_eq!(
            (f.addr, f.access, f.cause),
            (a, Access::Write, FaultCause::Protection)
        );
        let f = cpu.read_u8(a - P).unwrap_err();
        assert_eq!(f.cause, FaultCause::NoMapping);
        let x = anon(&s, 0, P, Prot::new(false, false, true), false).unwrap();
        // Without execute-only keys (the default), as on x86-64: execute
        // implies read (`issue_012.rs` checks the keyed case).
        assert_eq!(cpu.read_u8(x).unwrap(), 0);
        assert_eq!(cpu.fetch_u8(x).unwrap(), 0);
    });
}

#[test]
fn words_and_atomics() {
    let s = space(Strategy::Speculative, 16);
    let mut cpu = s.cpu();
    let a = anon(&s, 0, P, Prot::READ_WRITE, false).unwrap();
    cpu.write_u64(a + 8, 0x0102_0304_0506_0708).unwrap();
    assert_eq!(cpu.read_u8(a + 8).unwrap(), 8);
    assert_eq!(cpu.read_u64(a + 8).unwrap(), 0x0102_0304_0506_0708);
    assert_eq!(
        cpu.compare_exchange_u64(a + 8, 1, 2).unwrap(),
        Err(0x0102_0304_0506_0708)
    );
    assert_eq!(cpu.swap_u64(a + 16, 5).unwrap(), 0);
    assert_eq!(cpu.fetch_add_u64(a + 16, 3).unwrap(), 5);
    assert_eq!(cpu.compare_exchange_u64(a + 16, 8, 1).unwrap(), Ok(8));
    assert_eq!(
        cpu.read_u64(a + 3).unwrap_err().cause,
        FaultCause::Protection
    );
    let mut buf = [0u8; 5];
    cpu.write_bytes(a + P - 2, b"hello").unwrap_err();
    cpu.read_bytes(a + P - 2, &mut buf).unwrap_err();
    cpu.write_bytes(a + 100, b"hello").unwrap();
    cpu.read_bytes(a + 100, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

#[test]
fn shared_file_writes_are_visible_and_reach_the_store() {
    each_strategy(|st| {
        let s = space(st, 64);
        let dir =
            std::env::temp_dir().join(format!("vmspace-api-{}-{}", std::process::id(), st.name()));
        let disk = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&dir)
            .unwrap();
        disk.set_len(4 * P).unwrap();
        let file = File::new(4, Box::new(DiskStore::new(disk)), s.frames().clone());
        let shared = MapFlags {
            shared: true,
            ..MapFlags::default()
        };
        let src = || MapSource::File {
            file: file.clone(),
            pgoff: 0,
        };
        let a = s.mmap(0, 4 * P, Prot::READ_WRITE, shared, src()).unwrap();
        let b = s.mmap(0, 4 * P, Prot::READ, shared, src()).unwrap();
        let c = s
            .mmap(0, 4 * P, Prot::READ_WRITE, MapFlags::default(), src())
            .unwrap();
        let mut cpu = s.cpu();
        cpu.write_u8(a + P + 7, 42).unwrap();
        assert_eq!(cpu.read_u8(b + P + 7).unwrap(), 42);
        assert_eq!(
            cpu.read_u8(c + P + 7).unwrap(),
            42,
            "private mapping reads the cache"
        );
        cpu.write_u8(c + P + 7, 1).unwrap();
        assert_eq!(
            cpu.read_u8(b + P + 7).unwrap(),
            42,
            "private write stays private"
        );
        s.msync(a, 4 * P).unwrap();
        let on_disk = std::fs::read(&dir).unwrap();
        assert_eq!(on_disk[(P + 7) as usize], 42);
        // Past the end of the file: a bus error.
        let d = s.mmap(0, 8 * P, Prot::READ, shared, src()).unwrap();
        assert_eq!(
            cpu.read_u8(d + 5 * P).unwrap_err().cause,
            FaultCause::PastEnd
        );
        cpu.write_u8(a + 2 * P, 9).unwrap();
        drop(cpu);
        drop(s);
        drop(file);
        let on_disk = std::fs::read(&dir).unwrap();
        assert_eq!(
            on_disk[(2 * P) as usize],
            9,
            "dropping the file writes back"
        );
        let _ = std::fs::remove_file(&dir);
    });
}

#[test]
fn out_of_memory_is_a_fault_not_a_panic() {
    let s = space(Strategy::PerVma, 2);
    let mut cpu = s.cpu();
    let a = anon(&s, 0, 4 * P, Prot::READ_WRITE, false).unwrap();
    cpu.write_u8(a, 1).unwrap();
    cpu.write_u8(a + P, 1).unwrap();
    assert_eq!(
        cpu.write_u8(a + 2 * P, 1).unwrap_err().cause,
        FaultCause::OutOfMemory
    );
    s.frames().set_failure_rate(1.0);
    s.munmap(a, 4 * P).unwrap();
    let b = anon(&s, 0, P, Prot::READ_WRITE, false).unwrap();
    assert_eq!(
        cpu.write_u8(b, 1).unwrap_err().cause,
        FaultCause::OutOfMemory
    );
    s.frames().set_failure_rate(0.0);
    cpu.write_u8(b, 1).unwrap();
}

#[test]
fn stack_grows_down_but_keeps_the_guard_gap() {
    each_strategy(|st| {
        let s = space(st, 64);
        let mut cpu = s.cpu();
        let top = 0x4000_0000;
        let grows = MapFlags {
            fixed: true,
            growsdown: true,
            ..MapFlags::default()
        };
        s.mmap(top - 4 * P, 4 * P, Prot::READ_WRITE, grows, MapSource::Anon)
            .unwrap();
        cpu.write_u8(top - 10 * P, 5).unwrap();
        assert_eq!(s.maps()[0].start, top - 10 * P);
        // A mapping below, closer than the guard gap, stops the growth.
        let low = top - 10 * P - STACK_GUARD_GAP - 2 * P;
        anon(&s, low, P, Prot::READ_WRITE, true).unwrap();
        assert!(cpu.write_u8(top - 10 * P - 4 * P, 1).is_err());
        assert_eq!(cpu.read_u8(top - 10 * P).unwrap(), 5);
    });
}

/// Stack growth follows Linux's `expand_downwards` limits, each checked on the
/// host kernel (Linux 6.x, 8 MiB `RLIMIT_STACK`) with the same layout: the
/// page offset may not go below zero (a faulted stack moved up by `mremap`
/// keeps its small offset), a `PROT_NONE` mapping below does not count for the
/// guard gap, the stack stays within the stack limit, and it never grows
/// below `mmap_min_addr`. A refused growth is a fault, never a panic.
#[test]
fn stack_growth_limits_match_linux() {
    each_strategy(|st| {
        let s = space(st, 64);
        let mut cpu = s.cpu();
        let rw = Prot::READ_WRITE;
        let grows = MapFlags {
            fixed: true,
            growsdown: true,
            ..MapFlags::default()
        };
        let stack = |addr: u64| s.mmap(addr, 4 * P, rw, grows, MapSource::Anon).unwrap();
        // Page offset 16, moved to 1 GiB after its first fault.
        let (a, b) = (0x10000, 0x4000_0000);
        stack(a);
        cpu.write_u8(a, 1).unwrap();
        let moved = RemapFlags {
            may_move: true,
            fixed: Some(b),
        };
        assert_eq!(s.mremap(a, 4 * P, 4 * P, moved), Ok(b));
        assert!(cpu.write_u8(b - 17 * P, 1).is_err());
        cpu.write_u8(b - 16 * P, 1).unwrap();
        assert!(cpu.write_u8(b - 17 * P, 1).is_err());
        // A PROT_NONE neighbour inside the guard gap does not stop growth; a
        // readable one does.
        let c = 0x5000_0000;
        stack(c);
        anon(&s, c - 8 * P, P, Prot::NONE, true).unwrap();
        cpu.write_u8(c - 2 * P, 1).unwrap();
        s.mprotect(c - 8 * P, P, Prot::READ).unwrap();
        assert!(cpu.write_u8(c - 4 * P, 1).is_err());
        // The stack limit.
        let d = 0x6000_0000;
        stack(d);
        let limit = s.config().stack_limit;
        assert!(cpu.write_u8(d + 4 * P - limit - P, 1).is_err());
        cpu.write_u8(d + 4 * P - limit, 1).unwrap();
        // mmap_min_addr.
        let e = s.config().mmap_min_addr + P;
        s.mmap(e, P, rw, grows, MapSource::Anon).unwrap();
        assert!(cpu.write_u8(e - 2 * P, 1).is_err());
        cpu.write_u8(e - P, 1).unwrap();
        s.check_invariants().unwrap();
    });
}
