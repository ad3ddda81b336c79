//! Switches that break the concurrency protocol on purpose, so that a checker
//! (`vmspace torture`, the stress tests) can prove that it notices. A checker
//! that has never caught anything proves nothing.
//!
//! The switches exist only in builds with debug assertions (`cargo test`,
//! `cargo build` without `--release`); in release builds
//! [`break_protocol`] refuses and the checks compile to `false`. Nothing
//! turns a switch on by default. The switch is process-wide (a relaxed atomic
//! read on the paths it breaks): set it before the address spaces it should
//! affect start working.

use std::sync::atomic::{AtomicU8, Ordering};

/// A way to break the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ProtocolBreak {
    /// Speculative faults install their entry without re-validating the
    /// sequence count under the PTE lock: a fault racing `munmap` or
    /// `mprotect` can install into a range that is gone or that lost a
    /// permission.
    SkipRevalidation = 1,
    /// Unmapping frees the frames before the TLB shootdown: a `Cpu` still
    /// inside an access section may read or write a frame that was freed (and
    /// poisoned, or reused).
    EarlyFree = 2,
    /// `fork` copies the parent without write-locking its VMAs: a parent
    /// fault can give a VMA its anonymous object after the child's copy of
    /// the VMA was made without one, and the child then maps the fault's
    /// page with no reverse-map record (Linux 6.4's fork corruption).
    ForkWithoutVmaLock = 3,
    /// Reclaim evicts dirty page-cache pages without writing them back
    /// (and without looking at their dirty mark): a write not yet written
    /// back is lost, and the page reads as the store's older content.
    EvictDirty = 4,
    /// Swap-out frees the frame without writing it to its slot: a swap-in
    /// reads whatever the slot held before.
    SwapSkipWrite = 5,
    /// Reverse-map walks tell MMU notifiers that they may sleep under the
    /// spinning `rwlock` rmap lock too: a notifier that sleeps there is the
    /// bug seed 003 is about, and debug builds panic naming the path
    /// (`sync::rmap_lock::assert_may_sleep`).
    SleepUnderRwlock = 6,
    /// `munmap` removes entries without telling the MMU notifiers: a
    /// secondary MMU keeps translations to frames that are freed.
    SkipNotifier = 7,
}

impl std::str::FromStr for ProtocolBreak {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip-revalidation" => Ok(ProtocolBreak::SkipRevalidation),
            "early-free" => Ok(ProtocolBreak::EarlyFree),
            "fork-without-vma-lock" => Ok(ProtocolBreak::ForkWithoutVmaLock),
            "evict-dirty" => Ok(ProtocolBreak::EvictDirty),
            "swap-skip-write" => Ok(ProtocolBreak::SwapSkipWrite),
            "sleep-under-rwlock" => Ok(ProtocolBreak::SleepUnderRwlock),
            "skip-notifier" => Ok(ProtocolBreak::SkipNotifier),
            _ => Err(format!(
                "unknown protocol break `{s}` (expected skip-revalidation, early-free, \
                 fork-without-vma-lock, evict-dirty, swap-skip-write, sleep-under-rwlock \
                 or skip-notifier)"
            )),
        }
    }
}

static BROKEN: AtomicU8 = AtomicU8::new(0);

/// Turns a break on (`Some`) or every break off (`None`). Returns `false`, and
/// changes nothing, in builds without debug assertions.
pub fn break_protocol(b: Option<ProtocolBreak>) -> bool {
    if !cfg!(debug_assertions) {
        return false;
    }
    BROKEN.store(b.map_or(0, |b| b as u8), Ordering::Relaxed);
    true
}

/// Whether `b` is on.
#[inline]
pub(crate) fn broken(b: ProtocolBreak) -> bool {
    cfg!(debug_assertions) && BROKEN.load(Ordering::Relaxed) == b as u8
}
