//! Swap device: a file on disk cut into 4 KiB slots, the slots' reference
//! counts, and positioned I/O of one page to or from a slot.
//!
//! # What it owns
//!
//! * the swap file: created (or truncated) by [`SwapDevice::open`], its blocks
//!   allocated there (so that a swap-out never meets a full disk later), and
//!   removed when the device is dropped;
//! * one reference count per slot: how many swap entries (in page tables,
//!   or a swap cache) name the slot. [`SwapDevice::alloc`] hands out a free
//!   slot with count 1, [`SwapDevice::dup`] adds one (fork copies a swap
//!   entry into the child), [`SwapDevice::free`] drops one and frees the slot
//!   at zero;
//! * the device's statistics and its fault-injection switches.
//!
//! What a slot holds is the caller's business: the device neither knows
//! which page is in a slot nor orders I/O against alloc and free. The caller
//! writes a slot it holds a reference to, and frees it only when no one can
//! still read it.
//!
//! # Slot state (lock-free; a leaf)
//!
//! There is no lock. Each slot has a bit in an occupancy bitmap (`AtomicU64`
//! words; bit set = the slot is taken) and a reference count (`AtomicU32`),
//! and the device has a count of used slots. All of them come from the
//! [`crate::sync`] shim.
//!
//! * alloc: reserve one unit of `used` (compare-exchange, only while
//!   `used < capacity`), then claim a clear bit (compare-exchange on its
//!   word), then store count 1. The search starts at the calling thread's
//!   cluster hint, the word where it last found a slot; threads start in
//!   different clusters, so concurrent allocators rarely touch one word;
//! * dup: count n -> n + 1 by compare-exchange, refused at 0 (a free slot)
//!   and at `u32::MAX`;
//! * free: count n -> n - 1 by compare-exchange, refused at 0 (a double
//!   free); at zero, clear the bit, then release the unit of `used`.
//!
//! Why alloc always finds a bit: a bit is set only by a thread that holds a
//! unit of `used`, and its unit is given back only after its bit is clear,
//! so set bits <= `used` <= capacity at every instant. A searching thread
//! holds a unit but no bit yet, so at least one bit is clear whenever it
//! looks; it may lose that bit to a race and look again, never forever
//! unless others keep winning (lock-free, not wait-free).
//!
//! Memory ordering: claiming a bit is Acquire and clearing it Release, so a
//! slot's new owner sees everything its previous owner did before the free
//! (which is what lets the caller reuse a slot's disk block without other
//! synchronization). The count is changed with AcqRel for the same reason on
//! the last `free`.
//!
//! # I/O
//!
//! [`SwapDevice::write`] and [`SwapDevice::read`] move exactly one page
//! (4096 bytes) with `pwrite`/`pread` at `slot * 4096`, holding no lock (the
//! device has none; callers must not hold an address-space, VMA, PTE or rmap
//! lock across them either: see the lock order in [`crate::sync`]). With
//! [`SwapConfig::direct`] the file is opened with `O_DIRECT`, so a page
//! really goes to the disk and not only into the host's page cache; a page
//! buffer that is not 4096-aligned is copied through an aligned bounce
//! buffer.
//!
//! # Fault injection
//!
//! [`SwapDevice::set_failure_rates`] makes a fraction of writes and reads fail
//! before any I/O, as [`crate::FrameAllocator::set_failure_rate`] does for
//! allocations (probability in 1/2^32 units, a xorshift sequence). An
//! injected failure is an `io::Error` whose message says "injected", counted
//! in [`SwapStats`] like a real one.

use crate::frame::{thread_index, PAGE_SIZE};
use crate::sync::{spin_wait, AtomicU32, AtomicU64, Ordering};
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most slots a device can have: 2^32 - 1. Slot numbers run from 0 to
/// `MAX_SLOTS - 1`, so `index + 1` also fits in 32 bits (an encoding in a
/// page-table entry may keep 0 for "no slot"), and a swap entry needs 32
/// bits of a PTE's 52 above the flag bits.
pub const MAX_SLOTS: u64 = u32::MAX as u64;

/// Slots per bitmap word.
const WORD_BITS: u64 = 64;

/// Words a thread's first cluster hint is apart from the next thread's
/// (4 words: 256 slots).
const CLUSTER_WORDS: usize = 4;

/// Bytes of one slot.
const SLOT_BYTES: usize = PAGE_SIZE as usize;

/// How to make a swap device.
#[derive(Clone, Debug)]
pub struct SwapConfig {
    /// The swap file: created, or truncated if it exists; removed on drop.
    pub path: PathBuf,
    /// Number of 4 KiB slots (1 to [`MAX_SLOTS`]).
    pub slots: u64,
    /// Open the file with `O_DIRECT` (I/O bypasses the host's page cache).
    pub direct: bool,
}

/// A slot of a swap device: where one swapped-out page lives. It is what a
/// swap entry in a page-table entry records ([`SwapSlot::index`], at most
/// `MAX_SLOTS - 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwapSlot(u32);

impl SwapSlot {
    /// The slot's number (its page offset in the swap file).
    pub fn index(self) -> u32 {
        self.0
    }

    /// The slot numbered `index` (decoding a swap entry). The device checks
    /// the number against its capacity wherever the slot is used.
    pub fn from_index(index: u32) -> SwapSlot {
        SwapSlot(index)
    }
}

impl fmt::Display for SwapSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "swap slot {}", self.0)
    }
}

/// Why a swap device could not be opened.
#[derive(Debug)]
pub enum SwapError {
    /// `slots` was 0.
    NoSlots {
        /// The swap file asked for.
        path: PathBuf,
    },
    /// `slots` was above [`MAX_SLOTS`].
    TooManySlots {
        /// The swap file asked for.
        path: PathBuf,
        /// The slots asked for.
        slots: u64,
    },
    /// The directory of the swap file is missing, not a directory, or the
    /// file cannot be created in it.
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The swap file asked for.
        path: PathBuf,
        /// What the host said.
        cause: io::Error,
    },
    /// The file system refused `O_DIRECT` (tmpfs before Linux 6.6, some
    /// network and FUSE file systems).
    DirectUnsupported {
        /// The directory whose file system refused.
        dir: PathBuf,
        /// What the host said.
        cause: io::Error,
    },
    /// The disk has too little free space for the file.
    NoSpace {
        /// The swap file.
        path: PathBuf,
        /// Bytes the file needs.
        needed: u64,
        /// Bytes free for an unprivileged user, when known.
        available: Option<u64>,
    },
    /// Another failure while sizing or probing the file.
    Io {
        /// The swap file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// What the host said.
        cause: io::Error,
    },
    /// The slot tables could not be allocated.
    OutOfMemory {
        /// The slots asked for.
        slots: u64,
    },
}

impl fmt::Display for SwapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwapError::NoSlots { path } => {
                write!(f, "swap file {}: 0 slots asked for; a swap device needs at least 1", path.display())
            }
            SwapError::TooManySlots { path, slots } => write!(
                f,
                "swap file {}: {slots} slots asked for; the most a swap entry can encode is {MAX_SLOTS}",
                path.display()
            ),
            SwapError::Directory { dir, path, cause } => write!(
                f,
                "swap file {}: cannot create it in directory {}: {cause}",
                path.display(),
                dir.display()
            ),
            SwapError::DirectUnsupported { dir, cause } => write!(
                f,
                "the filesystem of {} does not support O_DIRECT (tmpfs?); use a disk directory \
                 or turn direct off ({cause})",
                dir.display()
            ),
            SwapError::NoSpace { path, needed, available } => {
                write!(f, "swap file {}: not enough disk space: {needed} bytes needed", path.display())?;
                match available {
                    Some(a) => write!(f, ", {a} available"),
                    None => Ok(()),
                }
            }
            SwapError::Io { path, what, cause } => {
                write!(f, "swap file {}: {what}: {cause}", path.display())
            }
            SwapError::OutOfMemory { slots } => {
                write!(f, "swap device: no memory for the tables of {slots} slots")
            }
        }
    }
}

impl std::error::Error for SwapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SwapError::Directory { cause, .. }
            | SwapError::DirectUnsupported { cause, .. }
            | SwapError::Io { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// A misuse of a slot: the caller's bug, reported rather than panicking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// The slot number is not below the device's capacity.
    OutOfRange {
        /// The slot.
        slot: SwapSlot,
        /// The device's capacity.
        capacity: u64,
    },
    /// The slot is free (a `dup` or I/O of a free slot, or a double `free`).
    NotAllocated(SwapSlot),
    /// The slot's reference count is at `u32::MAX`.
    Overflow(SwapSlot),
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::OutOfRange { slot, capacity } => {
                write!(
                    f,
                    "{slot} is out of range (the device has {capacity} slots)"
                )
            }
            SlotError::NotAllocated(slot) => write!(f, "{slot} is not allocated"),
            SlotError::Overflow(slot) => write!(f, "{slot}: reference count overflow"),
        }
    }
}

impl std::error::Error for SlotError {}

impl From<SlotError> for io::Error {
    fn from(e: SlotError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Counters of a swap device (a snapshot; each field read on its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapStats {
    /// Pages written successfully.
    pub writes: u64,
    /// Pages read successfully.
    pub reads: u64,
    /// Writes that failed (injected or real I/O errors).
    pub write_errors: u64,
    /// Reads that failed (injected or real I/O errors).
    pub read_errors: u64,
    /// Slots in use (counting allocations under way).
    pub used: u64,
    /// Slots in all.
    pub capacity: u64,
}

/// A page-aligned page: the bounce buffer of `O_DIRECT` I/O.
#[repr(C, align(4096))]
struct AlignedPage([u8; SLOT_BYTES]);

/// One fault-injection switch: a probability in 1/2^32 units and a
/// xorshift state (racy updates of the state are harmless: any value is a
/// fine next state).
struct Injector {
    rate: std::sync::atomic::AtomicU32,
    seed: std::sync::atomic::AtomicU64,
}

impl Injector {
    fn new(seed: u64) -> Injector {
        Injector {
            rate: std::sync::atomic::AtomicU32::new(0),
            seed: std::sync::atomic::AtomicU64::new(seed),
        }
    }

    fn set(&self, rate: f64) {
        // NaN clamps to NaN and casts to 0: no failures.
        let r = (rate.clamp(0.0, 1.0) * u32::MAX as f64) as u32;
        self.rate.store(r, std::sync::atomic::Ordering::Relaxed);
    }

    fn fires(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let rate = self.rate.load(Relaxed);
        if rate == 0 {
            return false;
        }
        let mut x = self.seed.load(Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Relaxed);
        (x >> 32) as u32 <= rate
    }
}

/// Statistics counters (not protocol state: plain std atomics, Relaxed).
#[derive(Default)]
struct Counters {
    writes: std::sync::atomic::AtomicU64,
    reads: std::sync::atomic::AtomicU64,
    write_errors: std::sync::atomic::AtomicU64,
    read_errors: std::sync::atomic::AtomicU64,
}

impl Counters {
    fn bump(c: &std::sync::atomic::AtomicU64) {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A swap device on a real file. Shared by reference between threads
/// (`Sync`); every method takes `&self`.
pub struct SwapDevice {
    path: PathBuf,
    file: File,
    direct: bool,
    capacity: u64,
    /// Occupancy: bit `s % 64` of word `s / 64` is set while slot `s` is
    /// taken; bits past the capacity in the last word are always set.
    /// Atomic, see "Slot state" in the module doc.
    bitmap: Box<[AtomicU64]>,
    /// Reference count of each slot (0 = free). Atomic, see "Slot state".
    refcounts: Box<[AtomicU32]>,
    /// Slots taken or being taken (<= capacity). Atomic, see "Slot state".
    used: AtomicU64,
    counters: Counters,
    fail_write: Injector,
    fail_read: Injector,
}

impl fmt::Debug for SwapDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SwapDevice({}, {} slots{})",
            self.path.display(),
            self.capacity,
            if self.direct { ", O_DIRECT" } else { "" }
        )
    }
}

impl SwapDevice {
    /// Creates (or truncates) the swap file and allocates its blocks:
    /// `slots * 4096` bytes with `fallocate`, so that no later write can fail
    /// for lack of space. On a file system without `fallocate` (or off
    /// Linux) the file is only sized (`set_len`): sparse, so a swap-out can
    /// then still meet a full disk (it fails as an I/O error, and the
    /// caller keeps the page). With `direct`, one page is written and read
    /// back to check that the file system accepts `O_DIRECT` I/O.
    ///
    /// Errors name the file or its directory and the cause: 0 slots, more
    /// than [`MAX_SLOTS`], a missing or unwritable directory, too little
    /// disk, `O_DIRECT` refused. On error nothing is left on disk.
    pub fn open(config: &SwapConfig) -> Result<SwapDevice, SwapError> {
        let path = config.path.clone();
        if config.slots == 0 {
            return Err(SwapError::NoSlots { path });
        }
        if config.slots > MAX_SLOTS {
            return Err(SwapError::TooManySlots {
                path,
                slots: config.slots,
            });
        }
        // At most (2^32 - 1) * 4096 < 2^44: no overflow.
        let bytes = config.slots * PAGE_SIZE;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        check_directory(&dir, &path)?;
        if let Some(available) = available_bytes(&dir) {
            if available < bytes {
                return Err(SwapError::NoSpace {
                    path,
                    needed: bytes,
                    available: Some(available),
                });
            }
        }
        let (bitmap, refcounts) = slot_tables(config.slots)?;
        let file = create_file(&dir, &path, config.direct)?;
        // From here on the file exists: remove it again on any error.
        let sized = allocate_blocks(&file, &path, bytes).and_then(|()| {
            if config.direct {
                probe_direct(&file, &dir, &path)
            } else {
                Ok(())
            }
        });
        if let Err(e) = sized {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(SwapDevice {
            path,
            file,
            direct: config.direct,
            capacity: config.slots,
            bitmap,
            refcounts,
            used: AtomicU64::new(0),
            counters: Counters::default(),
            fail_write: Injector::new(0x2545_F491_4F6C_DD1D),
            fail_read: Injector::new(0x9E37_79B9_7F4A_7C15),
        })
    }

    /// The swap file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether I/O bypasses the host's page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Slots in all.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Slots in use (counting allocations under way).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    // -- slots ---------------------------------------------------------------

    /// A free slot, now with reference count 1, or `None` when every slot
    /// is in use.
    pub fn alloc(&self) -> Option<SwapSlot> {
        if !self.reserve() {
            return None;
        }
        let slot = self.claim_bit();
        // Only this thread knows the slot until it returns it; the claim's
        // Acquire already ordered us after the previous owner's free.
        self.refcounts[slot as usize].store(1, Ordering::Relaxed);
        Some(SwapSlot(slot))
    }

    /// Takes one unit of `used`, if the device is not full.
    #[inline]
    fn reserve(&self) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used >= self.capacity {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Sets a clear bit of the bitmap and returns its slot. The caller holds
    /// a unit of `used` that has no bit yet, so a clear bit exists (module
    /// doc, "Why alloc always finds a bit").
    fn claim_bit(&self) -> u32 {
        thread_local! {
            static HINT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
        }
        let words = self.bitmap.len();
        let start = HINT
            .with(|h| h.get())
            .unwrap_or(thread_index() * CLUSTER_WORDS)
            % words;
        let mut spins = 0u32;
        loop {
            for k in 0..words {
                let w = (start + k) % words;
                let mut bits = self.bitmap[w].load(Ordering::Relaxed);
                while bits != u64::MAX {
                    let bit = (!bits).trailing_zeros();
                    // Acquire: pairs with the Release clear of the slot's
                    // last free (its previous owner's work happens before).
                    match self.bitmap[w].compare_exchange_weak(
                        bits,
                        bits | (1 << bit),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            HINT.with(|h| h.set(Some(w)));
                            // w * 64 + bit < capacity <= u32::MAX: bits past
                            // the capacity are always set.
                            return (w as u64 * WORD_BITS + u64::from(bit)) as u32;
                        }
                        Err(now) => bits = now,
                    }
                }
            }
            // Every word looked full: the clear bit moved behind the scan.
            spin_wait(&mut spins);
        }
    }

    /// The slot's reference count, or an error naming what is wrong.
    fn count(&self, slot: SwapSlot) -> Result<&AtomicU32, SlotError> {
        self.refcounts
            .get(slot.0 as usize)
            .ok_or(SlotError::OutOfRange {
                slot,
                capacity: self.capacity,
            })
    }

    /// Adds a reference to an allocated slot (fork copies a swap entry);
    /// returns the new count.
    pub fn dup(&self, slot: SwapSlot) -> Result<u32, SlotError> {
        let count = self.count(slot)?;
        let mut n = count.load(Ordering::Relaxed);
        loop {
            if n == 0 {
                return Err(SlotError::NotAllocated(slot));
            }
            let next = n.checked_add(1).ok_or(SlotError::Overflow(slot))?;
            match count.compare_exchange_weak(n, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(next),
                Err(now) => n = now,
            }
        }
    }

    /// Drops a reference; `Ok(true)` when it was the last one and the slot
    /// is free again.
    pub fn free(&self, slot: SwapSlot) -> Result<bool, SlotError> {
        let count = self.count(slot)?;
        let mut n = count.load(Ordering::Relaxed);
        loop {
            if n == 0 {
                return Err(SlotError::NotAllocated(slot));
            }
            // AcqRel: the last free is ordered after every other holder's
            // drop of its reference (and what it did before).
            match count.compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n > 1 {
            return Ok(false);
        }
        let (w, bit) = (slot.0 as u64 / WORD_BITS, slot.0 as u64 % WORD_BITS);
        // Release: pairs with the next claim's Acquire. Clear the bit before
        // giving back the unit of `used` (set bits <= used).
        self.bitmap[w as usize].fetch_and(!(1 << bit), Ordering::Release);
        self.used.fetch_sub(1, Ordering::Release);
        Ok(true)
    }

    /// The slot's reference count (0 for a free slot or one out of range).
    pub fn refcount(&self, slot: SwapSlot) -> u32 {
        self.count(slot).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    // -- I/O -----------------------------------------------------------------

    /// Writes `page` (4096 bytes) to `slot`, which must be allocated.
    /// Holds no lock. An error leaves the slot's old content or part of the
    /// page in it: the caller must keep the page.
    pub fn write(&self, slot: SwapSlot, page: &[u8]) -> io::Result<()> {
        self.check_io(slot, page.len(), "write")?;
        let result = if self.fail_write.fires() {
            Err(injected("write", slot))
        } else {
            self.write_at(page, self.offset(slot))
        };
        match &result {
            Ok(()) => Counters::bump(&self.counters.writes),
            Err(_) => Counters::bump(&self.counters.write_errors),
        }
        result
    }

    /// Reads `slot`, which must be allocated, into `page` (4096 bytes).
    /// Holds no lock. On error `page`'s content is unspecified.
    pub fn read(&self, slot: SwapSlot, page: &mut [u8]) -> io::Result<()> {
        self.check_io(slot, page.len(), "read")?;
        let result = if self.fail_read.fires() {
            Err(injected("read", slot))
        } else {
            self.read_at(page, self.offset(slot))
        };
        match &result {
            Ok(()) => Counters::bump(&self.counters.reads),
            Err(_) => Counters::bump(&self.counters.read_errors),
        }
        result
    }

    /// Refuses a buffer that is not one page and a slot that is out of
    /// range or free (the caller's bugs: not counted as I/O errors).
    fn check_io(&self, slot: SwapSlot, len: usize, what: &str) -> io::Result<()> {
        if len != SLOT_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("swap {what} of {slot}: the buffer is {len} bytes, a page is {SLOT_BYTES}"),
            ));
        }
        if self.count(slot)?.load(Ordering::Relaxed) == 0 {
            return Err(SlotError::NotAllocated(slot).into());
        }
        Ok(())
    }

    fn offset(&self, slot: SwapSlot) -> u64 {
        u64::from(slot.0) * PAGE_SIZE
    }

    fn write_at(&self, page: &[u8], offset: u64) -> io::Result<()> {
        if self.direct && !is_aligned(page) {
            let mut bounce = Box::new(AlignedPage([0; SLOT_BYTES]));
            bounce.0.copy_from_slice(page);
            self.file.write_all_at(&bounce.0, offset)
        } else {
            self.file.write_all_at(page, offset)
        }
    }

    fn read_at(&self, page: &mut [u8], offset: u64) -> io::Result<()> {
        if self.direct && !is_aligned(page) {
            let mut bounce = Box::new(AlignedPage([0; SLOT_BYTES]));
            self.file.read_exact_at(&mut bounce.0, offset)?;
            page.copy_from_slice(&bounce.0);
            Ok(())
        } else {
            self.file.read_exact_at(page, offset)
        }
    }

    // -- injection, statistics, checks ---------------------------------------

    /// Makes a fraction `write` (0..=1) of writes and `read` of reads fail
    /// before any I/O, with an error that says "injected".
    pub fn set_failure_rates(&self, write: f64, read: f64) {
        self.fail_write.set(write);
        self.fail_read.set(read);
    }

    /// The device's counters.
    pub fn stats(&self) -> SwapStats {
        use std::sync::atomic::Ordering::Relaxed;
        SwapStats {
            writes: self.counters.writes.load(Relaxed),
            reads: self.counters.reads.load(Relaxed),
            write_errors: self.counters.write_errors.load(Relaxed),
            read_errors: self.counters.read_errors.load(Relaxed),
            used: self.used(),
            capacity: self.capacity,
        }
    }

    /// Every allocated slot with its reference count, in slot order. Exact
    /// only while no thread allocates, dups or frees.
    pub fn slot_refcounts(&self) -> Vec<(SwapSlot, u32)> {
        self.refcounts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n != 0).then_some((SwapSlot(i as u32), n))
            })
            .collect()
    }

    /// Compares the device with `expected`, the references counted by the
    /// caller (swap entries found in page tables, a swap cache's holds):
    /// every slot's count must match, no other slot may be in use, and the
    /// device's own bookkeeping (bitmap, `used`) must agree with the counts.
    /// Returns a description of every difference (at most 16 listed).
    ///
    /// # Preconditions
    ///
    /// No thread allocates, dups or frees meanwhile (the caller stops them,
    /// as `check_invariants` stops the address spaces it checks).
    pub fn check_against(&self, expected: &HashMap<SwapSlot, u32>) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut note = |p: String| {
            if problems.len() < 16 {
                problems.push(p);
            }
        };
        for (slot, &want) in expected {
            match self.count(*slot) {
                Err(e) => note(format!("expected {want} reference(s) to {e}")),
                Ok(c) => {
                    let have = c.load(Ordering::Relaxed);
                    if have != want {
                        note(format!("{slot}: {have} reference(s) counted, {want} found"));
                    }
                }
            }
        }
        let mut in_use = 0u64;
        for (i, c) in self.refcounts.iter().enumerate() {
            let slot = SwapSlot(i as u32);
            let have = c.load(Ordering::Relaxed);
            if have != 0 {
                in_use += 1;
                if !expected.contains_key(&slot) {
                    note(format!(
                        "{slot}: {have} reference(s) counted, none found (leaked)"
                    ));
                }
            }
            if self.bit(slot) != (have != 0) {
                note(format!(
                    "{slot}: bitmap says taken={}, count is {have}",
                    self.bit(slot)
                ));
            }
        }
        let used = self.used();
        if used != in_use {
            note(format!(
                "{used} slots counted as used, {in_use} have references"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "swap device {}: {}",
                self.path.display(),
                problems.join("; ")
            ))
        }
    }

    fn bit(&self, slot: SwapSlot) -> bool {
        let (w, bit) = (slot.0 as u64 / WORD_BITS, slot.0 as u64 % WORD_BITS);
        self.bitmap[w as usize].load(Ordering::Relaxed) & (1 << bit) != 0
    }
}

impl Drop for SwapDevice {
    /// Removes the swap file (a failure is printed: no one else can report it).
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!(
                    "vmspace: swap file {}: not removed: {e}",
                    self.path.display()
                );
            }
        }
    }
}

fn injected(what: &str, slot: SwapSlot) -> io::Error {
    io::Error::other(format!("injected swap {what} failure ({slot})"))
}

fn is_aligned(page: &[u8]) -> bool {
    (page.as_ptr() as usize).is_multiple_of(SLOT_BYTES)
}

// -- opening -------------------------------------------------------------------

/// The directory must exist and be a directory (write access is checked by
/// creating the file).
fn check_directory(dir: &Path, path: &Path) -> Result<(), SwapError> {
    let error = |cause| SwapError::Directory {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        cause,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(error(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ))),
        Err(e) => Err(error(e)),
    }
}

/// Bytes free to an unprivileged user on the file system of `dir` (None if
/// the host does not say).
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `st`
    // points to writable memory the size of `statvfs`, which the call fills
    // when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The bitmap (bits past `slots` set) and the reference counts, or an error
/// if memory for them cannot be had.
#[allow(clippy::type_complexity)]
fn slot_tables(slots: u64) -> Result<(Box<[AtomicU64]>, Box<[AtomicU32]>), SwapError> {
    let oom = || SwapError::OutOfMemory { slots };
    let words = slots.div_ceil(WORD_BITS) as usize;
    let mut bitmap = Vec::new();
    bitmap.try_reserve_exact(words).map_err(|_| oom())?;
    bitmap.extend((0..words).map(|_| AtomicU64::new(0)));
    let tail = slots % WORD_BITS;
    if tail != 0 {
        bitmap[words - 1] = AtomicU64::new(u64::MAX << tail);
    }
    let mut refcounts = Vec::new();
    refcounts
        .try_reserve_exact(slots as usize)
        .map_err(|_| oom())?;
    refcounts.extend((0..slots).map(|_| AtomicU32::new(0)));
    Ok((bitmap.into_boxed_slice(), refcounts.into_boxed_slice()))
}

/// Creates or truncates the file (mode 0600), with `O_DIRECT` if asked.
fn create_file(dir: &Path, path: &Path, direct: bool) -> Result<File, SwapError> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path).map_err(|cause| {
        if direct && cause.raw_os_error() == Some(libc::EINVAL) {
            direct_refused(dir, cause)
        } else {
            SwapError::Directory {
                dir: dir.to_path_buf(),
                path: path.to_path_buf(),
                cause,
            }
        }
    })
}

fn direct_refused(dir: &Path, cause: io::Error) -> SwapError {
    SwapError::DirectUnsupported {
        dir: dir.to_path_buf(),
        cause,
    }
}

/// Allocates the file's blocks (`fallocate`), or only sizes it where the
/// file system cannot allocate.
fn allocate_blocks(file: &File, path: &Path, bytes: u64) -> Result<(), SwapError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(bytes).map_err(|_| SwapError::Io {
            path: path.to_path_buf(),
            what: "the size does not fit in off_t",
            cause: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        // SAFETY: the descriptor belongs to `file`, which is open for writing
        // and outlives the call; fallocate touches no memory of ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let cause = io::Error::last_os_error();
        match cause.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EFBIG) => {
                return Err(SwapError::NoSpace {
                    path: path.to_path_buf(),
                    needed: bytes,
                    available: None,
                })
            }
            // The file system cannot allocate: size the file only.
            Some(libc::EOPNOTSUPP) => {}
            _ => {
                return Err(SwapError::Io {
                    path: path.to_path_buf(),
                    what: "allocating its blocks (fallocate)",
                    cause,
                })
            }
        }
    }
    file.set_len(bytes).map_err(|cause| SwapError::Io {
        path: path.to_path_buf(),
        what: "sizing it (set_len)",
        cause,
    })
}

/// Writes and reads back slot 0 with `O_DIRECT`: some file systems accept
/// the flag at open and refuse the I/O (EINVAL).
fn probe_direct(file: &File, dir: &Path, path: &Path) -> Result<(), SwapError> {
    let mut page = Box::new(AlignedPage([0; SLOT_BYTES]));
    let result = file
        .write_all_at(&page.0, 0)
        .and_then(|()| file.read_exact_at(&mut page.0, 0));
    result.map_err(|cause| {
        if cause.raw_os_error() == Some(libc::EINVAL) {
            direct_refused(dir, cause)
        } else {
            SwapError::Io {
                path: path.to_path_buf(),
                what: "probing O_DIRECT I/O",
                cause,
            }
        }
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn device(name: &str, slots: u64) -> SwapDevice {
        let file = format!("vmspace-swap-unit-{}-{name}", std::process::id());
        SwapDevice::open(&SwapConfig {
            path: std::env::temp_dir().join(file),
            slots,
            direct: false,
        })
        .unwrap()
    }

    #[test]
    fn tail_bits_are_never_handed_out() {
        let d = device("tail", 70);
        let mut got: Vec<u32> = std::iter::from_fn(|| d.alloc())
            .map(|s| s.index())
            .collect();
        got.sort();
        assert_eq!(got, (0..70).collect::<Vec<_>>());
        assert_eq!(d.used(), 70);
        assert!(d.alloc().is_none());
    }

    #[test]
    fn free_makes_the_slot_reusable() {
        let d = device("reuse", 1);
        let s = d.alloc().unwrap();
        assert!(d.alloc().is_none());
        assert_eq!(d.free(s), Ok(true));
        assert_eq!(d.used(), 0);
        assert_eq!(d.alloc(), Some(s));
    }

    #[test]
    fn misuse_is_an_error() {
        let d = device("misuse", 2);
        let s = d.alloc().unwrap();
        let other = SwapSlot::from_index(1 - s.index());
        assert_eq!(d.dup(other), Err(SlotError::NotAllocated(other)));
        assert_eq!(d.free(other), Err(SlotError::NotAllocated(other)));
        let far = SwapSlot::from_index(2);
        assert_eq!(
            d.free(far),
            Err(SlotError::OutOfRange {
                slot: far,
                capacity: 2
            })
        );
        assert_eq!(d.refcount(far), 0);
        d.refcounts[s.index() as usize].store(u32::MAX, Ordering::Relaxed);
        assert_eq!(d.dup(s), Err(SlotError::Overflow(s)));
    }

    #[test]
    fn direct_refusal_names_the_directory_and_the_cure() {
        let e = direct_refused(
            Path::new("/some/dir"),
            io::Error::from_raw_os_error(libc::EINVAL),
        );
        let msg = e.to_string();
        assert!(msg.contains("/some/dir"), "{msg}");
        assert!(msg.contains("does not support O_DIRECT"), "{msg}");
        assert!(msg.contains("turn direct off"), "{msg}");
    }

    #[test]
    fn check_against_reports_differences() {
        let d = device("check", 8);
        let a = d.alloc().unwrap();
        let b = d.alloc().unwrap();
        d.dup(b).unwrap();
        let mut seen = HashMap::from([(a, 1), (b, 2)]);
        assert_eq!(d.check_against(&seen), Ok(()));
        seen.insert(b, 1);
        let msg = d.check_against(&seen).unwrap_err();
        assert!(
            msg.contains(&format!("{b}: 2 reference(s) counted, 1 found")),
            "{msg}"
        );
        seen.remove(&b);
        let msg = d.check_against(&seen).unwrap_err();
        assert!(msg.contains("leaked"), "{msg}");
        // The device's own bookkeeping is checked too.
        seen.insert(b, 2);
        d.used.fetch_add(1, Ordering::Relaxed);
        let msg = d.check_against(&seen).unwrap_err();
        assert!(
            msg.contains("3 slots counted as used, 2 have references"),
            "{msg}"
        );
    }

    #[test]
    fn injection_rates_zero_and_one() {
        let d = device("inject", 1);
        let s = d.alloc().unwrap();
        let mut page = vec![7u8; SLOT_BYTES];
        d.set_failure_rates(1.0, 0.0);
        let e = d.write(s, &page).unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        d.set_failure_rates(0.0, 1.0);
        d.write(s, &page).unwrap();
        assert!(d
            .read(s, &mut page)
            .unwrap_err()
            .to_string()
            .contains("injected"));
        d.set_failure_rates(f64::NAN, 0.0);
        d.write(s, &page).unwrap();
        let st = d.stats();
        assert_eq!(
            (st.writes, st.write_errors, st.reads, st.read_errors),
            (2, 1, 0, 1)
        );
    }
}
