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
