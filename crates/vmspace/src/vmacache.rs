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
//! fails if a writer marked or detached it), speculative validates its lock
//! word under the PTE lock.
//!
//! * A hit is validated by the VMA's own lock word (`vma.rs`): the sequence
//!   of the writer that last marked it, or `DETACHED`. No address-space-wide
//!   number takes part, so nothing can wrap into a stale hit (CVE-2018-17182
//!   was a 32-bit vmacache sequence that wrapped into a hit of a freed VMA;
//!   here entries are `Arc`s, never freed under the cache, and detachment is
//!   for ever). `tests/races.rs` (`vma_cache_never_returns_a_replaced_vma`)
//!   replaces a cached VMA by one of the same range across the 32-bit
//!   boundary of the lock sequence.
//! * Each lookup drops the detached entries it passes over (it looks at all
//!   of them), so a cache keeps no replaced VMA (nor the file or object it
//!   holds) alive past the `Cpu`'s next fault after the writer that replaced
//!   it.
//! * Faults use the cache while a writer runs too, and entries survive writers
//!   that leave them attached (a thread churning mappings elsewhere in the
//!   address space).
//!
//! No generation number: validating by the VMA's own lock word means no
//! fault reads a word that every writer writes (`docs/decisions.md`).
//!
//! Locks: none. A cache belongs to one `Cpu` (a `RefCell` in the `Cpu`, which
//! is not `Sync`). The cached `Arc`s keep detached VMAs alive until the next
//! lookup or until the entry is replaced (a few VMAs per `Cpu`).

use crate::vma::Vma;
use std::sync::Arc;

/// Entries per `Cpu`.
pub(crate) const ENTRIES: usize = 4;

/// One `Cpu`'s cache.
pub(crate) struct VmaCache {
    entries: [Option<Arc<Vma>>; ENTRIES],
    /// Next entry to replace (round robin).
    next: usize,
    /// Whether lookups use the cache.
    pub(crate) enabled: bool,
}

impl VmaCache {
    pub(crate) fn new(enabled: bool) -> VmaCache {
        VmaCache {
            entries: Default::default(),
            next: 0,
            enabled,
        }
    }

    /// The index of the cached, attached VMA containing `addr`; drops the
    /// detached entries.
    #[inline(always)]
    pub(crate) fn lookup(&mut self, addr: u64) -> Option<usize> {
        if !self.enabled {
            return None;
        }
        let mut found = None;
        for (i, e) in self.entries.iter_mut().enumerate() {
            let Some(v) = e else { continue };
            if v.is_detached() {
                *e = None;
            } else if v.start <= addr && addr < v.end {
                found = Some(i);
            }
        }
        found
    }

    /// Caches `vma`, found in the tree; returns its index, or `None` if the
    /// cache is off.
    pub(crate) fn insert(&mut self, vma: &Arc<Vma>) -> Option<usize> {
        if !self.enabled {
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
        assert_eq!(c.insert(&a), Some(0));
        assert_eq!(c.insert(&b), Some(1));
        // A writer replaced `b` only.
        b.detach_for_test();
        assert_eq!(c.lookup(0x2000), Some(0));
        assert!(c.entries[1].is_none(), "a detached entry is dropped");
        assert_eq!(c.lookup(0x8000), None);
    }

    #[test]
    fn a_lookup_drops_every_detached_entry() {
        let mut c = VmaCache::new(true);
        let (a, b) = (vma(0x1000, 0x3000), vma(0x8000, 0x9000));
        c.insert(&a);
        c.insert(&b);
        b.detach_for_test();
        // A hit in `a` still drops `b`, so `b` is not kept alive.
        assert_eq!(c.lookup(0x1000), Some(0));
        assert!(c.entries[1].is_none());
        assert_eq!(Arc::strong_count(&b), 1);
    }

    #[test]
    fn a_detached_entry_is_never_returned() {
        let mut c = VmaCache::new(true);
        let a = vma(0x1000, 0x3000);
        c.insert(&a);
        a.detach_for_test();
        assert_eq!(c.lookup(0x1000), None);
    }

    #[test]
    fn a_cache_that_is_off_is_never_used() {
        let mut c = VmaCache::new(false);
        let a = vma(0x1000, 0x3000);
        assert_eq!(c.insert(&a), None);
        assert_eq!(c.lookup(0x1000), None);
    }
}
