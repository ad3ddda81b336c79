//! Read-only views of internal state for tests and model checking (hidden
//! from the documentation; not a stable interface).
//!
//! Locks: each view takes the PTE locks of the tables it reads, one at a time
//! (leaf locks, see `sync`), pinned (tables unlinked meanwhile stay
//! allocated); it takes no address-space or VMA lock, so it shows a snapshot
//! per table, exact once the threads that change the space have finished.

use crate::frame::FrameId;
use crate::pagetable::Pte;
use crate::space::AddressSpace;

/// One present page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PteInfo {
    /// The page's address.
    pub addr: u64,
    /// The mapped frame.
    pub frame: FrameId,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Accessed since the bit was last cleared.
    pub accessed: bool,
    /// Written through since the bit was last cleared.
    pub dirty: bool,
}

impl AddressSpace {
    /// Test hook: moves the address-space lock sequence (`mm_seq`, which
    /// only grows) forward to `seq`, to take it across a boundary such as
    /// 2^32. Call with no writer running; a smaller `seq` is ignored.
    #[doc(hidden)]
    pub fn debug_advance_lock_sequence(&self, seq: u64) {
        self.mm_seq().fetch_max(seq, crate::sync::Ordering::SeqCst);
    }

    /// The address-space lock sequence.
    #[doc(hidden)]
    pub fn debug_lock_sequence(&self) -> u64 {
        self.mm_seq().load(crate::sync::Ordering::SeqCst)
    }

    /// The present page-table entries of `[start, end)`, in address order.
    #[doc(hidden)]
    pub fn debug_ptes(&self, start: u64, end: u64) -> Vec<PteInfo> {
        let mut out = Vec::new();
        // Pinned: tables unlinked meanwhile stay allocated (`pagetable.rs`).
        let _g = vmspace_tree::pin();
        self.page_table().for_each_present(start, end, |addr, pte| {
            out.push(PteInfo {
                addr,
                frame: pte.frame(),
                read: pte.has(Pte::READ),
                write: pte.has(Pte::WRITE),
                accessed: pte.has(Pte::ACCESSED),
                dirty: pte.has(Pte::DIRTY),
            })
        });
        out
    }
}
