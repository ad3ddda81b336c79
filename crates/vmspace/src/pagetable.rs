//! Page tables: a software 4-level radix table (9 bits a level, 4 KiB pages,
//! 48-bit addresses) with one lock per last-level table (split PTE locks), and
//! the one place where entries change.
//!
//! # The range update
//!
//! Every change that removes or downgrades translations goes through
//! [`PageTable::update`] (or [`PageTable::move_entries`] for `mremap`, which
//! moves entries between two tables, and [`PteTable::install`] for the fault
//! path's copy-on-write): it walks `[start, end)`, locks each last-level table
//! in turn, applies a change per present entry, keeps each frame's mapcount
//! (`frame.rs`), and returns a [`FlushBatch`]: the ranges whose translations
//! were removed or downgraded, the frame references to drop and the tables to
//! free once no `Cpu` can use them. The caller passes the batch to
//! `AddressSpace::flush` (`tlb.rs`), which runs the shootdown, then releases
//! the frames. No other module writes a PTE. The batch names its [`Event`]
//! and whether the caller may block: what the hooks that come later (MMU
//! notifiers, TLB batching, reverse mapping) need. They run before the first
//! PTE lock of an update is taken (`Writer::update_range`) and after the flush.
//!
//! # Protocol
//!
//! * Upper-level entries are pointers, set once from null by compare-exchange
//!   (so tables are created without the address-space lock). Directories are
//!   freed with the page table. A last-level table is freed when the range
//!   it maps holds no VMA any more ([`PageTable::unlink_empty`], from
//!   `munmap`, as Linux's `free_pgtables`): under its lock it is marked dead
//!   and its slot cleared; the batch frees it after the shootdown (which
//!   ends every `Cpu` access that loaded the slot before) and after an epoch
//!   grace period (which ends every speculative fault that did: those run
//!   pinned). Faults under a VMA lock or the address-space lock cannot hold
//!   it: the range had no VMA left, and the writer waited for the readers of
//!   the VMAs it removed. A fault that locks a dead table installs nothing.
//! * A last-level table holds 512 page-table entries (PTEs) and their lock. A
//!   PTE changes only under its table's lock. `Cpu`s read PTEs without it (one
//!   atomic load), inside their access section (`cpu.rs`).
//! * Whoever clears a PTE or takes a permission away drops the frame's
//!   reference only after the shootdown (the batch does that): a `Cpu` may
//!   have loaded the old PTE just before.
//!
//! Lock order: a PTE lock is taken under the address-space lock or a VMA lock
//! (never the other way round) and nothing but the frame free list is taken
//! under it. `mremap` holds two PTE locks at once, the lower address first;
//! see `sync` for the global order.
//!
//! # PTE format
//!
//! | bits | meaning |
//! |---|---|
//! | 0 | present |
//! | 1 | readable |
//! | 2 | writable |
//! | 3 | executable |
//! | 4 | owned: the frame is anonymous and private to this mapping, so a write fault may make it writable without a copy |
//! | 5 | accessed: a `Cpu` used the translation since the bit was last cleared |
//! | 6 | dirty: a `Cpu` wrote through the translation since the bit was last cleared |
//! | 12..44 | frame number |
//!
//! A swap entry (a private anonymous page written to swap, `swapcache.rs`) is
//! not present: bit 0 clear, bit 7 set, the swap slot in bits 12..44, nothing
//! else. Only [`PageTable::update`]'s unmap and zap events remove swap
//! entries (their slot references go to the batch, released by the flush);
//! `mremap` moves them and `fork` copies them (one more slot reference);
//! every other change leaves them, and a fault on one swaps the page in.
//!
//! The accessed and dirty bits are set as hardware sets them: by the `Cpu`
//! that uses the entry, without the PTE lock, by a compare-exchange that
//! succeeds only on the entry it loaded ([`PageTable::mark_used`]; a `Cpu`
//! that loses the race for the accessed bit just goes on: its access was
//! inside its section, which any change's shootdown waits for; one that
//! loses it for the dirty bit translates again before it stores, as a CPU's
//! page walk that sets the dirty bit faults on an entry that changed, so a
//! store never lands through an entry that reclaim saw clean), and by the fault that installs
//! the entry for an access. Every other change is made under the PTE lock
//! by a swap that keeps bits a `Cpu` set meanwhile ([`PteGuard::set`]).
//! They are cleared by `page_referenced` (accessed) and by cleaning
//! (dirty, with write permission).

use crate::frame::{FrameAllocator, FrameId, PAGE_SIZE};
use crate::swap::SwapSlot;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
/// Address bits resolved per level: 9 (512 entries a table), as x86-64. Under
/// `--cfg loom` 3 (8 entries, a 24-bit address space), so that the model
/// checker tracks a few dozen atomics instead of thousands.
#[cfg(not(loom))]
const LEVEL_BITS: u32 = 9;
#[cfg(loom)]
const LEVEL_BITS: u32 = 3;
/// Entries per table.
pub(crate) const ENTRIES: usize = 1 << LEVEL_BITS;
/// Bytes mapped by one last-level table.
pub(crate) const TABLE_SPAN: u64 = ENTRIES as u64 * crate::frame::PAGE_SIZE;
/// Highest user address + 1 that the table can map (47 bits, as x86-64 user
/// space; 24 bits under `--cfg loom`).
#[cfg(not(loom))]
pub const ADDR_LIMIT: u64 = 1 << 47;
/// Highest user address + 1 that the table can map (47 bits, as x86-64 user
/// space; 24 bits under `--cfg loom`).
#[cfg(loom)]
pub const ADDR_LIMIT: u64 = 1 << (12 + 4 * LEVEL_BITS);

/// One past the highest address a mapping may use (Linux's `TASK_SIZE` on
/// x86-64 with 4-level paging: the last page below [`ADDR_LIMIT`] is never
/// mapped, so that no access runs off the top of user space).
pub const TASK_SIZE: u64 = ADDR_LIMIT - crate::frame::PAGE_SIZE;

/// A page-table entry value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pte(pub u64);

impl Pte {
    /// Present bit.
    pub const PRESENT: u64 = 1 << 0;
    /// The page may be read.
    pub const READ: u64 = 1 << 1;
    /// The page may be written.
    pub const WRITE: u64 = 1 << 2;
    /// Instructions may be fetched from the page.
    pub const EXEC: u64 = 1 << 3;
    /// The frame is anonymous and exclusive to this entry.
    pub const OWNED: u64 = 1 << 4;
    /// The translation was used since the bit was cleared.
    pub const ACCESSED: u64 = 1 << 5;
    /// The translation was written through since the bit was cleared.
    pub const DIRTY: u64 = 1 << 6;
    /// The bits `Cpu`s set without the lock.
    pub const USED: u64 = Self::ACCESSED | Self::DIRTY;
    /// Permission bits.
    pub const PERMS: u64 = Self::READ | Self::WRITE | Self::EXEC;
    /// A swap entry (not present; the slot in the frame-number bits).
    pub const SWAP: u64 = 1 << 7;

    /// What an entry must have for `access` (present, and the permission),
    /// and the bits the access sets in it (accessed, and dirty for a
    /// write), as a hardware page walk sets them.
    #[inline]
    pub(crate) fn bits_for(access: crate::error::Access) -> (u64, u64) {
        use crate::error::Access;
        match access {
            Access::Read => (Self::PRESENT | Self::READ, Self::ACCESSED),
            Access::Write => (Self::PRESENT | Self::WRITE, Self::ACCESSED | Self::DIRTY),
            Access::Fetch => (Self::PRESENT | Self::EXEC, Self::ACCESSED),
        }
    }

    /// An entry mapping `frame` with `bits` (permission and owned bits).
    pub fn new(frame: FrameId, bits: u64) -> Pte {
        Pte((u64::from(frame.0) << 12) | bits | Self::PRESENT)
    }

    /// Whether the entry maps a frame.
    pub fn present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }

    /// A swap entry naming `slot`.
    pub fn swap(slot: SwapSlot) -> Pte {
        Pte((u64::from(slot.index()) << 12) | Self::SWAP)
    }

    /// Whether the entry is a swap entry.
    pub fn is_swap(self) -> bool {
        self.0 & (Self::PRESENT | Self::SWAP) == Self::SWAP
    }

    /// The slot of a swap entry.
    pub fn swap_slot(self) -> SwapSlot {
        SwapSlot::from_index((self.0 >> 12) as u32)
    }

    /// The mapped frame.
    pub fn frame(self) -> FrameId {
        FrameId((self.0 >> 12) as u32)
    }

    /// Whether all of `bits` are set.
    pub fn has(self, bits: u64) -> bool {
        self.0 & bits == bits
    }

    /// The same entry with permission bits replaced by `perms`.
    pub fn with_perms(self, perms: u64) -> Pte {
        Pte((self.0 & !Self::PERMS) | (perms & Self::PERMS))
    }
}

/// Why translations change: what a flush batch and an MMU notifier's
/// [`NotifierRange`](crate::NotifierRange) tell the hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The range is unmapped (`munmap`, or replaced by `mmap(MAP_FIXED)`).
    Unmap,
    /// Permissions are taken away (`mprotect`).
    Protect,
    /// The pages are dropped, the mapping stays (`madvise(MADV_DONTNEED)`).
    Zap,
    /// The entries move to another address (`mremap`).
    Move,
    /// A fault replaced a read-only entry by one to a private copy.
    CowBreak,
    /// `fork` write-protected private entries it shares with the child.
    Fork,
    /// The reverse map removed the entries of a frame (`try_to_unmap`).
    Reclaim,
    /// A write-back write-protected a page before copying it to its store.
    Clean,
}

/// What an update did, for the shootdown and the hooks (see "The range
/// update"). Dropping a non-empty batch unflushed would leak its frames and
/// tables: pass it to `AddressSpace::flush`.
#[must_use]
pub(crate) struct FlushBatch {
    pub(crate) event: Event,
    /// Whether the caller may sleep (MMU notifiers will ask).
    pub(crate) may_block: bool,
    /// Ranges whose translations were removed or downgraded, in order,
    /// contiguous ones merged.
    pub(crate) ranges: Vec<(u64, u64)>,
    /// Frame references to drop after the shootdown.
    pub(crate) frames: Vec<FrameId>,
    /// Swap-slot references of removed swap entries, released by the flush.
    pub(crate) slots: Vec<SwapSlot>,
    /// Unlinked tables to free after the shootdown and a grace period.
    pub(crate) tables: Vec<DeadTable>,
    /// Frames whose removed entry was dirty. Their file pages are marked
    /// dirty by the flush after the shootdown (`tlb.rs`): a store through
    /// the entry may land until then, after a write-back that found the
    /// entry already gone has copied the page.
    pub(crate) dirty_frames: Vec<FrameId>,
    /// The MMU-notifier invalidations announcing this change, ended by the
    /// flush after the shootdown (`notifier.rs`).
    pub(crate) invalidations: Vec<crate::notifier::Invalidation>,
}

/// A last-level table that was unlinked and awaits freeing.
pub(crate) struct DeadTable(*mut PteTable);

// SAFETY: a dead table is owned by its batch alone (unlinked from the
// directory, reachable only by readers that the flush waits for); the
// pointer came from `Box::into_raw` and is freed once, by `DeadTable::free`.
unsafe impl Send for DeadTable {}

impl DeadTable {
    /// Frees the table once every epoch guard pinned now is gone.
    ///
    /// # Preconditions
    /// The shootdown that followed the unlink has run.
    pub(crate) fn free(self) {
        // SAFETY: see `DeadTable`'s `Send` impl: the box is owned here and
        // freed exactly once, after the grace period.
        let table = unsafe { Box::from_raw(self.0) };
        let guard = vmspace_tree::pin();
        vmspace_tree::sync::defer_drop(&guard, table);
    }
}

impl FlushBatch {
    /// An empty batch.
    pub(crate) fn new(event: Event, may_block: bool) -> FlushBatch {
        FlushBatch {
            event,
            may_block,
            ranges: Vec::new(),
            frames: Vec::new(),
            slots: Vec::new(),
            tables: Vec::new(),
            dirty_frames: Vec::new(),
            invalidations: Vec::new(),
        }
    }

    /// Whether the flush has anything to do.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
            && self.frames.is_empty()
            && self.slots.is_empty()
            && self.tables.is_empty()
    }

    /// Records that the translation of the page at `addr` was removed or
    /// downgraded.
    fn page_changed(&mut self, addr: u64) {
        match self.ranges.last_mut() {
            Some((_, end)) if *end == addr => *end += PAGE_SIZE,
            _ => self.ranges.push((addr, addr + PAGE_SIZE)),
        }
    }
}

/// Pages of `[start, end)`.
fn pages(start: u64, end: u64) -> impl Iterator<Item = u64> {
    (start..end).step_by(PAGE_SIZE as usize)
}

/// A PTE lock's state, guarded by it.
#[derive(Default)]
struct TableState {
    /// Entries in use (present or swap): a table is unlinked only without any.
    used: u32,
    /// Unlinked: no entry may be installed any more.
    dead: bool,
}

/// A last-level table: `ENTRIES` PTEs and the lock that serializes changes to them.
pub struct PteTable {
    lock: Mutex<TableState>,
    entries: [AtomicU64; ENTRIES],
}

/// Proof that a PTE table's lock is held.
pub(crate) struct PteGuard<'a> {
    table: &'a PteTable,
    state: MutexGuard<'a, TableState>,
}

/// Why [`PteTable::install`] installed nothing.
pub(crate) enum NotInstalled {
    /// The entry was no longer the expected one (another fault was first).
    Raced,
    /// The caller's validation failed, or the table was unlinked.
    Stale,
}

impl PteTable {
    fn new() -> Box<PteTable> {
        Box::new(PteTable {
            lock: Mutex::new(TableState::default()),
            entries: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }

    /// Reads the entry for `addr` without the lock (Acquire: the frame content
    /// written before the entry was installed is visible).
    pub(crate) fn read(&self, addr: u64) -> Pte {
        Pte(self.entries[index(addr, 0)].load(Ordering::Acquire))
    }

    /// Takes the table's lock.
    pub(crate) fn lock(&self) -> PteGuard<'_> {
        PteGuard {
            table: self,
            state: self.lock.lock(),
        }
    }

    /// The fault path's one write: replaces the entry `expected` at `addr` by
    /// `new`, under the lock, if it is still `expected`, the table is live and
    /// `still_valid()` (checked under the lock) holds. The caller holds one
    /// frame reference for `new`'s frame: the entry takes it, or, if nothing
    /// is installed, it is dropped here (the frame was never visible). A
    /// replaced frame (copy-on-write) comes back in the batch, for the flush.
    pub(crate) fn install(
        &self,
        addr: u64,
        expected: Pte,
        new: Pte,
        frames: &FrameAllocator,
        still_valid: impl FnOnce() -> bool,
    ) -> Result<FlushBatch, NotInstalled> {
        let mut batch = FlushBatch::new(Event::CowBreak, false);
        let new_frame = !expected.present() || new.frame() != expected.frame();
        let mut g = self.lock();
        let valid = !g.state.dead && still_valid();
        if valid && g.get(addr) == expected {
            g.set(addr, new);
            if new_frame {
                frames.mapped(new.frame());
            }
            if expected.present() && new_frame {
                frames.unmapped(expected.frame());
                batch.page_changed(addr);
                batch.frames.push(expected.frame());
            }
            return Ok(batch);
        }
        drop(g);
        if new_frame {
            frames.put(new.frame());
        }
        Err(if valid {
            NotInstalled::Raced
        } else {
            NotInstalled::Stale
        })
    }
}

impl PteGuard<'_> {
    /// Reads the entry for `addr`.
    pub(crate) fn get(&self, addr: u64) -> Pte {
        self.table.read(addr)
    }

    /// Writes the entry for `addr` (Release: publishes the frame's content to
    /// `Cpu`s that read the entry; SeqCst so that a shootdown that follows sees
    /// the Cpus that may have read the old entry — see `cpu.rs`).
    ///
    /// Returns the entry replaced. Accessed and dirty bits that a `Cpu` set
    /// after the caller read the entry (see "PTE format") are kept in the
    /// new entry when it maps the same frame, and are in the returned entry
    /// either way.
    fn set(&mut self, addr: u64, pte: Pte) -> Pte {
        let slot = &self.table.entries[index(addr, 0)];
        let seen = self.get(addr);
        match (seen.0 != 0, pte.0 != 0) {
            (false, true) => self.state.used += 1,
            (true, false) => self.state.used -= 1,
            _ => {}
        }
        let old = Pte(slot.swap(pte.0, Ordering::SeqCst));
        let late = old.0 & !seen.0 & Pte::USED;
        if late != 0 && pte.present() && old.present() && pte.frame() == old.frame() {
            // Only `Cpu`s (setting used bits) change the entry without the
            // lock, so this cannot undo anyone's change.
            slot.fetch_or(late, Ordering::SeqCst);
        }
        old
    }
}

/// An upper-level table: `ENTRIES` pointers to tables of the next level (0 = none).
struct Dir {
    entries: [AtomicUsize; ENTRIES],
}

impl Dir {
    fn new() -> Box<Dir> {
        Box::new(Dir {
            entries: std::array::from_fn(|_| AtomicUsize::new(0)),
        })
    }
}

/// The page table of one address space.
pub struct PageTable {
    root: Box<Dir>,
    tables: AtomicUsize,
}

fn index(addr: u64, level: u32) -> usize {
    ((addr >> (12 + LEVEL_BITS * level)) & (ENTRIES as u64 - 1)) as usize
}

impl Default for PageTable {
    fn default() -> Self {
        Self::new()
    }
}

impl PageTable {
    /// An empty page table.
    pub fn new() -> Self {
        PageTable {
            root: Dir::new(),
            tables: AtomicUsize::new(0),
        }
    }

    /// Number of last-level tables allocated.
    pub fn tables(&self) -> usize {
        self.tables.load(Ordering::Relaxed)
    }

    /// The entry for `addr` as a `Cpu` access section reads it: SeqCst, so
    /// that it is ordered after the section's entry (see `cpu.rs`).
    #[inline]
    pub fn read_for_access(&self, addr: u64) -> Pte {
        self.table(addr).map_or(Pte(0), |t| {
            Pte(t.entries[index(addr, 0)].load(Ordering::SeqCst))
        })
    }

    /// Sets `bits` (accessed, dirty) in the entry for `addr` if it is still
    /// `seen` (see "PTE format"). Called by a `Cpu` inside its access
    /// section, which keeps the table alive.
    /// Returns whether the entry was still `seen` (and now has the bits).
    #[inline]
    pub(crate) fn mark_used(&self, addr: u64, seen: Pte, bits: u64) -> bool {
        self.table(addr).is_some_and(|t| {
            t.entries[index(addr, 0)]
                .compare_exchange(seen.0, seen.0 | bits, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Clears the accessed bit of the entry for `addr` if it maps `f`;
    /// returns whether it was set, or `None` if the entry does not map `f`.
    /// The caller keeps the table alive (the reverse map's lock, `rmap.rs`).
    pub(crate) fn test_and_clear_accessed(&self, addr: u64, f: FrameId) -> Option<bool> {
        let t = self.table(addr)?;
        let mut g = t.lock();
        let pte = g.get(addr);
        if !pte.present() || pte.frame() != f {
            return None;
        }
        if !pte.has(Pte::ACCESSED) {
            return Some(false);
        }
        g.set(addr, Pte(pte.0 & !Pte::ACCESSED));
        Some(true)
    }

    /// The last-level table covering `addr`, if it exists. The caller keeps
    /// it from being freed (see "Protocol"): an access section, a VMA lock or
    /// the address-space lock on a VMA covering `addr`, or an epoch guard.
    pub(crate) fn table(&self, addr: u64) -> Option<&PteTable> {
        if addr >= ADDR_LIMIT {
            return None;
        }
        let mut dir: &Dir = &self.root;
        for level in (2..=3).rev() {
            let p = dir.entries[index(addr, level)].load(Ordering::Acquire);
            if p == 0 {
                return None;
            }
            // SAFETY: non-null directory entries point to live `Dir`s that are
            // freed only when the page table drops (`&self` outlives this borrow).
            dir = unsafe { &*(p as *const Dir) };
        }
        let p = dir.entries[index(addr, 1)].load(Ordering::Acquire);
        // SAFETY: a non-null last-level slot points to a live table; an
        // unlinked one is freed only after the caller's protection ends (see
        // the precondition above and "Protocol").
        (p != 0).then(|| unsafe { &*(p as *const PteTable) })
    }

    /// The last-level table covering `addr`, created (lock-free) if missing.
    /// `None` only for addresses beyond [`ADDR_LIMIT`]. The caller keeps the
    /// table alive as for [`PageTable::table`].
    pub(crate) fn table_or_create(&self, addr: u64) -> Option<&PteTable> {
        if addr >= ADDR_LIMIT {
            return None;
        }
        let mut dir: &Dir = &self.root;
        for level in (2..=3).rev() {
            let p = install(
                &dir.entries[index(addr, level)],
                || Box::into_raw(Dir::new()) as usize,
                |p| {
                    // SAFETY: `p` came from Box::into_raw just above and lost the race.
                    drop(unsafe { Box::from_raw(p as *mut Dir) })
                },
            );
            // SAFETY: see `table`.
            dir = unsafe { &*(p as *const Dir) };
        }
        let p = install(
            &dir.entries[index(addr, 1)],
            || {
                self.tables.fetch_add(1, Ordering::Relaxed);
                Box::into_raw(PteTable::new()) as usize
            },
            |p| {
                self.tables.fetch_sub(1, Ordering::Relaxed);
                // SAFETY: `p` came from Box::into_raw just above and lost the race.
                drop(unsafe { Box::from_raw(p as *mut PteTable) })
            },
        );
        // SAFETY: see `table`.
        Some(unsafe { &*(p as *const PteTable) })
    }

    /// The range update (see "The range update"): for every present entry of
    /// `[start, end)`, `change(addr, pte)` says what it becomes: the same
    /// entry, the entry with fewer or other permissions (same frame), or a
    /// non-present entry, `Pte(0)` or a swap entry (removed: its frame
    /// reference goes to the batch). Swap entries are not passed to
    /// `change`: `Unmap` and `Zap` remove them (their slot references go to
    /// the batch), every other event leaves them.
    ///
    /// # Preconditions
    /// The caller excludes faults that would install entries it must see
    /// (the VMAs of the range write-locked or detached, or, for `Zap`, the
    /// range staying mapped as it is).
    pub(crate) fn update(
        &self,
        start: u64,
        end: u64,
        event: Event,
        may_block: bool,
        frames: &FrameAllocator,
        mut change: impl FnMut(u64, Pte) -> Pte,
    ) -> FlushBatch {
        let mut batch = FlushBatch::new(event, may_block);
        self.for_each_table(start, end, |base, table| {
            let mut g = table.lock();
            for a in pages(start.max(base), end.min(base + TABLE_SPAN)) {
                let old = g.get(a);
                if !old.present() {
                    if old.is_swap() && matches!(event, Event::Unmap | Event::Zap) {
                        g.set(a, Pte(0));
                        batch.slots.push(old.swap_slot());
                    }
                    continue;
                }
                let new = change(a, old);
                if new == old {
                    continue;
                }
                debug_assert!(!new.present() || new.frame() == old.frame());
                let replaced = g.set(a, new);
                if !new.present() {
                    frames.unmapped(old.frame());
                    batch.frames.push(old.frame());
                    if replaced.has(Pte::DIRTY) {
                        batch.dirty_frames.push(old.frame());
                    }
                }
                if !new.present() || old.0 & Pte::PERMS & !new.0 != 0 {
                    batch.page_changed(a);
                }
            }
        });
        batch
    }

    /// Calls `f(addr, pte)` for every present entry of `[start, end)`, in
    /// address order, each table under its lock.
    pub(crate) fn for_each_present(&self, start: u64, end: u64, mut f: impl FnMut(u64, Pte)) {
        self.for_each_table(start, end, |base, table| {
            let g = table.lock();
            for a in pages(start.max(base), end.min(base + TABLE_SPAN)) {
                let pte = g.get(a);
                if pte.present() {
                    f(a, pte);
                }
            }
        });
    }

    /// Calls `f(addr, slot)` for every swap entry of `[start, end)`, in
    /// address order, each table under its lock.
    pub(crate) fn for_each_swap(&self, start: u64, end: u64, mut f: impl FnMut(u64, SwapSlot)) {
        self.for_each_table(start, end, |base, table| {
            let g = table.lock();
            for a in pages(start.max(base), end.min(base + TABLE_SPAN)) {
                let pte = g.get(a);
                if pte.is_swap() {
                    f(a, pte.swap_slot());
                }
            }
        });
    }

    /// Reclaim's drop of a lazy-free page (`madvise(MADV_FREE)`): removes
    /// the entry at `addr` if it maps `f` and is still clean, by a
    /// compare-exchange from the clean value under the PTE lock, so that a
    /// `Cpu` that sets the dirty bit first (it stores only after its own
    /// compare-exchange succeeds, `cpu.rs`) keeps the page. Returns
    /// `Some(dropped)` if the entry maps `f` (`None` otherwise); a dropped
    /// entry's frame reference and range go to `batch`.
    pub(crate) fn clear_if_clean(
        &self,
        addr: u64,
        f: FrameId,
        frames: &FrameAllocator,
        batch: &mut FlushBatch,
    ) -> Option<bool> {
        let table = self.table(addr)?;
        let mut g = table.lock();
        let pte = g.get(addr);
        if !pte.present() || pte.frame() != f {
            return None;
        }
        if pte.has(Pte::DIRTY) {
            return Some(false);
        }
        let slot = &table.entries[index(addr, 0)];
        if slot
            .compare_exchange(pte.0, 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return Some(false);
        }
        g.state.used -= 1;
        frames.unmapped(f);
        batch.frames.push(f);
        batch.page_changed(addr);
        Some(true)
    }

    /// `mremap`'s update: moves the entries (present and swap) of `[start,
    /// end)` to the same offsets from `dest`, holding a source and a destination table's
    /// locks at once, the lower address first. Frames and mapcounts stay; the
    /// batch holds the source ranges (translations removed there).
    ///
    /// # Preconditions
    /// The source VMA is write-locked and the destination range is unmapped
    /// and inside [`ADDR_LIMIT`].
    pub(crate) fn move_entries(&self, start: u64, end: u64, dest: u64) -> FlushBatch {
        let mut batch = FlushBatch::new(Event::Move, true);
        for a in pages(start, end) {
            let Some(src) = self.table(a) else { continue };
            if src.read(a).0 == 0 {
                continue;
            }
            let to = dest + (a - start);
            let dst = self
                .table_or_create(to)
                .expect("destination checked against ADDR_LIMIT");
            let (mut gs, mut gd) = if std::ptr::eq(src, dst) {
                (src.lock(), None)
            } else if a < to {
                let gs = src.lock();
                (gs, Some(dst.lock()))
            } else {
                let gd = dst.lock();
                (src.lock(), Some(gd))
            };
            let pte = gs.get(a);
            if pte.0 != 0 {
                gs.set(a, Pte(0));
                gd.as_mut().unwrap_or(&mut gs).set(to, pte);
                if pte.present() {
                    batch.page_changed(a);
                }
            }
        }
        batch
    }

    /// `fork`'s update: every present entry of `[start, end)` (a private
    /// VMA) is shared with `child` at the same address, copy-on-write: the
    /// parent's entry loses write permission and ownership (the batch holds
    /// the ranges that lost write), the child's entry is the same without
    /// the accessed bit, and the frame gains a reference and a mapping. A
    /// swap entry is copied as it is, with one more slot reference.
    ///
    /// Holds a parent table's lock and then a child table's: the child is
    /// new and reachable by no one else, so this nests with nothing.
    ///
    /// # Preconditions
    /// The parent's VMAs are write-locked (no fault installs meanwhile) and
    /// the child's range is mapped by the child's copy of the VMA.
    pub(crate) fn copy_for_fork(
        &self,
        child: &PageTable,
        start: u64,
        end: u64,
        frames: &FrameAllocator,
        batch: &mut FlushBatch,
        copy_pinned: &mut dyn FnMut(u64, FrameId) -> Option<FrameId>,
    ) {
        self.for_each_table(start, end, |base, table| {
            let mut g = table.lock();
            let mut dst: Option<PteGuard<'_>> = None;
            for a in pages(start.max(base), end.min(base + TABLE_SPAN)) {
                let pte = g.get(a);
                if pte.is_swap() && frames.swap_dup(pte.swap_slot()) {
                    let d = dst.get_or_insert_with(|| {
                        child
                            .table_or_create(a)
                            .expect("the parent's address is inside the limit")
                            .lock()
                    });
                    d.set(a, pte);
                }
                if !pte.present() {
                    continue;
                }
                // A pinned page the parent owns: the child gets its copy now
                // and the parent's entry stays (`pin.rs`). The pin was taken
                // under this PTE lock, so it cannot come after this check.
                if pte.has(Pte::OWNED) && frames.pincount(pte.frame()) > 0 {
                    if let Some(copy) = copy_pinned(a, pte.frame()) {
                        frames.mapped(copy);
                        let d = dst.get_or_insert_with(|| {
                            child
                                .table_or_create(a)
                                .expect("the parent's address is inside the limit")
                                .lock()
                        });
                        d.set(
                            a,
                            Pte::new(copy, (pte.0 & Pte::PERMS) | Pte::OWNED | Pte::DIRTY),
                        );
                        continue;
                    }
                }
                let shared = Pte(pte.0 & !(Pte::WRITE | Pte::OWNED));
                if shared != pte {
                    g.set(a, shared);
                }
                if pte.has(Pte::WRITE) {
                    batch.page_changed(a);
                }
                frames.get(pte.frame());
                frames.mapped(pte.frame());
                let d = dst.get_or_insert_with(|| {
                    child
                        .table_or_create(a)
                        .expect("the parent's address is inside the limit")
                        .lock()
                });
                d.set(a, Pte(shared.0 & !Pte::ACCESSED));
            }
        });
    }

    /// Unlinks the empty last-level tables that lie wholly inside
    /// `[start, end)` into `batch` (which frees them after the flush).
    ///
    /// # Preconditions
    /// The address-space lock is held for writing and no VMA meets
    /// `[start, end)`, so no fault but a speculative one (pinned) can use
    /// these tables.
    pub(crate) fn unlink_empty(&self, start: u64, end: u64, batch: &mut FlushBatch) {
        let end = end.min(ADDR_LIMIT);
        if start >= end {
            return;
        }
        walk(&self.root, 3, 0, start, end, &mut |base, slot| {
            if base < start || base + TABLE_SPAN > end {
                return;
            }
            let p = slot.load(Ordering::Acquire);
            // SAFETY: see `PageTable::table`; the writer (us) is the only one
            // that unlinks, so the table is live.
            let table = unsafe { &*(p as *const PteTable) };
            let mut g = table.lock();
            if g.state.used != 0 {
                return;
            }
            g.state.dead = true;
            // SeqCst: ordered before the shootdown's reads of the `Cpu`s'
            // section counters (see `cpu.rs`, the same argument as for a
            // cleared PTE).
            slot.store(0, Ordering::SeqCst);
            drop(g);
            self.tables.fetch_sub(1, Ordering::Relaxed);
            batch.tables.push(DeadTable(p as *mut PteTable));
        });
    }

    /// Calls `f(table_start, table)` for every existing last-level table that
    /// covers part of `[start, end)`, in address order, skipping empty
    /// directories.
    fn for_each_table(&self, start: u64, end: u64, mut f: impl FnMut(u64, &PteTable)) {
        let end = end.min(ADDR_LIMIT);
        if start < end {
            walk(&self.root, 3, 0, start, end, &mut |base, slot| {
                let p = slot.load(Ordering::SeqCst);
                // SAFETY: `walk` passes non-null slots; see `PageTable::table`.
                f(base, unsafe { &*(p as *const PteTable) })
            });
        }
    }

    /// `madvise(MADV_FREE)`'s update: clears the dirty and accessed bits of
    /// every present entry of `[start, end)` whose frame `select` accepts
    /// (called under the entry's PTE lock, so it may read and mark the
    /// frame's metadata consistently with the entry). Each cleaned page is
    /// recorded as changed, so the flush waits for every `Cpu` that may
    /// still store through the entry it read dirty: a store that comes after
    /// the flush sets the dirty bit again. Permissions stay as they are.
    pub(crate) fn clean_range(
        &self,
        start: u64,
        end: u64,
        mut select: impl FnMut(FrameId) -> bool,
    ) -> FlushBatch {
        let mut batch = FlushBatch::new(Event::Clean, true);
        self.for_each_table(start, end, |base, table| {
            let mut g = table.lock();
            for a in pages(start.max(base), end.min(base + TABLE_SPAN)) {
                let old = g.get(a);
                if old.present() && select(old.frame()) {
                    g.set(a, Pte(old.0 & !(Pte::DIRTY | Pte::ACCESSED)));
                    batch.page_changed(a);
                }
            }
        });
        batch
    }
}

/// Visits the non-empty last-level slots under `dir` (of `level`, covering
/// addresses from `base`) whose tables meet `[start, end)`.
fn walk(
    dir: &Dir,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
    f: &mut dyn FnMut(u64, &AtomicUsize),
) {
    let span = 1u64 << (12 + LEVEL_BITS * level);
    let first = if start > base {
        ((start - base) / span) as usize
    } else {
        0
    };
    for i in first..ENTRIES {
        let at = base + i as u64 * span;
        if at >= end {
            break;
        }
        // SeqCst: a writer that scans tables after marking the VMAs of the
        // range sees every table a validated speculative fault created there
        // (see `fault.rs`).
        let p = dir.entries[i].load(Ordering::SeqCst);
        if p == 0 {
            continue;
        }
        if level == 1 {
            f(at, &dir.entries[i]);
        } else {
            // SAFETY: see `PageTable::table`.
            walk(unsafe { &*(p as *const Dir) }, level - 1, at, start, end, f);
        }
    }
}

/// Loads a directory slot, installing `make()` if it is empty; a loser of the
/// race disposes of its table with `discard`. Returns the slot's pointer.
fn install(slot: &AtomicUsize, make: impl FnOnce() -> usize, discard: impl FnOnce(usize)) -> usize {
    let p = slot.load(Ordering::Acquire);
    if p != 0 {
        return p;
    }
    let new = make();
    // Release publishes the zeroed table, Acquire sees the winner's; SeqCst
    // orders it against a writer's table scan (see `walk`).
    match slot.compare_exchange(0, new, Ordering::SeqCst, Ordering::Acquire) {
        Ok(_) => new,
        Err(winner) => {
            discard(new);
            winner
        }
    }
}

impl Drop for PageTable {
    fn drop(&mut self) {
        free_dir(&self.root, 3);
    }
}

/// Frees the tables below a directory of `level` (3 = the root's children).
fn free_dir(dir: &Dir, level: u32) {
    for e in &dir.entries {
        let p = e.load(Ordering::Relaxed);
        if p == 0 {
            continue;
        }
        if level == 1 {
            // SAFETY: the page table is being dropped: no reader remains, and each
            // table pointer was produced by Box::into_raw and is freed once.
            drop(unsafe { Box::from_raw(p as *mut PteTable) });
        } else {
            // SAFETY: as above, for a directory.
            let child = unsafe { Box::from_raw(p as *mut Dir) };
            free_dir(&child, level - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_created_once_and_found() {
        let pt = PageTable::new();
        let a = 0x7f00_1234_5000;
        assert!(pt.table(a).is_none());
        let t = pt.table_or_create(a).unwrap();
        let mut g = t.lock();
        g.set(a, Pte::new(FrameId(7), Pte::READ));
        drop(g);
        assert_eq!(pt.read_for_access(a).frame(), FrameId(7));
        assert!(pt.read_for_access(a).has(Pte::READ | Pte::PRESENT));
        assert!(!pt.read_for_access(a + 4096).present());
        assert_eq!(pt.tables(), 1);
        pt.table_or_create(a + 4096).unwrap();
        assert_eq!(pt.tables(), 1);
        assert!(pt.table_or_create(ADDR_LIMIT).is_none());
        let mut n = 0;
        pt.for_each_table(0, ADDR_LIMIT, |_, _| n += 1);
        assert_eq!(n, 1);
    }
}
