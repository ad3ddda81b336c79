//! End-to-end tests of `vmspace replay --host`: real scripts run by the built
//! binary against the Linux kernel. (The binary, not the library, because the
//! host backend forks, which a multi-threaded test harness must not do.)

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use vmspace_cli::script::file_byte;

/// Writes `text` to a fresh file in the target's temporary directory.
fn script_file(text: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "host-replay-{}-{}.vms",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `vmspace replay --host` on the given files.
fn replay(paths: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(["replay", "--host"])
        .args(paths)
        .output()
        .unwrap()
}

/// Runs `script` on the host and returns its output lines; it must succeed.
fn host(script: &str) -> Vec<String> {
    let output = replay(&[script_file(script)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script}\nstatus {}: {stderr}",
        output.status
    );
    assert_eq!(stderr, "");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `= V` for the byte at page `page` of file `id`.
fn file_value(id: u8, page: u64) -> String {
    format!("= {}", file_byte(id, page))
}

#[test]
fn spec_example() {
    let script = "\
mmap 0 16 rw- anon private
write 3 7
read 3
read 20
mprotect 4 2 r--
maps
write 4 1
mprotect 4 2 rw-
maps
";
    let expected = [
        "ok",
        "ok",
        "= 7",
        "SEGV",
        "ok",
        "maps 0-4:rw-p:anon 4-6:r--p:anon 6-16:rw-p:anon",
        "SEGV",
        "ok",
        "maps 0-16:rw-p:anon",
    ];
    assert_eq!(host(script), expected);
}

#[test]
fn blank_and_comment_lines_print_nothing() {
    assert_eq!(host("\n# nothing\n\nmaps\n\n"), ["maps"]);
    assert_eq!(host(""), Vec::<String>::new());
}

#[test]
fn file_pages_past_the_end_raise_sigbus() {
    let script = "\
mmap 0 4 r-- file:1:1022 private
read 0
read 1
read 2
read 3
maps
";
    let expected = [
        "ok".to_owned(),
        file_value(1, 1022),
        file_value(1, 1023),
        "SIGBUS".to_owned(),
        "SIGBUS".to_owned(),
        "maps 0-4:r--p:file:1:1022".to_owned(),
    ];
    assert_eq!(host(script), expected);
    assert_eq!(file_value(1, 1023), format!("= {}", (37 + 1023) % 251));
}

#[test]
fn protection_faults_are_segv() {
    let script = "\
read 5
write 5 1
mmap 0 2 r-- anon private
write 0 9
read 0
mmap 2 1 --- anon private
read 2
write 2 1
mmap 3 1 r-- file:2:7 shared
write 3 1
read 3
";
    let lines = host(script);
    let expected = [
        "SEGV", "SEGV", "ok", "SEGV", "= 0", "ok", "SEGV", "SEGV", "ok", "SEGV",
    ];
    assert_eq!(lines[..10], expected);
    assert_eq!(lines[10], file_value(2, 7));
}

/// With protection keys enabled (`ospke`), Linux maps `--x` pages with an
/// execute-only key, so loads fault; without them, x86 exec implies read.
#[test]
fn exec_only_pages_are_unreadable_with_protection_keys() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let pkeys = cpuinfo.split_whitespace().any(|flag| flag == "ospke");
    let expected_read = if pkeys { "SEGV" } else { "= 0" };
    let script = "\
mmap 0 1 --x anon private
read 0
write 0 1
mmap 1 1 r-- anon private
mprotect 1 1 --x
read 1
maps
";
    let lines = host(script);
    assert_eq!(
        lines[..6],
        ["ok", expected_read, "SEGV", "ok", "ok", expected_read]
    );
    assert_eq!(lines[6], "maps 0-2:--xp:anon");
}

#[test]
fn write_only_pages_are_readable_on_x86() {
    assert_eq!(
        host("mmap 0 1 -w- anon private\nread 0\nwrite 0 3\nread 0\n"),
        ["ok", "= 0", "ok", "= 3"]
    );
}

#[test]
fn zero_lengths_and_bad_ranges_report_errno() {
    let script = "\
mmap 0 0 rw- anon private
munmap 0 0
mprotect 0 0 r--
madvise 0 0 dontneed
mremap 0 0 0
munmap 3 1
mprotect 3 1 r--
mremap 3 1 1
mmap 0 2 rw- anon private
mmap 2 2 rw- anon private
mremap 0 2 3
mremap 0 2 2 1
";
    let expected = [
        "err EINVAL",
        "err EINVAL",
        "ok",
        "ok",
        "err EINVAL",
        "ok",
        "err ENOMEM",
        "err EFAULT",
        "ok",
        "ok",
        "err ENOMEM",
        "err EINVAL",
    ];
    assert_eq!(host(script), expected);
}

#[test]
fn adjacent_compatible_mappings_merge() {
    let script = "\
mmap 0 4 rw- anon private
mmap 4 4 rw- anon private
mmap 10 2 r-- file:3:100 shared
mmap 12 2 r-- file:3:102 shared
mmap 14 2 r-- file:3:200 shared
mmap 20 2 r-- anon private
mmap 22 2 r-- anon shared
maps
mprotect 2 2 r--
mprotect 2 2 rw-
maps
";
    let lines = host(script);
    assert!(lines[..7].iter().all(|line| line == "ok"), "{lines:?}");
    let maps = "maps 0-8:rw-p:anon 10-14:r--s:file:3:100 14-16:r--s:file:3:200 \
                20-22:r--p:anon 22-24:r--s:anon";
    assert_eq!(lines[7], maps);
    assert_eq!(lines[10], maps);
}

#[test]
fn the_window_edges_never_merge_with_the_outside() {
    let script = "\
mmap 0 1 --- anon private
mmap 65535 1 rw- anon private
mmap 65534 1 --- anon private
maps
";
    let lines = host(script);
    assert_eq!(
        lines[3],
        "maps 0-1:---p:anon 65534-65535:---p:anon 65535-65536:rw-p:anon"
    );
}

#[test]
fn shared_file_writes_are_visible_and_private_ones_are_not() {
    let script = "\
mmap 0 1 rw- file:4:5 shared
mmap 1 1 r-- file:4:5 shared
write 0 99
read 1
mmap 2 1 rw- file:5:6 private
write 2 42
mmap 3 1 r-- file:5:6 private
read 3
read 2
";
    let lines = host(script);
    assert_eq!(lines[3], "= 99");
    assert_eq!(lines[7], file_value(5, 6));
    assert_eq!(lines[8], "= 42");
}

#[test]
fn madvise_dontneed_zaps_private_copies() {
    let script = "\
mmap 0 2 rw- anon private
write 0 7
madvise 0 2 dontneed
read 0
mmap 2 1 rw- file:6:9 private
write 2 8
madvise 2 1 dontneed
read 2
mmap 3 1 rw- anon shared
write 3 5
madvise 3 1 dontneed
read 3
";
    let lines = host(script);
    assert_eq!(lines[3], "= 0");
    assert_eq!(lines[7], file_value(6, 9));
    assert_eq!(lines[11], "= 5");
}

#[test]
fn mremap_grows_in_place_and_moves() {
    let script = "\
mmap 0 4 rw- anon private
write 1 5
mremap 0 4 8
maps
mremap 0 8 8 100
read 101
read 1
maps
mmap 200 4 r-- file:7:10 private
mremap 201 2 2 300
maps
";
    let lines = host(script);
    assert_eq!(lines[2], "ok");
    assert_eq!(lines[3], "maps 0-8:rw-p:anon");
    assert_eq!(lines[4..7], ["ok", "= 5", "SEGV"]);
    assert_eq!(lines[7], "maps 100-108:rw-p:anon");
    assert_eq!(
        lines[10],
        "maps 100-108:rw-p:anon 200-201:r--p:file:7:10 203-204:r--p:file:7:13 \
         300-302:r--p:file:7:11"
    );
}

#[test]
fn many_mappings_fit_in_one_maps_line() {
    let mut script = String::new();
    for page in 0..5000 {
        let prot = if page % 2 == 0 { "rw-" } else { "r--" };
        script.push_str(&format!("mmap {page} 1 {prot} anon private\n"));
    }
    script.push_str("maps\n");
    let lines = host(&script);
    let entries: Vec<&str> = lines[5000].split(' ').skip(1).collect();
    assert_eq!(entries.len(), 5000);
    assert_eq!(entries[0], "0-1:rw-p:anon");
    assert_eq!(entries[4999], "4999-5000:r--p:anon");
}

#[test]
fn several_files_print_headers() {
    let first = script_file("mmap 0 1 rw- anon private\n");
    let second = script_file("read 0\nmaps\n");
    let output = replay(&[first.clone(), second.clone()]);
    assert!(output.status.success());
    let expected = format!(
        "== {}\nok\n== {}\nSEGV\nmaps\n",
        first.display(),
        second.display()
    );
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
}

#[test]
fn malformed_script_prints_nothing_and_exits_2() {
    let path = script_file("mmap 0 1 rw- anon private\n\n# comment\nread 65536\n");
    let output = replay(std::slice::from_ref(&path));
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("{}:line 4: ", path.display())),
        "{stderr}"
    );
}

#[test]
fn one_malformed_file_stops_the_whole_batch() {
    let good = script_file("maps\n");
    let bad = script_file("maps extra\n");
    let output = replay(&[good, bad]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
}

#[test]
fn unreadable_file_exits_1() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-script.vms");
    let output = replay(&[missing]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[test]
fn invalid_utf8_is_malformed_not_a_crash() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("host-replay-binary.vms");
    std::fs::write(&path, b"maps\n\xff\xfe\n").unwrap();
    let output = replay(&[path]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains(":line 2: "));
}

#[test]
fn library_refuses_to_fork_from_a_multithreaded_process() {
    let (stop, parked) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || parked.recv());
    let error = vmspace_cli::host::run_on_host(&[]).unwrap_err();
    assert!(error.to_string().contains("single-threaded"), "{error}");
    stop.send(()).unwrap();
    helper.join().unwrap().unwrap();
}
