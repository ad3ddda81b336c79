//! The `lookup` workload: VMA lookups alone, at random addresses, in maps of
//! `n` VMAs `[2 i, 2 i + 1)` pages (so half the lookups land in gaps), in the
//! four structures of `vmspace_tree::contenders` (defined there once, for
//! the tree's own benchmarks too):
//!
//! * `vmspace`: the lock-free range tree, one epoch pin per lookup (what a
//!   lockless fault does);
//! * `btreemap`: `BTreeMap` read with no lock at all (the speed limit: it
//!   could not be written concurrently);
//! * `rwlock-btreemap`: the same behind a `parking_lot::RwLock` (every reader
//!   writes the lock word);
//! * `skiplist`: `crossbeam_skiplist::SkipMap`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use vmspace::PAGE_SIZE;
use vmspace_tree::contenders::{Contender, Lookup};

/// The structures, in the order results show them, with their names.
pub const STRUCTURES: [(&str, Contender); 4] = [
    ("vmspace", Contender::Tree),
    ("btreemap", Contender::BTreeMap),
    ("rwlock-btreemap", Contender::RwLockBTreeMap),
    ("skiplist", Contender::SkipList),
];

const BASE: u64 = 0x1000_0000;

fn ranges(n: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    (0..n).map(|i| {
        let s = BASE + 2 * i * PAGE_SIZE;
        (s, s + PAGE_SIZE, i)
    })
}

/// One structure with `n` VMAs, built once and measured several times.
pub struct Built {
    map: Box<dyn Lookup>,
    n: u64,
}

/// Builds `contender` with `n` VMAs.
pub fn build(contender: Contender, n: u64) -> Built {
    Built {
        map: contender.build(ranges(n)),
        n,
    }
}

#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicU64);

/// Total lookups per second of `threads` threads over `seconds` (after
/// `warmup`): returns (ops, seconds).
pub fn measure(b: &Built, threads: usize, seconds: f64, warmup: f64) -> (u64, f64) {
    let stop = AtomicBool::new(false);
    let slots: Vec<Slot> = (0..threads).map(|_| Slot::default()).collect();
    let ready = Barrier::new(threads + 1);
    let span = 2 * b.n * PAGE_SIZE;
    std::thread::scope(|s| {
        for (t, slot) in slots.iter().enumerate() {
            let (stop, ready) = (&stop, &ready);
            s.spawn(move || {
                let mut x =
                    0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
                let mut n = 0u64;
                ready.wait();
                while !stop.load(Relaxed) {
                    for _ in 0..256 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        black_box(b.map.lookup(BASE + x % span));
                    }
                    n += 256;
                    slot.0.store(n, Relaxed);
                }
            });
        }
        ready.wait();
        std::thread::sleep(Duration::from_secs_f64(warmup));
        let total = || slots.iter().map(|s| s.0.load(Relaxed)).sum::<u64>();
        let (c0, t0) = (total(), Instant::now());
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let (c1, dt) = (total(), t0.elapsed().as_secs_f64());
        stop.store(true, Relaxed);
        (c1 - c0, dt)
    })
}
