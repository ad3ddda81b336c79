//! The reclaim workloads (selected by name; not in the default suite):
//! faulting threads over a working set twice the memory limit, so that
//! every other access misses and reclaim runs all the time. `reclaim` has
//! the CPU threads alone; `reclaim_mirror` adds a device mirror and its
//! device thread (below).
//!
//! One arena per row, of [`limit_pages`] frames (the memory limit), with a
//! swap file in the results directory (`O_DIRECT` where the file system
//! allows it, so that swap I/O reaches the disk and not only the host's page
//! cache; the row says which) and the background reclaimer on. Two
//! backings: `anon` (a private anonymous mapping: pages go to swap and come
//! back) and `file` (a shared mapping of a file on disk in the same
//! directory: dirty pages are written back and dropped, then read again).
//! Each thread first writes every page of its own slice (not measured), then
//! writes one word of a random page of its slice at a time. `ops_per_sec`
//! is faults per second (the address space's completed faults over the
//! measured window); the latency histogram samples one access in
//! [`SAMPLE`], hits and faults alike. One row per rmap lock kind
//! (`--rmap-lock`), each with the reclaim counters of its measured window.
//!
//! `reclaim_mirror` (seed 003's trade-off: a spinning rmap lock, or MMU
//! notifiers that may sleep) subscribes a [`Mirror`] to the working set's
//! address space whose invalidations sleep [`DEVICE_SLEEP`] (one in
//! [`SLEEP_ONE_IN`]) when they drop an entry, a device TLB flush; beside
//! the CPU threads, [`DEVICE_THREADS`] extra device thread writes one word
//! of a random page of the whole working set at a time through it, so the
//! mirror holds entries of pages that reclaim wants. Reclaim's reverse-map
//! walks may sleep under the `rwsem` kinds: there the mirror sleeps in
//! them (`invalidations_slept`). Under the spinning `rwlock` they may not:
//! a mirror that would sleep answers busy and reclaim passes the page by
//! (`notifier_busy`). The row adds the mirror's counters of the measured
//! window; `ops_per_sec` is still the address space's faults per second,
//! which are the CPU threads' alone: the fault path a device fault runs is
//! not in the space's fault counters (they sum its `Cpu`s').
//!
//! Why one sleep in [`SLEEP_ONE_IN`] and not every time: the device's page
//! choice covers the whole working set, so under `rwlock` a mirror that
//! always sleeps answers busy for every page it maps, for good (only an
//! invalidation drops its entry), until its entries pin the whole memory
//! limit and a fault fails for want of memory (a run with one in 1 did,
//! within its first 0.2 s). A device confined to a set small enough to pin
//! safely would touch it so often that reclaim, which gives a page the
//! mirror used a second chance (`clear_young`) before it asks the mirror
//! to drop it, would seldom ask.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use vmspace::{
    AddressSpace, ArenaConfig, Config, DiskStore, File, FrameAllocator, MapFlags, MapSource,
    Mirror, MirrorConfig, MirrorStats, Prot, ReclaimConfig, ReclaimStats, RmapLockKind, SwapConfig,
    PAGE_SIZE,
};

use super::plan::Sizes;
use super::{median, MirrorRow, ReclaimRow, Row, Workload};

const P: u64 = PAGE_SIZE;
/// One access in this many is timed.
const SAMPLE: u64 = 8;
/// How long a `reclaim_mirror` invalidation sleeps (a device TLB flush).
pub const DEVICE_SLEEP: Duration = Duration::from_micros(20);
/// ... one time in this many (see the module documentation).
pub const SLEEP_ONE_IN: u32 = 2;
/// `reclaim_mirror`'s device threads, beside the CPU threads.
pub const DEVICE_THREADS: usize = 1;

/// What backs the working set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory (swap).
    Anon,
    /// A shared mapping of a file on disk (write-back and eviction).
    File,
}

impl Backing {
    /// The name in results.
    pub fn name(self) -> &'static str {
        match self {
            Backing::Anon => "anon",
            Backing::File => "file",
        }
    }
}

/// The memory limit in pages: 8 MiB, 2 MiB with `--quick`.
pub fn limit_pages(sizes: &Sizes) -> u64 {
    if sizes.seconds < super::plan::SECONDS {
        512
    } else {
        2048
    }
}

/// The `reclaim` rows (`reclaim_mirror`'s with `device`) at `threads` CPU
/// threads: per backing, per rmap lock kind.
pub fn rows(
    sizes: &Sizes,
    kinds: &[RmapLockKind],
    threads: usize,
    dir: &Path,
    device: bool,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for backing in [Backing::Anon, Backing::File] {
        for &kind in kinds {
            rows.push(row(sizes, kind, backing, threads, dir, device)?);
        }
    }
    Ok(rows)
}

/// The mirror of `reclaim_mirror`.
fn mirror_config() -> MirrorConfig {
    MirrorConfig {
        invalidate_sleep: DEVICE_SLEEP,
        sleep_one_in: SLEEP_ONE_IN,
    }
}

/// An arena of the limit with a swap file in `dir`: `O_DIRECT` if the file
/// system takes it, else buffered. Returns the arena and whether it is
/// direct.
fn arena(kind: RmapLockKind, limit: u64, dir: &Path) -> Result<(Arc<FrameAllocator>, bool)> {
    let path = dir.join(format!(
        "reclaim-{}-{}.swap",
        std::process::id(),
        kind.name()
    ));
    let mut last = None;
    for direct in [true, false] {
        let config = ArenaConfig {
            bytes: limit * P,
            rmap_lock: kind,
            swap: Some(SwapConfig {
                path: path.clone(),
                slots: 4 * limit,
                direct,
            }),
            reclaim: ReclaimConfig::default(),
        };
        match FrameAllocator::with_config(&config) {
            Ok(mut f) => {
                f.set_poison(false);
                return Ok((Arc::new(f), direct));
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("two attempts");
    anyhow::bail!(
        "reclaim: no swap file in {} ({}): give --json or --plot a directory on a disk",
        dir.display(),
        e
    )
}

/// The working set: a mapping of `pages` pages of `backing`.
fn working_set(
    frames: &Arc<FrameAllocator>,
    backing: Backing,
    pages: u64,
    dir: &Path,
) -> Result<(Arc<AddressSpace>, u64, Option<Arc<File>>)> {
    let space = AddressSpace::new(Config::default(), frames.clone()).context("address space")?;
    let (flags, source, file) = match backing {
        Backing::Anon => (MapFlags::default(), MapSource::Anon, None),
        Backing::File => {
            let path = dir.join(format!("reclaim-{}.data", std::process::id()));
            let disk = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            disk.set_len(pages * P).context("sizing the data file")?;
            // The open file stays usable once its name is gone.
            let _ = std::fs::remove_file(&path);
            let file = File::new(pages, Box::new(DiskStore::new(disk)), frames.clone());
            let flags = MapFlags {
                shared: true,
                ..MapFlags::default()
            };
            let source = MapSource::File {
                file: file.clone(),
                pgoff: 0,
            };
            (flags, source, Some(file))
        }
    };
    let base = space
        .mmap(0, pages * P, Prot::READ_WRITE, flags, source)
        .context("mapping the working set")?;
    Ok((space, base, file))
}

fn row(
    sizes: &Sizes,
    kind: RmapLockKind,
    backing: Backing,
    threads: usize,
    dir: &Path,
    device: bool,
) -> Result<Row> {
    let limit = limit_pages(sizes);
    let pages = 2 * limit;
    let (frames, direct) = arena(kind, limit, dir)?;
    let (space, base, file) = working_set(&frames, backing, pages, dir)?;
    let mirror = device.then(|| Mirror::new(&space, mirror_config()));
    let slice = pages / threads as u64;
    let mut rates = Vec::new();
    let mut lat = super::run::histogram();
    let mut faults_total = 0;
    let mut delta = ReclaimStats::default();
    let mut mirrored = MirrorStats::default();
    let mut seconds = 0.0;
    for _ in 0..sizes.repeat {
        let w = measure(
            &space,
            &frames,
            mirror.as_ref(),
            base,
            slice,
            threads,
            sizes,
        )?;
        rates.push(w.faults as f64 / w.secs);
        faults_total += w.faults;
        seconds += w.secs;
        lat.add(&w.lat).context("merging latency histograms")?;
        delta = delta.plus(&w.reclaim);
        mirrored = super::mirror::plus(&mirrored, &w.mirror);
    }
    let ops_per_sec = median(&mut rates);
    let reclaimed = delta.reclaimed_direct + delta.reclaimed_background;
    let workload = if device {
        Workload::ReclaimMirror
    } else {
        Workload::Reclaim
    };
    let row = Row {
        ops_per_sec: Some(ops_per_sec),
        min: rates[0],
        max: rates[rates.len() - 1],
        runs: rates.len(),
        measured_ops: faults_total,
        lat: Some(lat),
        stats: Some(space.fault_stats()),
        rmap_lock: Some(kind.name()),
        reclaim: Some(ReclaimRow {
            backing: backing.name(),
            limit_pages: limit,
            working_set_pages: pages,
            swap_direct: direct,
            scan_efficiency: if delta.scanned == 0 {
                0.0
            } else {
                reclaimed as f64 / delta.scanned as f64
            },
            seconds,
            stats: delta,
        }),
        mirror: device.then(|| MirrorRow {
            op: "reclaim",
            mirrors: 1,
            target: None,
            device_threads: DEVICE_THREADS,
            extra_threads: DEVICE_THREADS,
            config: mirror_config(),
            stats: mirrored,
            seconds,
            mprotect_ns: None,
            churn_ops_per_sec: None,
        }),
        ..Row::new(
            workload,
            Config::default().strategy.name().to_string(),
            threads,
        )
    };
    drop(mirror);
    drop(space);
    drop(file);
    vmspace_tree::sync::collect();
    Ok(row)
}

/// One measured window.
struct Window {
    /// The address space's completed faults.
    faults: u64,
    secs: f64,
    /// The CPU threads' sampled access latency.
    lat: Histogram<u64>,
    /// The arena's reclaim counters.
    reclaim: ReclaimStats,
    /// The mirror's counters (zero without one).
    mirror: MirrorStats,
}

/// One measured window of the CPU threads, each over its slice, and (with
/// `mirror`) the device threads over the whole working set.
fn measure(
    space: &Arc<AddressSpace>,
    frames: &FrameAllocator,
    mirror: Option<&Mirror>,
    base: u64,
    slice: u64,
    threads: usize,
    sizes: &Sizes,
) -> Result<Window> {
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let failed = Mutex::new(None);
    let devices = if mirror.is_some() { DEVICE_THREADS } else { 0 };
    let start = Barrier::new(threads + devices + 1);
    let hist = Mutex::new(super::run::histogram());
    let accesses = AtomicU64::new(0);
    let mut out = None;
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let (stop, measuring, failed, start, hist, accesses) =
                (&stop, &measuring, &failed, &start, &hist, &accesses);
            s.spawn(move || {
                let mut cpu = space.cpu();
                let first = base + t * slice * P;
                for p in 0..slice {
                    if let Err(e) = cpu.write_u64(first + p * P, p) {
                        *failed.lock().unwrap() = Some(e);
                    }
                }
                let mut h = super::run::histogram();
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut n = 0u64;
                start.wait();
                while !stop.load(Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let addr = first + (x % slice) * P;
                    let sample = n.is_multiple_of(SAMPLE) && measuring.load(Relaxed);
                    let t0 = sample.then(Instant::now);
                    if let Err(e) = cpu.write_u64(addr, n) {
                        *failed.lock().unwrap() = Some(e);
                        break;
                    }
                    if let Some(t0) = t0 {
                        h.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
                    }
                    n += 1;
                }
                accesses.fetch_add(n, Relaxed);
                let _ = hist.lock().unwrap().add(&h);
            });
        }
        let whole = slice * threads as u64;
        for d in 0..devices as u64 {
            let mut device = mirror.expect("devices need the mirror").device();
            let (stop, failed, start) = (&stop, &failed, &start);
            s.spawn(move || {
                let mut x = 0x2545_F491_4F6C_DD1Du64 ^ (d + 1);
                let mut n = 0u64;
                start.wait();
                while !stop.load(Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if let Err(e) = device.write_u64(base + (x % whole) * P, n) {
                        *failed.lock().unwrap() = Some(e);
                        break;
                    }
                    n += 1;
                }
            });
        }
        start.wait();
        std::thread::sleep(Duration::from_secs_f64(sizes.warmup));
        let m0 = mirror.map(Mirror::stats).unwrap_or_default();
        let f0 = space.fault_stats();
        let r0 = frames.reclaim_stats();
        let t0 = Instant::now();
        measuring.store(true, Relaxed);
        std::thread::sleep(Duration::from_secs_f64(sizes.seconds));
        measuring.store(false, Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let f1 = space.fault_stats();
        let r1 = frames.reclaim_stats();
        let m1 = mirror.map(Mirror::stats).unwrap_or_default();
        stop.store(true, Relaxed);
        let faults = (f1.lockless + f1.locked) - (f0.lockless + f0.locked);
        out = Some((faults, secs, r1.since(&r0), super::mirror::since(&m1, &m0)));
    });
    if let Some(e) = failed.into_inner().unwrap() {
        anyhow::bail!("reclaim: an access failed: {e:?}");
    }
    let (faults, secs, reclaim, mirror) = out.expect("the window ran");
    Ok(Window {
        faults,
        secs,
        lat: hist.into_inner().unwrap(),
        reclaim,
        mirror,
    })
}
