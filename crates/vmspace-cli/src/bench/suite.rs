//! Running a [`Plan`]: every cell on every target, in repeats that go
//! through all of them in turn, aggregated into rows and paired ratios.
//!
//! One frame arena serves every vmspace run; before each run it is put back
//! as new ([`fresh_arena`]); the mirror workload (`mirror.rs`) runs on it
//! too. Host runs go to a fresh child process ([`run_host`]). The lookup
//! workload has its own loop ([`run_lookup`]); the other named-only
//! workloads have theirs in `fork.rs`, `reclaim.rs` and `mirror.rs`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use vmspace::{FaultStats, FrameAllocator, Strategy};

use super::plan::{Plan, Sizes};
use super::run::{self, Measurement, Spec};
use super::{
    env, fork, lookup, median, mirror, reclaim, MixedRow, Ratio, RatioRow, Row, Target, Workload,
};

/// What a bench measured.
pub struct Results {
    /// One row per cell and target (lookup: per structure and map size).
    pub rows: Vec<Row>,
    /// The paired ratios of the workloads that are not mixed.
    pub ratios: Vec<RatioRow>,
    /// Seconds the whole run took.
    pub elapsed: f64,
}

/// Runs every cell of `plan` on its targets.
pub fn run(plan: &Plan) -> Result<Results> {
    let frames = if plan.arena > 0 {
        let mut f = FrameAllocator::new(plan.arena).context("creating the frame arena")?;
        f.set_poison(false);
        Some(Arc::new(f))
    } else {
        None
    };
    let bar = progress_bar(steps(plan));
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for workload in plan.workloads() {
        if workload == Workload::Lookup {
            for threads in plan.counts(workload) {
                rows.extend(run_lookup(&plan.sizes, threads, &bar));
            }
            continue;
        }
        if matches!(workload, Workload::Reclaim | Workload::ReclaimMirror) {
            let dir = plan
                .outputs
                .scratch_dir()
                .context("creating the directory of reclaim's swap file")?;
            let device = workload == Workload::ReclaimMirror;
            for threads in plan.counts(workload) {
                bar.set_message(format!("{} t={threads}", workload.name()));
                rows.extend(reclaim::rows(
                    &plan.sizes,
                    &plan.rmap_locks,
                    threads,
                    &dir,
                    device,
                )?);
                bar.inc(1);
            }
            continue;
        }
        if workload == Workload::Mirror {
            let frames = frames
                .as_ref()
                .context("the mirror workload needs the frame arena")?;
            bar.set_message("mirror: munmap and mprotect cost");
            rows.extend(mirror::cost_rows(&plan.sizes, frames)?);
            for threads in plan.counts(workload) {
                bar.set_message(format!("mirror t={threads}"));
                rows.extend(mirror::fault_rows(&plan.sizes, frames, threads)?);
                rows.push(mirror::churn_row(&plan.sizes, frames, threads)?);
                bar.inc(1);
            }
            continue;
        }
        if workload.is_fork() {
            // fork_vmas is single-threaded: it runs once.
            let once = usize::from(workload == Workload::ForkVmas);
            let counts = plan.counts(workload);
            let n = if once == 1 { 1 } else { counts.len() };
            for threads in counts.into_iter().take(n) {
                bar.set_message(format!("{} t={threads}", workload.name()));
                if workload == Workload::ForkStorm {
                    let host = plan.targets.contains(&Target::Host);
                    rows.extend(fork::storm(&plan.sizes, &plan.rmap_locks, threads, host)?);
                } else {
                    rows.extend(fork::vmas(&plan.sizes)?);
                }
                bar.inc(1);
            }
            continue;
        }
        let (r, q) = run_workload(plan, workload, frames.as_ref(), &bar)?;
        rows.extend(r);
        ratios.extend(q);
    }
    bar.finish_and_clear();
    Ok(Results {
        rows,
        ratios,
        elapsed: started.elapsed().as_secs_f64(),
    })
}

/// The steps the progress bar counts: one per run.
fn steps(plan: &Plan) -> u64 {
    let targets = |w: Workload| plan.targets.iter().filter(|t| t.applies(w)).count();
    plan.cells
        .iter()
        .map(|&(w, _)| match w {
            Workload::Lookup => (lookup::STRUCTURES.len() * 3 * plan.sizes.repeat) as u64,
            w if w.is_named_only() => 1,
            w if w.is_mixed() => targets(w) as u64,
            w => (targets(w) * plan.sizes.repeat) as u64,
        })
        .sum()
}

/// A progress bar on a terminal, else a hidden one.
fn progress_bar(steps: u64) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(steps);
    b.set_style(
        ProgressStyle::with_template("{bar:32} {pos}/{len} [{elapsed_precise}] {msg}")
            .expect("progress template"),
    );
    b
}

/// Runs every thread count of `workload` on every target that applies, and
/// returns their rows and (for a workload that is not mixed) paired ratios.
fn run_workload(
    plan: &Plan,
    workload: Workload,
    frames: Option<&Arc<FrameAllocator>>,
    bar: &ProgressBar,
) -> Result<(Vec<Row>, Vec<RatioRow>)> {
    let counts: Vec<usize> = plan
        .counts(workload)
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
    let targets: Vec<Target> = plan
        .targets
        .iter()
        .copied()
        .filter(|t| t.applies(workload))
        .collect();
    let repeats = if workload.is_mixed() {
        1
    } else {
        plan.sizes.repeat
    };
    // runs[c][i]: the runs of thread count `counts[c]` on `targets[i]`.
    let mut runs: Vec<Vec<Vec<Measurement>>> = vec![vec![Vec::new(); targets.len()]; counts.len()];
    let mut skipped: Vec<Option<String>> = vec![None; targets.len()];
    // Each repeat runs every thread count on every target, one after the
    // other, so slow drifts of a shared machine spread over all of them and
    // the runs of one repeat can be compared pairwise (`paired_ratios`).
    for r in 0..repeats {
        for (c, &threads) in counts.iter().enumerate() {
            let spec = plan.sizes.spec(workload, threads);
            for (i, &target) in targets.iter().enumerate() {
                bar.set_message(format!(
                    "{} t={threads} {} run {}",
                    workload.name(),
                    target.name(),
                    r + 1
                ));
                if skipped[i].is_none() {
                    match measure_one(&spec, target, frames)? {
                        Ok(m) => runs[c][i].push(m),
                        Err(why) => skipped[i] = Some(why),
                    }
                }
                bar.inc(1);
            }
        }
    }
    let ratios = if workload.is_mixed() {
        Vec::new()
    } else {
        paired_ratios(workload, &counts, &targets, &skipped, &runs)
    };
    let mut rows = Vec::new();
    for (c, &threads) in counts.iter().enumerate() {
        for (i, &target) in targets.iter().enumerate() {
            rows.push(match &skipped[i] {
                Some(why) => skipped_row(workload, target, threads, why),
                None => aggregate(workload, target, threads, std::mem::take(&mut runs[c][i])),
            });
        }
    }
    Ok((rows, ratios))
}

/// One run of `spec` on `target`, or why the target has no row for it.
fn measure_one(
    spec: &Spec,
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

/// Puts the arena back as new before a vmspace run: waits (a few seconds at
/// most) until every frame of the previous run is back (files are freed with
/// their unmapped VMAs, after an epoch grace period; `vmspace bench page_fault3
/// --threads 1` ran out of frames on its second run without this), then puts
/// the free lists back in address order (`FrameAllocator::redeal`), so that no
/// run inherits the order in which the runs before it left the frames.
pub(super) fn fresh_arena(frames: &FrameAllocator) {
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
pub(super) fn aggregate(
    workload: Workload,
    target: Target,
    threads: usize,
    runs: Vec<Measurement>,
) -> Row {
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
        ops_per_sec: Some(ops_per_sec),
        min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        max: rates.iter().copied().fold(0.0, f64::max),
        runs: rates.len(),
        measured_ops,
        lat: Some(lat),
        stats,
        minflt,
        mixed,
        ..Row::new(workload, target.name().to_string(), threads)
    }
}

/// The row of a target that has no result for the cell, and why.
fn skipped_row(workload: Workload, target: Target, threads: usize, why: &str) -> Row {
    Row {
        skipped: Some(why.to_string()),
        ..Row::new(workload, target.name().to_string(), threads)
    }
}

/// The lookup rows at `threads` threads: every structure at every size.
fn run_lookup(sizes: &Sizes, threads: usize, bar: &ProgressBar) -> Vec<Row> {
    let mut rows = Vec::new();
    for n in sizes.lookup_sizes {
        let built: Vec<_> = lookup::STRUCTURES
            .iter()
            .map(|&(name, contender)| {
                bar.set_message(format!("lookup: building {name} with {n} VMAs"));
                lookup::build(contender, n)
            })
            .collect();
        let mut rates = vec![Vec::new(); built.len()];
        let mut total_ops = vec![0u64; built.len()];
        for r in 0..sizes.repeat {
            for (i, b) in built.iter().enumerate() {
                bar.set_message(format!(
                    "lookup {n} VMAs t={threads} {} run {}",
                    lookup::STRUCTURES[i].0,
                    r + 1
                ));
                let (ops, secs) =
                    lookup::measure(b, threads, sizes.seconds, sizes.warmup.min(0.05));
                rates[i].push(ops as f64 / secs);
                total_ops[i] += ops;
                bar.inc(1);
            }
        }
        for (i, mut rs) in rates.into_iter().enumerate() {
            let ops_per_sec = median(&mut rs);
            rows.push(Row {
                vmas: Some(n),
                ops_per_sec: Some(ops_per_sec),
                min: rs[0],
                max: rs[rs.len() - 1],
                runs: rs.len(),
                measured_ops: total_ops[i],
                ns_per_op: Some(threads as f64 / ops_per_sec * 1e9),
                ..Row::new(
                    Workload::Lookup,
                    lookup::STRUCTURES[i].0.to_string(),
                    threads,
                )
            });
        }
    }
    rows
}
