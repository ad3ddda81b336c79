//! The page ranges of an object that attached VMAs map: the reverse map's
//! home in every object that backs VMAs ([`crate::File`] and
//! [`crate::AnonObject`]). Each attached VMA backed by the object has one
//! entry, `[first, end)` in the object's page index (a file's page offsets;
//! an anonymous object's `pgoff`s, as Linux's `anon_vma` interval tree).
//!
//! The writer adds a VMA's range before the VMA becomes visible to faults
//! (`Writer::insert`, or the fault that gives a VMA its anonymous object,
//! under that VMA's lock) and removes it when the VMA is detached; it always
//! stores the replacement of a VMA before detaching it, so a split or merge
//! never shows a gap.
//!
//! Locks: one mutex, a leaf except for what `File` does under it (see
//! `sync`); held for a scan of the entries (one per VMA of the object).

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Mappings(parking_lot::Mutex<Vec<(u64, u64)>>);

impl Mappings {
    /// An attached VMA maps `[first, end)`.
    pub(crate) fn add(&self, first: u64, end: u64) {
        self.0.lock().push((first, end));
    }

    /// The VMA that mapped `[first, end)` was detached; `then` runs with the
    /// remaining entries, under the lock (so no mapping is added meanwhile).
    pub(crate) fn remove<R>(
        &self,
        first: u64,
        end: u64,
        then: impl FnOnce(&[(u64, u64)]) -> R,
    ) -> R {
        let mut m = self.0.lock();
        if let Some(i) = m.iter().position(|&r| r == (first, end)) {
            m.swap_remove(i);
        }
        then(&m)
    }

    /// Entries now (for checkers).
    pub(crate) fn len(&self) -> usize {
        self.0.lock().len()
    }
}
