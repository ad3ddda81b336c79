//! Interleaved single-thread comparison of the range tree with an unlocked
//! `BTreeMap`, made for a noisy, shared machine: every round times each
//! contender for a short burst, in turn, and the report gives medians over
//! the rounds of the per-op times and of the per-round ratios (so load that
//! comes and goes hits both sides of a ratio alike).
//!
//! Rows:
//! * `btreemap`: `BTreeMap<u64, (u64, u64)>` (built by `collect`), no lock
//!   (`contenders::Plain`);
//! * `tree`: `RangeTree::find` with one epoch pin per lookup
//!   (`contenders::Tree`), tree built by `from_sorted`;
//! * `tree-stores`: the same on a tree built by one `store` per range;
//! * `tree-guard64`: `find` on the `from_sorted` tree reusing one guard for 64
//!   lookups (a pin amortized over a batch, not the per-lookup cost);
//! * writes: `BTreeMap` insert+remove vs `RangeTree` store+erase of a small
//!   range in a gap.
//!
//! Also prints bytes of nodes per stored range (`RangeTree::stats`).
//!
//! Times are the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that time
//! the core spends on other processes is left out; `RATIO_CLOCK=wall` times by
//! wall clock instead.
//!
//! Run: `cargo bench -p vmspace-tree --bench ratio`

use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;
use vmspace_tree::contenders::{Lookup, Plain, Tree};
use vmspace_tree::{pin, RangeTree};

const ROUNDS: usize = 21;

fn ranges(n: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    (0..n).map(|i| (16 * i, 16 * i + 8, i))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `struct timespec` of 64-bit Linux.
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Linux's `CLOCK_THREAD_CPUTIME_ID`.
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

/// CPU time this thread has run, in ns (unlike wall time, it does not count
/// the time other processes of a loaded machine hold the core). Linux only.
fn thread_cpu_ns() -> u128 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable `struct timespec`.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    ts.sec as u128 * 1_000_000_000 + ts.nsec as u128
}

/// Whether to time by wall clock (`RATIO_CLOCK=wall`) rather than thread CPU time.
fn wall() -> bool {
    std::env::var("RATIO_CLOCK").is_ok_and(|v| v == "wall")
}

/// ns per op of `ops` calls of `f(i)`.
fn time(ops: usize, mut f: impl FnMut(usize)) -> f64 {
    let (t, c) = (Instant::now(), thread_cpu_ns());
    for i in 0..ops {
        f(i);
    }
    let ns = if wall() {
        t.elapsed().as_nanos()
    } else {
        thread_cpu_ns() - c
    };
    ns as f64 / ops as f64
}

fn report(title: &str, names: &[&str], mut per: Vec<Vec<f64>>) {
    let mut base = per[0].clone();
    let base_med = median(&mut base);
    println!("{title}");
    println!("  {:<14} {:>10}", names[0], format!("{base_med:.1} ns"));
    for (k, name) in names.iter().enumerate().skip(1) {
        let mut ratios: Vec<f64> = per[k].iter().zip(&per[0]).map(|(a, b)| a / b).collect();
        let med = median(&mut per[k]);
        println!(
            "  {:<14} {:>10}   ratio {:.2} (median of per-round ratios)",
            name,
            format!("{med:.1} ns"),
            median(&mut ratios)
        );
    }
}

fn lookups(n: u64) {
    let map = Plain(ranges(n).map(|(s, e, v)| (s, (e, v))).collect());
    let packed = Tree(RangeTree::from_sorted(ranges(n)).unwrap().0);
    let (stored, mut w) = RangeTree::new();
    for (s, e, v) in ranges(n) {
        stored.store(&mut w, s, e, v).unwrap();
    }
    let stored = Tree(stored);
    for _ in 0..10_000 {
        pin().flush();
    }
    for (name, Tree(t)) in [("from_sorted", &packed), ("stores", &stored)] {
        let st = t.stats();
        println!(
            "memory {n} ranges ({name}): {} nodes, {} node bytes, {:.1} bytes/range (values not counted)",
            st.nodes,
            st.node_bytes,
            st.node_bytes as f64 / st.ranges as f64
        );
    }
    let mut rng = SmallRng::seed_from_u64(1);
    let addrs: Vec<u64> = (0..4096).map(|_| rng.gen_range(0..16 * n)).collect();
    let a = |i: usize| addrs[i & 4095];
    let ops = 200_000;
    let mut per = vec![Vec::new(); 4];
    for round in 0..ROUNDS {
        for k in 0..4 {
            let k = (k + round) % 4;
            let ns = match k {
                0 => time(ops, |i| {
                    black_box(map.lookup(a(i)));
                }),
                1 | 2 => {
                    let t = if k == 1 { &packed } else { &stored };
                    time(ops, |i| {
                        black_box(t.lookup(a(i)));
                    })
                }
                _ => {
                    time(ops / 64, |i| {
                        let g = pin();
                        for j in 0..64 {
                            black_box(packed.0.find(a(i * 64 + j), &g).map(|e| *e.value));
                        }
                    }) / 64.0
                }
            };
            per[k].push(ns);
        }
    }
    report(
        &format!("lookup/{n}"),
        &["btreemap", "tree", "tree-stores", "tree-guard64"],
        per,
    );
}

fn writes(n: u64) {
    let mut rng = SmallRng::seed_from_u64(7);
    let addrs: Vec<u64> = (0..4096).map(|_| 16 * rng.gen_range(0..n) + 9).collect();
    let mut map: BTreeMap<u64, (u64, u64)> = ranges(n).map(|(s, e, v)| (s, (e, v))).collect();
    let (tree, mut w) = RangeTree::new();
    for (s, e, v) in ranges(n) {
        tree.store(&mut w, s, e, v).unwrap();
    }
    let ops = 50_000;
    let mut per = vec![Vec::new(); 2];
    for round in 0..ROUNDS {
        for k in 0..2 {
            let k = (k + round) % 2;
            let ns = if k == 0 {
                time(ops, |i| {
                    let a = addrs[i & 4095];
                    map.insert(a, (a + 4, 1));
                    black_box(map.remove(&a));
                })
            } else {
                time(ops, |i| {
                    let a = addrs[i & 4095];
                    tree.store(&mut w, a, a + 4, 1).unwrap();
                    tree.erase(&mut w, a, a + 4).unwrap();
                })
            };
            per[k].push(ns);
        }
    }
    report(
        &format!("write/{n} (store+erase vs insert+remove)"),
        &["btreemap", "tree"],
        per,
    );
}

/// Bytes of nodes per range after random-order stores, and after erasing
/// three quarters of the ranges at random.
fn churn_memory(n: u64) {
    let mut rng = SmallRng::seed_from_u64(3);
    let mut order: Vec<u64> = (0..n).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let (t, mut w) = RangeTree::new();
    let per_range = |t: &RangeTree<u64>| t.stats().node_bytes as f64 / t.stats().ranges as f64;
    for &i in &order {
        t.store(&mut w, 16 * i, 16 * i + 8, i).unwrap();
    }
    println!(
        "memory {n} ranges (random-order stores): {:.1} bytes/range",
        per_range(&t)
    );
    for &i in &order[..order.len() * 3 / 4] {
        t.erase(&mut w, 16 * i, 16 * i + 8).unwrap();
    }
    println!(
        "memory after erasing 3/4 of them at random ({} left): {:.1} bytes/range",
        t.len(),
        per_range(&t)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("clock: {}", if wall() { "wall" } else { "thread CPU time" });
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |s: &str| only.as_deref().is_none_or(|o| s.contains(o));
    for n in [1_000, 100_000, 1_000_000] {
        if want(&format!("lookup/{n}")) {
            lookups(n);
        }
    }
    for n in [200, 1_000, 100_000] {
        if want(&format!("write/{n}")) {
            writes(n);
        }
    }
    if want("memory") {
        churn_memory(100_000);
    }
}
