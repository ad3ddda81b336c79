//! `vmspace torture [--seconds S] [--threads N] [--strategy LIST]
//! [--rmap-lock LIST] [--seed N] [--inject RATE] [--swap-dir DIR | --no-swap]
//! [--mirrors N]`: random concurrent
//! operations with a checker (see [`vmspace_cli::torture`]), on each
//! strategy and rmap lock kind in turn.
//!
//! Prints one summary line per strategy and kind and a last line with the
//! seed.
//! Exit status: 0 when nothing was found, 1 on any violation or leak (the
//! seed to reproduce it is printed), 2 for bad arguments (found by the
//! parser, before any thread starts).

use std::process::ExitCode;
use std::time::Duration;

use vmspace::debug::ProtocolBreak;
use vmspace::{RmapLockKind, Strategy};
use vmspace_cli::torture::{run_with, Options};

/// Arguments of `vmspace torture`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds for the whole run, shared equally by the strategies and rmap
    /// lock kinds (0 to 86400).
    #[arg(long, allow_negative_numbers = true, default_value_t = 10.0, value_parser = seconds)]
    seconds: f64,
    /// Threads per address space (1 to 256).
    #[arg(long, allow_negative_numbers = true, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// Strategies, comma-separated (mmap-lock, per-vma, speculative), or
    /// `all`.
    #[arg(long, default_value = "all", value_parser = strategies)]
    strategy: StrategyList,
    /// Rmap lock kinds of the arena, comma-separated (rwsem, rwsem-spin,
    /// rwlock); each strategy runs on each.
    #[arg(long, value_delimiter = ',', default_value = "rwsem,rwsem-spin,rwlock",
          value_parser = |s: &str| s.parse::<RmapLockKind>())]
    rmap_lock: Vec<RmapLockKind>,
    /// Seed of every random choice (default: from the clock, printed).
    #[arg(long, allow_negative_numbers = true)]
    seed: Option<u64>,
    /// Probability (0 to 1) that an armed kind of failure happens: frame
    /// allocations, store reads, store writes. The kinds are armed by phases
    /// that change at each checkpoint: all three, then each alone.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, value_parser = probability)]
    inject: f64,
    /// Milliseconds between checkpoints (1 to 60000); an epoch that reaches
    /// a fixed number of operations ends sooner.
    #[arg(long, allow_negative_numbers = true, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    epoch_ms: u64,
    /// Directory of the swap file (default: the system's temporary
    /// directory). Each run swaps to a file there, with a reclaimer thread
    /// sending pages to it all the time.
    #[arg(long, conflicts_with = "no_swap")]
    swap_dir: Option<std::path::PathBuf>,
    /// Run without swap and without reclaim.
    #[arg(long)]
    no_swap: bool,
    /// Device mirrors of each address space (0 to 16), each with a device
    /// thread that loads and stores through it beside the workers; their
    /// invalidations sleep now and then (a device TLB flush).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=16))]
    mirrors: u64,
    /// Debug builds only: break the protocol on purpose (`skip-revalidation`,
    /// `early-free`, `fork-without-vma-lock`, `evict-dirty`,
    /// `swap-skip-write`, `sleep-under-rwlock` or `skip-notifier`) to show
    /// that the checker notices.
    #[arg(long, hide = true)]
    break_protocol: Option<ProtocolBreak>,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "`{s}` is not a number of seconds between 0 and 86400"
        )),
    }
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}` is not a probability between 0 and 1")),
    }
}

/// A parsed `--strategy` list.
#[derive(Clone, Debug)]
struct StrategyList(Vec<Strategy>);

/// `all`, or strategy names separated by commas.
fn strategies(s: &str) -> Result<StrategyList, String> {
    if s == "all" {
        return Ok(StrategyList(Strategy::ALL.to_vec()));
    }
    s.split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, String>>()
        .map(StrategyList)
        .map_err(|e| format!("{e}, or `all` alone"))
}

/// Runs the subcommand.
pub fn main(args: Args) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    if let Some(b) = args.break_protocol {
        if !vmspace::debug::break_protocol(Some(b)) {
            eprintln!("vmspace torture: --break-protocol needs a build with debug assertions");
            return ExitCode::from(2);
        }
        eprintln!("vmspace torture: protocol broken on purpose: {b:?}");
    }
    let strategies = args.strategy.0;
    let kinds = args.rmap_lock;
    let per = args.seconds / (strategies.len() * kinds.len()).max(1) as f64;
    let mut clean = true;
    let runs = strategies
        .iter()
        .flat_map(|&s| kinds.iter().map(move |&k| (s, k)));
    for (strategy, kind) in runs {
        let opts = Options {
            seconds: per,
            threads: args.threads as usize,
            seed,
            inject: args.inject,
            epoch: Duration::from_millis(args.epoch_ms),
            max_ops: None,
            swap_dir: (!args.no_swap)
                .then(|| args.swap_dir.clone().unwrap_or_else(std::env::temp_dir)),
            mirrors: args.mirrors as usize,
        };
        match run_with(strategy, kind, &opts) {
            Ok(report) => {
                println!("{}", report.summary());
                for v in &report.violations {
                    println!("  violation: {v}");
                }
                clean &= report.clean();
            }
            Err(e) => {
                println!(
                    "{}: rmap lock {}: could not run: {e:#}",
                    strategy.name(),
                    kind.name()
                );
                clean = false;
            }
        }
    }
    if clean {
        println!("torture: clean (seed {seed}, inject {})", args.inject);
        ExitCode::SUCCESS
    } else {
        println!(
            "torture: FAILED; reproduce with --seed {seed} --inject {}",
            args.inject
        );
        ExitCode::FAILURE
    }
}
