//! Node memory. Every write allocates a few nodes and, a grace period later,
//! frees as many; the collector frees them in bursts of hundreds, which the
//! system allocator handles poorly (its per-thread caches hold a handful of
//! blocks per size). So freed node blocks go to a small process-wide stack per
//! node kind (a node's size does not depend on `T`), bounded to [`CAP`]
//! blocks, and a writer takes the whole stack at once into its private cache
//! (kept in its [`crate::WriteToken`]) when that runs dry.
//!
//! The shared stacks are Treiber stacks whose only pop is `swap(0)` (take
//! all), so they have no ABA problem. A block's first word links it while it
//! is free.
//!
//! Under loom nodes are plain boxes: the model checks the tree's publication
//! protocol, not this allocator.

#[cfg(not(loom))]
use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most free blocks kept per node kind, process-wide (384 KiB of leaves and
/// 512 KiB of internal nodes at most).
#[cfg(not(loom))]
const CAP: usize = 1024;

/// The two node kinds: leaves and internal nodes.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Leaf = 0,
    Internal = 1,
}

/// A writer's private free blocks, one list per kind (0 ends a list).
#[derive(Debug, Default)]
pub(crate) struct Cache {
    #[cfg(not(loom))]
    heads: [usize; 2],
}

#[cfg(not(loom))]
struct Stack {
    head: AtomicUsize,
    count: AtomicUsize,
}

#[cfg(not(loom))]
static SHARED: [Stack; 2] = [
    Stack {
        head: AtomicUsize::new(0),
        count: AtomicUsize::new(0),
    },
    Stack {
        head: AtomicUsize::new(0),
        count: AtomicUsize::new(0),
    },
];

#[cfg(not(loom))]
impl Cache {
    /// A block for a node of `kind` with `layout` (the same layout every time
    /// for a kind).
    #[inline]
    pub(crate) fn alloc(&mut self, kind: Kind, layout: Layout) -> *mut u8 {
        let head = &mut self.heads[kind as usize];
        if *head == 0 {
            let shared = &SHARED[kind as usize];
            if shared.head.load(Ordering::Relaxed) != 0 {
                // Acquire: pairs with the Release push, so the links (and the
                // frees that preceded them) are visible.
                *head = shared.head.swap(0, Ordering::Acquire);
                shared.count.store(0, Ordering::Relaxed);
            }
        }
        if *head != 0 {
            let block = *head as *mut u8;
            // SAFETY: a block on a free list is ours alone and holds the link
            // to the next one in its first word.
            *head = unsafe { *(block as *const usize) };
            // The next block is likely out of cache: start loading it now,
            // for the next allocation.
            prefetch(*head as *const u8);
            return block;
        }
        // SAFETY: node layouts have a non-zero size.
        let block = unsafe { alloc(layout) };
        if block.is_null() {
            handle_alloc_error(layout);
        }
        block
    }
}

/// Hints the processor to load the cache line at `p` (any address, even 0).
#[cfg(not(loom))]
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not access memory architecturally, whatever the
    // address. (The intrinsic is a safe function on recent compilers.)
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(not(loom))]
impl Drop for Cache {
    fn drop(&mut self) {
        for (kind, head) in [(Kind::Leaf, self.heads[0]), (Kind::Internal, self.heads[1])] {
            let mut block = head;
            while block != 0 {
                // SAFETY: as in `alloc`.
                let next = unsafe { *(block as *const usize) };
                free_to_system(kind, block as *mut u8);
                block = next;
            }
        }
    }
}

/// Returns a block (no longer in use) to the shared stack of its kind, or to
/// the system when that is full.
///
/// # Safety
/// `block` came from [`Cache::alloc`] for `kind` and nothing uses it any more.
#[cfg(not(loom))]
pub(crate) unsafe fn free(kind: Kind, block: *mut u8) {
    let mut chain = Chain::default();
    // SAFETY: per the caller.
    unsafe { chain.push(block) };
    chain.free(kind);
}

/// Blocks of one kind being freed together, with one push to the shared stack.
#[cfg(not(loom))]
#[derive(Default)]
pub(crate) struct Chain {
    head: usize,
    tail: usize,
    count: usize,
}

#[cfg(not(loom))]
impl Chain {
    /// # Safety
    /// As for [`free`]; the chain is freed for that kind.
    pub(crate) unsafe fn push(&mut self, block: *mut u8) {
        // SAFETY: the block is ours (caller) and at least a word long.
        unsafe { *(block as *mut usize) = self.head };
        if self.head == 0 {
            self.tail = block as usize;
        }
        self.head = block as usize;
        self.count += 1;
    }

    /// Hands the blocks to the shared stack of `kind`, or to the system when
    /// that is full.
    pub(crate) fn free(self, kind: Kind) {
        if self.count == 0 {
            return;
        }
        let shared = &SHARED[kind as usize];
        // The count is a hint (a taker resets it to 0 while pushers may be
        // adding), so the stack can exceed CAP by a few chains; it is only
        // ever added to or reset, never decremented, so it cannot wrap.
        if shared.count.load(Ordering::Relaxed) >= CAP {
            let mut block = self.head;
            while block != 0 {
                // SAFETY: a block of the chain, linked by `push`.
                let next = unsafe { *(block as *const usize) };
                free_to_system(kind, block as *mut u8);
                block = next;
            }
            return;
        }
        shared.count.fetch_add(self.count, Ordering::Relaxed);
        let tail = self.tail as *mut usize;
        let mut head = shared.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the tail block is ours until the exchange succeeds.
            unsafe { *tail = head };
            // Release: the links (and whatever the caller did with the blocks)
            // happen before the taker's Acquire swap.
            match shared.head.compare_exchange_weak(
                head,
                self.head,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}

#[cfg(not(loom))]
fn free_to_system(kind: Kind, block: *mut u8) {
    let layout = match kind {
        Kind::Leaf => crate::node::leaf_layout(),
        Kind::Internal => crate::node::internal_layout(),
    };
    // SAFETY: every block of `kind` was allocated with this layout.
    unsafe { dealloc(block, layout) };
}
