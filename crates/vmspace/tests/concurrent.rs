//! Multi-threaded checker, on every strategy: threads fault on their own VMAs
//! and on a shared one while another thread maps, unmaps and changes
//! protections. It checks:
//!
//! * no lost write: each faulter re-reads the last value it wrote to each of
//!   its pages, while its VMA is being split and merged by `mprotect` around it;
//! * no stale translation: a value of a generation of the shared region is
//!   never read after the `munmap` of that generation returned;
//! * no freed or foreign memory: every value read is zero or a well-formed
//!   value for exactly that page (freed frames are poisoned in debug builds,
//!   and the arena is shared, so a frame reused elsewhere would show up);
//! * no leak: every frame is back when the address space is dropped.
//!
//! `VMSPACE_STRESS_SECS` (default 2 per strategy) sets the duration.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmspace::*;

const P: u64 = PAGE_SIZE;
const PAGES: u64 = 64;
const SHARED: u64 = 0x5000_0000;
const MAGIC: u64 = 0xC0DE;

fn secs() -> u64 {
    std::env::var("VMSPACE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

/// A word for page `page` of the shared region in generation `gen`.
fn shared_word(gen: u64, page: u64) -> u64 {
    (MAGIC << 48) | (gen << 16) | page
}

fn fixed() -> MapFlags {
    MapFlags {
        fixed: true,
        ..MapFlags::default()
    }
}

fn run(strategy: Strategy) {
    let frames = Arc::new(FrameAllocator::new(4096 * P).unwrap());
    let space = AddressSpace::new(
        Config {
            strategy,
            ..Config::default()
        },
        frames.clone(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let dead_gen = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs());
    for t in 0..2u64 {
        let base = 0x1000_0000 * (t + 1);
        space
            .mmap(base, PAGES * P, Prot::READ_WRITE, fixed(), MapSource::Anon)
            .unwrap();
    }
    let faulters: Vec<_> = (0..2u64)
        .map(|t| {
            let (space, stop, dead) = (space.clone(), stop.clone(), dead_gen.clone());
            std::thread::spawn(move || faulter(&space, t, &stop, &dead))
        })
        .collect();
    let churn_ops = churn(&space, deadline, &dead_gen);
    stop.store(true, Ordering::Relaxed);
    let checks: u64 = faulters.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(
        churn_ops > 10 && checks > 100,
        "the test did too little: {churn_ops} {checks}"
    );
    let stats = space.fault_stats();
    eprintln!(
        "{}: {churn_ops} churn ops, {checks} checks, {stats:?}",
        strategy.name()
    );
    drop(space);
    assert_eq!(frames.in_use(), 0, "frames leaked");
}

/// Own region at `base`: write a counter to every page, then check them all.
/// Also reads the shared region and checks what it sees.
fn faulter(space: &Arc<AddressSpace>, t: u64, stop: &AtomicBool, dead: &AtomicU64) -> u64 {
    let base = 0x1000_0000 * (t + 1);
    let mut cpu = space.cpu();
    let mut last = vec![0u64; PAGES as usize];
    let mut checks = 0;
    let mut round = 1;
    while !stop.load(Ordering::Relaxed) {
        for p in 0..PAGES {
            let a = base + p * P;
            let v = (t << 56) | (round << 8) | p;
            // The churn thread toggles part of this region read-only: retry.
            loop {
                match cpu.write_u64(a, v) {
                    Ok(()) => break,
                    Err(f) => assert_eq!(f.cause, FaultCause::Protection, "{f}"),
                }
                std::thread::yield_now();
            }
            last[p as usize] = v;
        }
        for p in 0..PAGES {
            assert_eq!(
                cpu.read_u64(base + p * P).unwrap(),
                last[p as usize],
                "lost write"
            );
            checks += 1;
        }
        for p in 0..8 {
            let d = dead.load(Ordering::Acquire);
            match cpu.read_u64(SHARED + p * P) {
                Ok(0) => {}
                Ok(v) => {
                    assert_ne!(v, POISON, "read a freed frame");
                    assert_eq!((v >> 48, v & 0xFFFF), (MAGIC, p), "foreign value {v:#x}");
                    let gen = (v >> 16) & 0xFFFF_FFFF;
                    assert!(
                        gen > d,
                        "stale translation: gen {gen} read after unmap of gen {d}"
                    );
                }
                Err(f) => assert_eq!(f.cause, FaultCause::NoMapping),
            }
            checks += 1;
        }
        round += 1;
    }
    checks
}

/// Maps, fills and unmaps generations of the shared region, and splits and
/// merges the faulters' VMAs with mprotect.
fn churn(space: &Arc<AddressSpace>, deadline: Instant, dead: &AtomicU64) -> u64 {
    let mut cpu = space.cpu();
    let mut ops = 0;
    let mut gen = 0;
    while Instant::now() < deadline {
        gen += 1;
        space
            .mmap(SHARED, 8 * P, Prot::READ_WRITE, fixed(), MapSource::Anon)
            .unwrap();
        for p in 0..8 {
            cpu.write_u64(SHARED + p * P, shared_word(gen, p)).unwrap();
        }
        for t in 0..2u64 {
            let mid = 0x1000_0000 * (t + 1) + 16 * P;
            space.mprotect(mid, 4 * P, Prot::READ).unwrap();
            space.mprotect(mid, 4 * P, Prot::READ_WRITE).unwrap();
        }
        space.munmap(SHARED, 8 * P).unwrap();
        dead.store(gen, Ordering::Release);
        ops += 6;
    }
    ops
}

#[test]
fn mmap_lock() {
    run(Strategy::MmapLock);
}

#[test]
fn per_vma() {
    run(Strategy::PerVma);
}

#[test]
fn speculative() {
    run(Strategy::Speculative);
}
