//! Pinning pages for a device (Linux's `pin_user_pages`, `FOLL_PIN`): the
//! frames of a range held for DMA, whatever happens to the mapping.
//!
//! A pin is a count in the frame's metadata (`FrameAllocator::pincount`)
//! plus one frame reference. [`AddressSpace::pin_pages`] resolves each page
//! for the access, as a device fault would (`resolve_range`), then takes the
//! pin under the PTE lock of the entry, provided it still maps the frame and
//! allows the access. What a pin changes:
//!
//! * Reclaim passes a pinned frame by (`ReclaimStats::skipped_pinned`).
//!   Swap-out's reverse-map walk checks the pin count again under each
//!   entry's PTE lock, so a pin taken after reclaim looked keeps its entry.
//! * `fork` gives the child a copy of a pinned page at once (the parent's
//!   entry, owned and possibly writable, stays as it is). Sharing it
//!   copy-on-write would let the parent's next write move the parent to a
//!   new frame, away from the one the device writes into: the parent would
//!   lose the device's writes (Linux's `page_needs_cow_for_dma`).
//! * The frame is not freed while pinned (the reference): after `munmap` the
//!   device keeps its frames until it unpins, as a DMA in flight would.
//!
//! Locks: the PTE lock of one entry at a time, with nothing else held.

use crate::error::{Access, Fault};
use crate::frame::{FrameAllocator, FrameId, PAGE_SIZE};
use crate::madvise::Faulter;
use crate::notifier::ResolvedPage;
use crate::pagetable::Pte;
use crate::space::AddressSpace;
use std::sync::Arc;

/// Pages pinned by [`AddressSpace::pin_pages`]; dropping it unpins them.
pub struct PinnedPages {
    frames: Arc<FrameAllocator>,
    pages: Vec<(u64, FrameId)>,
}

impl PinnedPages {
    /// The pinned pages: address and frame, in address order.
    pub fn pages(&self) -> &[(u64, FrameId)] {
        &self.pages
    }

    /// The arena of the frames (for the device's DMA:
    /// [`FrameAllocator::word`]).
    pub fn frames(&self) -> &Arc<FrameAllocator> {
        &self.frames
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        for &(_, f) in &self.pages {
            self.frames.unpin(f);
        }
    }
}

impl std::fmt::Debug for PinnedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedPages({} pages)", self.pages.len())
    }
}

impl AddressSpace {
    /// Pins the pages of `[start, end)` for `access` (see the module
    /// documentation): each is faulted in as needed (a write breaks
    /// copy-on-write first, so the frame is the space's own), then pinned.
    /// All or nothing: on a fault, the pages pinned so far are unpinned and
    /// the fault is returned.
    pub fn pin_pages(&self, start: u64, end: u64, access: Access) -> Result<PinnedPages, Fault> {
        let mut pinned = PinnedPages {
            frames: self.frames.clone(),
            pages: Vec::new(),
        };
        let faulter = Faulter::new();
        let mut resolved = Vec::with_capacity(1);
        let mut addr = start & !(PAGE_SIZE - 1);
        while addr < end {
            resolved.clear();
            self.resolve_range_with(addr, addr + PAGE_SIZE, access, &faulter, &mut resolved)?;
            // An entry that changed since it was resolved is resolved again.
            if self.pin_if_mapped(resolved[0], access) {
                pinned.pages.push((addr, resolved[0].frame));
                addr += PAGE_SIZE;
            }
        }
        Ok(pinned)
    }

    /// Pins `page.frame` if the entry at `page.addr` still maps it and allows
    /// `access`, under the entry's PTE lock.
    fn pin_if_mapped(&self, page: ResolvedPage, access: Access) -> bool {
        // Keeps the table alive while it is locked.
        let _pinned = vmspace_tree::pin();
        let Some(table) = self.pt.table(page.addr) else {
            return false;
        };
        let g = table.lock();
        let pte = g.get(page.addr);
        let ok = pte.present()
            && pte.frame() == page.frame
            && (access != Access::Write || pte.has(Pte::WRITE));
        if ok {
            self.frames.pin(page.frame);
        }
        ok
    }
}
