//! The fault path: one entry per strategy, one shared handler, one fallback.
//!
//! ```text
//! handle_fault
//!   mmap-lock:    fault_with_mmap_lock                       (address-space lock, read)
//!   per-vma:      fault_per_vma  -> fault_with_mmap_lock on fallback
//!   speculative:  fault_speculative -> fault_per_vma -> fault_with_mmap_lock
//! each of them:   find the VMA, then fault_in_vma (shared by all three)
//! ```
//!
//! * **mmap-lock** holds the address-space lock for reading while it finds the
//!   VMA and resolves the fault. Writers are excluded.
//! * **per-vma** finds the VMA under an epoch guard and read-locks only it
//!   (`vma.rs`). A VMA that is missing, write-locked or detached sends the fault
//!   to the lock path. A VMA's fields are immutable, so once locked the fault
//!   uses them freely; the writer that wants to change the range waits for the
//!   lock holders (faults that never sleep) before touching the page table.
//! * **speculative** takes no lock and writes no shared line: it finds the VMA
//!   under an epoch guard, reads the VMA's lock word (`Vma::speculation_start`:
//!   attached, and not marked by the current writer), prepares the page
//!   (page-cache lookup, frame allocation, zeroing or copying), then takes the
//!   PTE lock and installs the entry only if the lock word is unchanged. Every
//!   writer that changes or removes a VMA's range marks the VMA first (the
//!   per-VMA protocol, `vma.rs`), and writer sequences only grow, so either
//!   the fault validates first and the writer's later pass under the PTE lock
//!   sees (and fixes) its entry, or the writer marked first and the fault sees
//!   the new word and starts over. (A mark only around each page-table pass is
//!   not enough: a fault between `mremap`'s PTE move and the removal of the old
//!   VMA would map a fresh zero page where the data just left; the torture
//!   checker caught that with an earlier design.) Page tables the fault
//!   creates are ordered against the writer's scan by SeqCst on both sides
//!   (the mark is a SeqCst read-modify-write; see `pagetable::walk`). A VMA
//!   that is marked sends the fault to the per-VMA path, which waits a little
//!   for the writer. Anything unusual (no anonymous object yet, a stack to
//!   grow, a changed word three times) falls back to the lock path.
//!
//!   The validated word is per VMA, not one address-space sequence, so a
//!   thread changing mappings elsewhere does not make these faults retry.
//!
//!   `madvise(DONTNEED)` marks no VMA; a fault racing it installs only if the
//!   PTE is still what it saw (`PteTable::install`), as on the per-vma path, and an
//!   entry installed after the zap is a fault that came after the advice.
//!
//! A fault that must wait for I/O (a page of a slow backing store) drops every
//! lock it holds, reads the page with nothing held, and starts over (Linux's
//! `VM_FAULT_RETRY`): writers never wait for someone else's I/O.

use crate::config::Strategy;
use crate::error::{Access, Fault, FaultCause};
use crate::frame::{FrameId, Owner, PAGE_SIZE};
use crate::notifier::{Busy, NotifierRange};
use crate::object::{AnonObject, File, FillError};
use crate::pagetable::{Event, NotInstalled, Pte, PteTable};
use crate::space::AddressSpace;
use crate::stats::{Counter, FaultCounters};
use crate::swap::SwapSlot;
use crate::swapcache::SwapInError;
use crate::sync::{AtomicU64, Ordering};
use crate::vma::{Backing, SeqHint, Vma};
use crate::vmacache::VmaCache;
use std::cell::{RefCell, RefMut};
use std::sync::Arc;

/// Times a per-VMA fault waits for a write section before it falls back.
const MAX_WRITER_WAITS: u32 = 4;
/// Spin iterations of one wait (a few microseconds).
const WRITER_WAIT_SPINS: u32 = 4096;
/// Rounds of reclaim that free nothing after which a fault that found no
/// frame fails.
const BARREN_OOM_ROUNDS: u32 = 4;
/// Rounds of reclaim and retry after which it fails whatever happened.
const MAX_OOM_ROUNDS: u32 = 256;

/// What a fault must wait for with no lock held before it starts over.
pub(crate) enum WaitFor {
    /// A page of a slow store, read into the page cache.
    Page(Arc<File>, u64),
    /// A swap slot, read into the swap cache as a page of this owner. The
    /// fault holds one reference to the slot, which the read consumes.
    Swap(SwapSlot, Owner),
    /// A frame that a swap-out or another swap-in holds locked.
    Unlocked,
}

/// What `fault_in_vma` did.
pub(crate) enum Step {
    /// An entry is installed (by us or by a racing fault): retry the access.
    Done,
    /// Something must be read or finish first, with no lock held.
    Wait(WaitFor),
    /// The speculative path cannot handle this fault.
    Fallback,
    /// Speculative validation failed: start over.
    Stale,
}

/// How `fault_in_vma` validates before installing an entry.
pub(crate) enum Validate<'a> {
    /// The VMA is stable (address-space lock or VMA lock held).
    Locked,
    /// Speculative: install only if the VMA's lock word still has this value.
    LockWord(&'a AtomicU64, u64),
}

impl Validate<'_> {
    fn still_valid(&self) -> bool {
        match *self {
            Validate::Locked => true,
            Validate::LockWord(word, seen) => {
                word.load(Ordering::SeqCst) == seen
                    || crate::debug::broken(crate::debug::ProtocolBreak::SkipRevalidation)
            }
        }
    }

    fn speculative(&self) -> bool {
        matches!(self, Validate::LockWord(..))
    }
}

fn fault(addr: u64, access: Access, cause: FaultCause) -> Fault {
    Fault {
        addr,
        access,
        cause,
    }
}

impl AddressSpace {
    /// Resolves a missing or insufficient translation for `access` at `addr`,
    /// or says why it cannot be resolved.
    pub(crate) fn handle_fault(
        &self,
        stats: &FaultCounters,
        cache: &RefCell<VmaCache>,
        hint: &SeqHint,
        addr: u64,
        access: Access,
    ) -> Result<(), Fault> {
        let lockless = match self.strategy() {
            Strategy::MmapLock => None,
            Strategy::PerVma => self.fault_per_vma(stats, cache, hint, addr, access),
            Strategy::Speculative => self
                .fault_speculative(stats, cache, hint, addr, access)
                .or_else(|| self.fault_per_vma(stats, cache, hint, addr, access)),
        };
        let result = match lockless {
            Some(result) => result,
            None => {
                if self.strategy() != Strategy::MmapLock {
                    stats.bump(Counter::Fallback);
                }
                self.fault_with_mmap_lock(stats, addr, access)
            }
        };
        match result {
            Err(f) if f.cause == FaultCause::OutOfMemory => {
                self.fault_after_collecting(stats, addr, access)
            }
            r => r,
        }
    }

    /// Out of frames. Some may still wait in deferred garbage for a grace
    /// period (pages of dropped shared memory, files whose last reference a
    /// removed VMA holds), which the fault's own epoch guard held back; the
    /// rest must be reclaimed (`reclaim.rs`). With nothing held now, make
    /// room and fault again on the lock path, a bounded number of times:
    /// other threads may take the frames first, and when nothing can be
    /// reclaimed the fault fails promptly.
    #[cold]
    fn fault_after_collecting(
        &self,
        stats: &FaultCounters,
        addr: u64,
        access: Access,
    ) -> Result<(), Fault> {
        // Frames this thread freed may go to another thread first: retry
        // while reclaim makes progress, and give up after a few rounds that
        // freed nothing (Linux's `should_reclaim_retry`), or after many
        // rounds in all, so that the fault ends.
        let mut barren = 0;
        for _ in 0..MAX_OOM_ROUNDS {
            if !self.make_room() {
                barren += 1;
                if barren == BARREN_OOM_ROUNDS {
                    break;
                }
                continue;
            }
            stats.bump(Counter::Retry);
            match self.fault_with_mmap_lock(stats, addr, access) {
                Err(f) if f.cause == FaultCause::OutOfMemory => continue,
                r => return r,
            }
        }
        self.frames().reclaim_counters().oom.bump();
        Err(fault(addr, access, FaultCause::OutOfMemory))
    }

    /// Collects deferred garbage and reclaims until a frame is free, for a
    /// couple of milliseconds at most (other threads' guards may hold the
    /// epoch back for a moment); returns whether a frame is free.
    fn make_room(&self) -> bool {
        let frames = self.frames();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2);
        loop {
            vmspace_tree::sync::collect();
            if frames.free_frames() > 0 {
                return true;
            }
            if frames.reclaim(crate::reclaim::RECLAIM_BATCH) > 0 {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            crate::sync::yield_now();
        }
    }

    /// The lock path: the address-space lock held for reading.
    fn fault_with_mmap_lock(
        &self,
        stats: &FaultCounters,
        addr: u64,
        access: Access,
    ) -> Result<(), Fault> {
        loop {
            let lock = self.read_lock();
            let g = vmspace_tree::pin();
            let Some(entry) = self.tree().find(addr, &g) else {
                drop(g);
                drop(lock);
                if self.expand_stack(addr) {
                    stats.bump(Counter::Retry);
                    continue;
                }
                return Err(fault(addr, access, FaultCause::NoMapping));
            };
            let step = self.fault_in_vma(entry.value, addr, access, &Validate::Locked);
            match step.map_err(|c| fault(addr, access, c))? {
                Step::Wait(w) => {
                    drop(g);
                    drop(lock);
                    stats.bump(Counter::Retry);
                    self.wait(w, addr, access)?;
                }
                _ => {
                    stats.bump(Counter::Locked);
                    return Ok(());
                }
            }
        }
    }

    /// The per-VMA path; `None` means "fall back to the lock path".
    #[inline(always)]
    fn fault_per_vma(
        &self,
        stats: &FaultCounters,
        cache: &RefCell<VmaCache>,
        hint: &SeqHint,
        addr: u64,
        access: Access,
    ) -> Option<Result<(), Fault>> {
        let mut waits = 0;
        loop {
            let mut g = None;
            let mut c = cache.borrow_mut();
            let vma = self.find_vma(&mut c, addr, &mut g)?;
            let Some(locked) = vma.try_read_lock(self.mm_seq(), hint) else {
                // The VMA is being changed (often a merge or split next to
                // it, a short write section) or was replaced. Waiting a few
                // microseconds for the section to end and looking again is
                // cheaper than queueing on the address-space lock.
                // A detached VMA was replaced by a writer that may be done
                // already: look again at once.
                let replaced = vma.is_detached();
                drop(c);
                drop(g);
                if waits < MAX_WRITER_WAITS && (replaced || self.wait_for_writer()) {
                    waits += 1;
                    stats.bump(Counter::Retry);
                    continue;
                }
                return None;
            };
            let step = self.fault_in_vma(vma, addr, access, &Validate::Locked);
            drop(locked);
            match step {
                Err(c) => return Some(Err(fault(addr, access, c))),
                Ok(Step::Wait(w)) => {
                    drop(g);
                    stats.bump(Counter::Retry);
                    if let Err(e) = self.wait(w, addr, access) {
                        return Some(Err(e));
                    }
                }
                Ok(_) => {
                    stats.bump(Counter::Lockless);
                    return Some(Ok(()));
                }
            }
        }
    }

    /// Spins until the current write section ends (`mm_seq` moves), for a
    /// few microseconds at most; returns whether it ended. Under loom, never
    /// waits (the models check the fallback path).
    fn wait_for_writer(&self) -> bool {
        if cfg!(loom) {
            return false;
        }
        let seen = self.mm_seq().load(Ordering::Acquire);
        for _ in 0..WRITER_WAIT_SPINS {
            std::hint::spin_loop();
            if self.mm_seq().load(Ordering::Acquire) != seen {
                return true;
            }
        }
        false
    }

    /// The speculative path; `None` means "fall back to the lock path".
    fn fault_speculative(
        &self,
        stats: &FaultCounters,
        cache: &RefCell<VmaCache>,
        hint: &SeqHint,
        addr: u64,
        access: Access,
    ) -> Option<Result<(), Fault>> {
        for _ in 0..3 {
            // Pinned for the whole attempt, a cache hit too: the page table
            // the fault uses may be unlinked meanwhile, and is freed only
            // after the guards pinned then are gone (`pagetable.rs`).
            let mut g = Some(vmspace_tree::pin());
            let mut c = cache.borrow_mut();
            let vma = self.find_vma(&mut c, addr, &mut g)?;
            let Some(seen) = vma.speculation_start(self.mm_seq(), hint) else {
                // A writer is changing this VMA (or replaced it): the per-VMA
                // path waits for it a little, then takes the lock.
                return None;
            };
            let validate = Validate::LockWord(vma.lock_word(), seen);
            match self.fault_in_vma(vma, addr, access, &validate) {
                // An error seen through a possibly stale VMA counts only if
                // nothing changed since the sequence was read.
                Err(c) if validate.still_valid() => return Some(Err(fault(addr, access, c))),
                Err(_) | Ok(Step::Stale) => stats.bump(Counter::Retry),
                Ok(Step::Fallback) => return None,
                Ok(Step::Wait(w)) => {
                    drop(g);
                    stats.bump(Counter::Retry);
                    if let Err(e) = self.wait(w, addr, access) {
                        return Some(Err(e));
                    }
                }
                Ok(Step::Done) => {
                    stats.bump(Counter::Lockless);
                    return Some(Ok(()));
                }
            }
        }
        None
    }

    /// The VMA containing `addr`, from the `Cpu`'s VMA cache or the tree
    /// (then cached). A cached VMA is kept alive by the cache's `Arc`, so a
    /// hit needs no epoch guard (a pin costs a full fence: a tenth of a
    /// page-cache-hit fault); a tree lookup pins `g`, and what it returns is
    /// valid while `g` (not cached) or `cache` (cached) lives.
    #[inline(always)]
    fn find_vma<'a>(
        &'a self,
        cache: &'a mut RefMut<'_, VmaCache>,
        addr: u64,
        g: &'a mut Option<vmspace_tree::Guard>,
    ) -> Option<&'a Arc<Vma>> {
        if let Some(i) = cache.lookup(addr) {
            return Some(cache.get(i));
        }
        let g = g.get_or_insert_with(vmspace_tree::pin);
        let found = self.tree().find(addr, g)?.value;
        match cache.insert(found) {
            Some(i) => Some(cache.get(i)),
            None => Some(found),
        }
    }

    /// Waits, with no lock held, for what `w` names: a page of a slow
    /// store read into the page cache, a swap slot read into the swap
    /// cache, or a locked frame's release.
    fn wait(&self, w: WaitFor, addr: u64, access: Access) -> Result<(), Fault> {
        match w {
            WaitFor::Page(file, pgoff) => file
                .fill(pgoff)
                .map(|_| ())
                .map_err(|e| fault(addr, access, fill_cause(e))),
            WaitFor::Swap(slot, owner) => self.frames().swap_in(slot, owner).map_err(|e| {
                let cause = match e {
                    SwapInError::NoMemory => FaultCause::OutOfMemory,
                    SwapInError::Io => FaultCause::Io,
                };
                fault(addr, access, cause)
            }),
            WaitFor::Unlocked => {
                crate::sync::yield_now();
                Ok(())
            }
        }
    }

    /// Resolves the fault inside `vma`, which the caller keeps valid (lock) or
    /// validates (`validate`). Shared by every strategy.
    pub(crate) fn fault_in_vma(
        &self,
        vma: &Vma,
        addr: u64,
        access: Access,
        validate: &Validate<'_>,
    ) -> Result<Step, FaultCause> {
        vma.alive.touch();
        let allowed = match access {
            Access::Read => vma.allows_read(),
            Access::Write => vma.prot.write,
            Access::Fetch => vma.prot.exec,
        };
        if !allowed {
            return Err(FaultCause::Protection);
        }
        let page = addr & !(PAGE_SIZE - 1);
        let table = self
            .page_table()
            .table_or_create(page)
            .ok_or(FaultCause::NoMapping)?;
        let pte = table.read(page);
        if pte.present() {
            return self.fault_present(vma, table, page, pte, access, validate);
        }
        if pte.is_swap() {
            return self.fault_swap(vma, table, page, pte, access, validate);
        }
        match &vma.backing {
            Backing::Anon => self.fault_anon(vma, table, page, access, validate),
            Backing::File(file) => self.fault_file(vma, file, table, page, access, validate),
        }
    }

    /// The entry exists but lacks the permission: a write to a read-only
    /// private page (copy-on-write, or reuse of an owned frame), a write to a
    /// shared page mapped read-only, or permissions widened by `mprotect`.
    fn fault_present(
        &self,
        vma: &Vma,
        table: &PteTable,
        page: u64,
        pte: Pte,
        access: Access,
        validate: &Validate<'_>,
    ) -> Result<Step, FaultCause> {
        let bits = vma.pte_bits_no_write();
        if access != Access::Write || pte.has(Pte::WRITE) {
            return Ok(self.install(
                table,
                page,
                pte,
                pte.with_perms(bits | (pte.0 & Pte::WRITE)),
                access,
                validate,
            ));
        }
        if pte.has(Pte::OWNED) {
            return Ok(self.install(
                table,
                page,
                pte,
                pte.with_perms(bits | Pte::WRITE),
                access,
                validate,
            ));
        }
        if vma.shared {
            let step = self.install(
                table,
                page,
                pte,
                pte.with_perms(bits | Pte::WRITE),
                access,
                validate,
            );
            // After the entry is writable, not before (`object/file.rs`,
            // "Dirty tracking").
            if let Some(file) = vma.file() {
                file.mark_dirty(vma.pgoff_at(page));
            }
            return Ok(step);
        }
        // Copy-on-write: the entry is replaced by one to a private copy; the
        // flush drops the source's reference (`tlb.rs`: without a shootdown
        // unless that frees it). Only the fault whose entry replaced the old
        // one drops it: a fault that lost the race to another copy must not.
        let Some(anon) = self.ensure_anon(vma, validate) else {
            return Ok(Step::Fallback);
        };
        // The source is held while it is copied: reclaim may swap it out
        // and free it meanwhile (it holds no VMA lock). A frame already
        // freed makes the fault retry; one freed and reused since the entry
        // was read is copied for nothing (the install finds the entry
        // changed).
        let src = pte.frame();
        if !self.frames().try_get(src) {
            return Ok(Step::Done);
        }
        let copied = self.copy_or_zero(src);
        self.frames().put(src);
        let new = copied?;
        self.frames().set_owner(new, anon_owner(anon, vma, page));
        Ok(self.install(
            table,
            page,
            pte,
            Pte::new(new, bits | Pte::WRITE | Pte::OWNED),
            access,
            validate,
        ))
    }

    /// The entry is a swap entry: map the page from the swap cache, or read
    /// it into the cache with no lock held and start over (`swapcache.rs`).
    /// Not speculative: the exclusive hit changes shared state (the cache)
    /// that a failed validation could not undo.
    fn fault_swap(
        &self,
        vma: &Vma,
        table: &PteTable,
        page: u64,
        pte: Pte,
        access: Access,
        validate: &Validate<'_>,
    ) -> Result<Step, FaultCause> {
        if validate.speculative() {
            return Ok(Step::Fallback);
        }
        let Some(anon) = self.ensure_anon(vma, validate) else {
            return Ok(Step::Fallback);
        };
        let frames = self.frames();
        let slot = pte.swap_slot();
        let Some(f) = frames.swap_cache_get(slot) else {
            // A miss: hold the slot (so it is not freed and reused while it
            // is read), checked under the PTE lock against the entry.
            let g = table.lock();
            if g.get(page) != pte {
                return Ok(Step::Done);
            }
            let held = frames.swap_dup(slot);
            drop(g);
            if !held {
                return Err(FaultCause::Io);
            }
            // A page that may be shared goes to the root of the VMA's
            // anonymous chain, which records every VMA that may map it.
            let root = anon.chain().last().unwrap_or(anon);
            let owner = anon_owner(root, vma, page);
            return Ok(Step::Wait(WaitFor::Swap(slot, owner)));
        };
        if !frames.swap_try_lock(f) {
            frames.put(f);
            return Ok(Step::Wait(WaitFor::Unlocked));
        }
        let exclusive = frames.swap_exclusive(f, slot);
        let mut bits = vma.pte_bits_no_write() | Pte::ACCESSED;
        if exclusive {
            frames.set_owner(f, anon_owner(anon, vma, page));
            bits |= Pte::OWNED;
            if access == Access::Write {
                bits |= Pte::WRITE | Pte::DIRTY;
            }
        }
        match table.install(page, pte, Pte::new(f, bits), frames, || {
            validate.still_valid()
        }) {
            Ok(batch) => {
                self.flush(batch);
                if exclusive {
                    frames.swap_take_exclusive(f, slot);
                } else {
                    frames.swap_map_shared(f, slot);
                }
                Ok(Step::Done)
            }
            Err(e) => {
                frames.swap_unlock(f);
                Ok(match e {
                    NotInstalled::Raced => Step::Done,
                    NotInstalled::Stale => Step::Stale,
                })
            }
        }
    }

    fn fault_anon(
        &self,
        vma: &Vma,
        table: &PteTable,
        page: u64,
        access: Access,
        validate: &Validate<'_>,
    ) -> Result<Step, FaultCause> {
        let bits = vma.pte_bits_no_write();
        if access != Access::Write {
            return Ok(self.install(
                table,
                page,
                Pte(0),
                Pte::new(FrameId::ZERO, bits),
                access,
                validate,
            ));
        }
        let Some(anon) = self.ensure_anon(vma, validate) else {
            return Ok(Step::Fallback);
        };
        let f = self
            .frames()
            .alloc_zeroed()
            .ok_or(FaultCause::OutOfMemory)?;
        self.frames().set_owner(f, anon_owner(anon, vma, page));
        Ok(self.install(
            table,
            page,
            Pte(0),
            Pte::new(f, bits | Pte::WRITE | Pte::OWNED),
            access,
            validate,
        ))
    }

    fn fault_file(
        &self,
        vma: &Vma,
        file: &Arc<File>,
        table: &PteTable,
        page: u64,
        access: Access,
        validate: &Validate<'_>,
    ) -> Result<Step, FaultCause> {
        // A private write gets its anonymous object before anything can fail
        // (Linux prepares the anon_vma first, so even a write past the end of
        // the file leaves the VMA with one, which decides later merges).
        let cow = !vma.shared && access == Access::Write;
        let anon = if cow {
            match self.ensure_anon(vma, validate) {
                Some(anon) => Some(anon),
                None => return Ok(Step::Fallback),
            }
        } else {
            None
        };
        let pgoff = vma.pgoff_at(page);
        if pgoff >= file.pages() {
            return Err(FaultCause::PastEnd);
        }
        // Held from here on (reclaim may evict the page): the reference
        // goes to the entry, or is dropped after the copy.
        let frame = match file.get_page(pgoff) {
            Some(f) => f,
            None if file.is_slow() => return Ok(Step::Wait(WaitFor::Page(file.clone(), pgoff))),
            None => file.fill_held(pgoff).map_err(fill_cause)?,
        };
        let bits = vma.pte_bits_no_write();
        if vma.shared {
            let write = if vma.prot.write { Pte::WRITE } else { 0 };
            let step = self.install(
                table,
                page,
                Pte(0),
                Pte::new(frame, bits | write),
                access,
                validate,
            );
            // After the entry is writable, not before (`object/file.rs`,
            // "Dirty tracking").
            if write != 0 {
                file.mark_dirty(pgoff);
            }
            return Ok(step);
        }
        if access != Access::Write {
            return Ok(self.install(table, page, Pte(0), Pte::new(frame, bits), access, validate));
        }
        let copy = self.frames().alloc_copy(frame);
        self.frames().put(frame);
        let copy = copy.ok_or(FaultCause::OutOfMemory)?;
        if let Some(anon) = &anon {
            self.frames().set_owner(copy, anon_owner(anon, vma, page));
        }
        Ok(self.install(
            table,
            page,
            Pte(0),
            Pte::new(copy, bits | Pte::WRITE | Pte::OWNED),
            access,
            validate,
        ))
    }

    /// The VMA's anonymous object, given to it first if it has none.
    /// Speculative faults do not give one (it would change a VMA they hold
    /// no lock on): `None` sends them to a locked path.
    fn ensure_anon<'v>(
        &self,
        vma: &'v Vma,
        validate: &Validate<'_>,
    ) -> Option<&'v Arc<AnonObject>> {
        if let Some(a) = vma.anon.get() {
            return Some(a);
        }
        if validate.speculative() {
            return None;
        }
        let mut new = false;
        let anon = vma.anon.get_or_init(|| {
            new = true;
            self.neighbour_anon(vma)
                .unwrap_or_else(|| AnonObject::new(self.frames(), None))
        });
        if new {
            // The VMA is attached and held (its lock or the address-space
            // lock): its detach, which forgets this, comes after; and no
            // frame of the object is mapped through it yet (`rmap.rs`).
            anon.record(vma.mapping(self));
        }
        Some(anon)
    }

    /// The anonymous object of an adjacent VMA that `vma` may share (Linux's
    /// `find_mergeable_anon_vma`): the next VMA is tried first, then the
    /// previous one. A neighbour qualifies when it touches `vma`, has the same
    /// backing object with contiguous page offsets, and differs at most in
    /// protection. Sharing keeps the two mergeable after a later `mprotect`.
    fn neighbour_anon(&self, vma: &Vma) -> Option<Arc<AnonObject>> {
        let g = vmspace_tree::pin();
        let tree = self.tree();
        let next = tree.find(vma.end, &g).map(|e| e.value.clone());
        if let Some(next) = next.filter(|n| vma.anon_compatible(n)) {
            if let Some(a) = next.anon.get() {
                return Some(a.clone());
            }
        }
        let prev = vma
            .start
            .checked_sub(1)
            .and_then(|a| tree.find(a, &g))
            .map(|e| e.value.clone());
        prev.filter(|p| p.anon_compatible(vma))
            .and_then(|p| p.anon.get().cloned())
    }

    fn copy_or_zero(&self, src: FrameId) -> Result<FrameId, FaultCause> {
        let f = if src == FrameId::ZERO {
            self.frames().alloc_zeroed()
        } else {
            self.frames().alloc_copy(src)
        };
        f.ok_or(FaultCause::OutOfMemory)
    }

    /// Replaces the entry `expected` by `new` if it is still `expected` and
    /// the fault is still valid (`PteTable::install`), and flushes what that
    /// replaced (a copy-on-write source). The caller holds one frame
    /// reference for `new`: the entry takes it, or it is dropped.
    ///
    /// The new entry is marked accessed, and dirty when it is writable for
    /// a write (the access the fault is for comes right after).
    fn install(
        &self,
        table: &PteTable,
        page: u64,
        expected: Pte,
        new: Pte,
        access: Access,
        validate: &Validate<'_>,
    ) -> Step {
        let mut new = Pte(new.0 | Pte::ACCESSED);
        if access == Access::Write && new.has(Pte::WRITE) {
            new.0 |= Pte::DIRTY;
        }
        // Replacing a present entry's frame (a copy-on-write break, of the
        // zero frame too) is announced to the MMU notifiers first.
        let invalidation = (expected.present() && expected.frame() != new.frame()).then(|| {
            let range = NotifierRange::new(page, page + PAGE_SIZE, Event::CowBreak, true);
            match self.invalidate_start(range) {
                Ok(inv) => inv,
                Err(Busy) => unreachable!("a blockable invalidation waits"),
            }
        });
        match table.install(page, expected, new, self.frames(), || {
            validate.still_valid()
        }) {
            Ok(mut batch) => {
                batch.invalidations.extend(invalidation);
                self.flush(batch);
                Step::Done
            }
            Err(e) => {
                if let Some(inv) = invalidation {
                    self.invalidate_end(inv);
                }
                match e {
                    // Another fault changed the entry first: the access
                    // retries and finds it.
                    NotInstalled::Raced => Step::Done,
                    NotInstalled::Stale => Step::Stale,
                }
            }
        }
    }
}

/// The owner of a private page at `page` of `vma`, whose anonymous object is
/// `anon`.
fn anon_owner(anon: &AnonObject, vma: &Vma, page: u64) -> Owner {
    Owner::Anon {
        object: anon.id(),
        index: vma.pgoff_at(page),
    }
}

fn fill_cause(e: FillError) -> FaultCause {
    match e {
        FillError::PastEnd => FaultCause::PastEnd,
        FillError::NoMemory => FaultCause::OutOfMemory,
        FillError::Io(_) => FaultCause::Io,
    }
}
