//! Probe (not part of the suite): page_fault1-like faulter throughput for 3 s
//! with a thread that churns mappings (map 16 KiB at a hint of its own,
//! mprotect a page, unmap) in the same address space (`same`), in another
//! one (`other`), or no such thread (`none`):
//! `cargo run --release -p vmspace --example churn_probe -- same`.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmspace::{AddressSpace, Config, FrameAllocator, MapFlags, MapSource, Prot, Strategy};

const P: u64 = 4096;
const LEN: u64 = 8 << 20;

fn space() -> Arc<AddressSpace> {
    let frames = Arc::new(FrameAllocator::new(LEN * 2 + (16 << 20)).unwrap());
    AddressSpace::new(
        Config {
            strategy: Strategy::PerVma,
            ..Config::default()
        },
        frames,
    )
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let a = space();
    let b = space();
    let stop = Arc::new(AtomicBool::new(false));
    let churns = Arc::new(AtomicU64::new(0));
    let churner = (mode == "same" || mode == "other").then(|| {
        let s = if mode == "same" { a.clone() } else { b.clone() };
        let (stop, churns) = (stop.clone(), churns.clone());
        std::thread::spawn(move || {
            let _cpu = s.cpu();
            while !stop.load(Relaxed) {
                let x = s
                    .mmap(
                        0x1000_0000_0000,
                        16 << 10,
                        Prot::READ_WRITE,
                        MapFlags::default(),
                        MapSource::Anon,
                    )
                    .unwrap();
                s.mprotect(x, P, Prot::READ).unwrap();
                s.munmap(x, 16 << 10).unwrap();
                churns.fetch_add(1, Relaxed);
            }
        })
    });
    let mut cpu = a.cpu();
    let mut faults = 0u64;
    let mut in_calls = Duration::ZERO;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
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
        in_calls += c0.elapsed();
        for i in 0..LEN / P {
            cpu.write_u8(base + i * P, 1).unwrap();
        }
        faults += LEN / P;
        let c1 = Instant::now();
        a.munmap(base, LEN).unwrap();
        in_calls += c1.elapsed();
    }
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    if let Some(h) = churner {
        h.join().unwrap();
    }
    println!(
        "{mode:>6}: {:.2}M faults/s, churn {:.0}k ops/s, faulter's own mmap+munmap {:.1} % of its time",
        faults as f64 / secs / 1e6,
        churns.load(Relaxed) as f64 / secs / 1e3,
        in_calls.as_secs_f64() / secs * 100.0
    );
}
