//! The anonymous object of private mappings (Linux's `anon_vma`).
//!
//! A VMA gets one at its first anonymous fault; splits, merges and moves carry
//! it along; `fork` gives each child VMA of a VMA that has one a new object
//! whose parent is the parent VMA's. Its identity decides merges: two
//! neighbours merge only when at most one has an object or both have the same
//! one. Its frames record it as their owner (`frame.rs`, with the page's
//! `pgoff`), and it keeps the records of the attached VMAs that may map its
//! pages (`mappings.rs`): its own VMAs and those of every descendant object
//! (the chain, `rmap.rs`).

use super::mappings::{Mapping, Mappings};
use crate::frame::FrameAllocator;
use std::sync::Arc;

/// An anonymous object. Compared by identity (`Arc::ptr_eq`).
pub struct AnonObject {
    id: u64,
    /// The object of the VMA this one's VMA was forked from.
    parent: Option<Arc<AnonObject>>,
    /// The records of the attached VMAs that may map this object's pages.
    pub(crate) mappings: Mappings,
    /// The arena whose object table holds `id`.
    frames: Arc<FrameAllocator>,
}

impl std::fmt::Debug for AnonObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnonObject({})", self.id)
    }
}

impl AnonObject {
    /// A new object of the arena `frames`; `parent` is the object of the VMA
    /// a forked VMA comes from.
    pub(crate) fn new(
        frames: &Arc<FrameAllocator>,
        parent: Option<Arc<AnonObject>>,
    ) -> Arc<AnonObject> {
        Arc::new_cyclic(|weak| AnonObject {
            id: frames.objects.insert_anon(weak.clone()),
            parent,
            mappings: Mappings::new(frames),
            frames: frames.clone(),
        })
    }

    /// The object's id in its arena (unique among the arena's live objects;
    /// what its frames record as their owner).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// This object, then its parent, its parent's parent, and so on.
    pub(crate) fn chain(&self) -> impl Iterator<Item = &AnonObject> {
        std::iter::successors(Some(self), |o| o.parent.as_deref())
    }

    /// Records a VMA using this object in it and every ancestor.
    pub(crate) fn record(&self, m: Mapping) {
        for o in self.chain() {
            o.mappings.add(m);
        }
    }

    /// Forgets a VMA recorded by [`AnonObject::record`].
    pub(crate) fn forget(&self, m: Mapping) {
        for o in self.chain() {
            o.mappings.remove(m, |_| ());
        }
    }

    /// VMAs attached now that may map this object's pages (for checkers).
    pub fn mapping_count(&self) -> usize {
        self.mappings.len()
    }
}

impl Drop for AnonObject {
    fn drop(&mut self) {
        self.frames.objects.remove(self.id);
    }
}
