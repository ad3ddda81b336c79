//! Synchronization: the one place that states the global lock order.
//!
//! ```text
//! address-space lock (AddressSpace::lock, rwlock; "mmap lock")
//!   VMA write marks (Vma::write_lock, taken by the holder of the write lock,
//!   │                 several at once, in any order: they never block each
//!   │                 other, they only wait for faults that hold no lock)
//!   └─ VMA read lock (a fault; never held while waiting for anything but a
//!      │             PTE lock or the page-cache fill lock)
//!      ├─ page-cache fill lock (File::fill; not for slow stores: faults drop
//!      │  │                    their locks before reading those)
//!      │  └─ frame free list
//!      └─ PTE lock (one per last-level table; mremap holds two, the lower
//!         │        address first)
//!         └─ frame free list (FrameAllocator::free)
//! Cpu registry lock (shootdown): a leaf, taken under the address-space lock
//! ```
//!
//! Lock-free state and who may change it:
//!
//! * the VMA tree: read by anyone under an epoch guard; written by the holder
//!   of the address-space write lock (its write token lives inside the lock);
//! * page-table directories: set once by compare-exchange, freed with the page
//!   table; PTEs: written under their PTE lock, read by `Cpu`s and faults;
//! * `mm_seq` (per-VMA lock sequence) and `spec_seq` (speculative sequence):
//!   written by the holder of the address-space write lock;
//! * a `Cpu`'s access-section counter: written by its thread, read by
//!   shootdowns.
//!
//! Documented exceptions: none yet (fork will write-lock every VMA of the
//! parent while copying).

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
