//! The command line's contract with its user, run on the built binary: bad
//! usage (an unknown workload or strategy, a flag value out of its bounds, an
//! output path that cannot be written, a malformed script) exits 2 with a
//! short message and before any work starts; `--help` shows the defaults, the
//! bounds and the exit codes; nothing hangs and nothing echoes a huge input.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any of these commands may take: they must all fail (or print
/// help) at once, before a benchmark or a script runs.
const PROMPT: Duration = Duration::from_secs(20);

/// Runs `vmspace ARGS` with `env`, killing it if it outlives [`PROMPT`];
/// returns its output and how long it ran.
fn vmspace_env(args: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmspace");
    while child.try_wait().expect("wait for vmspace").is_none() {
        if started.elapsed() > PROMPT {
            child.kill().ok();
            let out = child.wait_with_output().expect("reap vmspace");
            panic!(
                "vmspace {args:?} still ran after {PROMPT:?}; stderr so far: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect vmspace output");
    (out, started.elapsed())
}

fn vmspace(args: &[&str]) -> Output {
    vmspace_env(args, &[]).0
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a usage error: exit 2, nothing on stdout, a message on stderr
/// that contains `needle`.
fn assert_usage_error(args: &[&str], needle: &str) {
    let out = vmspace(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "vmspace {args:?}: {err}");
    assert!(
        stdout(&out).is_empty(),
        "vmspace {args:?} printed: {}",
        stdout(&out)
    );
    assert!(
        err.contains(needle),
        "vmspace {args:?}: {err:?} lacks {needle:?}"
    );
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmspace-cli-usage-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn unknown_workloads_and_strategies_exit_2() {
    assert_usage_error(&["bench", "nosuch"], "nosuch");
    assert_usage_error(&["bench", "mmap1", "--strategy", "bogus"], "bogus");
    assert_usage_error(&["bench", "mmap1", "--strategy", "per-vma,bogus"], "bogus");
    assert_usage_error(&["bench", "--strategy", ""], "strategy");
}

#[test]
fn thread_counts_are_bounded() {
    for threads in ["0", "1025", "5000", "100000", "1,2,99999"] {
        assert_usage_error(&["bench", "mmap1", "--threads", threads], "1024");
    }
    assert_usage_error(
        &[
            "bench",
            "mmap1",
            "--strategy",
            "host",
            "--threads",
            "100000",
        ],
        "1024",
    );
    assert_usage_error(&["bench", "mmap1", "--threads", "x"], "--threads");
}

#[test]
fn seconds_are_bounded() {
    for seconds in ["1e9", "3601", "0", "-1", "nan", "inf", "x"] {
        assert_usage_error(&["bench", "mmap1", "--seconds", seconds], "3600");
    }
}

#[test]
fn repeats_are_bounded() {
    for repeat in ["1000000000000", "1001", "0", "x"] {
        assert_usage_error(&["bench", "mmap1", "--repeat", repeat], "1000");
    }
}

/// A run that would take 30 s refuses an output path it cannot write at
/// once, not after measuring.
#[test]
fn unwritable_outputs_are_refused_before_the_run() {
    let dir = scratch("outputs");
    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let under_file = file.join("results.json");
    let slow = ["bench", "mmap1", "--strategy", "per-vma", "--seconds", "30"];
    for (flag, path) in [
        ("--json", under_file.to_str().unwrap()),
        ("--json", dir.to_str().unwrap()),
        ("--plot", under_file.to_str().unwrap()),
        ("--plot", file.to_str().unwrap()),
    ] {
        let mut args = slow.to_vec();
        args.extend([flag, path]);
        let (out, took) = vmspace_env(&args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {path}: {err}");
        assert!(
            took < Duration::from_secs(10),
            "{flag} {path}: ran {took:?}"
        );
        assert!(stdout(&out).is_empty(), "{flag} {path}: {}", stdout(&out));
        assert!(err.contains(flag) && err.contains(path), "{err}");
    }
    // Nothing was left behind by the checks.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_help_shows_defaults_and_bounds() {
    let out = vmspace(&["bench", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in [
        "[default: all of them but the named-only ones]",
        "[default: 1,2 for page_fault1, page_fault2, page_fault3 and mmap1; 2 for the others]",
        "[default: 0.25; --quick: 0.1]",
        "[default: 3; --quick: 1]",
        "[default: mmap-lock,per-vma,speculative,host,no-fault]",
        "1..=1024",
        "at most 3600",
        "1..=1000",
        "page_fault1",
        "lookup",
        "mirror",
        "reclaim_mirror",
    ] {
        assert!(
            help.contains(needle),
            "bench --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn top_level_help_lists_the_exit_codes() {
    let out = vmspace(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in ["Exit status", "0 ", "1 ", "2 ", "usage"] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

/// `/dev/zero` is one endless line: refused as malformed after 4 KiB, at
/// once, with a short message.
#[test]
fn replay_of_dev_zero_fails_fast() {
    let (out, took) = vmspace_env(&["replay", "/dev/zero"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(10), "ran {took:?}");
    assert!(err.len() < 300, "{} bytes of stderr: {err:?}", err.len());
    assert!(err.contains("line 1") && err.contains("4096"), "{err}");
    assert!(stdout(&out).is_empty());
}

/// Writes `text` to a scratch script and replays it.
fn replay_text(name: &str, text: &[u8], env: &[(&str, &str)]) -> Output {
    let dir = scratch(name);
    let path = dir.join("script.vms");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text))
        .unwrap();
    let (out, _) = vmspace_env(&["replay", path.to_str().unwrap()], env);
    std::fs::remove_dir_all(&dir).ok();
    out
}

#[test]
fn replay_lines_are_at_most_4_kib() {
    let fits = format!("read 1{}\n", " ".repeat(4096 - 6));
    let out = replay_text("fits", fits.as_bytes(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "SEGV\n");

    let over = format!("read 1{}\n", " ".repeat(4096 - 5));
    let out = replay_text("over", over.as_bytes(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));
}

/// A bad word, long or over the line limit, is quoted in at most 80
/// characters.
#[test]
fn replay_errors_quote_at_most_80_characters() {
    for len in [4000, 100 << 20] {
        let text = format!("mmap 0 1 rw- anon private\n{}\n", "x".repeat(len));
        let out = replay_text(&format!("word-{len}"), text.as_bytes(), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{} bytes of stderr", err.len());
        assert!(err.contains("line 2"), "{err}");
        assert!(err.len() < 300, "{} bytes of stderr", err.len());
        assert!(!err.contains(&"x".repeat(81)), "{err}");
    }
}

#[test]
fn replay_refuses_an_unknown_strategy_as_usage() {
    let out = replay_text("strategy", b"read 1\n", &[("VMSPACE_STRATEGY", "bogus")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bogus"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}
