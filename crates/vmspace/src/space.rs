//! `AddressSpace`: the VMA tree, the page table, the address-space lock, and
//! the Linux-facing calls `mmap`, `munmap`, `mprotect`, `mremap`, `madvise`.
//!
//! # Locks (see `sync` for the global order)
//!
//! * `lock` (the address-space lock, Linux's `mmap_lock`): a reader-writer
//!   lock. Writers (every call in this file) hold it for writing; the
//!   mmap-lock fault path and fallbacks hold it for reading. The tree's write
//!   token lives inside it, so only its holder can change the tree. Writers
//!   first wait for their turn in `writers`, a ticket queue, so that a thread
//!   changing mappings in a loop cannot keep another writer out.
//! * `mm_seq`: the per-VMA lock sequence (`vma.rs`), advanced when the write
//!   lock is released, which unlocks every VMA the writer marked.
//! * Changes to the tree are ordered so that a lockless reader always finds,
//!   for each address, the old VMA (write-locked or detached: it backs off) or
//!   the new one (write-locked until the writer is done): never a hole where
//!   a mapping continues to exist.
//!
//! # How a change is made
//!
//! Every call follows the same steps, the way Linux's `vma_modify` and
//! `do_vmi_munmap` do: split the VMAs that cross the range's ends
//! ([`Writer::split_at`]), write-lock and replace or remove the VMAs inside,
//! fix the page table (zap, change permissions, or move entries), run the TLB
//! shootdown, drop the frame references, then merge the result with its
//! neighbours where Linux would ([`Writer::merge_around`]).

use crate::config::{Config, ConfigError, MapFlags, RemapFlags, Strategy};
use crate::cpu::Cpu;
use crate::error::Errno;
use crate::frame::{FrameAllocator, FrameId, PAGE_SIZE};
use crate::object::File;
use crate::pagetable::{Event, PageTable, Pte, ADDR_LIMIT, TASK_SIZE};
use crate::sync::{AtomicU64, Ordering, RwLock, RwLockReadGuard, WriterQueue};
use crate::tlb::CpuRegistry;
use crate::vma::{Prot, Vma};
use crate::writer::{Writer, WriterState};
use crossbeam_utils::CachePadded;
use std::sync::Arc;
use vmspace_tree::RangeTree;
/// What to map.
#[derive(Clone)]
pub enum MapSource {
    /// Anonymous memory (private, or shared: one shmem object per call).
    Anon,
    /// A file, from page `pgoff`.
    File {
        /// The file.
        file: Arc<File>,
        /// First page of the file mapped.
        pgoff: u64,
    },
}
/// One line of [`AddressSpace::maps`] (what `/proc/PID/maps` shows).
#[derive(Clone, Debug)]
pub struct MapInfo {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Protection.
    pub prot: Prot,
    /// `MAP_SHARED`.
    pub shared: bool,
    /// The file, for file mappings (`None` for anonymous and shmem memory).
    pub file: Option<Arc<File>>,
    /// Page offset of `start` in the file (0 for anonymous memory).
    pub pgoff: u64,
    /// The object behind a shared or file mapping (the file, or the
    /// shared-memory object of a shared anonymous mapping) and the page offset
    /// of `start` in it; `None` for private anonymous memory. Checkers use it
    /// to tell which mappings show the same pages.
    pub object: Option<(Arc<File>, u64)>,
}
/// An address space. Create it with [`AddressSpace::new`]; touch its memory
/// through [`Cpu`]s from [`AddressSpace::cpu`].
pub struct AddressSpace {
    pub(crate) config: Config,
    pub(crate) frames: Arc<FrameAllocator>,
    /// The VMAs. Read without locks; written under `lock` (write).
    pub(crate) tree: RangeTree<Arc<Vma>>,
    // Layout: the words every writer writes (`writers`, `lock`, `mm_seq`)
    // sit on cache lines of their own, away from what every fault reads
    // (`config`, `frames`, the tree's root, the page table's root), so that
    // a thread changing mappings does not slow faults elsewhere
    // (`docs/decisions.md`).
    /// Writers in arrival order, in front of `lock` (`sync::WriterQueue`).
    pub(crate) writers: CachePadded<WriterQueue>,
    /// The address-space lock (see the module documentation).
    pub(crate) lock: CachePadded<RwLock<WriterState>>,
    /// Per-VMA lock sequence (see `vma.rs`).
    pub(crate) mm_seq: CachePadded<AtomicU64>,
    pub(crate) pt: PageTable,
    pub(crate) cpus: CpuRegistry,
    /// MMU-notifier subscriptions (`notifier.rs`).
    pub(crate) notifiers: crate::notifier::Notifiers,
}
fn page_aligned(x: u64) -> bool {
    x.is_multiple_of(PAGE_SIZE)
}

/// `len` rounded up to whole pages, `None` on overflow.
fn page_align_up(len: u64) -> Option<u64> {
    len.checked_add(PAGE_SIZE - 1).map(|l| l & !(PAGE_SIZE - 1))
}
impl AddressSpace {
    /// A new, empty address space drawing frames from `frames`; a
    /// configuration that [`Config::validate`] refuses is an error.
    pub fn new(
        config: Config,
        frames: Arc<FrameAllocator>,
    ) -> Result<Arc<AddressSpace>, ConfigError> {
        config.validate()?;
        frames.start_reclaimer();
        let (tree, token) = RangeTree::new();
        Ok(Arc::new(AddressSpace {
            config,
            frames,
            tree,
            writers: CachePadded::new(WriterQueue::new()),
            lock: CachePadded::new(RwLock::new(WriterState { token })),
            mm_seq: CachePadded::new(AtomicU64::new(1)),
            pt: PageTable::new(),
            cpus: CpuRegistry::default(),
            notifiers: Default::default(),
        }))
    }

    /// A `Cpu` bound to this address space, for one thread.
    pub fn cpu(self: &Arc<Self>) -> Cpu {
        Cpu::new(self.clone())
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The fault strategy.
    pub fn strategy(&self) -> Strategy {
        self.config.strategy
    }

    /// The frame allocator.
    pub fn frames(&self) -> &Arc<FrameAllocator> {
        &self.frames
    }

    pub(crate) fn page_table(&self) -> &PageTable {
        &self.pt
    }

    pub(crate) fn cpus(&self) -> &CpuRegistry {
        &self.cpus
    }

    pub(crate) fn tree(&self) -> &RangeTree<Arc<Vma>> {
        &self.tree
    }

    pub(crate) fn mm_seq(&self) -> &AtomicU64 {
        &self.mm_seq
    }

    pub(crate) fn read_lock(&self) -> RwLockReadGuard<'_, WriterState> {
        self.lock.read()
    }

    pub(crate) fn write_lock(&self) -> Writer<'_> {
        self.writers.enter();
        let state = self.lock.write();
        let seq = self.mm_seq.load(Ordering::Relaxed);
        Writer {
            space: self,
            state: Some(state),
            seq,
            write_backs: Vec::new(),
        }
    }

    /// Fault counters summed over this address space's `Cpu`s.
    pub fn fault_stats(&self) -> crate::FaultStats {
        self.cpus.totals()
    }

    /// Number of last-level page tables (each maps 2 MiB).
    pub fn page_tables(&self) -> usize {
        self.pt.tables()
    }

    /// Checks the address space's invariants, under the write lock (so no
    /// change runs meanwhile; faults may): the tree's own; VMAs page aligned,
    /// non-empty, in order, inside the address limit and attached; the VMA
    /// count within `max_map_count`; every present entry of the page table
    /// inside a VMA whose protection allows what the entry grants; the frame
    /// metadata of every mapped frame: at least as many references as
    /// mappings, a mapcount no lower than the entries here (exactly 1 for an
    /// owned frame), and the owner the VMA implies (its anonymous object or
    /// file, at the page's index). For tests and checkers: it walks everything.
    pub fn check_invariants(&self) -> Result<(), String> {
        let _w = self.write_lock();
        let _quiet = self.frames.hold_off_reclaim();
        self.tree.check_invariants()?;
        let vmas = self.vmas_in(0, ADDR_LIMIT);
        let mut prev_end = 0;
        for v in &vmas {
            if !page_aligned(v.start) || !page_aligned(v.end) || v.start >= v.end {
                return Err(format!("bad VMA bounds {v:?}"));
            }
            if v.start < prev_end || v.end > TASK_SIZE {
                return Err(format!(
                    "VMA {v:?} overlaps its predecessor or passes the limit"
                ));
            }
            if v.is_detached() {
                return Err(format!("VMA {v:?} is in the tree but detached"));
            }
            prev_end = v.end;
        }
        // `mmap` may take the count one past the limit, as Linux's does.
        if vmas.len() > self.config.max_map_count.saturating_add(1) {
            return Err(format!("{} VMAs, over the limit", vmas.len()));
        }
        let mut err = None;
        let mut mapped_here: std::collections::HashMap<FrameId, u32> = Default::default();
        let mut rmap_checks = Vec::new();
        self.pt.for_each_present(0, ADDR_LIMIT, |a, pte| {
            if err.is_some() {
                return;
            }
            let i = vmas.partition_point(|v| v.end <= a);
            let Some(v) = vmas.get(i).filter(|v| v.start <= a) else {
                err = Some(format!("entry at {a:#x} outside every VMA"));
                return;
            };
            err = self.check_entry(v, a, pte).err();
            *mapped_here.entry(pte.frame()).or_default() += 1;
            if pte.frame() != FrameId::ZERO {
                rmap_checks.push((i, a, pte));
            }
        });
        // The reverse-map checks take rmap locks, which rank above PTE
        // locks (`sync`): they run after the walk has let go of every table.
        for &(i, a, pte) in &rmap_checks {
            if err.is_some() {
                break;
            }
            err = self.check_rmap(&vmas[i], a, pte).err();
        }
        if err.is_none() {
            err = self.check_mapcounts(&mapped_here).err();
        }
        if err.is_none() {
            err = self.check_swap_entries(&vmas).err();
        }
        err.map_or(Ok(()), Err)
    }

    /// Every swap entry lies in a private VMA and names a slot that is in
    /// use on the arena's swap device.
    fn check_swap_entries(&self, vmas: &[Arc<Vma>]) -> Result<(), String> {
        let mut err = None;
        let device = self.frames.swap_device();
        self.pt.for_each_swap(0, ADDR_LIMIT, |a, slot| {
            if err.is_some() {
                return;
            }
            let i = vmas.partition_point(|v| v.end <= a);
            let Some(v) = vmas.get(i).filter(|v| v.start <= a) else {
                err = Some(format!("swap entry at {a:#x} outside every VMA"));
                return;
            };
            if v.shared {
                err = Some(format!("swap entry at {a:#x} in shared {v:?}"));
            } else if device.is_none_or(|d| d.refcount(slot) == 0) {
                err = Some(format!("swap entry at {a:#x} names free {slot}"));
            }
        });
        err.map_or(Ok(()), Err)
    }

    /// Pages of this address space that are in swap: its swap entries
    /// (Linux's `VmSwap` in pages). A snapshot per page table.
    pub fn swapped_pages(&self) -> u64 {
        let _pinned = vmspace_tree::pin();
        let mut n = 0;
        self.pt.for_each_swap(0, ADDR_LIMIT, |_, _| n += 1);
        n
    }

    /// The swap slots this address space's entries name, with the number of
    /// entries naming each (for [`FrameAllocator::check_swap`]).
    pub fn swap_references(&self) -> std::collections::HashMap<crate::SwapSlot, u32> {
        let _pinned = vmspace_tree::pin();
        let mut refs = std::collections::HashMap::new();
        self.pt.for_each_swap(0, ADDR_LIMIT, |_, slot| {
            *refs.entry(slot).or_insert(0) += 1;
        });
        refs
    }

    /// The checks of one present entry at `a` inside `v` that need only its
    /// PTE lock (see [`Self::check_invariants`]; the reverse map's,
    /// `check_rmap`, run after the walk).
    fn check_entry(&self, v: &Vma, a: u64, pte: Pte) -> Result<(), String> {
        let f = pte.frame();
        if pte.has(Pte::WRITE) && !v.prot.write {
            return Err(format!("writable entry at {a:#x} in {v:?}"));
        }
        if f == FrameId::ZERO {
            return if pte.has(Pte::WRITE) {
                Err(format!("the zero frame mapped writable at {a:#x}"))
            } else {
                Ok(())
            };
        }
        let (refs, maps) = self.settled_counts(f);
        if refs == 0 || refs < maps {
            return Err(format!(
                "frame {f:?} at {a:#x}: {refs} references, {maps} mappings"
            ));
        }
        if pte.has(Pte::OWNED) && maps != 1 {
            return Err(format!("owned frame {f:?} at {a:#x} mapped {maps} times"));
        }
        Ok(())
    }

    /// `f`'s reference and mapping counts, read again (up to 64 times) while
    /// they break `0 < maps <= refs`. The two counts are not read at one
    /// instant, and other address spaces sharing the frame (a fork's parent
    /// and its other children) map and unmap it while this one is checked:
    /// a fault there takes its reference and then maps, so one read may see
    /// the mapping without the reference. A lost reference stays lost, so a
    /// frame whose counts are wrong on every read is still reported.
    fn settled_counts(&self, f: FrameId) -> (u32, u32) {
        let mut counts = (0, 0);
        for _ in 0..64 {
            counts = (self.frames.refcount(f), self.frames.mapcount(f));
            if counts.0 != 0 && counts.0 >= counts.1 {
                break;
            }
            crate::sync::yield_now();
        }
        counts
    }

    /// The reverse map's invariant for one entry (`rmap.rs`): the frame's
    /// owner is an object this VMA may map pages of (its file, or its
    /// anonymous object or an ancestor of it; exactly its own object for an
    /// owned frame), at the page's index, and that object records this VMA
    /// at this address.
    fn check_rmap(&self, v: &Vma, a: u64, pte: Pte) -> Result<(), String> {
        use crate::frame::Owner;
        let f = pte.frame();
        let index = v.pgoff_at(a);
        let owner = self.frames.owner(f);
        let bad = |why: &str| {
            Err(format!(
                "frame {f:?} at {a:#x} in {v:?}, owner {owner:?}: {why}"
            ))
        };
        match owner {
            Owner::Anon { index: i, .. } => {
                let Some(anon) = v.anon.get() else {
                    return bad("an anonymous page in a VMA without an anonymous object");
                };
                let own = Owner::Anon {
                    object: anon.id(),
                    index,
                };
                if pte.has(Pte::OWNED) && own.normalized() != owner {
                    return bad("an owned frame of another object or index");
                }
                let ancestor = anon.chain().find(|o| {
                    Owner::Anon {
                        object: o.id(),
                        index,
                    }
                    .normalized()
                        == owner
                });
                match ancestor {
                    None if i != index => bad("the page's index is not the VMA's"),
                    None => bad("owned by an object outside the VMA's chain"),
                    Some(o) if !o.mappings.has(self, a, index) => {
                        bad("the owner does not record this VMA")
                    }
                    Some(_) => Ok(()),
                }
            }
            Owner::File { .. } => {
                let Some(file) = v.file() else {
                    return bad("a file page in an anonymous VMA");
                };
                if pte.has(Pte::OWNED) {
                    return bad("a file page marked owned");
                }
                let expected = Owner::File {
                    file: file.id(),
                    index,
                };
                if expected.normalized() != owner {
                    return bad("not this file's page at this index");
                }
                if !file.mappings().has(self, a, index) {
                    return bad("the file does not record this VMA");
                }
                Ok(())
            }
            Owner::None => bad("a mapped frame without an owner"),
        }
    }

    /// Mapcounts against this page table's entries (`mapped_here`): an owned
    /// frame is mapped once; any frame at least as often as here (other
    /// address spaces may map shared frames too).
    fn check_mapcounts(
        &self,
        mapped_here: &std::collections::HashMap<FrameId, u32>,
    ) -> Result<(), String> {
        for (&f, &n) in mapped_here {
            if f == FrameId::ZERO {
                continue;
            }
            let m = self.frames.mapcount(f);
            if m < n {
                return Err(format!("frame {f:?}: mapcount {m}, mapped {n} times here"));
            }
        }
        Ok(())
    }

    /// Number of VMAs.
    pub fn map_count(&self) -> usize {
        self.tree.len()
    }

    /// The mappings, in address order (what `/proc/PID/maps` lists).
    pub fn maps(&self) -> Vec<MapInfo> {
        let _r = self.lock.read();
        let g = vmspace_tree::pin();
        self.tree
            .iter(0, u64::MAX, &g)
            .map(|e| {
                let v = e.value;
                MapInfo {
                    start: v.start,
                    end: v.end,
                    prot: v.prot,
                    shared: v.shared,
                    file: if v.shmem { None } else { v.file().cloned() },
                    pgoff: if v.is_anon() || v.shmem { 0 } else { v.pgoff },
                    object: v.file().map(|f| (f.clone(), v.pgoff)),
                }
            })
            .collect()
    }

    /// Writes back the dirty pages of every file mapped shared in
    /// `[addr, addr + len)` (Linux's `msync(MS_SYNC)`); `ENOMEM` if part of the
    /// range is unmapped, `EIO` if a write failed.
    pub fn msync(&self, addr: u64, len: u64) -> Result<(), Errno> {
        if !page_aligned(addr) {
            return Err(Errno::EINVAL);
        }
        let end = page_align_up(len)
            .and_then(|l| addr.checked_add(l))
            .ok_or(Errno::ENOMEM)?;
        let vmas = {
            let _r = self.lock.read();
            self.vmas_in(addr, end)
        };
        let mut result = Ok(());
        let mut at = addr;
        for v in &vmas {
            if v.start > at {
                result = Err(Errno::ENOMEM);
            }
            at = v.end;
            if let (true, Some(f)) = (v.shared, v.file()) {
                if f.sync().is_err() {
                    return Err(Errno::EIO);
                }
            }
        }
        if at < end {
            result = Err(Errno::ENOMEM);
        }
        result
    }

    /// The VMAs meeting `[start, end)`, in order.
    pub(crate) fn vmas_in(&self, start: u64, end: u64) -> Vec<Arc<Vma>> {
        let g = vmspace_tree::pin();
        self.tree
            .iter(start, end, &g)
            .map(|e| e.value.clone())
            .collect()
    }

    /// Maps `len` bytes (rounded up to pages) and returns the address.
    ///
    /// Placement: `MAP_FIXED` maps at `addr` (which must be page aligned),
    /// replacing whatever was there; `MAP_FIXED_NOREPLACE` fails with `EEXIST`
    /// if anything is there; otherwise `addr` is a hint, used if free, else
    /// the highest free gap below `mmap_base` is taken (top-down, as Linux).
    pub fn mmap(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        source: MapSource,
    ) -> Result<u64, Errno> {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_align_up(len).ok_or(Errno::ENOMEM)?;
        if let MapSource::File { pgoff, .. } = &source {
            if pgoff
                .checked_add(len / PAGE_SIZE)
                .is_none_or(|end| end > MAX_FILE_PAGES)
            {
                return Err(Errno::EOVERFLOW);
            }
        }
        let fixed = flags.fixed || flags.fixed_noreplace;
        if fixed && !page_aligned(addr) {
            return Err(Errno::EINVAL);
        }
        let mut w = self.write_lock();
        if self.tree.len() > self.config.max_map_count {
            return Err(Errno::ENOMEM);
        }
        let start = w.place(addr, len, fixed)?;
        let end = start + len;
        if flags.fixed_noreplace && !self.vmas_in(start, end).is_empty() {
            return Err(Errno::EEXIST);
        }
        if fixed && start < self.config.mmap_min_addr {
            return Err(Errno::EPERM);
        }
        w.unmap(start, end)?;
        let vma = w.new_vma(start, end, prot, flags, source);
        w.insert(vma);
        w.merge_around(start, end);
        Ok(start)
    }

    /// Unmaps `[addr, addr + len)`. Unmapped parts are fine (Linux returns 0).
    pub fn munmap(&self, addr: u64, len: u64) -> Result<(), Errno> {
        let end = check_range(addr, len, Errno::EINVAL)?;
        let mut w = self.write_lock();
        w.unmap(addr, end)
    }

    /// Changes the protection of `[addr, addr + len)`. `ENOMEM` when part of the
    /// range is unmapped; as in Linux, the VMAs before the first hole are
    /// changed anyway.
    pub fn mprotect(&self, addr: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        if !page_aligned(addr) {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let end = page_align_up(len)
            .and_then(|l| addr.checked_add(l))
            .ok_or(Errno::ENOMEM)?;
        if end > ADDR_LIMIT {
            return Err(Errno::ENOMEM);
        }
        let mut w = self.write_lock();
        w.mprotect(addr, end, prot)
    }

    /// Resizes and/or moves a mapping (Linux's `mremap`); returns its address.
    pub fn mremap(
        &self,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: RemapFlags,
    ) -> Result<u64, Errno> {
        if !page_aligned(addr) || (flags.fixed.is_some() && !flags.may_move) {
            return Err(Errno::EINVAL);
        }
        let old_len = page_align_up(old_len).ok_or(Errno::EINVAL)?;
        let new_len = page_align_up(new_len).ok_or(Errno::EINVAL)?;
        if new_len == 0 {
            return Err(Errno::EINVAL);
        }
        let mut w = self.write_lock();
        crate::remap::mremap(&mut w, addr, old_len, new_len, flags)
    }
}

/// Most pages a regular file can have, as Linux counts them for `mmap`:
/// `MAX_LFS_FILESIZE` (2^63 - 1 bytes) in pages, 2^51 - 1. A file mapping
/// whose page offset plus length passes it is `EOVERFLOW`.
pub const MAX_FILE_PAGES: u64 = (1 << 51) - 1;

/// The gap kept below a growing stack (Linux's default `stack_guard_gap`).
pub const STACK_GUARD_GAP: u64 = 256 * PAGE_SIZE;

impl AddressSpace {
    /// Grows the `MAP_GROWSDOWN` VMA above `addr` down to cover it, if it is
    /// the next VMA above and Linux would let it grow (see [`Self::may_grow_to`]).
    /// Returns whether `addr` is now mapped.
    ///
    /// The stack grows under the write lock, like any other change (Linux's
    /// answer to CVE-2023-3269, "StackRot": growing under the read lock raced
    /// with lockless readers of the tree): the old VMA is write-locked,
    /// replaced and detached, so lockless faults never see it change.
    pub(crate) fn expand_stack(&self, addr: u64) -> bool {
        let mut w = self.write_lock();
        let page = addr & !(PAGE_SIZE - 1);
        let g = vmspace_tree::pin();
        let Some(next) = self.tree.find_after(addr, &g).map(|e| e.value.clone()) else {
            return false;
        };
        if next.start <= addr {
            return true;
        }
        let prev = self.tree.find_before(page, &g).map(|e| e.value.clone());
        drop(g);
        if !self.may_grow_to(&next, prev.as_deref(), page) {
            return false;
        }
        next.write_lock(&w);
        let grown = next.piece(page, next.end, w.seq);
        w.insert(grown);
        next.detach(&w);
        true
    }

    /// Whether the stack `vma` may grow down to start at `page` (which lies in
    /// the gap below it, `prev` being the VMA below the gap), by Linux's rules
    /// for `expand_downwards`: the VMA is `MAP_GROWSDOWN`; `page` is not below
    /// `mmap_min_addr`; an accessible VMA below that is not itself a stack
    /// stays at least [`STACK_GUARD_GAP`] away; the page offset does not go
    /// below zero; the stack stays within `stack_limit`.
    fn may_grow_to(&self, vma: &Vma, prev: Option<&Vma>, page: u64) -> bool {
        if !vma.growsdown || page < self.config.mmap_min_addr {
            return false;
        }
        if let Some(prev) = prev {
            let accessible = prev.prot != Prot::NONE;
            if !prev.growsdown && accessible && page - prev.end < STACK_GUARD_GAP {
                return false;
            }
        }
        let grow = (vma.start - page) / PAGE_SIZE;
        grow <= vma.pgoff && vma.end - page <= self.config.stack_limit
    }
}

/// `addr + len` (len rounded up to pages) for munmap-like calls: `bad` for an
/// unaligned address, a zero length, overflow or a range past the user limit.
fn check_range(addr: u64, len: u64, bad: Errno) -> Result<u64, Errno> {
    if !page_aligned(addr) || len == 0 {
        return Err(bad);
    }
    let end = page_align_up(len)
        .and_then(|l| addr.checked_add(l))
        .ok_or(bad)?;
    if end > TASK_SIZE {
        return Err(bad);
    }
    Ok(end)
}
impl Drop for AddressSpace {
    fn drop(&mut self) {
        // Subscribers hear first and call nothing afterwards (Linux's
        // `exit_mmap`).
        self.release_notifiers();
        // Drop every frame reference held by the page table. No `Cpu` exists
        // (each holds an `Arc` of the space), so the flush waits for none.
        let batch = self
            .pt
            .update(0, ADDR_LIMIT, Event::Unmap, true, &self.frames, |_, _| {
                Pte(0)
            });
        self.flush(batch);
        // The mappings still here are removed too: dirty pages of shared file
        // mappings reach the store now, not when the last VMA is collected,
        // and the files forget the ranges they mapped.
        let g = vmspace_tree::pin();
        for e in self.tree.iter(0, u64::MAX, &g) {
            let v = e.value;
            if let (true, false, Some(file)) = (v.shared, v.shmem, v.file()) {
                file.write_back(v.pgoff, v.pgoff_at(v.end));
            }
            v.forget_mappings(self);
        }
    }
}
