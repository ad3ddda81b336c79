//! `vmspace bench`: the classic page-fault and mmap workloads (will-it-scale's
//! threads mode) on each locking strategy and on the host kernel, side by
//! side; a table, JSON and SVG plots.
//!
//! A bench goes through three steps, each a function of its own:
//! `plan::plan` turns the arguments into what to run (and refuses bad usage
//! before any thread, arena or file is made), `suite::run` runs it into rows
//! and paired ratios, and [`report()`] prints the tables and the trust
//! warnings and writes the JSON and the plots.
//!
//! Module map:
//! * `plan`: the plan (cells, sizes, arena, outputs) and its checks;
//! * `suite`: running the plan: every cell on every target, the repeats
//!   interleaved, aggregated into rows and paired ratios;
//! * `env`: the operations a workload needs, over vmspace and over Linux;
//! * `run`: one measurement of one workload (threads, windows, sampling);
//! * `lookup`: the VMA lookup workload (range tree vs. the alternatives);
//! * `fork`: the fork workloads (per rmap lock kind; by name only);
//! * `reclaim`: the reclaim workloads, with and without a device mirror
//!   (by name only);
//! * `mirror`: the MMU-notifier and device-mirror workload (by name only);
//! * `trust`: whether the controls say the run can be trusted;
//! * `report`: the table and the JSON;
//! * `plot`: the SVG plots.
//!
//! Host rows run in a fresh child process (this binary re-executed with the
//! hidden `__bench-host` subcommand), so the kernel's mmap lock and page
//! tables are those of a process that holds nothing but the workload: not the
//! bench's threads, its frame arena or its allocator.

mod env;
mod fork;
mod lookup;
mod mirror;
mod plan;
mod plot;
mod reclaim;
mod report;
mod run;
mod suite;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use hdrhistogram::Histogram;
use vmspace::{FaultStats, RmapLockKind, Strategy};

use crate::exit;
use plan::Plan;
use run::Spec;
use suite::Results;

/// The workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// Private anonymous write faults.
    PageFault1,
    /// Private file write faults (copy-on-write from a warm page cache).
    PageFault2,
    /// Shared file write faults.
    PageFault3,
    /// mmap + munmap of an untouched region.
    Mmap1,
    /// Faulters plus one thread that maps, mprotects and unmaps.
    MixedChurn,
    /// Faulters plus one thread that reads the list of mappings.
    MixedReaders,
    /// Faulters on a slow file plus one churning thread.
    SleepyFile,
    /// VMA lookups alone.
    Lookup,
    /// Threads forking one parent of many VMAs (per rmap lock kind).
    ForkStorm,
    /// Fork of a parent of 10 000 VMAs with and without VMA write-locking.
    ForkVmas,
    /// Faulting threads over a working set twice the memory limit (per
    /// backing and rmap lock kind).
    Reclaim,
    /// MMU notifiers and a device mirror: munmap and mprotect cost with 0,
    /// 1 and 4 mirrors, device faults beside CPU faults, device-fault
    /// retries under a churning writer.
    Mirror,
    /// `reclaim` with a device mirror whose invalidations sleep, touched by
    /// a device thread (per backing and rmap lock kind).
    ReclaimMirror,
}

impl Workload {
    pub const ALL: [Workload; 13] = [
        Workload::PageFault1,
        Workload::PageFault2,
        Workload::PageFault3,
        Workload::Mmap1,
        Workload::MixedChurn,
        Workload::MixedReaders,
        Workload::SleepyFile,
        Workload::Lookup,
        Workload::ForkStorm,
        Workload::ForkVmas,
        Workload::Reclaim,
        Workload::Mirror,
        Workload::ReclaimMirror,
    ];

    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Workload::PageFault1 => "page_fault1",
            Workload::PageFault2 => "page_fault2",
            Workload::PageFault3 => "page_fault3",
            Workload::Mmap1 => "mmap1",
            Workload::MixedChurn => "mixed_churn",
            Workload::MixedReaders => "mixed_readers",
            Workload::SleepyFile => "sleepy_file",
            Workload::Lookup => "lookup",
            Workload::ForkStorm => "fork_storm",
            Workload::ForkVmas => "fork_vmas",
            Workload::Reclaim => "reclaim",
            Workload::Mirror => "mirror",
            Workload::ReclaimMirror => "reclaim_mirror",
        }
    }

    fn parse(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?} (one of: {})", names.join(", "))
            })
    }

    /// A fork workload (`fork.rs`): selected by name only, not in the
    /// default suite.
    pub fn is_fork(self) -> bool {
        matches!(self, Workload::ForkStorm | Workload::ForkVmas)
    }

    /// A workload run only when named (the fork workloads, `reclaim`,
    /// `mirror`, `reclaim_mirror`), with a loop and rows of its own.
    pub fn is_named_only(self) -> bool {
        self.is_fork()
            || matches!(
                self,
                Workload::Reclaim | Workload::Mirror | Workload::ReclaimMirror
            )
    }

    /// A workload with an extra thread measured against its idle baseline.
    pub fn is_mixed(self) -> bool {
        matches!(
            self,
            Workload::MixedChurn | Workload::MixedReaders | Workload::SleepyFile
        )
    }

    /// Thread counts when none are given.
    pub fn default_threads(self) -> Vec<usize> {
        match self {
            Workload::PageFault1
            | Workload::PageFault2
            | Workload::PageFault3
            | Workload::Mmap1 => {
                vec![1, 2]
            }
            _ => vec![2],
        }
    }
}

/// The most threads a run may have.
const MAX_THREADS: usize = 1024;
/// The most seconds a run (or a mixed workload's window pair) may last.
const MAX_SECONDS: f64 = 3600.0;
/// The most runs per measurement.
const MAX_REPEAT: usize = 1000;

/// `--strategy`'s default: the names of [`Target::ALL`].
const DEFAULT_TARGETS: &str = "mmap-lock,per-vma,speculative,host,no-fault";

/// `--rmap-lock`'s default: every kind.
const DEFAULT_RMAP_LOCKS: &str = "rwsem,rwsem-spin,rwlock";

/// Arguments of `vmspace bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workloads to run; none named: the default suite, every workload but
    /// fork_storm, fork_vmas, reclaim, mirror and reclaim_mirror (run when
    /// named), with results.json and the plots in target/vmspace-bench/
    /// [default: all of them but the named-only ones]
    #[arg(value_parser = workload_parser())]
    workloads: Vec<Workload>,
    #[arg(long, value_delimiter = ',', value_parser = count_parser("--threads", MAX_THREADS),
          allow_negative_numbers = true, help = threads_help())]
    threads: Vec<usize>,
    #[arg(long, value_parser = seconds_parser, allow_negative_numbers = true,
          help = seconds_help())]
    seconds: Option<f64>,
    /// Strategies, comma-separated: mmap-lock, per-vma, speculative, host,
    /// and no-fault, the control of page_fault1, 2 and 3: their page work
    /// (zeroing, copying, writing) with no fault. Does not apply to lookup,
    /// reclaim, mirror and reclaim_mirror (run on the default strategy)
    #[arg(long, value_delimiter = ',', value_parser = target_parser(),
          default_value = DEFAULT_TARGETS,
          hide_possible_values = true)]
    strategy: Vec<Target>,
    /// Rmap lock kinds, comma-separated: rwsem, rwsem-spin, rwlock; for the
    /// workloads reported per kind (fork_storm, reclaim, reclaim_mirror);
    /// the others use the default (rwsem-spin)
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_RMAP_LOCKS,
          value_parser = rmap_lock_parser(), hide_possible_values = true)]
    rmap_lock: Vec<RmapLockKind>,
    /// Write the results as JSON to this file (checked before the run)
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write SVG plots into this directory (checked before the run)
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Smaller regions and maps, shorter runs
    #[arg(long)]
    quick: bool,
    #[arg(long, value_parser = count_parser("--repeat", MAX_REPEAT),
          allow_negative_numbers = true, help = repeat_help())]
    repeat: Option<usize>,
}

fn threads_help() -> String {
    let list = |w: Workload| {
        let counts: Vec<_> = w.default_threads().iter().map(usize::to_string).collect();
        counts.join(",")
    };
    format!(
        "Thread counts, comma-separated, each in 1..={MAX_THREADS}. Mixed workloads count \
         their extra thread and need at least 2 [default: {} for page_fault1, page_fault2, \
         page_fault3 and mmap1; {} for the others]",
        list(Workload::PageFault1),
        list(Workload::MixedChurn)
    )
}

fn seconds_help() -> String {
    format!(
        "Measured seconds per run (mixed workloads: per pair of windows), above 0 and at most \
         {MAX_SECONDS} [default: {}; --quick: {}]",
        plan::SECONDS,
        plan::QUICK_SECONDS
    )
}

fn repeat_help() -> String {
    format!(
        "Runs per measurement, in 1..={MAX_REPEAT} (median reported, min and max kept) \
         [default: {}; --quick: {}]",
        plan::REPEAT,
        plan::QUICK_REPEAT
    )
}

/// Parses a workload name; `--help` lists the names.
fn workload_parser() -> impl TypedValueParser<Value = Workload> {
    PossibleValuesParser::new(Workload::ALL.map(Workload::name)).try_map(|s| Workload::parse(&s))
}

/// Parses an rmap lock kind; `--help` lists the names.
fn rmap_lock_parser() -> impl TypedValueParser<Value = RmapLockKind> {
    PossibleValuesParser::new(RmapLockKind::ALL.map(RmapLockKind::name))
        .try_map(|s| s.parse::<RmapLockKind>())
}

/// Parses a target name; `--help` lists the names.
fn target_parser() -> impl TypedValueParser<Value = Target> {
    PossibleValuesParser::new(Target::ALL.map(Target::name)).try_map(|s| {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown strategy {s:?}"))
    })
}

/// A parser of whole numbers in `1..=max`, whose message names the bounds.
fn count_parser(
    flag: &'static str,
    max: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s| match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag} takes whole numbers in 1..={max}, not `{s}`"
        )),
    }
}

/// Parses seconds: a number above 0 and at most [`MAX_SECONDS`].
fn seconds_parser(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= MAX_SECONDS => Ok(x),
        _ => Err(format!(
            "--seconds takes a number above 0 and at most {MAX_SECONDS}, not `{s}`"
        )),
    }
}

/// Arguments of the hidden `__bench-host` subcommand (the host child).
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    #[arg(long, value_parser = workload_parser())]
    workload: Workload,
    #[arg(long, value_parser = count_parser("--threads", MAX_THREADS))]
    threads: usize,
    #[arg(long, value_parser = seconds_parser)]
    seconds: f64,
    #[arg(long)]
    warmup: f64,
    #[arg(long)]
    region: u64,
    #[arg(long)]
    mixed_region: u64,
    #[arg(long)]
    sleepy_region: u64,
    #[arg(long, value_parser = count_parser("--rounds", MAX_REPEAT))]
    rounds: usize,
    /// fork_storm: VMAs of the parent.
    #[arg(long, default_value_t = 0)]
    vmas: u64,
}

/// Where a row runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The vmspace library with this fault strategy.
    Vm(Strategy),
    /// The host kernel, in a fresh child process.
    Host,
    /// The controls: `page_fault1`'s page zeroing and `page_fault2`'s page
    /// copies, with their writes, with no fault (`env::NoFaultEnv`);
    /// `page_fault3`'s writes to a mapping with every entry present
    /// (`env::WarmEnv`).
    NoFault,
}

impl Target {
    /// Every target, in the order results show them (`--strategy`'s default).
    const ALL: [Target; 5] = [
        Target::Vm(Strategy::MmapLock),
        Target::Vm(Strategy::PerVma),
        Target::Vm(Strategy::Speculative),
        Target::Host,
        Target::NoFault,
    ];

    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Target::Vm(s) => s.name(),
            Target::Host => "host",
            Target::NoFault => "no-fault",
        }
    }

    /// Whether the target has a row for `workload`.
    pub fn applies(self, workload: Workload) -> bool {
        self != Target::NoFault
            || matches!(
                workload,
                Workload::PageFault1 | Workload::PageFault2 | Workload::PageFault3
            )
    }
}

/// One aggregated result: a cell of the table and an object of the JSON.
#[derive(Clone, Debug)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// Strategy name, `host`, or (lookup) the structure.
    pub strategy: String,
    /// Threads, extra thread included.
    pub threads: usize,
    /// Lookup only: VMAs in the map.
    pub vmas: Option<u64>,
    /// Median ops/s over the runs (`None`: not applicable).
    pub ops_per_sec: Option<f64>,
    /// Spread of the runs.
    pub min: f64,
    /// Spread of the runs.
    pub max: f64,
    /// Runs (or busy windows, for mixed workloads).
    pub runs: usize,
    /// Operations counted in all measured windows.
    pub measured_ops: u64,
    /// Sampled latency of single operations.
    pub lat: Option<Histogram<u64>>,
    /// Fault counters over the measured windows (vmspace).
    pub stats: Option<FaultStats>,
    /// Minor faults over the measured windows (host).
    pub minflt: Option<u64>,
    /// Mixed workloads.
    pub mixed: Option<MixedRow>,
    /// Lookup: nanoseconds per lookup per thread.
    pub ns_per_op: Option<f64>,
    /// Why the row has no result.
    pub skipped: Option<String>,
    /// The rmap lock kind of the row's arena (fork and reclaim workloads).
    pub rmap_lock: Option<&'static str>,
    /// Rmap lock waits over the measured windows (fork_storm).
    pub rmap_lock_waits: Option<u64>,
    /// fork_vmas: fork time with the parent's VMAs write-locked over
    /// without, minus one.
    pub fork_lock_overhead: Option<f64>,
    /// The reclaim workloads' columns.
    pub reclaim: Option<ReclaimRow>,
    /// The mirror workloads' columns.
    pub mirror: Option<MirrorRow>,
}

impl Row {
    /// A row of `workload` on `strategy` at `threads` with every result
    /// column empty: each workload sets the columns it measures and takes
    /// the rest from here (`..Row::new(..)`).
    pub fn new(workload: Workload, strategy: String, threads: usize) -> Row {
        Row {
            workload,
            strategy,
            threads,
            vmas: None,
            ops_per_sec: None,
            min: 0.0,
            max: 0.0,
            runs: 0,
            measured_ops: 0,
            lat: None,
            stats: None,
            minflt: None,
            mixed: None,
            ns_per_op: None,
            skipped: None,
            rmap_lock: None,
            rmap_lock_waits: None,
            fork_lock_overhead: None,
            reclaim: None,
            mirror: None,
        }
    }
}

/// The columns of a `reclaim` row.
#[derive(Clone, Debug)]
pub struct ReclaimRow {
    /// `anon` or `file`.
    pub backing: &'static str,
    /// The memory limit (the arena), in pages.
    pub limit_pages: u64,
    /// The working set, in pages.
    pub working_set_pages: u64,
    /// Whether the swap file was opened with `O_DIRECT`.
    pub swap_direct: bool,
    /// Frames freed per frame the clock visited.
    pub scan_efficiency: f64,
    /// Seconds of the measured windows, all repeats together.
    pub seconds: f64,
    /// The arena's reclaim counters over the measured windows.
    pub stats: vmspace::ReclaimStats,
}

/// The columns of a `mirror` or `reclaim_mirror` row.
#[derive(Clone, Debug)]
pub struct MirrorRow {
    /// What was measured: `munmap` or `mprotect` (their cost), `fault`
    /// (first touches), `churn` (device reads beside a churning writer),
    /// `reclaim` (`reclaim_mirror`).
    pub op: &'static str,
    /// Mirrors subscribed to the address space.
    pub mirrors: usize,
    /// Who touched the pages of a `fault` row: `cpu` or `device`.
    pub target: Option<&'static str>,
    /// Device threads (each with a `Device` of the one mirror; the cost
    /// rows' single thread uses one device per mirror).
    pub device_threads: usize,
    /// Threads beside the row's `threads`: the churning writer, the
    /// `reclaim_mirror` device thread.
    pub extra_threads: usize,
    /// The mirrors' configuration.
    pub config: vmspace::MirrorConfig,
    /// The mirrors' counters over the measured windows, summed over the
    /// mirrors.
    pub stats: vmspace::MirrorStats,
    /// Seconds of the measured windows.
    pub seconds: f64,
    /// `mprotect`: nanoseconds per downgrade (RW to R) and per upgrade back.
    pub mprotect_ns: Option<(f64, f64)>,
    /// `churn`: the writer's operations per second.
    pub churn_ops_per_sec: Option<f64>,
}

/// The mixed-workload columns of a row.
#[derive(Clone, Debug)]
pub struct MixedRow {
    /// Faulter ops/s with the extra thread idle.
    pub baseline: f64,
    /// ops/s over baseline.
    pub kept: f64,
    /// Faulter ops/s with the extra thread spinning, over baseline.
    pub spin_kept: f64,
    /// Extra-thread ops/s (busy windows).
    pub churn_ops_per_sec: f64,
    /// Extra-thread latency.
    pub churn_lat: Histogram<u64>,
    /// The faulters' sampled latency in the idle windows (`Row::lat` has the
    /// busy windows').
    pub idle_lat: Histogram<u64>,
}

/// A ratio of two rates taken in the same repeat, over the repeats.
#[derive(Clone, Copy, Debug)]
pub struct Ratio {
    /// Median over the repeats.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Repeats.
    pub n: usize,
}

impl Ratio {
    /// The median and range of `xs` (`None` when it is empty).
    pub fn of(mut xs: Vec<f64>) -> Option<Ratio> {
        if xs.is_empty() {
            return None;
        }
        let median = median(&mut xs);
        Some(Ratio {
            median,
            min: xs[0],
            max: xs[xs.len() - 1],
            n: xs.len(),
        })
    }
}

/// The paired ratios of one target in one workload: each against mmap-lock at
/// the same thread count, and each thread count against the first.
#[derive(Clone, Debug)]
pub struct RatioRow {
    /// The workload.
    pub workload: Workload,
    /// Strategy name, `host` or `no-fault`.
    pub strategy: String,
    /// (threads, this target's rate / mmap-lock's) for every thread count.
    pub vs_mmap_lock: Vec<(usize, Option<Ratio>)>,
    /// (threads, rate at `threads` / rate at `base_threads`) for the other counts.
    pub scaling: Vec<(usize, Option<Ratio>)>,
    /// The thread count `scaling` divides by.
    pub base_threads: usize,
}

/// The hidden `__bench-host` subcommand: runs one measurement on the host
/// kernel in this (fresh) process and prints it as JSON.
pub fn host_main(args: HostArgs) -> ExitCode {
    #[cfg(target_os = "linux")]
    {
        if args.workload == Workload::ForkStorm {
            return match fork::host_storm(args.threads, args.vmas, args.warmup, args.seconds) {
                Ok(m) => {
                    println!("{}", m.to_json());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vmspace __bench-host: fork_storm: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        let spec = Spec {
            workload: args.workload,
            threads: args.threads,
            seconds: args.seconds,
            warmup: args.warmup,
            region: args.region,
            mixed_region: args.mixed_region,
            sleepy_region: args.sleepy_region,
            rounds: args.rounds,
        };
        let files = match args.workload {
            Workload::PageFault2 | Workload::PageFault3 => args.threads,
            _ => 0,
        };
        let env = env::HostEnv::new(files, args.region);
        println!("{}", run::measure(&env, &spec).to_json());
        ExitCode::SUCCESS
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = args;
        eprintln!("vmspace __bench-host: the host rows need Linux");
        ExitCode::from(exit::USAGE)
    }
}

/// `vmspace bench`: plan, run, report. Bad usage exits 2 before anything
/// runs; a failure while running or writing the results exits 1.
pub fn main(args: Args) -> ExitCode {
    let plan = match plan::plan(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("vmspace bench: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    match suite::run(&plan).and_then(|results| report(&plan, &results)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmspace bench: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// Prints the tables, the paired ratios and (loudly) the trust warnings,
/// then writes the JSON and the plots where the plan says.
fn report(plan: &Plan, results: &Results) -> Result<()> {
    let sizes = &plan.sizes;
    print!("{}", report::table(&results.rows));
    println!(
        "(median of {} runs per cell, {} s each; mixed workloads: {} rounds of idle/busy/spin windows of {} s; total {:.1} s)",
        sizes.repeat,
        sizes.seconds,
        sizes.repeat.max(3),
        sizes.seconds / 2.0,
        results.elapsed
    );
    print!("{}", report::ratio_table(&results.ratios));
    let warnings = trust::check(&results.rows);
    if !warnings.is_empty() {
        print!("{}", trust::banner(&warnings));
        eprintln!(
            "vmspace bench: WARNING: {} check(s) of the controls failed: this run is not trustworthy (see the output)",
            warnings.len()
        );
    }
    if let Some(path) = &plan.outputs.json {
        let meta = report::meta(&plan.to_json(), results.elapsed);
        let doc = report::json(meta, &results.rows, &results.ratios, &warnings);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("results: {}", path.display());
    }
    if let Some(dir) = &plan.outputs.plot {
        let written = plot::all(&results.rows, dir)?;
        println!("plots: {} ({} SVG files)", dir.display(), written);
    }
    Ok(())
}

/// The median of `xs` (sorted in place); `xs` must not be empty.
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_cover_every_strategy() {
        for s in Strategy::ALL {
            assert!(Target::ALL.contains(&Target::Vm(s)), "{}", s.name());
        }
        let names: Vec<_> = Target::ALL.map(Target::name).to_vec();
        assert_eq!(names.join(","), DEFAULT_TARGETS);
    }
}
