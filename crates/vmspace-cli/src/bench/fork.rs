//! The fork workloads (selected by name; not in the default suite):
//!
//! * `fork_storm` (aim7 `fork_test`, exim): one parent address space of many
//!   VMAs (alternating protections, so they do not merge) and a touched
//!   working set; `threads` threads each fork the shared parent, write a few
//!   pages in the child through a child `Cpu`, and drop the child. Forking
//!   records every child VMA in the parent's anonymous objects' mapping lists
//!   and dropping the child forgets them, both under the rmap lock for
//!   writing: that is the contention. One row per rmap lock kind
//!   (`--rmap-lock`), each on an arena of its own, with the arena's rmap lock
//!   waits over the measured window.
//! * `fork_vmas`: the cost of write-locking every parent VMA during fork,
//!   one thread, a parent of 10 000 VMAs: forks with the locking and without
//!   (`AddressSpace::fork_unlocked_for_bench`, sound here because nothing
//!   else touches the parent), interleaved, one row each.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vmspace::{
    AddressSpace, ArenaConfig, Config, FrameAllocator, MapFlags, MapSource, Prot, RmapLockKind,
    PAGE_SIZE,
};

use super::plan::Sizes;
use super::{median, Row, Workload};

const P: u64 = PAGE_SIZE;
/// Pages per VMA of the fork_storm parent.
const VMA_PAGES: u64 = 4;
/// Pages each child writes.
const CHILD_WRITES: u64 = 4;

/// A parent of `vmas` VMAs of `pages` pages, every page written, the odd
/// VMAs then made read-only (so neighbours differ and do not merge).
fn parent(frames: &Arc<FrameAllocator>, vmas: u64, pages: u64) -> Result<(Arc<AddressSpace>, u64)> {
    let space = AddressSpace::new(Config::default(), frames.clone()).context("address space")?;
    let len = vmas * pages * P;
    let base = space
        .mmap(
            0,
            len,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::Anon,
        )
        .context("mapping the parent")?;
    let mut cpu = space.cpu();
    for p in 0..vmas * pages {
        cpu.write_u64(base + p * P, p)
            .map_err(|e| anyhow::anyhow!("touching the parent: {e:?}"))?;
    }
    drop(cpu);
    for v in (1..vmas).step_by(2) {
        space
            .mprotect(base + v * pages * P, pages * P, Prot::READ)
            .context("mprotect of the parent")?;
    }
    Ok((space, base))
}

/// The fork_storm VMAs.
fn storm_vmas(sizes: &Sizes) -> u64 {
    if sizes.seconds < super::plan::SECONDS {
        64
    } else {
        256
    }
}

/// The fork_storm rows at `threads` threads, one per kind, and the host's
/// (`host`) last.
pub fn storm(
    sizes: &Sizes,
    kinds: &[RmapLockKind],
    threads: usize,
    host: bool,
) -> Result<Vec<Row>> {
    let vmas = storm_vmas(sizes);
    let mut rows = Vec::new();
    for &kind in kinds {
        let config = ArenaConfig {
            bytes: 64 << 20,
            rmap_lock: kind,
            ..ArenaConfig::default()
        };
        let mut f = FrameAllocator::with_config(&config).context("creating the frame arena")?;
        f.set_poison(false);
        let frames = Arc::new(f);
        let (space, base) = parent(&frames, vmas, VMA_PAGES)?;
        let mut rates = Vec::new();
        let (mut ops_total, mut waits_total) = (0, 0);
        for _ in 0..sizes.repeat {
            let (ops, secs, waits) = storm_run(&space, &frames, base, vmas, threads, sizes)?;
            rates.push(ops as f64 / secs);
            ops_total += ops;
            waits_total += waits;
        }
        let ops_per_sec = median(&mut rates);
        rows.push(Row {
            vmas: Some(vmas),
            ops_per_sec: Some(ops_per_sec),
            min: rates[0],
            max: rates[rates.len() - 1],
            runs: rates.len(),
            measured_ops: ops_total,
            rmap_lock: Some(kind.name()),
            rmap_lock_waits: Some(waits_total),
            ..Row::new(
                Workload::ForkStorm,
                Config::default().strategy.name().to_string(),
                threads,
            )
        });
        drop(space);
        vmspace_tree::sync::collect();
    }
    if host {
        rows.push(host_row(sizes, vmas, threads)?);
    }
    Ok(rows)
}

/// The host's fork_storm row: real `fork` + `_exit` of the same shape, in a
/// fresh process per repeat (this binary's hidden `__bench-host`).
fn host_row(sizes: &Sizes, vmas: u64, threads: usize) -> Result<Row> {
    let exe = std::env::current_exe().context("finding this binary to run the host child")?;
    let mut rates = Vec::new();
    let mut ops_total = 0;
    for _ in 0..sizes.repeat {
        let out = std::process::Command::new(&exe)
            .arg("__bench-host")
            .args(["--workload", "fork_storm"])
            .args(["--threads", &threads.to_string()])
            .args(["--seconds", &sizes.seconds.to_string()])
            .args(["--warmup", &sizes.warmup.to_string()])
            .args([
                "--region",
                "0",
                "--mixed-region",
                "0",
                "--sleepy-region",
                "0",
            ])
            .args(["--rounds", "1", "--vmas", &vmas.to_string()])
            .stdin(std::process::Stdio::null())
            .output()
            .context("running the host child")?;
        if !out.status.success() {
            anyhow::bail!(
                "the fork_storm host child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let value: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim())
                .context("parsing the host child's result")?;
        let m = super::run::Measurement::from_json(&value)
            .context("the host child's result is incomplete")?;
        rates.push(m.ops as f64 / m.secs);
        ops_total += m.ops;
    }
    let ops_per_sec = median(&mut rates);
    Ok(Row {
        vmas: Some(vmas),
        ops_per_sec: Some(ops_per_sec),
        min: rates[0],
        max: rates[rates.len() - 1],
        runs: rates.len(),
        measured_ops: ops_total,
        ..Row::new(Workload::ForkStorm, "host".to_string(), threads)
    })
}

/// The host side of fork_storm, run in the fresh `__bench-host` process:
/// a parent of `vmas` VMAs of [`VMA_PAGES`] written pages, the odd VMAs
/// read-only; `threads` threads each `fork`, and the child writes
/// [`CHILD_WRITES`] pages and `_exit`s while the thread waits for it.
/// Returns the forks of the measured window.
#[cfg(target_os = "linux")]
pub fn host_storm(
    threads: usize,
    vmas: u64,
    warmup: f64,
    seconds: f64,
) -> Result<super::run::Measurement> {
    let vmas = vmas.max(1);
    let len = (vmas * VMA_PAGES * P) as usize;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        anyhow::bail!("mmap: {}", std::io::Error::last_os_error());
    }
    let base = base as usize;
    for p in 0..vmas * VMA_PAGES {
        // SAFETY: inside the mapping just made, writable.
        unsafe { std::ptr::write_volatile((base + (p * P) as usize) as *mut u64, p) };
    }
    for v in (1..vmas).step_by(2) {
        let at = base + (v * VMA_PAGES * P) as usize;
        // SAFETY: a range of the mapping made above.
        let r = unsafe { libc::mprotect(at as *mut _, (VMA_PAGES * P) as usize, libc::PROT_READ) };
        if r != 0 {
            anyhow::bail!("mprotect: {}", std::io::Error::last_os_error());
        }
    }
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let forks = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    let mut secs = 0.0;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, measuring, forks, failed, start) =
                (&stop, &measuring, &forks, &failed, &start);
            s.spawn(move || {
                start.wait();
                let mut i = t as u64;
                while !stop.load(Relaxed) {
                    // SAFETY: the child only stores to the parent's private
                    // memory (its copy) and calls `_exit`, both
                    // async-signal-safe, so forking a threaded process is
                    // sound.
                    let pid = unsafe { libc::fork() };
                    if pid == 0 {
                        for k in 0..CHILD_WRITES {
                            let v = (2 * (i + k)) % vmas;
                            let at = base + (v * VMA_PAGES * P) as usize;
                            // SAFETY: an even VMA of the mapping: writable.
                            unsafe { std::ptr::write_volatile(at as *mut u64, i) };
                        }
                        // SAFETY: ends the child at once, without running
                        // the parent's destructors or atexit handlers.
                        unsafe { libc::_exit(0) };
                    }
                    if pid < 0 {
                        failed.store(true, Relaxed);
                        return;
                    }
                    let mut status = 0;
                    // SAFETY: waits for the child forked just above.
                    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                        failed.store(true, Relaxed);
                    }
                    i += 1;
                    if measuring.load(Relaxed) {
                        forks.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        start.wait();
        std::thread::sleep(Duration::from_secs_f64(warmup));
        let t0 = Instant::now();
        measuring.store(true, Relaxed);
        std::thread::sleep(Duration::from_secs_f64(seconds));
        measuring.store(false, Relaxed);
        secs = t0.elapsed().as_secs_f64();
        stop.store(true, Relaxed);
    });
    if failed.load(Relaxed) {
        anyhow::bail!("a fork or a child failed");
    }
    Ok(super::run::Measurement {
        ops: forks.load(Relaxed),
        secs,
        lat: super::run::histogram(),
        stats: None,
        minflt: None,
        mixed: None,
    })
}

/// One measured window: (forks, seconds, rmap lock waits in the window).
fn storm_run(
    space: &Arc<AddressSpace>,
    frames: &FrameAllocator,
    base: u64,
    vmas: u64,
    threads: usize,
    sizes: &Sizes,
) -> Result<(u64, f64, u64)> {
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let forks = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    let mut out = (0, 0.0, 0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, measuring, forks, failed, start) =
                (&stop, &measuring, &forks, &failed, &start);
            s.spawn(move || {
                start.wait();
                let mut i = t as u64;
                while !stop.load(Relaxed) {
                    let child = space.fork();
                    let mut cpu = child.cpu();
                    for k in 0..CHILD_WRITES {
                        // Writable VMAs are the even ones.
                        let v = (2 * (i + k)) % vmas;
                        if cpu.write_u64(base + v * VMA_PAGES * P, i).is_err() {
                            failed.store(true, Relaxed);
                        }
                    }
                    i += 1;
                    drop(cpu);
                    drop(child);
                    if measuring.load(Relaxed) {
                        forks.fetch_add(1, Relaxed);
                    }
                }
            });
        }
        start.wait();
        std::thread::sleep(Duration::from_secs_f64(sizes.warmup));
        let w0 = frames.rmap_lock_stats().waits;
        let t0 = Instant::now();
        measuring.store(true, Relaxed);
        std::thread::sleep(Duration::from_secs_f64(sizes.seconds));
        measuring.store(false, Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let waits = frames.rmap_lock_stats().waits - w0;
        stop.store(true, Relaxed);
        out = (forks.load(Relaxed), secs, waits);
    });
    if failed.load(Relaxed) {
        anyhow::bail!("a child write failed in fork_storm");
    }
    Ok(out)
}

/// The fork_vmas rows: forks of a parent of many one-page VMAs with the
/// parent's VMAs write-locked (`locked`) and without (`unlocked`); both rows
/// carry the overhead, locked time over unlocked time minus one (median
/// over the repeats, each pairing the two).
pub fn vmas(sizes: &Sizes) -> Result<Vec<Row>> {
    let vmas = if sizes.seconds < super::plan::SECONDS {
        2_000
    } else {
        10_000
    };
    let mut f = FrameAllocator::new(64 << 20).context("creating the frame arena")?;
    f.set_poison(false);
    let frames = Arc::new(f);
    let (space, _) = parent(&frames, vmas, 1)?;
    let forks_per_run = 20;
    let (mut locked, mut unlocked, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.repeat.max(3) {
        let time = |unlocked: bool| {
            let t0 = Instant::now();
            for _ in 0..forks_per_run {
                let child = if unlocked {
                    space.fork_unlocked_for_bench()
                } else {
                    space.fork()
                };
                drop(child);
            }
            t0.elapsed().as_secs_f64()
        };
        let l = time(false);
        let u = time(true);
        locked.push(forks_per_run as f64 / l);
        unlocked.push(forks_per_run as f64 / u);
        overhead.push(l / u - 1.0);
    }
    let overhead = median(&mut overhead);
    let row = |name: &str, mut rates: Vec<f64>| {
        let ops = median(&mut rates);
        Row {
            vmas: Some(vmas),
            ops_per_sec: Some(ops),
            min: rates[0],
            max: rates[rates.len() - 1],
            runs: rates.len(),
            measured_ops: (forks_per_run * rates.len()) as u64,
            ns_per_op: Some(1e9 / ops),
            rmap_lock: Some(frames.rmap_lock_kind().name()),
            fork_lock_overhead: Some(overhead),
            ..Row::new(Workload::ForkVmas, name.to_string(), 1)
        }
    };
    let rows = vec![row("locked", locked), row("unlocked", unlocked)];
    drop(space);
    vmspace_tree::sync::collect();
    Ok(rows)
}
