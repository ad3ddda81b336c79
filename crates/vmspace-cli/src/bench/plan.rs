//! The plan of a bench: which cells (workload, thread count) run on which
//! targets, with which sizes and durations, and where the results go.
//!
//! [`plan`] is the whole of the bench's usage checking that the argument
//! parser cannot do alone: it refuses a run whose frames would not fit in
//! this machine's memory, and an output path that cannot be written, before
//! any thread, arena or measurement exists. (Each flag value is checked by
//! its clap value parser: bounds, names.)

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{run, Args, Target, Workload};

/// Measured seconds per run by default.
pub const SECONDS: f64 = 0.25;
/// ... with `--quick`.
pub const QUICK_SECONDS: f64 = 0.1;
/// Runs per measurement by default.
pub const REPEAT: usize = 3;
/// ... with `--quick`.
pub const QUICK_REPEAT: usize = 1;

/// A mebibyte.
pub const MIB: u64 = 1 << 20;

/// Sizes and durations of a run.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Measured seconds per run (mixed workloads: per pair of windows).
    pub seconds: f64,
    /// Warm-up seconds before each run.
    pub warmup: f64,
    /// Runs per measurement.
    pub repeat: usize,
    /// Bytes per region of the page_fault and mmap1 workloads.
    pub region: u64,
    /// Bytes per faulter region of the mixed workloads.
    pub mixed_region: u64,
    /// Bytes per sleepy file.
    pub sleepy_region: u64,
    /// VMAs in the lookup workload's maps.
    pub lookup_sizes: [u64; 3],
}

impl Sizes {
    fn new(args: &Args) -> Sizes {
        let quick = args.quick;
        let seconds = args
            .seconds
            .unwrap_or(if quick { QUICK_SECONDS } else { SECONDS });
        Sizes {
            seconds,
            warmup: (seconds / 2.0).min(0.1),
            repeat: args
                .repeat
                .unwrap_or(if quick { QUICK_REPEAT } else { REPEAT }),
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

    /// What one run of `workload` at `threads` does.
    pub fn spec(&self, workload: Workload, threads: usize) -> run::Spec {
        run::Spec {
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
            // fork.rs and reclaim.rs make arenas of their own.
            Workload::ForkStorm | Workload::ForkVmas | Workload::Reclaim => 0,
            Workload::ReclaimMirror => 0,
            // mirror.rs runs on the shared arena: its fault rows are
            // page_fault1's, the other rows need less.
            Workload::Mirror => t * self.region,
            Workload::MixedChurn | Workload::MixedReaders => {
                (t - 1) * self.mixed_region + run::CHURN_BYTES
            }
            // Unmapped files are freed with their VMAs, after an epoch: room
            // for many of them.
            Workload::SleepyFile => 32 * t * self.sleepy_region,
        }
    }
}

/// Where the results go.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// The JSON document.
    pub json: Option<PathBuf>,
    /// The directory of the SVG plots.
    pub plot: Option<PathBuf>,
}

impl Outputs {
    /// Where workloads put their scratch files (the reclaim workloads' swap
    /// and data files): the JSON document's directory, else the plots', else
    /// `target/vmspace-bench`; created if missing.
    pub fn scratch_dir(&self) -> std::io::Result<PathBuf> {
        let dir = match (&self.json, &self.plot) {
            (Some(json), _) => json
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            (None, Some(plot)) => plot.clone(),
            (None, None) => default_dir(),
        };
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// What a bench runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Sizes and durations.
    pub sizes: Sizes,
    /// The cells, in order: each workload with each of its thread counts.
    pub cells: Vec<(Workload, usize)>,
    /// The targets, in order.
    pub targets: Vec<Target>,
    /// Bytes of the frame arena the largest vmspace cell needs (0: no
    /// vmspace target).
    pub arena: u64,
    /// Where the results go (checked writable).
    pub outputs: Outputs,
    /// The rmap lock kinds of the workloads reported per kind.
    pub rmap_locks: Vec<vmspace::RmapLockKind>,
}

/// Plans the bench `args` ask for, or says why it is bad usage.
pub fn plan(args: &Args) -> Result<Plan, String> {
    let suite = args.workloads.is_empty();
    let workloads = if suite {
        Workload::ALL
            .into_iter()
            .filter(|w| !w.is_named_only())
            .collect()
    } else {
        args.workloads.clone()
    };
    let sizes = Sizes::new(args);
    let mut cells = Vec::new();
    for &w in &workloads {
        let threads = if args.threads.is_empty() {
            w.default_threads()
        } else {
            args.threads.clone()
        };
        cells.extend(threads.into_iter().map(|t| (w, t)));
    }
    let footprint = cells
        .iter()
        .filter(|&&(w, t)| !(w.is_mixed() && t < 2))
        .map(|&(w, t)| sizes.arena_bytes(w, t))
        .max()
        .unwrap_or(0)
        + 8 * MIB;
    check_memory(footprint, available_memory())?;
    // The mirror workload runs on the shared arena whatever `--strategy` says.
    let vm_targets = args
        .strategy
        .iter()
        .any(|t| matches!(t, Target::Vm(_) | Target::NoFault))
        || workloads.contains(&Workload::Mirror);
    let outputs = if suite {
        let dir = default_dir();
        Outputs {
            json: Some(
                args.json
                    .clone()
                    .unwrap_or_else(|| dir.join("results.json")),
            ),
            plot: Some(args.plot.clone().unwrap_or(dir)),
        }
    } else {
        Outputs {
            json: args.json.clone(),
            plot: args.plot.clone(),
        }
    };
    if let Some(path) = &outputs.json {
        check_file("--json", path)?;
    }
    if let Some(dir) = &outputs.plot {
        check_dir("--plot", dir)?;
    }
    Ok(Plan {
        sizes,
        cells,
        targets: args.strategy.clone(),
        arena: if vm_targets { footprint } else { 0 },
        outputs,
        rmap_locks: args.rmap_lock.clone(),
    })
}

impl Plan {
    /// The workloads of the cells, each once, in order.
    pub fn workloads(&self) -> Vec<Workload> {
        let mut out: Vec<Workload> = Vec::new();
        for &(w, _) in &self.cells {
            if !out.contains(&w) {
                out.push(w);
            }
        }
        out
    }

    /// The thread counts of `workload`'s cells, in order.
    pub fn counts(&self, workload: Workload) -> Vec<usize> {
        self.cells
            .iter()
            .filter(|&&(w, _)| w == workload)
            .map(|&(_, t)| t)
            .collect()
    }

    /// The plan as the JSON's `meta.plan`.
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.sizes;
        serde_json::json!({
            "seconds": s.seconds,
            "warmup_seconds": s.warmup,
            "repeat": s.repeat,
            "region_bytes": s.region,
            "mixed_region_bytes": s.mixed_region,
            "sleepy_region_bytes": s.sleepy_region,
            "sleepy_latency_us": super::env::SLEEPY_LATENCY.as_micros() as u64,
            "churn_bytes": run::CHURN_BYTES,
            "args": std::env::args().skip(1).collect::<Vec<_>>(),
        })
    }
}

/// The bytes of memory the kernel says it can give without swapping
/// (`MemAvailable`), if it says.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a run whose largest cell needs more memory than is available:
/// its frames (or the host's pages) would be swapped out or killed for.
fn check_memory(footprint: u64, available: Option<u64>) -> Result<(), String> {
    match available {
        Some(available) if footprint > available => Err(format!(
            "the largest run needs {} MiB of memory, more than the {} MiB available; \
             use fewer --threads, or --quick",
            footprint / MIB,
            available / MIB
        )),
        _ => Ok(()),
    }
}

/// Checks that the file `path` can be written, without changing it: its
/// folder is made, an existing file is opened for writing, a missing one is
/// created and removed again.
fn check_file(flag: &str, path: &Path) -> Result<(), String> {
    let refuse = |why: String| format!("{flag} {}: {why}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| refuse(format!("cannot create {}: {e}", dir.display())))?;
    }
    if path.is_dir() {
        return Err(refuse("is a directory".into()));
    }
    match OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => probe(path).map_err(|e| refuse(e.to_string())),
        Err(e) => Err(refuse(format!("cannot write: {e}"))),
    }
}

/// Checks that files can be written in the directory `dir` (made if missing).
fn check_dir(flag: &str, dir: &Path) -> Result<(), String> {
    let refuse = |why: String| format!("{flag} {}: {why}", dir.display());
    std::fs::create_dir_all(dir).map_err(|e| refuse(format!("cannot create: {e}")))?;
    let probe_path = dir.join(format!(".vmspace-bench-probe-{}", std::process::id()));
    probe(&probe_path).map_err(|e| refuse(format!("cannot write a file in it: {e}")))
}

/// Creates the file `path` (which must not exist) and removes it.
fn probe(path: &Path) -> std::io::Result<()> {
    OpenOptions::new().write(true).create_new(true).open(path)?;
    std::fs::remove_file(path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_over_what_is_available_is_refused() {
        assert!(check_memory(100 * MIB, Some(200 * MIB)).is_ok());
        assert!(check_memory(100 * MIB, None).is_ok());
        let e = check_memory(300 * MIB, Some(200 * MIB)).unwrap_err();
        assert!(e.contains("300 MiB") && e.contains("200 MiB"), "{e}");
    }

    #[test]
    fn output_checks_leave_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("vmspace-plan-test-{}", std::process::id()));
        let json = dir.join("sub").join("r.json");
        check_file("--json", &json).unwrap();
        assert!(!json.exists());
        std::fs::write(&json, "kept").unwrap();
        check_file("--json", &json).unwrap();
        assert_eq!(std::fs::read_to_string(&json).unwrap(), "kept");
        check_dir("--plot", &dir.join("plots")).unwrap();
        assert_eq!(std::fs::read_dir(dir.join("plots")).unwrap().count(), 0);
        let e = check_file("--json", &json.join("x.json")).unwrap_err();
        assert!(e.starts_with("--json "), "{e}");
        let e = check_dir("--plot", &json).unwrap_err();
        assert!(e.starts_with("--plot "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
