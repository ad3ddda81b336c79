//! VMAs: one mapped range with its protection, flags and backing, and the
//! per-VMA lock that lets a fault hold just this VMA.
//!
//! # Immutability
//!
//! A `Vma`'s range, protection, flags and backing never change after it is
//! created. A writer that changes a range builds new `Vma`s, stores them in the
//! tree and *detaches* the old ones. So a fault that found a VMA under an epoch
//! guard reads consistent fields without a lock; what it must check is that the
//! VMA is still attached (the per-VMA lock does that). The one field set later
//! is the anonymous object, set once by the first anonymous fault (`OnceLock`).
//!
//! # The per-VMA lock (per-vma strategy; Linux 6.4's scheme)
//!
//! State: the lock word (u64) and `readers` (u32).
//!
//! * The address space has a sequence number `mm_seq`, advanced each time its
//!   lock is released for writing. A writer *marks* a VMA by storing the current
//!   `mm_seq` in the lock word: the VMA is then write-locked until the writer
//!   releases the address-space lock, which unlocks all its marked VMAs at once.
//!   `lock_seq == DETACHED` means the VMA left the tree: locked for ever.
//! * A reader (a fault) increments `readers`, then checks `lock_seq != mm_seq`
//!   (and not detached); if the VMA is marked it decrements and fails.
//! * A marking writer stores the lock word, then waits until `readers == 0`.
//!
//! Reader (`readers += 1; load lock_seq`) and writer (`store lock_seq; read
//! readers`) is a store-buffering pattern. The writer reads `readers` with a
//! read-modify-write (`fetch_add(0)`), so the two sides meet on `readers`'
//! modification order: if the reader's increment comes first, the writer sees
//! it and waits; otherwise the increment reads from the writer's RMW, which
//! publishes the mark (release/acquire), and the reader backs off. This needs
//! no SeqCst total order (loom model-checks it; with plain SeqCst loads it
//! reported a fault installing a PTE the writer had already scanned). A
//! fault holds the read lock only while it runs without sleeping (I/O drops it
//! first), so a writer's wait is short.
//!
//! # Reading `mm_seq` rarely
//!
//! Every writer writes `mm_seq`, so a fault that reads it takes a cache miss
//! whenever another thread changed mappings since its last fault. Each `Cpu`
//! keeps the last value it read ([`SeqHint`]). `mm_seq` only grows, and a
//! writer marks with the current value, so a VMA whose lock word is below the
//! hint was marked by a writer that has finished: it is unlocked, and the fault
//! does not read `mm_seq`. Only a lock word at or above the hint (a VMA new
//! or changed since the `Cpu` last looked) makes the fault read `mm_seq` and
//! refresh the hint. The hint is only ever a value `mm_seq` had, and the read
//! that produced it synchronized with the release of every writer up to that
//! value, so the fault sees their changes as if it had read `mm_seq` now.
//!
//! # Layout
//!
//! The lock (the lock word and `readers`) sits on cache lines of its own
//! (`Padded`). Every per-vma fault writes `readers` twice, and other threads
//! read the VMA's immutable fields (`AddressSpace::maps`, lookups, merges):
//! sharing a line, each such read pulled the line away from the faulting
//! core (`docs/decisions.md`, `mixed_readers`).

use crate::frame::FrameAllocator;
use crate::object::{AnonObject, File, Mapping};
use crate::space::AddressSpace;
use crate::sync::{spin_wait, AtomicU32, AtomicU64, Liveness, Ordering};
use crate::writer::Writer;
use std::cell::Cell;
use std::sync::{Arc, OnceLock};

/// Memory protection of a mapping (`PROT_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Prot {
    /// `PROT_READ`
    pub read: bool,
    /// `PROT_WRITE`
    pub write: bool,
    /// `PROT_EXEC`
    pub exec: bool,
}

impl Prot {
    /// `PROT_NONE`.
    pub const NONE: Prot = Prot::new(false, false, false);
    /// `PROT_READ`.
    pub const READ: Prot = Prot::new(true, false, false);
    /// `PROT_READ | PROT_WRITE`.
    pub const READ_WRITE: Prot = Prot::new(true, true, false);

    /// A protection from its three bits.
    pub const fn new(read: bool, write: bool, exec: bool) -> Prot {
        Prot { read, write, exec }
    }

    /// Whether the protection is `PROT_EXEC` alone (Linux then gives the
    /// mapping its execute-only protection key, where the CPU has keys).
    pub fn is_exec_only(self) -> bool {
        self == Prot::new(false, false, true)
    }

    /// Whether a load is allowed, as on x86-64: write and execute imply read,
    /// except under the execute-only protection key (`exec_only_key`).
    pub fn allows_read(self, exec_only_key: bool) -> bool {
        self.read || self.write || (self.exec && !exec_only_key)
    }

    /// The PTE permission bits for this protection, without write (write is
    /// granted per page by the fault path).
    pub(crate) fn pte_bits_no_write(self, exec_only_key: bool) -> u64 {
        use crate::pagetable::Pte;
        let mut b = 0;
        if self.allows_read(exec_only_key) {
            b |= Pte::READ;
        }
        if self.exec {
            b |= Pte::EXEC;
        }
        b
    }
}

/// Whether `object` was made by `fork` for a child VMA (it has a parent):
/// Linux's anon_vma chain of such a VMA holds more than its own anon_vma.
fn forked_object(object: &AnonObject) -> bool {
    object.chain().nth(1).is_some()
}

/// The protection key Linux reserves for execute-only mappings.
pub const EXEC_ONLY_PKEY: u8 = 1;

/// What backs a VMA.
#[derive(Clone)]
pub enum Backing {
    /// Private anonymous memory: zero-filled on demand.
    Anon,
    /// A file (or, for shared anonymous memory, the shmem object created by
    /// the `mmap` call), mapped from page `pgoff` of the object at `start`.
    File(Arc<File>),
}

/// A mapped range. See the module documentation.
pub struct Vma {
    /// First address (page aligned). Immutable.
    pub start: u64,
    /// One past the last address (page aligned). Immutable.
    pub end: u64,
    /// Protection. Immutable.
    pub prot: Prot,
    /// `MAP_SHARED`. Immutable.
    pub shared: bool,
    /// `MAP_GROWSDOWN` (a stack). Immutable.
    pub growsdown: bool,
    /// Linux's `VM_ACCOUNT`: the mapping is charged as private writable memory.
    /// It takes part in merge decisions, as in Linux. Immutable.
    pub account: bool,
    /// Whether the object is shared anonymous memory (prints as `anon` with `s`).
    pub shmem: bool,
    /// Linux's `VM_DONTCOPY` (`madvise(MADV_DONTFORK)`): `fork` leaves the
    /// VMA out of the child. A VMA flag: it takes part in merge decisions.
    /// Immutable.
    pub dontfork: bool,
    /// Linux's `VM_WIPEONFORK` (`madvise(MADV_WIPEONFORK)`, private
    /// anonymous memory only): the child gets the VMA with none of its
    /// pages, so it reads zeros. A VMA flag, as `dontfork`. Immutable.
    pub wipeonfork: bool,
    /// Linux's `VM_LOCKED` (`mlock`): the pages stay resident (reclaim skips
    /// them); the VMA's pages were populated when it was locked, unless
    /// `lock_onfault`. A VMA flag; `fork`'s child does not inherit it.
    /// Immutable.
    pub locked: bool,
    /// Linux's `VM_LOCKONFAULT` (`mlock2(MLOCK_ONFAULT)`): locked, but pages
    /// are not populated by the lock, only kept once faulted in. Immutable.
    pub lock_onfault: bool,
    /// Linux's `VM_NORESERVE` (`MAP_NORESERVE`): the mapping is never
    /// charged (`account` stays false, even when made writable). A VMA
    /// flag. Immutable.
    pub noreserve: bool,
    /// Linux's `VM_NOHUGEPAGE`, which `MAP_STACK` sets (Linux 6.7 and
    /// later): no transparent huge pages. vmspace has none; the flag is kept
    /// because it takes part in merge decisions as in Linux. Immutable.
    pub nohugepage: bool,
    /// The protection key: 0, or [`EXEC_ONLY_PKEY`] for an execute-only
    /// mapping on a CPU with keys (`Config::exec_only_pkey`). Part of the
    /// VMA's flags, as in Linux: it takes part in merge and anonymous-object
    /// sharing decisions. Immutable.
    pub pkey: u8,
    /// The backing object. Immutable.
    pub backing: Backing,
    /// Page offset in the backing object of `start` (for anonymous memory, the
    /// page number of the address where the memory was first mapped, as Linux).
    /// Immutable.
    pub pgoff: u64,
    /// The anonymous object of private pages, set by the first fault that
    /// needs one (or inherited by a split or a move).
    pub anon: OnceLock<Arc<AnonObject>>,
    /// The per-VMA lock, on cache lines of its own (see "Layout").
    lock: Padded<VmaLock>,
    /// Touched by faults, for the loom models (`sync::Liveness`).
    pub(crate) alive: Liveness,
}

/// The per-VMA lock's state (see the module documentation).
struct VmaLock {
    /// The lock word: the `mm_seq` of the writer that marked the VMA last, or
    /// `DETACHED`.
    word: AtomicU64,
    /// Faults holding the VMA read-locked.
    readers: AtomicU32,
}

impl VmaLock {
    fn new(mm_seq: u64) -> VmaLock {
        VmaLock {
            word: AtomicU64::new(mm_seq),
            readers: AtomicU32::new(0),
        }
    }
}

/// `T` with a cache line of padding on each side: whatever lies around it,
/// no 64-byte line holds both a byte of `T` and a byte outside the padding.
/// Padding rather than alignment (`CachePadded`): a 128-byte-aligned `Vma`
/// sends every VMA allocation through the allocator's slower aligned path.
#[repr(C)]
struct Padded<T> {
    _before: [u8; 64],
    value: T,
    _after: [u8; 64],
}

impl<T> Padded<T> {
    fn new(value: T) -> Padded<T> {
        Padded {
            _before: [0; 64],
            value,
            _after: [0; 64],
        }
    }
}

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// the lock word of a VMA that left the tree.
const DETACHED: u64 = u64::MAX;

/// A `Cpu`'s lower bound of its address space's `mm_seq`: the value it read
/// last (see "Reading `mm_seq` rarely" in the module documentation).
#[derive(Default)]
pub(crate) struct SeqHint(Cell<u64>);

impl SeqHint {
    /// Whether `seq` (a VMA's the lock word, not `DETACHED`) is the sequence of
    /// the writer in its write section now, i.e. `seq == mm_seq`. Reads
    /// `mm_seq` only when `seq` is not below the hint.
    fn is_current(&self, seq: u64, mm_seq: &AtomicU64) -> bool {
        if seq < self.0.get() {
            return false;
        }
        let now = mm_seq.load(Ordering::SeqCst);
        self.0.set(now);
        seq == now
    }
}

impl Vma {
    /// A new VMA, write-locked by the writer whose address-space sequence is
    /// `mm_seq` (so no fault uses it before the writer is done).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        start: u64,
        end: u64,
        prot: Prot,
        shared: bool,
        backing: Backing,
        pgoff: u64,
        mm_seq: u64,
    ) -> Vma {
        Vma {
            start,
            end,
            prot,
            shared,
            growsdown: false,
            pkey: 0,
            account: !shared && prot.write,
            shmem: false,
            dontfork: false,
            wipeonfork: false,
            locked: false,
            lock_onfault: false,
            noreserve: false,
            nohugepage: false,
            backing,
            pgoff,
            anon: OnceLock::new(),
            lock: Padded::new(VmaLock::new(mm_seq)),
            alive: Liveness::new(),
        }
    }

    /// A copy of this VMA's attributes for `[start, end)` (page offset adjusted),
    /// with the same anonymous object, write-locked for `mm_seq`.
    pub(crate) fn piece(&self, start: u64, end: u64, mm_seq: u64) -> Vma {
        self.relocated(start, end, self.pgoff_at(start), mm_seq)
    }

    /// A copy of this VMA's attributes placed at `[start, end)` with page offset
    /// `pgoff` (for moves and duplicates), same anonymous object, write-locked.
    pub(crate) fn relocated(&self, start: u64, end: u64, pgoff: u64, mm_seq: u64) -> Vma {
        let v = Vma {
            start,
            end,
            pgoff,
            anon: OnceLock::new(),
            lock: Padded::new(VmaLock::new(mm_seq)),
            alive: Liveness::new(),
            backing: self.backing.clone(),
            ..*self
        };
        if let Some(a) = self.anon.get() {
            let _ = v.anon.set(a.clone());
        }
        v
    }

    /// The child's copy of this VMA for `fork`, write-locked for the child's
    /// writer `mm_seq`: the same attributes and backing, unlocked (Linux's
    /// `dup_mmap` clears `VM_LOCKED` in the child), and, if this VMA has an
    /// anonymous object and is not `wipeonfork`, a new one whose parent it
    /// is (`rmap.rs`). A `wipeonfork` copy starts with no anonymous object,
    /// like a new mapping.
    pub(crate) fn forked(&self, frames: &Arc<FrameAllocator>, mm_seq: u64) -> Vma {
        let v = Vma {
            anon: OnceLock::new(),
            lock: Padded::new(VmaLock::new(mm_seq)),
            alive: Liveness::new(),
            backing: self.backing.clone(),
            locked: false,
            lock_onfault: false,
            ..*self
        };
        if self.wipeonfork {
            return v;
        }
        if let Some(a) = self.anon.get() {
            let _ = v.anon.set(AnonObject::new(frames, Some(a.clone())));
        }
        v
    }

    /// The page offset that `addr` (inside or at the ends of the VMA) maps.
    pub fn pgoff_at(&self, addr: u64) -> u64 {
        if addr >= self.start {
            self.pgoff + (addr - self.start) / crate::PAGE_SIZE
        } else {
            self.pgoff - (self.start - addr) / crate::PAGE_SIZE
        }
    }

    /// Whether a load is allowed (see [`Prot::allows_read`]).
    pub fn allows_read(&self) -> bool {
        self.prot.allows_read(self.pkey == EXEC_ONLY_PKEY)
    }

    /// The PTE permission bits of this VMA's pages, without write.
    pub(crate) fn pte_bits_no_write(&self) -> u64 {
        self.prot.pte_bits_no_write(self.pkey == EXEC_ONLY_PKEY)
    }

    /// The protection key a VMA of this one's gets when its protection
    /// becomes `prot` (Linux's `arch_override_mprotect_pkey`): the
    /// execute-only key for `PROT_EXEC` alone where keys exist, back to the
    /// default key when an execute-only VMA gets another protection.
    pub(crate) fn pkey_for(&self, prot: Prot, keys: bool) -> u8 {
        if keys && prot.is_exec_only() {
            EXEC_ONLY_PKEY
        } else if self.pkey == EXEC_ONLY_PKEY {
            0
        } else {
            self.pkey
        }
    }

    /// The file (or shmem object), if any.
    pub fn file(&self) -> Option<&Arc<File>> {
        match &self.backing {
            Backing::File(f) => Some(f),
            Backing::Anon => None,
        }
    }

    /// Whether the VMA is private anonymous memory.
    pub fn is_anon(&self) -> bool {
        matches!(self.backing, Backing::Anon)
    }

    /// Whether `self` (below) and `next` (directly above) may become one VMA:
    /// everything [`Vma::same_attributes`] asks, the same protection too,
    /// and compatible anonymous objects (Linux's `is_mergeable_vma` and
    /// `is_mergeable_anon_vma`): the same object, or only one of the two has
    /// one and that one was not inherited through `fork` (Linux's
    /// `vma_had_uncowed_parents`: a VMA whose anon_vma chain reaches a
    /// parent's never merges with one that has no anon_vma).
    pub(crate) fn can_merge_with_next(&self, next: &Vma) -> bool {
        let anon_ok = match (self.anon.get(), next.anon.get()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (Some(a), None) | (None, Some(a)) => !forked_object(a),
            (None, None) => true,
        };
        self.may_merge_with_next(next) && anon_ok
    }

    /// [`Vma::can_merge_with_next`] but for the anonymous objects, which a
    /// fault may still be setting unless both VMAs are write-locked.
    pub(crate) fn may_merge_with_next(&self, next: &Vma) -> bool {
        self.same_attributes(next) && self.prot == next.prot
    }

    /// Whether `self` (below) and `next` (directly above) may share an
    /// anonymous object (Linux's `anon_vma_compatible`, and
    /// `reusable_anon_vma`'s condition that the object's chain is its own):
    /// they have the same attributes apart from protection
    /// ([`Vma::same_attributes`]), and neither has an object inherited
    /// through `fork`.
    pub(crate) fn anon_compatible(&self, next: &Vma) -> bool {
        let own = |v: &Vma| v.anon.get().is_none_or(|a| !forked_object(a));
        self.same_attributes(next) && own(self) && own(next)
    }

    /// Whether `self` (below) and `next` (directly above) touch, have the
    /// same backing object with contiguous page offsets, and the same
    /// attributes apart from protection and anonymous object.
    fn same_attributes(&self, next: &Vma) -> bool {
        let same_object = match (&self.backing, &next.backing) {
            (Backing::Anon, Backing::Anon) => true,
            (Backing::File(a), Backing::File(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        self.end == next.start
            && same_object
            && self.shared == next.shared
            && self.growsdown == next.growsdown
            && self.account == next.account
            && self.shmem == next.shmem
            && self.same_flags(next)
            && self.pkey == next.pkey
            && self.pgoff_at(self.end) == next.pgoff
    }

    /// Whether the two VMAs have the same `madvise`, `mlock` and `mmap`
    /// flags (`dontfork`, `wipeonfork`, `locked`, `lock_onfault`,
    /// `noreserve`, `nohugepage`): Linux merges only VMAs whose `vm_flags`
    /// are equal.
    pub(crate) fn same_flags(&self, other: &Vma) -> bool {
        let flags = |v: &Vma| {
            [
                v.dontfork,
                v.wipeonfork,
                v.locked,
                v.lock_onfault,
                v.noreserve,
                v.nohugepage,
            ]
        };
        flags(self) == flags(other)
    }

    /// Whether the VMA left the tree.
    pub(crate) fn is_detached(&self) -> bool {
        self.lock.word.load(Ordering::SeqCst) == DETACHED
    }

    /// Tries to take the read lock (see the module documentation); fails if
    /// the VMA is write-locked by the current writer or detached. `hint` is
    /// the calling `Cpu`'s. The lock is held until the guard drops.
    #[inline]
    pub(crate) fn try_read_lock(
        &self,
        mm_seq: &AtomicU64,
        hint: &SeqHint,
    ) -> Option<VmaReadGuard<'_>> {
        self.lock.readers.fetch_add(1, Ordering::SeqCst);
        let guard = VmaReadGuard(self);
        let word = self.lock.word.load(Ordering::SeqCst);
        if word == DETACHED || hint.is_current(word, mm_seq) {
            return None;
        }
        Some(guard)
    }

    /// For a speculative fault (`fault.rs`): the VMA's lock word, if the VMA
    /// is attached and no writer holds it now. A writer that marks it later
    /// changes the word (writer sequences only grow), which the fault checks
    /// under the PTE lock before installing anything.
    pub(crate) fn speculation_start(&self, mm_seq: &AtomicU64, hint: &SeqHint) -> Option<u64> {
        let seq = self.lock.word.load(Ordering::SeqCst);
        (seq != DETACHED && !hint.is_current(seq, mm_seq)).then_some(seq)
    }

    /// The word a speculative fault validates (see `speculation_start`).
    pub(crate) fn lock_word(&self) -> &AtomicU64 {
        &self.lock.word
    }

    /// Marks the VMA write-locked for the writer `w` and waits for the
    /// faults that hold it to finish. It stays locked until `w` is dropped.
    pub(crate) fn write_lock(&self, w: &Writer<'_>) {
        self.mark(w.seq);
    }

    fn mark(&self, mm_seq: u64) {
        if self.lock.word.load(Ordering::Relaxed) != DETACHED {
            // A read-modify-write, SeqCst: ordered before this writer's
            // page-table scans, against a speculative fault's table creation
            // and its check of this word (`fault.rs`).
            self.lock.word.swap(mm_seq, Ordering::SeqCst);
        }
        self.wait_for_readers();
    }

    /// Marks the VMA detached (locked for ever) and waits for its readers.
    ///
    /// # Preconditions
    /// The VMA is out of the tree (`w` took it out).
    pub(crate) fn detach(&self, w: &Writer<'_>) {
        let was = self.lock.word.swap(DETACHED, Ordering::SeqCst);
        self.wait_for_readers();
        if was != DETACHED {
            self.forget_mappings(w.space);
        }
    }

    /// This VMA's reverse-map record (`rmap.rs`), as a VMA of `space`.
    pub(crate) fn mapping(&self, space: &AddressSpace) -> Mapping {
        Mapping::new(space, self.start, self.pgoff, self.pgoff_at(self.end))
    }

    /// Records the VMA in its objects (`mappings.rs`): its file, and its
    /// anonymous object's chain. Called once the VMA is built and before
    /// faults can reach it.
    pub(crate) fn record_mappings(&self, space: &AddressSpace) {
        let m = self.mapping(space);
        if let Some(file) = self.file() {
            file.mapping_added(m);
        }
        if let Some(anon) = self.anon.get() {
            anon.record(m);
        }
    }

    /// The reverse of `record_mappings`, when the VMA is detached (or its
    /// address space dropped).
    pub(crate) fn forget_mappings(&self, space: &AddressSpace) {
        let m = self.mapping(space);
        if let Some(file) = self.file() {
            file.mapping_removed(m);
        }
        if let Some(anon) = self.anon.get() {
            anon.forget(m);
        }
    }

    /// `detach` without a writer, for unit tests of lookups.
    #[cfg(test)]
    pub(crate) fn detach_for_test(&self) {
        self.lock.word.swap(DETACHED, Ordering::SeqCst);
    }

    fn wait_for_readers(&self) {
        let mut spins = 0u32;
        // The first read is a read-modify-write (see the module documentation):
        // it reads the latest `readers`, and a reader whose increment comes
        // after it reads from it, so sees the mark stored before. Acquire
        // (later loads too): pairs with `VmaReadGuard::drop`'s Release.
        let mut n = self.lock.readers.fetch_add(0, Ordering::SeqCst);
        while n != 0 {
            spin_wait(&mut spins);
            n = self.lock.readers.load(Ordering::Acquire);
        }
    }
}

/// A VMA's read lock, held by a per-vma fault (see the module
/// documentation); dropping it releases the lock.
pub(crate) struct VmaReadGuard<'a>(&'a Vma);

impl Drop for VmaReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: the fault's page-table writes happen before a writer that
        // sees `readers == 0` proceeds.
        self.0.lock.readers.fetch_sub(1, Ordering::Release);
    }
}

impl std::fmt::Debug for Vma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Vma[{:#x}-{:#x} {:?} shared={} pgoff={} anon={}]",
            self.start,
            self.end,
            self.prot,
            self.shared,
            self.pgoff,
            self.anon.get().map_or(0, |a| a.id())
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn vma(mm_seq: u64) -> Vma {
        Vma::new(
            0x1000,
            0x3000,
            Prot::READ_WRITE,
            false,
            Backing::Anon,
            1,
            mm_seq,
        )
    }

    /// The hint lets a fault skip reading `mm_seq`, never skip a lock: a VMA
    /// marked by the writer in its section now is refused whatever the hint
    /// says, one whose writer finished is taken.
    #[test]
    fn the_sequence_hint_never_hides_a_current_writer() {
        let mm_seq = AtomicU64::new(5);
        let hint = SeqHint::default();
        let v = vma(5); // created by the writer at 5, still in its section
        assert!(v.try_read_lock(&mm_seq, &hint).is_none());
        assert_eq!(v.speculation_start(&mm_seq, &hint), None);
        mm_seq.store(6, Ordering::SeqCst); // that writer is done
        assert!(v.try_read_lock(&mm_seq, &hint).is_some());
        assert_eq!(hint.0.get(), 6, "the fault read the sequence");
        // Below the hint now: unlocked without a read of `mm_seq`.
        mm_seq.store(7, Ordering::SeqCst);
        assert!(v.try_read_lock(&mm_seq, &hint).is_some());
        assert_eq!(hint.0.get(), 6, "no read needed");
        assert_eq!(v.speculation_start(&mm_seq, &hint), Some(5));
        // The writer at 7 marks it: at or above the hint, so the fault reads
        // `mm_seq` and sees the writer.
        v.mark(7);
        assert!(v.try_read_lock(&mm_seq, &hint).is_none());
        assert_eq!(v.speculation_start(&mm_seq, &hint), None);
        mm_seq.store(8, Ordering::SeqCst);
        assert!(v.try_read_lock(&mm_seq, &hint).is_some());
        v.lock.word.swap(DETACHED, Ordering::SeqCst);
        assert!(v.try_read_lock(&mm_seq, &hint).is_none());
    }
}
