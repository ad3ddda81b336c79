//! One measurement of one workload in one environment ([`measure`]), the same
//! code for vmspace and for the host kernel.
//!
//! Threads (will-it-scale's threads mode) each count their operations in a
//! padded slot of their own. The controlling thread lets them warm up, then
//! reads every slot at the start and end of the measured window(s). Every
//! 64th operation of a worker (every one on the sleepy file) is timed, so
//! timing costs little, and recorded into the thread's histogram while the
//! window is open. Warm-up (first regions, cold caches) is never measured.
//!
//! Mixed workloads run their faulters continuously while the extra thread
//! goes through idle, busy and spin windows (in rotated order, several rounds);
//! faulter operations are attributed to the window they happened in, so the
//! "idle" baseline and the "busy" rate are measured in the same run, a fraction
//! of a second apart, on the same noisy machine.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use vmspace::{FaultStats, PAGE_SIZE};

use super::env::{Env, MapKind};
use super::Workload;

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The workload (not `lookup`).
    pub workload: Workload,
    /// Threads, the extra thread of mixed workloads included.
    pub threads: usize,
    /// Measured seconds (fault workloads), or per window (mixed workloads).
    pub seconds: f64,
    /// Seconds of warm-up before measuring.
    pub warmup: f64,
    /// Bytes per region of the page_fault and mmap1 workloads.
    pub region: u64,
    /// Bytes per region of the faulters of mixed workloads.
    pub mixed_region: u64,
    /// Bytes per sleepy file.
    pub sleepy_region: u64,
    /// Idle/busy/spin rounds of mixed workloads.
    pub rounds: usize,
}

/// Bytes of each churn mapping.
pub const CHURN_BYTES: u64 = 16 * 1024;
/// One operation in this many is timed.
const SAMPLE: u64 = 64;
/// One churn or reader operation in this many is timed.
const CHURN_SAMPLE: u64 = 4;

/// A latency histogram in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

/// The mixed-workload part of a measurement.
#[derive(Clone, Debug)]
pub struct Mixed {
    /// Faulter operations and seconds while the extra thread was idle.
    pub idle: (u64, f64),
    /// ... while it spun in user code.
    pub spin: (u64, f64),
    /// Operations of the extra thread in its busy windows.
    pub churn_ops: u64,
    /// Latency of the extra thread's operations (busy windows).
    pub churn_lat: Histogram<u64>,
    /// Sampled latency of the faulters' operations in the idle windows (the
    /// measurement's `lat` holds the busy windows').
    pub idle_lat: Histogram<u64>,
    /// Faulter ops/s of each busy window (for the spread).
    pub busy_rates: Vec<f64>,
}

/// The result of one measurement.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Operations counted in the measured window(s) (mixed: busy windows).
    pub ops: u64,
    /// Seconds of the measured window(s).
    pub secs: f64,
    /// Sampled latency of single operations.
    pub lat: Histogram<u64>,
    /// Fault counters over the measured window(s) (vmspace only).
    pub stats: Option<FaultStats>,
    /// Minor faults of the process over the window(s) (host only).
    pub minflt: Option<u64>,
    /// Mixed workloads only.
    pub mixed: Option<Mixed>,
}

#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicU64);

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const SPIN: u8 = 2;
const STOP: u8 = 3;

/// Values of `Shared::record`: which histogram timed operations go to.
const REC_OFF: u8 = 0;
/// The measured window (mixed workloads: a busy window).
const REC_MAIN: u8 = 1;
/// An idle window of a mixed workload.
const REC_IDLE: u8 = 2;

/// A thread's latency histograms: of the measured (busy) windows, and of the
/// idle windows of a mixed workload.
struct Hists {
    main: Histogram<u64>,
    idle: Histogram<u64>,
}

impl Hists {
    fn new() -> Hists {
        Hists {
            main: histogram(),
            idle: histogram(),
        }
    }

    /// Nothing recorded yet, in any window.
    fn is_empty(&self) -> bool {
        self.main.is_empty() && self.idle.is_empty()
    }
}

struct Shared {
    stop: AtomicBool,
    record: AtomicU8,
    phase: AtomicU8,
    counters: Vec<Slot>,
    churn: Slot,
    ready: Barrier,
}

impl Shared {
    fn total(&self) -> u64 {
        self.counters.iter().map(|c| c.0.load(Relaxed)).sum()
    }
}

fn delta(a: Option<FaultStats>, b: Option<FaultStats>) -> Option<FaultStats> {
    let (a, b) = (a?, b?);
    Some(FaultStats {
        lockless: b.lockless - a.lockless,
        locked: b.locked - a.locked,
        fallback: b.fallback - a.fallback,
        retry: b.retry - a.retry,
    })
}

#[inline]
fn timed(sample: bool, record: &AtomicU8, h: &mut Hists, f: impl FnOnce()) {
    if sample {
        let start = Instant::now();
        f();
        let ns = start.elapsed().as_nanos() as u64;
        match record.load(Relaxed) {
            REC_MAIN => h.main.saturating_record(ns.max(1)),
            REC_IDLE => h.idle.saturating_record(ns.max(1)),
            _ => {}
        }
    } else {
        f();
    }
}

/// A faulting thread: map a region, touch each page once, unmap, again.
fn faulter<E: Env>(env: &E, sh: &Shared, me: usize, kind: MapKind, len: u64, read: bool) -> Hists {
    let mut t = env.thread();
    let mut h = Hists::new();
    let mut n = 0u64;
    // Slow faults are all timed: the clock costs nothing next to the I/O.
    let every = if matches!(kind, MapKind::Sleepy) {
        1
    } else {
        SAMPLE
    };
    sh.ready.wait();
    'outer: while !sh.stop.load(Relaxed) {
        let base = env.map(&mut t, len, kind);
        for i in 0..len / PAGE_SIZE {
            // Until one op is in the histogram, every op is timed: a short
            // window on a loaded machine may hold fewer than `every` ops.
            let sample = n.is_multiple_of(every) || h.is_empty();
            if sample && sh.stop.load(Relaxed) {
                env.unmap(&mut t, base, len);
                break 'outer;
            }
            let addr = base + i * PAGE_SIZE;
            if read {
                timed(sample, &sh.record, &mut h, || env.read(&mut t, addr));
            } else {
                timed(sample, &sh.record, &mut h, || env.write(&mut t, addr));
            }
            n += 1;
            sh.counters[me].0.store(n, Relaxed);
        }
        env.unmap(&mut t, base, len);
    }
    h
}

/// An mmap1 thread: map and unmap an untouched region.
fn mapper<E: Env>(env: &E, sh: &Shared, me: usize, len: u64) -> Hists {
    let mut t = env.thread();
    let mut h = Hists::new();
    let mut n = 0u64;
    sh.ready.wait();
    while !sh.stop.load(Relaxed) {
        timed(
            n.is_multiple_of(SAMPLE) || h.is_empty(),
            &sh.record,
            &mut h,
            || {
                let a = env.map(&mut t, len, MapKind::Anon);
                env.unmap(&mut t, a, len);
            },
        );
        n += 1;
        sh.counters[me].0.store(n, Relaxed);
    }
    h
}

/// The extra thread of mixed workloads: idle, busy (churn or read the maps)
/// or spinning in user code, as `phase` says.
fn extra<E: Env>(env: &E, sh: &Shared, readers: bool) -> Histogram<u64> {
    let mut t = env.thread();
    let mut h = Hists::new();
    let mut n = 0u64;
    sh.ready.wait();
    loop {
        match sh.phase.load(Relaxed) {
            IDLE => std::thread::sleep(Duration::from_micros(200)),
            BUSY => {
                timed(n.is_multiple_of(CHURN_SAMPLE), &sh.record, &mut h, || {
                    if readers {
                        std::hint::black_box(env.read_maps(&mut t));
                    } else {
                        let a = env.map(&mut t, CHURN_BYTES, MapKind::Churn);
                        env.protect_ro(&mut t, a, PAGE_SIZE);
                        env.unmap(&mut t, a, CHURN_BYTES);
                    }
                });
                n += 1;
                sh.churn.0.store(n, Relaxed);
            }
            SPIN => {
                for _ in 0..256 {
                    std::hint::spin_loop();
                }
            }
            _ => return h.main,
        }
    }
}

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}

/// Runs `spec` in `env` once.
pub fn measure<E: Env>(env: &E, spec: &Spec) -> Measurement {
    let mixed = spec.workload.is_mixed();
    let workers = if mixed {
        spec.threads - 1
    } else {
        spec.threads
    };
    let sh = Shared {
        stop: AtomicBool::new(false),
        record: AtomicU8::new(REC_OFF),
        phase: AtomicU8::new(IDLE),
        counters: (0..workers).map(|_| Slot::default()).collect(),
        churn: Slot::default(),
        ready: Barrier::new(spec.threads + 1),
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|me| {
                let sh = &sh;
                s.spawn(move || match spec.workload {
                    Workload::PageFault1 => faulter(env, sh, me, MapKind::Anon, spec.region, false),
                    Workload::PageFault2 => {
                        faulter(env, sh, me, MapKind::FilePrivate(me), spec.region, false)
                    }
                    Workload::PageFault3 => {
                        faulter(env, sh, me, MapKind::FileShared(me), spec.region, false)
                    }
                    Workload::Mmap1 => mapper(env, sh, me, spec.region),
                    Workload::MixedChurn | Workload::MixedReaders => {
                        faulter(env, sh, me, MapKind::Anon, spec.mixed_region, false)
                    }
                    Workload::SleepyFile => {
                        faulter(env, sh, me, MapKind::Sleepy, spec.sleepy_region, true)
                    }
                    Workload::Lookup => unreachable!("lookup is measured by lookup.rs"),
                    Workload::ForkStorm | Workload::ForkVmas => {
                        unreachable!("the fork workloads are measured by fork.rs")
                    }
                    Workload::Reclaim | Workload::ReclaimMirror => {
                        unreachable!("the reclaim workloads are measured by reclaim.rs")
                    }
                    Workload::Mirror => unreachable!("mirror is measured by mirror.rs"),
                })
            })
            .collect();
        let extra = mixed.then(|| {
            let sh = &sh;
            let readers = spec.workload == Workload::MixedReaders;
            s.spawn(move || extra(env, sh, readers))
        });
        sh.ready.wait();
        std::thread::sleep(secs(spec.warmup));
        let (stats0, mf0) = (env.fault_stats(), env.minor_faults());
        // The fault counters are read right after the op counts, so that
        // both count the same window.
        let (mut m, stats1) = if mixed {
            (control_mixed(spec, &sh), env.fault_stats())
        } else {
            let c0 = sh.total();
            let t0 = Instant::now();
            sh.record.store(REC_MAIN, Relaxed);
            std::thread::sleep(secs(spec.seconds));
            sh.record.store(REC_OFF, Relaxed);
            let c1 = sh.total();
            let stats1 = env.fault_stats();
            let m = Measurement {
                ops: c1 - c0,
                secs: t0.elapsed().as_secs_f64(),
                lat: histogram(),
                stats: None,
                minflt: None,
                mixed: None,
            };
            (m, stats1)
        };
        m.stats = delta(stats0, stats1);
        m.minflt = match (mf0, env.minor_faults()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        sh.stop.store(true, Relaxed);
        sh.phase.store(STOP, Relaxed);
        for h in handles {
            let h = h.join().expect("bench thread panicked");
            m.lat.add(h.main).expect("histogram add");
            if let Some(x) = m.mixed.as_mut() {
                x.idle_lat.add(h.idle).expect("histogram add");
            }
        }
        if let (Some(e), Some(x)) = (extra, m.mixed.as_mut()) {
            x.churn_lat = e.join().expect("bench extra thread panicked");
        }
        m
    })
}

/// The windows of a mixed workload; returns the busy-window totals.
fn control_mixed(spec: &Spec, sh: &Shared) -> Measurement {
    let window = spec.seconds / 2.0;
    let settle = Duration::from_millis(5);
    let mut acc = [(0u64, 0f64); 3];
    let mut churn = 0u64;
    let mut busy_rates = Vec::new();
    for round in 0..spec.rounds.max(1) {
        for k in 0..3 {
            let phase = ((round + k) % 3) as u8;
            sh.phase.store(phase, Relaxed);
            std::thread::sleep(settle);
            let (c0, k0, t0) = (sh.total(), sh.churn.0.load(Relaxed), Instant::now());
            let rec = match phase {
                BUSY => REC_MAIN,
                IDLE => REC_IDLE,
                _ => REC_OFF,
            };
            sh.record.store(rec, Relaxed);
            std::thread::sleep(secs(window));
            sh.record.store(REC_OFF, Relaxed);
            let (c1, k1, dt) = (
                sh.total(),
                sh.churn.0.load(Relaxed),
                t0.elapsed().as_secs_f64(),
            );
            acc[phase as usize].0 += c1 - c0;
            acc[phase as usize].1 += dt;
            if phase == BUSY {
                churn += k1 - k0;
                busy_rates.push((c1 - c0) as f64 / dt);
            }
        }
    }
    sh.phase.store(IDLE, Relaxed);
    Measurement {
        ops: acc[BUSY as usize].0,
        secs: acc[BUSY as usize].1,
        lat: histogram(),
        stats: None,
        minflt: None,
        mixed: Some(Mixed {
            idle: acc[IDLE as usize],
            spin: acc[SPIN as usize],
            churn_ops: churn,
            churn_lat: histogram(),
            idle_lat: histogram(),
            busy_rates,
        }),
    }
}

fn hist_json(h: &Histogram<u64>) -> Value {
    h.iter_recorded()
        .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
        .collect()
}

fn hist_from(v: &Value) -> Histogram<u64> {
    let mut h = histogram();
    for pair in v.as_array().into_iter().flatten() {
        let (Some(value), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) else {
            continue;
        };
        h.saturating_record_n(value.max(1), count);
    }
    h
}

impl Measurement {
    /// The measurement as JSON (how the host child reports it).
    pub fn to_json(&self) -> Value {
        json!({
            "ops": self.ops,
            "secs": self.secs,
            "lat": hist_json(&self.lat),
            "minflt": self.minflt,
            "mixed": self.mixed.as_ref().map(|m| json!({
                "idle": [m.idle.0, m.idle.1],
                "spin": [m.spin.0, m.spin.1],
                "churn_ops": m.churn_ops,
                "churn_lat": hist_json(&m.churn_lat),
                "idle_lat": hist_json(&m.idle_lat),
                "busy_rates": m.busy_rates,
            })),
        })
    }

    /// The inverse of [`Measurement::to_json`] (fault counters are not carried).
    pub fn from_json(v: &Value) -> Option<Measurement> {
        let pair = |p: &Value| Some((p[0].as_u64()?, p[1].as_f64()?));
        let mixed = match &v["mixed"] {
            Value::Null => None,
            m => Some(Mixed {
                idle: pair(&m["idle"])?,
                spin: pair(&m["spin"])?,
                churn_ops: m["churn_ops"].as_u64()?,
                churn_lat: hist_from(&m["churn_lat"]),
                idle_lat: hist_from(&m["idle_lat"]),
                busy_rates: m["busy_rates"]
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_f64)
                    .collect(),
            }),
        };
        Some(Measurement {
            ops: v["ops"].as_u64()?,
            secs: v["secs"].as_f64()?,
            lat: hist_from(&v["lat"]),
            stats: None,
            minflt: v["minflt"].as_u64(),
            mixed,
        })
    }
}
