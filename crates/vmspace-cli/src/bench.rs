//! `vmspace bench`: the classic page-fault and mmap workloads (will-it-scale's
//! threads mode) on each locking strategy and on the host kernel, side by
//! side; a table, JSON and SVG plots.
//!
//! Module map:
//! * `env`: the operations a workload needs, over vmspace and over Linux;
//! * `run`: one measurement of one workload (threads, windows, sampling);
//! * `lookup`: the VMA lookup workload (range tree vs. the alternatives);
//! * `report`: the table and the JSON;
//! * `plot`: the SVG plots.
//!
//! Host rows run in a fresh child process (this binary re-executed with the
//! hidden `__bench-host` subcommand), so the kernel's mmap lock and page
//! tables are those of a process that holds nothing but the workload: not the
//! bench's threads, its frame arena or its allocator.

mod env;
mod lookup;
mod plot;
mod report;
mod run;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use vmspace::{FaultStats, FrameAllocator, Strategy};

use run::{Measurement, Spec};

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
}

impl Workload {
    const ALL: [Workload; 8] = [
        Workload::PageFault1,
        Workload::PageFault2,
        Workload::PageFault3,
        Workload::Mmap1,
        Workload::MixedChurn,
        Workload::MixedReaders,
        Workload::SleepyFile,
        Workload::Lookup,
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
        }
    }

    fn parse(s: &str) -> Result<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .with_context(|| {
                let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?} (one of: {})", names.join(", "))
            })
    }

    /// A workload with an extra thread measured against its idle baseline.
    pub fn is_mixed(self) -> bool {
        matches!(
            self,
            Workload::MixedChurn | Workload::MixedReaders | Workload::SleepyFile
        )
    }

    /// Thread counts when none are given.
    fn default_threads(self) -> Vec<usize> {
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

/// Arguments of `vmspace bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workloads to run (default: all of them): page_fault1, page_fault2,
    /// page_fault3, mmap1, mixed_churn, mixed_readers, sleepy_file, lookup.
    workloads: Vec<String>,
    /// Thread counts, comma-separated (default: 1,2 for page faults and mmap1,
    /// 2 for mixed workloads and lookup). Mixed workloads count their extra
    /// thread and need at least 2.
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Measured seconds per run (mixed workloads: per window).
    #[arg(long)]
    seconds: Option<f64>,
    /// Strategies, comma-separated: mmap-lock, per-vma, speculative, host,
    /// and no-fault, the control of page_fault1, 2 and 3: their page work
    /// (zeroing, copying, writing) with no fault (default: all). Does not
    /// apply to lookup.
    #[arg(long, value_delimiter = ',')]
    strategy: Vec<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write SVG plots into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Smaller regions and maps, shorter runs.
    #[arg(long)]
    quick: bool,
    /// Runs per measurement (median reported, min and max kept).
    #[arg(long)]
    repeat: Option<usize>,
}

/// Arguments of the hidden `__bench-host` subcommand (the host child).
#[derive(Debug, clap::Args)]
pub struct HostArgs {
    #[arg(long)]
    workload: String,
    #[arg(long)]
    threads: usize,
    #[arg(long)]
    seconds: f64,
    #[arg(long)]
    warmup: f64,
    #[arg(long)]
    region: u64,
    #[arg(long)]
    mixed_region: u64,
    #[arg(long)]
    sleepy_region: u64,
    #[arg(long)]
    rounds: usize,
}

/// Where a row runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Vm(Strategy),
    Host,
    /// The controls: `page_fault1`'s page zeroing and `page_fault2`'s page
    /// copies, with their writes, with no fault (`env::NoFaultEnv`);
    /// `page_fault3`'s writes to a mapping with every entry present
    /// (`env::WarmEnv`).
    NoFault,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Vm(s) => s.name(),
            Target::Host => "host",
            Target::NoFault => "no-fault",
        }
    }

    /// Whether the target has a row for `workload`.
    fn applies(self, workload: Workload) -> bool {
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

/// Sizes and durations of a run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    seconds: f64,
    warmup: f64,
    repeat: usize,
    region: u64,
    mixed_region: u64,
    sleepy_region: u64,
    lookup_sizes: [u64; 3],
}

const MIB: u64 = 1 << 20;

impl Plan {
    fn new(args: &Args) -> Plan {
        let quick = args.quick;
        let seconds = args.seconds.unwrap_or(if quick { 0.1 } else { 0.25 });
        Plan {
            seconds,
            warmup: (seconds / 2.0).min(0.1),
            repeat: args.repeat.unwrap_or(if quick { 1 } else { 3 }).max(1),
            region: if quick { 16 * MIB } else { 128 * MIB },
            mixed_region: if quick { 2 * MIB } else { 8 * MIB },
            sleepy_region: if quick { 256 * 1024 } else { MIB },
            lookup_sizes: if quick {
                [1_000, 10_000, 100_000]
            } else {
                [1_000, 100_000, 1_000_000]
            },
        }
    }

    fn spec(&self, workload: Workload, threads: usize) -> Spec {
        Spec {
            workload,
            threads,
            seconds: self.seconds,
            warmup: self.warmup,
            region: self.region,
            mixed_region: self.mixed_region,
            sleepy_region: self.sleepy_region,
            rounds: self.repeat.max(3),
        }
    }

    /// Frame-arena bytes a vmspace run of `workload` at `threads` needs.
    fn arena_bytes(&self, workload: Workload, threads: usize) -> u64 {
        let t = threads as u64;
        match workload {
            Workload::PageFault1 | Workload::PageFault3 => t * self.region,
            Workload::PageFault2 => 2 * t * self.region,
            Workload::Mmap1 | Workload::Lookup => 0,
            Workload::MixedChurn | Workload::MixedReaders => {
                (t - 1) * self.mixed_region + run::CHURN_BYTES
            }
            // Unmapped files are freed with their VMAs, after an epoch: room
            // for many of them.
            Workload::SleepyFile => 32 * t * self.sleepy_region,
        }
    }
}

/// The hidden `__bench-host` subcommand: runs one measurement on the host
/// kernel in this (fresh) process and prints it as JSON.
pub fn host_main(args: HostArgs) -> ExitCode {
    #[cfg(target_os = "linux")]
    {
        let workload = match Workload::parse(&args.workload) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("vmspace __bench-host: {e:#}");
                return ExitCode::from(2);
            }
        };
        let spec = Spec {
            workload,
            threads: args.threads,
            seconds: args.seconds,
            warmup: args.warmup,
            region: args.region,
            mixed_region: args.mixed_region,
            sleepy_region: args.sleepy_region,
            rounds: args.rounds,
        };
        let files = match workload {
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
        ExitCode::from(2)
    }
}

/// Runs `spec` on the host kernel in a fresh child process.
fn run_host(spec: &Spec) -> Result<Measurement> {
    let exe = std::env::current_exe().context("finding this binary to run the host child")?;
    let out = std::process::Command::new(exe)
        .arg("__bench-host")
        .args(["--workload", spec.workload.name()])
        .args(["--threads", &spec.threads.to_string()])
        .args(["--seconds", &spec.seconds.to_string()])
        .args(["--warmup", &spec.warmup.to_string()])
        .args(["--region", &spec.region.to_string()])
        .args(["--mixed-region", &spec.mixed_region.to_string()])
        .args(["--sleepy-region", &spec.sleepy_region.to_string()])
        .args(["--rounds", &spec.rounds.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running the host child")?;
    if !out.status.success() {
        bail!(
            "the host child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value =
        serde_json::from_str(text.trim()).context("parsing the host child's result")?;
    Measurement::from_json(&value).context("the host child's result is incomplete")
}

/// The directory for the default suite's outputs: `target/vmspace-bench`
/// beside the binary's profile directory, else under the current directory.
fn default_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let profile = exe.parent()?;
            let target = profile.parent()?;
            (target.file_name()? == "target").then(|| target.join("vmspace-bench"))
        })
        .unwrap_or_else(|| PathBuf::from("target/vmspace-bench"))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Puts the arena back as new before a vmspace run: waits (a few seconds at
/// most) until every frame of the previous run is back (files are freed with
/// their unmapped VMAs, after an epoch grace period; `vmspace bench page_fault3
/// --threads 1` ran out of frames on its second run without this), then puts
/// the free lists back in address order (`FrameAllocator::redeal`), so that no
/// run inherits the order in which the runs before it left the frames.
fn fresh_arena(frames: &FrameAllocator) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while frames.in_use() != 0 && std::time::Instant::now() < deadline {
        vmspace_tree::pin().flush();
        std::thread::yield_now();
    }
    if !frames.redeal() {
        eprintln!(
            "warning: {} frames still in use; this run starts from the arena as the last one left it",
            frames.in_use()
        );
    }
}

/// The workloads of `cells`, each once, in order.
fn workloads_in_order(cells: &[(Workload, usize)]) -> Vec<Workload> {
    let mut out: Vec<Workload> = Vec::new();
    for &(w, _) in cells {
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// One run of `spec` on `target`, or why the target has no row for it.
fn measure_one(
    spec: &run::Spec,
    target: Target,
    frames: Option<&Arc<FrameAllocator>>,
) -> Result<std::result::Result<Measurement, String>> {
    let workload = spec.workload;
    let threads = spec.threads;
    let frames = || frames.expect("arena for vmspace rows");
    Ok(Ok(match target {
        Target::Host if workload == Workload::SleepyFile => {
            return Ok(Err("n/a: the host has no file with a slow store".into()));
        }
        Target::Host => {
            run_host(spec).with_context(|| format!("{} on the host", workload.name()))?
        }
        Target::NoFault if workload == Workload::PageFault3 => {
            fresh_arena(frames());
            let env = env::WarmEnv(env::VmEnv::new(
                Strategy::PerVma,
                frames(),
                threads,
                spec.region,
            ));
            run::measure(&env, spec)
        }
        Target::NoFault => {
            let env = env::NoFaultEnv {
                region: spec.region,
                copies: workload == Workload::PageFault2,
            };
            run::measure(&env, spec)
        }
        Target::Vm(strategy) => {
            let files = match workload {
                Workload::PageFault2 | Workload::PageFault3 => threads,
                _ => 0,
            };
            fresh_arena(frames());
            let env = env::VmEnv::new(strategy, frames(), files, spec.region);
            run::measure(&env, spec)
        }
    }))
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
    fn of(mut xs: Vec<f64>) -> Option<Ratio> {
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

/// The ratios of rates measured in the same repeat (see `RatioRow`): a drift
/// of the machine between repeats moves both sides of a pair together.
fn paired_ratios(
    workload: Workload,
    counts: &[usize],
    targets: &[Target],
    skipped: &[Option<String>],
    runs: &[Vec<Vec<Measurement>>],
) -> Vec<RatioRow> {
    let rate = |m: &Measurement| m.ops as f64 / m.secs;
    let pairs = |a: &[Measurement], b: &[Measurement]| {
        Ratio::of(a.iter().zip(b).map(|(x, y)| rate(x) / rate(y)).collect())
    };
    let lock = targets
        .iter()
        .position(|&t| t == Target::Vm(Strategy::MmapLock));
    let mut out = Vec::new();
    for (i, &target) in targets.iter().enumerate() {
        if skipped[i].is_some() {
            continue;
        }
        let vs_mmap_lock = match lock {
            Some(l) if l != i && matches!(target, Target::Vm(_)) => counts
                .iter()
                .enumerate()
                .map(|(c, &t)| (t, pairs(&runs[c][i], &runs[c][l])))
                .collect(),
            _ => Vec::new(),
        };
        let scaling = counts
            .iter()
            .enumerate()
            .skip(1)
            .map(|(c, &t)| (t, pairs(&runs[c][i], &runs[0][i])))
            .collect();
        out.push(RatioRow {
            workload,
            strategy: target.name().to_string(),
            vs_mmap_lock,
            scaling,
            base_threads: counts[0],
        });
    }
    out
}

/// Aggregates the runs of one cell into a row.
fn aggregate(workload: Workload, target: Target, threads: usize, runs: Vec<Measurement>) -> Row {
    let mut rates: Vec<f64> = runs.iter().map(|m| m.ops as f64 / m.secs).collect();
    let mut lat = run::histogram();
    let mut stats: Option<FaultStats> = None;
    let mut minflt: Option<u64> = None;
    let mut measured_ops = 0;
    for m in &runs {
        lat.add(&m.lat).expect("histogram add");
        measured_ops += m.ops;
        if let Some(s) = m.stats {
            *stats.get_or_insert_with(FaultStats::default) += s;
        }
        if let Some(f) = m.minflt {
            *minflt.get_or_insert(0) += f;
        }
    }
    let mut mixed = None;
    let ops_per_sec;
    if workload.is_mixed() {
        // One run with several busy windows: the spread is over the windows.
        let m = &runs[0];
        let x = m.mixed.as_ref().expect("mixed measurement");
        ops_per_sec = m.ops as f64 / m.secs;
        rates = x.busy_rates.clone();
        let baseline = x.idle.0 as f64 / x.idle.1;
        let spin = x.spin.0 as f64 / x.spin.1;
        mixed = Some(MixedRow {
            baseline,
            kept: ops_per_sec / baseline,
            spin_kept: spin / baseline,
            churn_ops_per_sec: x.churn_ops as f64 / m.secs,
            churn_lat: x.churn_lat.clone(),
            idle_lat: x.idle_lat.clone(),
        });
    } else {
        ops_per_sec = median(&mut rates);
    }
    Row {
        workload,
        strategy: target.name().to_string(),
        threads,
        vmas: None,
        ops_per_sec: Some(ops_per_sec),
        min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        max: rates.iter().copied().fold(0.0, f64::max),
        runs: rates.len(),
        measured_ops,
        lat: Some(lat),
        stats,
        minflt,
        mixed,
        ns_per_op: None,
        skipped: None,
    }
}

fn skipped_row(workload: Workload, target: Target, threads: usize, why: &str) -> Row {
    Row {
        workload,
        strategy: target.name().to_string(),
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
        skipped: Some(why.to_string()),
    }
}

fn parse_targets(names: &[String]) -> Result<Vec<Target>> {
    if names.is_empty() {
        let mut all: Vec<Target> = Strategy::ALL.into_iter().map(Target::Vm).collect();
        all.push(Target::Host);
        all.push(Target::NoFault);
        return Ok(all);
    }
    names
        .iter()
        .map(|n| match n.as_str() {
            "host" => Ok(Target::Host),
            "no-fault" => Ok(Target::NoFault),
            _ => n
                .parse::<Strategy>()
                .map(Target::Vm)
                .map_err(|e| anyhow::anyhow!("{e}, host or no-fault")),
        })
        .collect()
}

/// `vmspace bench`.
pub fn main(args: Args) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmspace bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: Args) -> Result<()> {
    let suite = args.workloads.is_empty();
    let workloads = if suite {
        Workload::ALL.to_vec()
    } else {
        args.workloads
            .iter()
            .map(|w| Workload::parse(w))
            .collect::<Result<Vec<_>>>()?
    };
    let targets = parse_targets(&args.strategy)?;
    let plan = Plan::new(&args);
    if !(plan.seconds > 0.0 && plan.seconds.is_finite()) {
        bail!("--seconds must be positive");
    }
    let (json, plot_dir) = if suite {
        let dir = default_dir();
        (
            Some(
                args.json
                    .clone()
                    .unwrap_or_else(|| dir.join("results.json")),
            ),
            Some(args.plot.clone().unwrap_or(dir)),
        )
    } else {
        (args.json.clone(), args.plot.clone())
    };

    // The cells, in order, and the frame arena the largest one needs.
    let mut cells: Vec<(Workload, usize)> = Vec::new();
    for &w in &workloads {
        let threads = if args.threads.is_empty() {
            w.default_threads()
        } else {
            args.threads.clone()
        };
        for t in threads {
            if t == 0 {
                bail!("--threads must be at least 1");
            }
            cells.push((w, t));
        }
    }
    let arena = cells
        .iter()
        .filter(|&&(w, t)| !(w.is_mixed() && t < 2))
        .map(|&(w, t)| plan.arena_bytes(w, t))
        .max()
        .unwrap_or(0)
        + 8 * MIB;
    let vm_targets = targets
        .iter()
        .any(|t| matches!(t, Target::Vm(_) | Target::NoFault));
    let frames = if vm_targets {
        let mut f = FrameAllocator::new(arena).context("creating the frame arena")?;
        f.set_poison(false);
        Some(Arc::new(f))
    } else {
        None
    };

    let steps: u64 = cells
        .iter()
        .map(|&(w, _)| match w {
            Workload::Lookup => (lookup::STRUCTURES.len() * 3 * plan.repeat) as u64,
            w if w.is_mixed() => targets.iter().filter(|t| t.applies(w)).count() as u64,
            w => (targets.iter().filter(|t| t.applies(w)).count() * plan.repeat) as u64,
        })
        .sum();
    let bar = if std::io::stdout().is_terminal() {
        let b = ProgressBar::new(steps);
        b.set_style(
            ProgressStyle::with_template("{bar:32} {pos}/{len} [{elapsed_precise}] {msg}")
                .expect("progress template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for workload in workloads_in_order(&cells) {
        let counts: Vec<usize> = cells
            .iter()
            .filter(|&&(w, _)| w == workload)
            .map(|&(_, t)| t)
            .collect();
        if workload == Workload::Lookup {
            for &threads in &counts {
                rows.extend(run_lookup(&plan, threads, &bar));
            }
            continue;
        }
        let counts: Vec<usize> = counts
            .into_iter()
            .filter(|&threads| {
                let skip = workload.is_mixed() && threads < 2;
                if skip {
                    bar.suspend(|| {
                        eprintln!(
                            "{}: skipped at {threads} thread (it needs a faulter and the extra thread)",
                            workload.name()
                        )
                    });
                }
                !skip
            })
            .collect();
        let targets: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| t.applies(workload))
            .collect();
        let repeats = if workload.is_mixed() { 1 } else { plan.repeat };
        // runs[c][i]: the runs of thread count `counts[c]` on `targets[i]`.
        let mut runs: Vec<Vec<Vec<Measurement>>> =
            vec![vec![Vec::new(); targets.len()]; counts.len()];
        let mut skipped: Vec<Option<String>> = vec![None; targets.len()];
        // Each repeat runs every thread count on every target, one after the
        // other, so slow drifts of a shared machine spread over all of them
        // and the runs of one repeat can be compared pairwise (`ratios`).
        for r in 0..repeats {
            for (c, &threads) in counts.iter().enumerate() {
                let spec = plan.spec(workload, threads);
                for (i, &target) in targets.iter().enumerate() {
                    bar.set_message(format!(
                        "{} t={threads} {} run {}",
                        workload.name(),
                        target.name(),
                        r + 1
                    ));
                    if skipped[i].is_none() {
                        match measure_one(&spec, target, frames.as_ref())? {
                            Ok(m) => runs[c][i].push(m),
                            Err(why) => skipped[i] = Some(why),
                        }
                    }
                    bar.inc(1);
                }
            }
        }
        if !workload.is_mixed() {
            ratios.extend(paired_ratios(workload, &counts, &targets, &skipped, &runs));
        }
        for (c, &threads) in counts.iter().enumerate() {
            for (i, &target) in targets.iter().enumerate() {
                rows.push(match &skipped[i] {
                    Some(why) => skipped_row(workload, target, threads, why),
                    None => aggregate(workload, target, threads, std::mem::take(&mut runs[c][i])),
                });
            }
        }
    }
    bar.finish_and_clear();

    let meta = report::meta(&plan_json(&plan), started.elapsed().as_secs_f64());
    print!("{}", report::table(&rows));
    println!(
        "(median of {} runs per cell, {} s each; mixed workloads: {} rounds of idle/busy/spin windows of {} s; total {:.1} s)",
        plan.repeat,
        plan.seconds,
        plan.repeat.max(3),
        plan.seconds / 2.0,
        started.elapsed().as_secs_f64()
    );
    print!("{}", report::ratio_table(&ratios));
    if let Some(path) = &json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let doc = report::json(meta, &rows, &ratios);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("results: {}", path.display());
    }
    if let Some(dir) = &plot_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let written = plot::all(&rows, dir)?;
        println!("plots: {} ({} SVG files)", dir.display(), written);
    }
    Ok(())
}

fn plan_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "seconds": plan.seconds,
        "warmup_seconds": plan.warmup,
        "repeat": plan.repeat,
        "region_bytes": plan.region,
        "mixed_region_bytes": plan.mixed_region,
        "sleepy_region_bytes": plan.sleepy_region,
        "sleepy_latency_us": env::SLEEPY_LATENCY.as_micros() as u64,
        "churn_bytes": run::CHURN_BYTES,
        "args": std::env::args().skip(1).collect::<Vec<_>>(),
    })
}

/// The lookup rows at `threads` threads: every structure at every size.
fn run_lookup(plan: &Plan, threads: usize, bar: &ProgressBar) -> Vec<Row> {
    let mut rows = Vec::new();
    for n in plan.lookup_sizes {
        let built: Vec<_> = lookup::STRUCTURES
            .iter()
            .map(|kind| {
                bar.set_message(format!("lookup: building {kind} with {n} VMAs"));
                lookup::build(kind, n)
            })
            .collect();
        let mut rates = vec![Vec::new(); built.len()];
        let mut total_ops = vec![0u64; built.len()];
        for r in 0..plan.repeat {
            for (i, b) in built.iter().enumerate() {
                bar.set_message(format!(
                    "lookup {n} VMAs t={threads} {} run {}",
                    lookup::STRUCTURES[i],
                    r + 1
                ));
                let (ops, secs) = lookup::measure(b, threads, plan.seconds, plan.warmup.min(0.05));
                rates[i].push(ops as f64 / secs);
                total_ops[i] += ops;
                bar.inc(1);
            }
        }
        for (i, mut rs) in rates.into_iter().enumerate() {
            let ops_per_sec = median(&mut rs);
            rows.push(Row {
                workload: Workload::Lookup,
                strategy: lookup::STRUCTURES[i].to_string(),
                threads,
                vmas: Some(n),
                ops_per_sec: Some(ops_per_sec),
                min: rs[0],
                max: rs[rs.len() - 1],
                runs: rs.len(),
                measured_ops: total_ops[i],
                lat: None,
                stats: None,
                minflt: None,
                mixed: None,
                ns_per_op: Some(threads as f64 / ops_per_sec * 1e9),
                skipped: None,
            });
        }
    }
    rows
}
