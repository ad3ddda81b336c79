//! Probe (not part of the suite): how far two threads can scale on this
//! machine when each writes one byte to every page of its own 128 MiB shared
//! file mapping, with and without the faults.
//!
//! * `fault`: `page_fault3`'s loop (map, write one byte per page, unmap).
//! * `warm`: the same writes through the same access path (`Cpu::write_u8`)
//!   to a mapping whose entries are all present: no fault, no map, no unmap.
//!   The writes still pull a cold line of a different frame each time, as the
//!   faulting loop does; what `warm` cannot do at two threads, `fault` cannot
//!   either.
//!
//! Rounds alternate 1 and 2 threads and the two modes, so drifts of a shared
//! machine spread over all of them; medians are printed.
//! `cargo run --release -p vmspace --example scaling_probe [rounds] [ms] [strategy]`.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use vmspace::{
    AddressSpace, Config, Cpu, File, FrameAllocator, MapFlags, MapSource, Prot, Strategy, ZeroStore,
};

const P: u64 = 4096;
const LEN: u64 = 128 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Fault,
    Warm,
}

fn map(space: &AddressSpace, file: &Arc<File>) -> u64 {
    let flags = MapFlags {
        shared: true,
        ..MapFlags::default()
    };
    let source = MapSource::File {
        file: file.clone(),
        pgoff: 0,
    };
    space
        .mmap(0, LEN, Prot::READ_WRITE, flags, source)
        .expect("mmap")
}

fn touch_all(cpu: &mut Cpu, a: u64, done: &AtomicBool) -> u64 {
    let mut n = 0;
    for i in 0..LEN / P {
        cpu.write_u8(a + i * P, 1).expect("store");
        n += 1;
        if n % 4096 == 0 && done.load(Ordering::Relaxed) {
            break;
        }
    }
    n
}

/// Pages written per second by `threads` threads in `mode` for `ms`.
fn run(
    strategy: Strategy,
    frames: &Arc<FrameAllocator>,
    threads: usize,
    mode: Mode,
    ms: u64,
) -> f64 {
    let space = AddressSpace::new(
        Config {
            strategy,
            ..Config::default()
        },
        frames.clone(),
    )
    .unwrap();
    let files: Vec<Arc<File>> = (0..threads)
        .map(|_| {
            let f = File::new(LEN / P, Box::new(ZeroStore), frames.clone());
            for p in 0..LEN / P {
                f.fill(p).expect("warm file");
            }
            f
        })
        .collect();
    let done = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let start = Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|s| {
        for f in &files {
            let (space, done, total, start) = (&space, &done, &total, &start);
            s.spawn(move || {
                let mut cpu = space.cpu();
                let warm = (mode == Mode::Warm).then(|| {
                    let a = map(space, f);
                    touch_all(&mut cpu, a, &AtomicBool::new(false));
                    a
                });
                start.wait();
                let mut n = 0;
                while !done.load(Ordering::Relaxed) {
                    match warm {
                        Some(a) => n += touch_all(&mut cpu, a, done),
                        None => {
                            let a = map(space, f);
                            n += touch_all(&mut cpu, a, done);
                            space.munmap(a, LEN).expect("munmap");
                        }
                    }
                }
                total.fetch_add(n, Ordering::Relaxed);
            });
        }
        start.wait();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(ms));
        done.store(true, Ordering::Relaxed);
        t0
    });
    total.load(Ordering::Relaxed) as f64 / elapsed.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let ms: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let strategy: Strategy = args
        .next()
        .unwrap_or_else(|| "per-vma".into())
        .parse()
        .expect("a strategy");
    let frames = Arc::new(FrameAllocator::new(5 * LEN).expect("arena"));
    let modes = [(Mode::Fault, "fault"), (Mode::Warm, "warm")];
    let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut rates: [[Vec<f64>; 2]; 2] = Default::default();
    for r in 0..rounds {
        for (m, &(mode, name)) in modes.iter().enumerate() {
            // Alternate which thread count goes first.
            let order = if r % 2 == 0 { [1, 2] } else { [2, 1] };
            let mut got = [0.0; 3];
            for t in order {
                got[t] = run(strategy, &frames, t, mode, ms);
            }
            rates[m][0].push(got[1]);
            rates[m][1].push(got[2]);
            ratios[m].push(got[2] / got[1]);
            println!(
                "{name:5} round {r}: 1 thread {:6.2} M pages/s, 2 threads {:6.2} M, ratio {:.2}",
                got[1] / 1e6,
                got[2] / 1e6,
                got[2] / got[1]
            );
        }
    }
    for (m, &(_, name)) in modes.iter().enumerate() {
        let ratio = &mut ratios[m];
        let med = median(ratio);
        println!(
            "{name:5} median: 1 thread {:.2} M, 2 threads {:.2} M, ratio {med:.2} (min {:.2}, max {:.2})",
            median(&mut rates[m][0]) / 1e6,
            median(&mut rates[m][1]) / 1e6,
            ratio[0],
            ratio[ratio.len() - 1]
        );
    }
}
