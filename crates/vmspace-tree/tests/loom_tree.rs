//! Loom models of the tree's publication protocol (run with
//! `RUSTFLAGS="--cfg loom" cargo test -p vmspace-tree --test loom_tree --release`).
//! Nodes are loom cells under `--cfg loom`, so a reader that could reach a node
//! not published to it by the root's release/acquire pair is reported.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use vmspace_tree::{pin, RangeTree};

fn snapshot(tree: &RangeTree<u32>) -> Vec<(u64, u64, u32)> {
    let g = pin();
    tree.iter(0, u64::MAX, &g)
        .map(|e| (e.start, e.end, *e.value))
        .collect()
}

/// Property: a reader racing one store sees the whole tree before it or the
/// whole tree after it (lookup and iteration), never a mix.
#[test]
fn reader_sees_before_or_after_a_store() {
    loom::model(|| {
        let (tree, mut w) = RangeTree::<u32>::new();
        tree.store(&mut w, 0, 10, 1).unwrap();
        tree.store(&mut w, 20, 30, 2).unwrap();
        let before = snapshot(&tree);
        let tree = Arc::new(tree);
        let reader = {
            let tree = tree.clone();
            thread::spawn(move || {
                let g = pin();
                let hit = tree.find(7, &g).map(|e| (e.start, e.end, *e.value));
                drop(g);
                (hit, snapshot(&tree))
            })
        };
        tree.store(&mut w, 5, 25, 3).unwrap();
        let after = snapshot(&tree);
        let (hit, seen) = reader.join().unwrap();
        assert!(
            hit == Some((0, 10, 1)) || hit == Some((5, 25, 3)),
            "{hit:?}"
        );
        assert!(seen == before || seen == after, "mixed view {seen:?}");
    });
}

/// Property: the same holds when the write splits the root (a new level is
/// published in one store): lookups racing the growth find every range.
#[test]
fn reader_sees_every_range_while_the_root_splits() {
    loom::model(|| {
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
    loom::model(|| {
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
