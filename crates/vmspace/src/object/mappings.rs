//! The mappings of an object: the reverse map's records (`rmap.rs`), kept by
//! every object that backs VMAs ([`crate::File`] and [`crate::AnonObject`]).
//! Each attached VMA backed by the object has one [`Mapping`]: its address
//! space, its start address and the range `[first, end)` of the object's page
//! index it maps (a file's page offsets; an anonymous object's `pgoff`s, as
//! Linux's `anon_vma` interval tree).
//!
//! The writer records a VMA before the VMA becomes visible to faults
//! (`Writer::insert`, or the fault that gives a VMA its anonymous object,
//! under that VMA's lock) and forgets it when the VMA is detached; it always
//! records the replacement of a VMA before detaching it, so a split or merge
//! never shows a gap. Records are values: two VMAs with the same record (a
//! replacement and the VMA it replaces) are two equal entries, and forgetting
//! one removes one of them.
//!
//! Locks: the list's lock is the rmap lock (an `RmapLock` of the arena's
//! kind, `sync/rmap_lock.rs`). Writers take it for writing under
//! the address-space lock (and a fault under its VMA lock); walks take it for
//! reading with no address-space lock, and take PTE locks under it (see
//! `sync`).

use crate::frame::FrameAllocator;
use crate::space::AddressSpace;
use crate::sync::rmap_lock::RmapLock;

/// One attached VMA's record (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// The VMA's address space (see `rmap.rs`, "Safety of a record's
    /// address-space pointer").
    space: *const AddressSpace,
    /// The VMA's first address.
    start: u64,
    /// The page index the VMA maps at `start`.
    first: u64,
    /// One past the last page index it maps.
    end: u64,
}

// SAFETY: the pointer is only dereferenced by `Mappings::for_each_at`, under
// the list's lock, while the address space is alive (see `rmap.rs`); it is
// compared, never dereferenced, elsewhere.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// The record of a VMA of `space` at `start` mapping indexes
    /// `[first, end)`.
    pub(crate) fn new(space: &AddressSpace, start: u64, first: u64, end: u64) -> Mapping {
        Mapping {
            space,
            start,
            first,
            end,
        }
    }

    /// The address that maps page `index`, if this record covers it.
    fn address_of(&self, index: u64) -> Option<u64> {
        (self.first..self.end)
            .contains(&index)
            .then(|| self.start + (index - self.first) * crate::PAGE_SIZE)
    }

    /// Whether this record belongs to `space` and covers `addr`.
    pub(crate) fn covers(&self, space: &AddressSpace, addr: u64, index: u64) -> bool {
        std::ptr::eq(self.space, space) && self.address_of(index) == Some(addr)
    }
}

/// See the module documentation.
pub(crate) struct Mappings(RmapLock<Vec<Mapping>>);

impl Mappings {
    /// An empty list locked by the rmap lock kind of `frames`.
    pub(crate) fn new(frames: &FrameAllocator) -> Mappings {
        Mappings(RmapLock::new(
            frames.rmap_lock_kind(),
            frames.rmap_counters.clone(),
            Vec::new(),
        ))
    }

    /// An attached VMA is recorded.
    pub(crate) fn add(&self, m: Mapping) {
        self.0.write().push(m);
    }

    /// The VMA recorded as `m` was detached; `then` runs with the remaining
    /// records, under the lock (so no mapping is added meanwhile).
    pub(crate) fn remove<R>(&self, m: Mapping, then: impl FnOnce(&[Mapping]) -> R) -> R {
        let mut list = self.0.write();
        if let Some(i) = list.iter().position(|r| *r == m) {
            list.swap_remove(i);
        }
        then(&list)
    }

    /// Holds the lock for writing until the guard drops, so that no walk
    /// runs meanwhile (`mremap` moving entries, `remap.rs`).
    pub(crate) fn hold_off_walks(&self) -> impl Drop + '_ {
        self.0.write()
    }

    /// Calls `visit(space, addr)` for every record that covers page
    /// `index`, with the address that maps it there, under the lock.
    pub(crate) fn for_each_at(&self, index: u64, visit: &mut dyn FnMut(&AddressSpace, u64)) {
        let list = self.0.read();
        for m in list.iter() {
            if let Some(addr) = m.address_of(index) {
                // SAFETY: the record is in the list and the lock is held: its
                // address space removes its records under this lock before
                // it is freed (`rmap.rs`, "Safety of a record's address-space
                // pointer").
                let space = unsafe { &*m.space };
                visit(space, addr);
            }
        }
    }

    /// Whether some record of `space` covers page `index` at `addr` (for
    /// `check_invariants`).
    pub(crate) fn has(&self, space: &AddressSpace, addr: u64, index: u64) -> bool {
        self.0.read().iter().any(|m| m.covers(space, addr, index))
    }

    /// Records now (for checkers).
    pub(crate) fn len(&self) -> usize {
        self.0.read().len()
    }
}
