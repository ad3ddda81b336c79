//! The anonymous object of private mappings (Linux's `anon_vma`).
//!
//! A VMA gets one at its first anonymous fault; splits, merges and moves carry
//! it along. Its identity decides merges: two neighbours merge only when at
//! most one has an object or both have the same one. Its frames record it as
//! their owner (`frame.rs`, with the page's `pgoff`), and it keeps the
//! `pgoff` ranges of the attached VMAs that use it (`mappings.rs`): from a
//! frame, the reverse map finds the VMAs that may map it.

use super::mappings::Mappings;
use std::sync::atomic::{AtomicU64, Ordering};

/// An anonymous object. Compared by identity (`Arc::ptr_eq`).
pub struct AnonObject {
    id: u64,
    /// The `pgoff` ranges attached VMAs with this object map.
    pub(crate) mappings: Mappings,
}

impl std::fmt::Debug for AnonObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnonObject({})", self.id)
    }
}

impl AnonObject {
    /// A new object with a process-unique id (for debugging output).
    pub fn new() -> AnonObject {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        AnonObject {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            mappings: Mappings::default(),
        }
    }

    /// The object's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// VMAs attached now that use this object (for checkers).
    pub fn mapping_count(&self) -> usize {
        self.mappings.len()
    }
}

impl Default for AnonObject {
    fn default() -> Self {
        Self::new()
    }
}
