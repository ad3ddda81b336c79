//! Lookup and write cost of the range tree, side by side with the usual
//! alternatives, in one run:
//!
//! * `btreemap`: `std::collections::BTreeMap` read without any lock (the speed
//!   limit: no synchronization at all, so it cannot be written concurrently);
//! * `rwlock-btreemap`: the same behind `parking_lot::RwLock` (every reader
//!   writes the lock word);
//! * `skiplist`: `crossbeam_skiplist::SkipMap`;
//! * `vmspace-tree`: `RangeTree::find` with one epoch pin per lookup, on a tree
//!   built by `RangeTree::from_sorted` (packed nodes, allocated in order: like
//!   the `collect`ed BTreeMap);
//! * `vmspace-tree-stores`: the same on a tree built by one `store` per range
//!   (each store copies a path, so nodes end up scattered in memory);
//! * `vmspace-tree-guard64`: the `from_sorted` tree read with one pin per 64
//!   lookups (the pin amortized over a batch; not the per-lookup cost).
//!
//! The first three and the `store`-built tree are the shared contenders of
//! `vmspace_tree::contenders` (also measured by `vmspace bench lookup`).
//!
//! Ranges are `[16 i, 16 i + 8)`; lookups hit random addresses (half of them in
//! gaps). Times are per lookup per thread, with 1 and 2 threads each doing the
//! same number of lookups at once.
//!
//! Run: `cargo bench -p vmspace-tree --bench lookup`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmspace_tree::contenders::{Contender, Lookup, Tree, ADDRS};
use vmspace_tree::{pin, RangeTree};

const SIZES: [u64; 3] = [1_000, 100_000, 1_000_000];

/// How the measured threads read a structure.
enum Reader {
    /// One [`Lookup::lookup`] per address ([`Lookup::run`]).
    Each(Box<dyn Lookup>),
    /// The tree read under one guard per 64 lookups: the pin amortized over a
    /// batch (what a caller doing several lookups in one read-side section
    /// pays).
    Guard64(Box<RangeTree<u64>>),
}

impl Reader {
    /// `iters` lookups of the addresses in turn.
    fn run(&self, addrs: &[u64; ADDRS], iters: u64) {
        match self {
            Reader::Each(map) => map.run(addrs, iters),
            Reader::Guard64(tree) => {
                let mut i = 0;
                while i < iters {
                    let g = pin();
                    for _ in 0..64.min(iters - i) {
                        black_box(tree.find(addrs[i as usize & 4095], &g).map(|e| *e.value));
                        i += 1;
                    }
                }
            }
        }
    }
}

fn ranges(n: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    (0..n).map(|i| (16 * i, 16 * i + 8, i))
}

fn build(kind: &str, n: u64) -> Arc<Reader> {
    let sorted = || RangeTree::from_sorted(ranges(n)).unwrap().0;
    Arc::new(match kind {
        "btreemap" => Reader::Each(Contender::BTreeMap.build(ranges(n))),
        "rwlock-btreemap" => Reader::Each(Contender::RwLockBTreeMap.build(ranges(n))),
        "skiplist" => Reader::Each(Contender::SkipList.build(ranges(n))),
        "vmspace-tree" => Reader::Each(Box::new(Tree(sorted()))),
        "vmspace-tree-guard64" => Reader::Guard64(Box::new(sorted())),
        _ => {
            let map = Contender::Tree.build(ranges(n));
            drain_garbage();
            Reader::Each(map)
        }
    })
}

/// Lets the epoch collector free what building the tree retired, so that the
/// measured readers do not pay for it.
fn drain_garbage() {
    for _ in 0..10_000 {
        pin().flush();
    }
}

/// Wall time for each of `threads` threads to do `iters` lookups at once,
/// divided by `iters`: the per-call time a thread sees.
fn timed(map: &Arc<Reader>, n: u64, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (map, barrier) = (map.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(t as u64 + 1);
                let addrs: Box<[u64; 4096]> =
                    std::array::from_fn(|_| rng.gen_range(0..16 * n)).into();
                barrier.wait();
                let start = Instant::now();
                map.run(&addrs, iters);
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap()
}

fn lookups(c: &mut Criterion) {
    for n in SIZES {
        let mut group = c.benchmark_group(format!("lookup/{n}"));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(20);
        for kind in [
            "btreemap",
            "rwlock-btreemap",
            "skiplist",
            "vmspace-tree",
            "vmspace-tree-stores",
            "vmspace-tree-guard64",
        ] {
            let map = build(kind, n);
            for threads in [1, 2] {
                group.bench_with_input(BenchmarkId::new(kind, threads), &threads, |b, &t| {
                    b.iter_custom(|iters| timed(&map, n, t, iters))
                });
            }
        }
        group.finish();
    }
}

/// Store then erase one small range in a populated structure: the write cost.
fn writes(c: &mut Criterion) {
    for n in [1_000u64, 100_000] {
        let mut group = c.benchmark_group(format!("write/{n}"));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(20);
        let mut rng = SmallRng::seed_from_u64(7);
        let addrs: Vec<u64> = (0..4096).map(|_| 16 * rng.gen_range(0..n) + 9).collect();
        let mut map: BTreeMap<u64, (u64, u64)> = ranges(n).map(|(s, e, v)| (s, (e, v))).collect();
        let mut i = 0;
        group.bench_function("btreemap insert+remove", |b| {
            b.iter(|| {
                let a = addrs[i & 4095];
                i += 1;
                map.insert(a, (a + 4, 1));
                black_box(map.remove(&a));
            })
        });
        let (tree, mut w) = RangeTree::new();
        for (s, e, v) in ranges(n) {
            tree.store(&mut w, s, e, v).unwrap();
        }
        group.bench_function("vmspace-tree store+erase", |b| {
            b.iter(|| {
                let a = addrs[i & 4095];
                i += 1;
                tree.store(&mut w, a, a + 4, 1).unwrap();
                tree.erase(&mut w, a, a + 4).unwrap();
            })
        });
        group.finish();
    }
}

criterion_group!(benches, lookups, writes);
criterion_main!(benches);
