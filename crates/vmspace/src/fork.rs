//! `fork`: a child address space that shares the parent's memory the way a
//! forked Linux process does.
//!
//! * Every VMA is copied, with its attributes and backing. A VMA with an
//!   anonymous object gets, in the child, a new object whose parent is the
//!   parent VMA's, and the child VMA is recorded in both (and every further
//!   ancestor): the reverse map's chain (`rmap.rs`).
//! * Private pages are shared copy-on-write: the parent's entries lose write
//!   permission and ownership, the child gets the same entries, and the
//!   first write on either side copies (`fault.rs`). Shared mappings are not
//!   copied entry by entry: the child faults their pages in from the page
//!   cache, which both sides share.
//! * `madvise` shapes the child as in Linux's `dup_mmap`: a `dontfork`
//!   VMA (`VM_DONTCOPY`) is left out; a `wipeonfork` VMA is copied with
//!   none of its pages and no anonymous object, so the child reads zeros;
//!   a `locked` VMA is copied unlocked (`VM_LOCKED` is not inherited).
//! * Accounting: the child's committed pages are those of its `account`
//!   VMAs (`AddressSpace::committed_pages`), so a fork adds the child's
//!   copy of every charged VMA it copies, and nothing for a `dontfork` one.
//!
//! # Why every parent VMA is write-locked first
//!
//! The copy reads each VMA's anonymous object and later copies its entries.
//! A fault on the parent between the two could give the VMA its object and
//! map a page of it, which the copy would then share with a child VMA
//! recorded in no chain that holds the page's owner: the reverse map would
//! miss the child's entry (Linux 6.4 corrupted memory this way; its fix,
//! commit fb49c455323f, write-locks every VMA of the parent before copying).
//! Here too, every VMA of the parent is write-locked (`Vma::write_lock`)
//! before anything is read: per-vma faults fall back to the address-space
//! lock, which the fork holds, and speculative faults fail their validation.
//! `debug::ProtocolBreak::ForkWithoutVmaLock` leaves the locks out, for the
//! test that shows the checker notices.
//!
//! Locks: the parent's address-space lock (write), the parent's VMA write
//! marks, then the child's address-space lock (write; the child is not yet
//! visible to anyone), then PTE locks: a parent table's, then a child
//! table's (`PageTable::copy_for_fork`), then the rmap locks of the child
//! VMAs' objects when they are recorded.

use crate::debug::{broken, ProtocolBreak};
use crate::frame::{FrameId, Owner};
use crate::notifier::{Busy, NotifierRange};
use crate::pagetable::{Event, FlushBatch, ADDR_LIMIT};
use crate::space::AddressSpace;
use std::sync::Arc;

impl AddressSpace {
    /// A child address space with a copy of this one's mappings (Linux's
    /// `fork`, see the module documentation). Its `Cpu`s are its own; the
    /// two share the frame arena.
    pub fn fork(self: &Arc<Self>) -> Arc<AddressSpace> {
        self.fork_with(!broken(ProtocolBreak::ForkWithoutVmaLock))
    }

    /// `fork` without write-locking the parent's VMAs, in every build: only
    /// for the benchmark that measures what the locking costs (`fork_vmas`).
    /// Unsound if anything faults on the parent meanwhile (see the module
    /// documentation); the caller must be the parent's only thread.
    #[doc(hidden)]
    pub fn fork_unlocked_for_bench(self: &Arc<Self>) -> Arc<AddressSpace> {
        self.fork_with(false)
    }

    fn fork_with(self: &Arc<Self>, lock_vmas: bool) -> Arc<AddressSpace> {
        let child = AddressSpace::new(self.config.clone(), self.frames.clone())
            .expect("the parent's configuration was validated");
        let w = self.write_lock();
        let vmas = self.vmas_in(0, ADDR_LIMIT);
        if lock_vmas {
            for v in &vmas {
                v.write_lock(&w);
            }
        }
        let mut cw = child.write_lock();
        // The child's anonymous object of each parent VMA (for the copies of
        // pinned pages).
        let mut child_anon = std::collections::HashMap::new();
        for v in vmas.iter().filter(|v| !v.dontfork) {
            let copy = v.forked(&self.frames, cw.seq);
            if let Some(a) = copy.anon.get() {
                child_anon.insert(v.start, a.clone());
            }
            cw.insert(copy);
        }
        let mut batch = FlushBatch::new(Event::Fork, true);
        let copied = |v: &&Arc<crate::vma::Vma>| !v.shared && !v.dontfork && !v.wipeonfork;
        for v in vmas.iter().filter(copied) {
            // The parent's writable entries become read-only: its
            // subscribers hear of it first (write-only, blockable).
            let range = NotifierRange::new(v.start, v.end, Event::Fork, true);
            match self.invalidate_start(range) {
                Ok(inv) => batch.invalidations.push(inv),
                Err(Busy) => unreachable!("a blockable invalidation waits"),
            }
            // A pinned page is copied for the child now (`pin.rs`); with no
            // frame left it is shared as any other (the device's later
            // writes then reach the child too, until one side writes).
            let anon = child_anon.get(&v.start);
            let frames = &self.frames;
            let mut copy_pinned = |a: u64, f: FrameId| {
                let anon = anon?;
                let copy = frames.alloc_copy(f)?;
                frames.set_owner(
                    copy,
                    Owner::Anon {
                        object: anon.id(),
                        index: v.pgoff_at(a),
                    },
                );
                Some(copy)
            };
            self.pt.copy_for_fork(
                &child.pt,
                v.start,
                v.end,
                &self.frames,
                &mut batch,
                &mut copy_pinned,
            );
        }
        self.flush(batch);
        drop(cw);
        drop(w);
        child
    }
}
