//! The write side: every write is one *splice* — "make `[s, e)` hold exactly
//! `new` (or nothing)" — done by path copying and published with one release
//! store (of the root, or of one child pointer: see below).
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
//! # Publishing in place
//!
//! The common write meets one leaf and leaves it between `MIN` and `B` slots
//! (`splice_path`): a new leaf and copies of the internal nodes above it. The
//! copies stop at the first level whose slot for the node below keeps its
//! first start, last end and largest inner gap; there the writer stores the
//! new child pointer into the published parent (release), instead of copying
//! the parent and everything above it up to the root. Nothing a reader reads
//! in the parent changes but that pointer, and the old and new children agree
//! with the parent's keys, so a reader that loads either is consistent; a
//! store or erase inside a leaf usually copies that leaf alone. Only the
//! writer changes child pointers, and only of nodes reachable from the root,
//! never of retired ones (which a slow reader may still be walking).
//!
//! # Reclamation
//!
//! Every published node the splice replaced is retired *shallow* (its slots
//! moved to new nodes); subtrees dropped whole and values whose range vanished
//! are retired *deep*. All of it is handed to the epoch collector in one batch
//! after the publishing store, so it is freed once every reader that could have
//! loaded a pointer to it has left its read-side section.

use crate::node::{
    build, count_le, count_lt, items_of, pack, Child, Fill, FreeChain, InternalData, Item, NodePtr,
    Record, B, MIN, RECORD_WORDS,
};
use crate::pool::Cache;
use crate::sync::{self, Ordering};
use crate::{RangeTree, TreeError, WriteToken};
use std::marker::PhantomData;

/// One thing a write unlinked.
pub(crate) enum Retired<T> {
    /// A node whose slots moved to new nodes: freed alone.
    Shallow(NodePtr<T>),
    /// A subtree dropped whole: freed with its values.
    Deep(NodePtr<T>),
    /// A value whose range vanished.
    Value(*const T),
}

/// What a write that copied a single root-to-leaf path unlinked, written in
/// a [`Record`]: word 0 is `nodes | values << 8`, then the old nodes of the
/// path, then the values whose ranges vanished. One word, so the epoch
/// collector keeps it without an allocation; and freeing it chases no
/// pointers through the old (by then cold) nodes.
pub(crate) struct PathGarbage<T> {
    record: *mut Record,
    _values: PhantomData<*const T>,
}

/// What a write that replaced one leaf and nothing else unlinked (the most
/// common write): the old leaf and at most one value (null if none). Two
/// words, kept by the collector without an allocation and without a record.
pub(crate) struct LeafGarbage<T> {
    leaf: NodePtr<T>,
    value: *const T,
}

/// Deepest path the write fast path handles (a record holds the path's nodes
/// and up to `B` values).
const PATH_DEPTH: usize = 24;
/// Writes between two hand-overs of the writer's garbage to the collector.
#[cfg(not(loom))]
const FLUSH_EVERY: u32 = 32;

const _: () = assert!(1 + PATH_DEPTH + 1 + B <= RECORD_WORDS);

/// What a write that restructured the tree unlinked.
pub(crate) struct ListGarbage<T>(Vec<Retired<T>>);

/// What one write unlinked, freed (dropped) after a grace period.
#[cfg_attr(loom, allow(dead_code))] // under loom, kept only to be dropped
pub(crate) enum Garbage<T> {
    Leaf(LeafGarbage<T>),
    Path(PathGarbage<T>),
    List(ListGarbage<T>),
}

// SAFETY: garbage holds unlinked nodes and values of a `RangeTree<T>`, which is
// `Send + Sync` only for `T: Send + Sync`; it is dropped on the collector's thread.
unsafe impl<T: Send + Sync> Send for PathGarbage<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for LeafGarbage<T> {}

impl<T> Drop for LeafGarbage<T> {
    fn drop(&mut self) {
        // SAFETY: as for `PathGarbage`: a grace period has passed, and the
        // write that made this unlinked exactly this leaf and value.
        unsafe {
            if !self.value.is_null() {
                drop(Box::from_raw(self.value as *mut T));
            }
            self.leaf.free_shallow();
        }
    }
}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Send for ListGarbage<T> {}

impl<T> Drop for PathGarbage<T> {
    fn drop(&mut self) {
        let mut chain = FreeChain::default();
        // SAFETY: garbage is dropped only after a grace period (or with the tree
        // under loom): no reader can reach these nodes or values. The write that
        // made this record unlinked exactly these, so each is freed once. The
        // record's words 0..=nodes + values were written by that write.
        unsafe {
            let w = self.record as *const usize;
            let (nodes, values) = (w.read() & 0xff, w.read() >> 8);
            for k in 1..=nodes {
                chain.push(NodePtr::<T>::from_raw(w.add(k).read()));
            }
            for k in 1 + nodes..1 + nodes + values {
                drop(Box::from_raw(w.add(k).read() as *mut T));
            }
            chain.push_record(self.record);
        }
        chain.free();
    }
}

impl<T> Drop for ListGarbage<T> {
    fn drop(&mut self) {
        for r in self.0.drain(..) {
            // SAFETY: garbage is dropped only after a grace period (under loom,
            // the model collector's): no reader can reach these. Each was unlinked by
            // exactly one write and is in one list only, so it is freed once.
            unsafe {
                match r {
                    Retired::Shallow(n) => n.free_shallow(),
                    Retired::Deep(n) => {
                        n.free_deep();
                    }
                    Retired::Value(v) => drop(Box::from_raw(v as *mut T)),
                }
            }
        }
    }
}

/// One write in progress.
struct Splice<'c, T> {
    cache: &'c mut Cache,
    s: u64,
    e: u64,
    garbage: Vec<Retired<T>>,
    /// Net change in the number of ranges.
    delta: isize,
    /// Net change in the number of leaves and internal nodes.
    leaves: isize,
    internals: isize,
}

impl<T: Clone> Splice<'_, T> {
    fn retire_shallow(&mut self, node: NodePtr<T>) {
        self.count_node(node, -1);
        self.garbage.push(Retired::Shallow(node));
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
        self.garbage.push(Retired::Deep(node));
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
        let mut out = Vec::with_capacity(leaf.len() + 2);
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
                    self.garbage.push(Retired::Value(it.ptr as *const T));
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
        let len = n.len();
        let (start, end) = (&n.start[..len], &n.end[..len]);
        // Children meeting [s, e): lo..=hi. None meets it: the one s falls in.
        let first = end.partition_point(|&x| x <= s);
        let last = start.partition_point(|&x| x < e);
        let (lo, hi) = if first < last {
            (first, last - 1)
        } else {
            let t = start.partition_point(|&x| x <= s).saturating_sub(1);
            (t, t)
        };
        let mut items = self.node(n.child[lo].get(), h - 1, new);
        for mid in n.child[lo + 1..hi.max(lo + 1)].iter().map(Child::get) {
            self.retire_deep(mid);
        }
        if hi > lo {
            items.extend(self.node(n.child[hi].get(), h - 1, None));
        }
        if h >= 2 {
            self.repair(&mut items, h - 2);
        }
        // Replaced children: [a, b). Pull a neighbour in when too few remain.
        let (mut a, mut b) = (lo, hi + 1);
        let mut merged_neighbour = false;
        if items.len() < MIN {
            merged_neighbour = a > 0 || b < len;
            if a > 0 {
                a -= 1;
                let mut merged = self.take_items(n.child[a].get());
                merged.append(&mut items);
                items = merged;
            } else if b < len {
                let mut right = self.take_items(n.child[b].get());
                items.append(&mut right);
                b += 1;
            }
            // The neighbour's children join `items`: a lone underfull node
            // that `repair` had to leave for this level now has siblings to
            // merge with.
            if h >= 2 {
                self.repair(&mut items, h - 2);
            }
        } else {
            // An overflow at one end (sequential stores) packs full nodes
            // behind it and a partial one (at least MIN) at the end: take in
            // the partial node left behind by the previous split on that
            // side, so that it is filled up now rather than left at MIN + 1.
            let fill = self.fill(&items);
            if fill == Fill::Left && a > 0 && slots(n.child[a - 1].get()) < B {
                a -= 1;
                let mut merged = self.take_items(n.child[a].get());
                merged.append(&mut items);
                items = merged;
            } else if fill == Fill::Right && b < len && slots(n.child[b].get()) < B {
                let mut right = self.take_items(n.child[b].get());
                items.append(&mut right);
                b += 1;
            }
        }
        let fill = match self.fill(&items) {
            Fill::Even if merged_neighbour => Fill::Merge,
            fill => fill,
        };
        let packed = pack::<T>(self.cache, &items, h == 1, fill);
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
            let packed = pack::<T>(self.cache, &merged, h == 0, Fill::Merge);
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

    /// How to pack `items` that overflow a node after this splice: leaving
    /// full nodes behind when the write is at one end of them (sequential
    /// stores), else evenly.
    fn fill(&self, items: &[Item]) -> Fill {
        match (items.first(), items.last()) {
            (_, Some(last)) if items.len() > B && last.start <= self.e => Fill::Left,
            (Some(first), _) if items.len() > B && first.end >= self.s => Fill::Right,
            _ => Fill::Even,
        }
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
    // SAFETY: callers pass live nodes (published, or fresh from `pack`).
    unsafe { node.len() }
}

/// (ranges, leaves, internal nodes) of a live subtree.
fn count_subtree<T>(node: NodePtr<T>) -> (usize, usize, usize) {
    if node.is_leaf() {
        // SAFETY: callers pass published nodes, live while the writer runs.
        return (unsafe { node.leaf() }.len(), 1, 0);
    }
    // SAFETY: as above.
    let n = unsafe { node.internal() };
    n.child[..n.len()].iter().fold((0, 0, 1), |acc, c| {
        let (r, l, i) = count_subtree(c.get());
        (acc.0 + r, acc.1 + l, acc.2 + i)
    })
}

impl<T: Send + Sync> RangeTree<T> {
    /// Builds a tree from ranges given in increasing order, e.g. to copy a
    /// tree (fork): nodes are packed full, bottom-up, and nothing is retired.
    /// Fails with [`TreeError::EmptyRange`] for a range with `start >= end`
    /// and with [`TreeError::Occupied`] for one that starts below the end of
    /// the range before it (overlapping or out of order); the values taken so
    /// far are dropped then.
    pub fn from_sorted<I>(ranges: I) -> Result<(Self, WriteToken), TreeError>
    where
        I: IntoIterator<Item = (u64, u64, T)>,
    {
        let (tree, mut token) = Self::new();
        let ranges = ranges.into_iter();
        let mut items: Vec<Item> = Vec::with_capacity(ranges.size_hint().0);
        let mut failed = None;
        for (start, end, value) in ranges {
            if start >= end {
                failed = Some(TreeError::EmptyRange);
            } else if items.last().is_some_and(|last| start < last.end) {
                failed = Some(TreeError::Occupied);
            }
            if failed.is_some() {
                break;
            }
            items.push(Item {
                start,
                end,
                gap: 0,
                ptr: Box::into_raw(Box::new(value)) as usize,
            });
        }
        if let Some(err) = failed {
            for it in items {
                // SAFETY: boxed above and owned by nobody else.
                drop(unsafe { Box::from_raw(it.ptr as *mut T) });
            }
            return Err(err);
        }
        if items.is_empty() {
            return Ok((tree, token));
        }
        let ranges = items.len();
        let (mut leaves, mut internals) = (0isize, 0isize);
        let mut height = 0;
        while items.len() > B {
            items = pack::<T>(&mut token.cache, &items, height == 0, Fill::Left);
            *(if height == 0 {
                &mut leaves
            } else {
                &mut internals
            }) += items.len() as isize;
            height += 1;
        }
        let root = build::<T>(&mut token.cache, &items, height == 0);
        *(if height == 0 {
            &mut leaves
        } else {
            &mut internals
        }) += 1;
        token.height = height;
        // Release: as for any write (nobody else can see the tree yet anyway).
        tree.root.store(root.ptr, Ordering::Release);
        tree.account(ranges as isize, leaves, internals);
        Ok((tree, token))
    }

    fn account(&self, ranges: isize, leaves: isize, internals: isize) {
        let add = |a: &sync::AtomicUsize, by: isize| {
            if by != 0 {
                let v = a.load(Ordering::Relaxed);
                a.store(v.wrapping_add_signed(by), Ordering::Relaxed);
            }
        };
        add(&self.len, ranges);
        add(&self.leaves, leaves);
        add(&self.internals, internals);
    }
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
        let root = NodePtr::<T>::from_raw(self.root.load(Ordering::Relaxed));
        if !root.is_null() && self.splice_path(token, root, s, e, new) {
            return;
        }
        let mut sp = Splice {
            cache: &mut token.cache,
            s,
            e,
            garbage: Vec::new(),
            delta: 0,
            leaves: 0,
            internals: 0,
        };
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
        let (delta, leaves, internals, garbage) = (sp.delta, sp.leaves, sp.internals, sp.garbage);
        token.height = height;
        // Release: every node and value reachable from `new_root` was written
        // above; a reader's Acquire load of the root makes all of it visible.
        self.root.store(new_root.raw(), Ordering::Release);
        self.account(delta, leaves, internals);
        if !garbage.is_empty() {
            self.retire(token, Garbage::List(ListGarbage(garbage)));
        }
    }

    /// The common case of a splice, without allocating anything but the new
    /// nodes: `[s, e)` meets one leaf only, and that leaf keeps between `MIN`
    /// (1 for a root leaf) and `B` slots. Copies the path from the root to the
    /// leaf, changing one slot per level, and publishes it. Returns false,
    /// having changed nothing, when the case does not apply.
    fn splice_path(
        &self,
        token: &mut WriteToken,
        root: NodePtr<T>,
        s: u64,
        e: u64,
        new: Option<*const T>,
    ) -> bool {
        let height = token.height;
        if height >= PATH_DEPTH {
            return false;
        }
        // Descend, recording the node and the slot taken at each level.
        let mut nodes = [NodePtr::<T>::NULL; PATH_DEPTH];
        let mut slots = [0u8; PATH_DEPTH];
        let mut node = root;
        for (d, slot) in nodes.iter_mut().enumerate().take(height) {
            *slot = node;
            // SAFETY: a published node is live while the writer (its only
            // unlinker) runs.
            let n = unsafe { node.internal() };
            let i = match path_child(n, s, e) {
                Some(i) => i,
                None => return false,
            };
            slots[d] = i as u8;
            node = n.child[i].get();
        }
        // SAFETY: as above.
        let leaf = unsafe { node.leaf() };
        let len = leaf.len();
        // Slots lo..hi meet [s, e); only lo can keep a piece below s, only
        // hi - 1 a piece above e.
        let lo = count_le(&leaf.end, s);
        let hi = count_lt(&leaf.start, e);
        if new.is_none() && lo == hi {
            // Erasing where nothing is stored: the tree stays as it is.
            return true;
        }
        let left = lo < hi && leaf.start[lo] < s;
        let right = lo < hi && leaf.end[hi - 1] > e;
        // The new leaf: slots ..lo, the piece below s, the new range, the
        // piece above e, slots hi.. (moved to `mid_end`..).
        let mid_end = lo + usize::from(left) + usize::from(new.is_some()) + usize::from(right);
        let count = mid_end + (len - hi);
        if count > B || count < if height == 0 { 1 } else { MIN } {
            return false;
        }
        let cache = &mut token.cache;
        let (new_leaf, d) = NodePtr::<T>::alloc_leaf(cache);
        for j in 0..B {
            // Slot j of the new leaf comes from slot `from` of the old one
            // (the middle slots are overwritten below).
            let from = if j < mid_end { j } else { j - mid_end + hi };
            if from < len {
                (d.start[j], d.end[j], d.val[j]) =
                    (leaf.start[from], leaf.end[from], leaf.val[from]);
            }
        }
        // Slots lo..hi lose their values, but for the pieces kept.
        let (mut drop_lo, mut drop_hi) = (lo, hi);
        let mut k = lo;
        if left {
            (d.start[k], d.end[k], d.val[k]) = (leaf.start[lo], s, leaf.val[lo]);
            drop_lo += 1;
            k += 1;
        }
        if let Some(p) = new {
            (d.start[k], d.end[k], d.val[k]) = (s, e, p);
            k += 1;
        }
        if right {
            let v = if left && lo == hi - 1 {
                // SAFETY: a value of a published leaf is live (see above).
                Box::into_raw(Box::new(unsafe { &*leaf.val[lo] }.clone())) as *const T
            } else {
                drop_hi -= 1;
                leaf.val[hi - 1]
            };
            (d.start[k], d.end[k], d.val[k]) = (e, leaf.end[hi - 1], v);
        }
        let (mut first, mut last, mut gap) = (d.start[0], d.end[count - 1], d.inner_gap_of(count));
        let mut child = new_leaf;
        // Copy the path bottom-up, each copy pointing at the one below, until
        // a level whose slot for the copy below keeps its first start, last
        // end and inner gap: there, the copy is published in place.
        let mut depth = height;
        while depth > 0 {
            let i = usize::from(slots[depth - 1]);
            // SAFETY: as above.
            let old = unsafe { nodes[depth - 1].internal() };
            if (old.start[i], old.end[i], old.gap[i]) == (first, last, gap) {
                break;
            }
            depth -= 1;
            let (copy, c) = NodePtr::copy_internal(cache, old);
            (c.start[i], c.end[i], c.gap[i]) = (first, last, gap);
            c.child[i] = Child::new(child);
            // (Computed from the old node: reading the fresh copy right after
            // the block copy would stall on store forwarding.)
            (first, last, gap) = old.summary_with(i, first, last, gap);
            child = copy;
        }
        if depth == 0 {
            // Release: as in `splice`.
            self.root.store(child.raw(), Ordering::Release);
        } else {
            // SAFETY: as above; the writer is the only one that changes child
            // pointers of published nodes.
            let parent = unsafe { nodes[depth - 1].internal() };
            parent.child[usize::from(slots[depth - 1])].publish(child);
        }
        self.account(count as isize - len as isize, 0, 0);
        let values = drop_hi.saturating_sub(drop_lo);
        let garbage = if depth == height && values <= 1 {
            Garbage::Leaf(LeafGarbage {
                leaf: node,
                value: if values == 1 {
                    leaf.val[drop_lo]
                } else {
                    std::ptr::null()
                },
            })
        } else {
            Garbage::Path(PathGarbage {
                record: record_path(
                    cache,
                    &nodes[depth..height],
                    node,
                    &leaf.val[drop_lo..drop_hi.max(drop_lo)],
                ),
                _values: PhantomData,
            })
        };
        self.retire(token, garbage);
        true
    }

    #[cfg(not(loom))]
    fn retire(&self, token: &mut WriteToken, garbage: Garbage<T>) {
        let guard = sync::pin();
        // One deferred closure per write, each small enough (three words) for
        // the collector to store without an allocation.
        match garbage {
            Garbage::Leaf(g) => sync::defer_drop(&guard, g),
            Garbage::Path(g) => sync::defer_drop(&guard, g),
            Garbage::List(g) => sync::defer_drop(&guard, g),
        }
        // Left alone, the collector keeps a thread's garbage until 64 closures
        // fill its bag and then for two more of its collections (one per 128
        // pins): hundreds of writes' worth of nodes, cold by the time they
        // come back through the pool. Handing the bag over more often keeps
        // the recycled nodes in cache.
        token.retired = token.retired.wrapping_add(1);
        if token.retired.is_multiple_of(FLUSH_EVERY) {
            guard.flush();
        }
    }

    /// Under loom: the model collector of `sync.rs` frees the garbage once no
    /// thread is pinned.
    #[cfg(loom)]
    fn retire(&self, token: &mut WriteToken, garbage: Garbage<T>) {
        let _ = token;
        let guard = sync::pin();
        match garbage {
            Garbage::Leaf(g) => sync::defer_drop(&guard, g),
            Garbage::Path(g) => sync::defer_drop(&guard, g),
            Garbage::List(g) => sync::defer_drop(&guard, g),
        }
    }
}

/// A record of what a single-path write replaced: the old internal nodes
/// `path`, the old `leaf`, and the `values` whose ranges vanished.
fn record_path<T>(
    cache: &mut Cache,
    path: &[NodePtr<T>],
    leaf: NodePtr<T>,
    values: &[*const T],
) -> *mut Record {
    let record = Record::alloc(cache);
    let nodes = path.len() + 1;
    // SAFETY: a fresh record, ours alone; the words written fit (see
    // `PATH_DEPTH`).
    unsafe {
        let w = record as *mut usize;
        w.write(nodes | values.len() << 8);
        for (k, n) in path.iter().chain([&leaf]).enumerate() {
            w.add(1 + k).write(n.raw());
        }
        for (k, &v) in values.iter().enumerate() {
            w.add(1 + nodes + k).write(v as usize);
        }
    }
    record
}

/// The child of `n` a single-path write of `[s, e)` goes down: the one child
/// that `[s, e)` meets, or if it meets none, the one whose span or following
/// gap `s` falls in (child 0 if `s` is below all). `None` when `[s, e)` meets
/// two children or more.
#[inline(always)]
fn path_child<T>(n: &InternalData<T>, s: u64, e: u64) -> Option<usize> {
    // The common case, with one key search: `[s, e)` ends before the next
    // child starts (an unused slot starts at `PAD`, above every end).
    let i = count_le(&n.start, s).saturating_sub(1);
    if i + 1 >= B || e <= n.start[i + 1] {
        return Some(i);
    }
    // Children meeting [s, e): first..last.
    let first = count_le(&n.end, s);
    let last = count_lt(&n.start, e);
    (last - first == 1).then_some(first)
}

/// Packs the root's replacement items into a root, adding levels while they
/// exceed one node and removing them while the root has a single child.
/// Returns the new root and its height.
fn grow_or_shrink<T: Clone>(
    sp: &mut Splice<'_, T>,
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
        let fill = sp.fill(&items);
        items = pack::<T>(sp.cache, &items, h == 0, fill);
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
        if n.len() > 1 {
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
    let root = build::<T>(sp.cache, &items, h == 0);
    sp.count_node(NodePtr::from_raw(root.ptr), 1);
    (NodePtr::from_raw(root.ptr), h)
}
