//! The anonymous object of private mappings (Linux's `anon_vma`).
//!
//! A VMA gets one at its first anonymous fault; splits, merges and moves carry
//! it along. Its identity decides merges: two neighbours merge only when at
//! most one has an object or both have the same one. It is the future home of
//! the reverse map (which VMAs may map its frames), for reclaim.

use std::sync::atomic::{AtomicU64, Ordering};

/// An anonymous object. Compared by identity (`Arc::ptr_eq`).
#[derive(Debug)]
pub struct AnonObject {
    id: u64,
}

impl AnonObject {
    /// A new object with a process-unique id (for debugging output).
    pub fn new() -> AnonObject {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        AnonObject {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The object's id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Default for AnonObject {
    fn default() -> Self {
        Self::new()
    }
}
