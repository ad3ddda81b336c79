//! Frames: real 4 KiB pages of memory from one arena, and their allocator.
//!
//! # The arena
//!
//! One anonymous host mapping, prefaulted at creation (`MAP_POPULATE`), viewed as
//! an array of `AtomicU64`. Frame `n` is words `512 n .. 512 (n + 1)`. Frame 0 is
//! the shared zero frame: never written, mapped read-only by read faults on
//! private anonymous memory, as Linux maps its zero page.
//!
//! # The user-memory rule
//!
//! User memory is shared mutable memory: any number of `Cpu`s may load and store
//! a frame at once, and a frame may be read while the fault path copies it. So
//! every access to frame memory is an atomic operation on the aligned `u64` that
//! contains it (byte stores are compare-exchange loops on their word). Races
//! give stale or interleaved values, never undefined behaviour, and an aligned
//! access of up to 8 bytes is never torn. No `&`/`&mut` to plain bytes of a
//! frame ever exists. One exception: a frame that no other thread can reach
//! yet, just taken from a free list, is zeroed with plain writes before it is
//! published (`zero_unshared`); nothing can race with them.
//!
//! # Frame metadata (Linux's `struct page`)
//!
//! Each frame has a [`FrameMeta`]: a reference count, a mapcount and an owner.
//!
//! * The reference count: one per page-table entry that maps it, one for the
//!   page cache that holds it, one per transient user (a fault copying it).
//!   The last `put` returns the frame to the free list. Callers that remove a
//!   mapping drop its reference only after the TLB shootdown (`tlb.rs`), so a
//!   frame is never reused while a `Cpu` can still reach it.
//! * The mapcount: the page-table entries that map the frame, in every
//!   address space. Changed only by `pagetable.rs`, under the PTE lock of the
//!   entry that is set or cleared, so it is exact whenever no PTE lock is held.
//! * The owner ([`Owner`]): the object the frame holds a page of and the page's
//!   index there: an anonymous object (private pages) or a file (page-cache
//!   pages). Set by whoever allocates the frame, before it is published (a PTE
//!   or page-cache slot store, Release), and cleared by the free; it is the
//!   reverse map's starting point (which mappings may map this frame).
//!
//! The three sit side by side (one 16-byte record a frame), so a fault that
//! allocates and maps a frame touches one cache line of metadata.
//!
//! # The free lists
//!
//! Free frames sit in [`SHARDS`] lists, each behind its own mutex on its own
//! cache lines; a thread allocates from and frees to the list its index picks
//! (threads get indexes in turn), and takes half of another list's frames
//! when its own runs dry. So two threads that fault (and unmap) at once do not
//! take turns on one lock and one counter line for every frame (with a
//! single list, two faulting threads ran no faster than one:
//! `docs/decisions.md`).
//!
//! Locks: each free list is a `sync::Mutex`, a leaf lock: nothing else is
//! taken under it, and a thread holds one list at a time, except `redeal`,
//! which holds all of them in index order. Moves between lists and `redeal`
//! hold `steal` around the list locks (lock order: `steal`, then the lists in
//! index order).
//! Reference counts are atomics.

use crate::sync::{AtomicU32, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a frame holds a page of (see "Frame metadata").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Owner {
    /// Free, the zero frame, or not yet given an owner.
    #[default]
    None,
    /// Page `index` of the anonymous object with id `object`
    /// ([`crate::AnonObject::id`]).
    Anon {
        /// The anonymous object's id.
        object: u64,
        /// The page index (the VMA's page offset of the address).
        index: u64,
    },
    /// Page `index` of the file with id `file` ([`crate::File::id`]).
    File {
        /// The file's id.
        file: u64,
        /// The page offset in the file.
        index: u64,
    },
}

impl Owner {
    const TAG_ANON: u64 = 1 << 62;
    const TAG_FILE: u64 = 2 << 62;
    const INDEX_BITS: u32 = 36;

    /// Packs the owner into one word: 2 tag bits, a 26-bit object id, a
    /// 36-bit index (enough for 2^47 bytes of pages). Ids and indexes beyond
    /// those widths wrap (the owner is then ambiguous, never unsound).
    fn pack(self) -> u64 {
        let (tag, id, index) = match self {
            Owner::None => return 0,
            Owner::Anon { object, index } => (Self::TAG_ANON, object, index),
            Owner::File { file, index } => (Self::TAG_FILE, file, index),
        };
        let id = id & ((1 << 26) - 1);
        tag | (id << Self::INDEX_BITS) | (index & ((1 << Self::INDEX_BITS) - 1))
    }

    fn unpack(w: u64) -> Owner {
        let id = (w >> Self::INDEX_BITS) & ((1 << 26) - 1);
        let index = w & ((1 << Self::INDEX_BITS) - 1);
        match w & (3 << 62) {
            Self::TAG_ANON => Owner::Anon { object: id, index },
            Self::TAG_FILE => Owner::File { file: id, index },
            _ => Owner::None,
        }
    }

    /// The owner as packed (ids and index truncated to their widths), for
    /// comparisons with what a frame records.
    pub fn normalized(self) -> Owner {
        Owner::unpack(self.pack())
    }
}

/// One frame's metadata (see "Frame metadata").
struct FrameMeta {
    refs: AtomicU32,
    /// Page-table entries mapping the frame (written under their PTE lock).
    mapcount: AtomicU32,
    /// [`Owner`], packed (Relaxed: published with the frame by the Release
    /// store that makes the frame reachable).
    owner: AtomicU64,
}

impl FrameMeta {
    fn new() -> FrameMeta {
        FrameMeta {
            refs: AtomicU32::new(0),
            mapcount: AtomicU32::new(0),
            owner: AtomicU64::new(0),
        }
    }
}

/// Bytes in a page and in a frame.
pub const PAGE_SIZE: u64 = 4096;
const WORDS: usize = (PAGE_SIZE / 8) as usize;

/// Index of a frame in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId(pub u32);

impl FrameId {
    /// The shared zero frame.
    pub const ZERO: FrameId = FrameId(0);
}

/// Value written over freed frames in debug builds, so that a read through a
/// stale translation shows up as this pattern instead of plausible data.
pub const POISON: u64 = 0xDEAD_BEEF_DEAD_BEEF;

/// Free lists (see the module documentation). One under loom, whose models
/// check the reference-count protocol, not the sharding.
#[cfg(not(loom))]
const SHARDS: usize = 16;
#[cfg(loom)]
const SHARDS: usize = 1;
/// Most frames a thread takes from another list at once.
const STEAL_MAX: usize = 256;

/// One free list and the net count of frames handed out through it (frames
/// allocated from it minus frames freed to it: negative when a frame is freed
/// by another thread than the one that allocated it).
#[repr(align(128))]
struct Shard(Mutex<ShardData>);

struct ShardData {
    free: Vec<FrameId>,
    net: isize,
}

/// A small number per thread, handed out in turn: what sharded structures
/// pick their shard by.
pub(crate) fn thread_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    MINE.with(|m| *m)
}

/// The free list of the calling thread.
fn my_shard() -> usize {
    thread_index() % SHARDS
}

/// The frame arena and its allocator.
pub struct FrameAllocator {
    base: *mut AtomicU64,
    frames: u32,
    meta: Box<[FrameMeta]>,
    /// Device pins per frame (`pin.rs`), each also holding a reference. Apart
    /// from `meta`, which every fault touches, so that its entries stay 16
    /// bytes (four to a cache line); only pinning, reclaim and fork read it.
    pins: Box<[AtomicU32]>,
    shards: Box<[Shard]>,
    /// Serializes moves between free lists (see `steal_into`).
    steal: Mutex<()>,
    /// Test hook: fail allocations (fault injection), probability in 1/2^32 units.
    fail_rate: AtomicU32,
    fail_seed: std::sync::atomic::AtomicU64,
    /// Allocations failed on purpose so far.
    failed_on_purpose: std::sync::atomic::AtomicU64,
    poison: bool,
    /// The anonymous objects and files whose frames live here, by id
    /// (`rmap.rs`).
    pub(crate) objects: crate::rmap::ObjectTable,
    /// Which frames `madvise(MADV_FREE)` made lazy-free (see [`LazyFree`]).
    lazyfree: LazyFree,
    /// The rmap lock kind of every object here, and their shared counters.
    rmap_lock: crate::RmapLockKind,
    pub(crate) rmap_counters: std::sync::Arc<crate::sync::rmap_lock::RmapLockCounters>,
    /// The swap device and swap cache, if the arena has swap
    /// (`swapcache.rs`).
    pub(crate) swap: Option<crate::swapcache::Swap>,
    /// Reclaim's state: clock hand, free count, counters, background
    /// reclaimer (`reclaim.rs`).
    pub(crate) reclaim: crate::reclaim::ReclaimState,
}

/// The free lists of a new arena of `frames` frames (frame 0 excluded): each
/// list gets a run of consecutive frames, the lowest on top.
fn deal(frames: u32) -> Box<[Shard]> {
    (0..SHARDS)
        .map(|k| Shard(Mutex::new(dealt(frames, k))))
        .collect()
}

/// List `k` of a new arena of `frames` frames (see [`deal`]).
fn dealt(frames: u32, k: usize) -> ShardData {
    let per = (frames as usize - 1).div_ceil(SHARDS);
    let lo = (1 + k * per).min(frames as usize) as u32;
    let hi = (1 + (k + 1) * per).min(frames as usize) as u32;
    ShardData {
        free: (lo..hi).rev().map(FrameId).collect(),
        net: 0,
    }
}

// SAFETY: the arena is only ever accessed through atomics (the user-memory rule
// above); the rest is atomics and a mutex.
unsafe impl Send for FrameAllocator {}
// SAFETY: as above.
unsafe impl Sync for FrameAllocator {}

/// Why an arena could not be created.
#[derive(Debug)]
pub struct ArenaError(pub std::io::Error);

impl std::fmt::Display for ArenaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot create the frame arena: {}", self.0)
    }
}

impl std::error::Error for ArenaError {}

impl FrameAllocator {
    /// An arena of `bytes` (rounded up to whole frames, plus the zero frame),
    /// prefaulted so that faults measure zeroing and copying, not host faults.
    pub fn new(bytes: u64) -> Result<Self, ArenaError> {
        FrameAllocator::with_config(&crate::ArenaConfig {
            bytes,
            ..Default::default()
        })
    }

    /// An arena as `config` says (see [`FrameAllocator::new`]).
    pub fn with_config(config: &crate::ArenaConfig) -> Result<Self, ArenaError> {
        let bytes = config.bytes;
        let frames = bytes.div_ceil(PAGE_SIZE).saturating_add(1);
        let frames = u32::try_from(frames).map_err(|_| {
            ArenaError(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "arena larger than 2^32 frames",
            ))
        })?;
        let len = frames as usize * PAGE_SIZE as usize;
        let swap = match &config.swap {
            Some(sc) => Some(crate::swapcache::Swap::new(
                crate::SwapDevice::open(sc)
                    .map_err(|e| ArenaError(std::io::Error::other(format!("swap device: {e}"))))?,
                frames,
            )),
            None => None,
        };
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ArenaError(std::io::Error::last_os_error()));
        }
        Ok(FrameAllocator {
            base: p.cast(),
            frames,
            meta: (0..frames).map(|_| FrameMeta::new()).collect(),
            pins: (0..frames).map(|_| AtomicU32::new(0)).collect(),
            shards: deal(frames),
            steal: Mutex::new(()),
            fail_rate: AtomicU32::new(0),
            fail_seed: std::sync::atomic::AtomicU64::new(0x2545_F491_4F6C_DD1D),
            failed_on_purpose: std::sync::atomic::AtomicU64::new(0),
            poison: cfg!(debug_assertions),
            objects: Default::default(),
            lazyfree: LazyFree::new(frames),
            rmap_lock: config.rmap_lock,
            rmap_counters: Default::default(),
            swap,
            reclaim: crate::reclaim::ReclaimState::new(
                &config.reclaim,
                frames,
                config.swap.is_some(),
            ),
        })
    }

    /// The rmap lock kind of this arena's objects.
    pub fn rmap_lock_kind(&self) -> crate::RmapLockKind {
        self.rmap_lock
    }

    /// Waits and acquisitions of this arena's rmap locks so far.
    pub fn rmap_lock_stats(&self) -> crate::RmapLockStats {
        self.rmap_counters.stats()
    }

    /// Frames in the arena, the zero frame excluded.
    pub fn capacity(&self) -> usize {
        self.frames as usize - 1
    }

    /// Frames handed out and not yet returned.
    /// Exact when no frame is allocated or freed meanwhile (the lists are
    /// read one after the other).
    pub fn in_use(&self) -> usize {
        let net: isize = self.shards.iter().map(|s| s.0.lock().net).sum();
        net.max(0) as usize
    }

    /// Puts the free lists back in the order of a new arena (each list a run of
    /// consecutive frames, the lowest on top), if every frame is free; returns
    /// whether it did. Allocation and freeing scatter the lists over time
    /// (frames go back to the list of the thread that frees them, and steals
    /// move runs between lists), so a later run's pages spread over the
    /// arena; on the 2-core VM, writing one byte per 4 KiB page of 128 MiB ran
    /// at 48-56 M pages/s in a shuffled order against 67-70 M in address
    /// order. Benchmarks call this between runs so that each run starts from
    /// the same arena, whatever ran before it.
    ///
    /// Locks: `steal`, then every list in index order (the one place that holds
    /// more than one list; nothing else nests list locks, so it cannot deadlock).
    pub fn redeal(&self) -> bool {
        let _one_at_a_time = self.steal.lock();
        let mut lists: Vec<_> = self.shards.iter().map(|s| s.0.lock()).collect();
        let free: usize = lists.iter().map(|l| l.free.len()).sum();
        if free != self.capacity() {
            return false;
        }
        for (k, list) in lists.iter_mut().enumerate() {
            **list = dealt(self.frames, k);
        }
        true
    }

    /// Makes a fraction `rate` (0..=1) of allocations fail, for fault injection.
    pub fn set_failure_rate(&self, rate: f64) {
        let r = (rate.clamp(0.0, 1.0) * u32::MAX as f64) as u32;
        self.fail_rate.store(r, Ordering::Relaxed);
    }

    /// Whether poisoning of freed frames is on (debug builds; settable).
    pub fn set_poison(&mut self, on: bool) {
        self.poison = on;
    }

    fn injected_failure(&self) -> bool {
        let rate = self.fail_rate.load(Ordering::Relaxed);
        if rate == 0 {
            return false;
        }
        let mut x = self.fail_seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.fail_seed.store(x, Ordering::Relaxed);
        let fails = (x >> 32) as u32 <= rate;
        if fails {
            self.failed_on_purpose.fetch_add(1, Ordering::Relaxed);
        }
        fails
    }

    /// Allocations made to fail by [`FrameAllocator::set_failure_rate`] so
    /// far. A fault whose allocation fails reclaims and retries, so most of
    /// them never become out-of-memory faults.
    pub fn injected_failures(&self) -> u64 {
        self.failed_on_purpose.load(Ordering::Relaxed)
    }

    /// A frame with reference count 1 and unspecified content, or `None` when
    /// the arena is exhausted (or a failure is injected).
    pub fn alloc(&self) -> Option<FrameId> {
        if self.injected_failure() {
            return None;
        }
        let me = &self.shards[my_shard()].0;
        let f = {
            let mut own = me.lock();
            match own.free.pop() {
                Some(f) => {
                    own.net += 1;
                    f
                }
                None => {
                    drop(own);
                    self.steal_into(me)?
                }
            }
        };
        self.meta[f.0 as usize].refs.store(1, Ordering::Relaxed);
        self.reclaim.allocated();
        Some(f)
    }

    /// With the calling thread's list `me` found empty: moves up to half of
    /// the first non-empty list (at most [`STEAL_MAX`]) into it and allocates
    /// one of them. `None` if every list is empty. Steals are serialized by
    /// `steal`, so frames in transit between two lists are never missed by
    /// another thread's scan (which would report a false exhaustion).
    fn steal_into(&self, me: &Mutex<ShardData>) -> Option<FrameId> {
        let _one_at_a_time = self.steal.lock();
        let first = my_shard();
        for k in 0..SHARDS {
            let victim = &self.shards[(first + k) % SHARDS].0;
            let taken: Vec<FrameId> = {
                let mut v = victim.lock();
                let n = v.free.len().div_ceil(2).min(STEAL_MAX);
                let at = v.free.len() - n;
                v.free.split_off(at)
            };
            if taken.is_empty() {
                continue;
            }
            let mut own = me.lock();
            own.free.extend(taken);
            let f = own.free.pop();
            own.net += 1;
            return f;
        }
        None
    }

    /// A frame filled with zeros, through the cache like every access (as
    /// Linux clears pages): the fault's own access comes right after, and
    /// non-temporal stores would make it miss (`docs/decisions.md`).
    pub fn alloc_zeroed(&self) -> Option<FrameId> {
        let f = self.alloc()?;
        self.zero_unshared(f);
        Some(f)
    }

    /// Zeroes a frame that no one else can reach, with the widest stores the
    /// machine has (`memset`) instead of one atomic store per word: the one
    /// exception to the user-memory rule (module documentation), because it
    /// is faster than the word loop (`docs/decisions.md`).
    fn zero_unshared(&self, f: FrameId) {
        assert!(f.0 < self.frames && f != FrameId::ZERO, "frame {}", f.0);
        // SAFETY: the frame lies inside the arena (checked above), which lives
        // as long as `self`. No other thread accesses it while this runs:
        // * it was just taken from a free list, whose mutex orders this after
        //   the `put` that freed it;
        // * a `Cpu` reaches frames only through entries, and `put` runs after
        //   the shootdown that ends every access through a removed entry;
        // * everyone else who reads or writes frame contents holds a
        //   reference while doing so: a copy-on-write fault takes one on its
        //   anonymous source (`try_get`, `fault.rs`), swap-out and swap-in
        //   hold one on their frame (`swapcache.rs`), and a page-cache
        //   frame (a copy-on-write source, a write-back) is held by the
        //   cache as long as the file lives (page-cache frames are not
        //   reclaimed), which the VMA the fault holds or pins keeps alive;
        //   a held frame is never on a free list;
        // * the caller publishes it (a PTE store under the PTE lock) only
        //   after this returns.
        // So these plain writes race with no access, atomic or not. The
        // pointer comes from the arena's base, not from a reference.
        unsafe {
            std::ptr::write_bytes(
                self.base.add(f.0 as usize * WORDS).cast::<u8>(),
                0,
                PAGE_SIZE as usize,
            )
        }
    }

    /// A frame holding a copy of `src`.
    pub fn alloc_copy(&self, src: FrameId) -> Option<FrameId> {
        let f = self.alloc()?;
        self.copy(src, f);
        Some(f)
    }

    /// Takes one more reference to a frame the caller already holds a
    /// reference to (or reaches under a lock that keeps it alive).
    pub fn get(&self, f: FrameId) {
        if f != FrameId::ZERO {
            self.meta[f.0 as usize].refs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops a reference; the last one frees the frame. The caller guarantees
    /// that no `Cpu` can reach the frame through a reference it dropped (the
    /// shootdown protocol of `cpu.rs`).
    pub fn put(&self, f: FrameId) {
        if f == FrameId::ZERO {
            return;
        }
        // AcqRel: all uses of the frame by other holders happen before the free.
        let meta = &self.meta[f.0 as usize];
        if meta.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.free_frozen(f);
        }
    }

    /// Takes a reference to a frame the caller does not hold, unless it is
    /// free (count 0, or frozen); returns whether it did. The frame may have
    /// been freed and reused since the caller found it: callers check that
    /// it is still what they looked for, and put it if not (Linux's
    /// `folio_try_get`).
    pub(crate) fn try_get(&self, f: FrameId) -> bool {
        if f == FrameId::ZERO {
            return true;
        }
        let refs = &self.meta[f.0 as usize].refs;
        let mut n = refs.load(Ordering::Relaxed);
        loop {
            if n == 0 {
                return false;
            }
            // Acquire: the holder's writes (owner, content) are visible.
            match refs.compare_exchange_weak(n, n + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
    }

    /// Drops the count from `expected` to 0 if it is exactly that: the
    /// caller holds every reference there is, and no `try_get` can succeed
    /// afterwards. The caller then frees the frame with `free_frozen`.
    pub(crate) fn freeze(&self, f: FrameId, expected: u32) -> bool {
        f != FrameId::ZERO
            && self.meta[f.0 as usize]
                .refs
                .compare_exchange(expected, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Undoes a `freeze` that found the frame must stay: the count is
    /// `count` again (the references the freezer held).
    pub(crate) fn unfreeze(&self, f: FrameId, count: u32) {
        self.meta[f.0 as usize].refs.store(count, Ordering::Release);
    }

    /// Returns a frame whose count reached 0 to the free list.
    pub(crate) fn free_frozen(&self, f: FrameId) {
        let meta = &self.meta[f.0 as usize];
        debug_assert_eq!(
            meta.mapcount.load(Ordering::Relaxed),
            0,
            "freeing mapped frame {}",
            f.0
        );
        meta.owner.store(0, Ordering::Relaxed);
        self.clear_lazyfree(f);
        if self.poison {
            self.fill(f, POISON);
        }
        let mut own = self.shards[my_shard()].0.lock();
        own.free.push(f);
        own.net -= 1;
        drop(own);
        self.reclaim.freed();
    }

    /// Nothing in normal builds. Under loom, a relaxed load of the frame's
    /// reference count, which `alloc` and `put` write: frame contents are std
    /// atomics that loom does not see, so this is what lets the model checker
    /// order a `Cpu`'s access (between its PTE load and its use of the frame)
    /// against a writer that frees and reuses the frame.
    #[inline(always)]
    pub(crate) fn access_point(&self, f: FrameId) {
        #[cfg(loom)]
        self.meta[f.0 as usize].refs.load(Ordering::Relaxed);
        #[cfg(not(loom))]
        let _ = f;
    }

    /// Current reference count of a frame (for tests and assertions).
    pub fn refcount(&self, f: FrameId) -> u32 {
        self.meta[f.0 as usize].refs.load(Ordering::Relaxed)
    }

    /// Drops a reference unless it is the last one; returns whether it did.
    /// For callers that may free a frame only after a shootdown, and want to
    /// run one only when the frame would really be freed.
    pub(crate) fn put_unless_last(&self, f: FrameId) -> bool {
        if f == FrameId::ZERO {
            return true;
        }
        let refs = &self.meta[f.0 as usize].refs;
        let mut n = refs.load(Ordering::Relaxed);
        while n > 1 {
            // Release: this holder's uses of the frame happen before the
            // free by whoever drops the last reference (an AcqRel RMW).
            match refs.compare_exchange_weak(n, n - 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    /// Device pins of the frame (`AddressSpace::pin_pages`).
    pub fn pincount(&self, f: FrameId) -> u32 {
        self.pins[f.0 as usize].load(Ordering::Acquire)
    }

    /// Pins `f` for a device: one more pin and one more reference. The
    /// caller holds the PTE lock of an entry that maps it (`pin.rs`).
    pub(crate) fn pin(&self, f: FrameId) {
        if f == FrameId::ZERO {
            return;
        }
        self.get(f);
        self.pins[f.0 as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// Drops a pin taken by [`FrameAllocator::pin`], and its reference.
    pub(crate) fn unpin(&self, f: FrameId) {
        if f == FrameId::ZERO {
            return;
        }
        let before = self.pins[f.0 as usize].fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "unpin of frame {} not pinned", f.0);
        self.put(f);
    }

    /// Page-table entries mapping the frame, over all address spaces (exact
    /// when no PTE lock is held; 0 for the zero frame, which is not counted).
    pub fn mapcount(&self, f: FrameId) -> u32 {
        self.meta[f.0 as usize].mapcount.load(Ordering::Relaxed)
    }

    /// One more entry maps `f`. Called by `pagetable.rs` under the entry's
    /// PTE lock.
    pub(crate) fn mapped(&self, f: FrameId) {
        if f != FrameId::ZERO {
            self.meta[f.0 as usize]
                .mapcount
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One entry fewer maps `f`. Called by `pagetable.rs` under the entry's
    /// PTE lock.
    pub(crate) fn unmapped(&self, f: FrameId) {
        if f != FrameId::ZERO {
            let before = self.meta[f.0 as usize]
                .mapcount
                .fetch_sub(1, Ordering::Relaxed);
            debug_assert!(before > 0, "mapcount of frame {} below zero", f.0);
        }
    }

    /// What the frame holds a page of.
    pub fn owner(&self, f: FrameId) -> Owner {
        Owner::unpack(self.meta[f.0 as usize].owner.load(Ordering::Relaxed))
    }

    /// Records the frame's owner. The caller holds the frame and has not
    /// published it yet (or holds the lock that publishes it).
    pub(crate) fn set_owner(&self, f: FrameId, owner: Owner) {
        if f != FrameId::ZERO {
            self.meta[f.0 as usize]
                .owner
                .store(owner.pack(), Ordering::Relaxed);
        }
    }

    fn words(&self, f: FrameId) -> &[AtomicU64] {
        assert!(f.0 < self.frames, "frame {} outside the arena", f.0);
        // SAFETY: the arena holds `frames` frames of WORDS atomics each, lives as
        // long as `self`, and is only accessed through atomics.
        unsafe { std::slice::from_raw_parts(self.base.add(f.0 as usize * WORDS), WORDS) }
    }

    /// The aligned word at byte offset `off` (`off % 8 == 0`, `off < 4096`).
    pub fn word(&self, f: FrameId, off: u64) -> &AtomicU64 {
        &self.words(f)[(off / 8) as usize]
    }

    fn fill(&self, f: FrameId, value: u64) {
        for w in self.words(f) {
            w.store(value, Ordering::Relaxed);
        }
    }

    fn copy(&self, src: FrameId, dst: FrameId) {
        for (d, s) in self.words(dst).iter().zip(self.words(src)) {
            d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Loads the byte at `off`.
    pub fn load_u8(&self, f: FrameId, off: u64) -> u8 {
        let w = self.word(f, off & !7).load(Ordering::Relaxed);
        (w >> ((off & 7) * 8)) as u8
    }

    /// Stores the byte at `off` (a compare-exchange loop on its word, so that
    /// concurrent stores to the other bytes of the word are not lost).
    pub fn store_u8(&self, f: FrameId, off: u64, value: u8) {
        let shift = (off & 7) * 8;
        let mask = 0xFFu64 << shift;
        let w = self.word(f, off & !7);
        let mut cur = w.load(Ordering::Relaxed);
        loop {
            let new = (cur & !mask) | (u64::from(value) << shift);
            match w.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Copies a whole frame out (for a backing store write).
    pub fn read_frame(&self, f: FrameId, out: &mut [u8]) {
        for (chunk, w) in out.chunks_exact_mut(8).zip(self.words(f)) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    /// Fills a whole frame from bytes (for a backing store read).
    pub fn write_frame(&self, f: FrameId, data: &[u8]) {
        for (chunk, w) in data.chunks_exact(8).zip(self.words(f)) {
            w.store(
                u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
                Ordering::Relaxed,
            );
        }
    }
}

impl Drop for FrameAllocator {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this length and nothing
        // refers to it once the allocator is dropped (`&self` borrows end here).
        unsafe {
            libc::munmap(self.base.cast(), self.frames as usize * PAGE_SIZE as usize);
        }
    }
}

/// The lazy-free mark of every frame: one bit each (`madvise(MADV_FREE)`).
///
/// A frame is lazy-free when `MADV_FREE` found it mapped once, by private
/// anonymous memory, and cleaned its entry (dirty bit cleared, flushed).
/// Reclaim may then drop it instead of swapping it out, if its entry is
/// still clean: a write after `MADV_FREE` sets the dirty bit again (the
/// `Cpu` does, as hardware does) and the data must be kept. The mark is
/// cleared when the frame is freed, so a frame handed out again never
/// starts lazy-free.
///
/// Atomic bits, Relaxed: the mark is set under the PTE lock of the entry
/// that maps the frame, and read by reclaim under that lock (or under the
/// reverse map's lock that reaches the entry), which orders them.
pub(crate) struct LazyFree(Box<[AtomicU64]>);

impl LazyFree {
    /// No frame of an arena of `frames` frames lazy-free.
    fn new(frames: u32) -> LazyFree {
        LazyFree(
            (0..frames.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        )
    }

    /// The word and the bit of frame `f`.
    fn bit(&self, f: FrameId) -> Option<(&AtomicU64, u64)> {
        let word = self.0.get(f.0 as usize / 64)?;
        Some((word, 1 << (f.0 % 64)))
    }
}

impl FrameAllocator {
    /// Marks `f` lazy-free (`madvise(MADV_FREE)`; see [`LazyFree`]).
    pub(crate) fn mark_lazyfree(&self, f: FrameId) {
        if let Some((word, bit)) = self.lazyfree.bit(f) {
            word.fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// Clears the lazy-free mark of `f` (reclaim keeps a written page; a
    /// freed frame loses it).
    pub(crate) fn clear_lazyfree(&self, f: FrameId) {
        if let Some((word, bit)) = self.lazyfree.bit(f) {
            word.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Whether `f` is lazy-free.
    pub fn is_lazyfree(&self, f: FrameId) -> bool {
        self.lazyfree
            .bit(f)
            .is_some_and(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_put_and_poison() {
        let a = FrameAllocator::new(4 * PAGE_SIZE).unwrap();
        assert_eq!(a.capacity(), 4);
        let f = a.alloc_zeroed().unwrap();
        a.store_u8(f, 9, 0xAB);
        assert_eq!(a.load_u8(f, 9), 0xAB);
        assert_eq!(a.load_u8(f, 8), 0);
        let g = a.alloc_copy(f).unwrap();
        assert_eq!(a.load_u8(g, 9), 0xAB);
        a.get(g);
        a.put(g);
        assert_eq!(a.in_use(), 2);
        a.put(g);
        a.put(f);
        assert_eq!(a.in_use(), 0);
        // A frame freed full of ones comes back (the thread's list is LIFO)
        // zeroed, every byte of it.
        let h = a.alloc().unwrap();
        a.write_frame(h, &[0xFF; PAGE_SIZE as usize]);
        a.put(h);
        let z = a.alloc_zeroed().unwrap();
        assert_eq!(z, h);
        let mut buf = [1u8; PAGE_SIZE as usize];
        a.read_frame(z, &mut buf);
        assert!(buf.iter().all(|&b| b == 0));
        a.put(z);
        let all: Vec<_> = (0..4).map(|_| a.alloc().unwrap()).collect();
        assert!(a.alloc().is_none(), "arena exhausted");
        for f in all {
            a.put(f);
        }
    }

    /// `redeal` refuses while a frame is out, and afterwards the lists are
    /// as new: a thread gets consecutive frames again, and every frame once.
    #[test]
    fn redeal_puts_the_lists_back_in_address_order() {
        // Lists of 32 frames: the first 8 come from the thread's own list.
        const N: usize = 32 * SHARDS;
        let a = FrameAllocator::new(N as u64 * PAGE_SIZE).unwrap();
        let fresh: Vec<_> = (0..8).map(|_| a.alloc().unwrap()).collect();
        assert!(fresh.windows(2).all(|w| w[1].0 == w[0].0 + 1), "{fresh:?}");
        // Free them in a scrambled order, from another thread too.
        let all: Vec<_> = (0..N - 8).map(|_| a.alloc().unwrap()).collect();
        assert!(!a.redeal(), "frames are out");
        std::thread::scope(|s| {
            s.spawn(|| all.iter().step_by(2).for_each(|&f| a.put(f)));
        });
        all.iter().skip(1).step_by(2).rev().for_each(|&f| a.put(f));
        fresh.iter().rev().for_each(|&f| a.put(f));
        assert_eq!(a.in_use(), 0);
        assert!(a.redeal());
        let again: Vec<_> = (0..8).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(again, fresh);
        let mut rest: Vec<_> = (0..N - 8).map(|_| a.alloc().unwrap()).collect();
        assert!(a.alloc().is_none(), "arena exhausted");
        rest.extend(again);
        rest.sort();
        rest.dedup();
        assert_eq!(rest.len(), N, "every frame exactly once");
        rest.into_iter().for_each(|f| a.put(f));
    }

    /// Every frame can be allocated, by one thread or by several, whichever
    /// lists they sit on, and only then is the arena exhausted.
    #[test]
    fn every_frame_is_found_across_the_lists() {
        for threads in [1usize, 3] {
            let n = 1000;
            let a = FrameAllocator::new(n * PAGE_SIZE).unwrap();
            let got: Vec<FrameId> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| s.spawn(|| std::iter::from_fn(|| a.alloc()).collect::<Vec<_>>()))
                    .collect();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(got.len(), n as usize, "{threads} threads");
            let mut ids: Vec<u32> = got.iter().map(|f| f.0).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), n as usize, "a frame handed out twice");
            assert_eq!(a.in_use(), n as usize);
            for f in got {
                a.put(f);
            }
            assert_eq!(a.in_use(), 0);
            // Freed on this thread's list, found again from another thread.
            let again = std::thread::scope(|s| {
                s.spawn(|| std::iter::from_fn(|| a.alloc()).count())
                    .join()
                    .unwrap()
            });
            assert_eq!(again, n as usize);
        }
    }

    #[test]
    fn injected_failures() {
        let a = FrameAllocator::new(4 * PAGE_SIZE).unwrap();
        a.set_failure_rate(1.0);
        assert!(a.alloc().is_none());
        a.set_failure_rate(0.0);
        assert!(a.alloc().is_some());
    }
}
