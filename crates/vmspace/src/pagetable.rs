//! Page tables: a software 4-level radix table (9 bits a level, 4 KiB pages,
//! 48-bit addresses) with one lock per last-level table (split PTE locks).
//!
//! # Protocol
//!
//! * Upper-level entries are pointers, set once from null by compare-exchange
//!   (so tables are created without the address-space lock) and never changed
//!   or freed until the page table is dropped. Empty tables are kept: memory
//!   stays bounded by the address range ever touched.
//! * A last-level table holds 512 page-table entries (PTEs) and their lock. A
//!   PTE changes only under its table's lock. `Cpu`s read PTEs without it (one
//!   atomic load), inside their access section (`cpu.rs`).
//! * Whoever clears a PTE or takes a permission away must run a TLB shootdown
//!   (`cpu::Shootdown`) before dropping the frame's reference: a `Cpu` may have
//!   loaded the old PTE just before.
//!
//! Lock order: a PTE lock is taken under the address-space lock or a VMA lock
//! (never the other way round) and nothing but the frame free list is taken
//! under it. `mremap` holds two PTE locks at once, source before destination
//! when the source has the lower address... see `sync` for the global order.
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
//! | 12..44 | frame number |

use crate::frame::FrameId;
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
    /// Permission bits.
    pub const PERMS: u64 = Self::READ | Self::WRITE | Self::EXEC;

    /// An entry mapping `frame` with `bits` (permission and owned bits).
    pub fn new(frame: FrameId, bits: u64) -> Pte {
        Pte((u64::from(frame.0) << 12) | bits | Self::PRESENT)
    }

    /// Whether the entry maps a frame.
    pub fn present(self) -> bool {
        self.0 & Self::PRESENT != 0
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

/// A last-level table: `ENTRIES` PTEs and the lock that serializes changes to them.
pub struct PteTable {
    lock: Mutex<()>,
    entries: [AtomicU64; ENTRIES],
}

/// Proof that a PTE table's lock is held.
pub struct PteGuard<'a> {
    table: &'a PteTable,
    _lock: MutexGuard<'a, ()>,
}

impl PteTable {
    fn new() -> Box<PteTable> {
        Box::new(PteTable {
            lock: Mutex::new(()),
            entries: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }

    /// Reads the entry for `addr` without the lock (Acquire: the frame content
    /// written before the entry was installed is visible).
    pub fn read(&self, addr: u64) -> Pte {
        Pte(self.entries[index(addr, 0)].load(Ordering::Acquire))
    }

    /// Takes the table's lock.
    pub fn lock(&self) -> PteGuard<'_> {
        PteGuard {
            table: self,
            _lock: self.lock.lock(),
        }
    }
}

impl PteGuard<'_> {
    /// Reads the entry for `addr`.
    pub fn get(&self, addr: u64) -> Pte {
        self.table.read(addr)
    }

    /// Writes the entry for `addr` (Release: publishes the frame's content to
    /// `Cpu`s that read the entry; SeqCst so that a shootdown that follows sees
    /// the Cpus that may have read the old entry — see `cpu.rs`).
    pub fn set(&self, addr: u64, pte: Pte) {
        self.table.entries[index(addr, 0)].store(pte.0, Ordering::SeqCst);
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

    /// The last-level table covering `addr`, if it exists.
    pub fn table(&self, addr: u64) -> Option<&PteTable> {
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
        // SAFETY: as above, for the last-level table.
        (p != 0).then(|| unsafe { &*(p as *const PteTable) })
    }

    /// The last-level table covering `addr`, created (lock-free) if missing.
    /// `None` only for addresses beyond [`ADDR_LIMIT`].
    pub fn table_or_create(&self, addr: u64) -> Option<&PteTable> {
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

    /// Calls `f(table_start, table)` for every existing last-level table that
    /// covers part of `[start, end)`, in address order, skipping empty
    /// directories.
    pub fn for_each_table(&self, start: u64, end: u64, mut f: impl FnMut(u64, &PteTable)) {
        let end = end.min(ADDR_LIMIT);
        if start < end {
            walk(&self.root, 3, 0, start, end, &mut f);
        }
    }
}

/// Visits the last-level tables under `dir` (of `level`, covering addresses
/// from `base`) that meet `[start, end)`.
fn walk(dir: &Dir, level: u32, base: u64, start: u64, end: u64, f: &mut dyn FnMut(u64, &PteTable)) {
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
            // SAFETY: see `PageTable::table`.
            f(at, unsafe { &*(p as *const PteTable) });
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
        let g = t.lock();
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
