//! The writer's primitives: the address-space lock held for writing
//! ([`Writer`]), and the steps every change is made of.
//!
//! # How a change is made
//!
//! Every call (`space.rs`, `remap.rs`) follows the same steps, the way Linux's
//! `vma_modify` and `do_vmi_munmap` do: split the VMAs that cross the range's
//! ends ([`Writer::split_at`]), write-lock and replace or remove the VMAs
//! inside, change the page table through the range update
//! ([`Writer::update_range`]: zap, change permissions, or move entries), flush
//! the batch it returns (the shootdown, then the frame references), then merge
//! the result with its neighbours where Linux would ([`Writer::merge_around`]).
//!
//! Changes to the tree are ordered so that a lockless reader always finds,
//! for each address, the old VMA (write-locked or detached: it backs off) or
//! the new one (write-locked until the writer is done): never a hole where a
//! mapping continues to exist.
//!
//! Locks: everything here runs with the address-space lock held for writing
//! (the [`Writer`] is the guard); VMA write marks and PTE locks are taken
//! under it (see `sync`).

use crate::config::MapFlags;
use crate::error::Errno;
use crate::frame::PAGE_SIZE;
use crate::notifier::NotifierRange;
use crate::object::File;
use crate::pagetable::{Event, FlushBatch, Pte, ADDR_LIMIT, TABLE_SPAN, TASK_SIZE};
use crate::space::{AddressSpace, MapSource};
use crate::sync::{Ordering, RwLockWriteGuard};
use crate::vma::{Backing, Prot, Vma};
use std::sync::Arc;
use vmspace_tree::WriteToken;

/// State only the holder of the write lock touches.
pub(crate) struct WriterState {
    pub(crate) token: WriteToken,
}

/// The address-space lock held for writing. Dropping it advances `mm_seq`
/// (unlocking every VMA marked under it) and then releases the lock.
pub(crate) struct Writer<'a> {
    pub(crate) space: &'a AddressSpace,
    /// `Some` until `drop` hands the lock on.
    pub(crate) state: Option<RwLockWriteGuard<'a, WriterState>>,
    pub(crate) seq: u64,
    /// Shared file ranges this writer unmapped, written back once the lock
    /// is released (see `object/file.rs`, "When dirty pages reach the store").
    pub(crate) write_backs: Vec<(Arc<File>, u64, u64)>,
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        // Release: VMA changes made under the lock happen before a fault that
        // sees the VMAs unlocked.
        self.space.mm_seq.store(self.seq + 1, Ordering::Release);
        if let Some(state) = self.state.take() {
            crate::sync::unlock_fair(state);
        }
        self.space.writers.leave();
        for (file, first, end) in self.write_backs.drain(..) {
            file.write_back(first, end);
        }
    }
}

impl Writer<'_> {
    pub(crate) fn token(&mut self) -> &mut WriteToken {
        &mut self.state.as_mut().expect("held until drop").token
    }

    /// The VMA containing `addr`.
    pub(crate) fn find(&self, addr: u64) -> Option<Arc<Vma>> {
        let g = vmspace_tree::pin();
        self.space.tree.find(addr, &g).map(|e| e.value.clone())
    }

    /// Chooses where a new mapping of `len` bytes goes.
    pub(crate) fn place(&self, addr: u64, len: u64, fixed: bool) -> Result<u64, Errno> {
        let cfg = &self.space.config;
        if fixed {
            let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
            return if end > TASK_SIZE {
                Err(Errno::ENOMEM)
            } else {
                Ok(addr)
            };
        }
        let hint = addr & !(PAGE_SIZE - 1);
        if hint >= cfg.mmap_min_addr
            && hint.checked_add(len).is_some_and(|e| e <= TASK_SIZE)
            && self.space.vmas_in(hint, hint + len).is_empty()
        {
            return Ok(hint);
        }
        let g = vmspace_tree::pin();
        self.space
            .tree
            .gap_highest(len, PAGE_SIZE, cfg.mmap_min_addr, cfg.mmap_base, &g)
            .ok()
            .flatten()
            .ok_or(Errno::ENOMEM)
    }

    pub(crate) fn new_vma(
        &self,
        start: u64,
        end: u64,
        prot: Prot,
        flags: MapFlags,
        source: MapSource,
    ) -> Vma {
        let (backing, pgoff, shmem) = match source {
            MapSource::File { file, pgoff } => (Backing::File(file), pgoff, false),
            MapSource::Anon if flags.shared => {
                let pages = (end - start) / PAGE_SIZE;
                let f = File::new_anonymous(pages, self.space.frames.clone());
                (Backing::File(f), 0, true)
            }
            MapSource::Anon => (Backing::Anon, start / PAGE_SIZE, false),
        };
        let mut v = Vma::new(start, end, prot, flags.shared, backing, pgoff, self.seq);
        v.growsdown = flags.growsdown;
        // Linux's `calc_vm_flag_bits` and `mmap_region`: MAP_NORESERVE is
        // VM_NORESERVE, never charged; MAP_STACK is VM_NOHUGEPAGE.
        v.noreserve = flags.noreserve;
        v.account &= !flags.noreserve;
        v.nohugepage = flags.stack;
        if self.space.config.exec_only_pkey && prot.is_exec_only() {
            v.pkey = crate::vma::EXEC_ONLY_PKEY;
        }
        v.shmem = shmem;
        v
    }

    /// Stores a VMA (already write-locked for this writer) in the tree.
    pub(crate) fn insert(&mut self, vma: Vma) {
        let (s, e) = (vma.start, vma.end);
        let space = self.space;
        vma.record_mappings(space);
        space
            .tree
            .store(self.token(), s, e, Arc::new(vma))
            .expect("VMA ranges are never empty");
    }

    /// Makes sure no VMA crosses `addr`: a VMA that does is replaced by its two
    /// pieces (Linux's `split_vma`). `ENOMEM` at the map-count limit.
    pub(crate) fn split_at(&mut self, addr: u64) -> Result<(), Errno> {
        self.split(addr, true)
    }

    fn split(&mut self, addr: u64, check_limit: bool) -> Result<(), Errno> {
        let Some(v) = self.find(addr) else {
            return Ok(());
        };
        if v.start == addr {
            return Ok(());
        }
        if check_limit && self.space.tree.len() >= self.space.config.max_map_count {
            return Err(Errno::ENOMEM);
        }
        v.write_lock(self);
        let (low, high) = (
            v.piece(v.start, addr, self.seq),
            v.piece(addr, v.end, self.seq),
        );
        // Store the upper piece first, then the lower: a lockless reader sees
        // for each address either the old VMA (locked) or a new piece (locked).
        self.insert(high);
        self.insert(low);
        v.detach(self);
        Ok(())
    }

    /// Removes every mapping in `[start, end)`: splits at the ends, takes the
    /// VMAs out of the tree, zaps their pages.
    pub(crate) fn unmap(&mut self, start: u64, end: u64) -> Result<(), Errno> {
        let vmas = self.space.vmas_in(start, end);
        if vmas.is_empty() {
            return Ok(());
        }
        // Linux checks the limit once, before splitting: a split at both ends
        // of one VMA needs one more slot.
        let splits = vmas.first().is_some_and(|v| v.start < start) as usize
            + vmas.last().is_some_and(|v| v.end > end) as usize;
        if splits == 2
            && vmas.len() == 1
            && self.space.tree.len() >= self.space.config.max_map_count
        {
            return Err(Errno::ENOMEM);
        }
        self.split(start, false)?;
        self.split(end, false)?;
        let inside = self.space.vmas_in(start, end);
        for v in &inside {
            v.write_lock(self);
        }
        let space = self.space;
        space
            .tree
            .erase(self.token(), start, end)
            .expect("non-empty range");
        let mut batch = self.zap(start, end, Event::Unmap);
        for v in &inside {
            v.detach(self);
            self.write_back_later(v);
        }
        self.free_tables(start, end, &mut batch);
        self.space.flush(batch);
        Ok(())
    }

    /// The one entry to the page-table range update for writers: the MMU
    /// notifiers hear of `[start, end)` first (`notifier.rs`); the caller
    /// flushes the batch (`AddressSpace::flush`), which ends their
    /// invalidation.
    pub(crate) fn update_range(
        &self,
        start: u64,
        end: u64,
        event: Event,
        change: impl FnMut(u64, Pte) -> Pte,
    ) -> FlushBatch {
        self.update_notified(NotifierRange::new(start, end, event, true), change)
    }

    /// [`Writer::update_range`] with the notifiers' range given (for a
    /// write-only downgrade).
    fn update_notified(
        &self,
        range: NotifierRange,
        change: impl FnMut(u64, Pte) -> Pte,
    ) -> FlushBatch {
        match self.space.update_range(range, change) {
            Ok(batch) => batch,
            Err(crate::notifier::Busy) => unreachable!("a blockable invalidation waits"),
        }
    }

    /// Clears the page-table entries of `[start, end)` and returns the batch
    /// that drops the frames' references after the shootdown.
    ///
    /// # Preconditions
    /// A fault may install an entry in the range concurrently only where the
    /// range stays mapped as it is (`madvise(DONTNEED)`: the entry is then a
    /// fault that came after). Where the mapping goes away or changes, its
    /// VMAs are write-locked or detached first: per-vma faults respect that
    /// through their read lock, speculative faults by checking the VMA's lock
    /// word under the PTE lock (`fault.rs`), and the write lock excludes
    /// locked faults.
    pub(crate) fn zap(&self, start: u64, end: u64, event: Event) -> FlushBatch {
        self.update_range(start, end, event, |_, _| Pte(0))
    }

    /// Queues the write-back of the pages `v` (being removed) may have
    /// dirtied, if it is a shared file mapping.
    fn write_back_later(&mut self, v: &Vma) {
        if let (true, false, Some(file)) = (v.shared, v.shmem, v.file()) {
            let pages = (v.end - v.start) / PAGE_SIZE;
            self.write_backs
                .push((file.clone(), v.pgoff, v.pgoff.saturating_add(pages)));
        }
    }

    /// Unlinks the page tables that only `[start, end)` used, now that it is
    /// unmapped (Linux's `free_pgtables`): the tables wholly between the VMA
    /// below the range and the VMA above it.
    fn free_tables(&self, start: u64, end: u64, batch: &mut FlushBatch) {
        let g = vmspace_tree::pin();
        let tree = &self.space.tree;
        let floor = tree.find_before(start, &g).map_or(0, |e| e.value.end);
        let ceiling = tree
            .find_after(start, &g)
            .map_or(ADDR_LIMIT, |e| e.value.start);
        drop(g);
        let lo = floor
            .next_multiple_of(TABLE_SPAN)
            .max(start - start % TABLE_SPAN);
        let hi = (ceiling - ceiling % TABLE_SPAN).min(end.next_multiple_of(TABLE_SPAN));
        self.space.pt.unlink_empty(lo, hi, batch);
    }

    /// Linux's `mprotect` loop: VMA by VMA from `start`, `ENOMEM` at the first
    /// hole (after changing what came before it).
    pub(crate) fn mprotect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), Errno> {
        let first = self.find(start).ok_or(Errno::ENOMEM)?;
        debug_assert!(first.start <= start);
        let vmas = self.space.vmas_in(start, end);
        let mut at = start;
        for v in vmas {
            if v.start > at {
                return Err(Errno::ENOMEM);
            }
            let to = v.end.min(end);
            self.protect_one(at, to, prot)?;
            at = to;
        }
        if at < end {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    /// Changes the protection of `[start, end)`, which lies inside one VMA.
    fn protect_one(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), Errno> {
        let v = self.find(start).expect("caller checked");
        if v.prot == prot {
            return Ok(());
        }
        self.split_at(start)?;
        self.split_at(end)?;
        let v = self.find(start).expect("still mapped");
        v.write_lock(self);
        let mut nv = v.piece(start, end, self.seq);
        nv.prot = prot;
        nv.pkey = v.pkey_for(prot, self.space.config.exec_only_pkey);
        nv.account = account_after_mprotect(&v, prot);
        let bits = nv.pte_bits_no_write();
        self.insert(nv);
        self.change_pte_perms(start, end, prot, bits);
        v.detach(self);
        self.merge_around(start, end);
        Ok(())
    }

    /// Gives `[start, end)`, which lies inside one VMA, the flags `set`
    /// makes of that VMA's (Linux's `vma_modify_flags`, for `madvise` and
    /// `mlock`): nothing when they are the same, else the VMA is split at
    /// the range's ends, the range gets a new VMA with the new flags, and it
    /// merges with its neighbours where Linux would. The page table is left
    /// as it is. `ENOMEM` when a split meets the map-count limit.
    pub(crate) fn change_flags(
        &mut self,
        start: u64,
        end: u64,
        set: impl Fn(&mut Vma),
    ) -> Result<(), Errno> {
        let v = self.find(start).expect("caller checked");
        let mut probe = v.piece(v.start, v.end, self.seq);
        set(&mut probe);
        if probe.same_flags(&v) {
            return Ok(());
        }
        self.split_at(start)?;
        self.split_at(end)?;
        let v = self.find(start).expect("still mapped");
        v.write_lock(self);
        let mut nv = v.piece(start, end, self.seq);
        set(&mut nv);
        self.insert(nv);
        v.detach(self);
        self.merge_around(start, end);
        Ok(())
    }

    /// Rewrites the permission bits of the present entries in `[start, end)`
    /// for `prot`. Write permission is kept only where the entry had it
    /// (an owned private anonymous frame, or a shared mapping made writable
    /// by a fault); elsewhere the next write faults and copies or marks.
    fn change_pte_perms(&self, start: u64, end: u64, prot: Prot, base_bits: u64) {
        let mut range = NotifierRange::new(start, end, Event::Protect, true);
        range.write_only = prot.read;
        let batch = self.update_notified(range, |_, pte| {
            let mut bits = base_bits;
            if prot.write && pte.has(Pte::WRITE) {
                bits |= Pte::WRITE;
            }
            pte.with_perms(bits)
        });
        self.space.flush(batch);
    }

    /// Merges the VMA at `start` with the one before it, and the VMA ending
    /// at `end` with the one after it, where Linux would.
    pub(crate) fn merge_around(&mut self, start: u64, end: u64) {
        if start > 0 {
            self.try_merge(start);
        }
        self.try_merge(end);
    }

    /// Merges the VMAs on both sides of `addr` if they are compatible.
    pub(crate) fn try_merge(&mut self, addr: u64) {
        let (Some(prev), Some(next)) = (
            addr.checked_sub(1).and_then(|a| self.find(a)),
            self.find(addr),
        ) else {
            return;
        };
        if prev.end != addr || next.start != addr || !prev.may_merge_with_next(&next) {
            return;
        }
        // The anonymous objects are compared only once both VMAs are
        // write-locked: a fault holding one's read lock may be giving it its
        // object right now (`fault.rs`, `ensure_anon`), and a merge decided
        // on what was there before would put one object's pages in a VMA of
        // another, where the reverse map cannot find them.
        prev.write_lock(self);
        next.write_lock(self);
        if !prev.can_merge_with_next(&next) {
            return;
        }
        let merged = prev.piece(prev.start, next.end, self.seq);
        if merged.anon.get().is_none() {
            if let Some(a) = next.anon.get() {
                let _ = merged.anon.set(a.clone());
            }
        }
        self.insert(merged);
        prev.detach(self);
        next.detach(self);
    }
}

/// Linux's `VM_ACCOUNT` after `mprotect` (`mprotect_fixup`): making a private
/// mapping writable charges it (unless it is `MAP_NORESERVE`); making an anonymous mapping that has no
/// anonymous pages read-only releases the charge; otherwise it stays.
fn account_after_mprotect(v: &Vma, prot: Prot) -> bool {
    if prot.write {
        return v.account || (!v.shared && !v.noreserve);
    }
    if v.account && v.is_anon() && v.anon.get().is_none() {
        return false;
    }
    v.account
}
