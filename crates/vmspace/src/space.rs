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

use crate::cpu::{Cpu, CpuRegistry};
use crate::error::Errno;
use crate::frame::{FrameAllocator, FrameId, PAGE_SIZE};
use crate::object::{File, ZeroStore};
use crate::pagetable::{PageTable, Pte, ADDR_LIMIT, ENTRIES, TABLE_SPAN};
use crate::sync::{AtomicU64, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard, WriterQueue};
use crate::vma::{Backing, Prot, Vma};
use crossbeam_utils::CachePadded;
use std::sync::Arc;
use vmspace_tree::{RangeTree, WriteToken};

/// How page faults synchronize with changes to the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Faults take the address-space lock for reading (Linux before 6.4).
    MmapLock,
    /// Faults look the VMA up without locks and lock only it (Linux 6.4+).
    PerVma,
    /// Faults take no lock and validate with sequence counts (seeds 000, 001).
    Speculative,
}

impl Strategy {
    /// Every strategy, in the order benchmarks show them.
    pub const ALL: [Strategy; 3] = [Strategy::MmapLock, Strategy::PerVma, Strategy::Speculative];

    /// The name used on command lines and in results.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::MmapLock => "mmap-lock",
            Strategy::PerVma => "per-vma",
            Strategy::Speculative => "speculative",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Strategy::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown strategy {s:?} (mmap-lock, per-vma, speculative)"))
    }
}

/// Settings of an address space.
#[derive(Clone, Debug)]
pub struct Config {
    /// The fault strategy.
    pub strategy: Strategy,
    /// Most VMAs allowed (Linux's `vm.max_map_count`).
    pub max_map_count: usize,
    /// Lowest address a mapping may use (Linux's `vm.mmap_min_addr`).
    pub mmap_min_addr: u64,
    /// Top of the area for placed mappings (placement is top-down below it).
    pub mmap_base: u64,
    /// Largest size a `MAP_GROWSDOWN` stack may grow to (Linux's
    /// `RLIMIT_STACK`, 8 MiB by default).
    pub stack_limit: u64,
    /// Whether the CPU has protection keys, so that an execute-only mapping
    /// (`PROT_EXEC` alone) gets Linux's execute-only key: it cannot be read,
    /// and the key is a VMA attribute that keeps it from merging with (or
    /// sharing an anonymous object with) a neighbour without it. Linux does
    /// this on x86-64 CPUs with PKU; `vmspace replay` sets it from the host.
    pub exec_only_pkey: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: Strategy::PerVma,
            max_map_count: 65530,
            mmap_min_addr: 0x10000,
            mmap_base: 0x7f00_0000_0000,
            stack_limit: 8 << 20,
            exec_only_pkey: false,
        }
    }
}

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

/// `mmap` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapFlags {
    /// `MAP_SHARED` (else `MAP_PRIVATE`).
    pub shared: bool,
    /// `MAP_FIXED`: map exactly at the address, replacing what was there.
    pub fixed: bool,
    /// `MAP_FIXED_NOREPLACE`: map exactly at the address, `EEXIST` if taken.
    pub fixed_noreplace: bool,
    /// `MAP_GROWSDOWN`: a stack that grows down on faults just below it.
    pub growsdown: bool,
}

/// `mremap` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemapFlags {
    /// `MREMAP_MAYMOVE`.
    pub may_move: bool,
    /// `MREMAP_FIXED` (with a new address; needs `may_move`).
    pub fixed: Option<u64>,
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

/// State only the holder of the write lock touches.
pub(crate) struct WriterState {
    token: WriteToken,
}

/// An address space. Create it with [`AddressSpace::new`]; touch its memory
/// through [`Cpu`]s from [`AddressSpace::cpu`].
pub struct AddressSpace {
    config: Config,
    frames: Arc<FrameAllocator>,
    /// The VMAs. Read without locks; written under `lock` (write).
    tree: RangeTree<Arc<Vma>>,
    // Layout: the words every writer writes (`writers`, `lock`, `mm_seq`)
    // sit on cache lines of their own, away from what every fault reads
    // (`config`, `frames`, the tree's root, the page table's root). Packed
    // together, a thread changing mappings in a loop (empty `munmap` calls,
    // or map + mprotect + unmap) cost a faulting thread 16-32 % of its rate
    // (`examples/churn_probe.rs`, three runs each, against 0-5 % padded), and
    // the churner ran at half speed.
    /// Writers in arrival order, in front of `lock` (`sync::WriterQueue`).
    writers: CachePadded<WriterQueue>,
    /// The address-space lock (see the module documentation).
    lock: CachePadded<RwLock<WriterState>>,
    /// Per-VMA lock sequence (see `vma.rs`).
    mm_seq: CachePadded<AtomicU64>,
    pt: PageTable,
    cpus: CpuRegistry,
}

/// The address-space lock held for writing. Dropping it advances `mm_seq`
/// (unlocking every VMA marked under it) and then releases the lock.
pub(crate) struct Writer<'a> {
    pub(crate) space: &'a AddressSpace,
    /// `Some` until `drop` hands the lock on.
    state: Option<RwLockWriteGuard<'a, WriterState>>,
    pub(crate) seq: u64,
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
    }
}

fn page_aligned(x: u64) -> bool {
    x.is_multiple_of(PAGE_SIZE)
}

/// `len` rounded up to whole pages, `None` on overflow.
fn page_align_up(len: u64) -> Option<u64> {
    len.checked_add(PAGE_SIZE - 1).map(|l| l & !(PAGE_SIZE - 1))
}

impl AddressSpace {
    /// A new, empty address space drawing frames from `frames`.
    pub fn new(config: Config, frames: Arc<FrameAllocator>) -> Arc<AddressSpace> {
        let (tree, token) = RangeTree::new();
        Arc::new(AddressSpace {
            config,
            frames,
            tree,
            writers: CachePadded::new(WriterQueue::new()),
            lock: CachePadded::new(RwLock::new(WriterState { token })),
            mm_seq: CachePadded::new(AtomicU64::new(1)),
            pt: PageTable::new(),
            cpus: CpuRegistry::default(),
        })
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

    fn write_lock(&self) -> Writer<'_> {
        self.writers.enter();
        let state = self.lock.write();
        let seq = self.mm_seq.load(Ordering::Relaxed);
        Writer {
            space: self,
            state: Some(state),
            seq,
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
    /// inside a VMA whose protection allows what the entry grants, mapping
    /// a frame with a non-zero reference count. For tests and checkers: it
    /// walks everything.
    pub fn check_invariants(&self) -> Result<(), String> {
        let _w = self.write_lock();
        self.tree.check_invariants()?;
        let vmas = self.vmas_in(0, ADDR_LIMIT);
        let mut prev_end = 0;
        for v in &vmas {
            if !page_aligned(v.start) || !page_aligned(v.end) || v.start >= v.end {
                return Err(format!("bad VMA bounds {v:?}"));
            }
            if v.start < prev_end || v.end > ADDR_LIMIT {
                return Err(format!(
                    "VMA {v:?} overlaps its predecessor or passes the limit"
                ));
            }
            if v.is_detached() {
                return Err(format!("VMA {v:?} is in the tree but detached"));
            }
            prev_end = v.end;
        }
        if vmas.len() > self.config.max_map_count {
            return Err(format!("{} VMAs, over the limit", vmas.len()));
        }
        let mut err = None;
        self.pt.for_each_table(0, ADDR_LIMIT, |base, table| {
            let g = table.lock();
            for i in 0..512 {
                let a = base + i * PAGE_SIZE;
                let pte = g.get(a);
                if !pte.present() || err.is_some() {
                    continue;
                }
                let i = vmas.partition_point(|v| v.end <= a);
                let Some(v) = vmas.get(i).filter(|v| v.start <= a) else {
                    err = Some(format!("entry at {a:#x} outside every VMA"));
                    continue;
                };
                if pte.has(Pte::WRITE) && !v.prot.write {
                    err = Some(format!("writable entry at {a:#x} in {v:?}"));
                } else if pte.frame() != FrameId::ZERO && self.frames.refcount(pte.frame()) == 0 {
                    err = Some(format!("entry at {a:#x} maps free frame {:?}", pte.frame()));
                }
            }
        });
        err.map_or(Ok(()), Err)
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
                .is_none_or(|end| end > (u64::MAX >> 12))
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

    /// Linux's `madvise(MADV_DONTNEED)`: drops the pages of `[addr, addr + len)`.
    /// Private anonymous memory reads as zeros again, private file memory as
    /// the file's content, shared memory keeps its content. `ENOMEM` when part
    /// of the range is unmapped (the mapped parts are still dropped).
    pub fn madvise_dontneed(&self, addr: u64, len: u64) -> Result<(), Errno> {
        if !page_aligned(addr) {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let end = page_align_up(len)
            .and_then(|l| addr.checked_add(l))
            .ok_or(Errno::EINVAL)?;
        let w = self.write_lock();
        let vmas = self.vmas_in(addr, end);
        let mut covered = addr;
        let mut hole = false;
        for v in &vmas {
            hole |= v.start > covered;
            covered = v.end;
        }
        hole |= covered < end;
        w.zap(addr, end);
        if hole {
            Err(Errno::ENOMEM)
        } else {
            Ok(())
        }
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
        next.write_lock(w.seq);
        let grown = next.piece(page, next.end, w.seq);
        w.insert(grown);
        next.detach();
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
    if end > ADDR_LIMIT {
        return Err(bad);
    }
    Ok(end)
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
    fn place(&self, addr: u64, len: u64, fixed: bool) -> Result<u64, Errno> {
        let cfg = &self.space.config;
        if fixed {
            let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
            return if end > ADDR_LIMIT {
                Err(Errno::ENOMEM)
            } else {
                Ok(addr)
            };
        }
        let hint = addr & !(PAGE_SIZE - 1);
        if hint >= cfg.mmap_min_addr
            && hint.checked_add(len).is_some_and(|e| e <= ADDR_LIMIT)
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

    fn new_vma(&self, start: u64, end: u64, prot: Prot, flags: MapFlags, source: MapSource) -> Vma {
        let (backing, pgoff, shmem) = match source {
            MapSource::File { file, pgoff } => (Backing::File(file), pgoff, false),
            MapSource::Anon if flags.shared => {
                let pages = (end - start) / PAGE_SIZE;
                let f = File::new(pages, Box::new(ZeroStore), self.space.frames.clone());
                (Backing::File(Arc::new(f)), 0, true)
            }
            MapSource::Anon => (Backing::Anon, start / PAGE_SIZE, false),
        };
        let mut v = Vma::new(start, end, prot, flags.shared, backing, pgoff, self.seq);
        v.growsdown = flags.growsdown;
        v.shmem = shmem;
        v
    }

    /// Stores a VMA (already write-locked for this writer) in the tree.
    pub(crate) fn insert(&mut self, vma: Vma) {
        let (s, e) = (vma.start, vma.end);
        let space = self.space;
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
        v.write_lock(self.seq);
        let (low, high) = (
            v.piece(v.start, addr, self.seq),
            v.piece(addr, v.end, self.seq),
        );
        // Store the upper piece first, then the lower: a lockless reader sees
        // for each address either the old VMA (locked) or a new piece (locked).
        self.insert(high);
        self.insert(low);
        v.detach();
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
            v.write_lock(self.seq);
        }
        let space = self.space;
        space
            .tree
            .erase(self.token(), start, end)
            .expect("non-empty range");
        self.zap(start, end);
        for v in &inside {
            v.detach();
        }
        Ok(())
    }

    /// Clears the page-table entries of `[start, end)`, runs the shootdown and
    /// drops the frames' references.
    ///
    /// # Preconditions
    /// A fault may install an entry in the range concurrently only where the
    /// range stays mapped as it is (`madvise(DONTNEED)`: the entry is then a
    /// fault that came after). Where the mapping goes away or changes, its
    /// VMAs are write-locked or detached first: per-vma faults respect that
    /// through their read lock, speculative faults by checking the VMA's lock
    /// word under the PTE lock (`fault.rs`), and the write lock excludes
    /// locked faults.
    pub(crate) fn zap(&self, start: u64, end: u64) {
        let mut frames: Vec<FrameId> = Vec::new();
        self.space.pt.for_each_table(start, end, |base, table| {
            let g = table.lock();
            let from = start.max(base);
            let to = end.min(base + TABLE_SPAN);
            let mut a = from;
            while a < to {
                let pte = g.get(a);
                if pte.present() {
                    frames.push(pte.frame());
                    g.set(a, Pte(0));
                }
                a += PAGE_SIZE;
            }
        });
        if frames.is_empty() {
            return;
        }
        if crate::debug::broken(crate::debug::ProtocolBreak::EarlyFree) {
            for &f in &frames {
                self.space.frames.put(f);
            }
            self.space.cpus.shootdown();
            return;
        }
        self.space.cpus.shootdown();
        for f in frames {
            self.space.frames.put(f);
        }
    }

    /// Linux's `mprotect` loop: VMA by VMA from `start`, `ENOMEM` at the first
    /// hole (after changing what came before it).
    fn mprotect(&mut self, start: u64, end: u64, prot: Prot) -> Result<(), Errno> {
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
        v.write_lock(self.seq);
        let mut nv = v.piece(start, end, self.seq);
        nv.prot = prot;
        nv.account = account_after_mprotect(&v, prot);
        self.insert(nv);
        self.change_pte_perms(start, end, prot);
        v.detach();
        self.merge_around(start, end);
        Ok(())
    }

    /// Rewrites the permission bits of the present entries in `[start, end)`
    /// for `prot`. Write permission is kept only where the frame is owned
    /// (private anonymous) or the mapping is shared; elsewhere the next write
    /// faults and copies. Runs a shootdown when a permission was removed.
    fn change_pte_perms(&self, start: u64, end: u64, prot: Prot) {
        let base_bits = prot.pte_bits_no_write();
        let mut removed = false;
        self.space.pt.for_each_table(start, end, |tbase, table| {
            let g = table.lock();
            let mut a = start.max(tbase);
            let to = end.min(tbase + TABLE_SPAN);
            while a < to {
                let pte = g.get(a);
                if pte.present() {
                    let mut bits = base_bits;
                    if prot.write && pte.has(Pte::WRITE) {
                        bits |= Pte::WRITE;
                    }
                    let new = pte.with_perms(bits);
                    removed |= pte.0 & Pte::PERMS & !bits != 0;
                    g.set(a, new);
                }
                a += PAGE_SIZE;
            }
        });
        if removed {
            self.space.cpus.shootdown();
        }
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
        if prev.end != addr || next.start != addr || !prev.can_merge_with_next(&next) {
            return;
        }
        prev.write_lock(self.seq);
        next.write_lock(self.seq);
        let merged = prev.piece(prev.start, next.end, self.seq);
        if merged.anon.get().is_none() {
            if let Some(a) = next.anon.get() {
                let _ = merged.anon.set(a.clone());
            }
        }
        self.insert(merged);
        prev.detach();
        next.detach();
    }
}

/// Linux's `VM_ACCOUNT` after `mprotect` (`mprotect_fixup`): making a private
/// mapping writable charges it; making an anonymous mapping that has no
/// anonymous pages read-only releases the charge; otherwise it stays.
fn account_after_mprotect(v: &Vma, prot: Prot) -> bool {
    if prot.write {
        return v.account || !v.shared;
    }
    if v.account && v.is_anon() && v.anon.get().is_none() {
        return false;
    }
    v.account
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // Drop every frame reference held by the page table. No `Cpu` exists
        // (each holds an `Arc` of the space), so no shootdown is needed.
        self.pt.for_each_table(0, ADDR_LIMIT, |base, table| {
            let g = table.lock();
            for i in 0..ENTRIES as u64 {
                let pte = g.get(base + i * PAGE_SIZE);
                if pte.present() {
                    self.frames.put(pte.frame());
                }
            }
        });
    }
}
