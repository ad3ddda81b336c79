//! The write side: every write is one *splice* — "make `[s, e)` hold exactly
//! `new` (or nothing)" — done by path copying and published with one release
//! store of the root.
//!
//! # The splice
//!
//! `splice(node)` returns the slots (items) that replace `node`'s own slots:
//! * in a leaf, the entries outside `[s, e)`, the pieces of entries cut by `s`
//!   or `e`, and the new entry in order;
//! * in an internal node, the children that meet `[s, e)` are spliced (the new
//!   entry goes to the first of them), the ones strictly between are dropped
//!   whole, and the resulting grandchild items are packed into fresh children.
//!   If they are fewer than [`MIN`], a neighbouring child is pulled in and
//!   repacked with them, which keeps every non-root node at least `MIN` full.
//!
//! At the root, the returned items are packed into a new root (growing the tree
//! when they exceed one node, shrinking it while the root has one child).
//!
//! # Reclamation
//!
//! Every published node the splice replaced is retired *shallow* (its slots
//! moved to new nodes); subtrees dropped whole and values whose range vanished
//! are retired *deep*. All of it is handed to the epoch collector in one batch
//! after the root store, so it is freed once every reader that could have loaded
//! the old root has left its read-side section.

use crate::node::{build, items_of, pack, Item, NodePtr, B, MIN};
use crate::sync::{self, Ordering};
use crate::{RangeTree, TreeError, WriteToken};

/// What one write unlinked, freed after a grace period.
pub(crate) struct Garbage<T> {
    shallow: Vec<NodePtr<T>>,
    deep: Vec<NodePtr<T>>,
    values: Vec<*const T>,
}

// SAFETY: garbage holds unlinked nodes and values of a `RangeTree<T>`, which is
// `Send + Sync` only for `T: Send + Sync`; it is dropped on the collector's thread.
unsafe impl<T: Send + Sync> Send for Garbage<T> {}

impl<T> Garbage<T> {
    fn new() -> Self {
        Garbage {
            shallow: Vec::new(),
            deep: Vec::new(),
            values: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.shallow.is_empty() && self.deep.is_empty() && self.values.is_empty()
    }
}

impl<T> Drop for Garbage<T> {
    fn drop(&mut self) {
        // SAFETY: garbage is dropped only after a grace period (under loom, the
        // model collector's): no reader can reach these nodes or values, and each was
        // unlinked by exactly one write, so each is freed once.
        unsafe {
            for n in self.shallow.drain(..) {
                n.free_shallow();
            }
            for n in self.deep.drain(..) {
                n.free_deep();
            }
            for v in self.values.drain(..) {
                drop(Box::from_raw(v as *mut T));
            }
        }
    }
}

/// One write in progress.
struct Splice<T> {
    s: u64,
    e: u64,
    garbage: Garbage<T>,
    /// Net change in the number of ranges.
    delta: isize,
    /// Net change in the number of leaves and internal nodes.
    leaves: isize,
    internals: isize,
}

impl<T: Clone> Splice<T> {
    fn retire_shallow(&mut self, node: NodePtr<T>) {
        self.count_node(node, -1);
        self.garbage.shallow.push(node);
    }

    fn count_node(&mut self, node: NodePtr<T>, by: isize) {
        if node.is_leaf() {
            self.leaves += by;
        } else {
            self.internals += by;
        }
    }

    /// Retires a whole published subtree that lies inside `[s, e)`.
    fn retire_deep(&mut self, node: NodePtr<T>) {
        let (ranges, leaves, internals) = count_subtree(node);
        self.delta -= ranges as isize;
        self.leaves -= leaves as isize;
        self.internals -= internals as isize;
        self.garbage.deep.push(node);
    }

    /// The items that replace published `node` (height `h`) after the splice.
    fn node(&mut self, node: NodePtr<T>, h: usize, new: Option<*const T>) -> Vec<Item> {
        self.retire_shallow(node);
        if node.is_leaf() {
            self.leaf(node, new)
        } else {
            self.internal(node, h, new)
        }
    }

    fn leaf(&mut self, node: NodePtr<T>, new: Option<*const T>) -> Vec<Item> {
        let (s, e) = (self.s, self.e);
        // SAFETY: a published node is live while the writer (its only unlinker) runs.
        let leaf = unsafe { node.leaf() };
        let mut out = Vec::with_capacity(leaf.len + 2);
        let mut pending = new.map(|p| Item {
            start: s,
            end: e,
            gap: 0,
            ptr: p as usize,
        });
        for it in leaf.items() {
            if it.end <= s {
                out.push(it);
                continue;
            }
            if it.start >= e {
                out.extend(pending.take());
                out.push(it);
                continue;
            }
            let (left, right) = (it.start < s, it.end > e);
            if left {
                out.push(Item { end: s, ..it });
            }
            out.extend(pending.take());
            if right {
                let ptr = if left {
                    self.clone_value(it.ptr)
                } else {
                    it.ptr
                };
                out.push(Item {
                    start: e,
                    ptr,
                    ..it
                });
            }
            match (left, right) {
                (false, false) => {
                    self.garbage.values.push(it.ptr as *const T);
                    self.delta -= 1;
                }
                (true, true) => self.delta += 1,
                _ => {}
            }
        }
        out.extend(pending.take());
        if new.is_some() {
            self.delta += 1;
        }
        out
    }

    /// A new boxed copy of the value at `ptr`, for the second piece of a cut range.
    fn clone_value(&mut self, ptr: usize) -> usize {
        // SAFETY: `ptr` is a live value of a published leaf (see `leaf`).
        let v: &T = unsafe { &*(ptr as *const T) };
        Box::into_raw(Box::new(v.clone())) as usize
    }

    fn internal(&mut self, node: NodePtr<T>, h: usize, new: Option<*const T>) -> Vec<Item> {
        let (s, e) = (self.s, self.e);
        // SAFETY: as in `leaf`.
        let n = unsafe { node.internal() };
        let (start, end, len) = (&n.start[..n.len], &n.end[..n.len], n.len);
        // Children meeting [s, e): lo..=hi. None meets it: the one s falls in.
        let first = end.partition_point(|&x| x <= s);
        let last = start.partition_point(|&x| x < e);
        let (lo, hi) = if first < last {
            (first, last - 1)
        } else {
            let t = start.partition_point(|&x| x <= s).saturating_sub(1);
            (t, t)
        };
        let mut items = self.node(n.child[lo], h - 1, new);
        for &mid in &n.child[lo + 1..hi.max(lo + 1)] {
            self.retire_deep(mid);
        }
        if hi > lo {
            items.extend(self.node(n.child[hi], h - 1, None));
        }
        if h >= 2 {
            self.repair(&mut items, h - 2);
        }
        // Replaced children: [a, b). Pull a neighbour in when too few remain.
        let (mut a, mut b) = (lo, hi + 1);
        if items.len() < MIN {
            if a > 0 {
                a -= 1;
                let mut merged = self.take_items(n.child[a]);
                merged.append(&mut items);
                items = merged;
            } else if b < len {
                let mut right = self.take_items(n.child[b]);
                items.append(&mut right);
                b += 1;
            }
        }
        let packed = pack::<T>(&items, h == 1);
        self.count_fresh(&packed, h == 1);
        let mut out = Vec::with_capacity(len - (b - a) + packed.len());
        out.extend(n.items().take(a));
        out.extend(packed);
        out.extend(n.items().skip(b));
        out
    }

    /// Merges every node under `MIN` slots in `items` (slots of nodes at height
    /// `h`) with an adjacent one, recursively below, so that each is at least
    /// `MIN` full, unless `items` holds a single node (its parent repairs it).
    fn repair(&mut self, items: &mut Vec<Item>, h: usize) {
        let mut i = 0;
        while items.len() > 1 && i < items.len() {
            let node = NodePtr::<T>::from_raw(items[i].ptr);
            if slots(node) >= MIN {
                i += 1;
                continue;
            }
            let j = if i + 1 < items.len() { i } else { i - 1 };
            let mut merged = self.take_items(NodePtr::from_raw(items[j].ptr));
            merged.extend(self.take_items(NodePtr::from_raw(items[j + 1].ptr)));
            if h > 0 {
                self.repair(&mut merged, h - 1);
            }
            let packed = pack::<T>(&merged, h == 0);
            self.count_fresh(&packed, h == 0);
            items.splice(j..j + 2, packed);
            i = j;
        }
    }

    /// The slots of a node being merged away (published, or fresh from `pack`);
    /// the node is retired.
    fn take_items(&mut self, node: NodePtr<T>) -> Vec<Item> {
        self.retire_shallow(node);
        // SAFETY: as in `leaf`.
        unsafe { items_of(node) }
    }

    fn count_fresh(&mut self, packed: &[Item], leaf: bool) {
        let by = packed.len() as isize;
        if leaf {
            self.leaves += by;
        } else {
            self.internals += by;
        }
    }
}

/// Slot count of a live node.
fn slots<T>(node: NodePtr<T>) -> usize {
    if node.is_leaf() {
        // SAFETY: callers pass live nodes (published, or fresh from `pack`).
        unsafe { node.leaf() }.len
    } else {
        // SAFETY: as above.
        unsafe { node.internal() }.len
    }
}

/// (ranges, leaves, internal nodes) of a live subtree.
fn count_subtree<T>(node: NodePtr<T>) -> (usize, usize, usize) {
    if node.is_leaf() {
        // SAFETY: callers pass published nodes, live while the writer runs.
        return (unsafe { node.leaf() }.len, 1, 0);
    }
    // SAFETY: as above.
    let n = unsafe { node.internal() };
    n.child[..n.len].iter().fold((0, 0, 1), |acc, &c| {
        let (r, l, i) = count_subtree(c);
        (acc.0 + r, acc.1 + l, acc.2 + i)
    })
}

impl<T: Clone + Send + Sync + 'static> RangeTree<T> {
    /// Stores `value` for `[start, end)`, overwriting whatever was there: the
    /// parts of ranges outside `[start, end)` survive, trimmed (a range cut in
    /// two clones its value for the upper piece).
    pub fn store(
        &self,
        token: &mut WriteToken,
        start: u64,
        end: u64,
        value: T,
    ) -> Result<(), TreeError> {
        self.check(token, start, end)?;
        let ptr = Box::into_raw(Box::new(value)) as *const T;
        self.splice(token, start, end, Some(ptr));
        Ok(())
    }

    /// Stores `value` for `[start, end)` if no stored range meets it.
    pub fn insert(
        &self,
        token: &mut WriteToken,
        start: u64,
        end: u64,
        value: T,
    ) -> Result<(), TreeError> {
        self.check(token, start, end)?;
        let guard = sync::pin();
        if self.iter(start, end, &guard).next().is_some() {
            return Err(TreeError::Occupied);
        }
        drop(guard);
        self.store(token, start, end, value)
    }

    /// Removes everything inside `[start, end)`; ranges that cross its ends are
    /// trimmed (a range cut in two clones its value for the upper piece).
    pub fn erase(&self, token: &mut WriteToken, start: u64, end: u64) -> Result<(), TreeError> {
        self.check(token, start, end)?;
        self.splice(token, start, end, None);
        Ok(())
    }

    /// Replaces the value of the range containing `addr`, keeping the range;
    /// the old value is dropped after a grace period. Returns the range.
    pub fn replace(
        &self,
        token: &mut WriteToken,
        addr: u64,
        value: T,
    ) -> Result<(u64, u64), TreeError> {
        let guard = sync::pin();
        let (s, e) = match self.find(addr, &guard) {
            Some(entry) => (entry.start, entry.end),
            None => return Err(TreeError::NotFound),
        };
        drop(guard);
        self.store(token, s, e, value)?;
        Ok((s, e))
    }

    /// Removes every range.
    pub fn clear(&self, token: &mut WriteToken) -> Result<(), TreeError> {
        self.erase(token, 0, u64::MAX)
    }

    fn check(&self, token: &WriteToken, start: u64, end: u64) -> Result<(), TreeError> {
        if token.tree_id != self.id {
            return Err(TreeError::ForeignToken);
        }
        if start >= end {
            return Err(TreeError::EmptyRange);
        }
        Ok(())
    }

    fn splice(&self, token: &mut WriteToken, s: u64, e: u64, new: Option<*const T>) {
        let mut sp = Splice {
            s,
            e,
            garbage: Garbage::new(),
            delta: 0,
            leaves: 0,
            internals: 0,
        };
        let root = NodePtr::<T>::from_raw(self.root.load(Ordering::Relaxed));
        let items = if root.is_null() {
            sp.delta += isize::from(new.is_some());
            new.map(|p| Item {
                start: s,
                end: e,
                gap: 0,
                ptr: p as usize,
            })
            .into_iter()
            .collect()
        } else {
            sp.node(root, token.height, new)
        };
        let (new_root, height) = grow_or_shrink(&mut sp, items, token.height);
        token.height = height;
        // Release: every node and value reachable from `new_root` was written
        // above; a reader's Acquire load of the root makes all of it visible.
        self.root.store(new_root.raw(), Ordering::Release);
        self.account(&sp);
        self.retire(sp.garbage);
    }

    fn account(&self, sp: &Splice<T>) {
        let add = |a: &sync::AtomicUsize, by: isize| {
            let v = a.load(Ordering::Relaxed);
            a.store(v.wrapping_add_signed(by), Ordering::Relaxed);
        };
        add(&self.len, sp.delta);
        add(&self.leaves, sp.leaves);
        add(&self.internals, sp.internals);
    }

    fn retire(&self, garbage: Garbage<T>) {
        if !garbage.is_empty() {
            let guard = sync::pin();
            sync::defer_drop(&guard, garbage);
        }
    }
}

/// Packs the root's replacement items into a root, adding levels while they
/// exceed one node and removing them while the root has a single child.
/// Returns the new root and its height.
fn grow_or_shrink<T: Clone>(
    sp: &mut Splice<T>,
    mut items: Vec<Item>,
    mut h: usize,
) -> (NodePtr<T>, usize) {
    if items.is_empty() {
        return (NodePtr::NULL, 0);
    }
    if h >= 1 {
        sp.repair(&mut items, h - 1);
    }
    while items.len() > B {
        items = pack::<T>(&items, h == 0);
        sp.count_fresh(&items, h == 0);
        h += 1;
    }
    // Items at height h-1 (or entries at h = 0): one node holds them, unless a
    // single child can be the root itself.
    while h > 0 && items.len() == 1 {
        let child = NodePtr::<T>::from_raw(items[0].ptr);
        h -= 1;
        if child.is_leaf() || h == 0 {
            return (child, h);
        }
        // SAFETY: the child is live: fresh from `pack`, or published.
        let n = unsafe { child.internal() };
        if n.len > 1 {
            return (child, h);
        }
        // A one-child internal node under the root: skip it too. It was built in
        // this write (published non-root nodes hold at least MIN >= 2 slots, and
        // `take_items` retires what `repair` merges), so it is freed now.
        items = n.items().collect();
        sp.internals -= 1;
        // SAFETY: the node was never published and is dropped once, here.
        unsafe { child.free_shallow() };
    }
    let root = build::<T>(&items, h == 0);
    sp.count_node(NodePtr::from_raw(root.ptr), 1);
    (NodePtr::from_raw(root.ptr), h)
}
