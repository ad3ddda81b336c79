//! Synchronization: the one place that states the global lock order.
//!
//! ```text
//! writer queue (AddressSpace::writers, a ticket lock: writers in arrival order)
//! └─ address-space lock (AddressSpace::lock, rwlock; "mmap lock")
//!   VMA write marks (Vma::write_lock, taken by the holder of the write lock,
//!   │                 several at once, in any order: they never block each
//!   │                 other, they only wait for faults that hold no lock)
//!   └─ VMA read lock (a fault; never held while waiting for anything but a
//!      │             PTE lock, the page-cache fill lock, or the MMU-notifier
//!      │             callbacks of its copy-on-write break)
//!      ├─ page-cache fill lock (File::fill; not for slow stores: faults drop
//!      │  │                    their locks before reading those)
//!      │  └─ frame free list
//!      ├─ PTE lock (one per last-level table; mremap holds two, the lower
//!      │  │        address first)
//!      │  └─ frame free lists (FrameAllocator: the steal lock, then one list;
//!      │                       `redeal`, with no frame out: all, in order)
//!      ├─ PTE lock of a fork's child (fork holds the parent's entry lock and
//!      │  then the child's, one pair at a time)
//!      └─ rmap lock (an object's mapping list, `object/mappings.rs`, an
//!         `RmapLock` of the arena's kind, `rmap_lock.rs`: taken
//!         for writing by writers when a VMA is stored or detached, and by
//!         the fault that gives a VMA its anonymous object; only frame free
//!         lists under it, except `mremap` moving a file VMA's entries,
//!         which holds the file's rmap lock for writing around the PTE locks
//!         and the shootdown of the move, as a walk does for reading)
//! reclaim gate (`reclaim.rs`: read around a run of the clock, write by
//! │             check_invariants / check_swap, under the address-space
//! │             write lock or nothing)
//! └─ frame lock (a frame's swap word, `swapcache.rs`: try-locked only,
//!    │          never waited for with a lock held; swap I/O runs with only
//!    │          it held)
//!    └─ rmap lock, taken for reading by a walk (`rmap.rs`: try_to_unmap,
//!       │         page_referenced, swap-out) with no address-space or VMA
//!       │         lock held
//!       └─ PTE lock (one at a time)
//!          └─ Cpu registry lock (the visited address space's shootdown)
//! swap-cache shard lock (`swapcache.rs`): a leaf, taken by faults under a
//!   VMA or the address-space lock (never under a PTE lock), by swap-out,
//!   and by the flush that drops a swap entry's slot reference
//! Cpu registry lock (shootdown, `tlb.rs`): a leaf, taken under the
//!   address-space lock, a VMA lock or nothing
//! a file's write-back error slot: a leaf
//! MMU-notifier callbacks (`notifier.rs`): run under whatever their caller
//!   holds (the address-space write lock, a fault's VMA read lock, a walk's
//!   rmap lock; never a PTE lock), so a callback's own locks (a mirror's
//!   table lock, `mirror.rs`) rank below all of those; they may sleep only in
//!   a blockable call. The subscriber list and each subscription's state are
//!   leaves; subscribe and unsubscribe take their mutex with nothing held
//!   and wait there for the invalidations in flight
//! a device fault (`mirror.rs`): read_begin, then the fault path as a `Cpu`'s,
//!   then the mirror's table lock with nothing else held
//! swap slot state (`swap.rs`: bitmap and reference counts, atomics, no
//!   lock): a leaf; no address-space, VMA, PTE or rmap lock is held across
//!   swap I/O (SwapDevice::read/write)
//! Write-back I/O (File::write_back) runs after the address-space lock is
//! released (Writer::drop), with no lock held but the file's write-back
//! stripe of the page (`object/file.rs`), which ranks above the rmap lock
//! (the write-protect walk runs under it) and is taken with nothing held
//! (reclaim holds only a frame reference).
//! ```
//!
//! Lock-free state and who may change it:
//!
//! * the VMA tree: read by anyone under an epoch guard; written by the holder
//!   of the address-space write lock (its write token lives inside the lock);
//! * page-table directories: set once by compare-exchange, freed with the page
//!   table; last-level slots: set once by compare-exchange, cleared by the
//!   holder of the address-space write lock when the table is unlinked
//!   (`pagetable.rs`); PTEs: written only by `pagetable.rs`, under their PTE
//!   lock, read by `Cpu`s and faults; frame mapcounts: under the PTE lock of
//!   the entry that changes;
//! * `mm_seq` (per-VMA lock sequence) and each VMA's lock word: written by
//!   the holder of the address-space write lock, read by faults (per-vma to
//!   lock, speculative to validate; `mm_seq` only when the VMA's word is not
//!   below the `Cpu`'s hint);
//! * a `Cpu`'s access-section counter: written by its thread, read by
//!   shootdowns (with `fetch_add(0)`, see `cpu.rs`);
//! * each `Cpu`'s VMA cache (`vmacache.rs`) and lock-sequence hint (`vma.rs`):
//!   touched by its own thread only.
//!
//! Documented exceptions: `fork` (`fork.rs`) write-marks every VMA of the
//! parent at once, under the parent's address-space write lock, while it
//! copies (no parent fault may run meanwhile); the child's locks are its own
//! and nothing else can reach the child before fork returns.

pub mod rmap_lock;
#[allow(unused_imports)]
pub(crate) use rmap_lock::assert_may_sleep;

// ---------------------------------------------------------------------------
// The shim: every atomic, lock and spin of the protocols comes from here, so
// that `--cfg loom` model-checks the production code (`tests/loom_vmspace.rs`). User memory (frame contents) stays on std atomics: it
// is data, not protocol.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A mutex with parking_lot's interface (no poisoning).
pub(crate) struct Mutex<T>(
    #[cfg(not(loom))] parking_lot::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

/// Guard of [`Mutex`].
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
/// Guard of [`Mutex`].
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return Mutex(parking_lot::Mutex::new(value));
        #[cfg(loom)]
        return Mutex(loom::sync::Mutex::new(value));
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.lock();
        #[cfg(loom)]
        return self.0.lock().expect("loom mutexes are not poisoned here");
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

/// A reader-writer lock with parking_lot's interface.
pub(crate) struct RwLock<T>(
    #[cfg(not(loom))] parking_lot::RwLock<T>,
    #[cfg(loom)] loom::sync::RwLock<T>,
);

/// Read guard of [`RwLock`].
#[cfg(not(loom))]
pub(crate) type RwLockReadGuard<'a, T> = parking_lot::RwLockReadGuard<'a, T>;
/// Write guard of [`RwLock`].
#[cfg(not(loom))]
pub(crate) type RwLockWriteGuard<'a, T> = parking_lot::RwLockWriteGuard<'a, T>;
/// Read guard of [`RwLock`].
#[cfg(loom)]
pub(crate) type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
/// Write guard of [`RwLock`].
#[cfg(loom)]
pub(crate) type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;

impl<T> RwLock<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return RwLock(parking_lot::RwLock::new(value));
        #[cfg(loom)]
        return RwLock(loom::sync::RwLock::new(value));
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.read();
        #[cfg(loom)]
        return self.0.read().expect("not poisoned");
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.write();
        #[cfg(loom)]
        return self.0.write().expect("not poisoned");
    }

    /// The read lock if no writer holds it now.
    pub(crate) fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
        #[cfg(not(loom))]
        return self.0.try_read();
        #[cfg(loom)]
        return self.0.try_read().ok();
    }

    /// The write lock if it is free now.
    pub(crate) fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
        #[cfg(not(loom))]
        return self.0.try_write();
        #[cfg(loom)]
        return self.0.try_write().ok();
    }
}

/// A condition variable for [`Mutex`] (parking_lot's, loom's under loom).
pub(crate) struct Condvar(
    #[cfg(not(loom))] parking_lot::Condvar,
    #[cfg(loom)] loom::sync::Condvar,
);

impl Condvar {
    pub(crate) fn new() -> Self {
        #[cfg(not(loom))]
        return Condvar(parking_lot::Condvar::new());
        #[cfg(loom)]
        return Condvar(loom::sync::Condvar::new());
    }

    /// Releases `guard`'s lock until notified, then takes it again.
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        #[cfg(not(loom))]
        {
            let mut guard = guard;
            self.0.wait(&mut guard);
            guard
        }
        #[cfg(loom)]
        return self.0.wait(guard).expect("not poisoned");
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// Releases a write lock handing it to the threads queued for it, in order
/// (readers queued behind the writer get in before the next writer), so that
/// a writer that locks again at once cannot starve the faults that fell back
/// to the lock (as Linux's rwsem hand-off avoids).
pub(crate) fn unlock_fair<T>(guard: RwLockWriteGuard<'_, T>) {
    #[cfg(not(loom))]
    parking_lot::RwLockWriteGuard::unlock_fair(guard);
    #[cfg(loom)]
    drop(guard);
}

/// Writers of one address space in arrival order (a ticket lock in front of
/// the address-space lock's write side). A waiting writer spins and yields
/// rather than sleeping, and no writer can take the lock out of turn, so a
/// thread that maps and unmaps in a tight loop cannot keep another writer
/// waiting (`docs/decisions.md`). Linux's rwsem keeps writers from
/// overtaking a waiter that has waited too long the same way (its hand-off
/// bit).
pub(crate) struct WriterQueue {
    next: AtomicU64,
    serving: AtomicU64,
}

impl WriterQueue {
    pub(crate) fn new() -> Self {
        WriterQueue {
            next: AtomicU64::new(0),
            serving: AtomicU64::new(0),
        }
    }

    /// Waits for this writer's turn.
    pub(crate) fn enter(&self) {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut spins = 0u32;
        // Acquire: pairs with `leave`'s Release (the previous writer is done).
        while self.serving.load(Ordering::Acquire) != ticket {
            spin_wait(&mut spins);
        }
    }

    /// Passes the turn to the next writer.
    pub(crate) fn leave(&self) {
        self.serving.fetch_add(1, Ordering::Release);
    }
}

/// Lets other threads run (under loom, the model checker's yield, so that
/// a retry loop lets the thread it waits for make progress).
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// One step of a wait loop: spin a little, then yield (under loom, always
/// yield, so that the model checker runs the thread being waited for).
pub(crate) fn spin_wait(spins: &mut u32) {
    *spins += 1;
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// A liveness marker embedded in objects that lockless readers reach under an
/// epoch guard (VMAs). In normal builds it is empty and free. Under loom it is
/// a model-checked cell: readers `touch` it (a read) and `Drop` writes it, so
/// loom reports any execution in which an object is freed while a reader may
/// still use it (the free does not happen after the read). It also counts the
/// live objects of the current loom execution ([`live_objects`]).
pub(crate) struct Liveness {
    #[cfg(loom)]
    cell: loom::cell::UnsafeCell<bool>,
}

// SAFETY: the cell is written only by `Drop` (`&mut self`) and read by
// `touch`; loom checks that the two never race, which is what the marker is for.
#[cfg(loom)]
unsafe impl Sync for Liveness {}

#[cfg(loom)]
loom::lazy_static! {
    static ref LIVE: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
}

impl Liveness {
    pub(crate) fn new() -> Liveness {
        #[cfg(loom)]
        LIVE.fetch_add(1, Ordering::Relaxed);
        Liveness {
            #[cfg(loom)]
            cell: loom::cell::UnsafeCell::new(true),
        }
    }

    /// A reader's use of the object.
    #[inline]
    pub(crate) fn touch(&self) {
        #[cfg(loom)]
        self.cell.with(|p| {
            // SAFETY: loom checks that no `Drop` (the only writer) runs
            // concurrently with this read; that is the property under test.
            assert!(unsafe { *p }, "use after free");
        });
    }
}

#[cfg(loom)]
impl Drop for Liveness {
    fn drop(&mut self) {
        // A VMA is freed by the last of its `std::sync::Arc`s, which loom does
        // not see: stand in for the edge from the epoch collector's drop of
        // the tree's reference (after every reader unpinned) to this drop.
        vmspace_tree::sync_with_collector();
        // SAFETY: `&mut self`; loom checks the write against readers' touches.
        self.cell.with_mut(|p| unsafe { *p = false });
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Under loom: objects with a [`Liveness`] marker (VMAs) alive in the current
/// execution.
#[cfg(loom)]
pub fn live_objects() -> usize {
    LIVE.load(Ordering::SeqCst)
}
