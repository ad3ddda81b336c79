//! The `lookup` workload: VMA lookups alone, at random addresses, in maps of
//! `n` VMAs `[2 i, 2 i + 1)` pages (so half the lookups land in gaps), in
//! four structures:
//!
//! * `vmspace`: the lock-free range tree, one epoch pin per lookup (what a
//!   lockless fault does);
//! * `btreemap`: `BTreeMap` read with no lock at all (the speed limit: it
//!   could not be written concurrently);
//! * `rwlock-btreemap`: the same behind a `parking_lot::RwLock` (every reader
//!   writes the lock word);
//! * `skiplist`: `crossbeam_skiplist::SkipMap`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;
use vmspace::PAGE_SIZE;
use vmspace_tree::{pin, RangeTree};

/// The structures, in the order results show them.
pub const STRUCTURES: [&str; 4] = ["vmspace", "btreemap", "rwlock-btreemap", "skiplist"];

trait Lookup: Sync {
    fn lookup(&self, addr: u64) -> Option<u64>;
}

struct Plain(BTreeMap<u64, (u64, u64)>);
impl Lookup for Plain {
    fn lookup(&self, addr: u64) -> Option<u64> {
        let (_, &(end, v)) = self.0.range(..=addr).next_back()?;
        (addr < end).then_some(v)
    }
}

struct Locked(RwLock<BTreeMap<u64, (u64, u64)>>);
impl Lookup for Locked {
    fn lookup(&self, addr: u64) -> Option<u64> {
        let map = self.0.read();
        let (_, &(end, v)) = map.range(..=addr).next_back()?;
        (addr < end).then_some(v)
    }
}

struct Skip(SkipMap<u64, (u64, u64)>);
impl Lookup for Skip {
    fn lookup(&self, addr: u64) -> Option<u64> {
        let e = self.0.upper_bound(std::ops::Bound::Included(&addr))?;
        let (end, v) = *e.value();
        (addr < end).then_some(v)
    }
}

struct Tree(RangeTree<u64>);
impl Lookup for Tree {
    fn lookup(&self, addr: u64) -> Option<u64> {
        let g = pin();
        self.0.find(addr, &g).map(|e| *e.value)
    }
}

const BASE: u64 = 0x1000_0000;

fn ranges(n: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    (0..n).map(|i| {
        let s = BASE + 2 * i * PAGE_SIZE;
        (s, s + PAGE_SIZE, i)
    })
}

/// One structure with `n` VMAs, built once and measured several times.
pub struct Built {
    map: Box<dyn Lookup + Send>,
    n: u64,
}

/// Builds structure `kind` with `n` VMAs.
pub fn build(kind: &str, n: u64) -> Built {
    let map: Box<dyn Lookup + Send> = match kind {
        "btreemap" => Box::new(Plain(ranges(n).map(|(s, e, v)| (s, (e, v))).collect())),
        "rwlock-btreemap" => Box::new(Locked(RwLock::new(
            ranges(n).map(|(s, e, v)| (s, (e, v))).collect(),
        ))),
        "skiplist" => {
            let m = SkipMap::new();
            for (s, e, v) in ranges(n) {
                m.insert(s, (e, v));
            }
            Box::new(Skip(m))
        }
        _ => {
            let (t, mut w) = RangeTree::new();
            for (s, e, v) in ranges(n) {
                t.store(&mut w, s, e, v).expect("range tree store");
            }
            Box::new(Tree(t))
        }
    };
    Built { map, n }
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
