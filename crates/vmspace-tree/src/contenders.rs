//! The lookup contenders: the structures the range tree's lookups are
//! measured against, defined once for the tree's benchmarks
//! (`benches/lookup.rs`) and for `vmspace bench lookup`.
//!
//! Internal, not part of the crate's API: it exists only with the
//! `contenders` feature, which brings in `parking_lot` and
//! `crossbeam-skiplist`; a normal build of the tree has neither.
//!
//! Each contender maps disjoint ranges `[start, end)` to a `u64` value and
//! answers one question, [`Lookup::lookup`]: the value of the range that
//! holds an address, if any.
//!
//! * [`Plain`] (`btreemap`): a `BTreeMap` from start to `(end, value)`, read
//!   with no lock at all: the speed limit, since it could not be written
//!   concurrently;
//! * [`Locked`] (`rwlock-btreemap`): the same behind a `parking_lot::RwLock`
//!   (every reader writes the lock word);
//! * [`Skip`] (`skiplist`): a `crossbeam_skiplist::SkipMap`;
//! * [`Tree`]: the [`RangeTree`], with one epoch pin per lookup (what a
//!   lockless page fault does).

use std::collections::BTreeMap;

use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;

use crate::{pin, RangeTree};

/// How many addresses [`Lookup::run`] cycles through.
pub const ADDRS: usize = 4096;

/// A structure that finds the range holding an address.
pub trait Lookup: Send + Sync {
    /// The value of the range that holds `addr`, or `None` in a gap.
    fn lookup(&self, addr: u64) -> Option<u64>;

    /// `iters` lookups of `addrs` in turn, each result kept from the
    /// optimizer: a benchmark's inner loop, compiled for each contender so
    /// that only one dynamic call is paid per loop, not per lookup.
    fn run(&self, addrs: &[u64; ADDRS], iters: u64) {
        for i in 0..iters {
            std::hint::black_box(self.lookup(addrs[i as usize % ADDRS]));
        }
    }
}

/// A `BTreeMap` from start to `(end, value)`, read without a lock.
pub struct Plain(pub BTreeMap<u64, (u64, u64)>);

impl Lookup for Plain {
    fn lookup(&self, addr: u64) -> Option<u64> {
        let (_, &(end, value)) = self.0.range(..=addr).next_back()?;
        (addr < end).then_some(value)
    }
}

/// The same map behind a reader-writer lock, taken for reading per lookup.
pub struct Locked(pub RwLock<BTreeMap<u64, (u64, u64)>>);

impl Lookup for Locked {
    fn lookup(&self, addr: u64) -> Option<u64> {
        let map = self.0.read();
        let (_, &(end, value)) = map.range(..=addr).next_back()?;
        (addr < end).then_some(value)
    }
}

/// A lock-free skip list from start to `(end, value)`.
pub struct Skip(pub SkipMap<u64, (u64, u64)>);

impl Lookup for Skip {
    fn lookup(&self, addr: u64) -> Option<u64> {
        let entry = self.0.upper_bound(std::ops::Bound::Included(&addr))?;
        let (end, value) = *entry.value();
        (addr < end).then_some(value)
    }
}

/// The range tree, pinned once per lookup.
pub struct Tree(pub RangeTree<u64>);

impl Lookup for Tree {
    fn lookup(&self, addr: u64) -> Option<u64> {
        let guard = pin();
        self.0.find(addr, &guard).map(|entry| *entry.value)
    }
}

/// The four contenders, as [`Contender::build`] makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contender {
    /// [`Plain`].
    BTreeMap,
    /// [`Locked`].
    RwLockBTreeMap,
    /// [`Skip`].
    SkipList,
    /// [`Tree`], built by one `store` per range (each store copies a path,
    /// so the nodes end up where a tree written over time has them).
    Tree,
}

impl Contender {
    /// Every contender.
    pub const ALL: [Contender; 4] = [
        Contender::BTreeMap,
        Contender::RwLockBTreeMap,
        Contender::SkipList,
        Contender::Tree,
    ];

    /// The contender holding `ranges`: `(start, end, value)` triples, in
    /// increasing order and disjoint.
    ///
    /// # Panics
    ///
    /// If a range is empty or overlaps the one before it.
    pub fn build(self, ranges: impl Iterator<Item = (u64, u64, u64)>) -> Box<dyn Lookup> {
        let by_start = ranges.map(|(start, end, value)| (start, (end, value)));
        match self {
            Contender::BTreeMap => Box::new(Plain(by_start.collect())),
            Contender::RwLockBTreeMap => Box::new(Locked(RwLock::new(by_start.collect()))),
            Contender::SkipList => {
                let map = SkipMap::new();
                for (start, entry) in by_start {
                    map.insert(start, entry);
                }
                Box::new(Skip(map))
            }
            Contender::Tree => {
                let (tree, mut token) = RangeTree::new();
                for (start, (end, value)) in by_start {
                    tree.store(&mut token, start, end, value)
                        .expect("contender ranges are disjoint and non-empty");
                }
                Box::new(Tree(tree))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every contender answers the same: the value inside a range, `None`
    /// in the gaps and past the ends.
    #[test]
    fn contenders_agree() {
        let ranges = || (0..100u64).map(|i| (16 * i + 16, 16 * i + 24, i));
        for contender in Contender::ALL {
            let map = contender.build(ranges());
            for (start, end, value) in ranges() {
                assert_eq!(map.lookup(start), Some(value), "{contender:?}");
                assert_eq!(map.lookup(end - 1), Some(value), "{contender:?}");
                assert_eq!(map.lookup(end), None, "{contender:?}");
            }
            assert_eq!(map.lookup(0), None, "{contender:?}");
            assert_eq!(map.lookup(u64::MAX - 1), None, "{contender:?}");
        }
    }
}
