//! The read side: lookups, iteration and gap search. Everything here runs under
//! an epoch [`Guard`] and touches only published nodes, reached by acquire
//! loads of the root and of child pointers (see the crate documentation for
//! what a reader sees of concurrent writes: each write whole or not at all).

use crate::node::{count_le, count_lt, InternalData, LeafData, NodePtr, B, PAD};
use crate::sync::Guard;
use crate::{Entry, RangeTree, TreeError};

fn leaf_entry<'g, T>(leaf: &'g LeafData<T>, i: usize) -> Entry<'g, T> {
    Entry {
        start: leaf.start[i],
        end: leaf.end[i],
        // SAFETY: a value pointer in a live leaf points to a live boxed value; it is
        // retired no earlier than the leaf, so it lives as long as the guard 'g.
        value: unsafe { &*leaf.val[i] },
    }
}

/// Index of the first slot whose end is above `addr`, if that slot is used.
#[inline(always)]
fn first_end_above(start: &[u64; B], end: &[u64; B], addr: u64) -> Option<usize> {
    let i = count_le(end, addr);
    (i < B && start[i] != PAD).then_some(i)
}

impl<T: Send + Sync> RangeTree<T> {
    /// The range containing `addr`.
    #[inline]
    pub fn find<'g>(&'g self, addr: u64, _guard: &'g Guard) -> Option<Entry<'g, T>> {
        if addr == PAD {
            // Never covered; and unused slots (`PAD`) would count as `<= addr`.
            return None;
        }
        let mut node = self.load_root();
        if node.is_null() {
            return None;
        }
        while !node.is_leaf() {
            // SAFETY: reached from the root loaded under `_guard`, held for 'g.
            let n: &'g InternalData<T> = unsafe { node.internal::<'g>() };
            // The last child starting at or below `addr` (child 0 if none: the
            // leaf search then finds nothing).
            node = n.child[count_le(&n.start, addr).saturating_sub(1)].get();
        }
        // SAFETY: as above.
        let leaf = unsafe { node.leaf::<'g>() };
        let i = count_le(&leaf.start, addr).checked_sub(1)?;
        (addr < leaf.end[i]).then(|| leaf_entry(leaf, i))
    }

    /// The first range that ends above `addr`: the one containing `addr`, or
    /// else the next one (Linux's `find_vma`).
    pub fn find_after<'g>(&'g self, addr: u64, _guard: &'g Guard) -> Option<Entry<'g, T>> {
        let mut node = self.load_root();
        if node.is_null() {
            return None;
        }
        while !node.is_leaf() {
            // SAFETY: reached from the root loaded under `_guard`, held for 'g.
            let n: &'g InternalData<T> = unsafe { node.internal::<'g>() };
            node = n.child[first_end_above(&n.start, &n.end, addr)?].get();
        }
        // SAFETY: as above.
        let leaf = unsafe { node.leaf::<'g>() };
        Some(leaf_entry(
            leaf,
            first_end_above(&leaf.start, &leaf.end, addr)?,
        ))
    }

    /// The last range that starts below `addr` (it may contain `addr`).
    pub fn find_before<'g>(&'g self, addr: u64, _guard: &'g Guard) -> Option<Entry<'g, T>> {
        let mut node = self.load_root();
        if node.is_null() {
            return None;
        }
        while !node.is_leaf() {
            // SAFETY: reached from the root loaded under `_guard`, held for 'g.
            let n: &'g InternalData<T> = unsafe { node.internal::<'g>() };
            node = n.child[count_lt(&n.start, addr).checked_sub(1)?].get();
        }
        // SAFETY: as above.
        let leaf = unsafe { node.leaf::<'g>() };
        Some(leaf_entry(
            leaf,
            count_lt(&leaf.start, addr).checked_sub(1)?,
        ))
    }

    /// Iterates, in address order, over the ranges that meet `[lo, hi)`. Each
    /// concurrent write is seen whole or not at all, but the iteration is not a
    /// snapshot (see the crate documentation).
    pub fn iter<'g>(&'g self, lo: u64, hi: u64, guard: &'g Guard) -> Iter<'g, T> {
        let mut it = Iter {
            stack: Vec::new(),
            hi,
            _guard: guard,
        };
        let root = self.load_root();
        if !root.is_null() && lo < hi {
            it.seek(root, lo);
        }
        it
    }

    /// The lowest `align`-aligned address `a` with `[a, a + size)` free and
    /// inside `[lo, hi)`.
    pub fn gap_lowest(
        &self,
        size: u64,
        align: u64,
        lo: u64,
        hi: u64,
        guard: &Guard,
    ) -> Result<Option<u64>, TreeError> {
        let q = GapQuery::new(size, align, lo, hi)?;
        let root = self.load_root();
        if root.is_null() {
            return Ok(q.fit_low(0, u64::MAX));
        }
        let (first, last) = bounds(root);
        let _ = guard;
        Ok(q.fit_low(0, first)
            .or_else(|| q.low_inside(root))
            .or_else(|| q.fit_low(last, u64::MAX)))
    }

    /// The highest `align`-aligned address `a` with `[a, a + size)` free and
    /// inside `[lo, hi)` (top-down placement, as Linux's `get_unmapped_area`).
    pub fn gap_highest(
        &self,
        size: u64,
        align: u64,
        lo: u64,
        hi: u64,
        guard: &Guard,
    ) -> Result<Option<u64>, TreeError> {
        let q = GapQuery::new(size, align, lo, hi)?;
        let root = self.load_root();
        if root.is_null() {
            return Ok(q.fit_high(0, u64::MAX));
        }
        let (first, last) = bounds(root);
        let _ = guard;
        Ok(q.fit_high(last, u64::MAX)
            .or_else(|| q.high_inside(root))
            .or_else(|| q.fit_high(0, first)))
    }
}

/// First start and last end of a live, non-null node.
fn bounds<T>(node: NodePtr<T>) -> (u64, u64) {
    if node.is_leaf() {
        // SAFETY: callers pass a node reached from the root under a held guard.
        let l = unsafe { node.leaf() };
        (l.start[0], l.end[l.len() - 1])
    } else {
        // SAFETY: as above.
        let n = unsafe { node.internal() };
        (n.start[0], n.end[n.len() - 1])
    }
}

/// A validated gap request.
struct GapQuery {
    size: u64,
    align: u64,
    lo: u64,
    hi: u64,
}

impl GapQuery {
    fn new(size: u64, align: u64, lo: u64, hi: u64) -> Result<Self, TreeError> {
        if size == 0 || !align.is_power_of_two() {
            return Err(TreeError::BadGapRequest);
        }
        Ok(GapQuery {
            size,
            align,
            lo,
            hi,
        })
    }

    /// Lowest fit inside the free interval `[gs, ge)`.
    fn fit_low(&self, gs: u64, ge: u64) -> Option<u64> {
        let from = gs.max(self.lo);
        let a = from.checked_add(self.align - 1)? & !(self.align - 1);
        let limit = ge.min(self.hi);
        (a.checked_add(self.size)? <= limit).then_some(a)
    }

    /// Highest fit inside the free interval `[gs, ge)`.
    fn fit_high(&self, gs: u64, ge: u64) -> Option<u64> {
        let limit = ge.min(self.hi);
        let a = limit.checked_sub(self.size)? & !(self.align - 1);
        (a >= gs.max(self.lo)).then_some(a)
    }

    /// Lowest fit strictly between the ranges of a live subtree.
    fn low_inside<T>(&self, node: NodePtr<T>) -> Option<u64> {
        if node.is_leaf() {
            // SAFETY: reached from the root under the caller's guard.
            let l = unsafe { node.leaf() };
            return (1..l.len())
                .take_while(|&i| l.end[i - 1] < self.hi)
                .find_map(|i| self.fit_low(l.end[i - 1], l.start[i]));
        }
        // SAFETY: as above.
        let n = unsafe { node.internal() };
        for i in 0..n.len() {
            if i > 0 {
                if let Some(a) = self.fit_low(n.end[i - 1], n.start[i]) {
                    return Some(a);
                }
            }
            if n.start[i] >= self.hi {
                return None;
            }
            if n.gap[i] >= self.size && n.end[i] > self.lo {
                if let Some(a) = self.low_inside(n.child[i].get()) {
                    return Some(a);
                }
            }
        }
        None
    }

    /// Highest fit strictly between the ranges of a live subtree.
    fn high_inside<T>(&self, node: NodePtr<T>) -> Option<u64> {
        if node.is_leaf() {
            // SAFETY: reached from the root under the caller's guard.
            let l = unsafe { node.leaf() };
            return (1..l.len())
                .rev()
                .take_while(|&i| l.start[i] > self.lo)
                .find_map(|i| self.fit_high(l.end[i - 1], l.start[i]));
        }
        // SAFETY: as above.
        let n = unsafe { node.internal() };
        let len = n.len();
        for i in (0..len).rev() {
            if i + 1 < len {
                if let Some(a) = self.fit_high(n.end[i], n.start[i + 1]) {
                    return Some(a);
                }
            }
            if n.end[i] <= self.lo {
                return None;
            }
            if n.gap[i] >= self.size && n.start[i] < self.hi {
                if let Some(a) = self.high_inside(n.child[i].get()) {
                    return Some(a);
                }
            }
        }
        None
    }
}

/// In-order iterator over the ranges meeting `[lo, hi)`; see [`RangeTree::iter`].
pub struct Iter<'g, T> {
    /// Path from the root: each node and the next slot to visit in it.
    stack: Vec<(NodePtr<T>, usize)>,
    hi: u64,
    _guard: &'g Guard,
}

impl<'g, T: 'g> Iter<'g, T> {
    /// Builds the path to the first range that ends above `lo`.
    fn seek(&mut self, mut node: NodePtr<T>, lo: u64) {
        loop {
            if node.is_leaf() {
                // SAFETY: reached from the root under the guard held for 'g.
                let l = unsafe { node.leaf::<'g>() };
                self.stack.push((node, count_le(&l.end, lo)));
                return;
            }
            // SAFETY: as above.
            let n = unsafe { node.internal::<'g>() };
            let i = count_le(&n.end, lo);
            if i == B || n.start[i] == PAD {
                self.stack.push((node, i));
                return;
            }
            self.stack.push((node, i + 1));
            node = n.child[i].get();
        }
    }
}

impl<'g, T: 'g> Iterator for Iter<'g, T> {
    type Item = Entry<'g, T>;

    fn next(&mut self) -> Option<Entry<'g, T>> {
        while let Some(&mut (node, ref mut i)) = self.stack.last_mut() {
            if node.is_leaf() {
                // SAFETY: nodes on the stack were reached under the guard held for 'g.
                let l = unsafe { node.leaf::<'g>() };
                if *i < B && l.start[*i] != PAD {
                    let e = leaf_entry(l, *i);
                    *i += 1;
                    if e.start >= self.hi {
                        self.stack.clear();
                        return None;
                    }
                    return Some(e);
                }
                self.stack.pop();
                continue;
            }
            // SAFETY: as above.
            let n = unsafe { node.internal::<'g>() };
            if *i < B && n.start[*i] != PAD {
                let child = n.child[*i].get();
                *i += 1;
                self.stack.push((child, 0));
            } else {
                self.stack.pop();
            }
        }
        None
    }
}
