//! MMU notifiers: how a secondary MMU (a device mirror, `mirror.rs`; a
//! hypervisor's shadow tables; the host page tables of a host region) hears
//! that translations of an address space are about to change, and how it
//! resolves translations without racing those changes.
//!
//! # Subscriptions and the calls they get
//!
//! A [`Subscription`] ties an [`MmuNotifier`] to a range of one address
//! space: the whole space ([`AddressSpace::subscribe`], Linux's
//! `mmu_notifier`) or one range ([`AddressSpace::subscribe_range`], Linux's
//! `mmu_interval_notifier`). Every change of translations that meets the
//! range calls `invalidate_range_start` before the first entry changes, and
//! `invalidate_range_end` after the change's shootdown, before its frames
//! are released (`tlb.rs`). A secondary MMU that drops its translations in
//! `start` therefore never reaches a frame after the frame is freed.
//!
//! Every caller of the page-table update goes through one function,
//! [`AddressSpace::invalidate_start`], and hands the [`Invalidation`] it
//! returns to the flush batch, whose flush ends it. The callers are
//! `munmap`, `mprotect`, `mremap`, `madvise` (DONTNEED, FREE), fork's
//! write-protect, a fault's copy-on-write break, and the reverse map's
//! walks (reclaim, write-back cleaning, `try_to_unmap`). `clear_young` /
//! `test_young` let reclaim's aging see the secondary MMU's accesses, and
//! `release` tells a subscriber that its address space is being torn down.
//!
//! # The sequence: `read_begin` / `read_retry`
//!
//! Each subscription counts invalidations. `start` bumps its sequence (and
//! counts one more in flight) before it calls the notifier; `end` counts it
//! out. A reader, such as a device fault:
//!
//! 1. `seq = sub.read_begin()`, which waits until no invalidation is in flight;
//! 2. resolves translations ([`AddressSpace::resolve_range`], which may fault
//!    pages in and sleep);
//! 3. takes its own lock and installs them only if `!sub.read_retry(seq)`;
//!    otherwise it starts over.
//!
//! Its notifier removes translations in `invalidate_range_start`, under the
//! same lock. Why no stale translation survives: the invalidation's bump
//! comes before its callback takes the reader's lock, and the entries change
//! after the callback. If the reader's locked check comes after the
//! callback's locked section, the lock orders the bump before the check and
//! the reader retries. If it comes before, the callback, which runs later,
//! removes what the reader installed. A reader that starts while an
//! invalidation is in flight waits for its end, so it reads the entries after
//! the change. `tests/loom_notifier.rs` checks this.
//!
//! # Blockable calls
//!
//! A notifier may sleep in `invalidate_range_start` only when the range is
//! [`blockable`](NotifierRange::blockable). Writers and faults are blockable:
//! they hold sleeping locks only. The reverse map's walks run under the rmap
//! lock, so they are blockable under the sleeping `rwsem` variants and not
//! under the spinning `rwlock` (seed 003's trade-off).
//!
//! A notifier that would have to sleep in a non-blockable call answers
//! [`Busy`], and the change does not happen there: reclaim skips the page
//! (`ReclaimStats::notifier_busy`) and a write-back keeps the page dirty. A
//! `Busy` answer to a blockable call is a broken contract; it is asked again
//! until the notifier accepts.
//!
//! # Subscribing while invalidations run
//!
//! An invalidation that starts while no one is subscribed calls no one. A
//! subscription that arrives meanwhile must not read entries that such an
//! invalidation is about to change and free, so `subscribe` waits for every
//! invalidation that may have missed it.
//!
//! * Each invalidation is counted in flight, in the current one of two
//!   phases, in per-thread shards (like SRCU's counters). The count word's
//!   top bit, `SUBSCRIBED`, says whether anyone is subscribed, so the
//!   increment also reads it, and an invalidation that sees it clear calls
//!   no one.
//! * `subscribe` publishes the new subscription, sets `SUBSCRIBED` in every
//!   count word, then flips the phase twice, each time waiting for the old
//!   phase's count to drain.
//! * The increment and the setting are read-modify-writes of one word, so
//!   they are ordered. If the increment comes later, it sees the bit and
//!   calls the new subscriber. If it comes first, the subscriber's setting
//!   reads the count, and its drain waits for it. This needs no SeqCst total
//!   order, which loom does not model: a load of a separate subscriber count
//!   would have needed one.
//! * Invalidations that start after a flip are counted in the other phase,
//!   so a subscriber is not starved.
//!
//! # Locks
//!
//! * `list` is a leaf, held only to copy or replace the subscriber list.
//! * `subscribing` serializes subscribe and unsubscribe and is held while
//!   they wait for invalidations in flight. A callback must therefore never
//!   subscribe or unsubscribe.
//! * Each subscription's `state` is a leaf.
//!
//! Callbacks run with whatever their caller holds: the address-space write
//! lock (writers), a VMA read lock or nothing (faults), or an rmap lock
//! (walks). They never run under a PTE lock (`sync`).

use crate::error::{Access, Errno, Fault};
use crate::frame::{FrameId, PAGE_SIZE};
use crate::madvise::Faulter;
use crate::pagetable::{Event, FlushBatch, Pte, TASK_SIZE};
use crate::space::AddressSpace;
use crate::sync::{AtomicU64, AtomicUsize, Condvar, Mutex, Ordering};
use crossbeam_utils::CachePadded;
use std::sync::Arc;

/// A range whose translations are about to change, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifierRange {
    /// First address (page-aligned).
    pub start: u64,
    /// End address (exclusive, page-aligned).
    pub end: u64,
    /// What changes the translations.
    pub event: Event,
    /// Whether the callback may sleep (see "Blockable calls").
    pub blockable: bool,
    /// Whether only write access goes away: a secondary MMU may keep its
    /// translations readable (`mprotect` to a readable protection, fork's
    /// write-protect, cleaning for write-back or `MADV_FREE`). When false,
    /// the translations are removed or replaced.
    pub write_only: bool,
}

impl NotifierRange {
    /// A range of `event` that removes translations (not write-only).
    pub fn new(start: u64, end: u64, event: Event, blockable: bool) -> NotifierRange {
        NotifierRange {
            start,
            end,
            event,
            blockable,
            write_only: matches!(event, Event::Fork | Event::Clean),
        }
    }

    fn meets(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// A notifier's answer to a non-blockable invalidation it cannot serve
/// without sleeping (Linux's `-EAGAIN` from `invalidate_range_start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the secondary MMU would have to sleep")
    }
}

impl std::error::Error for Busy {}

/// A secondary MMU's callbacks. See the module documentation for when each
/// is called, and with what held.
pub trait MmuNotifier: Send + Sync {
    /// Translations of `range` are about to change: drop (or, if
    /// `range.write_only`, write-protect) the secondary translations of the
    /// range, under the lock the secondary's installs check
    /// [`Subscription::read_retry`] under. May sleep only if
    /// `range.blockable`; otherwise it answers [`Busy`] instead of sleeping.
    fn invalidate_range_start(&self, range: &NotifierRange) -> Result<(), Busy>;

    /// The change `invalidate_range_start` announced is done and shot down.
    fn invalidate_range_end(&self, _range: &NotifierRange) {}

    /// Whether the secondary MMU used a page of `[start, end)` since the last
    /// call; clears its record (Linux's `clear_young`). Reclaim's aging asks.
    fn clear_young(&self, _start: u64, _end: u64) -> bool {
        false
    }

    /// As [`MmuNotifier::clear_young`], without clearing.
    fn test_young(&self, _start: u64, _end: u64) -> bool {
        false
    }

    /// The address space is being torn down: no call follows, and its frames
    /// go once this returns. Drop every translation.
    fn release(&self) {}
}

/// Invalidations in flight and whether the subscription is gone.
#[derive(Default)]
struct SubState {
    active: u32,
    removed: bool,
}

/// One notifier subscribed to one range of one address space.
pub struct Subscription {
    start: u64,
    end: u64,
    notifier: Arc<dyn MmuNotifier>,
    /// Bumped by every invalidation's start (see "The sequence").
    seq: AtomicU64,
    state: Mutex<SubState>,
    idle: Condvar,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subscription({:#x}..{:#x})", self.start, self.end)
    }
}

impl Subscription {
    /// The range `[start, end)` it covers.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// Waits until no invalidation of the range is in flight and returns the
    /// sequence to check with [`Subscription::read_retry`] (Linux's
    /// `mmu_interval_read_begin`). May sleep.
    pub fn read_begin(&self) -> u64 {
        let mut st = self.state.lock();
        while st.active > 0 {
            st = self.idle.wait(st);
        }
        self.seq.load(Ordering::Acquire)
    }

    /// Whether an invalidation started since `read_begin` returned `seq`:
    /// then what was resolved meanwhile may be stale. Call it under the lock
    /// the notifier's `invalidate_range_start` takes, and install only if it
    /// says `false`.
    pub fn read_retry(&self, seq: u64) -> bool {
        self.seq.load(Ordering::Acquire) != seq
    }

    /// Counts an invalidation in and bumps the sequence; `false` if the
    /// subscription was removed (it is not called any more).
    fn begin(&self) -> bool {
        let mut st = self.state.lock();
        if st.removed {
            return false;
        }
        st.active += 1;
        self.seq.fetch_add(1, Ordering::Release);
        true
    }

    /// Counts an invalidation out.
    fn finish(&self) {
        let mut st = self.state.lock();
        st.active -= 1;
        if st.active == 0 {
            self.idle.notify_all();
        }
    }

    /// Marks it removed and waits for its invalidations in flight.
    fn remove(&self) {
        let mut st = self.state.lock();
        st.removed = true;
        while st.active > 0 {
            st = self.idle.wait(st);
        }
    }

    fn meets(&self, range: &NotifierRange) -> bool {
        range.meets(self.start, self.end)
    }
}

/// The top bit of an in-flight count word: someone is subscribed.
const SUBSCRIBED: u64 = 1 << 63;

/// Shards of the in-flight counts (by thread).
#[cfg(not(loom))]
const SHARDS: usize = 16;
#[cfg(loom)]
const SHARDS: usize = 1;

/// An address space's subscriptions (see the module documentation).
pub(crate) struct Notifiers {
    /// The subscriptions, copied out by invalidations.
    list: Mutex<Arc<[Arc<Subscription>]>>,
    /// `list.len()`, read without the lock (for the counters and the
    /// aging's quick answer; invalidations look at `SUBSCRIBED`).
    count: AtomicUsize,
    /// Serializes subscribe and unsubscribe.
    subscribing: Mutex<()>,
    /// Which of the two in-flight counts new invalidations use.
    phase: AtomicUsize,
    /// Invalidations in flight, per shard and phase, with `SUBSCRIBED`.
    in_flight: Box<[CachePadded<[AtomicU64; 2]>]>,
}

impl Default for Notifiers {
    fn default() -> Self {
        Notifiers {
            list: Mutex::new(Arc::from(Vec::new())),
            count: AtomicUsize::new(0),
            subscribing: Mutex::new(()),
            phase: AtomicUsize::new(0),
            in_flight: (0..SHARDS)
                .map(|_| CachePadded::new([AtomicU64::new(0), AtomicU64::new(0)]))
                .collect(),
        }
    }
}

impl Notifiers {
    fn snapshot(&self) -> Arc<[Arc<Subscription>]> {
        self.list.lock().clone()
    }

    /// Sets (or clears) `SUBSCRIBED` in every count word.
    fn mark_subscribed(&self, on: bool) {
        for shard in self.in_flight.iter() {
            for word in shard.iter() {
                if on {
                    word.fetch_or(SUBSCRIBED, Ordering::SeqCst);
                } else {
                    word.fetch_and(!SUBSCRIBED, Ordering::SeqCst);
                }
            }
        }
    }

    /// Replaces the list (under `subscribing`), keeping `count` and
    /// `SUBSCRIBED` in step with it; returns the old list.
    fn replace(&self, subs: Vec<Arc<Subscription>>) -> Arc<[Arc<Subscription>]> {
        let now = subs.len();
        let old = std::mem::replace(&mut *self.list.lock(), Arc::from(subs));
        self.count.store(now, Ordering::SeqCst);
        if now == 0 && !old.is_empty() {
            self.mark_subscribed(false);
        } else if now > 0 {
            self.mark_subscribed(true);
        }
        old
    }

    /// Waits until every invalidation counted in `phase` has ended.
    fn drain(&self, phase: usize) {
        let mut spins = 0u32;
        while self
            .in_flight
            .iter()
            .map(|s| s[phase].load(Ordering::SeqCst) & !SUBSCRIBED)
            .sum::<u64>()
            != 0
        {
            crate::sync::spin_wait(&mut spins);
        }
    }

    /// Waits for every invalidation that started before this call (see
    /// "Subscribing while invalidations run").
    fn wait_for_invalidations(&self) {
        for _ in 0..2 {
            let old = self.phase.fetch_xor(1, Ordering::SeqCst) & 1;
            self.drain(old);
        }
    }
}

/// A page that [`AddressSpace::resolve_range`] resolved for a secondary MMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedPage {
    /// The page's address.
    pub addr: u64,
    /// The frame the CPU entry maps.
    pub frame: FrameId,
    /// Whether the secondary may write through it: the CPU entry was
    /// writable and dirty.
    pub writable: bool,
}

/// A started invalidation: ended by the flush of the batch it joined
/// ([`AddressSpace::invalidate_end`]).
#[must_use]
pub(crate) struct Invalidation {
    range: NotifierRange,
    shard: usize,
    phase: usize,
    /// The subscriptions that accepted `start`.
    started: Vec<Arc<Subscription>>,
}

impl AddressSpace {
    /// Subscribes `notifier` to every change of this address space's
    /// translations (Linux's `mmu_notifier_register`). Returns once every
    /// invalidation that started before it and might have missed it has
    /// ended. Must not be called from a notifier callback.
    pub fn subscribe(&self, notifier: Arc<dyn MmuNotifier>) -> Arc<Subscription> {
        self.add_subscription(0, TASK_SIZE, notifier)
    }

    /// Subscribes `notifier` to the changes that meet `[start, start + len)`
    /// (Linux's `mmu_interval_notifier_insert`). `EINVAL` for an unaligned
    /// start, an empty range, or one that passes `TASK_SIZE`.
    pub fn subscribe_range(
        &self,
        start: u64,
        len: u64,
        notifier: Arc<dyn MmuNotifier>,
    ) -> Result<Arc<Subscription>, Errno> {
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if !start.is_multiple_of(PAGE_SIZE) || len == 0 || end > TASK_SIZE {
            return Err(Errno::EINVAL);
        }
        let end = end.next_multiple_of(PAGE_SIZE);
        Ok(self.add_subscription(start, end, notifier))
    }

    fn add_subscription(
        &self,
        start: u64,
        end: u64,
        notifier: Arc<dyn MmuNotifier>,
    ) -> Arc<Subscription> {
        let sub = Arc::new(Subscription {
            start,
            end,
            notifier,
            seq: AtomicU64::new(0),
            state: Mutex::new(SubState::default()),
            idle: Condvar::new(),
        });
        let n = &self.notifiers;
        let _one_at_a_time = n.subscribing.lock();
        let mut subs = n.snapshot().to_vec();
        subs.push(sub.clone());
        n.replace(subs);
        n.wait_for_invalidations();
        sub
    }

    /// Ends `sub`: no callback runs after this returns (it waits for the
    /// invalidations in flight that called it). Must not be called from a
    /// notifier callback. Unsubscribing twice, or a subscription of another
    /// address space, does nothing.
    pub fn unsubscribe(&self, sub: &Subscription) {
        let n = &self.notifiers;
        let _one_at_a_time = n.subscribing.lock();
        let list = n.snapshot();
        if !list.iter().any(|s| std::ptr::eq(&**s, sub)) {
            return;
        }
        let rest = list
            .iter()
            .filter(|s| !std::ptr::eq(&***s, sub))
            .cloned()
            .collect();
        n.replace(rest);
        sub.remove();
    }

    /// Subscriptions now.
    pub fn subscriptions(&self) -> usize {
        self.notifiers.count.load(Ordering::Relaxed)
    }

    /// Calls `invalidate_range_start` of every subscription that `range`
    /// meets, before any entry of the range changes. On `Ok`, the caller
    /// changes the entries and hands the invalidation to the flush batch
    /// (`FlushBatch::invalidations`), whose flush ends it. On `Busy` (only
    /// when `!range.blockable`), nothing may change: the subscriptions that
    /// had started are ended already.
    pub(crate) fn invalidate_start(&self, range: NotifierRange) -> Result<Invalidation, Busy> {
        if range.blockable {
            crate::sync::assert_may_sleep(format_args!(
                "a blockable MMU-notifier invalidation ({:?} of {:#x}..{:#x})",
                range.event, range.start, range.end
            ));
        }
        let n = &self.notifiers;
        let shard = shard();
        let phase = n.phase.load(Ordering::SeqCst) & 1;
        let before = n.in_flight[shard][phase].fetch_add(1, Ordering::SeqCst);
        let mut inv = Invalidation {
            range,
            shard,
            phase,
            started: Vec::new(),
        };
        if before & SUBSCRIBED == 0 {
            return Ok(inv);
        }
        for sub in n.snapshot().iter().filter(|s| s.meets(&range)) {
            if !sub.begin() {
                continue;
            }
            loop {
                match sub.notifier.invalidate_range_start(&range) {
                    Ok(()) => break,
                    Err(Busy) if range.blockable => crate::sync::yield_now(),
                    Err(Busy) => {
                        sub.finish();
                        self.invalidate_end(inv);
                        return Err(Busy);
                    }
                }
            }
            inv.started.push(sub.clone());
        }
        Ok(inv)
    }

    /// The page-table range update (`PageTable::update`) announced to the
    /// notifiers first: the batch carries the invalidation, which its flush
    /// ends. `Busy` (only for a non-blockable range): nothing changed.
    pub(crate) fn update_range(
        &self,
        range: NotifierRange,
        change: impl FnMut(u64, Pte) -> Pte,
    ) -> Result<FlushBatch, Busy> {
        use crate::debug::{broken, ProtocolBreak};
        if range.event == Event::Unmap && broken(ProtocolBreak::SkipNotifier) {
            return Ok(self.pt.update(
                range.start,
                range.end,
                range.event,
                range.blockable,
                &self.frames,
                change,
            ));
        }
        let inv = self.invalidate_start(range)?;
        let mut batch = self.pt.update(
            range.start,
            range.end,
            range.event,
            range.blockable,
            &self.frames,
            change,
        );
        batch.invalidations.push(inv);
        Ok(batch)
    }

    /// Ends an invalidation: `invalidate_range_end` of the subscriptions that
    /// accepted its start, in reverse order. Called by the flush after the
    /// shootdown, or by a caller whose change did not happen.
    pub(crate) fn invalidate_end(&self, inv: Invalidation) {
        for sub in inv.started.iter().rev() {
            sub.notifier.invalidate_range_end(&inv.range);
            sub.finish();
        }
        self.notifiers.in_flight[inv.shard][inv.phase].fetch_sub(1, Ordering::SeqCst);
    }

    /// Resolves the pages of `[start, end)` for `access` as a secondary MMU
    /// needs them (Linux's `hmm_range_fault`): each page's CPU entry is read
    /// and, where it is missing or does not allow `access`, the fault path
    /// runs (it may sleep). The entry is marked accessed, and dirty for a
    /// write, as a CPU's access would mark it. Appends one [`ResolvedPage`]
    /// per page to `out`.
    ///
    /// What it returns may be stale as soon as it returns: call it between
    /// [`Subscription::read_begin`] and [`Subscription::read_retry`]. A page
    /// the access may not reach is its fault (`NoMapping`, `Protection`,
    /// and so on), as a `Cpu`'s access would be.
    pub fn resolve_range(
        &self,
        start: u64,
        end: u64,
        access: Access,
        out: &mut Vec<ResolvedPage>,
    ) -> Result<(), Fault> {
        self.resolve_range_with(start, end, access, &Faulter::new(), out)
    }

    /// [`AddressSpace::resolve_range`] with the caller's fault state (a
    /// device's, `mirror.rs`).
    pub(crate) fn resolve_range_with(
        &self,
        start: u64,
        end: u64,
        access: Access,
        faulter: &Faulter,
        out: &mut Vec<ResolvedPage>,
    ) -> Result<(), Fault> {
        let (need, used) = Pte::bits_for(access);
        let mut addr = start & !(PAGE_SIZE - 1);
        while addr < end {
            let resolved = {
                // Keeps the table alive while its entry is read and marked.
                let _pinned = vmspace_tree::pin();
                let pte = self.pt.read_for_access(addr);
                if !pte.has(need) {
                    None
                } else if pte.has(used) || self.pt.mark_used(addr, pte, used) {
                    let pte = Pte(pte.0 | used);
                    Some(ResolvedPage {
                        addr,
                        frame: pte.frame(),
                        writable: pte.has(Pte::WRITE) && pte.has(Pte::DIRTY),
                    })
                } else {
                    // The entry changed meanwhile: read it again.
                    continue;
                }
            };
            match resolved {
                Some(page) => {
                    out.push(page);
                    addr += PAGE_SIZE;
                }
                None => faulter.fault_for(self, addr, access)?,
            }
        }
        Ok(())
    }

    /// Asks the subscriptions that meet `[start, end)` whether they used a
    /// page there, clearing their records (all are asked).
    pub(crate) fn notifier_clear_young(&self, start: u64, end: u64) -> bool {
        self.ask_young(start, end, |n| n.clear_young(start, end))
    }

    /// Whether a subscription that meets `[start, end)` says a page there
    /// was used since its record was last cleared (`MmuNotifier::test_young`).
    pub fn notifier_test_young(&self, start: u64, end: u64) -> bool {
        self.ask_young(start, end, |n| n.test_young(start, end))
    }

    fn ask_young(&self, start: u64, end: u64, ask: impl Fn(&dyn MmuNotifier) -> bool) -> bool {
        if self.notifiers.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut young = false;
        for sub in self.notifiers.snapshot().iter() {
            if sub.start < end && start < sub.end {
                young |= ask(&*sub.notifier);
            }
        }
        young
    }

    /// The teardown's first step: every subscription is removed and told
    /// `release` (Linux's `mmu_notifier_release`), before the final unmap
    /// frees the frames.
    pub(crate) fn release_notifiers(&self) {
        let n = &self.notifiers;
        let subs = {
            let _one_at_a_time = n.subscribing.lock();
            n.replace(Vec::new())
        };
        for sub in subs.iter() {
            sub.remove();
            sub.notifier.release();
        }
    }
}

/// The calling thread's in-flight shard.
fn shard() -> usize {
    #[cfg(not(loom))]
    return crate::frame::thread_index() % SHARDS;
    #[cfg(loom)]
    return 0;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ranges_meet_when_they_overlap() {
        let r = NotifierRange::new(0x2000, 0x4000, Event::Unmap, true);
        assert!(r.meets(0x3000, 0x5000));
        assert!(r.meets(0x1000, 0x3000));
        assert!(!r.meets(0x4000, 0x5000));
        assert!(!r.meets(0x1000, 0x2000));
        assert!(!r.write_only);
        assert!(NotifierRange::new(0, 1, Event::Clean, false).write_only);
    }
}
