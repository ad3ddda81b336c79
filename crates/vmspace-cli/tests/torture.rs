//! `vmspace torture` in the test suite: clean runs on every strategy (fixed
//! seeds, one random seed that is printed, and with injected failures), each
//! of which forks and judges the children, and
//! proof that the checker can fail: a build with the protocol broken on
//! purpose must be caught.
//!
//! `VMSPACE_TORTURE_SECS` sets the seconds per strategy of each clean run
//! (default 8: 24 s per strategy over the three clean runs). Set it to
//! hundreds for a long run.

use std::process::Command;

fn secs_per_strategy() -> f64 {
    std::env::var("VMSPACE_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8.0)
}

/// Runs `vmspace torture ARGS`; returns (success, stdout).
fn torture(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .arg("torture")
        .args(args)
        .output()
        .expect("run vmspace torture");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "vmspace torture {}:\n{stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), stdout)
}

fn clean_run(seed: u64, inject: &str) {
    let seconds = format!("{}", 3.0 * secs_per_strategy());
    let seed = seed.to_string();
    let (ok, out) = torture(&[
        "--seconds",
        &seconds,
        "--threads",
        "4",
        "--seed",
        &seed,
        "--inject",
        inject,
    ]);
    assert!(
        ok,
        "torture found something (seed {seed}, inject {inject}):\n{out}"
    );
    for strategy in ["mmap-lock", "per-vma", "speculative"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{strategy}:")))
            .unwrap_or_else(|| panic!("no summary for {strategy}:\n{out}"));
        assert!(line.contains(" 0 violations, 0 leaked frames"), "{line}");
        let ops: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(ops > 1000, "{strategy} did too little: {line}");
        // The children of the forks are judged and leak-checked like the
        // parent: the clean line above covers them.
        let forks: u64 = line
            .split_once(" forks)")
            .and_then(|(head, _)| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no fork count: {line}"));
        assert!(forks > 0, "{strategy} never forked: {line}");
        // Swap and reclaim are on by default: pages went out and came back,
        // and no slot is left once everything is dropped.
        let count = |name: &str| -> u64 {
            line.split_once(&format!("{name} "))
                .and_then(|(_, tail)| tail.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {name} count: {line}"))
        };
        assert!(
            count("swap-outs") > 0,
            "{strategy} swapped nothing out: {line}"
        );
        assert!(
            count("swap-ins") > 0,
            "{strategy} swapped nothing in: {line}"
        );
        assert_eq!(count("leaked slots"), 0, "{line}");
        // One mirror by default: its device thread accessed memory through
        // it, faulted through the CPU page tables, and its invalidations
        // slept now and then (a run in which none slept is a violation).
        assert!(count("device accesses") > 0, "{line}");
        assert!(count("device faults") > 0, "{line}");
        assert!(count("invalidations slept") > 0, "{line}");
    }
}

#[test]
fn every_strategy_is_clean_on_a_fixed_seed() {
    clean_run(1, "0");
}

#[test]
fn every_strategy_is_clean_on_a_random_seed() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("torture random seed: {seed}");
    clean_run(seed, "0");
}

#[test]
fn injected_failures_lose_nothing() {
    clean_run(7, "0.02");
}

/// The checker must be able to fail: with speculative faults that skip their
/// re-validation, a fault racing `munmap` installs into a range that is gone,
/// and a later load or store through it is a violation.
#[test]
#[cfg(debug_assertions)]
fn a_broken_protocol_is_caught() {
    let (ok, out) = torture(&[
        "--seconds",
        "60",
        "--threads",
        "4",
        "--seed",
        "11",
        "--strategy",
        "speculative",
        "--break-protocol",
        "skip-revalidation",
    ]);
    assert!(!ok, "the broken protocol went unnoticed:\n{out}");
    assert!(out.contains("violation:"), "{out}");
}

/// The reclaim protocols' checks must be able to fail too: evicting a
/// page-cache page whose write was not written back, and freeing a
/// swapped-out frame without writing its slot, each lose data that a later
/// load (or the final store check) shows.
#[test]
#[cfg(debug_assertions)]
fn broken_reclaim_protocols_are_caught() {
    for b in ["evict-dirty", "swap-skip-write"] {
        let (ok, out) = torture(&[
            "--seconds",
            "60",
            "--threads",
            "4",
            "--seed",
            "12",
            "--strategy",
            "per-vma",
            "--rmap-lock",
            "rwsem",
            "--break-protocol",
            b,
        ]);
        assert!(!ok, "{b} went unnoticed:\n{out}");
        assert!(out.contains("violation:"), "{b}: {out}");
    }
}

/// The MMU-notifier protocol's check must be able to fail: `munmap` that
/// does not tell the mirrors leaves a device translation to a freed frame,
/// and the device's next access through it reads poison or a value the page
/// could not hold, or succeeds where it should fault.
#[test]
#[cfg(debug_assertions)]
fn a_skipped_notifier_is_caught() {
    let (ok, out) = torture(&[
        "--seconds",
        "60",
        "--threads",
        "4",
        "--seed",
        "14",
        "--strategy",
        "per-vma",
        "--rmap-lock",
        "rwsem",
        "--mirrors",
        "2",
        "--break-protocol",
        "skip-notifier",
    ]);
    assert!(!ok, "skip-notifier went unnoticed:\n{out}");
    assert!(out.contains("violation:"), "{out}");
}

/// Usage errors exit with status 2 from the parser, before any thread
/// starts: nothing on stdout, a message on stderr.
#[test]
fn bad_arguments_are_refused() {
    for args in [
        &["--inject", "2"][..],
        &["--inject", "-0.1"],
        &["--inject", "nan"],
        &["--strategy", "nonsense"],
        &["--strategy", ""],
        &["--strategy", "all,per-vma"],
        &["--threads", "0"],
        &["--threads", "257"],
        &["--threads", "100000"],
        &["--seconds", "-1"],
        &["--seconds", "86401"],
        &["--seconds", "inf"],
        &["--epoch-ms", "0"],
        &["--epoch-ms", "60001"],
        &["--seed", "x"],
        &["--break-protocol", "everything"],
        &["--mirrors", "17"],
        &["--mirrors", "-1"],
        &["--no-such-flag"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
            .arg("torture")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} ran:\n{out:?}");
        assert!(!out.stderr.is_empty(), "{args:?} said nothing");
    }
}

/// `--help` names every strategy and `all`, and shows the defaults.
#[test]
fn help_names_the_strategies_and_the_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(["torture", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "mmap-lock",
        "per-vma",
        "speculative",
        "`all`",
        "[default: 10]",
        "[default: 4]",
        "[default: all]",
        "[default: 0]",
        "[default: 200]",
        "default: from the clock",
    ] {
        assert!(help.contains(word), "no {word:?} in:\n{help}");
    }
}
