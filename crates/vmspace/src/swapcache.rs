//! The swap cache and the two halves of swapping: a private anonymous page
//! written to a swap slot (swap-out), and read back by a fault (swap-in).
//!
//! # What it owns
//!
//! * the swap cache: slot -> frame, for pages whose slot is being written,
//!   being read, or whose frame is still in memory beside the slot (a page
//!   swapped in for one of several sharers, a swap-out that could not finish).
//!   An entry holds one frame reference and one slot reference;
//! * each frame's swap word: `LOCKED` (the frame lock: held across a
//!   swap-out or swap-in, try-locked only: nobody sleeps on it with a lock
//!   held), `VALID` (the slot holds the frame's content) and the slot + 1
//!   of the frame's cache entry (0: not in the cache);
//! * the arena's swap device ([`crate::SwapDevice`]).
//!
//! # Swap-out (`FrameAllocator::swap_out`, called by reclaim)
//!
//! 1. try-lock the frame; give it a slot and a cache entry if it has none;
//! 2. walk the reverse map: every entry that maps the frame becomes a swap
//!    entry of the slot (one slot reference each), with the shootdown. A VMA
//!    that is `mlock`ed stops the walk (the page stays);
//! 3. if the frame is still mapped (a fault mapped it again through an entry
//!    the walk had passed, or the walk stopped), give up: the frame stays in
//!    the cache, unlocked; its remaining entries are read-only (see below);
//! 4. write the frame to the slot unless `VALID` (no entry maps the frame and
//!    it is locked, so its content cannot change: a fault that finds the
//!    frame in the cache must lock it to map it). A failed write keeps the
//!    frame in the cache: nothing is lost, a later pass tries again;
//! 5. freeze the frame (reference count 2 -> 0: only this walk's and the
//!    cache's references, so no fault holds it), remove the cache entry,
//!    drop its slot reference, free the frame.
//!
//! # Swap-in (`fault.rs`, `fault_swap`)
//!
//! A fault on a swap entry looks the slot up in the cache (a reference taken
//! with `try_get`, then the frame's slot checked again: the frame may have
//! been freed and reused meanwhile).
//!
//! * **Hit**: try-lock the frame (a held lock sends the fault away to retry
//!   with no lock held). The page is *exclusive* when the slot's references
//!   are this entry's and the cache's, and the frame is mapped nowhere and
//!   held by the cache and this fault only: then the entry maps it owned
//!   (writable for a write) and the cache entry goes. Otherwise it is mapped
//!   read-only and stays in the cache: a write makes a private copy
//!   (copy-on-write), as for any shared page.
//! * **Miss**: under the PTE lock, with the entry still the swap entry, take
//!   a slot reference (so the slot cannot be freed and reused while it is
//!   read); drop every lock; allocate a frame, lock it, insert it in the
//!   cache (a racing fault that inserted first wins: retry), read the slot
//!   into it, unlock, retry the fault (which now hits). A failed read removes
//!   the entry and is the fault's error ([`crate::FaultCause::Io`]).
//!
//! Why no write is lost: a frame in the cache is never mapped writable while
//! unlocked: it is mapped writable only by the exclusive hit, which removes
//! it from the cache first under the frame lock. So once swap-out holds the
//! lock and has turned every entry into a swap entry, nothing writes the
//! frame until it is freed or mapped again through the cache.
//!
//! Why a slot is read only when its content is there: a slot enters page
//! tables after its cache entry exists, and the cache entry of a swap-out
//! goes only after the write succeeded, so a fault that misses in the cache
//! for a slot its entry names reads the written page; its slot reference
//! keeps the slot from being freed and reallocated during the read.
//!
//! Locks: a cache shard's mutex is a leaf. The frame lock is only
//! try-locked; swap I/O runs with no lock held but frame locks
//! (`crate::sync`).

use crate::frame::{FrameAllocator, FrameId, Owner, PAGE_SIZE};
use crate::notifier::NotifierRange;
use crate::pagetable::{Event, FlushBatch, Pte};
use crate::swap::{SwapDevice, SwapSlot};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crossbeam_utils::CachePadded;
use std::collections::HashMap;

/// Shards of the cache map.
const CACHE_SHARDS: usize = 16;

/// The frame lock bit of a swap word.
const LOCKED: u64 = 1 << 63;
/// The slot holds the frame's content.
const VALID: u64 = 1 << 62;
/// Slot + 1 of the frame's cache entry.
const SLOT_BITS: u64 = u32::MAX as u64;

/// One shard of the cache map: slot index -> frame.
type CacheShard = CachePadded<Mutex<HashMap<u32, FrameId>>>;

/// The swap device, the swap cache and the frames' swap words.
pub(crate) struct Swap {
    pub(crate) device: SwapDevice,
    shards: Box<[CacheShard]>,
    words: Box<[AtomicU64]>,
}

/// What [`FrameAllocator::swap_out`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SwapOut {
    /// The page is in its slot and the frame is free.
    Freed,
    /// The frame is locked by someone else, or held (a fault uses it).
    Busy,
    /// An `mlock`ed VMA maps it.
    Locked,
    /// It is still mapped (a fault mapped it again meanwhile).
    Mapped,
    /// No free slot.
    SwapFull,
    /// The write to the slot failed (the frame stays in memory).
    WriteFailed,
}

impl Swap {
    /// Swap for an arena of `frames` frames, on `device`.
    pub(crate) fn new(device: SwapDevice, frames: u32) -> Swap {
        Swap {
            device,
            shards: (0..CACHE_SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::new())))
                .collect(),
            words: (0..frames).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn word(&self, f: FrameId) -> &AtomicU64 {
        &self.words[f.0 as usize]
    }

    fn shard(&self, slot: SwapSlot) -> &Mutex<HashMap<u32, FrameId>> {
        &self.shards[slot.index() as usize % CACHE_SHARDS]
    }

    /// The slot of `f`'s cache entry, if it has one.
    pub(crate) fn slot_of(&self, f: FrameId) -> Option<SwapSlot> {
        let w = self.word(f).load(Ordering::Acquire) & SLOT_BITS;
        (w != 0).then(|| SwapSlot::from_index((w - 1) as u32))
    }

    /// Takes the frame lock if it is free.
    pub(crate) fn try_lock(&self, f: FrameId) -> bool {
        let w = self.word(f);
        let mut cur = w.load(Ordering::Relaxed);
        loop {
            if cur & LOCKED != 0 {
                return false;
            }
            match w.compare_exchange_weak(cur, cur | LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Releases the frame lock.
    pub(crate) fn unlock(&self, f: FrameId) {
        self.word(f).fetch_and(!LOCKED, Ordering::Release);
    }

    fn set_valid(&self, f: FrameId, valid: bool) {
        if valid {
            self.word(f).fetch_or(VALID, Ordering::Relaxed);
        } else {
            self.word(f).fetch_and(!VALID, Ordering::Relaxed);
        }
    }

    fn is_valid(&self, f: FrameId) -> bool {
        self.word(f).load(Ordering::Relaxed) & VALID != 0
    }

    /// The frame cached for `slot`, if any (no reference taken).
    fn lookup(&self, slot: SwapSlot) -> Option<FrameId> {
        self.shard(slot).lock().get(&slot.index()).copied()
    }

    /// Enters `f` (locked by the caller) as `slot`'s frame; `false` if the
    /// slot has a frame already. The entry takes a frame reference and a
    /// slot reference from the caller.
    fn insert(&self, slot: SwapSlot, f: FrameId) -> bool {
        let mut map = self.shard(slot).lock();
        if map.contains_key(&slot.index()) {
            return false;
        }
        map.insert(slot.index(), f);
        self.word(f)
            .store(LOCKED | (u64::from(slot.index()) + 1), Ordering::Release);
        true
    }

    /// Removes `slot`'s entry, which is `f` (locked by the caller), and
    /// unlocks `f`. The entry's frame and slot references are the caller's
    /// to drop.
    fn remove(&self, slot: SwapSlot, f: FrameId) {
        let removed = self.shard(slot).lock().remove(&slot.index());
        debug_assert_eq!(removed, Some(f), "{slot}");
        self.word(f).store(0, Ordering::Release);
    }

    /// Cache entries (slot, frame), for checks.
    pub(crate) fn entries(&self) -> Vec<(SwapSlot, FrameId)> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .iter()
                    .map(|(&k, &f)| (SwapSlot::from_index(k), f))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl FrameAllocator {
    /// The arena's swap, if it has a device.
    pub(crate) fn swap(&self) -> Option<&Swap> {
        self.swap.as_ref()
    }

    /// The arena's swap device, if it has one.
    pub fn swap_device(&self) -> Option<&SwapDevice> {
        self.swap.as_ref().map(|s| &s.device)
    }

    /// One more reference to a slot a swap entry names (fork copies the
    /// entry); `false` if it cannot be taken (no swap, a free slot, or a
    /// count at its maximum of 2^32 - 1).
    pub(crate) fn swap_dup(&self, slot: SwapSlot) -> bool {
        self.swap().is_some_and(|s| s.device.dup(slot).is_ok())
    }

    /// Drops the slot reference of a removed swap entry. If only the swap
    /// cache still holds the slot, its frame is dropped too when that can be
    /// done at once (no one holds it): nothing can read that copy any more.
    pub(crate) fn release_swap_entry(&self, slot: SwapSlot) {
        let Some(swap) = self.swap() else { return };
        let freed = swap.device.free(slot);
        debug_assert!(freed.is_ok(), "{slot}: {freed:?}");
        if freed == Ok(false) && swap.device.refcount(slot) == 1 {
            self.drop_unused_cache_entry(slot);
        }
    }

    /// Drops `slot`'s cache entry and frame if the cache holds the slot's
    /// only reference and nobody holds or maps the frame; returns whether
    /// it did.
    pub(crate) fn drop_unused_cache_entry(&self, slot: SwapSlot) -> bool {
        let Some(swap) = self.swap() else {
            return false;
        };
        let Some(f) = swap.lookup(slot) else {
            return false;
        };
        if !self.try_get(f) {
            return false;
        }
        if swap.slot_of(f) != Some(slot) || !swap.try_lock(f) {
            self.put(f);
            return false;
        }
        let unused = swap.device.refcount(slot) == 1 && self.mapcount(f) == 0;
        if unused && self.freeze(f, 2) {
            swap.remove(slot, f);
            let _ = swap.device.free(slot);
            self.free_frozen(f);
            return true;
        }
        swap.unlock(f);
        self.put(f);
        false
    }

    /// Drops every swap-cache frame that nothing maps or holds and whose
    /// slot only the cache holds (end-of-run leak checks; reclaim drops
    /// them as it meets them). Returns how many it dropped.
    pub fn drop_swap_cache(&self) -> usize {
        let Some(swap) = self.swap() else { return 0 };
        swap.entries()
            .into_iter()
            .filter(|&(slot, _)| self.drop_unused_cache_entry(slot))
            .count()
    }

    /// Checks every slot's reference count against its holders: the swap
    /// entries of `spaces` (every address space on this arena that is
    /// alive) and the swap cache (one each). Run it with nothing changing
    /// meanwhile (end of a test); a slot held by no one is a leak.
    pub fn check_swap(&self, spaces: &[&crate::AddressSpace]) -> Result<(), String> {
        let Some(swap) = self.swap() else {
            return Ok(());
        };
        let _quiet = self.hold_off_reclaim();
        let mut expected: HashMap<SwapSlot, u32> = HashMap::new();
        for space in spaces {
            for (slot, n) in space.swap_references() {
                *expected.entry(slot).or_insert(0) += n;
            }
        }
        for (slot, f) in swap.entries() {
            *expected.entry(slot).or_insert(0) += 1;
            if swap.slot_of(f) != Some(slot) {
                return Err(format!(
                    "cache entry {slot} -> frame {f:?}, whose word says {:?}",
                    swap.slot_of(f)
                ));
            }
            if self.refcount(f) == 0 {
                return Err(format!("cache entry {slot} -> free frame {f:?}"));
            }
        }
        swap.device.check_against(&expected)
    }

    /// Pages in the swap cache.
    pub fn swap_cache_pages(&self) -> usize {
        self.swap().map_or(0, |s| s.entries().len())
    }

    /// Swap-out of a private anonymous frame (see the module documentation);
    /// consumes the caller's reference to `f`.
    pub(crate) fn swap_out(&self, f: FrameId) -> SwapOut {
        let Some(swap) = self.swap() else {
            self.put(f);
            return SwapOut::SwapFull;
        };
        if !swap.try_lock(f) {
            self.put(f);
            return SwapOut::Busy;
        }
        let slot = match swap.slot_of(f) {
            Some(slot) => slot,
            None => {
                let Some(slot) = swap.device.alloc() else {
                    swap.unlock(f);
                    self.put(f);
                    return SwapOut::SwapFull;
                };
                self.get(f);
                // A slot in the cache holds a reference, so a fresh one has
                // no entry.
                let fresh = swap.insert(slot, f);
                debug_assert!(fresh, "{slot} allocated while cached");
                slot
            }
        };
        // Under each entry's PTE lock: a pin (taken under it, `pin.rs`)
        // that came after the visit's check keeps the entry.
        let done = self.unmap_frame(f, true, || {
            if self.pincount(f) > 0 {
                return None;
            }
            swap.device.dup(slot).is_ok().then(|| Pte::swap(slot))
        });
        let (mlocked, dirty) = (done.mlocked, done.dirty);
        if dirty {
            swap.set_valid(f, false);
        }
        let outcome = if mlocked {
            SwapOut::Locked
        } else if self.mapcount(f) != 0 {
            SwapOut::Mapped
        } else if !swap.is_valid(f)
            && !crate::debug::broken(crate::debug::ProtocolBreak::SwapSkipWrite)
            && !self.write_to_slot(swap, f, slot)
        {
            SwapOut::WriteFailed
        } else if self.freeze(f, 2) {
            swap.remove(slot, f);
            let _ = swap.device.free(slot);
            self.free_frozen(f);
            return SwapOut::Freed;
        } else {
            SwapOut::Busy
        };
        swap.unlock(f);
        self.put(f);
        outcome
    }

    /// Writes the locked, unmapped frame `f` to `slot`; returns whether the
    /// write succeeded (then the slot is `VALID`).
    fn write_to_slot(&self, swap: &Swap, f: FrameId, slot: SwapSlot) -> bool {
        let mut page = vec![0u8; PAGE_SIZE as usize];
        self.read_frame(f, &mut page);
        let ok = swap.device.write(slot, &page).is_ok();
        if ok {
            swap.set_valid(f, true);
            self.reclaim_counters().swap_outs.bump();
        } else {
            self.reclaim_counters().swap_out_failures.bump();
        }
        ok
    }

    /// Reclaim of a lazy-free frame (`madvise(MADV_FREE)`, `frame.rs`):
    /// every entry that maps it and is still clean is removed; a written
    /// one keeps the page (and the mark goes). Returns whether the frame was
    /// freed; consumes the caller's reference.
    pub(crate) fn drop_lazyfree(&self, f: FrameId) -> bool {
        let mut kept = false;
        let blockable = self.walks_may_sleep();
        self.walk_rmap(f, &mut |space, addr| {
            if space.mlocked_at(addr) {
                kept = true;
                return;
            }
            let range = NotifierRange::new(addr, addr + PAGE_SIZE, Event::Reclaim, blockable);
            let Ok(inv) = space.invalidate_start(range) else {
                self.reclaim_counters().notifier_busy.bump();
                kept = true;
                return;
            };
            let mut batch = FlushBatch::new(Event::Reclaim, true);
            batch.invalidations.push(inv);
            if space.pt.clear_if_clean(addr, f, self, &mut batch) == Some(false) {
                kept = true;
            }
            space.flush(batch);
        });
        if kept {
            self.clear_lazyfree(f);
        }
        if !kept && self.mapcount(f) == 0 && self.freeze(f, 1) {
            self.free_frozen(f);
            self.reclaim_counters().lazyfree_dropped.bump();
            return true;
        }
        self.put(f);
        false
    }

    /// The fault's cache lookup: the frame cached for `slot`, with a
    /// reference, or `None`.
    pub(crate) fn swap_cache_get(&self, slot: SwapSlot) -> Option<FrameId> {
        let swap = self.swap()?;
        let f = swap.lookup(slot)?;
        if !self.try_get(f) {
            return None;
        }
        if swap.slot_of(f) != Some(slot) {
            self.put(f);
            return None;
        }
        Some(f)
    }

    /// Whether the fault holding the locked cache frame `f` of `slot` (and
    /// one reference to it) may map it exclusively (module documentation).
    pub(crate) fn swap_exclusive(&self, f: FrameId, slot: SwapSlot) -> bool {
        self.swap().is_some_and(|s| s.device.refcount(slot) == 2)
            && self.mapcount(f) == 0
            && self.refcount(f) == 2
    }

    /// After the exclusive hit installed `f`: its cache entry goes (the
    /// frame's and the slot's references of the entry, and the slot
    /// reference of the replaced swap entry), and the lock with it.
    pub(crate) fn swap_take_exclusive(&self, f: FrameId, slot: SwapSlot) {
        let Some(swap) = self.swap() else { return };
        swap.remove(slot, f);
        self.put(f);
        let _ = swap.device.free(slot);
        let _ = swap.device.free(slot);
        self.reclaim_counters().swap_ins.bump();
    }

    /// After a shared hit installed `f` read-only: the replaced swap entry's
    /// slot reference goes; `f` is unlocked.
    pub(crate) fn swap_map_shared(&self, f: FrameId, slot: SwapSlot) {
        let Some(swap) = self.swap() else { return };
        swap.unlock(f);
        self.release_swap_entry(slot);
        self.reclaim_counters().swap_ins.bump();
    }

    /// Releases the frame lock of a cache frame.
    pub(crate) fn swap_unlock(&self, f: FrameId) {
        if let Some(swap) = self.swap() {
            swap.unlock(f);
        }
    }

    /// Try-locks a cache frame.
    pub(crate) fn swap_try_lock(&self, f: FrameId) -> bool {
        self.swap().is_some_and(|s| s.try_lock(f))
    }

    /// The miss half of swap-in, with no lock held: reads `slot` into a new
    /// frame owned by `owner` and enters it in the cache. Consumes the slot
    /// reference the fault took (the cache entry keeps it, or it is
    /// dropped). `Ok` means "retry the fault" (a racing fault may have
    /// entered the page first).
    pub(crate) fn swap_in(&self, slot: SwapSlot, owner: Owner) -> Result<(), SwapInError> {
        let Some(swap) = self.swap() else {
            return Err(SwapInError::Io);
        };
        let Some(f) = self.alloc() else {
            let _ = swap.device.free(slot);
            return Err(SwapInError::NoMemory);
        };
        let locked = swap.try_lock(f);
        debug_assert!(locked, "a fresh frame's swap word is clear");
        if !swap.insert(slot, f) {
            swap.unlock(f);
            self.put(f);
            self.release_swap_entry(slot);
            crate::sync::yield_now();
            return Ok(());
        }
        let mut page = vec![0u8; PAGE_SIZE as usize];
        if swap.device.read(slot, &mut page).is_err() {
            swap.remove(slot, f);
            self.put(f);
            self.release_swap_entry(slot);
            self.reclaim_counters().swap_in_failures.bump();
            return Err(SwapInError::Io);
        }
        self.write_frame(f, &page);
        self.set_owner(f, owner);
        swap.set_valid(f, true);
        swap.unlock(f);
        Ok(())
    }
}

/// Why a swap-in failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SwapInError {
    /// No frame for the page.
    NoMemory,
    /// The read failed (or there is no swap device).
    Io,
}
