//! Differential tests: every script runs on the host kernel (`vmspace replay
//! --host`, the reference) and on the vmspace library (`vmspace replay`), and
//! the two outputs must be identical, line for line.
//!
//! * `hand_written_scripts_match`: the scripts in `tests/scripts/*.vms`, one
//!   per rule of Linux's VMA behaviour (see the comment atop each).
//! * `generated_scripts_match`: `VMSPACE_DIFF_COUNT` (default 3000) random
//!   scripts from [`vmspace_cli::gen::generate`], seeds `VMSPACE_DIFF_SEED`
//!   (default 1) onwards.
//! * `generated_corpus_covers_enough`: classifies the host outputs of those
//!   scripts ([`vmspace_cli::gen::classify`]), prints the coverage table and
//!   fails if a kind of behaviour falls under its minimum (scaled by the
//!   count), so that a generator change cannot silently stop testing merges,
//!   moves, faults or errors; and the rule cells
//!   ([`vmspace_cli::gen::Cell`]: each `mremap` matrix row by shape of the old
//!   range, each errno of each call, Linux's check order, execute-only keys,
//!   the file offset limit, both sides of a fork, the advices besides
//!   `dontneed`, `mlock`), each with its minimum.
//! * `gen_command_reproduces_the_test_scripts`: `vmspace gen` writes exactly
//!   the scripts this test runs, so a failing seed can be replayed by hand.
//!
//! Environment:
//! * `VMSPACE_DIFF_SEED=N`, `VMSPACE_DIFF_COUNT=K`: the generated scripts
//!   (seeds `N..N+K`; the minimums scale with K).
//! * `VMSPACE_DIFF_AGAINST=host` compares the host with itself instead of
//!   with the vmspace library (the default, `vmspace`). That must pass: it
//!   checks the harness and the determinism of the host backend, and it is
//!   the way to validate this test while the library backend does not exist
//!   yet (until then, `vmspace replay` fails with "vmspace backend not built
//!   yet" and the two comparison tests fail, as they should).
//!
//! A failure names the seed (or file), the first differing line, and the
//! script with both outputs. To reproduce a generated script:
//! `vmspace gen --seed S --count 1 --out DIR` writes it as `DIR/seed-S-0.vms`.
//! Run with `--nocapture` to see the seeds, timings and the coverage table.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use vmspace_cli::gen::{
    all_cells, classify, generate, script_text, Call, Cell, Coverage, ExecOnly, ForkCase,
    GenConfig, Kind, Limit, Precedence, RemapRow, Shape,
};
use vmspace_cli::script::{parse, Advice, Op};

/// Scripts per `vmspace replay` invocation.
const BATCH: usize = 200;
/// The first seed, unless `VMSPACE_DIFF_SEED` says otherwise.
const DEFAULT_SEED: u64 = 1;
/// Generated scripts, unless `VMSPACE_DIFF_COUNT` says otherwise.
const DEFAULT_COUNT: u64 = 3000;
/// Mismatches shown in full in a failure report.
const SHOWN: usize = 3;

/// The minimum count of each kind over `DEFAULT_COUNT` generated scripts,
/// about half of what the default corpus gives on Linux 6.18 (the printed
/// table has the real numbers).
const MINIMUMS: &[(Kind, u64)] = &[
    (Kind::Merges, 2000),
    (Kind::Splits, 2000),
    (Kind::Grows, 300),
    (Kind::Shrinks, 300),
    (Kind::Moves, 1500),
    (Kind::MultiMoves, 200),
    (Kind::MovesOverMappings, 300),
    (Kind::Duplications, 30),
    (Kind::CowBreaks, 200),
    (Kind::CowIsolated, 200),
    (Kind::SharedVisible, 400),
    (Kind::ZeroFillReads, 1000),
    (Kind::FileReads, 500),
    (Kind::DontneedDropped, 600),
    (Kind::DontneedKept, 250),
    (Kind::Segv, 3000),
    (Kind::ProtFaults, 500),
    (Kind::Sigbus, 200),
];

/// Every `mremap` cell (matrix row by shape of the old range) must be hit at
/// least this often over `DEFAULT_COUNT` scripts, whatever the result.
const REMAP_CELL_MINIMUM: u64 = 20;

/// The minimum count of the other rule cells (`vmspace_cli::gen::Cell`), and
/// of some results of `mremap` cells, over `DEFAULT_COUNT` generated scripts:
/// for any result (`None`) or for one result line. About half of what the
/// default corpus gives on Linux 6.18 (the printed table has the numbers).
const CELL_MINIMUMS: &[(Cell, Option<&str>, u64)] = &[
    // Both sides of the shrink rule: the part that moves fits in one VMA
    // (ok), or leaves it (EFAULT).
    (
        Cell::Remap(RemapRow::FixedShrink, Shape::SeveralVmas),
        Some("ok"),
        20,
    ),
    (
        Cell::Remap(RemapRow::FixedShrink, Shape::SeveralVmas),
        Some("err EFAULT"),
        20,
    ),
    (
        Cell::Remap(RemapRow::FixedShrink, Shape::HoleInside),
        Some("ok"),
        15,
    ),
    (
        Cell::Remap(RemapRow::FixedShrink, Shape::HoleInside),
        Some("err EFAULT"),
        8,
    ),
    (Cell::Remap(RemapRow::Grow, Shape::OneVma), Some("ok"), 200),
    (
        Cell::Remap(RemapRow::Grow, Shape::OneVma),
        Some("err ENOMEM"),
        200,
    ),
    (
        Cell::Remap(RemapRow::Duplicate, Shape::OneVma),
        Some("ok"),
        50,
    ),
    (
        Cell::Remap(RemapRow::Duplicate, Shape::OneVma),
        Some("err EINVAL"),
        50,
    ),
    (
        Cell::Remap(RemapRow::OldZero, Shape::OneVma),
        Some("err ENOMEM"),
        25,
    ),
    (
        Cell::Remap(RemapRow::OldZero, Shape::OneVma),
        Some("err EINVAL"),
        15,
    ),
    // Each errno each call returns in vmscript.
    (Cell::Error(Call::Mmap), Some("err EINVAL"), 150),
    (Cell::Error(Call::Mmap), Some("err EOVERFLOW"), 80),
    (Cell::Error(Call::Munmap), Some("err EINVAL"), 150),
    (Cell::Error(Call::Mprotect), Some("err ENOMEM"), 600),
    (Cell::Error(Call::Mremap), Some("err EINVAL"), 700),
    (Cell::Error(Call::Mremap), Some("err EFAULT"), 500),
    (Cell::Error(Call::Mremap), Some("err ENOMEM"), 500),
    (Cell::Error(Call::Madvise), Some("err ENOMEM"), 300),
    // Linux's check order.
    (
        Cell::First(Precedence::OverlapBeforeLookup),
        Some("err EINVAL"),
        30,
    ),
    (
        Cell::First(Precedence::ZeroLengthBeforeLookup),
        Some("err EINVAL"),
        30,
    ),
    (
        Cell::First(Precedence::ZeroLengthBeforeOffset),
        Some("err EINVAL"),
        15,
    ),
    (
        Cell::First(Precedence::OneVmaBeforeUnmap),
        Some("err EFAULT"),
        30,
    ),
    // Execute-only memory and protection keys.
    (Cell::ExecOnly(ExecOnly::Made), Some("ok"), 1000),
    (Cell::ExecOnly(ExecOnly::Unmade), Some("ok"), 60),
    (Cell::ExecOnly(ExecOnly::Read), None, 150),
    (Cell::ExecOnly(ExecOnly::Apart), None, 250),
    // Limits.
    (Cell::Limit(Limit::FileOffsetAt), Some("ok"), 30),
    (
        Cell::Limit(Limit::FileOffsetPast),
        Some("err EOVERFLOW"),
        80,
    ),
    (Cell::Limit(Limit::FileOffsetGrowPast), Some("ok"), 25),
    // Both sides of a fork: writes on each side, copy-on-write of a page
    // shared with the child, munmap on one side, shared mappings.
    (Cell::Fork(ForkCase::WriteInParent), Some("ok"), 1400),
    (Cell::Fork(ForkCase::WriteInChild), Some("ok"), 1400),
    (Cell::Fork(ForkCase::CowOfShared), None, 2000),
    (Cell::Fork(ForkCase::MunmapOneSide), None, 450),
    (Cell::Fork(ForkCase::SharedAcross), None, 1200),
    // The advices besides dontneed, and mlock.
    (Cell::Advice(Advice::Free), Some("ok"), 18),
    (Cell::Advice(Advice::Free), Some("err EINVAL"), 40),
    (Cell::Advice(Advice::Dontfork), Some("ok"), 140),
    (Cell::Advice(Advice::Dofork), Some("ok"), 30),
    (Cell::Advice(Advice::Wipeonfork), Some("ok"), 110),
    (Cell::Advice(Advice::Wipeonfork), Some("err EINVAL"), 35),
    (Cell::Advice(Advice::Keeponfork), Some("ok"), 40),
    (Cell::Advice(Advice::PopulateRead), Some("ok"), 30),
    (Cell::Advice(Advice::PopulateRead), Some("err EINVAL"), 8),
    (Cell::Advice(Advice::PopulateWrite), Some("ok"), 20),
    (Cell::Advice(Advice::PopulateWrite), Some("err EINVAL"), 15),
    (Cell::Error(Call::Mlock), Some("err ENOMEM"), 30),
];

/// The minimum count of each errno the host produces for generated scripts
/// (`EEXIST`, `EACCES` and friends cannot happen in vmscript).
const ERROR_MINIMUMS: &[(&str, u64)] = &[
    ("EINVAL", 500),
    ("ENOMEM", 500),
    ("EFAULT", 300),
    ("EOVERFLOW", 80),
];

// ---- backends and runs ----

/// Which implementation `vmspace replay` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Host,
    /// The library, with the fault strategy named (`VMSPACE_STRATEGY`).
    Vmspace(&'static str),
}

/// Every fault strategy: the mapping semantics must not depend on it.
const STRATEGIES: [&str; 3] = ["mmap-lock", "per-vma", "speculative"];

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Host => "host",
            Backend::Vmspace(strategy) => strategy,
        }
    }

    /// The backends compared with the host: `VMSPACE_DIFF_AGAINST`.
    fn against() -> Vec<Backend> {
        match std::env::var("VMSPACE_DIFF_AGAINST").as_deref() {
            Err(_) | Ok("vmspace") => STRATEGIES.map(Backend::Vmspace).to_vec(),
            Ok("host") => vec![Backend::Host],
            Ok(other) => panic!("VMSPACE_DIFF_AGAINST={other}: expected `host` or `vmspace`"),
        }
    }
}

/// One script of a run: where it came from, its file and its ops.
struct Script {
    /// `seed 17` or the file name.
    label: String,
    seed: Option<u64>,
    path: PathBuf,
    ops: Vec<Op>,
}

/// What one backend printed for a list of scripts.
struct Run {
    /// Per script: its output lines, or `None` if the run stopped first.
    outputs: Vec<Option<Vec<String>>>,
    /// Why `vmspace replay` failed, per failing batch.
    failures: Vec<String>,
}

/// Runs `scripts` on `backend`, `BATCH` files per `vmspace replay`.
fn replay(backend: Backend, scripts: &[Script]) -> Run {
    let mut run = Run {
        outputs: Vec::with_capacity(scripts.len()),
        failures: Vec::new(),
    };
    for batch in scripts.chunks(BATCH) {
        replay_batch(backend, batch, &mut run);
    }
    run
}

/// Runs one batch and appends its outputs (and failure) to `run`.
fn replay_batch(backend: Backend, batch: &[Script], run: &mut Run) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmspace"));
    command.arg("replay");
    match backend {
        Backend::Host => {
            command.arg("--host");
        }
        Backend::Vmspace(strategy) => {
            command.env("VMSPACE_STRATEGY", strategy);
        }
    }
    let output = command
        .args(batch.iter().map(|script| &script.path))
        .output()
        .expect("cannot run the vmspace binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut sections = sections(&stdout, batch.len() == 1);
    for script in batch {
        run.outputs.push(sections.remove(&script.path));
    }
    if !output.status.success() {
        run.failures.push(format!(
            "`vmspace replay{}` ({} files from {}) exited with {}: {}",
            if backend == Backend::Host {
                " --host"
            } else {
                ""
            },
            batch.len(),
            batch[0].label,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        ));
    }
}

/// Splits the output of `vmspace replay` into each file's lines. With a single
/// file there are no `== FILE` headers; `single` says so.
fn sections(stdout: &str, single: bool) -> HashMap<PathBuf, Vec<String>> {
    let mut sections = HashMap::new();
    if single {
        let lines = stdout.lines().map(str::to_owned).collect();
        sections.insert(PathBuf::new(), lines);
        return sections;
    }
    let mut current: Option<&mut Vec<String>> = None;
    for line in stdout.lines() {
        if let Some(path) = line.strip_prefix("== ") {
            current = Some(sections.entry(PathBuf::from(path)).or_default());
        } else if let Some(lines) = current.as_mut() {
            lines.push(line.to_owned());
        }
    }
    sections
}

// ---- comparing and reporting ----

/// Compares each script's host output with `other`'s; `Err` is the report.
fn compare(
    scripts: &[Script],
    host: &[Vec<String>],
    other: Backend,
    run: &Run,
) -> Result<(), String> {
    let mut report = String::new();
    let mut differing = Vec::new();
    for ((script, host), output) in scripts.iter().zip(host).zip(&run.outputs) {
        if output.as_deref() == Some(host.as_slice()) {
            continue;
        }
        if differing.len() < SHOWN {
            report.push_str(&mismatch(script, host, other, output.as_deref()));
        }
        differing.push(script.label.clone());
    }
    if differing.is_empty() && run.failures.is_empty() {
        return Ok(());
    }
    let mut summary = format!(
        "{} of {} scripts differ between host and {}",
        differing.len(),
        scripts.len(),
        other.name()
    );
    if !differing.is_empty() {
        let listed: Vec<&str> = differing.iter().take(40).map(String::as_str).collect();
        let more = differing.len().saturating_sub(listed.len());
        let _ = write!(summary, ": {}", listed.join(", "));
        if more > 0 {
            let _ = write!(summary, " and {more} more");
        }
    }
    for failure in run.failures.iter().take(SHOWN) {
        let _ = write!(summary, "\n{failure}");
    }
    Err(format!("{summary}\n\n{report}"))
}

/// The report of one script whose outputs differ (`other` is `None` when
/// the other backend stopped before printing it).
fn mismatch(script: &Script, host: &[String], other: Backend, output: Option<&[String]>) -> String {
    let name = other.name();
    let mut text = String::from("==========\n");
    let Some(output) = output else {
        let _ = writeln!(
            text,
            "{}: `vmspace replay` on {name} printed nothing for it (see the failure above)",
            script.label
        );
        text.push_str(&listing(script, host, None, name));
        return text;
    };
    let line = first_difference(host, output);
    let shown = |lines: &[String]| {
        lines
            .get(line)
            .map_or("(no line)".to_owned(), |line| format!("`{line}`"))
    };
    let op = script
        .ops
        .get(line)
        .map_or("(past the last op)".to_owned(), |op| format!("`{op}`"));
    let _ = writeln!(
        text,
        "{}: first difference at op {} {op}: host {}, {name} {}",
        script.label,
        line + 1,
        shown(host),
        shown(output)
    );
    if let Some(seed) = script.seed {
        let _ = writeln!(
            text,
            "reproduce: vmspace gen --seed {seed} --count 1 --out DIR; vmspace replay DIR/seed-{seed}-0.vms"
        );
    }
    let _ = writeln!(text, "file: {}", script.path.display());
    text.push_str(&listing(script, host, Some(output), name));
    text
}

/// The index of the first line where the two outputs differ.
fn first_difference(host: &[String], other: &[String]) -> usize {
    host.iter()
        .zip(other)
        .position(|(a, b)| a != b)
        .unwrap_or(host.len().min(other.len()))
}

/// The script, one op per line with its host result; where `other` differs,
/// a `>>` line with its result follows (elsewhere the two are identical).
fn listing(script: &Script, host: &[String], other: Option<&[String]>, name: &str) -> String {
    let mut text = format!("op   script{:30}host result\n", "");
    let lines = script
        .ops
        .len()
        .max(host.len())
        .max(other.map_or(0, <[_]>::len));
    for index in 0..lines {
        let op = script.ops.get(index).map_or(String::new(), Op::to_string);
        let host_line = host.get(index).map_or("(none)", String::as_str);
        let _ = writeln!(text, "{:>3}  {op:<36}{host_line}", index + 1);
        if let Some(other) = other {
            let other_line = other.get(index).map_or("(none)", String::as_str);
            if other_line != host_line {
                let _ = writeln!(text, ">>   {:<36}{other_line}", format!("{name}:"));
            }
        }
    }
    text
}

// ---- the generated corpus ----

/// The generated scripts and their host outputs, built once per test run.
struct Corpus {
    first_seed: u64,
    count: u64,
    scripts: Vec<Script>,
    host: Vec<Vec<String>>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(build_corpus)
}

/// Writes the generated scripts to a fresh folder and runs them on the host.
fn build_corpus() -> Corpus {
    let first_seed = env_u64("VMSPACE_DIFF_SEED", DEFAULT_SEED);
    let count = env_u64("VMSPACE_DIFF_COUNT", DEFAULT_COUNT);
    let dir = corpus_dir();
    let started = Instant::now();
    let scripts: Vec<Script> = (0..count)
        .map(|index| write_generated(&dir, first_seed, index))
        .filter(memlock_allows)
        .collect();
    let run = replay(Backend::Host, &scripts);
    assert!(
        run.failures.is_empty(),
        "the host backend failed: {}",
        run.failures.join("\n")
    );
    let host: Vec<Vec<String>> = run
        .outputs
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    for (script, output) in scripts.iter().zip(&host) {
        assert_eq!(
            output.len(),
            script.ops.len(),
            "{}: host output",
            script.label
        );
    }
    eprintln!(
        "differential: {count} generated scripts, seeds {first_seed}..{} \
         (VMSPACE_DIFF_SEED={first_seed} VMSPACE_DIFF_COUNT={count}), in {}; host run took {:.1?}",
        first_seed.wrapping_add(count),
        dir.display(),
        started.elapsed()
    );
    Corpus {
        first_seed,
        count,
        scripts,
        host,
    }
}

/// Writes script `index` of the corpus the way `vmspace gen` names it.
fn write_generated(dir: &Path, first_seed: u64, index: u64) -> Script {
    let seed = first_seed.wrapping_add(index);
    let ops = generate(seed, &GenConfig::default());
    let path = dir.join(format!("seed-{first_seed}-{index}.vms"));
    fs::write(&path, script_text(seed, &ops)).unwrap();
    Script {
        label: format!("seed {seed}"),
        seed: Some(seed),
        path,
        ops,
    }
}

/// A folder of this process's own under the target's temporary directory;
/// folders left by processes that are gone are removed.
fn corpus_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("differential");
    if let Ok(entries) = fs::read_dir(&root) {
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !Path::new("/proc").join(&pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(std::process::id().to_string());
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A number from the environment, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text}: expected a number")),
        Err(_) => default,
    }
}

// ---- the tests ----

#[test]
fn hand_written_scripts_match() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "vms"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 10,
        "expected the rule scripts in {}",
        dir.display()
    );
    let scripts: Vec<Script> = paths
        .into_iter()
        .map(hand_written)
        .filter(memlock_allows)
        .collect();
    let host = replay(Backend::Host, &scripts);
    assert!(host.failures.is_empty(), "{}", host.failures.join("\n"));
    let host: Vec<Vec<String>> = host
        .outputs
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    for other in Backend::against() {
        let run = replay(other, &scripts);
        if let Err(report) = compare(&scripts, &host, other, &run) {
            panic!("hand-written scripts, {}: {report}", other.name());
        }
    }
}

/// Whether the host lets `script` lock its pages: `false` (with the reason
/// printed, so the skip is never silent) for a script whose `mlock` calls
/// could lock more than the host's `RLIMIT_MEMLOCK` allows (the sum of
/// their lengths; the scripts stay far below 8 MiB). Linux would refuse
/// those calls (`ENOMEM`, `EAGAIN` or `EPERM`) for a reason vmspace does not
/// model.
fn memlock_allows(script: &Script) -> bool {
    let pages: u64 = script
        .ops
        .iter()
        .map(|op| match *op {
            Op::Mlock { npages, .. } => npages,
            _ => 0,
        })
        .sum();
    if pages == 0 {
        return true;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid place for getrlimit to store the limit.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    let needed = pages * 4096;
    if ok && (limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= needed) {
        return true;
    }
    eprintln!(
        "SKIPPED {}: the host's RLIMIT_MEMLOCK ({} bytes) is below the {needed} bytes \
         the script may lock",
        script.label, limit.rlim_cur
    );
    false
}

/// A script of `tests/scripts`, parsed.
fn hand_written(path: PathBuf) -> Script {
    let text = fs::read_to_string(&path).unwrap();
    let ops = parse(&text).unwrap_or_else(|error| panic!("{}:{error}", path.display()));
    let label = path.file_name().unwrap().to_string_lossy().into_owned();
    Script {
        label,
        seed: None,
        path,
        ops,
    }
}

#[test]
fn generated_scripts_match() {
    let corpus = corpus();
    for other in Backend::against() {
        let started = Instant::now();
        let run = replay(other, &corpus.scripts);
        eprintln!(
            "differential: {} run took {:.1?}",
            other.name(),
            started.elapsed()
        );
        if let Err(report) = compare(&corpus.scripts, &corpus.host, other, &run) {
            panic!(
                "generated scripts on {} (VMSPACE_DIFF_SEED={} VMSPACE_DIFF_COUNT={}): {report}",
                other.name(),
                corpus.first_seed,
                corpus.count
            );
        }
    }
}

#[test]
fn generated_corpus_covers_enough() {
    let corpus = corpus();
    let mut coverage = Coverage::default();
    for (script, host) in corpus.scripts.iter().zip(&corpus.host) {
        coverage.add(&classify(&script.ops, host));
    }
    let scale = |minimum: u64| minimum * corpus.count / DEFAULT_COUNT;
    let mut table = String::new();
    let mut short = Vec::new();
    for kind in Kind::ALL {
        let minimum = MINIMUMS
            .iter()
            .find(|&&(k, _)| k == kind)
            .map(|&(_, minimum)| scale(minimum));
        row(
            &mut table,
            kind.name(),
            coverage.count(kind),
            minimum,
            &mut short,
        );
    }
    for (name, count) in coverage.error_names() {
        let minimum = ERROR_MINIMUMS
            .iter()
            .find(|&&(n, _)| n == name)
            .map(|&(_, minimum)| scale(minimum));
        row(
            &mut table,
            &format!("err {name}"),
            count,
            minimum,
            &mut short,
        );
    }
    for &(name, minimum) in ERROR_MINIMUMS {
        if coverage.errors(name) == 0 && scale(minimum) > 0 {
            row(
                &mut table,
                &format!("err {name}"),
                0,
                Some(scale(minimum)),
                &mut short,
            );
        }
    }
    cell_rows(&coverage, &scale, &mut table, &mut short);
    eprintln!("coverage of the generated corpus (host outputs):\n{table}");
    assert!(
        short.is_empty(),
        "coverage under its minimum for: {}\n{table}",
        short.join(", ")
    );
}

/// The rule cells' lines of the coverage table: each cell's count, then its
/// count per result; a cell under a minimum joins `short`.
fn cell_rows(
    coverage: &Coverage,
    scale: &dyn Fn(u64) -> u64,
    table: &mut String,
    short: &mut Vec<String>,
) {
    table.push_str("  rule cells (count, then by result):\n");
    for cell in all_cells() {
        let minimum = |outcome: Option<&str>| {
            let listed = CELL_MINIMUMS
                .iter()
                .find(|&&(c, o, _)| c == cell && o == outcome)
                .map(|&(_, _, minimum)| minimum);
            let remap = matches!(cell, Cell::Remap(..)) && outcome.is_none();
            // Without protection keys on the host, execute-only anonymous
            // neighbours carry no key to tell them apart and merge more
            // often (195 kept apart on such a host against the 250 asked
            // of a host with keys).
            let keyless = cell == Cell::ExecOnly(ExecOnly::Apart)
                && !vmspace::Config::host_has_exec_only_pkey();
            let listed = listed.map(|m| if keyless { m * 2 / 5 } else { m });
            listed.or(remap.then_some(REMAP_CELL_MINIMUM)).map(scale)
        };
        let name = cell.to_string();
        row(
            table,
            &name,
            coverage.cell(cell, None),
            minimum(None),
            short,
        );
        let mut outcomes: Vec<(String, u64)> = coverage
            .cell_outcomes(cell)
            .map(|(outcome, count)| (outcome.to_owned(), count))
            .collect();
        for &(c, outcome, _) in CELL_MINIMUMS {
            if let Some(outcome) = outcome.filter(|_| c == cell) {
                if !outcomes.iter().any(|(o, _)| o == outcome) {
                    outcomes.push((outcome.to_owned(), 0));
                }
            }
        }
        for (outcome, count) in outcomes {
            let label = format!("{name}: {outcome}");
            row(table, &label, count, minimum(Some(&outcome)), short);
        }
    }
}

/// One line of the coverage table; a kind under its minimum joins `short`.
fn row(table: &mut String, name: &str, count: u64, minimum: Option<u64>, short: &mut Vec<String>) {
    let (minimum_text, mark) = match minimum {
        Some(minimum) if count < minimum => (format!("min {minimum}"), "  << UNDER MINIMUM"),
        Some(minimum) => (format!("min {minimum}"), ""),
        None => (String::new(), ""),
    };
    let _ = writeln!(table, "  {name:<52}{count:>9}  {minimum_text:<10}{mark}");
    if !mark.is_empty() {
        short.push(name.to_owned());
    }
}

#[test]
fn gen_command_reproduces_the_test_scripts() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gen-command-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let status = vmspace(&["gen", "--seed", "41", "--count", "3", "--out"], &dir);
    assert_eq!(status, Some(0));
    for index in 0..3 {
        let path = dir.join(format!("seed-41-{index}.vms"));
        let text = fs::read_to_string(&path).unwrap();
        let seed = 41 + index;
        let ops = generate(seed, &GenConfig::default());
        assert_eq!(text, script_text(seed, &ops), "{}", path.display());
    }
    // Bad arguments are refused with status 2, an unwritable folder with 1.
    for bad in [
        &["gen", "--seed", "x", "--count", "1", "--out"][..],
        &["gen", "--seed", "1", "--count", "-1", "--out"],
        &["gen", "--seed", "1", "--count", "2000000", "--out"],
        &["gen", "--seed", "1", "--count", "1", "--ops", "0", "--out"],
        &["gen", "--count", "1", "--out"],
    ] {
        assert_eq!(vmspace(bad, &dir), Some(2), "{bad:?}");
    }
    let file = dir.join("seed-41-0.vms");
    let args = ["gen", "--seed", "1", "--count", "1", "--out"];
    assert_eq!(vmspace(&args, &file.join("below-a-file")), Some(1));
    fs::remove_dir_all(&dir).unwrap();
}

/// Runs `vmspace ARGS... DIR` quietly and returns its exit code.
fn vmspace(args: &[&str], dir: &Path) -> Option<i32> {
    let output = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    output.status.code()
}
