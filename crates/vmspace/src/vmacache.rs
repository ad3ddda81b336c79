//! The VMA cache: each `Cpu` keeps the last few VMAs its faults found, in
//! front of the tree (Linux's per-thread `vmacache`, seed 000), so that a run
//! of faults in one VMA skips the tree walk.
//!
//! # Validation
//!
//! VMAs never change in place where a fault could see it: a writer replaces
//! a VMA it changes by new ones, and marks the old one *detached* (for ever)
//! before its write section ends. So a cached VMA that contains the address
//! and is not detached is the VMA a tree lookup would return, unless a writer
//! is in its write section right now; and what follows a hit deals with that
//! writer exactly as after a tree lookup: per-vma read-locks the VMA (which
//! fails if a writer marked or detached it), speculative validates its
//! sequence count under the PTE lock.
//!
//! * A lookup never returns a detached entry.
//! * Faults use the cache while a writer runs too: what follows a hit refuses
//!   what the writer touches, and cached VMAs usually stay valid through a
//!   writer that changes other VMAs (a churning thread beside a faulting one).
//! * The address space has a generation `gen`, advanced by every writer
//!   (`space.rs`, `write_lock` and `Writer::drop`). When a cache sees a new
//!   generation, it drops its detached entries, so it
//!   keeps no replaced VMA (nor the file or object it holds) alive past the
//!   next fault after the writer that replaced it.
//!
//! Earlier, every writer flushed every cache (an entry was valid only under
//! the generation it was found under); with a thread churning mappings
//! elsewhere in the address space, the faulting thread then went back to the
//! tree after each of the churner's writes, reading the tree nodes that writer
//! had just replaced (cache misses on another core's lines). Measured with
//! `examples/churn_probe.rs same` (a faulting and a churning thread on one
//! address space), old and new builds alternating, 7 pairs: the faulter did
//! 1.5-3.3 M faults/s against 1.4-3.1 M before, more in 6 of the 7 pairs;
//! this machine's noise is of the same order, and `vmspace bench mixed_churn`
//! showed no difference beyond it.
//!
//! Validity does not depend on the generation's value, so its wrap cannot
//! give a stale hit (CVE-2018-17182 was a 32-bit sequence that wrapped into a
//! stale hit of a freed VMA; here entries are `Arc`s, never freed under the
//! cache, and checked for detachment at each hit). `tests/races.rs`
//! (`vma_cache_generation_wrap_gives_no_stale_hit`) forces a wrap.
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

    /// Whether the cache is on; drops the detached entries on a new
    /// generation `gen`.
    fn usable(&mut self, gen: u64) -> bool {
        if !self.enabled {
            return false;
        }
        if self.gen != gen {
            for e in &mut self.entries {
                if e.as_ref().is_some_and(|v| v.is_detached()) {
                    *e = None;
                }
            }
            self.gen = gen;
        }
        true
    }

    /// The index of the cached, attached VMA containing `addr`; `gen` is the
    /// current generation.
    pub(crate) fn lookup(&mut self, gen: u64, addr: u64) -> Option<usize> {
        if !self.usable(gen) {
            return None;
        }
        self.entries.iter().position(|e| {
            e.as_ref()
                .is_some_and(|v| v.start <= addr && addr < v.end && !v.is_detached())
        })
    }

    /// Caches `vma`, found in the tree under generation `gen`; returns its
    /// index, or `None` if the cache is not in use now.
    pub(crate) fn insert(&mut self, gen: u64, vma: &Arc<Vma>) -> Option<usize> {
        if !self.usable(gen) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vma::{Backing, Prot};

    fn vma(start: u64, end: u64) -> Arc<Vma> {
        Arc::new(Vma::new(
            start,
            end,
            Prot::READ_WRITE,
            false,
            Backing::Anon,
            0,
            0,
        ))
    }

    #[test]
    fn entries_survive_writers_that_leave_them_attached() {
        let mut c = VmaCache::new(true);
        let (a, b) = (vma(0x1000, 0x3000), vma(0x8000, 0x9000));
        assert_eq!(c.insert(2, &a), Some(0));
        assert_eq!(c.insert(2, &b), Some(1));
        // A writer ran (generation 2 -> 4) and replaced `b` only.
        b.detach();
        assert_eq!(c.lookup(4, 0x2000), Some(0));
        assert_eq!(c.lookup(4, 0x8000), None);
        assert!(c.entries[1].is_none(), "a detached entry is dropped");
        // While a writer runs (odd), hits are still served.
        assert_eq!(c.lookup(5, 0x1000), Some(0));
    }

    #[test]
    fn a_detached_entry_is_never_returned() {
        let mut c = VmaCache::new(true);
        let a = vma(0x1000, 0x3000);
        c.insert(6, &a);
        // Same generation (as after a wrap), but the VMA was replaced.
        a.detach();
        assert_eq!(c.lookup(6, 0x1000), None);
    }

    #[test]
    fn a_cache_that_is_off_is_never_used() {
        let mut c = VmaCache::new(false);
        let a = vma(0x1000, 0x3000);
        assert_eq!(c.insert(2, &a), None);
        assert_eq!(c.lookup(2, 0x1000), None);
    }
}
