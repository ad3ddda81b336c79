//! Fault injection: which failures torture makes happen, and when.
//!
//! Three kinds: a frame allocation fails (the access that needed the frame
//! faults out of memory), a store read fails (the access that needed the
//! page faults with an I/O error), a store write fails (`msync` returns
//! `EIO`; the page stays dirty and is written by a later sync). Swap reads
//! and writes fail with store reads and writes. Each kind fails at the
//! run's rate while it is *armed*.
//!
//! Every kind armed at once would hide the store reads behind the frame
//! allocations: a page is read into a fresh frame, so with allocations
//! failing, the reads that would fail mostly never happen. The kinds are
//! therefore armed by phases that change at each checkpoint
//! ([`Armed::phase`]): all three, then each alone. The checker knows each
//! epoch's phase and allows out-of-memory and I/O faults only in an epoch
//! that armed their kind.

use std::sync::atomic::{AtomicU64, Ordering};

use vmspace::FrameAllocator;

/// The kinds armed during an epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Armed {
    /// Frame allocations fail.
    pub(super) alloc: bool,
    /// Store reads fail.
    pub(super) read: bool,
    /// Store writes fail.
    pub(super) write: bool,
}

impl Armed {
    /// Nothing armed.
    pub(super) const NONE: Armed = Armed {
        alloc: false,
        read: false,
        write: false,
    };
    /// Every kind armed.
    pub(super) const ALL: Armed = Armed {
        alloc: true,
        read: true,
        write: true,
    };

    /// The kinds armed in the `n`th epoch of a run with injection on: all
    /// three, then frame allocations alone, store reads alone, store writes
    /// alone, and again.
    pub(super) fn phase(n: u64) -> Armed {
        let only = |alloc, read, write| Armed { alloc, read, write };
        match n % 4 {
            0 => Armed::ALL,
            1 => only(true, false, false),
            2 => only(false, true, false),
            _ => only(false, false, true),
        }
    }

    /// Sets the frame allocator's and the stores' rates: `rate` for the
    /// armed kinds, 0 for the others.
    pub(super) fn apply(self, rate: f64, frames: &FrameAllocator, stores: &Injector) {
        let rate_if = |armed: bool| if armed { rate } else { 0.0 };
        frames.set_failure_rate(rate_if(self.alloc));
        stores.set(rate_if(self.read), rate_if(self.write));
        // Swap I/O fails with the store I/O of the same direction: a failed
        // swap read is an I/O fault, which the checker allows only then; a
        // failed swap write is invisible (the page stays in memory).
        if let Some(dev) = frames.swap_device() {
            dev.set_failure_rates(rate_if(self.write), rate_if(self.read));
        }
    }
}

/// A failure rate, in 1/2^32 units (0: never).
#[derive(Default)]
struct Rate(AtomicU64);

impl Rate {
    fn set(&self, p: f64) {
        let units = (p.clamp(0.0, 1.0) * (1u64 << 32) as f64) as u64;
        self.0.store(units, Ordering::Relaxed);
    }
}

/// The failure switch of the stores: a rate for reads and one for writes,
/// and how many of each it made fail.
pub(super) struct Injector {
    read_rate: Rate,
    write_rate: Rate,
    /// A xorshift state. Threads race on it (load, step, store), which only
    /// repeats a draw now and then.
    state: AtomicU64,
    reads_failed: AtomicU64,
    writes_failed: AtomicU64,
}

impl Injector {
    /// A switch that fails nothing yet, its draws seeded by `seed`.
    pub(super) fn new(seed: u64) -> Injector {
        Injector {
            read_rate: Rate::default(),
            write_rate: Rate::default(),
            state: AtomicU64::new(seed | 1),
            reads_failed: AtomicU64::new(0),
            writes_failed: AtomicU64::new(0),
        }
    }

    /// Makes a fraction `read` of store reads and `write` of store writes
    /// fail.
    pub(super) fn set(&self, read: f64, write: f64) {
        self.read_rate.set(read);
        self.write_rate.set(write);
    }

    /// Store reads and store writes made to fail so far.
    pub(super) fn failed(&self) -> (u64, u64) {
        (
            self.reads_failed.load(Ordering::Relaxed),
            self.writes_failed.load(Ordering::Relaxed),
        )
    }

    pub(super) fn read_fails(&self) -> bool {
        self.fails(&self.read_rate, &self.reads_failed)
    }

    pub(super) fn write_fails(&self) -> bool {
        self.fails(&self.write_rate, &self.writes_failed)
    }

    /// One draw against `rate`, counted in `count` when it fails.
    fn fails(&self, rate: &Rate, count: &AtomicU64) -> bool {
        let rate = rate.0.load(Ordering::Relaxed);
        if rate == 0 {
            return false;
        }
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        let fails = (x >> 32) < rate;
        if fails {
            count.fetch_add(1, Ordering::Relaxed);
        }
        fails
    }
}
