//! Fault counters: where faults went. Each `Cpu` counts its own faults
//! (written by its thread only, Relaxed), so counting costs no shared cache
//! line; readers sum over the `Cpu`s of an address space.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one `Cpu`.
#[derive(Default)]
pub(crate) struct FaultCounters {
    lockless: AtomicU64,
    locked: AtomicU64,
    fallback: AtomicU64,
    retry: AtomicU64,
}

/// Which counter to bump.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    /// A fault completed without the address-space lock.
    Lockless,
    /// A fault completed under the address-space lock (all faults of the
    /// mmap-lock strategy, and fallbacks).
    Locked,
    /// A lockless attempt gave up and fell back to the address-space lock.
    Fallback,
    /// A fault started over (changed VMA, I/O wait, lost race).
    Retry,
}

impl FaultCounters {
    pub(crate) fn bump(&self, c: Counter) {
        let a = match c {
            Counter::Lockless => &self.lockless,
            Counter::Locked => &self.locked,
            Counter::Fallback => &self.fallback,
            Counter::Retry => &self.retry,
        };
        a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, other: &FaultCounters) {
        let o = other.snapshot();
        self.lockless.fetch_add(o.lockless, Ordering::Relaxed);
        self.locked.fetch_add(o.locked, Ordering::Relaxed);
        self.fallback.fetch_add(o.fallback, Ordering::Relaxed);
        self.retry.fetch_add(o.retry, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> FaultStats {
        FaultStats {
            lockless: self.lockless.load(Ordering::Relaxed),
            locked: self.locked.load(Ordering::Relaxed),
            fallback: self.fallback.load(Ordering::Relaxed),
            retry: self.retry.load(Ordering::Relaxed),
        }
    }
}

/// Fault counts of an address space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Faults completed without the address-space lock.
    pub lockless: u64,
    /// Faults completed under the address-space lock.
    pub locked: u64,
    /// Lockless attempts that fell back to the lock (also counted in `locked`
    /// when they completed there).
    pub fallback: u64,
    /// Faults that started over.
    pub retry: u64,
}

impl std::ops::AddAssign for FaultStats {
    fn add_assign(&mut self, o: FaultStats) {
        self.lockless += o.lockless;
        self.locked += o.locked;
        self.fallback += o.fallback;
        self.retry += o.retry;
    }
}
