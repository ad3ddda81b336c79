//! Nodes of the tree and the one representation writers build them from.
//!
//! A node is immutable from the moment it is published (reachable from the
//! root) until it is freed after a grace period, but for its child pointers
//! ([`Child`]): writers build a replacement for every node whose keys change
//! (see `write.rs`), and may swing one child pointer to a replacement child
//! with the same keys and gap. Readers therefore need no lock: whatever node
//! they reach through an acquire load of the root or of a child pointer is
//! complete.
//!
//! Layout: up to [`B`] = 16 slots per node, keys in separate arrays, each array
//! two cache lines, nodes aligned to a cache line. Slots are filled from the
//! left; an unused slot has `start == end == PAD` (`u64::MAX`, which no stored
//! range can start at), so a slot search is a branch-free count over all 16
//! keys and the slot count is the number of starts that are not `PAD`.
//!
//! A leaf slot holds a range `[start, end)` and a pointer to its boxed value
//! (384 bytes a leaf). An internal slot holds the range its child covers (first
//! start, last end), the child pointer and the largest gap strictly inside that
//! child (512 bytes); `start` and `child` come first, so a lookup touches the
//! first four lines of an internal node only.
//!
//! A [`NodePtr`] is a tagged address: bit 0 set means "leaf". Leaves sit at
//! height 0, all at the same depth.

use crate::pool::{Cache, Kind};
use crate::sync::{AtomicUsize, Ordering, Published};
use std::marker::PhantomData;

/// Slots per node.
pub(crate) const B: usize = 16;
/// Fewest slots a non-root node keeps after a write (the writer merges below
/// it). Half of `B`: it bounds the memory of a large tree, whatever the
/// writes, to under 64 bytes of nodes per range (a leaf of 384 bytes holds at
/// least 8 ranges: 48 bytes each, plus under 10 for the internal nodes).
pub(crate) const MIN: usize = B / 2;
/// `start` and `end` of an unused slot.
pub(crate) const PAD: u64 = u64::MAX;

#[repr(C)]
pub(crate) struct LeafData<T> {
    pub start: [u64; B],
    pub end: [u64; B],
    pub val: [*const T; B],
}

#[repr(C)]
pub(crate) struct InternalData<T> {
    pub start: [u64; B],
    pub child: [Child<T>; B],
    pub end: [u64; B],
    /// Largest gap between two consecutive ranges inside child `i`.
    pub gap: [u64; B],
}

/// A child pointer of an internal node: the one word of a published node
/// that a writer may change, to swing it to a replacement child whose slot
/// (first start, last end, inner gap) is the same (see `write.rs`, "Publishing
/// in place"). Release store, acquire load.
#[repr(transparent)]
pub(crate) struct Child<T> {
    raw: AtomicUsize,
    _marker: PhantomData<*const T>,
}

impl<T> Child<T> {
    pub fn new(node: NodePtr<T>) -> Self {
        Child {
            raw: AtomicUsize::new(node.raw()),
            _marker: PhantomData,
        }
    }

    /// The child. Acquire: pairs with the release of [`Child::publish`], so
    /// a child published in place is complete for the reader.
    #[inline(always)]
    pub fn get(&self) -> NodePtr<T> {
        NodePtr::from_raw(self.raw.load(Ordering::Acquire))
    }

    /// Swings the pointer to `node`, fully built before this call.
    pub fn publish(&self, node: NodePtr<T>) {
        self.raw.store(node.raw(), Ordering::Release);
    }
}

/// Unused child slots.
fn no_children<T>() -> [Child<T>; B] {
    std::array::from_fn(|_| Child::new(NodePtr::NULL))
}

pub(crate) type Leaf<T> = Published<LeafData<T>>;
pub(crate) type Internal<T> = Published<InternalData<T>>;

/// Number of keys `<= addr`: with sorted keys, the index one past the last
/// key at or below `addr`. Unused slots (`PAD`) count only when `addr == PAD`.
#[inline(always)]
pub(crate) fn count_le(keys: &[u64; B], addr: u64) -> usize {
    // Counted down from B by the keys above `addr` (the borrow of
    // `addr - key`): this form compiles to a branch-free chain of cmp/adc
    // (the obvious `sum` of `key <= addr` is turned into much slower vector code).
    let mut c = B;
    for &k in keys {
        c -= usize::from(addr.overflowing_sub(k).1);
    }
    c
}

/// Number of keys `< addr`; unused slots (`PAD`) never count.
#[inline(always)]
pub(crate) fn count_lt(keys: &[u64; B], addr: u64) -> usize {
    match addr.checked_sub(1) {
        Some(below) => count_le(keys, below),
        None => 0,
    }
}

/// Number of used slots of a node whose starts are `starts`.
#[inline(always)]
pub(crate) fn used(starts: &[u64; B]) -> usize {
    count_le(starts, PAD - 1)
}

impl<T> LeafData<T> {
    /// An empty leaf (every slot unused).
    pub fn empty() -> Self {
        LeafData {
            start: [PAD; B],
            end: [PAD; B],
            val: [std::ptr::null(); B],
        }
    }

    pub fn len(&self) -> usize {
        used(&self.start)
    }

    /// Largest gap between two consecutive ranges of the first `len` slots
    /// (the used ones).
    #[inline]
    pub fn inner_gap_of(&self, len: usize) -> u64 {
        let mut g = 0;
        for i in 1..len.min(B) {
            g = g.max(self.start[i] - self.end[i - 1]);
        }
        g
    }
}

impl<T> InternalData<T> {
    pub fn len(&self) -> usize {
        used(&self.start)
    }

    /// (first start, last end, inner gap) of this node with used slot `i`
    /// changed to `start, end, gap`.
    #[inline]
    pub fn summary_with(&self, i: usize, start: u64, end: u64, gap: u64) -> (u64, u64, u64) {
        let len = self.len();
        let s = |j: usize| if j == i { start } else { self.start[j] };
        let e = |j: usize| if j == i { end } else { self.end[j] };
        let mut g = gap;
        for j in 0..B {
            if j != i {
                g = g.max(self.gap[j]);
            }
            if j > 0 && j < len {
                g = g.max(s(j) - e(j - 1));
            }
        }
        (s(0), e(len - 1), g)
    }
}

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

    /// Allocates a leaf.
    #[inline]
    pub fn new_leaf(cache: &mut Cache, data: LeafData<T>) -> Self {
        Self::from_raw(alloc_node(cache, Kind::Leaf, Leaf::new(data)) as usize | 1)
    }

    /// Allocates an empty leaf, to be filled through the returned reference
    /// before it is published (built in its block, not moved there).
    #[inline]
    pub fn alloc_leaf<'a>(cache: &mut Cache) -> (Self, &'a mut LeafData<T>) {
        #[cfg(not(loom))]
        let raw = {
            let block = cache.alloc(Kind::Leaf, leaf_layout()) as *mut Leaf<T>;
            // `Published` is a transparent wrapper: the block is a `LeafData`.
            let d = block as *mut LeafData<T>;
            // SAFETY: a fresh block with the layout of a leaf; each field is
            // written whole (as an empty leaf) before any reference to it exists.
            unsafe {
                std::ptr::addr_of_mut!((*d).start).write([PAD; B]);
                std::ptr::addr_of_mut!((*d).end).write([PAD; B]);
                std::ptr::addr_of_mut!((*d).val).write([std::ptr::null(); B]);
            }
            block
        };
        #[cfg(loom)]
        let raw = {
            let _ = cache;
            Box::into_raw(Box::new(Leaf::new(LeafData::empty())))
        };
        // SAFETY: fresh and unpublished: nobody else can reach it for 'a (the
        // caller publishes it only after its last use of the reference).
        (Self::from_raw(raw as usize | 1), unsafe {
            (*raw).get_mut()
        })
    }

    /// Allocates an internal node.
    #[inline]
    pub fn new_internal(cache: &mut Cache, data: InternalData<T>) -> Self {
        Self::from_raw(alloc_node(cache, Kind::Internal, Internal::new(data)) as usize)
    }

    /// Allocates a copy of a live internal node, to be changed through the
    /// returned reference before it is published.
    #[inline]
    pub fn copy_internal<'a>(
        cache: &mut Cache,
        src: &InternalData<T>,
    ) -> (Self, &'a mut InternalData<T>) {
        #[cfg(not(loom))]
        let raw = {
            let block = cache.alloc(Kind::Internal, internal_layout()) as *mut Internal<T>;
            // SAFETY: `block` is fresh memory for one node; `Internal<T>` is a
            // transparent wrapper of plain data (integers and pointers), so a
            // bitwise copy is a valid node.
            unsafe {
                std::ptr::copy_nonoverlapping(src as *const _ as *const Internal<T>, block, 1)
            };
            block
        };
        #[cfg(loom)]
        let raw = {
            let _ = cache;
            Box::into_raw(Box::new(Internal::new(InternalData {
                start: src.start,
                child: std::array::from_fn(|i| Child::new(src.child[i].get())),
                end: src.end,
                gap: src.gap,
            })))
        };
        // SAFETY: fresh and unpublished: nobody else can reach it for 'a (the
        // caller publishes it only after its last use of the reference).
        (Self::from_raw(raw as usize), unsafe { (*raw).get_mut() })
    }

    /// # Safety
    /// `self` is a live leaf: reachable from a root loaded under a guard that
    /// is still held (or owned by the writer and not yet freed), for `'a`.
    #[inline(always)]
    pub unsafe fn leaf<'a>(self) -> &'a LeafData<T> {
        debug_assert!(self.is_leaf());
        // SAFETY: the caller guarantees the leaf is live for 'a; bit 0 is the tag.
        unsafe { (*((self.raw & !1) as *const Leaf<T>)).get() }
    }

    /// # Safety
    /// As for [`NodePtr::leaf`], for an internal node.
    #[inline(always)]
    pub unsafe fn internal<'a>(self) -> &'a InternalData<T> {
        debug_assert!(!self.is_leaf() && !self.is_null());
        // SAFETY: the caller guarantees the node is live for 'a.
        unsafe { (*(self.raw as *const Internal<T>)).get() }
    }

    /// Slot count of a live node.
    ///
    /// # Safety
    /// As for [`NodePtr::leaf`].
    pub unsafe fn len(self) -> usize {
        if self.is_leaf() {
            // SAFETY: live per caller.
            unsafe { self.leaf() }.len()
        } else {
            // SAFETY: live per caller.
            unsafe { self.internal() }.len()
        }
    }

    /// Frees this node alone (not its children, not its values).
    ///
    /// # Safety
    /// No reader can reach the node any more (a grace period has passed since it
    /// was unlinked, or it was never published), and it is freed only once.
    pub unsafe fn free_shallow(self) {
        #[cfg(not(loom))]
        // SAFETY: allocated by `alloc_node` or `copy_internal` for its kind;
        // unused from now on per the caller. Nodes need no drop.
        unsafe {
            if self.is_leaf() {
                crate::pool::free(Kind::Leaf, (self.raw & !1) as *mut u8);
            } else {
                crate::pool::free(Kind::Internal, self.raw as *mut u8);
            }
        }
        #[cfg(loom)]
        // SAFETY: allocated by `Box::into_raw` in `alloc_node` or
        // `copy_internal`; unreachable per caller.
        unsafe {
            if self.is_leaf() {
                drop(Box::from_raw((self.raw & !1) as *mut Leaf<T>));
            } else {
                drop(Box::from_raw(self.raw as *mut Internal<T>));
            }
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
            for &v in &leaf.val[..leaf.len()] {
                // SAFETY: each value pointer came from `Box::into_raw` and is owned by this slot.
                drop(unsafe { Box::from_raw(v as *mut T) });
                values += 1;
            }
        } else {
            // SAFETY: as above.
            let node = unsafe { self.internal() };
            for c in &node.child[..node.len()] {
                // SAFETY: children of an unreachable subtree are unreachable too.
                values += unsafe { c.get().free_deep() };
            }
        }
        // SAFETY: the node itself is unreachable and freed once, here.
        unsafe { self.free_shallow() };
        values
    }
}

/// Nodes (and garbage records) being freed together: one push to the shared
/// pool per kind.
#[derive(Default)]
pub(crate) struct FreeChain {
    #[cfg(not(loom))]
    leaves: crate::pool::Chain,
    #[cfg(not(loom))]
    internals: crate::pool::Chain,
}

impl FreeChain {
    /// Adds a node to be freed by [`FreeChain::free`].
    ///
    /// # Safety
    /// As for [`NodePtr::free_shallow`].
    pub unsafe fn push<T>(&mut self, node: NodePtr<T>) {
        #[cfg(not(loom))]
        // SAFETY: per the caller; allocated for its kind by `alloc_node` or
        // `copy_internal`.
        unsafe {
            if node.is_leaf() {
                self.leaves.push((node.raw() & !1) as *mut u8);
            } else {
                self.internals.push(node.raw() as *mut u8);
            }
        }
        #[cfg(loom)]
        // SAFETY: per the caller.
        unsafe {
            node.free_shallow()
        };
    }

    /// Adds a record to be freed by [`FreeChain::free`].
    ///
    /// # Safety
    /// `record` came from [`Record::alloc`] and nothing uses it any more.
    pub unsafe fn push_record(&mut self, record: *mut Record) {
        #[cfg(not(loom))]
        // SAFETY: per the caller: a leaf-kind block.
        unsafe {
            self.leaves.push(record as *mut u8)
        };
        #[cfg(loom)]
        // SAFETY: per the caller: allocated by `Box::into_raw`.
        drop(unsafe { Box::from_raw(record) });
    }

    /// Frees what was pushed.
    pub fn free(self) {
        #[cfg(not(loom))]
        {
            self.leaves.free(Kind::Leaf);
            self.internals.free(Kind::Internal);
        }
    }
}

/// Words in a [`Record`]: it fills a leaf-sized block.
pub(crate) const RECORD_WORDS: usize = 48;

/// A block of words in which a write records what it unlinked, for the
/// collector to free after a grace period; it takes a block of the leaf kind.
#[repr(C)]
pub(crate) struct Record {
    pub words: [usize; RECORD_WORDS],
}

impl Record {
    /// A record with unspecified contents: write a word before reading it.
    pub fn alloc(cache: &mut Cache) -> *mut Record {
        #[cfg(not(loom))]
        {
            const { assert!(std::mem::size_of::<Record>() == std::mem::size_of::<Leaf<()>>()) };
            cache.alloc(Kind::Leaf, leaf_layout()) as *mut Record
        }
        #[cfg(loom)]
        {
            let _ = cache;
            Box::into_raw(Box::new(Record {
                words: [0; RECORD_WORDS],
            }))
        }
    }
}

/// Layout of every leaf, whatever `T`.
#[cfg(not(loom))]
pub(crate) fn leaf_layout() -> std::alloc::Layout {
    std::alloc::Layout::new::<Leaf<()>>()
}

/// Layout of every internal node, whatever `T`.
#[cfg(not(loom))]
pub(crate) fn internal_layout() -> std::alloc::Layout {
    std::alloc::Layout::new::<Internal<()>>()
}

/// Moves `node` into a fresh block of `kind`.
#[inline]
fn alloc_node<N>(cache: &mut Cache, kind: Kind, node: N) -> *mut N {
    #[cfg(not(loom))]
    {
        let layout = match kind {
            Kind::Leaf => leaf_layout(),
            Kind::Internal => internal_layout(),
        };
        assert!(std::alloc::Layout::new::<N>() == layout);
        let block = cache.alloc(kind, layout) as *mut N;
        // SAFETY: a fresh block with the layout of `N`.
        unsafe { block.write(node) };
        block
    }
    #[cfg(loom)]
    {
        let _ = (cache, kind);
        Box::into_raw(Box::new(node))
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
        (0..self.len()).map(move |i| Item {
            start: self.start[i],
            end: self.end[i],
            gap: 0,
            ptr: self.val[i] as usize,
        })
    }
}

impl<T> InternalData<T> {
    pub fn items(&self) -> impl Iterator<Item = Item> + '_ {
        (0..self.len()).map(move |i| Item {
            start: self.start[i],
            end: self.end[i],
            gap: self.gap[i],
            ptr: self.child[i].get().raw(),
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
pub(crate) fn build<T>(cache: &mut Cache, items: &[Item], leaf: bool) -> Item {
    debug_assert!(!items.is_empty() && items.len() <= B);
    let ptr = if leaf {
        let mut d = LeafData::empty();
        for (i, it) in items.iter().enumerate() {
            d.start[i] = it.start;
            d.end[i] = it.end;
            d.val[i] = it.ptr as *const T;
        }
        NodePtr::new_leaf(cache, d)
    } else {
        let mut d = InternalData::<T> {
            start: [PAD; B],
            child: no_children(),
            end: [PAD; B],
            gap: [0; B],
        };
        for (i, it) in items.iter().enumerate() {
            d.start[i] = it.start;
            d.end[i] = it.end;
            d.gap[i] = it.gap;
            d.child[i] = Child::new(NodePtr::from_raw(it.ptr));
        }
        NodePtr::new_internal(cache, d)
    };
    Item {
        start: items[0].start,
        end: items[items.len() - 1].end,
        gap: inner_gap(items),
        ptr: ptr.raw(),
    }
}

/// How [`pack`] sizes the nodes it makes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Fill {
    /// Sizes as equal as can be (each at least half full when more than one).
    Even,
    /// Every node full but the last, which keeps at least `MIN` slots: for
    /// writes at the end of the items (ascending appends), which leave the
    /// full nodes alone afterwards.
    Left,
    /// The mirror image: every node full but the first (descending writes).
    Right,
    /// For nodes merged because one fell under `MIN`: as `Even`, but into two
    /// nodes (of at least `MIN` each) rather than one as soon as there are
    /// `2 * MIN` items. A single full node would split again at the next
    /// insert, into a node of `MIN` that the next erase merges again: with
    /// `MIN = B / 2` every store + erase pair in that node would restructure.
    Merge,
}

/// Packs items into as few nodes as fit, sized per `fill`, and returns the
/// parent slots for them.
pub(crate) fn pack<T>(cache: &mut Cache, items: &[Item], leaf: bool, fill: Fill) -> Vec<Item> {
    let n = items.len();
    if n == 0 {
        return Vec::new();
    }
    let nodes = match fill {
        Fill::Merge if n >= 2 * MIN => n.div_ceil(B).max(2),
        _ => n.div_ceil(B),
    };
    let (base, extra) = (n / nodes, n % nodes);
    // The size of the one partial node at the uneven end, taking from its
    // neighbour what it lacks of MIN.
    let rest = n - B * (nodes - 1);
    let short = MIN.saturating_sub(rest);
    let mut out = Vec::with_capacity(nodes);
    let mut at = 0;
    for k in 0..nodes {
        let take = match fill {
            _ if nodes == 1 => n,
            Fill::Even | Fill::Merge => base + usize::from(k < extra),
            Fill::Left if k == nodes - 1 => rest + short,
            Fill::Left if k == nodes - 2 => B - short,
            Fill::Right if k == 0 => rest + short,
            Fill::Right if k == 1 => B - short,
            Fill::Left | Fill::Right => B,
        };
        out.push(build::<T>(cache, &items[at..at + take], leaf));
        at += take;
    }
    debug_assert_eq!(at, n);
    out
}
