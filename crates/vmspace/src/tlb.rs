//! The `Cpu` registry and the shootdown: what makes "after `munmap` returns,
//! no `Cpu` uses the old translation, and a frame is reused only when none
//! can reach it" true.
//!
//! # Access sections
//!
//! A `Cpu` (`cpu.rs`) keeps no translation between accesses (per-`Cpu` TLBs
//! come later). Each access is a short access section: the `Cpu`'s `section`
//! counter becomes odd, the PTE is read and the frame accessed, the counter
//! becomes even. Nothing blocks inside a section.
//!
//! # Shootdown
//!
//! Every change that removes or downgrades translations ends in
//! [`AddressSpace::flush`] with the [`FlushBatch`] the page-table update
//! returned (`pagetable.rs`): it runs the shootdown, then drops the batch's
//! frame references and frees its unlinked tables. The shootdown waits, for
//! every registered `Cpu` whose counter is odd, until the counter changes.
//! The Cpu side is `section += 1; load PTE`, the writer side is `store PTE;
//! read section`, a store-buffering pattern. The writer reads the counter with
//! a read-modify-write (`fetch_add(0)`), so the two meet in its modification
//! order: if the Cpu's increment comes first, the writer sees the section (and
//! waits for it to end); otherwise the increment reads from the writer's RMW,
//! which publishes the cleared PTE (release/acquire), so the Cpu's PTE load
//! sees it. This does not rely on a SeqCst total order (loom reports a store
//! through a shot-down entry if the writer uses a plain SeqCst load, which
//! loom models as acquire). The Cpu's exit is a Release increment and the
//! writer's wait an Acquire load, so the Cpu's last access to the frame
//! happens before the writer frees it. The same argument covers a cleared
//! directory slot (an unlinked table).
//!
//! The batch's ranges say which translations changed; with no TLBs yet, every
//! `Cpu` inside a section is waited for, whatever the range. Idle `Cpu`s (even
//! counter) are not waited for: this is where isolated CPUs will be spared.
//!
//! Copy-on-write breaks are the one event whose frames may be released
//! without a shootdown: the replaced entry was read-only, so a `Cpu` still
//! using it can only read the old content, as if its read came before the
//! fault; only a frame whose last reference this is needs the shootdown
//! before it is freed.
//!
//! Locks: the registry mutex is a leaf (taken under the address-space lock, a
//! VMA lock, or none; nothing under it). A flush takes no other lock.

use crate::frame::FrameAllocator;
use crate::pagetable::{Event, FlushBatch};
use crate::space::AddressSpace;
use crate::sync::{fence, spin_wait, AtomicU64, Mutex, Ordering};
use std::sync::Arc;

/// Per-`Cpu` state shared with writers: the access-section counter and the
/// fault counters (written by the owning thread only).
pub(crate) struct CpuState {
    /// Odd while the `Cpu` is inside an access section.
    section: AtomicU64,
    pub(crate) stats: crate::stats::FaultCounters,
}

impl CpuState {
    /// Enters an access section.
    #[inline]
    pub(crate) fn enter(&self) {
        // SeqCst RMW: ordered before the PTE load (see the module documentation).
        self.section.fetch_add(1, Ordering::SeqCst);
    }

    /// Leaves an access section.
    #[inline]
    pub(crate) fn exit(&self) {
        // Release: the access happens before a writer that sees the new value.
        self.section.fetch_add(1, Ordering::Release);
    }
}

/// The `Cpu`s of one address space.
pub(crate) struct CpuRegistry {
    cpus: Mutex<Vec<Arc<CpuState>>>,
    /// Counters of `Cpu`s that were dropped.
    pub(crate) retired: crate::stats::FaultCounters,
}

impl Default for CpuRegistry {
    fn default() -> Self {
        CpuRegistry {
            cpus: Mutex::new(Vec::new()),
            retired: Default::default(),
        }
    }
}

impl CpuRegistry {
    pub(crate) fn register(&self) -> Arc<CpuState> {
        let s = Arc::new(CpuState {
            section: AtomicU64::new(0),
            stats: Default::default(),
        });
        self.cpus.lock().push(s.clone());
        s
    }

    pub(crate) fn unregister(&self, state: &Arc<CpuState>) {
        self.retired.add(&state.stats);
        self.cpus.lock().retain(|s| !Arc::ptr_eq(s, state));
    }

    /// Waits until no `Cpu` can still use a translation removed before this
    /// call. See the module documentation.
    fn shootdown(&self) {
        fence(Ordering::SeqCst);
        let cpus = self.cpus.lock();
        for c in cpus.iter() {
            // A read-modify-write, not a load (see the module documentation).
            let s = c.section.fetch_add(0, Ordering::SeqCst);
            if s & 1 == 1 {
                let mut spins = 0u32;
                while c.section.load(Ordering::Acquire) == s {
                    spin_wait(&mut spins);
                }
            }
        }
    }

    /// Sum of the counters of all `Cpu`s, live and dropped.
    pub(crate) fn totals(&self) -> crate::stats::FaultStats {
        let mut t = self.retired.snapshot();
        for c in self.cpus.lock().iter() {
            t += c.stats.snapshot();
        }
        t
    }
}

impl AddressSpace {
    /// Makes a page-table update take effect: the shootdown, the end of its
    /// MMU-notifier invalidations (`notifier.rs`), then the release of the
    /// batch's frames and tables (module documentation).
    pub(crate) fn flush(&self, mut batch: FlushBatch) {
        // Most faults' installs replace nothing.
        if batch.is_empty() && batch.invalidations.is_empty() {
            return;
        }
        let invalidations = std::mem::take(&mut batch.invalidations);
        flush(self.cpus(), self.frames(), batch, || {
            for inv in invalidations {
                self.invalidate_end(inv);
            }
        });
    }
}

/// See [`AddressSpace::flush`]; `end_invalidations` runs after the shootdown
/// (or when none is needed), before any frame is released.
fn flush(
    cpus: &CpuRegistry,
    frames: &FrameAllocator,
    mut batch: FlushBatch,
    end_invalidations: impl FnOnce(),
) {
    if batch.event == Event::CowBreak {
        batch.frames.retain(|&f| !frames.put_unless_last(f));
        if batch.frames.is_empty() {
            end_invalidations();
            return;
        }
    }
    // A swap entry is no translation: its slot reference goes at once.
    for slot in batch.slots.drain(..) {
        frames.release_swap_entry(slot);
    }
    if batch.is_empty() {
        end_invalidations();
        return;
    }
    // Callers that may not block (faults) never unlink tables.
    debug_assert!(batch.may_block || batch.tables.is_empty());
    if crate::debug::broken(crate::debug::ProtocolBreak::EarlyFree) {
        for f in batch.frames.drain(..) {
            frames.put(f);
        }
    }
    cpus.shootdown();
    // Only now can no store land through a removed entry: its file page is
    // marked dirty after the last one (`FlushBatch::dirty_frames`).
    for &f in &batch.dirty_frames {
        let owner = frames.owner(f);
        if matches!(owner, crate::frame::Owner::File { .. }) {
            frames.mark_owner_dirty(owner);
        }
    }
    end_invalidations();
    for f in batch.frames {
        frames.put(f);
    }
    for t in batch.tables {
        t.free();
    }
}
