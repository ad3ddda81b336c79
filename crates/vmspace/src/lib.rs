//! vmspace: a virtual-memory subsystem in user space whose page faults do not
//! serialize on one address-space-wide lock.
//!
//! An [`AddressSpace`] holds VMAs in a range tree read without locks
//! (`vmspace-tree`), a software 4-level page table with split PTE locks, and
//! frames from a [`FrameAllocator`] arena. Threads touch its memory through
//! [`Cpu`] handles; a missing translation runs the fault path of the address
//! space's [`Strategy`]: the address-space lock (`mmap-lock`), one VMA's lock
//! (`per-vma`), or no lock and sequence-count validation (`speculative`).
//! Semantics follow Linux: `mmap`, `munmap`, `mprotect`, `mremap` and
//! `madvise(MADV_DONTNEED)` split and merge VMAs and fail exactly as Linux 6.18
//! does.
//!
//! Where things are: the lock order in [`sync`]; the fault path in `fault.rs`;
//! the access sections and shootdown (the safety rule: after a call that
//! removes a translation returns, no `Cpu` uses it) in `cpu.rs`; the rule that
//! makes concurrent access to user memory sound in `frame.rs`.
//!
//! Quick start (`examples/quick_start.rs`, run as this doctest too): four
//! threads fault into one mapping at once, each through its own [`Cpu`]; then
//! an `mprotect` splits the VMA and an `munmap` takes the memory away.
//!
//! ```
#![doc = include_str!("../examples/quick_start.rs")]
//! ```

#![deny(missing_docs)]

mod config;
mod cpu;
pub mod debug;
mod error;
mod fault;
mod fork;
mod frame;
mod inspect;
mod madvise;
mod mirror;
mod notifier;
mod object;
mod pagetable;
mod pin;
mod reclaim;
mod remap;
mod rmap;
mod space;
mod stats;
mod swap;
mod swapcache;
pub mod sync;
mod tlb;
mod vma;
mod vmacache;
mod writer;

pub use config::{ArenaConfig, Config, ConfigError, MapFlags, RemapFlags, Strategy};
pub use cpu::Cpu;
pub use error::{Access, Errno, Fault, FaultCause};
pub use frame::{ArenaError, FrameAllocator, FrameId, Owner, PAGE_SIZE, POISON};
#[doc(hidden)]
pub use inspect::PteInfo;
pub use madvise::Advice;
pub use mirror::{Device, Mirror, MirrorConfig, MirrorStats};
pub use notifier::{Busy, MmuNotifier, NotifierRange, ResolvedPage, Subscription};
pub use object::{AnonObject, BackingStore, DiskStore, File, FillError, MemoryStore, ZeroStore};
pub use pagetable::{Event, ADDR_LIMIT, TASK_SIZE};
pub use pin::PinnedPages;
pub use reclaim::{ReclaimConfig, ReclaimStats};
pub use rmap::UnmapError;
pub use space::{AddressSpace, MapInfo, MapSource, MAX_FILE_PAGES, STACK_GUARD_GAP};
pub use stats::FaultStats;
pub use swap::{SlotError, SwapConfig, SwapDevice, SwapError, SwapSlot, SwapStats, MAX_SLOTS};
pub use sync::rmap_lock::{RmapLockKind, RmapLockStats};
pub use vma::Prot;
