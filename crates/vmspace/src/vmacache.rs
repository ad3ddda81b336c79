//! The VMA cache: each `Cpu` keeps the last few VMAs its faults found, in
//! front of the tree (Linux's per-thread `vmacache`, seed 000), so that a run
//! of faults in one VMA skips the tree walk.
//!
//! # Validation
//!
//! The address space has a generation `gen` (in [`CpuRegistry`]): a writer
//! makes it odd when it takes the address-space lock for writing and even
//! again when it releases it (`space.rs`, `write_lock` and `Writer::drop`).
//! A cache remembers the generation its entries were found under; an entry is
//! used only while the generation is still that same even value, so a hit
//! returns what a tree lookup would have returned with no writer between the
//! fill and now. While a writer runs (odd), the cache is bypassed. What
//! follows a hit is the same as after a tree lookup: per-vma read-locks the
//! VMA (which fails if a writer marked or detached it), speculative validates
//! its sequence under the PTE lock.
//!
//! The generation is a `u64` compared for equality: it would take 2^63
//! writers for it to come back to a value a cache holds (CVE-2018-17182 was a
//! 32-bit sequence that wrapped into a stale hit). A cache is also flushed
//! whenever it sees a different generation, so nothing survives a wrap.
//! `tests/races.rs` (`vma_cache_generation_wrap_gives_no_stale_hit`) forces one.
//!
//! Locks: none. A cache belongs to one `Cpu` (a `RefCell` in the `Cpu`, which
//! is not `Sync`); `gen` is an atomic written by the holder of the
//! address-space write lock. The cached `Arc`s keep detached VMAs alive until
//! the entry is replaced or flushed (a few VMAs per `Cpu`).
//!
//! [`CpuRegistry`]: crate::cpu::CpuRegistry

use crate::sync::{AtomicU64, Ordering};
use crate::vma::Vma;
use std::sync::Arc;

/// Entries per `Cpu`.
pub(crate) const ENTRIES: usize = 4;

/// One `Cpu`'s cache.
pub(crate) struct VmaCache {
    /// The generation the entries were found under.
    gen: u64,
    entries: [Option<Arc<Vma>>; ENTRIES],
    /// Next entry to replace (round robin).
    next: usize,
    /// Whether lookups use the cache.
    pub(crate) enabled: bool,
}

impl VmaCache {
    pub(crate) fn new(enabled: bool) -> VmaCache {
        VmaCache {
            gen: 0,
            entries: Default::default(),
            next: 0,
            enabled,
        }
    }

    /// Makes the cache valid for generation `gen` (flushing it if it was
    /// filled under another); `false` if the cache must not be used now (a
    /// writer is running, or the cache is off).
    fn validate(&mut self, gen: u64) -> bool {
        if !self.enabled || gen & 1 == 1 {
            return false;
        }
        if self.gen != gen {
            self.entries = Default::default();
            self.gen = gen;
        }
        true
    }

    /// The index of the cached VMA containing `addr` under generation `gen`.
    pub(crate) fn lookup(&mut self, gen: u64, addr: u64) -> Option<usize> {
        if !self.validate(gen) {
            return None;
        }
        self.entries
            .iter()
            .position(|e| e.as_ref().is_some_and(|v| v.start <= addr && addr < v.end))
    }

    /// Caches `vma`, found under generation `gen`; returns its index, or
    /// `None` if the cache is not in use now.
    pub(crate) fn insert(&mut self, gen: u64, vma: &Arc<Vma>) -> Option<usize> {
        if !self.validate(gen) {
            return None;
        }
        let i = self.next;
        self.next = (i + 1) % ENTRIES;
        self.entries[i] = Some(vma.clone());
        Some(i)
    }

    /// The VMA at `index` (from `lookup` or `insert`).
    pub(crate) fn get(&self, index: usize) -> &Arc<Vma> {
        self.entries[index].as_ref().expect("a filled entry")
    }
}

/// The generation of an address space (see the module documentation).
pub(crate) struct Generation(AtomicU64);

impl Generation {
    pub(crate) fn new() -> Generation {
        Generation(AtomicU64::new(0))
    }

    /// The current generation (Acquire: a fault that sees a writer's final
    /// even value sees its tree changes).
    pub(crate) fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// A writer starts: odd. SeqCst RMW, then a SeqCst fence: ordered before
    /// the writer's tree changes, as a seqcount's write side.
    pub(crate) fn begin_write(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        crate::sync::fence(Ordering::SeqCst);
    }

    /// A writer is done: even again (Release: its changes happen before).
    pub(crate) fn end_write(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// Test hook: sets the generation (only with no writer running).
    pub(crate) fn set(&self, gen: u64) {
        self.0.store(gen & !1, Ordering::SeqCst);
    }
}
