//! `vmspace torture`: random concurrent operations on one address space per
//! strategy, with fault injection, judged by a checker that knows what every
//! word of memory may hold.
//!
//! # The run
//!
//! `threads` threads share a window of [`PAGES`] pages at [`BASE`], small on
//! purpose so that operations collide. Each thread draws operations at random:
//! loads and stores of the first word of a page (through its own
//! [`vmspace::Cpu`]), `mmap` (fixed or fixed-noreplace, anonymous or file,
//! private or shared), `munmap`, `mprotect`, `mremap` (in place, or moved
//! within the window), `madvise(DONTNEED)`, `msync`, and now and then
//! `fork` (the forking thread exercises the child, which is judged too; see
//! `fork.rs`). The mapping changes
//! are vmscript ops ([`crate::script::Op`]) applied by
//! [`crate::backend::apply`], the function `replay` uses. Loads and stores
//! take no lock of the checker, so they race every mapping change; mapping
//! changes take the checker's model lock around the call (they are
//! serialized by the address space's write lock anyway), so that the model
//! sees them in the order they happened.
//!
//! # The checker (interval semantics)
//!
//! A global clock (one `SeqCst` counter) stamps the start and the end of every
//! operation. The model keeps the mapping state after each mapping change: for
//! every page, the *cell* it shows (a unit of memory content: a private page,
//! or a page of a file or shared-memory object, identified across `mremap`
//! moves) and its protection. An access whose interval is `[s, e]` may have
//! seen any state current at some moment of that interval.
//!
//! * A store writes a value that names its thread and sequence number. It
//!   lands in one of the cells its candidate states allow writing to (exactly
//!   one: a *definite* write).
//! * A load of value `v` is legitimate if some candidate cell holds an event
//!   with value `v` (a store, the cell's initial content: zero or the file's
//!   word, a `DONTNEED` reset) that began before the load ended and that no
//!   definite event on the same cell superseded (began after it ended and
//!   ended before the load began). Any other value (poison of a freed frame,
//!   another cell's data, a failed store's value) is a violation.
//! * A fault is legitimate if some candidate state allows it: no mapping,
//!   a protection that forbids the access, a page past the end of its object,
//!   and, only in an epoch that armed the kind of failure behind it,
//!   out-of-memory or an I/O error.
//!
//! # Checkpoints and memory
//!
//! An epoch lasts `epoch`, or [`EPOCH_OPS`] operations if that comes first.
//! Then the threads stop at a barrier, the checker judges the epoch's
//! accesses, and keeps only what a later access can be judged against: the
//! current state, and the values still legitimate in the cells that the
//! window or a live object shows. So what the checker holds is bounded by
//! the window and by [`EPOCH_OPS`], however long the run.
//!
//! # Injection
//!
//! Frame allocations, store reads and store writes fail at the `inject`
//! rate while their kind is armed; the kinds are armed by phases that change
//! at each checkpoint (see `inject.rs`), so that each kind is reached.
//!
//! # The end
//!
//! At the end, injection is turned off, the files are synced, and the words in
//! their backing stores must be legitimate final contents (no write lost);
//! when everything is dropped, every frame must be back in the allocator.
//!
//! # Files
//!
//! `draw.rs` draws the operations, `worker.rs` does them, `model.rs` records
//! the mapping states and cell values, `judge.rs` judges an epoch, `run.rs`
//! runs the checkpoints and the final checks, `fork.rs` forks and records
//! what the child saw; `files.rs` and `store.rs` are
//! the files and their stores, `inject.rs` the injected failures.

use std::time::Duration;

use vmspace::{FaultStats, RmapLockKind, Strategy};

mod draw;
mod files;
mod fork;
mod inject;
mod judge;
mod model;
mod run;
mod store;
mod worker;

pub use run::{run, run_with};

/// Base address of the window the threads work in.
pub const BASE: u64 = crate::backend::WINDOW_BASE;
/// Pages in the window.
pub const PAGES: u64 = 64;
/// Pages of each data file (mapped shared, written).
const DATA_PAGES: u64 = 32;
/// Pages of the read-only file (mapped private; mappings may pass its end).
const RO_PAGES: u64 = 24;
/// Frames in the arena: the window, the page caches (one per open of the
/// read-only file still mapped), and room to spare.
const ARENA_FRAMES: u64 = 4096;
/// The top byte of a value written by a store.
const STORE_TAG: u64 = 0xA5 << 56;
/// The top byte of a file's initial word.
const FILE_TAG: u64 = 0xF1 << 56;
/// Operations after which an epoch ends, however long `Options::epoch`:
/// this bounds what the checker holds between two checkpoints.
pub const EPOCH_OPS: u64 = 16_384;
/// Violations printed in full (the rest are counted).
const SHOWN: usize = 10;

/// What a run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seconds of random operations (for this strategy).
    pub seconds: f64,
    /// Threads.
    pub threads: usize,
    /// Seed of every random choice (thread `i` uses `seed + i`).
    pub seed: u64,
    /// Probability that an armed kind of failure happens (frame allocation,
    /// store read, store write; see the module documentation).
    pub inject: f64,
    /// Time between checkpoints.
    pub epoch: Duration,
    /// Stop at the first checkpoint after this many operations (`None`: run
    /// for `seconds`, which also bounds a run with a limit).
    pub max_ops: Option<u64>,
    /// Swap on a file in this directory, and a reclaimer thread that keeps
    /// the arena's pages going out to it and coming back (`None`: no swap,
    /// no reclaim).
    pub swap_dir: Option<std::path::PathBuf>,
    /// Device mirrors of the space (`vmspace::Mirror`), each with a device
    /// thread that loads and stores through it beside the workers, judged
    /// like them; their invalidations sleep now and then.
    pub mirrors: usize,
}

/// What the mirrors and their devices did, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorTotals {
    /// Mirrors (one device thread each).
    pub mirrors: usize,
    /// Device loads and stores that completed.
    pub device_accesses: u64,
    /// Device faults (mirror misses resolved through the CPU page table).
    pub device_faults: u64,
    /// Device faults that resolved again because an invalidation raced.
    pub retries: u64,
    /// Invalidations that slept (a device TLB flush).
    pub invalidations_slept: u64,
    /// Non-blockable invalidations the mirrors answered busy.
    pub busy: u64,
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// The strategy.
    pub strategy: Strategy,
    /// The arena's rmap lock kind.
    pub rmap_lock: RmapLockKind,
    /// Operations done (accesses and calls).
    pub ops: u64,
    /// Loads and stores.
    pub accesses: u64,
    /// Mapping changes (`mmap`, `munmap`, `mprotect`, `mremap`, `madvise`).
    pub mapping_ops: u64,
    /// Forks (each child exercised, checked and dropped).
    pub forks: u64,
    /// Checkpoints.
    pub epochs: u64,
    /// Faults by path.
    pub stats: FaultStats,
    /// The first violations, in words.
    pub violations: Vec<String>,
    /// All violations.
    pub violation_count: u64,
    /// Frames still allocated after everything was dropped.
    pub leaked_frames: usize,
    /// Whether the run had swap and a reclaimer.
    pub swap: bool,
    /// Pages written to swap and swap-ins from the swap cache.
    pub swap_outs: u64,
    /// Swap-ins (pages mapped from the swap cache).
    pub swap_ins: u64,
    /// Pages reclaimed (by the reclaimer thread and by direct reclaim).
    pub reclaimed: u64,
    /// Swap slots still in use after everything was dropped.
    pub leaked_slots: u64,
    /// What the swap references check found wrong at the checkpoints, if
    /// anything (counted as violations too).
    pub swap_check: Option<String>,
    /// Failed accesses by cause: no mapping, protection, past the end, I/O
    /// error, out of memory.
    pub fault_causes: [u64; 5],
    /// Injected failures that happened, by kind.
    pub injected: Injected,
    /// Pages whose cell the model lost track of (a partly failed call); their
    /// content is not checked.
    pub unknown_pages: u64,
    /// Records the checker held after its last checkpoint (see
    /// [`Report::peak_records`]).
    pub records: usize,
    /// The most records the checker held at once, counted at each checkpoint
    /// once the epoch is judged: mapping states, cells, value events, shared
    /// pages and objects of its model, and the epoch's accesses.
    pub peak_records: usize,
    /// The mirrors' counters.
    pub mirrors: MirrorTotals,
}

/// Injected failures that happened, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Frame allocations made to fail (the allocator's count; a fault
    /// reclaims and retries after one, so the out-of-memory faults, in
    /// `fault_causes`, are fewer).
    pub alloc: u64,
    /// Store reads made to fail.
    pub read: u64,
    /// Store writes made to fail.
    pub write: u64,
}

impl Report {
    fn mirrors_summary(&self) -> String {
        let m = &self.mirrors;
        if m.mirrors == 0 {
            return "no mirrors".to_string();
        }
        format!(
            "mirrors {} device accesses {} device faults {} retries {} invalidations slept {} busy {}",
            m.mirrors, m.device_accesses, m.device_faults, m.retries, m.invalidations_slept, m.busy
        )
    }

    /// Whether the run found nothing wrong.
    pub fn clean(&self) -> bool {
        self.violation_count == 0 && self.leaked_frames == 0 && self.leaked_slots == 0
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "{}: {} ops ({} accesses, {} mapping changes, {} forks), {} checkpoints, faults lockless {} locked {} fallback {} retry {}, failed accesses segv {} prot {} bus {} io {} oom {}, injected failures alloc {} read {} write {}, {} violations, {} leaked frames, {} unchecked pages, {}, {}, rmap lock {}",
            self.strategy.name(),
            self.ops,
            self.accesses,
            self.mapping_ops,
            self.forks,
            self.epochs,
            s.lockless,
            s.locked,
            s.fallback,
            s.retry,
            self.fault_causes[0],
            self.fault_causes[1],
            self.fault_causes[2],
            self.fault_causes[3],
            self.fault_causes[4],
            self.injected.alloc,
            self.injected.read,
            self.injected.write,
            self.violation_count,
            self.leaked_frames,
            self.unknown_pages,
            if self.swap {
                format!(
                    "swap-outs {} swap-ins {} reclaimed {} leaked slots {}",
                    self.swap_outs, self.swap_ins, self.reclaimed, self.leaked_slots
                )
            } else {
                "no swap".to_string()
            },
            self.mirrors_summary(),
            self.rmap_lock.name(),
        )
    }
}
