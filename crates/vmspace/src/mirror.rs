//! A device mirror: a secondary MMU with its own page table, kept coherent
//! with an address space through an MMU notifier (`notifier.rs`), as Linux's
//! `lib/test_hmm.c` dmirror is.
//!
//! # What it owns
//!
//! [`Mirror`] subscribes to its address space and owns the mirror table:
//! page → (frame, writable, young), behind one reader-writer lock.
//! [`Device`] handles are the device's threads. A device access looks the
//! page up under the table's read lock and touches the frame while holding
//! it, so it walks no CPU page table. A miss is a device fault:
//!
//! 1. `seq = read_begin()`;
//! 2. [`AddressSpace::resolve_range`] (Linux's `hmm_range_fault`) walks the
//!    CPU page table, or runs the CPU fault path, for the page;
//! 3. the table's write lock is taken, and the entry is installed only if
//!    `!read_retry(seq)`; otherwise the fault starts over and counts a retry.
//!
//! An entry is writable only if the CPU entry was writable and dirty when it
//! was resolved, so cleaning a page (write-back, `MADV_FREE`), which
//! write-protects through the notifier, makes the next device write fault
//! and dirty the CPU entry again.
//!
//! # Invalidation
//!
//! `invalidate_range_start` takes the write lock and removes the range's
//! entries, or only their write access for a write-only range (a permission
//! downgrade). With a configured latency it then sleeps while still holding
//! the lock, modelling a device TLB flush during which device accesses
//! stall. When the range holds nothing it has to drop, it returns at once.
//! A non-blockable call does not sleep: it answers `Busy` if the lock is
//! held or the flush would sleep.
//!
//! The mirror holds no frame references. A frame is freed only after the
//! flush of the change that removed its CPU entry, and that change's
//! invalidation (before the change) removed the mirror's entry under the
//! write lock, so no device access is still using it (`notifier.rs`, "The
//! sequence").
//!
//! Locks: the table lock ranks below whatever an invalidation's caller holds
//! (the address-space write lock, a VMA read lock, an rmap lock). A device
//! fault takes it only after resolving, with nothing else held.

use crate::error::{Access, Fault, FaultCause};
use crate::frame::{FrameAllocator, FrameId, PAGE_SIZE};
use crate::madvise::Faulter;
use crate::notifier::{Busy, MmuNotifier, NotifierRange, ResolvedPage, Subscription};
use crate::space::AddressSpace;
use crate::sync::RwLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How a [`Mirror`] behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorConfig {
    /// How long an invalidation that removed or downgraded entries sleeps
    /// (a device TLB flush); zero for none.
    pub invalidate_sleep: Duration,
    /// Only one such invalidation in this many sleeps, picked at random (a
    /// hash of the invalidation's number; 0 and 1: every one), so that
    /// sleeping and quick flushes mix.
    pub sleep_one_in: u32,
}

/// What a mirror and its devices did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Loads and stores by its [`Device`]s that completed.
    pub device_accesses: u64,
    /// Device faults: misses resolved through the CPU page table.
    pub device_faults: u64,
    /// Resolves thrown away because an invalidation moved the sequence.
    pub fault_retries: u64,
    /// Invalidations that removed or downgraded entries.
    pub invalidations: u64,
    /// Of those, the ones that slept (the configured latency).
    pub invalidations_slept: u64,
    /// Non-blockable invalidations answered busy.
    pub busy: u64,
    /// Entries removed by invalidations.
    pub zapped: u64,
    /// Entries that lost write access to a write-only invalidation.
    pub write_protected: u64,
}

/// One page of the mirror table.
struct Entry {
    frame: FrameId,
    writable: bool,
    /// Used by a device since the last `clear_young`.
    young: AtomicBool,
}

/// Counters shared by the mirror, its notifier and its devices.
#[derive(Default)]
struct Counters {
    device_accesses: AtomicU64,
    device_faults: AtomicU64,
    fault_retries: AtomicU64,
    invalidations: AtomicU64,
    invalidations_slept: AtomicU64,
    busy: AtomicU64,
    zapped: AtomicU64,
    write_protected: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The state the notifier, the mirror and its devices share.
struct Shared {
    space: Weak<AddressSpace>,
    frames: Arc<FrameAllocator>,
    config: MirrorConfig,
    /// Page address → entry (see "What it owns").
    table: RwLock<BTreeMap<u64, Entry>>,
    /// The address space was torn down, or the mirror dropped: every
    /// device access fails from now on.
    released: AtomicBool,
    counters: Counters,
}

impl Shared {
    /// Removes (or write-protects) the entries of `range` in `table`;
    /// returns how many changed.
    fn invalidate(&self, table: &mut BTreeMap<u64, Entry>, range: &NotifierRange) -> u64 {
        let c = &self.counters;
        if range.write_only {
            let mut n = 0;
            for (_, e) in table.range_mut(range.start..range.end) {
                if e.writable {
                    e.writable = false;
                    n += 1;
                }
            }
            bump(&c.write_protected, n);
            return n;
        }
        let pages: Vec<u64> = table
            .range(range.start..range.end)
            .map(|(&p, _)| p)
            .collect();
        for p in &pages {
            table.remove(p);
        }
        bump(&c.zapped, pages.len() as u64);
        pages.len() as u64
    }

    /// Whether `range` holds an entry the invalidation has to change.
    fn affects(table: &BTreeMap<u64, Entry>, range: &NotifierRange) -> bool {
        let mut entries = table.range(range.start..range.end);
        if range.write_only {
            entries.any(|(_, e)| e.writable)
        } else {
            entries.next().is_some()
        }
    }

    fn release(&self) {
        let mut t = self.table.write();
        self.released.store(true, Ordering::Release);
        t.clear();
    }
}

impl MmuNotifier for Shared {
    fn invalidate_range_start(&self, range: &NotifierRange) -> Result<(), Busy> {
        let c = &self.counters;
        let mut table = if range.blockable {
            self.table.write()
        } else {
            let Some(t) = self.table.try_write() else {
                bump(&c.busy, 1);
                return Err(Busy);
            };
            t
        };
        if !Shared::affects(&table, range) {
            return Ok(());
        }
        let sleep = self.config.invalidate_sleep;
        let nth = c.invalidations.load(Ordering::Relaxed) + c.busy.load(Ordering::Relaxed);
        let sleeps = !sleep.is_zero() && picked(nth, self.config.sleep_one_in);
        if !range.blockable && sleeps {
            bump(&c.busy, 1);
            return Err(Busy);
        }
        self.invalidate(&mut table, range);
        bump(&c.invalidations, 1);
        if sleeps {
            crate::sync::assert_may_sleep("the device mirror's invalidation (a device TLB flush)");
            bump(&c.invalidations_slept, 1);
            std::thread::sleep(sleep);
        }
        drop(table);
        Ok(())
    }

    fn clear_young(&self, start: u64, end: u64) -> bool {
        // Asked under the rmap lock, which may be a spinning one: a table
        // held by an invalidation (which may sleep) counts as young rather
        // than being waited for.
        let Some(table) = self.table.try_read() else {
            return true;
        };
        let mut young = false;
        for (_, e) in table.range(start..end) {
            young |= e.young.swap(false, Ordering::Relaxed);
        }
        young
    }

    fn test_young(&self, start: u64, end: u64) -> bool {
        let table = self.table.read();
        let young = table
            .range(start..end)
            .any(|(_, e)| e.young.load(Ordering::Relaxed));
        young
    }

    fn release(&self) {
        Shared::release(self);
    }
}

/// A device mirror of one address space (see the module documentation).
/// Dropping it unsubscribes it; its devices' accesses fail afterwards.
pub struct Mirror {
    shared: Arc<Shared>,
    sub: Arc<Subscription>,
}

impl Mirror {
    /// A mirror of `space`, subscribed to all of it.
    pub fn new(space: &Arc<AddressSpace>, config: MirrorConfig) -> Mirror {
        let shared = Arc::new(Shared {
            space: Arc::downgrade(space),
            frames: space.frames().clone(),
            config,
            table: RwLock::new(BTreeMap::new()),
            released: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let sub = space.subscribe(shared.clone());
        Mirror { shared, sub }
    }

    /// A device thread's handle.
    pub fn device(&self) -> Device {
        Device {
            shared: self.shared.clone(),
            sub: self.sub.clone(),
            faulter: Faulter::new(),
            resolved: Vec::new(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> MirrorStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MirrorStats {
            device_accesses: get(&c.device_accesses),
            device_faults: get(&c.device_faults),
            fault_retries: get(&c.fault_retries),
            invalidations: get(&c.invalidations),
            invalidations_slept: get(&c.invalidations_slept),
            busy: get(&c.busy),
            zapped: get(&c.zapped),
            write_protected: get(&c.write_protected),
        }
    }

    /// Pages the mirror maps now.
    pub fn entries(&self) -> usize {
        self.shared.table.read().len()
    }

    /// What the mirror maps at `addr`: the frame, and whether writes may
    /// use it.
    pub fn translation(&self, addr: u64) -> Option<(FrameId, bool)> {
        let t = self.shared.table.read();
        t.get(&(addr & !(PAGE_SIZE - 1)))
            .map(|e| (e.frame, e.writable))
    }

    /// Whether its address space was torn down (`release`).
    pub fn is_released(&self) -> bool {
        self.shared.released.load(Ordering::Acquire)
    }

    /// The subscription its invalidations come through.
    pub fn subscription(&self) -> &Arc<Subscription> {
        &self.sub
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        if let Some(space) = self.shared.space.upgrade() {
            space.unsubscribe(&self.sub);
        }
        self.shared.release();
    }
}

/// A device thread's handle on a [`Mirror`]: loads and stores through the
/// mirror table, device faults on a miss. `Send`, not `Sync`.
pub struct Device {
    shared: Arc<Shared>,
    sub: Arc<Subscription>,
    faulter: Faulter,
    resolved: Vec<ResolvedPage>,
}

impl Device {
    /// Loads an aligned 8-byte word.
    pub fn read_u64(&mut self, addr: u64) -> Result<u64, Fault> {
        check_aligned(addr, Access::Read)?;
        self.with_frame(addr, Access::Read, |frames, f, off| {
            frames.word(f, off).load(Ordering::Relaxed)
        })
    }

    /// Stores an aligned 8-byte word.
    pub fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), Fault> {
        check_aligned(addr, Access::Write)?;
        self.with_frame(addr, Access::Write, |frames, f, off| {
            frames.word(f, off).store(value, Ordering::Relaxed)
        })
    }

    /// Atomic fetch-add on an aligned word; returns the previous value.
    pub fn fetch_add_u64(&mut self, addr: u64, value: u64) -> Result<u64, Fault> {
        check_aligned(addr, Access::Write)?;
        self.with_frame(addr, Access::Write, |frames, f, off| {
            frames.word(f, off).fetch_add(value, Ordering::SeqCst)
        })
    }

    /// Faults `[start, end)` into the mirror for `access` ahead of use
    /// (dmirror's prefetch), under one sequence: all or nothing is
    /// installed, and a raced resolve starts over.
    pub fn fault_range(&mut self, start: u64, end: u64, access: Access) -> Result<(), Fault> {
        let start = start & !(PAGE_SIZE - 1);
        self.fault(start, end.max(start + 1), access)
    }

    /// Runs `f` on the frame that `addr` maps to in the mirror, under the
    /// table's read lock, after a device fault if the mirror has no entry
    /// that allows `access`.
    fn with_frame<R>(
        &mut self,
        addr: u64,
        access: Access,
        f: impl Fn(&FrameAllocator, FrameId, u64) -> R,
    ) -> Result<R, Fault> {
        let page = addr & !(PAGE_SIZE - 1);
        loop {
            {
                let table = self.shared.table.read();
                if let Some(e) = table.get(&page) {
                    if access != Access::Write || e.writable {
                        e.young.store(true, Ordering::Relaxed);
                        let r = f(&self.shared.frames, e.frame, addr - page);
                        drop(table);
                        bump(&self.shared.counters.device_accesses, 1);
                        return Ok(r);
                    }
                }
            }
            self.fault(page, page + PAGE_SIZE, access)?;
        }
    }

    /// A device fault of `[start, end)` (see the module documentation).
    fn fault(&mut self, start: u64, end: u64, access: Access) -> Result<(), Fault> {
        let gone = Fault {
            addr: start,
            access,
            cause: FaultCause::NoMapping,
        };
        let space = self.shared.space.upgrade().ok_or(gone)?;
        let c = &self.shared.counters;
        bump(&c.device_faults, 1);
        loop {
            if self.shared.released.load(Ordering::Acquire) {
                return Err(gone);
            }
            let seq = self.sub.read_begin();
            self.resolved.clear();
            space.resolve_range_with(start, end, access, &self.faulter, &mut self.resolved)?;
            let mut table = self.shared.table.write();
            if self.sub.read_retry(seq) {
                drop(table);
                bump(&c.fault_retries, 1);
                continue;
            }
            if self.shared.released.load(Ordering::Acquire) {
                return Err(gone);
            }
            for p in &self.resolved {
                table.insert(
                    p.addr,
                    Entry {
                        frame: p.frame,
                        writable: p.writable,
                        young: AtomicBool::new(true),
                    },
                );
            }
            return Ok(());
        }
    }
}

/// Whether invalidation number `nth` is one of the "one in `one_in`" that
/// sleep: a hash of `nth` (SplitMix64's finalizer), so the sleeping ones
/// fall at random but the same ones in every run.
fn picked(nth: u64, one_in: u32) -> bool {
    if one_in <= 1 {
        return true;
    }
    let mut x = nth.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)).is_multiple_of(u64::from(one_in))
}

fn check_aligned(addr: u64, access: Access) -> Result<(), Fault> {
    if !addr.is_multiple_of(8) {
        return Err(Fault {
            addr,
            access,
            cause: FaultCause::Protection,
        });
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::picked;

    #[test]
    fn one_in_n_sleeps_about_one_in_n() {
        assert!((0..100).all(|n| picked(n, 0) && picked(n, 1)));
        let n = (0..30_000).filter(|&n| picked(n, 3)).count();
        assert!((9_000..11_000).contains(&n), "{n} of 30000");
    }
}
