//! A range tree whose lookups take no lock.
//!
//! [`RangeTree`] maps non-overlapping half-open ranges `[start, end)` of `u64`
//! (with `start < end`; the last address `u64::MAX` itself is never covered) to
//! values. It is built for what a memory manager needs from its VMA tree, in the
//! spirit of Linux's maple tree:
//!
//! * **Readers take no lock and never block.** [`RangeTree::find`],
//!   [`RangeTree::find_after`], [`RangeTree::find_before`], [`RangeTree::iter`]
//!   and the gap searches run inside an epoch read-side section ([`pin`] returns
//!   the [`Guard`]); what they return borrows from the guard, so no reference
//!   outlives the section.
//! * **One writer at a time, serialized by the caller.** Writes need the tree's
//!   [`WriteToken`] by `&mut`: there is exactly one per tree, so a second
//!   concurrent writer is a compile error (the token lives wherever the
//!   caller's writer lock lives, e.g. inside the address space's mmap lock).
//! * **Atomic writes.** A write copies every node it changes (path copying) and
//!   publishes its new nodes with one release store: of the root, or, when the
//!   topmost copied node keeps its parent's slot exactly (same first start,
//!   last end and largest inner gap), of that one child pointer in the parent.
//!   A reader sees each write whole or not at all: never a torn node, never a
//!   range that was never stored. A lookup follows one path, so it sees one
//!   version of everything it reads. An iteration sees every range in order,
//!   each leaf before or after each write, but it is not a snapshot of the
//!   whole tree: it may see a later write in a leaf it reaches late and miss an
//!   earlier one in a leaf it had already passed (as with Linux's maple tree
//!   under RCU). Callers that need a snapshot of several ranges hold their
//!   writer lock, or validate with a sequence count, as `vmspace` does.
//! * **Reclamation after a grace period.** Replaced nodes and removed values are
//!   handed to the epoch collector and freed once every reader pinned at the time
//!   of the write has unpinned.
//! * **Gap search in O(log n).** Each internal slot keeps the largest gap inside
//!   its child, so [`RangeTree::gap_lowest`] and [`RangeTree::gap_highest`] skip
//!   subtrees that cannot hold the request.
//!
//! # Memory ordering
//!
//! The root and the child pointers of internal nodes are the only mutable
//! words. The writer builds new nodes with plain stores, then publishes them
//! with one `Release` store of the root or of one child pointer; readers load
//! both with `Acquire`, which makes every node reachable through the loaded
//! pointer (all written before the release) visible. Everything else in a
//! published node (keys, gaps, value pointers) is never written again, and a
//! child pointer is swung only to a child with the same slot keys and gap, so
//! whatever a reader decided from a parent's keys stays true below it.
//!
//! # Values
//!
//! Each stored range owns one boxed value. A store that cuts an existing range
//! in two (or an erase in the middle of one) clones its value for the second
//! piece, hence `T: Clone` on writes (values are typically `Arc`s). Every value
//! is dropped exactly once: after a grace period when a write removes it, or
//! when the tree is dropped.

#![deny(missing_docs)]

#[cfg(feature = "contenders")]
#[doc(hidden)]
pub mod contenders;
mod node;
mod pool;
mod read;
pub mod sync;
mod write;

use node::NodePtr;
pub use read::Iter;
#[cfg(loom)]
#[doc(hidden)]
pub use sync::sync_with_collector;
pub use sync::{pin, Guard};
use sync::{AtomicUsize, Ordering};

/// A range and a reference to its value, valid while the guard it was found
/// under is held.
#[derive(Debug)]
pub struct Entry<'g, T> {
    /// First address of the range.
    pub start: u64,
    /// One past the last address of the range.
    pub end: u64,
    /// The value stored for the range.
    pub value: &'g T,
}

impl<T> Clone for Entry<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Entry<'_, T> {}

/// Why a write or a gap search was refused. The tree is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// `start >= end`: an empty or inverted range.
    EmptyRange,
    /// `insert` found the range (partly) occupied.
    Occupied,
    /// No range contains the address given to `replace`.
    NotFound,
    /// The write token belongs to another tree.
    ForeignToken,
    /// A gap search with size 0 or an alignment that is not a power of two.
    BadGapRequest,
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TreeError::EmptyRange => "empty or inverted range",
            TreeError::Occupied => "range already occupied",
            TreeError::NotFound => "no range contains the address",
            TreeError::ForeignToken => "write token of another tree",
            TreeError::BadGapRequest => "gap size is zero or alignment is not a power of two",
        })
    }
}

impl std::error::Error for TreeError {}

/// The right to write one tree: see the crate documentation. It also carries the
/// writer's private state (the tree's height).
#[derive(Debug)]
pub struct WriteToken {
    tree_id: usize,
    height: usize,
    /// Free node blocks for this writer's next writes.
    cache: pool::Cache,
    /// Writes that retired garbage (to pace the collector).
    #[cfg_attr(loom, allow(dead_code))]
    retired: u32,
}

/// Tree-wide counters, read without synchronization (Relaxed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Stored ranges.
    pub ranges: usize,
    /// Live nodes of the current version.
    pub nodes: usize,
    /// Bytes of those nodes.
    pub node_bytes: usize,
}

/// A map from non-overlapping ranges to values, read without locks. See the
/// crate documentation.
pub struct RangeTree<T> {
    /// Identity matched against the write token; immutable.
    id: usize,
    /// Tagged [`NodePtr`] of the current version. Written only by the token
    /// holder (Release), read by everyone (Acquire). On a cache line of its
    /// own: the counters below change with every write, the root seldom.
    root: crossbeam_utils::CachePadded<AtomicUsize>,
    /// Number of ranges; written by the token holder, read Relaxed.
    len: AtomicUsize,
    /// Number of leaves and internal nodes; written by the token holder.
    leaves: AtomicUsize,
    internals: AtomicUsize,
    _values: std::marker::PhantomData<Box<T>>,
}

// SAFETY: the tree owns its values (boxed) and hands out `&T` to any thread, and
// drops values on whichever thread runs the collector: that needs `T: Send + Sync`.
unsafe impl<T: Send + Sync> Send for RangeTree<T> {}
// SAFETY: as above; all shared mutation goes through atomics.
unsafe impl<T: Send + Sync> Sync for RangeTree<T> {}

impl<T: Send + Sync> RangeTree<T> {
    /// Creates an empty tree and its only write token.
    pub fn new() -> (Self, WriteToken) {
        let tree = RangeTree {
            id: next_tree_id(),
            root: crossbeam_utils::CachePadded::new(AtomicUsize::new(0)),
            len: AtomicUsize::new(0),
            leaves: AtomicUsize::new(0),
            internals: AtomicUsize::new(0),
            _values: std::marker::PhantomData,
        };
        let token = WriteToken {
            tree_id: tree.id,
            height: 0,
            cache: pool::Cache::default(),
            retired: 0,
        };
        (tree, token)
    }

    /// Number of stored ranges.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the tree stores no range.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Node and range counts of the current version.
    pub fn stats(&self) -> TreeStats {
        let leaves = self.leaves.load(Ordering::Relaxed);
        let internals = self.internals.load(Ordering::Relaxed);
        TreeStats {
            ranges: self.len(),
            nodes: leaves + internals,
            node_bytes: leaves * std::mem::size_of::<node::Leaf<T>>()
                + internals * std::mem::size_of::<node::Internal<T>>(),
        }
    }

    fn load_root(&self) -> NodePtr<T> {
        NodePtr::from_raw(self.root.load(Ordering::Acquire))
    }
}

/// A process-wide unique tree identity (a counter cannot repeat, an address could).
fn next_tree_id() -> usize {
    use std::sync::atomic::{AtomicUsize as StdAtomic, Ordering as StdOrdering};
    static NEXT: StdAtomic = StdAtomic::new(1);
    NEXT.fetch_add(1, StdOrdering::Relaxed)
}

impl<T> Drop for RangeTree<T> {
    fn drop(&mut self) {
        let root = NodePtr::<T>::from_raw(self.root.load(Ordering::Relaxed));
        if !root.is_null() {
            // SAFETY: `&mut self` proves no reader holds a reference into the
            // tree (every `Entry` borrows the tree); the current version owns its
            // nodes and values exclusively (older versions' garbage is owned by
            // their deferred closures and holds only what this version lost).
            unsafe { root.free_deep() };
        }
    }
}

impl<T: Send + Sync> RangeTree<T> {
    /// Checks the structural invariants of the current version: ranges sorted,
    /// non-empty and disjoint; every leaf at the same depth; every non-root node
    /// at least `MIN` full; internal slots agreeing with their children (first
    /// start, last end, largest inner gap); node counts agreeing with
    /// [`RangeTree::stats`]. For tests and debugging; O(n).
    pub fn check_invariants(&self) -> Result<(), String> {
        let guard = pin();
        let root = self.load_root();
        let mut counts = (0usize, 0usize, 0usize);
        if !root.is_null() {
            check::node(root, true, &mut counts, &guard)?;
        }
        let stats = self.stats();
        let seen = (counts.0, counts.1 + counts.2);
        if seen != (stats.ranges, stats.nodes) {
            return Err(format!(
                "counted {seen:?} (ranges, nodes), stats say {stats:?}"
            ));
        }
        Ok(())
    }
}

mod check {
    use crate::node::{NodePtr, MIN, PAD};
    use crate::sync::Guard;

    pub(crate) struct Summary {
        pub start: u64,
        pub end: u64,
        pub gap: u64,
        pub depth: usize,
    }

    /// Validates a live subtree, adding (ranges, leaves, internals) to `counts`.
    pub(crate) fn node<T>(
        n: NodePtr<T>,
        is_root: bool,
        counts: &mut (usize, usize, usize),
        _guard: &Guard,
    ) -> Result<Summary, String> {
        // SAFETY: `n` is reached from the root loaded under `_guard`.
        let items = unsafe { crate::node::items_of(n) };
        if items.is_empty() || (!is_root && items.len() < MIN) {
            return Err(format!("node with {} slots", items.len()));
        }
        // SAFETY: as above.
        let (starts, ends) = unsafe {
            if n.is_leaf() {
                (n.leaf().start, n.leaf().end)
            } else {
                (n.internal().start, n.internal().end)
            }
        };
        if starts[items.len()..]
            .iter()
            .chain(&ends[items.len()..])
            .any(|&k| k != PAD)
        {
            return Err("unused slot not padded".into());
        }
        let mut depth = None;
        let mut gap = 0;
        for (i, it) in items.iter().enumerate() {
            if it.start >= it.end {
                return Err(format!("empty slot [{:#x}, {:#x})", it.start, it.end));
            }
            if i > 0 {
                let prev = items[i - 1].end;
                if prev > it.start {
                    return Err(format!("overlap at {:#x}", it.start));
                }
                gap = gap.max(it.start - prev);
            }
            if n.is_leaf() {
                counts.0 += 1;
                depth = Some(0);
                continue;
            }
            let c = node(NodePtr::<T>::from_raw(it.ptr), false, counts, _guard)?;
            if (c.start, c.end, c.gap) != (it.start, it.end, it.gap) {
                return Err(format!("stale slot [{:#x}, {:#x})", it.start, it.end));
            }
            if *depth.get_or_insert(c.depth + 1) != c.depth + 1 {
                return Err("leaves at different depths".into());
            }
            gap = gap.max(c.gap);
        }
        if n.is_leaf() {
            counts.1 += 1;
        } else {
            counts.2 += 1;
        }
        Ok(Summary {
            start: items[0].start,
            end: items[items.len() - 1].end,
            gap,
            depth: depth.unwrap_or(0),
        })
    }
}
