//! Loom models of the tree's publication protocol (run with
//! `RUSTFLAGS="--cfg loom" cargo test -p vmspace-tree --test loom_tree --release`).
//! Nodes are loom cells under `--cfg loom`, so a reader that could reach a node
//! not published to it by the root's release/acquire pair is reported.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use vmspace_tree::{pin, RangeTree};

/// `loom::model` with room for the trees built here: every child-pointer load
/// is an atomic access, a branch point for loom.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.max_branches = 100_000;
    b.check(f);
}

fn snapshot(tree: &RangeTree<u32>) -> Vec<Range> {
    let g = pin();
    tree.iter(0, u64::MAX, &g)
        .map(|e| (e.start, e.end, *e.value))
        .collect()
}

type Range = (u64, u64, u32);

/// What a reader (a lookup of `probe`, then a whole iteration) racing one
/// `store` of `new` saw, with the tree before and after the store.
struct Race {
    before: Vec<Range>,
    after: Vec<Range>,
    hit: Option<Range>,
    seen: Vec<Range>,
}

fn race_reader_with_store(
    tree: RangeTree<u32>,
    mut w: vmspace_tree::WriteToken,
    probe: u64,
    new: Range,
) -> (Arc<RangeTree<u32>>, Race) {
    let before = snapshot(&tree);
    let tree = Arc::new(tree);
    let reader = {
        let tree = tree.clone();
        thread::spawn(move || {
            let g = pin();
            let hit = tree.find(probe, &g).map(|e| (e.start, e.end, *e.value));
            drop(g);
            (hit, snapshot(&tree))
        })
    };
    tree.store(&mut w, new.0, new.1, new.2).unwrap();
    let after = snapshot(&tree);
    let (hit, seen) = reader.join().unwrap();
    let race = Race {
        before,
        after,
        hit,
        seen,
    };
    (tree, race)
}

/// Property: a reader racing one store sees the whole tree before it or the
/// whole tree after it (lookup and iteration), never a mix.
#[test]
fn reader_sees_before_or_after_a_store() {
    model(|| {
        let (tree, mut w) = RangeTree::<u32>::new();
        tree.store(&mut w, 0, 10, 1).unwrap();
        tree.store(&mut w, 20, 30, 2).unwrap();
        let (_, r) = race_reader_with_store(tree, w, 7, (5, 25, 3));
        let hit = r.hit;
        assert!(
            hit == Some((0, 10, 1)) || hit == Some((5, 25, 3)),
            "{hit:?}"
        );
        assert!(
            r.seen == r.before || r.seen == r.after,
            "mixed view {:?}",
            r.seen
        );
    });
}

/// Property: the same holds when the write splits the root (a new level is
/// published in one store): lookups racing the growth find every range.
#[test]
fn reader_sees_every_range_while_the_root_splits() {
    model(|| {
        let (tree, mut w) = RangeTree::<u32>::new();
        for i in 0..16u64 {
            tree.store(&mut w, i * 10, i * 10 + 5, i as u32).unwrap();
        }
        let tree = Arc::new(tree);
        let reader = {
            let tree = tree.clone();
            thread::spawn(move || {
                let g = pin();
                for i in [0u64, 9, 15] {
                    let e = tree.find(i * 10 + 1, &g).expect("range lost");
                    assert_eq!(*e.value, i as u32);
                }
            })
        };
        tree.store(&mut w, 200, 205, 99).unwrap();
        reader.join().unwrap();
        assert_eq!(snapshot(&tree).len(), 17);
    });
}

/// Property: a write that copies one path (the fast path: a new leaf and a
/// copy of each internal node above it) is seen whole or not at all, and a
/// reader still on the old version keeps finding what it held.
#[test]
fn reader_sees_before_or_after_a_path_copy() {
    model(|| {
        let (tree, mut w) = RangeTree::<u32>::new();
        for i in 0..40u64 {
            tree.store(&mut w, i * 10, i * 10 + 5, i as u32).unwrap();
        }
        let before = snapshot(&tree);
        let tree = Arc::new(tree);
        let reader = {
            let tree = tree.clone();
            thread::spawn(move || {
                let g = pin();
                let hit = tree.find(391, &g).map(|e| (e.start, e.end, *e.value));
                let far = tree.find(1, &g).map(|e| *e.value);
                drop(g);
                (hit, far, snapshot(&tree))
            })
        };
        tree.store(&mut w, 390, 393, 99).unwrap();
        let after = snapshot(&tree);
        let (hit, far, seen) = reader.join().unwrap();
        assert!(
            hit == Some((390, 395, 39)) || hit == Some((390, 393, 99)),
            "{hit:?}"
        );
        assert_eq!(far, Some(0));
        assert!(seen == before || seen == after, "mixed view");
    });
}

/// Property: a write that replaces one leaf whose slot in the parent keeps its
/// bounds and gap is published by one release store of the parent's child
/// pointer (not of the root); a racing reader sees it whole or not at all.
#[test]
fn reader_sees_before_or_after_an_in_place_publication() {
    model(|| {
        // Leaves of 16, 16 and 8 ranges under the root.
        let (tree, w) =
            RangeTree::from_sorted((0..40u64).map(|i| (i * 10, i * 10 + 5, i as u32))).unwrap();
        // Inside the last leaf, away from its ends: its first start, last end
        // and largest gap stay the same.
        let (tree, r) = race_reader_with_store(tree, w, 352, (351, 353, 99));
        let hit = r.hit;
        assert!(
            hit == Some((350, 355, 35)) || hit == Some((351, 353, 99)),
            "{hit:?}"
        );
        assert!(r.seen == r.before || r.seen == r.after, "mixed view");
        tree.check_invariants().unwrap();
    });
}

/// Property: an iteration racing two in-place writes in different leaves
/// sees each leaf before or after its write, in order and disjoint. (It is not
/// a snapshot: having read the first leaf before the first write, it may
/// still see the second write; each write on its own is seen whole.)
#[test]
fn iteration_sees_each_in_place_write_whole() {
    model(|| {
        // Leaves of 16, 16 and 8 ranges under the root.
        let (tree, mut w) =
            RangeTree::from_sorted((0..40u64).map(|i| (i * 10, i * 10 + 5, i as u32))).unwrap();
        let before = snapshot(&tree);
        let tree = Arc::new(tree);
        let reader = {
            let tree = tree.clone();
            thread::spawn(move || snapshot(&tree))
        };
        // A same-range replacement in the first leaf, a store in the last.
        tree.store(&mut w, 100, 105, 98).unwrap();
        let middle = snapshot(&tree);
        tree.store(&mut w, 351, 353, 99).unwrap();
        let after = snapshot(&tree);
        let seen = reader.join().unwrap();
        let part = |v: &[(u64, u64, u32)], low: bool| -> Vec<(u64, u64, u32)> {
            v.iter().copied().filter(|r| (r.0 < 200) == low).collect()
        };
        for low in [true, false] {
            let p = part(&seen, low);
            assert!(
                p == part(&before, low) || p == part(&middle, low) || p == part(&after, low),
                "torn leaf {p:?}"
            );
        }
        assert!(seen.windows(2).all(|w| w[0].1 <= w[1].0), "disorder");
    });
}
