//! Probe (not part of the suite): what costs a page_fault1-like faulter its
//! throughput while a second thread works. The faulter runs without pause;
//! the second thread goes through windows of one mode each, modes in rotated
//! order, several rounds, and the faulter's faults are attributed to the
//! window they fall in (as `vmspace bench` does for `kept`). Modes:
//!
//! * `idle`: the second thread sleeps (the baseline);
//! * `spin`: it spins in user code (what losing the second CPU costs);
//! * `same`: it churns mappings (map 16 KiB at a hint of its own, mprotect a
//!   page, unmap) in the faulter's address space;
//! * `other`: the same churn in another address space (own frames);
//! * `alloc`: it allocates and frees heap blocks of the churn's sizes;
//! * `epoch`: it pins the epoch and defers a free, in a loop;
//! * `mem`: it writes over a 4 MiB buffer (cache and memory traffic).
//!
//! `cargo run --release -p vmspace --example churn_probe -- [rounds] [ms] [strategy]`
//! prints, per mode, the faulter's rate relative to `idle` (median over rounds).
//! `CHURN=mapunmap` or `CHURN=empty` change what one churn operation is (see
//! `churn`); `FENCE=1` maps a page right above the churner's area, so that
//! its neighbour is not the faulter's VMA.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmspace::{AddressSpace, Config, FrameAllocator, MapFlags, MapSource, Prot, Strategy};

const P: u64 = 4096;
const LEN: u64 = 8 << 20;
const MODES: [&str; 7] = ["idle", "spin", "same", "other", "alloc", "epoch", "mem"];
const STOP: usize = usize::MAX;

#[repr(align(128))]
struct Padded(AtomicU64);

fn space(strategy: Strategy) -> Arc<AddressSpace> {
    let frames = Arc::new(FrameAllocator::new(LEN * 2 + (16 << 20)).unwrap());
    AddressSpace::new(
        Config {
            strategy,
            ..Config::default()
        },
        frames,
    )
    .unwrap()
}

const CHURN_AT: u64 = 0x1000_0000_0000;
const CHURN_LEN: u64 = 16 << 10;

/// One churn operation, as `CHURN` says: map + mprotect + unmap (default),
/// `mapunmap`, or `empty` (an unmap of nothing: lock, look up, unlock).
fn churn(s: &AddressSpace) -> u64 {
    let mode = std::env::var("CHURN");
    if mode.as_deref() == Ok("empty") {
        s.munmap(CHURN_AT, CHURN_LEN).unwrap();
        return 1;
    }
    let x = s
        .mmap(
            CHURN_AT,
            CHURN_LEN,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::Anon,
        )
        .unwrap();
    if mode.as_deref() != Ok("mapunmap") {
        s.mprotect(x, P, Prot::READ).unwrap();
    }
    s.munmap(x, CHURN_LEN).unwrap();
    1
}

/// Pins the calling thread to CPU `cpu` (best effort).
fn pin_to(cpu: usize) {
    // SAFETY: `set` is a plain bit set on the stack, passed by pointer with
    // its size; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn extra(a: Arc<AddressSpace>, b: Arc<AddressSpace>, mode: Arc<AtomicUsize>, ops: Arc<Padded>) {
    pin_to(1);
    let (_ca, _cb) = (a.cpu(), b.cpu());
    let mut buf = vec![0u8; 4 << 20];
    let mut keep: Vec<Box<[u8]>> = Vec::new();
    loop {
        let m = mode.load(Relaxed);
        let n = match m {
            STOP => return,
            0 => {
                std::thread::sleep(Duration::from_micros(200));
                0
            }
            1 => {
                for _ in 0..1000 {
                    std::hint::black_box(0u64);
                }
                1
            }
            2 => churn(&a),
            3 => churn(&b),
            4 => {
                for sz in [200usize, 64, 512, 200, 64] {
                    keep.push(vec![1u8; sz].into_boxed_slice());
                }
                keep.clear();
                1
            }
            5 => {
                let g = crossbeam_epoch::pin();
                let x = Box::new([0u64; 8]);
                let p = Box::into_raw(x);
                // SAFETY: `p` came from `Box::into_raw` above and nothing
                // else has it; it is freed once, after the grace period.
                unsafe { g.defer_unchecked(move || drop(Box::from_raw(p))) };
                1
            }
            _ => {
                for chunk in buf.chunks_mut(64) {
                    chunk[0] = chunk[0].wrapping_add(1);
                }
                1
            }
        };
        ops.0.fetch_add(n, Relaxed);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let ms: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(150);
    let strategy = match args.next().as_deref() {
        Some("mmap-lock") => Strategy::MmapLock,
        Some("speculative") => Strategy::Speculative,
        _ => Strategy::PerVma,
    };
    let a = space(strategy);
    let b = space(strategy);
    if std::env::var_os("FENCE").is_some() {
        // A mapping right above the churner's, so that its neighbour is not
        // the faulter's VMA.
        a.mmap(
            CHURN_AT + (1 << 20),
            P,
            Prot::NONE,
            MapFlags::default(),
            MapSource::Anon,
        )
        .unwrap();
    }
    let mode = Arc::new(AtomicUsize::new(0));
    let faults = Arc::new(Padded(AtomicU64::new(0)));
    let call_ns = Arc::new(Padded(AtomicU64::new(0)));
    let ops = Arc::new(Padded(AtomicU64::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let helper = {
        let (a, b, mode, ops) = (a.clone(), b.clone(), mode.clone(), ops.clone());
        std::thread::spawn(move || extra(a, b, mode, ops))
    };
    let faulter = {
        let (a, faults, done, call_ns) = (a.clone(), faults.clone(), done.clone(), call_ns.clone());
        std::thread::spawn(move || {
            pin_to(0);
            let mut cpu = a.cpu();
            while !done.load(Relaxed) {
                let c0 = Instant::now();
                let base = a
                    .mmap(
                        0,
                        LEN,
                        Prot::READ_WRITE,
                        MapFlags::default(),
                        MapSource::Anon,
                    )
                    .unwrap();
                call_ns.0.fetch_add(c0.elapsed().as_nanos() as u64, Relaxed);
                for i in 0..LEN / P {
                    cpu.write_u8(base + i * P, 1).unwrap();
                    faults.0.fetch_add(1, Relaxed);
                }
                let c1 = Instant::now();
                a.munmap(base, LEN).unwrap();
                call_ns.0.fetch_add(c1.elapsed().as_nanos() as u64, Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    // rate[mode][round] in faults/s; extra ops/s per mode
    let mut rate = vec![Vec::new(); MODES.len()];
    let mut xrate = vec![Vec::new(); MODES.len()];
    let mut calls = vec![Vec::new(); MODES.len()];
    for r in 0..rounds {
        for k in 0..MODES.len() {
            let m = (k + r) % MODES.len();
            mode.store(m, Relaxed);
            std::thread::sleep(Duration::from_millis(10));
            let (f0, o0, c0, t0) = (
                faults.0.load(Relaxed),
                ops.0.load(Relaxed),
                call_ns.0.load(Relaxed),
                Instant::now(),
            );
            std::thread::sleep(Duration::from_millis(ms));
            let secs = t0.elapsed().as_secs_f64();
            rate[m].push((faults.0.load(Relaxed) - f0) as f64 / secs);
            xrate[m].push((ops.0.load(Relaxed) - o0) as f64 / secs);
            calls[m].push((call_ns.0.load(Relaxed) - c0) as f64 / 1e9 / secs);
        }
    }
    mode.store(STOP, Relaxed);
    done.store(true, Relaxed);
    helper.join().unwrap();
    faulter.join().unwrap();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // Per-round ratios against that round's idle window, then the median.
    let idle = rate[0].clone();
    for (m, name) in MODES.iter().enumerate() {
        let mut ratio: Vec<f64> = rate[m].iter().zip(&idle).map(|(x, i)| x / i).collect();
        let r = median(&mut ratio);
        let f = median(&mut rate[m]);
        let x = median(&mut xrate[m]);
        let c = median(&mut calls[m]);
        println!(
            "{name:>6}: {:6.2}M faults/s  kept {r:4.2}  extra {:8.0}k ops/s  faulter in mmap/munmap {:4.1} %",
            f / 1e6,
            x / 1e3,
            c * 100.0
        );
    }
}
