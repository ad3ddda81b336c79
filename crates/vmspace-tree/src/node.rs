//! Nodes of the tree and the one representation writers build them from.
//!
//! A node is immutable from the moment it is published (reachable from the
//! root) until it is freed after a grace period; writers never change a
//! published node, they build a replacement (see `write.rs`). Readers therefore
//! need no lock: whatever node they reach through an acquire load of the root is
//! complete.
//!
//! Layout: up to [`B`] = 16 slots per node, keys in separate arrays so a lookup
//! scans one or two cache lines of `start` keys. A leaf slot holds a range
//! `[start, end)` and a pointer to its boxed value (392 bytes a leaf); an
//! internal slot holds the range its child covers (first start, last end), the
//! largest gap strictly inside that child, and the child pointer (520 bytes).
//!
//! A [`NodePtr`] is a tagged address: bit 0 set means "leaf". Leaves sit at
//! height 0, all at the same depth.

use crate::sync::Published;
use std::marker::PhantomData;

/// Slots per node.
pub(crate) const B: usize = 16;
/// Fewest slots a non-root node keeps after a write (the writer merges below it).
pub(crate) const MIN: usize = B / 4;

pub(crate) struct LeafData<T> {
    pub len: usize,
    pub start: [u64; B],
    pub end: [u64; B],
    pub val: [*const T; B],
}

pub(crate) struct InternalData<T> {
    pub len: usize,
    pub start: [u64; B],
    pub end: [u64; B],
    /// Largest gap between two consecutive ranges inside child `i`.
    pub gap: [u64; B],
    pub child: [NodePtr<T>; B],
}

pub(crate) type Leaf<T> = Published<LeafData<T>>;
pub(crate) type Internal<T> = Published<InternalData<T>>;

/// A tagged pointer to a leaf (bit 0 set) or an internal node; 0 is "no node".
pub(crate) struct NodePtr<T> {
    raw: usize,
    _marker: PhantomData<*const T>,
}

impl<T> Clone for NodePtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for NodePtr<T> {}

impl<T> PartialEq for NodePtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl<T> NodePtr<T> {
    pub const NULL: Self = NodePtr {
        raw: 0,
        _marker: PhantomData,
    };

    pub fn from_raw(raw: usize) -> Self {
        NodePtr {
            raw,
            _marker: PhantomData,
        }
    }

    pub fn raw(self) -> usize {
        self.raw
    }

    pub fn is_null(self) -> bool {
        self.raw == 0
    }

    pub fn is_leaf(self) -> bool {
        self.raw & 1 == 1
    }

    /// # Safety
    /// `self` is a live leaf: reachable from a root loaded under a guard that
    /// is still held (or owned by the writer and not yet freed), for `'a`.
    pub unsafe fn leaf<'a>(self) -> &'a LeafData<T> {
        debug_assert!(self.is_leaf());
        // SAFETY: the caller guarantees the leaf is live for 'a; bit 0 is the tag.
        unsafe { (*((self.raw & !1) as *const Leaf<T>)).get() }
    }

    /// # Safety
    /// As for [`NodePtr::leaf`], for an internal node.
    pub unsafe fn internal<'a>(self) -> &'a InternalData<T> {
        debug_assert!(!self.is_leaf() && !self.is_null());
        // SAFETY: the caller guarantees the node is live for 'a.
        unsafe { (*(self.raw as *const Internal<T>)).get() }
    }

    /// Frees this node alone (not its children, not its values).
    ///
    /// # Safety
    /// No reader can reach the node any more (a grace period has passed since it
    /// was unlinked, or it was never published), and it is freed only once.
    pub unsafe fn free_shallow(self) {
        if self.is_leaf() {
            // SAFETY: allocated by `Box::into_raw` in `build_leaf`; unreachable per caller.
            drop(unsafe { Box::from_raw((self.raw & !1) as *mut Leaf<T>) });
        } else {
            // SAFETY: allocated by `Box::into_raw` in `build_internal`; unreachable per caller.
            drop(unsafe { Box::from_raw(self.raw as *mut Internal<T>) });
        }
    }

    /// Frees this node, every node below it and every value stored below it;
    /// returns the number of values dropped.
    ///
    /// # Safety
    /// As for [`NodePtr::free_shallow`], for the whole subtree, whose values are
    /// owned by it alone.
    pub unsafe fn free_deep(self) -> usize {
        let mut values = 0;
        if self.is_leaf() {
            // SAFETY: the subtree is unreachable and exclusively ours (caller).
            let leaf = unsafe { self.leaf() };
            for &v in &leaf.val[..leaf.len] {
                // SAFETY: each value pointer came from `Box::into_raw` and is owned by this slot.
                drop(unsafe { Box::from_raw(v as *mut T) });
                values += 1;
            }
        } else {
            // SAFETY: as above.
            let node = unsafe { self.internal() };
            for &c in &node.child[..node.len] {
                // SAFETY: children of an unreachable subtree are unreachable too.
                values += unsafe { c.free_deep() };
            }
        }
        // SAFETY: the node itself is unreachable and freed once, here.
        unsafe { self.free_shallow() };
        values
    }
}

/// One slot, detached from its node: what writers split, merge and pack.
/// For a leaf slot `ptr` is the value pointer and `gap` is 0; for an internal
/// slot it is the child's tagged pointer and the largest gap inside the child.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    pub start: u64,
    pub end: u64,
    pub gap: u64,
    pub ptr: usize,
}

impl<T> LeafData<T> {
    pub fn items(&self) -> impl Iterator<Item = Item> + '_ {
        (0..self.len).map(move |i| Item {
            start: self.start[i],
            end: self.end[i],
            gap: 0,
            ptr: self.val[i] as usize,
        })
    }
}

impl<T> InternalData<T> {
    pub fn items(&self) -> impl Iterator<Item = Item> + '_ {
        (0..self.len).map(move |i| Item {
            start: self.start[i],
            end: self.end[i],
            gap: self.gap[i],
            ptr: self.child[i].raw(),
        })
    }
}

/// Items of any node.
///
/// # Safety
/// `node` is live (see [`NodePtr::leaf`]).
pub(crate) unsafe fn items_of<T>(node: NodePtr<T>) -> Vec<Item> {
    if node.is_leaf() {
        // SAFETY: live per caller.
        unsafe { node.leaf() }.items().collect()
    } else {
        // SAFETY: live per caller.
        unsafe { node.internal() }.items().collect()
    }
}

/// The largest gap inside a run of consecutive items (between them or inside one).
fn inner_gap(items: &[Item]) -> u64 {
    let between = items.windows(2).map(|w| w[1].start - w[0].end);
    items
        .iter()
        .map(|i| i.gap)
        .chain(between)
        .max()
        .unwrap_or(0)
}

/// Builds one node from 1..=B items and returns the slot its parent keeps for it.
pub(crate) fn build<T>(items: &[Item], leaf: bool) -> Item {
    debug_assert!(!items.is_empty() && items.len() <= B);
    let ptr = if leaf {
        let mut d = LeafData {
            len: items.len(),
            start: [0; B],
            end: [0; B],
            val: [std::ptr::null(); B],
        };
        for (i, it) in items.iter().enumerate() {
            d.start[i] = it.start;
            d.end[i] = it.end;
            d.val[i] = it.ptr as *const T;
        }
        Box::into_raw(Box::new(Leaf::new(d))) as usize | 1
    } else {
        let mut d = InternalData::<T> {
            len: items.len(),
            start: [0; B],
            end: [0; B],
            gap: [0; B],
            child: [NodePtr::NULL; B],
        };
        for (i, it) in items.iter().enumerate() {
            d.start[i] = it.start;
            d.end[i] = it.end;
            d.gap[i] = it.gap;
            d.child[i] = NodePtr::from_raw(it.ptr);
        }
        Box::into_raw(Box::new(Internal::new(d))) as usize
    };
    Item {
        start: items[0].start,
        end: items[items.len() - 1].end,
        gap: inner_gap(items),
        ptr,
    }
}

/// Packs items into as few nodes as fit, sizes balanced (each at least half
/// full when more than one), and returns the parent slots for them.
pub(crate) fn pack<T>(items: &[Item], leaf: bool) -> Vec<Item> {
    let n = items.len();
    if n == 0 {
        return Vec::new();
    }
    let nodes = n.div_ceil(B);
    let (base, extra) = (n / nodes, n % nodes);
    let mut out = Vec::with_capacity(nodes);
    let mut at = 0;
    for k in 0..nodes {
        let take = base + usize::from(k < extra);
        out.push(build::<T>(&items[at..at + take], leaf));
        at += take;
    }
    out
}
