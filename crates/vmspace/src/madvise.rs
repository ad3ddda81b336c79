//! The calls that change how a range is kept rather than what it maps:
//! `madvise` advices besides `MADV_DONTNEED` ([`Advice`]), `mlock`,
//! `mlock2(MLOCK_ONFAULT)` and `munlock`, and the address space's
//! committed-memory count (`Committed_AS`).
//!
//! Owns no state of its own: the flags live on the VMAs (`vma.rs`:
//! `dontfork`, `wipeonfork`, `locked`, `lock_onfault`), the lazy-free marks
//! on the frames (`frame.rs`, `LazyFree`).
//!
//! Locks (see `sync` for the global order): flag changes and `MADV_FREE`
//! hold the address-space lock for writing (a [`Writer`]), and through it
//! write-lock the VMAs they replace; `MADV_FREE` then takes PTE locks in the
//! page-table range update. Populating (`MADV_POPULATE_*`, the population
//! `mlock` does) holds no lock of its own: it runs the fault path page by
//! page, which takes what its strategy takes.
//!
//! # Linux's answers (6.18), by call
//!
//! | call | unaligned start | hole in the range | VMA it refuses |
//! |---|---|---|---|
//! | `madvise` flags, `MADV_FREE` | `EINVAL` | `ENOMEM` at the end, the mapped parts done (`madvise_walk_vmas`) | `EINVAL` at that VMA, the ones before done |
//! | `MADV_POPULATE_*` | `EINVAL` | `ENOMEM` at the hole, the pages before populated | `EINVAL` (protection, `check_vma_flags`); a fault that would signal: `EFAULT` |
//! | `mlock`, `munlock` | rounded down | `ENOMEM` at the hole, the VMAs before changed (`apply_vma_lock_flags`) | none |
//!
//! VMAs `madvise` refuses: `MADV_WIPEONFORK` anything but private anonymous
//! memory; `MADV_FREE` (and `MADV_DONTNEED`) a locked VMA, and `MADV_FREE`
//! anything but private anonymous memory (`vma_is_anonymous`).

use crate::error::{Access, Errno, FaultCause};
use crate::frame::{Owner, PAGE_SIZE};
use crate::notifier::{Busy, NotifierRange};
use crate::pagetable::Event;
use crate::space::AddressSpace;
use crate::stats::FaultCounters;
use crate::vma::{SeqHint, Vma};
use crate::vmacache::VmaCache;
use crate::writer::Writer;
use std::cell::RefCell;
use std::sync::Arc;

/// An `madvise` advice besides `MADV_DONTNEED`
/// ([`AddressSpace::madvise_dontneed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Advice {
    /// `MADV_FREE`: the private anonymous pages of the range may be dropped
    /// by reclaim instead of swapped out, unless written again first. Until
    /// then they keep their content.
    Free,
    /// `MADV_DONTFORK`: `fork` leaves the range out of the child.
    DontFork,
    /// `MADV_DOFORK`: undoes `DontFork`.
    DoFork,
    /// `MADV_WIPEONFORK`: the child gets the range zero-filled (private
    /// anonymous memory only).
    WipeOnFork,
    /// `MADV_KEEPONFORK`: undoes `WipeOnFork`.
    KeepOnFork,
    /// `MADV_POPULATE_READ`: faults every page in for reading.
    PopulateRead,
    /// `MADV_POPULATE_WRITE`: faults every page in for writing (breaking
    /// copy-on-write) without changing its content.
    PopulateWrite,
}

impl AddressSpace {
    /// Linux's `madvise(addr, len, advice)` for the advices of [`Advice`];
    /// see the module documentation for the errors.
    pub fn madvise(&self, addr: u64, len: u64, advice: Advice) -> Result<(), Errno> {
        let Some(end) = madvise_end(addr, len)? else {
            return Ok(());
        };
        let set = |f: fn(&mut Vma)| f;
        let change = match advice {
            Advice::PopulateRead => return self.populate(addr, end, Access::Read),
            Advice::PopulateWrite => return self.populate(addr, end, Access::Write),
            Advice::Free => {
                let mut w = self.write_lock();
                return walk_vmas(&mut w, addr, end, |w, v, s, e| w.lazy_free(v, s, e));
            }
            Advice::DontFork => set(|v| v.dontfork = true),
            Advice::DoFork => set(|v| v.dontfork = false),
            Advice::WipeOnFork => set(|v| v.wipeonfork = true),
            Advice::KeepOnFork => set(|v| v.wipeonfork = false),
        };
        let mut w = self.write_lock();
        walk_vmas(&mut w, addr, end, |w, v, s, e| {
            if advice == Advice::WipeOnFork && (v.shared || !v.is_anon()) {
                return Err(Errno::EINVAL);
            }
            w.change_flags(s, e, change)
        })
    }

    /// Linux's `madvise(MADV_DONTNEED)`: drops the pages of `[addr, addr + len)`.
    /// Private anonymous memory reads as zeros again, private file memory as
    /// the file's content, shared memory keeps its content. `ENOMEM` when part
    /// of the range is unmapped (the mapped parts are still dropped); `EINVAL`
    /// at a locked VMA (the VMAs before it are dropped).
    pub fn madvise_dontneed(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let Some(end) = madvise_end(addr, len)? else {
            return Ok(());
        };
        let mut w = self.write_lock();
        walk_vmas(&mut w, addr, end, |w, v, s, e| {
            if v.locked {
                return Err(Errno::EINVAL);
            }
            let batch = w.zap(s, e, Event::Zap);
            w.space.flush(batch);
            Ok(())
        })
    }

    /// Linux's `mlock(addr, len)` (`onfault`: `mlock2(MLOCK_ONFAULT)`): the
    /// VMAs of the range become locked (split at its ends), then, unless
    /// `onfault`, every page is faulted in: for writing in a private
    /// writable VMA (breaking copy-on-write, as Linux's
    /// `populate_vma_page_range`), else for reading. `ENOMEM` when part of
    /// the range is unmapped, or when a page cannot be faulted in (the VMAs
    /// stay locked). vmspace has no `RLIMIT_MEMLOCK`: any size is allowed.
    pub fn mlock(&self, addr: u64, len: u64, onfault: bool) -> Result<(), Errno> {
        let (start, end) = mlock_range(addr, len)?;
        if start == end {
            return Ok(());
        }
        {
            let mut w = self.write_lock();
            lock_vmas(&mut w, start, end, |v| {
                v.locked = true;
                v.lock_onfault = onfault;
            })?;
        }
        if onfault {
            return Ok(());
        }
        self.populate_locked(start, end)
    }

    /// Linux's `munlock(addr, len)`: the VMAs of the range are no longer
    /// locked. `ENOMEM` when part of the range is unmapped (the VMAs before
    /// the hole are changed).
    pub fn munlock(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let (start, end) = mlock_range(addr, len)?;
        if start == end {
            return Ok(());
        }
        let mut w = self.write_lock();
        lock_vmas(&mut w, start, end, |v| {
            v.locked = false;
            v.lock_onfault = false;
        })
    }

    /// The pages this address space is charged for (Linux's `Committed_AS`,
    /// one address space's share): the pages of its VMAs that carry
    /// `VM_ACCOUNT`, i.e. private writable mappings without
    /// `MAP_NORESERVE` (shared mappings and read-only private ones are not
    /// charged). A forked child is charged for its copies.
    pub fn committed_pages(&self) -> u64 {
        let _r = self.read_lock();
        self.vmas_in(0, u64::MAX)
            .iter()
            .filter(|v| v.account)
            .map(|v| (v.end - v.start) / PAGE_SIZE)
            .sum()
    }

    /// Pages resident in memory: present page-table entries, the shared
    /// zero page excluded (Linux's `VmRSS` in pages, which does not count
    /// the zero page either). A snapshot per page table, exact when no
    /// fault or writer runs meanwhile.
    pub fn resident_pages(&self) -> u64 {
        let _pinned = vmspace_tree::pin();
        let mut n = 0;
        self.page_table()
            .for_each_present(0, crate::pagetable::ADDR_LIMIT, |_, pte| {
                n += u64::from(pte.frame() != crate::FrameId::ZERO);
            });
        n
    }

    /// Whether the VMA at `addr` is locked (`mlock`), read without locks
    /// for reclaim's walks, which hold an rmap lock (ranked below the
    /// address-space lock). A racing `mlock` may be missed: it populates
    /// its range after it marks the VMAs, swapping the page in again.
    pub(crate) fn mlocked_at(&self, addr: u64) -> bool {
        let g = vmspace_tree::pin();
        self.tree().find(addr, &g).is_some_and(|e| e.value.locked)
    }

    /// Whether the page at `addr` lies in a locked VMA (`mlock`): reclaim
    /// keeps such pages.
    pub fn is_locked(&self, addr: u64) -> bool {
        let _r = self.read_lock();
        self.vmas_in(addr, addr + 1)
            .first()
            .is_some_and(|v| v.start <= addr && v.locked)
    }

    /// `MADV_POPULATE_READ` / `_WRITE` of `[start, end)`: page by page,
    /// `ENOMEM` at the first unmapped page, `EINVAL` at the first page whose
    /// VMA does not allow `access` (Linux's `check_vma_flags`: a read needs
    /// `PROT_READ` itself), `EFAULT` where the fault would signal (past the
    /// end of a file), `ENOMEM` when no frame is left. The pages before the
    /// error stay populated.
    fn populate(&self, start: u64, end: u64, access: Access) -> Result<(), Errno> {
        let faults = Faulter::new();
        for page in (start..end).step_by(PAGE_SIZE as usize) {
            let vma = self.vma_at(page).ok_or(Errno::ENOMEM)?;
            let allowed = match access {
                Access::Write => vma.prot.write,
                _ => vma.prot.read,
            };
            if !allowed {
                return Err(Errno::EINVAL);
            }
            faults.fault(self, page, access)?;
        }
        Ok(())
    }

    /// The population `mlock` does after locking (Linux's `__mm_populate`
    /// with errors reported): every page of every VMA meeting
    /// `[start, end)` in order, skipping `lock_onfault` VMAs, stopping at
    /// the first VMA that allows no read (`PROT_NONE`: Linux's forced
    /// fault needs some access) or page that cannot be faulted in; errors
    /// as `mlock` reports them (`__mlock_posix_error_return`: a failed fault
    /// is `ENOMEM`, no memory `EAGAIN`).
    fn populate_locked(&self, start: u64, end: u64) -> Result<(), Errno> {
        let faults = Faulter::new();
        let vmas = {
            let _r = self.read_lock();
            self.vmas_in(start, end)
        };
        for v in vmas.iter().filter(|v| !v.lock_onfault) {
            let access = if v.prot.write && !v.shared {
                Access::Write
            } else {
                Access::Read
            };
            if !v.allows_read() && access == Access::Read {
                // `PROT_NONE` (or the execute-only key): the forced read
                // fails, which `mlock` reports as `ENOMEM`.
                return Err(Errno::ENOMEM);
            }
            for page in (v.start.max(start)..v.end.min(end)).step_by(PAGE_SIZE as usize) {
                faults.fault(self, page, access).map_err(|e| match e {
                    Errno::ENOMEM => Errno::EAGAIN,
                    _ => Errno::ENOMEM,
                })?;
            }
        }
        Ok(())
    }

    /// The VMA containing `addr`, if any.
    fn vma_at(&self, addr: u64) -> Option<Arc<Vma>> {
        let _r = self.read_lock();
        self.vmas_in(addr, addr + 1)
            .into_iter()
            .find(|v| v.start <= addr)
    }
}

impl Writer<'_> {
    /// `MADV_FREE` of `[start, end)` inside `v`: `EINVAL` for a locked VMA
    /// or one that is not private anonymous memory; otherwise every present
    /// page mapped only here with an anonymous owner gets a clean entry and
    /// the lazy-free mark (`PageTable::clean_range`, flushed before this
    /// returns). Pages shared with a fork's child, the zero frame and file
    /// pages are left as they are.
    fn lazy_free(&mut self, v: &Vma, start: u64, end: u64) -> Result<(), Errno> {
        if v.locked || v.shared || !v.is_anon() {
            return Err(Errno::EINVAL);
        }
        let frames = &self.space.frames;
        // A secondary MMU must lose write access too, so that its next write
        // dirties the entry again (write-only, blockable).
        let range = NotifierRange::new(start, end, Event::Clean, true);
        let inv = match self.space.invalidate_start(range) {
            Ok(inv) => inv,
            Err(Busy) => unreachable!("a blockable invalidation waits"),
        };
        let mut batch = self.space.pt.clean_range(start, end, |f| {
            let lazy = frames.mapcount(f) == 1 && matches!(frames.owner(f), Owner::Anon { .. });
            if lazy {
                frames.mark_lazyfree(f);
            }
            lazy
        });
        batch.invalidations.push(inv);
        self.space.flush(batch);
        Ok(())
    }
}

/// What one fault needs of a `Cpu` (its counters, VMA cache and sequence
/// hint), for calls that fault pages in without touching them.
pub(crate) struct Faulter {
    stats: FaultCounters,
    cache: RefCell<VmaCache>,
    hint: SeqHint,
}

impl Faulter {
    pub(crate) fn new() -> Faulter {
        Faulter {
            stats: FaultCounters::default(),
            cache: RefCell::new(VmaCache::new(false)),
            hint: SeqHint::default(),
        }
    }

    /// Resolves a fault for `access` at `addr`, as a `Cpu`'s access would,
    /// and reports the access's fault if it cannot be resolved.
    pub(crate) fn fault_for(
        &self,
        space: &AddressSpace,
        addr: u64,
        access: Access,
    ) -> Result<(), crate::error::Fault> {
        space.handle_fault(&self.stats, &self.cache, &self.hint, addr, access)
    }

    /// Resolves a fault for `access` at `addr` (a no-op where the entry
    /// already allows it): `ENOMEM` when no frame was left, `EFAULT` where
    /// the access would signal.
    fn fault(&self, space: &AddressSpace, addr: u64, access: Access) -> Result<(), Errno> {
        space
            .handle_fault(&self.stats, &self.cache, &self.hint, addr, access)
            .map_err(|f| match f.cause {
                FaultCause::OutOfMemory => Errno::ENOMEM,
                _ => Errno::EFAULT,
            })
    }
}

/// `madvise`'s checks of its range (Linux's `madvise_should_skip` and
/// `madvise` entry): `EINVAL` for an unaligned start or a length that
/// overflows once rounded up to pages; `None` for an empty range (nothing
/// to do); else the end of the range.
fn madvise_end(addr: u64, len: u64) -> Result<Option<u64>, Errno> {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    if len == 0 {
        return Ok(None);
    }
    let rounded = len
        .checked_next_multiple_of(PAGE_SIZE)
        .ok_or(Errno::EINVAL)?;
    addr.checked_add(rounded).map(Some).ok_or(Errno::EINVAL)
}

/// `mlock`'s range: the start rounded down to a page, the length grown by
/// the start's offset and rounded up (Linux's `do_mlock`); `EINVAL` when
/// the end overflows.
fn mlock_range(addr: u64, len: u64) -> Result<(u64, u64), Errno> {
    let start = addr & !(PAGE_SIZE - 1);
    let end = len
        .checked_add(addr - start)
        .and_then(|l| l.checked_next_multiple_of(PAGE_SIZE))
        .and_then(|l| start.checked_add(l))
        .ok_or(Errno::EINVAL)?;
    Ok((start, end))
}

/// Linux's `madvise_walk_vmas`: calls `visit(writer, vma, from, to)` for
/// the part of each VMA that meets `[start, end)`, in address order,
/// stopping at its first error; a hole in the range is `ENOMEM` once every
/// VMA has been visited. Each VMA is looked up again after the previous
/// visit, which may have split or merged VMAs.
fn walk_vmas(
    w: &mut Writer<'_>,
    start: u64,
    end: u64,
    mut visit: impl FnMut(&mut Writer<'_>, &Vma, u64, u64) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let mut at = start;
    let mut hole = false;
    while at < end {
        let Some(v) = w.space.vmas_in(at, end).into_iter().next() else {
            hole = true;
            break;
        };
        if v.start > at {
            hole = true;
            at = v.start;
        }
        let to = v.end.min(end);
        visit(w, &v, at, to)?;
        at = to;
    }
    if hole {
        Err(Errno::ENOMEM)
    } else {
        Ok(())
    }
}

/// Linux's `apply_vma_lock_flags`: `set` on every VMA part of
/// `[start, end)`, in order; `ENOMEM` at the first hole (the start
/// unmapped included), after changing the VMAs before it.
fn lock_vmas(
    w: &mut Writer<'_>,
    start: u64,
    end: u64,
    set: impl Fn(&mut Vma),
) -> Result<(), Errno> {
    let mut at = start;
    while at < end {
        let v = w.find(at).ok_or(Errno::ENOMEM)?;
        let to = v.end.min(end);
        w.change_flags(at, to, &set)?;
        at = to;
    }
    Ok(())
}
