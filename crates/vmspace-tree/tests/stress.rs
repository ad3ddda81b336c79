#![cfg(not(loom))]
//! Stress: reader threads check invariants of what they see while one writer
//! churns. Every value carries a checksum of its own range and a serial, so a
//! reader that sees a torn node, a freed value or a range that was never stored
//! fails; a drop counter proves every value is dropped exactly once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmspace_tree::{pin, RangeTree};

static CREATED: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// A value that knows the range it was first stored for. Pieces of a cut range
/// lie inside that range; `check` is a checksum over (start, end, serial).
struct Val {
    start: u64,
    end: u64,
    serial: u64,
    check: u64,
    alive: AtomicBool,
}

fn checksum(start: u64, end: u64, serial: u64) -> u64 {
    (start ^ end.rotate_left(17) ^ serial.rotate_left(41)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Val {
    fn new(start: u64, end: u64, serial: u64) -> Self {
        CREATED.fetch_add(1, Ordering::Relaxed);
        Val {
            start,
            end,
            serial,
            check: checksum(start, end, serial),
            alive: AtomicBool::new(true),
        }
    }
    fn valid(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
            && self.check == checksum(self.start, self.end, self.serial)
    }
}

impl Clone for Val {
    fn clone(&self) -> Self {
        Val::new(self.start, self.end, self.serial)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        assert!(
            self.alive.swap(false, Ordering::Relaxed),
            "value dropped twice"
        );
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn readers_see_consistent_versions_while_a_writer_churns() {
    let seconds = std::env::var("VMSPACE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (tree, mut w) = RangeTree::<Val>::new();
    let tree = Arc::new(tree);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (tree, stop) = (tree.clone(), stop.clone());
            std::thread::spawn(move || read_loop(&tree, &stop, r))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rng = 0x1234_5678_u64;
    let mut serial = 0;
    let mut writes = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let s = rng % 100_000;
            let len = 1 + (rng >> 20) % 300;
            serial += 1;
            match (rng >> 40) % 4 {
                0 => tree.erase(&mut w, s, s + len).unwrap(),
                _ => tree
                    .store(&mut w, s, s + len, Val::new(s, s + len, serial))
                    .unwrap(),
            }
            writes += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    tree.check_invariants().unwrap();
    eprintln!("{writes} writes, {reads} reads");
    assert!(reads > 0 && writes > 0);
    drop(Arc::try_unwrap(tree).ok().expect("readers joined"));
    // Deferred garbage is freed by the collector: flush until all is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while DROPPED.load(Ordering::Relaxed) != CREATED.load(Ordering::Relaxed) {
        assert!(Instant::now() < deadline, "values leaked");
        pin().flush();
        std::thread::yield_now();
    }
}

fn read_loop(tree: &RangeTree<Val>, stop: &AtomicBool, seed: u64) -> u64 {
    let mut reads = 0;
    let mut rng = 0x9E37_79B9 + seed;
    while !stop.load(Ordering::Relaxed) {
        let g = pin();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let addr = rng % 100_500;
        if let Some(e) = tree.find(addr, &g) {
            check_entry(e.start, e.end, e.value);
            assert!(e.start <= addr && addr < e.end);
        }
        // One iteration sees every write whole or not at all: sorted,
        // disjoint, every value valid (not a snapshot: see the crate docs).
        let mut prev_end = 0;
        for e in tree.iter(addr, addr + 2000, &g) {
            check_entry(e.start, e.end, e.value);
            assert!(e.start >= prev_end, "overlap or disorder in one iteration");
            prev_end = e.end;
        }
        reads += 1;
    }
    reads
}

fn check_entry(start: u64, end: u64, v: &Val) {
    assert!(v.valid(), "freed or corrupted value");
    assert!(
        v.start <= start && end <= v.end && start < end,
        "range [{start}, {end}) was never stored for value [{}, {})",
        v.start,
        v.end
    );
}
