//! The `mirror` workload (selected by name; not in the default suite): what
//! MMU notifiers and a device mirror ([`Mirror`]) cost and do, in three
//! kinds of rows side by side in one run.
//!
//! * **Cost** (`op` `munmap` and `mprotect`; one thread, run once whatever
//!   `--threads` says): with 0, 1 and 4 mirrors subscribed
//!   ([`MIRROR_COUNTS`]), map [`COST_PAGES`] pages and write each through a
//!   `Cpu` and through each mirror's device, so that every mirror holds a
//!   writable entry of every page, then time only the `munmap`. For
//!   `mprotect`, one mapping is written the same way, then the `mprotect`
//!   to read-only (a downgrade: the mirrors write-protect their entries and
//!   keep them) and the one back to read-write are timed. Every call is
//!   timed; `ns_per_op` is nanoseconds per call (`mprotect`: both
//!   directions together, and each apart in the JSON). The mirror counts
//!   take turns in every repeat.
//! * **Faults** (`op` `fault`): page_fault1's loop (`run.rs`: map a
//!   private region, write one word per page, unmap it, again) at each
//!   thread count, with a `Cpu` per thread and no mirror (`target` `cpu`),
//!   and with the writes through a [`Device`] per thread of one mirror
//!   (`target` `device`, [`DeviceEnv`]): each write to a new page is a
//!   device fault, which runs the CPU fault path
//!   (`AddressSpace::resolve_range`) and fills the mirror, and each unmap
//!   empties it. `ops_per_sec` is first touches, that is faults, per
//!   second. The two targets take turns in every repeat. The device row
//!   has no fault counters (`lockless`, `locked`, ...): the space's sum its
//!   `Cpu`s' faults, and the fault path a device fault runs is not a
//!   `Cpu`'s.
//! * **Churn** (`op` `churn`): `threads` device threads read random pages
//!   of one written region of [`churn_pages`] pages through one mirror,
//!   while one extra thread churns that region: `madvise(DONTNEED)` of a
//!   random page, then `mprotect` of a random page to read-only and back.
//!   A dropped entry makes the next read of its page a device fault, and
//!   an invalidation that starts while a fault resolves makes the fault
//!   start over (the mirror watches the whole space, so any churn call
//!   counts, even of another page). `ops_per_sec` is device faults per
//!   second; the row has the mirror's `fault_retries` and the retries per
//!   device fault.
//!
//! The mirrors here never sleep (`MirrorConfig::default()`): these rows
//! measure the notifier protocol and the mirror table, not a modelled
//! device-flush latency, which only adds its own length to each
//! invalidation here; `reclaim_mirror` (`reclaim.rs`) is where a sleeping
//! mirror meets a lock that cannot wait.
//!
//! Everything runs on the bench's shared arena, put back as new before
//! each run (`suite::fresh_arena`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;
use vmspace::{
    AddressSpace, Config, Cpu, Device, FaultStats, FrameAllocator, MapFlags, MapSource, Mirror,
    MirrorConfig, MirrorStats, Prot, PAGE_SIZE,
};

use super::env::{Env, MapKind, VmEnv};
use super::plan::Sizes;
use super::run::{self, Measurement};
use super::suite::{aggregate, fresh_arena};
use super::{median, MirrorRow, Row, Target, Workload};

const P: u64 = PAGE_SIZE;
/// Pages of each mapping the cost rows unmap or protect.
pub const COST_PAGES: u64 = 64;
/// The mirror counts of the cost rows.
pub const MIRROR_COUNTS: [usize; 3] = [0, 1, 4];
/// One device access in this many is timed (churn rows).
const SAMPLE: u64 = 64;

/// Pages of the churn region: 4 MiB, 1 MiB with `--quick`.
pub fn churn_pages(sizes: &Sizes) -> u64 {
    if sizes.seconds < super::plan::SECONDS {
        256
    } else {
        1024
    }
}

/// `MirrorStats` built field by field from two of them.
macro_rules! fieldwise {
    ($a:expr, $b:expr, $f:ident) => {
        MirrorStats {
            device_accesses: $a.device_accesses.$f($b.device_accesses),
            device_faults: $a.device_faults.$f($b.device_faults),
            fault_retries: $a.fault_retries.$f($b.fault_retries),
            invalidations: $a.invalidations.$f($b.invalidations),
            invalidations_slept: $a.invalidations_slept.$f($b.invalidations_slept),
            busy: $a.busy.$f($b.busy),
            zapped: $a.zapped.$f($b.zapped),
            write_protected: $a.write_protected.$f($b.write_protected),
        }
    };
}

/// What a mirror counted after `earlier` until `later`.
pub fn since(later: &MirrorStats, earlier: &MirrorStats) -> MirrorStats {
    fieldwise!(later, earlier, saturating_sub)
}

/// Two mirrors' (or windows') counters together.
pub fn plus(a: &MirrorStats, b: &MirrorStats) -> MirrorStats {
    fieldwise!(a, b, saturating_add)
}

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}

fn default_strategy() -> Target {
    Target::Vm(Config::default().strategy)
}

/// What the cost rows time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CostOp {
    Munmap,
    Mprotect,
}

impl CostOp {
    fn name(self) -> &'static str {
        match self {
            CostOp::Munmap => "munmap",
            CostOp::Mprotect => "mprotect",
        }
    }
}

/// One cost run's measured window.
#[derive(Clone)]
struct CostRun {
    /// Timed calls (an `mprotect` round is two).
    calls: u64,
    /// Nanoseconds of the timed calls.
    ns: f64,
    /// `mprotect`: nanoseconds of the downgrades and of the upgrades.
    down_up: (f64, f64),
    /// Every timed call.
    lat: Histogram<u64>,
    /// The mirrors' counters over the window, summed.
    stats: MirrorStats,
    /// Seconds of the window (untimed touching included).
    secs: f64,
}

/// The cost rows: `munmap`, then `mprotect`, each with every mirror count.
pub fn cost_rows(sizes: &Sizes, frames: &Arc<FrameAllocator>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for op in [CostOp::Munmap, CostOp::Mprotect] {
        let mut runs: Vec<Vec<CostRun>> = vec![Vec::new(); MIRROR_COUNTS.len()];
        for _ in 0..sizes.repeat {
            for (i, &mirrors) in MIRROR_COUNTS.iter().enumerate() {
                runs[i].push(cost_run(op, mirrors, sizes, frames)?);
            }
        }
        for (&mirrors, runs) in MIRROR_COUNTS.iter().zip(runs) {
            rows.push(cost_row(op, mirrors, runs));
        }
    }
    Ok(rows)
}

/// Writes every page of `[base, base + COST_PAGES)` through the `Cpu`, then
/// through each device.
fn touch(cpu: &mut Cpu, devices: &mut [Device], base: u64) -> Result<()> {
    for p in 0..COST_PAGES {
        let addr = base + p * P;
        cpu.write_u64(addr, p)
            .map_err(|e| anyhow!("mirror: a CPU write failed: {e:?}"))?;
        for d in devices.iter_mut() {
            d.write_u64(addr, p)
                .map_err(|e| anyhow!("mirror: a device write failed: {e:?}"))?;
        }
    }
    Ok(())
}

/// One cost run of `op` with `mirrors` mirrors: warm-up, then a window of
/// `sizes.seconds` (at least one call).
fn cost_run(
    op: CostOp,
    mirrors: usize,
    sizes: &Sizes,
    frames: &Arc<FrameAllocator>,
) -> Result<CostRun> {
    fresh_arena(frames);
    let space = AddressSpace::new(Config::default(), frames.clone()).context("address space")?;
    let subscribed: Vec<Mirror> = (0..mirrors)
        .map(|_| Mirror::new(&space, MirrorConfig::default()))
        .collect();
    let mut devices: Vec<Device> = subscribed.iter().map(Mirror::device).collect();
    let counted = |ms: &[Mirror]| {
        ms.iter()
            .map(Mirror::stats)
            .fold(MirrorStats::default(), |a, s| plus(&a, &s))
    };
    let mut cpu = space.cpu();
    let len = COST_PAGES * P;
    let map = || {
        space
            .mmap(
                0,
                len,
                Prot::READ_WRITE,
                MapFlags::default(),
                MapSource::Anon,
            )
            .context("mirror: mmap")
    };
    let fixed = match op {
        CostOp::Mprotect => Some(map()?),
        CostOp::Munmap => None,
    };
    let mut run = CostRun {
        calls: 0,
        ns: 0.0,
        down_up: (0.0, 0.0),
        lat: run::histogram(),
        stats: MirrorStats::default(),
        secs: 0.0,
    };
    let warm_end = Instant::now() + secs(sizes.warmup);
    // The window's start and the mirrors' counters then.
    let mut window: Option<(Instant, MirrorStats)> = None;
    loop {
        let now = Instant::now();
        match window {
            None if now >= warm_end => window = Some((now, counted(&subscribed))),
            Some((t0, _)) if run.calls > 0 && now - t0 >= secs(sizes.seconds) => break,
            _ => {}
        }
        let measuring = window.is_some();
        let base = match fixed {
            Some(base) => base,
            None => map()?,
        };
        touch(&mut cpu, &mut devices, base)?;
        let record = |run: &mut CostRun, t: Instant| {
            let ns = t.elapsed().as_nanos() as u64;
            if measuring {
                run.lat.saturating_record(ns.max(1));
                run.ns += ns as f64;
                run.calls += 1;
            }
            ns as f64
        };
        match op {
            CostOp::Munmap => {
                let t = Instant::now();
                space.munmap(base, len).context("mirror: munmap")?;
                record(&mut run, t);
            }
            CostOp::Mprotect => {
                let t = Instant::now();
                space
                    .mprotect(base, len, Prot::READ)
                    .context("mirror: mprotect to read-only")?;
                let down = record(&mut run, t);
                let t = Instant::now();
                space
                    .mprotect(base, len, Prot::READ_WRITE)
                    .context("mirror: mprotect to read-write")?;
                let up = record(&mut run, t);
                if measuring {
                    run.down_up.0 += down;
                    run.down_up.1 += up;
                }
            }
        }
    }
    let (t0, s0) = window.expect("the window ran");
    run.secs = t0.elapsed().as_secs_f64();
    run.stats = since(&counted(&subscribed), &s0);
    if let Some(base) = fixed {
        space.munmap(base, len).context("mirror: munmap")?;
    }
    drop(devices);
    drop(subscribed);
    drop(cpu);
    drop(space);
    vmspace_tree::sync::collect();
    Ok(run)
}

/// The row of one op and mirror count over its runs.
fn cost_row(op: CostOp, mirrors: usize, runs: Vec<CostRun>) -> Row {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.calls as f64 / r.ns * 1e9).collect();
    let ops_per_sec = median(&mut rates);
    let mut lat = run::histogram();
    let mut stats = MirrorStats::default();
    let (mut calls, mut seconds, mut down, mut up) = (0, 0.0, 0.0, 0.0);
    for r in &runs {
        lat.add(&r.lat).expect("histogram add");
        stats = plus(&stats, &r.stats);
        calls += r.calls;
        seconds += r.secs;
        down += r.down_up.0;
        up += r.down_up.1;
    }
    let rounds = (calls / 2).max(1) as f64;
    Row {
        ops_per_sec: Some(ops_per_sec),
        min: rates[0],
        max: rates[rates.len() - 1],
        runs: rates.len(),
        measured_ops: calls,
        lat: Some(lat),
        ns_per_op: Some(1e9 / ops_per_sec),
        mirror: Some(MirrorRow {
            op: op.name(),
            mirrors,
            target: None,
            device_threads: usize::from(mirrors > 0),
            extra_threads: 0,
            config: MirrorConfig::default(),
            stats,
            seconds,
            mprotect_ns: (op == CostOp::Mprotect).then(|| (down / rounds, up / rounds)),
            churn_ops_per_sec: None,
        }),
        ..Row::new(Workload::Mirror, default_strategy().name().to_string(), 1)
    }
}

/// page_fault1 through a device: the CPU side maps and unmaps (a
/// [`VmEnv`]), the stores and loads go through a [`Device`] per thread of
/// one mirror of the address space.
///
/// `run::measure` reads the fault counters at the two ends of its measured
/// window (`Env::fault_stats`); this environment reads the mirror's
/// counters with them, so that the row's mirror counters are the window's.
pub struct DeviceEnv {
    /// Dropped first: it unsubscribes from the space.
    mirror: Mirror,
    vm: VmEnv,
    reads: Mutex<Vec<MirrorStats>>,
}

impl DeviceEnv {
    /// A mirror of `vm`'s address space, which never sleeps.
    pub fn new(vm: VmEnv) -> DeviceEnv {
        DeviceEnv {
            mirror: Mirror::new(vm.space(), MirrorConfig::default()),
            vm,
            reads: Mutex::new(Vec::new()),
        }
    }

    /// The mirror's counters between the first and the last read of the
    /// fault counters (the measured window).
    pub fn window(&self) -> MirrorStats {
        let reads = self.reads.lock().unwrap();
        match (reads.first(), reads.last()) {
            (Some(a), Some(b)) => since(b, a),
            _ => MirrorStats::default(),
        }
    }
}

impl Env for DeviceEnv {
    type T = (Cpu, Device);

    fn thread(&self) -> Self::T {
        (self.vm.thread(), self.mirror.device())
    }

    fn map(&self, t: &mut Self::T, len: u64, kind: MapKind) -> u64 {
        self.vm.map(&mut t.0, len, kind)
    }

    fn unmap(&self, t: &mut Self::T, addr: u64, len: u64) {
        self.vm.unmap(&mut t.0, addr, len)
    }

    fn protect_ro(&self, t: &mut Self::T, addr: u64, len: u64) {
        self.vm.protect_ro(&mut t.0, addr, len)
    }

    #[inline]
    fn write(&self, t: &mut Self::T, addr: u64) {
        t.1.write_u64(addr & !7, 1)
            .expect("vmspace device store in a benchmark");
    }

    #[inline]
    fn read(&self, t: &mut Self::T, addr: u64) {
        std::hint::black_box(
            t.1.read_u64(addr & !7)
                .expect("vmspace device load in a benchmark"),
        );
    }

    fn read_maps(&self, t: &mut Self::T) -> usize {
        self.vm.read_maps(&mut t.0)
    }

    fn fault_stats(&self) -> Option<FaultStats> {
        self.reads.lock().unwrap().push(self.mirror.stats());
        self.vm.fault_stats()
    }

    fn minor_faults(&self) -> Option<u64> {
        None
    }
}

/// The fault rows at `threads` threads: `cpu`, then `device`.
pub fn fault_rows(sizes: &Sizes, frames: &Arc<FrameAllocator>, threads: usize) -> Result<Vec<Row>> {
    let spec = sizes.spec(Workload::PageFault1, threads);
    let Target::Vm(strategy) = default_strategy() else {
        unreachable!("the default strategy is a vmspace one")
    };
    let (mut cpu, mut device): (Vec<Measurement>, Vec<Measurement>) = (Vec::new(), Vec::new());
    let (mut stats, mut seconds) = (MirrorStats::default(), 0.0);
    for _ in 0..sizes.repeat {
        fresh_arena(frames);
        let env = VmEnv::new(strategy, frames, 0, spec.region);
        cpu.push(run::measure(&env, &spec));
        drop(env);
        fresh_arena(frames);
        let env = DeviceEnv::new(VmEnv::new(strategy, frames, 0, spec.region));
        let m = run::measure(&env, &spec);
        stats = plus(&stats, &env.window());
        seconds += m.secs;
        device.push(m);
    }
    let row = |target: &'static str, runs: Vec<Measurement>, stats: MirrorStats, seconds| {
        let mirrors = usize::from(target == "device");
        let mut row = aggregate(Workload::Mirror, default_strategy(), threads, runs);
        if mirrors > 0 {
            // The space's counters saw none of the device's faults (see the
            // module documentation): zeros would read as "no fault".
            row.stats = None;
        }
        row.mirror = Some(MirrorRow {
            op: "fault",
            mirrors,
            target: Some(target),
            device_threads: mirrors * threads,
            extra_threads: 0,
            config: MirrorConfig::default(),
            stats,
            seconds,
            mprotect_ns: None,
            churn_ops_per_sec: None,
        });
        row
    };
    let cpu_seconds = cpu.iter().map(|m| m.secs).sum();
    Ok(vec![
        row("cpu", cpu, MirrorStats::default(), cpu_seconds),
        row("device", device, stats, seconds),
    ])
}

/// One churn run's measured window.
struct ChurnWindow {
    secs: f64,
    /// The device threads' sampled access latency.
    lat: Histogram<u64>,
    /// The mirror's counters.
    stats: MirrorStats,
    /// The churning thread's `madvise` and `mprotect` calls.
    churn_calls: u64,
}

/// The churn row at `threads` device threads (and the churning one).
pub fn churn_row(sizes: &Sizes, frames: &Arc<FrameAllocator>, threads: usize) -> Result<Row> {
    let mut rates = Vec::new();
    let mut lat = run::histogram();
    let mut stats = MirrorStats::default();
    let (mut seconds, mut churn_calls) = (0.0, 0);
    for _ in 0..sizes.repeat {
        fresh_arena(frames);
        let w = churn_run(sizes, frames, threads)?;
        rates.push(w.stats.device_faults as f64 / w.secs);
        lat.add(&w.lat).context("merging latency histograms")?;
        stats = plus(&stats, &w.stats);
        seconds += w.secs;
        churn_calls += w.churn_calls;
    }
    let ops_per_sec = median(&mut rates);
    Ok(Row {
        ops_per_sec: Some(ops_per_sec),
        min: rates[0],
        max: rates[rates.len() - 1],
        runs: rates.len(),
        measured_ops: stats.device_faults,
        lat: Some(lat),
        // No `Cpu` touches the region in the window (see the fault rows).
        mirror: Some(MirrorRow {
            op: "churn",
            mirrors: 1,
            target: Some("device"),
            device_threads: threads,
            extra_threads: 1,
            config: MirrorConfig::default(),
            stats,
            seconds,
            mprotect_ns: None,
            churn_ops_per_sec: Some(churn_calls as f64 / seconds),
        }),
        ..Row::new(
            Workload::Mirror,
            default_strategy().name().to_string(),
            threads,
        )
    })
}

/// A xorshift step.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// One churn run: the region written, the mirror subscribed, the device
/// threads and the churning thread started, warm-up, one window.
fn churn_run(sizes: &Sizes, frames: &Arc<FrameAllocator>, threads: usize) -> Result<ChurnWindow> {
    let space = AddressSpace::new(Config::default(), frames.clone()).context("address space")?;
    let pages = churn_pages(sizes);
    let base = space
        .mmap(
            0,
            pages * P,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::Anon,
        )
        .context("mirror: mapping the churn region")?;
    {
        let mut cpu = space.cpu();
        for p in 0..pages {
            cpu.write_u64(base + p * P, p)
                .map_err(|e| anyhow!("mirror: writing the churn region: {e:?}"))?;
        }
    }
    let mirror = Mirror::new(&space, MirrorConfig::default());
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let start = Barrier::new(threads + 2);
    let hist = Mutex::new(run::histogram());
    let calls = AtomicU64::new(0);
    let mut out = None;
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let mut device = mirror.device();
            let (stop, measuring, failed, start, hist) =
                (&stop, &measuring, &failed, &start, &hist);
            s.spawn(move || {
                let mut h = run::histogram();
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut n = 0u64;
                start.wait();
                while !stop.load(Relaxed) {
                    let addr = base + next(&mut x) % pages * P;
                    let sample = n.is_multiple_of(SAMPLE) && measuring.load(Relaxed);
                    let t0 = sample.then(Instant::now);
                    if let Err(e) = device.read_u64(addr) {
                        *failed.lock().unwrap() = Some(format!("a device read failed: {e:?}"));
                        break;
                    }
                    if let Some(t0) = t0 {
                        h.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
                    }
                    n += 1;
                }
                let _ = hist.lock().unwrap().add(&h);
            });
        }
        {
            let (space, stop, failed, start, calls) = (&space, &stop, &failed, &start, &calls);
            s.spawn(move || {
                let mut x = 0xD1B5_4A32_D192_ED03u64;
                start.wait();
                while !stop.load(Relaxed) {
                    let addr = base + next(&mut x) % pages * P;
                    let dropped = space.madvise_dontneed(addr, P);
                    let addr = base + next(&mut x) % pages * P;
                    let protected = space
                        .mprotect(addr, P, Prot::READ)
                        .and_then(|()| space.mprotect(addr, P, Prot::READ_WRITE));
                    if let Err(e) = dropped.and(protected) {
                        *failed.lock().unwrap() = Some(format!("a churn call failed: {e:?}"));
                        break;
                    }
                    calls.fetch_add(3, Relaxed);
                }
            });
        }
        start.wait();
        std::thread::sleep(secs(sizes.warmup));
        let (m0, c0) = (mirror.stats(), calls.load(Relaxed));
        let t0 = Instant::now();
        measuring.store(true, Relaxed);
        std::thread::sleep(secs(sizes.seconds));
        measuring.store(false, Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let (m1, c1) = (mirror.stats(), calls.load(Relaxed));
        stop.store(true, Relaxed);
        out = Some((secs, since(&m1, &m0), c1 - c0));
    });
    if let Some(why) = failed.into_inner().unwrap() {
        anyhow::bail!("mirror churn: {why}");
    }
    let (secs, stats, churn_calls) = out.expect("the window ran");
    drop(mirror);
    drop(space);
    vmspace_tree::sync::collect();
    Ok(ChurnWindow {
        secs,
        lat: hist.into_inner().unwrap(),
        stats,
        churn_calls,
    })
}
