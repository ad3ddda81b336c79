#![cfg(not(loom))]
//! Property test: random sequences of writes and reads against a simple model
//! (a `BTreeMap` of ranges), checking every result and the tree's structural
//! invariants after each write.

use proptest::prelude::*;
use std::collections::BTreeMap;
use vmspace_tree::{pin, RangeTree, TreeError, WriteToken};

/// The reference: start -> (end, value).
#[derive(Default, Clone)]
struct Model(BTreeMap<u64, (u64, u64)>);

impl Model {
    fn erase(&mut self, s: u64, e: u64) {
        let hit: Vec<_> = self
            .0
            .iter()
            .filter(|(&a, &(b, _))| a < e && b > s)
            .map(|(&a, &(b, v))| (a, b, v))
            .collect();
        for (a, b, v) in hit {
            self.0.remove(&a);
            if a < s {
                self.0.insert(a, (s, v));
            }
            if b > e {
                self.0.insert(e, (b, v));
            }
        }
    }
    fn store(&mut self, s: u64, e: u64, v: u64) {
        self.erase(s, e);
        self.0.insert(s, (e, v));
    }
    fn find(&self, addr: u64) -> Option<(u64, u64, u64)> {
        let (&a, &(b, v)) = self.0.range(..=addr).next_back()?;
        (addr < b).then_some((a, b, v))
    }
    fn all(&self) -> Vec<(u64, u64, u64)> {
        self.0.iter().map(|(&a, &(b, v))| (a, b, v)).collect()
    }
    /// Free intervals of [0, u64::MAX).
    fn gaps(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut prev = 0;
        for (&a, &(b, _)) in &self.0 {
            if a > prev {
                out.push((prev, a));
            }
            prev = b;
        }
        if prev < u64::MAX {
            out.push((prev, u64::MAX));
        }
        out
    }
    /// Every aligned fit, brute force over gap ends (the extremes suffice).
    fn gap_low(&self, size: u64, align: u64, lo: u64, hi: u64) -> Option<u64> {
        self.gaps().into_iter().find_map(|(gs, ge)| {
            let from = gs.max(lo);
            let a = from.checked_add(align - 1)? / align * align;
            (a.checked_add(size)? <= ge.min(hi)).then_some(a)
        })
    }
    fn gap_high(&self, size: u64, align: u64, lo: u64, hi: u64) -> Option<u64> {
        self.gaps().into_iter().rev().find_map(|(gs, ge)| {
            let a = ge.min(hi).checked_sub(size)? / align * align;
            (a >= gs.max(lo)).then_some(a)
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Store(u64, u64, u64),
    Insert(u64, u64, u64),
    Erase(u64, u64),
    Replace(u64, u64),
    Find(u64),
    FindAfter(u64),
    FindBefore(u64),
    Iter(u64, u64),
    GapLow(u64, u64, u64, u64),
    GapHigh(u64, u64, u64, u64),
}

/// Addresses: mostly a small domain (so operations collide), sometimes right
/// below `u64::MAX`.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..400,
        1 => (0u64..64).prop_map(|k| u64::MAX - k),
        1 => any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let v = 0u64..1000;
    prop_oneof![
        6 => (addr(), 1u64..40, v.clone()).prop_map(|(s, l, v)| Op::Store(s, s.saturating_add(l), v)),
        2 => (addr(), addr(), v.clone()).prop_map(|(s, e, v)| Op::Store(s, e, v)),
        2 => (addr(), 1u64..10, v.clone()).prop_map(|(s, l, v)| Op::Insert(s, s.saturating_add(l), v)),
        3 => (addr(), 1u64..60).prop_map(|(s, l)| Op::Erase(s, s.saturating_add(l))),
        1 => (addr(), addr()).prop_map(|(s, e)| Op::Erase(s, e)),
        1 => (addr(), v).prop_map(|(a, v)| Op::Replace(a, v)),
        2 => addr().prop_map(Op::Find),
        1 => addr().prop_map(Op::FindAfter),
        1 => addr().prop_map(Op::FindBefore),
        1 => (addr(), addr()).prop_map(|(a, b)| Op::Iter(a, b)),
        1 => (0u64..50, 0u32..5, addr(), addr()).prop_map(|(s, k, lo, hi)| Op::GapLow(s, 1 << k, lo, hi)),
        1 => (0u64..50, 0u32..5, addr(), addr()).prop_map(|(s, k, lo, hi)| Op::GapHigh(s, 1 << k, lo, hi)),
    ]
}

fn contents(tree: &RangeTree<u64>) -> Vec<(u64, u64, u64)> {
    let g = pin();
    tree.iter(0, u64::MAX, &g)
        .map(|e| (e.start, e.end, *e.value))
        .collect()
}

fn apply(tree: &RangeTree<u64>, w: &mut WriteToken, m: &mut Model, op: &Op) {
    let g = pin();
    let entry = |e: vmspace_tree::Entry<'_, u64>| (e.start, e.end, *e.value);
    match *op {
        Op::Store(s, e, v) => {
            let r = tree.store(w, s, e, v);
            if s < e {
                assert_eq!(r, Ok(()));
                m.store(s, e, v);
            } else {
                assert_eq!(r, Err(TreeError::EmptyRange));
            }
        }
        Op::Insert(s, e, v) => {
            let free = s < e && m.0.iter().all(|(&a, &(b, _))| b <= s || a >= e);
            let r = tree.insert(w, s, e, v);
            if free {
                assert_eq!(r, Ok(()));
                m.store(s, e, v);
            } else {
                assert!(r.is_err());
            }
        }
        Op::Erase(s, e) => {
            let r = tree.erase(w, s, e);
            assert_eq!(r.is_ok(), s < e);
            if s < e {
                m.erase(s, e);
            }
        }
        Op::Replace(a, v) => match m.find(a) {
            Some((s, e, _)) => {
                assert_eq!(tree.replace(w, a, v), Ok((s, e)));
                m.store(s, e, v);
            }
            None => assert_eq!(tree.replace(w, a, v), Err(TreeError::NotFound)),
        },
        Op::Find(a) => assert_eq!(tree.find(a, &g).map(entry), m.find(a)),
        Op::FindAfter(a) => {
            let want = m.all().into_iter().find(|&(_, e, _)| e > a);
            assert_eq!(tree.find_after(a, &g).map(entry), want);
        }
        Op::FindBefore(a) => {
            let want = m.all().into_iter().rev().find(|&(s, _, _)| s < a);
            assert_eq!(tree.find_before(a, &g).map(entry), want);
        }
        Op::Iter(lo, hi) => {
            let want: Vec<_> = m
                .all()
                .into_iter()
                .filter(|&(s, e, _)| lo < hi && s < hi && e > lo)
                .collect();
            let got: Vec<_> = tree.iter(lo, hi, &g).map(entry).collect();
            assert_eq!(got, want);
        }
        Op::GapLow(size, align, lo, hi) => {
            let got = tree.gap_lowest(size, align, lo, hi, &g);
            if size == 0 {
                assert_eq!(got, Err(TreeError::BadGapRequest));
            } else {
                assert_eq!(got, Ok(m.gap_low(size, align, lo, hi)), "{op:?}");
            }
        }
        Op::GapHigh(size, align, lo, hi) => {
            let got = tree.gap_highest(size, align, lo, hi, &g);
            if size == 0 {
                assert_eq!(got, Err(TreeError::BadGapRequest));
            } else {
                assert_eq!(got, Ok(m.gap_high(size, align, lo, hi)), "{op:?}");
            }
        }
    }
}

fn run(ops: &[Op]) {
    let (tree, w) = RangeTree::<u64>::new();
    run_on(tree, w, Model::default(), ops);
}

fn run_on(tree: RangeTree<u64>, mut w: WriteToken, mut m: Model, ops: &[Op]) {
    for op in ops {
        apply(&tree, &mut w, &mut m, op);
        if let Err(e) = tree.check_invariants() {
            panic!("after {op:?}: {e}");
        }
        assert_eq!(contents(&tree), m.all(), "after {op:?}");
        assert_eq!(tree.len(), m.0.len());
    }
}

/// Sorted, disjoint ranges (with values) from arbitrary (gap, length) pairs.
fn sorted_ranges(parts: &[(u64, u64)]) -> Vec<(u64, u64, u64)> {
    let mut at = 0u64;
    parts
        .iter()
        .enumerate()
        .map(|(i, &(gap, len))| {
            let start = at + gap;
            at = start + len;
            (start, at, i as u64)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops);
    }

    /// A tree built by `from_sorted` (of any size, so of any height) holds
    /// exactly its input, is well formed, and takes writes like any other.
    #[test]
    fn from_sorted_matches_model(
        parts in prop::collection::vec((0u64..4, 1u64..6), 0..600),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let ranges = sorted_ranges(&parts);
        let (tree, w) = RangeTree::from_sorted(ranges.clone()).unwrap();
        tree.check_invariants().unwrap();
        prop_assert_eq!(contents(&tree), ranges.clone());
        let m = Model(ranges.iter().map(|&(s, e, v)| (s, (e, v))).collect());
        run_on(tree, w, m, &ops);
    }
}

#[test]
fn from_sorted_rejects_bad_input_and_drops_what_it_took() {
    use std::sync::Arc;
    let v = Arc::new(());
    let bad: [&[(u64, u64)]; 4] = [
        &[(0, 1), (1, 1)],
        &[(0, 5), (4, 8)],
        &[(10, 20), (0, 5)],
        &[(0, 1), (2, 3), (9, 3), (10, 11)],
    ];
    for ranges in bad {
        let r = RangeTree::from_sorted(ranges.iter().map(|&(s, e)| (s, e, v.clone())));
        let want = if ranges.iter().any(|&(s, e)| s >= e) {
            TreeError::EmptyRange
        } else {
            TreeError::Occupied
        };
        assert_eq!(r.err(), Some(want));
        assert_eq!(Arc::strong_count(&v), 1, "{ranges:?}");
    }
    let (tree, _w) = RangeTree::<u64>::from_sorted(std::iter::empty()).unwrap();
    assert!(tree.is_empty());
    tree.check_invariants().unwrap();
}

/// Ascending and descending runs of stores leave nodes mostly full (the
/// split on overflow favours the side the stores come from, and fills up the
/// node the previous split left behind).
#[test]
fn sequential_stores_pack_nodes() {
    for descending in [false, true] {
        let (tree, mut w) = RangeTree::<u64>::new();
        for i in 0..10_000u64 {
            let k = if descending { 10_000 - i } else { i };
            tree.store(&mut w, 16 * k, 16 * k + 8, k).unwrap();
        }
        tree.check_invariants().unwrap();
        let st = tree.stats();
        assert!(
            st.node_bytes / st.ranges <= 40,
            "descending {descending}: {st:?}"
        );
    }
}

/// Many tiny ranges: deep trees, splits and merges at every level.
#[test]
fn many_tiny_ranges_then_erase_all() {
    let (tree, mut w) = RangeTree::<u64>::new();
    let mut m = Model::default();
    for i in 0..20_000u64 {
        let s = (i * 7919) % 40_000 * 2;
        tree.store(&mut w, s, s + 1, i).unwrap();
        m.store(s, s + 1, i);
    }
    tree.check_invariants().unwrap();
    assert_eq!(contents(&tree), m.all());
    for i in 0..2_000u64 {
        let s = (i * 104_729) % 80_000;
        tree.erase(&mut w, s, s + 37).unwrap();
        m.erase(s, s + 37);
    }
    tree.check_invariants().unwrap();
    assert_eq!(contents(&tree), m.all());
    tree.store(&mut w, 5, 79_000, 1).unwrap();
    m.store(5, 79_000, 1);
    tree.check_invariants().unwrap();
    assert_eq!(contents(&tree), m.all());
    tree.clear(&mut w).unwrap();
    assert!(tree.is_empty());
    assert_eq!(tree.stats().nodes, 0);
}

#[test]
fn extremes_of_the_address_space() {
    let (tree, mut w) = RangeTree::<u64>::new();
    tree.store(&mut w, 0, 1, 1).unwrap();
    tree.store(&mut w, u64::MAX - 1, u64::MAX, 2).unwrap();
    let g = pin();
    assert_eq!(tree.find(0, &g).map(|e| *e.value), Some(1));
    assert_eq!(tree.find(u64::MAX - 1, &g).map(|e| *e.value), Some(2));
    assert!(tree.find(u64::MAX, &g).is_none());
    assert_eq!(tree.gap_lowest(1, 1, 0, u64::MAX, &g), Ok(Some(1)));
    assert_eq!(
        tree.gap_highest(1, 1, 0, u64::MAX, &g),
        Ok(Some(u64::MAX - 2))
    );
    assert_eq!(tree.gap_lowest(u64::MAX, 1, 0, u64::MAX, &g), Ok(None));
    drop(g);
    tree.store(&mut w, 1, u64::MAX - 1, 3).unwrap();
    let g = pin();
    assert_eq!(tree.gap_lowest(1, 1, 0, u64::MAX, &g), Ok(None));
    assert_eq!(tree.iter(0, u64::MAX, &g).count(), 3);
}

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    let (tree, mut w) = RangeTree::<u64>::new();
    tree.store(&mut w, 10, 20, 1).unwrap();
    assert_eq!(tree.store(&mut w, 5, 5, 2), Err(TreeError::EmptyRange));
    assert_eq!(tree.store(&mut w, 9, 3, 2), Err(TreeError::EmptyRange));
    assert_eq!(tree.erase(&mut w, 30, 30), Err(TreeError::EmptyRange));
    assert_eq!(tree.insert(&mut w, 15, 25, 2), Err(TreeError::Occupied));
    assert_eq!(tree.replace(&mut w, 25, 2), Err(TreeError::NotFound));
    let (other, _w2) = RangeTree::<u64>::new();
    assert_eq!(other.store(&mut w, 1, 2, 3), Err(TreeError::ForeignToken));
    let g = pin();
    assert_eq!(
        tree.gap_lowest(0, 1, 0, 100, &g),
        Err(TreeError::BadGapRequest)
    );
    assert_eq!(
        tree.gap_lowest(1, 3, 0, 100, &g),
        Err(TreeError::BadGapRequest)
    );
    assert_eq!(contents(&tree), vec![(10, 20, 1)]);
    tree.check_invariants().unwrap();
}

/// A splice that leaves a child with one underfull node merges that child
/// with its neighbour: the underfull node must then be merged too. (Of the
/// 21 leaves, packed 13 + 8 under the root, leaf 13 is the first under the
/// second child; cutting everything from inside it leaves that child a single
/// two-slot leaf.)
#[test]
fn erase_to_the_end_from_the_first_leaf_of_a_child() {
    let (tree, mut w) =
        RangeTree::<u64>::from_sorted((0..330u64).map(|i| (16 * i, 16 * i + 8, i))).unwrap();
    tree.check_invariants().unwrap();
    tree.store(&mut w, 16 * 209 + 2, u64::MAX, 7).unwrap();
    tree.check_invariants().unwrap();
    assert_eq!(tree.len(), 211);
}

/// Nodes stay at least half full (`MIN` = 8 of 16 slots), so a large tree
/// takes well under 64 bytes of nodes per range whatever the writes did,
/// here random stores and then erasing three quarters at random.
#[test]
fn random_churn_stays_under_64_bytes_per_range() {
    use rand::{rngs::SmallRng, seq::SliceRandom, SeedableRng};
    let (tree, mut w) = RangeTree::<u64>::new();
    let mut rng = SmallRng::seed_from_u64(3);
    let mut order: Vec<u64> = (0..20_000).collect();
    order.shuffle(&mut rng);
    for &i in &order {
        tree.store(&mut w, 16 * i, 16 * i + 8, i).unwrap();
    }
    let per_range = |t: &RangeTree<u64>| t.stats().node_bytes / t.stats().ranges;
    assert!(per_range(&tree) <= 48, "{:?}", tree.stats());
    for &i in &order[..15_000] {
        tree.erase(&mut w, 16 * i, 16 * i + 8).unwrap();
    }
    tree.check_invariants().unwrap();
    assert!(per_range(&tree) <= 64, "{:?}", tree.stats());
}

/// A store that splits a full leaf and the erase that undoes it must not
/// merge and split the same nodes again on every later pair (B-tree
/// thrashing with `MIN = B / 2`): once the shape has settled, a store + erase
/// of the same range leaves the node count alone.
#[test]
fn store_erase_pairs_do_not_thrash() {
    let (tree, mut w) = RangeTree::<u64>::new();
    for i in 0..1000u64 {
        tree.store(&mut w, 16 * i, 16 * i + 8, i).unwrap();
    }
    // Ascending stores leave full leaves of 16 ranges; a range in the gap
    // after the 13th of a leaf lands in the second half of the split.
    for i in (0..60u64).map(|k| 16 * k + 12) {
        let a = 16 * i + 9;
        for round in 0..3 {
            tree.store(&mut w, a, a + 4, 0).unwrap();
            let after_store = tree.stats().nodes;
            tree.erase(&mut w, a, a + 4).unwrap();
            if round > 0 {
                assert_eq!(tree.stats().nodes, after_store, "gap at {a:#x}");
            }
        }
    }
    tree.check_invariants().unwrap();
}
