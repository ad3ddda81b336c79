//! Reclaim: freeing frames when an arena runs short, by a clock over the
//! frame array that ages pages by their accessed bits, and a background
//! reclaimer (Linux's kswapd) that keeps free frames between two watermarks.
//!
//! # The memory limit
//!
//! An arena's size is the memory limit of every address space and file on
//! it. When an allocation finds no frame, the fault that needed it drops
//! every lock and runs direct reclaim (`fault.rs`, `fault_after_collecting`),
//! then retries, a bounded number of times: when nothing can be reclaimed
//! (no swap, swap full, every page locked or busy) the fault fails with
//! [`crate::FaultCause::OutOfMemory`] after at most two revolutions of the
//! clock per round, never a livelock.
//!
//! # The clock
//!
//! A shared hand walks the frames (in runs of [`HAND_RUN`], one
//! `fetch_add` a run, so that two reclaimers rarely meet). At each frame:
//! take a reference unless it is free (`try_get`); a mapped anonymous page
//! whose entries were used since the last visit (`page_referenced`, which
//! clears the accessed bits) gets a second chance; otherwise a lazy-free
//! page (`madvise(MADV_FREE)`) is dropped if still clean, and any other
//! private anonymous page goes to swap (`swapcache.rs`). A frame in the
//! swap cache that nothing maps is dropped (its slot holds the page). A
//! page-cache frame is unmapped everywhere, written back if dirty (never
//! lost: the eviction checks the dirty mark again under the file's fill
//! lock) and evicted (`File::evict`); pages of shared anonymous memory,
//! whose store keeps nothing, stay. Unmapped anonymous frames (a fault is
//! filling them) and frames without an owner are passed by.
//!
//! # Background reclaim
//!
//! On an arena with swap and [`ReclaimConfig::background`], the free frame
//! count is kept (one atomic, only there) and an allocation that takes it
//! below the low watermark wakes the reclaimer thread, which reclaims until
//! the high watermark is reached or a pass frees nothing. The thread holds
//! the arena weakly and ends when the arena is dropped. It is started by
//! the first address space made on the arena ([`FrameAllocator::start_reclaimer`]).
//!
//! Locks: reclaim holds none of the address-space, VMA or PTE locks when it
//! starts; the walks take rmap locks and PTE locks as `rmap.rs` says, and the
//! swap I/O runs with only the frame lock held. The wake-up mutex is a leaf.

use crate::frame::{FrameAllocator, FrameId, Owner};
use crate::swapcache::SwapOut;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// Frames the hand advances by per `fetch_add`.
const HAND_RUN: usize = 32;
/// Frames the background reclaimer frees per pass before it looks at the
/// watermark again (Linux's `SWAP_CLUSTER_MAX`).
pub(crate) const RECLAIM_BATCH: usize = 32;
/// How long the idle reclaimer sleeps before it checks that its arena still
/// exists.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Reclaim settings of an arena ([`crate::ArenaConfig::reclaim`]).
#[derive(Clone, Debug)]
pub struct ReclaimConfig {
    /// Run a background reclaimer on an arena that has swap (default on).
    pub background: bool,
    /// Free frames below which the background reclaimer wakes (default:
    /// 1/32 of the arena, at least 8).
    pub low_watermark: Option<usize>,
    /// Free frames the background reclaimer reclaims up to (default: twice
    /// the low watermark).
    pub high_watermark: Option<usize>,
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        ReclaimConfig {
            background: true,
            low_watermark: None,
            high_watermark: None,
        }
    }
}

/// What reclaim did on an arena ([`FrameAllocator::reclaim_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReclaimStats {
    /// Frames the clock visited.
    pub scanned: u64,
    /// Pages given a second chance (their accessed bits were set).
    pub referenced: u64,
    /// Frames freed by faulting threads (direct reclaim) and
    /// [`FrameAllocator::reclaim`] calls.
    pub reclaimed_direct: u64,
    /// Frames freed by the background reclaimer.
    pub reclaimed_background: u64,
    /// Pages written to swap.
    pub swap_outs: u64,
    /// Swap-ins that mapped a page from the swap cache.
    pub swap_ins: u64,
    /// Failed swap writes (the page stayed in memory).
    pub swap_out_failures: u64,
    /// Failed swap reads (the fault failed).
    pub swap_in_failures: u64,
    /// Lazy-free pages dropped without a write.
    pub lazyfree_dropped: u64,
    /// Page-cache pages evicted (clean, or written back first).
    pub file_dropped: u64,
    /// Dirty page-cache pages written back by reclaim before eviction.
    pub file_written: u64,
    /// Pages passed by because someone held or locked them.
    pub skipped_busy: u64,
    /// Pages kept because an `mlock`ed VMA maps them.
    pub skipped_locked: u64,
    /// Pages passed by because a device pinned them (`pin_pages`).
    pub skipped_pinned: u64,
    /// Reverse-map visits a secondary MMU refused: its non-blockable
    /// invalidation answered busy (`MmuNotifier`), so the page stayed.
    pub notifier_busy: u64,
    /// Swap-outs refused for want of a free slot.
    pub swap_full: u64,
    /// Faults that failed for want of memory after reclaim.
    pub oom: u64,
}

/// `ReclaimStats` built field by field from two of them.
macro_rules! fieldwise {
    ($a:expr, $b:expr, $f:ident) => {
        ReclaimStats {
            scanned: $a.scanned.$f($b.scanned),
            referenced: $a.referenced.$f($b.referenced),
            reclaimed_direct: $a.reclaimed_direct.$f($b.reclaimed_direct),
            reclaimed_background: $a.reclaimed_background.$f($b.reclaimed_background),
            swap_outs: $a.swap_outs.$f($b.swap_outs),
            swap_ins: $a.swap_ins.$f($b.swap_ins),
            swap_out_failures: $a.swap_out_failures.$f($b.swap_out_failures),
            swap_in_failures: $a.swap_in_failures.$f($b.swap_in_failures),
            lazyfree_dropped: $a.lazyfree_dropped.$f($b.lazyfree_dropped),
            file_dropped: $a.file_dropped.$f($b.file_dropped),
            file_written: $a.file_written.$f($b.file_written),
            skipped_busy: $a.skipped_busy.$f($b.skipped_busy),
            skipped_locked: $a.skipped_locked.$f($b.skipped_locked),
            notifier_busy: $a.notifier_busy.$f($b.notifier_busy),
            skipped_pinned: $a.skipped_pinned.$f($b.skipped_pinned),
            swap_full: $a.swap_full.$f($b.swap_full),
            oom: $a.oom.$f($b.oom),
        }
    };
}

impl ReclaimStats {
    /// What happened between `earlier` and `self` (counters only grow).
    pub fn since(&self, earlier: &ReclaimStats) -> ReclaimStats {
        fieldwise!(self, earlier, saturating_sub)
    }

    /// The counters of two windows together.
    pub fn plus(&self, other: &ReclaimStats) -> ReclaimStats {
        fieldwise!(self, other, saturating_add)
    }
}

/// One counter (Relaxed: statistics only).
#[derive(Default)]
pub(crate) struct Count(AtomicU64);

impl Count {
    pub(crate) fn bump(&self) {
        self.add(1);
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters behind [`ReclaimStats`].
#[derive(Default)]
pub(crate) struct ReclaimCounters {
    scanned: Count,
    referenced: Count,
    reclaimed_direct: Count,
    reclaimed_background: Count,
    pub(crate) swap_outs: Count,
    pub(crate) swap_ins: Count,
    pub(crate) swap_out_failures: Count,
    pub(crate) swap_in_failures: Count,
    pub(crate) lazyfree_dropped: Count,
    file_dropped: Count,
    file_written: Count,
    skipped_busy: Count,
    skipped_locked: Count,
    pub(crate) notifier_busy: Count,
    skipped_pinned: Count,
    swap_full: Count,
    pub(crate) oom: Count,
}

/// The background reclaimer's wake-up.
#[derive(Default)]
struct Wakeup {
    pending: Mutex<bool>,
    cv: Condvar,
    /// The arena is gone: the thread ends.
    stop: AtomicBool,
}

/// An arena's reclaim state.
pub(crate) struct ReclaimState {
    hand: CachePadded<AtomicUsize>,
    /// Free frames, kept only when `tracking`.
    free: CachePadded<AtomicIsize>,
    tracking: bool,
    low: usize,
    high: usize,
    /// A wake-up is on its way (saves the mutex on every allocation below
    /// the watermark).
    woken: AtomicBool,
    started: AtomicBool,
    wakeup: Arc<Wakeup>,
    counters: ReclaimCounters,
    /// Held for reading by reclaim around each run of the hand, for writing
    /// by checks that must see no page half reclaimed (a leaf: nothing
    /// waits for it while holding an rmap or PTE lock).
    gate: parking_lot::RwLock<()>,
}

impl ReclaimState {
    /// Reclaim state for an arena of `frames` frames (the zero frame
    /// included).
    pub(crate) fn new(config: &ReclaimConfig, frames: u32, has_swap: bool) -> ReclaimState {
        let capacity = frames as usize - 1;
        let low = config.low_watermark.unwrap_or((capacity / 32).max(8));
        let high = config.high_watermark.unwrap_or(2 * low).max(low);
        ReclaimState {
            hand: CachePadded::new(AtomicUsize::new(0)),
            free: CachePadded::new(AtomicIsize::new(capacity as isize)),
            tracking: config.background && has_swap,
            low,
            high,
            woken: AtomicBool::new(false),
            started: AtomicBool::new(false),
            wakeup: Arc::default(),
            counters: ReclaimCounters::default(),
            gate: parking_lot::RwLock::new(()),
        }
    }

    /// A frame was allocated.
    #[inline]
    pub(crate) fn allocated(&self) {
        if !self.tracking {
            return;
        }
        let free = self.free.fetch_sub(1, Ordering::Relaxed) - 1;
        if free < self.low as isize
            && self.started.load(Ordering::Relaxed)
            && !self.woken.swap(true, Ordering::Relaxed)
        {
            *self
                .wakeup
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = true;
            self.wakeup.cv.notify_one();
        }
    }

    /// A frame was freed.
    #[inline]
    pub(crate) fn freed(&self) {
        if self.tracking {
            self.free.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ReclaimState {
    fn drop(&mut self) {
        self.wakeup.stop.store(true, Ordering::Relaxed);
        self.wakeup.cv.notify_one();
    }
}

impl FrameAllocator {
    pub(crate) fn reclaim_counters(&self) -> &ReclaimCounters {
        &self.reclaim.counters
    }

    /// What reclaim did on this arena so far.
    pub fn reclaim_stats(&self) -> ReclaimStats {
        let c = &self.reclaim.counters;
        ReclaimStats {
            scanned: c.scanned.get(),
            referenced: c.referenced.get(),
            reclaimed_direct: c.reclaimed_direct.get(),
            reclaimed_background: c.reclaimed_background.get(),
            swap_outs: c.swap_outs.get(),
            swap_ins: c.swap_ins.get(),
            swap_out_failures: c.swap_out_failures.get(),
            swap_in_failures: c.swap_in_failures.get(),
            lazyfree_dropped: c.lazyfree_dropped.get(),
            file_dropped: c.file_dropped.get(),
            file_written: c.file_written.get(),
            skipped_busy: c.skipped_busy.get(),
            skipped_locked: c.skipped_locked.get(),
            notifier_busy: c.notifier_busy.get(),
            skipped_pinned: c.skipped_pinned.get(),
            swap_full: c.swap_full.get(),
            oom: c.oom.get(),
        }
    }

    /// Frees up to `target` frames (direct reclaim, as a faulting thread
    /// does); returns how many it freed. Visits at most two revolutions of
    /// the clock. The caller holds no address-space, VMA, PTE or rmap lock.
    pub fn reclaim(&self, target: usize) -> usize {
        self.reclaim_as(target, false)
    }

    fn reclaim_as(&self, target: usize, background: bool) -> usize {
        let frames = self.capacity();
        let limit = 2 * frames;
        let mut freed = 0;
        let mut scanned = 0;
        while freed < target && scanned < limit {
            let run = self.reclaim.hand.fetch_add(HAND_RUN, Ordering::Relaxed);
            let _gate = self.reclaim.gate.read();
            for k in 0..HAND_RUN {
                let f = FrameId(1 + ((run + k) % frames) as u32);
                scanned += 1;
                if self.reclaim_frame(f) {
                    freed += 1;
                    if freed == target {
                        break;
                    }
                }
            }
        }
        let c = &self.reclaim.counters;
        c.scanned.add(scanned as u64);
        if background {
            c.reclaimed_background.add(freed as u64);
        } else {
            c.reclaimed_direct.add(freed as u64);
        }
        freed
    }

    /// The clock's visit of one frame (module documentation); returns
    /// whether it freed the frame.
    fn reclaim_frame(&self, f: FrameId) -> bool {
        if !self.try_get(f) {
            return false;
        }
        if self.pincount(f) > 0 {
            self.reclaim.counters.skipped_pinned.bump();
            self.put(f);
            return false;
        }
        let cached = self.swap().is_some_and(|s| s.slot_of(f).is_some());
        let owner = self.owner(f);
        let mapped = self.mapcount(f) > 0;
        if !cached && matches!(owner, Owner::File { .. }) {
            return self.reclaim_file_page(f, mapped);
        }
        if !(cached || (matches!(owner, Owner::Anon { .. }) && mapped)) {
            self.put(f);
            return false;
        }
        let c = &self.reclaim.counters;
        if mapped && self.page_referenced(f) > 0 {
            c.referenced.bump();
            self.put(f);
            return false;
        }
        if !cached && self.is_lazyfree(f) {
            return self.drop_lazyfree(f);
        }
        match self.swap_out(f) {
            SwapOut::Freed => true,
            SwapOut::Busy | SwapOut::Mapped => {
                c.skipped_busy.bump();
                false
            }
            SwapOut::Locked => {
                c.skipped_locked.bump();
                false
            }
            SwapOut::SwapFull => {
                c.swap_full.bump();
                false
            }
            SwapOut::WriteFailed => false,
        }
    }

    /// Waits for reclaim passes in progress and keeps new ones out until the
    /// guard drops (for checks that must see every page whole).
    pub(crate) fn hold_off_reclaim(&self) -> impl Drop + '_ {
        self.reclaim.gate.write()
    }

    /// The clock's visit of a page-cache frame the caller holds a reference
    /// to (consumed): a second chance if its entries were used; otherwise
    /// unmapped everywhere (unless `mlock`ed), written back if dirty, and
    /// evicted if nobody took it meanwhile (`File::evict`). Pages of stores
    /// that keep no writes (shared anonymous memory) stay.
    fn reclaim_file_page(&self, f: FrameId, mapped: bool) -> bool {
        let c = &self.reclaim.counters;
        let Some((file, index)) = self.file_of(f) else {
            self.put(f);
            return false;
        };
        if !file.keeps_writes() {
            self.put(f);
            return false;
        }
        if mapped {
            if self.page_referenced(f) > 0 {
                c.referenced.bump();
                self.put(f);
                return false;
            }
            if self.unmap_file_page(f, true).1 {
                c.skipped_locked.bump();
                self.put(f);
                return false;
            }
        }
        if self.mapcount(f) != 0 {
            c.skipped_busy.bump();
            self.put(f);
            return false;
        }
        let broken = crate::debug::broken(crate::debug::ProtocolBreak::EvictDirty);
        if file.is_dirty(index) && !broken {
            if file.write_back(index, index + 1) != 0 {
                self.put(f);
                return false;
            }
            c.file_written.bump();
        }
        let evicted = file.evict(index, f);
        if evicted {
            c.file_dropped.bump();
        } else {
            c.skipped_busy.bump();
        }
        drop(file);
        evicted
    }

    /// Frames free now: the kept count on an arena with a background
    /// reclaimer, otherwise the lists' net count.
    pub fn free_frames(&self) -> usize {
        if self.reclaim.tracking {
            self.reclaim.free.load(Ordering::Relaxed).max(0) as usize
        } else {
            self.capacity() - self.in_use()
        }
    }

    /// Starts the background reclaimer of this arena if it has one and it
    /// is not running yet (called by [`crate::AddressSpace::new`]).
    pub fn start_reclaimer(self: &Arc<Self>) {
        let r = &self.reclaim;
        if !r.tracking || r.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let wakeup = r.wakeup.clone();
        let spawned = std::thread::Builder::new()
            .name("vmspace-reclaim".into())
            .spawn(move || background(weak, wakeup));
        if spawned.is_err() {
            // No thread: direct reclaim alone frees frames.
            r.started.store(false, Ordering::Release);
        }
    }
}

/// The background reclaimer's loop (module documentation).
fn background(arena: Weak<FrameAllocator>, wakeup: Arc<Wakeup>) {
    loop {
        {
            let mut pending = wakeup.pending.lock().unwrap_or_else(|e| e.into_inner());
            if !*pending {
                pending = wakeup
                    .cv
                    .wait_timeout(pending, IDLE_WAIT)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *pending = false;
        }
        if wakeup.stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(frames) = arena.upgrade() else {
            return;
        };
        let r = &frames.reclaim;
        r.woken.store(false, Ordering::Relaxed);
        if frames.free_frames() < r.low {
            while frames.free_frames() < r.high {
                if frames.reclaim_as(RECLAIM_BATCH, true) == 0 {
                    break;
                }
            }
        }
    }
}
