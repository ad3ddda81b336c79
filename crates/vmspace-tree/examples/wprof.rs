//! A fixed loop of store + erase pairs (as in the `ratio` bench's write rows)
//! for profilers: `cargo build --release -p vmspace-tree --example wprof`, then
//! `valgrind --tool=cachegrind target/release/examples/wprof 1000 200000`
//! (ranges, pairs); a third argument runs `BTreeMap` insert + remove instead.
//! The instruction counts in `BENCH.md` come from this.
use std::time::Instant;
use vmspace_tree::RangeTree;
fn main() {
    let n: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let iters: usize = std::env::args()
        .nth(2)
        .map_or(5_000_000, |s| s.parse().unwrap());
    let (tree, mut w) = RangeTree::new();
    for i in 0..n {
        tree.store(&mut w, 16 * i, 16 * i + 8, i).unwrap();
    }
    let mut x = 7u64;
    let addrs: Vec<u64> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            16 * (x % n) + 9
        })
        .collect();
    if std::env::args().nth(3).is_some() {
        let mut map: std::collections::BTreeMap<u64, (u64, u64)> =
            (0..n).map(|i| (16 * i, (16 * i + 8, i))).collect();
        let t = Instant::now();
        for i in 0..iters {
            let a = addrs[i & 4095];
            map.insert(a, (a + 4, 1));
            std::hint::black_box(map.remove(&a));
        }
        println!(
            "btreemap n={n}: {:.1} ns",
            t.elapsed().as_nanos() as f64 / iters as f64
        );
        return;
    }
    let t = Instant::now();
    for i in 0..iters {
        let a = addrs[i & 4095];
        tree.store(&mut w, a, a + 4, 1).unwrap();
        tree.erase(&mut w, a, a + 4).unwrap();
    }
    println!(
        "n={n}: {:.1} ns per store+erase",
        t.elapsed().as_nanos() as f64 / iters as f64
    );
}
