//! `Cpu`: how a thread touches user memory, and the shootdown protocol that
//! makes "after munmap returns, nobody uses the old translation" true.
//!
//! # Access sections
//!
//! A `Cpu` keeps no translation between accesses (per-`Cpu` TLBs come later).
//! Each access is a short *access section*: `seq` becomes odd, the PTE is read
//! and the frame accessed, `seq` becomes even. Nothing blocks inside a section;
//! a missing or insufficient PTE ends the section and runs the fault path
//! outside it, then the access starts over.
//!
//! # Shootdown
//!
//! A writer that clears a PTE or removes a permission calls
//! [`CpuRegistry::shootdown`] before it drops the frame's reference or returns
//! to its caller: for every registered `Cpu` whose `seq` is odd, it waits until
//! `seq` changes. The Cpu side is `seq += 1; load PTE`, the writer side is
//! `store PTE; read seq`, a store-buffering pattern. The writer reads `seq`
//! with a read-modify-write (`fetch_add(0)`), so the two meet in `seq`'s
//! modification order: if the Cpu's increment comes first, the writer sees
//! the section (and waits for it to end); otherwise the increment reads from
//! the writer's RMW, which publishes the cleared PTE (release/acquire), so the
//! Cpu's PTE load sees it. This does not rely on a SeqCst total order (loom
//! reported a store through a shot-down entry with a plain SeqCst load, which
//! loom models as acquire). The Cpu's exit is a Release increment and the
//! writer's wait an Acquire load, so the Cpu's last access to the frame
//! happens before the writer frees it.
//!
//! Cost: a shootdown writes the cache line of every registered `Cpu` (a real
//! shootdown interrupts them instead). Idle `Cpu`s (even `seq`) are not waited
//! for: this is where isolated CPUs will be spared later.
//!
//! Locks: the registry mutex is a leaf (taken under the address-space lock or a
//! VMA lock, nothing under it).

use crate::error::{Access, Fault};
use crate::frame::{FrameId, PAGE_SIZE};
use crate::pagetable::Pte;
use crate::space::AddressSpace;
use crate::sync::{fence, spin_wait, AtomicU64, Mutex, Ordering};
use crate::vma::SeqHint;
use crate::vmacache::VmaCache;
use std::cell::RefCell;
use std::sync::Arc;

/// Per-`Cpu` state shared with writers: the access-section counter and the
/// fault counters (written by the owning thread only).
pub(crate) struct CpuState {
    seq: AtomicU64,
    pub(crate) stats: crate::stats::FaultCounters,
}

/// The `Cpu`s of one address space.
pub(crate) struct CpuRegistry {
    cpus: Mutex<Vec<Arc<CpuState>>>,
    /// Counters of `Cpu`s that were dropped.
    pub(crate) retired: crate::stats::FaultCounters,
}

impl Default for CpuRegistry {
    fn default() -> Self {
        CpuRegistry {
            cpus: Mutex::new(Vec::new()),
            retired: Default::default(),
        }
    }
}

impl CpuRegistry {
    fn register(&self) -> Arc<CpuState> {
        let s = Arc::new(CpuState {
            seq: AtomicU64::new(0),
            stats: Default::default(),
        });
        self.cpus.lock().push(s.clone());
        s
    }

    fn unregister(&self, state: &Arc<CpuState>) {
        self.retired.add(&state.stats);
        self.cpus.lock().retain(|s| !Arc::ptr_eq(s, state));
    }

    /// Waits until no `Cpu` can still use a translation removed before this
    /// call. See the module documentation.
    pub(crate) fn shootdown(&self) {
        fence(Ordering::SeqCst);
        let cpus = self.cpus.lock();
        for c in cpus.iter() {
            // A read-modify-write, not a load (see the module documentation).
            let s = c.seq.fetch_add(0, Ordering::SeqCst);
            if s & 1 == 1 {
                let mut spins = 0u32;
                while c.seq.load(Ordering::Acquire) == s {
                    spin_wait(&mut spins);
                }
            }
        }
    }

    /// Sum of the counters of all `Cpu`s, live and dropped.
    pub(crate) fn totals(&self) -> crate::stats::FaultStats {
        let mut t = self.retired.snapshot();
        for c in self.cpus.lock().iter() {
            t += c.stats.snapshot();
        }
        t
    }
}

/// Whether a new `Cpu`'s VMA cache is on (see `vmacache.rs`). On: one thread,
/// page_fault1 with and without a read before each write, 1 or 1001 VMAs,
/// faults took 5-37% less time with it on both lockless strategies
/// (`examples/vma_cache.rs`). The mmap-lock strategy does not use it.
const VMA_CACHE_DEFAULT: bool = true;

/// A thread's handle for touching the memory of one address space. `Send`,
/// not `Sync`: one per thread that touches memory.
pub struct Cpu {
    space: Arc<AddressSpace>,
    state: Arc<CpuState>,
    /// Recently found VMAs (`vmacache.rs`); used by this thread only.
    cache: RefCell<VmaCache>,
    /// The last address-space lock sequence this `Cpu` read (`vma.rs`).
    hint: SeqHint,
}

impl Cpu {
    pub(crate) fn new(space: Arc<AddressSpace>) -> Cpu {
        let state = space.cpus().register();
        Cpu {
            space,
            state,
            cache: RefCell::new(VmaCache::new(VMA_CACHE_DEFAULT)),
            hint: SeqHint::default(),
        }
    }

    /// Turns this `Cpu`'s VMA cache on or off (see `VMA_CACHE_DEFAULT`).
    pub fn set_vma_cache(&mut self, on: bool) {
        let mut c = self.cache.borrow_mut();
        *c = VmaCache::new(on);
    }

    /// The address space this `Cpu` is bound to.
    pub fn space(&self) -> &Arc<AddressSpace> {
        &self.space
    }

    /// Runs `f` on the frame and in-page offset that `addr` translates to for
    /// `access`, inside an access section, faulting the page in as needed.
    #[inline]
    fn with_frame<R>(
        &self,
        addr: u64,
        access: Access,
        f: impl Fn(FrameId, u64) -> R,
    ) -> Result<R, Fault> {
        let need = match access {
            Access::Read => Pte::READ,
            Access::Write => Pte::WRITE,
            Access::Fetch => Pte::EXEC,
        } | Pte::PRESENT;
        loop {
            self.enter();
            let pte = self.space.page_table().read_for_access(addr);
            if pte.has(need) {
                self.space.frames().access_point(pte.frame());
                let r = f(pte.frame(), addr & (PAGE_SIZE - 1));
                self.exit();
                return Ok(r);
            }
            self.exit();
            self.space
                .handle_fault(&self.state.stats, &self.cache, &self.hint, addr, access)?;
        }
    }

    #[inline]
    fn enter(&self) {
        // SeqCst RMW: ordered before the PTE load (see the module documentation).
        self.state.seq.fetch_add(1, Ordering::SeqCst);
    }

    #[inline]
    fn exit(&self) {
        // Release: the access happens before a writer that sees the new value.
        self.state.seq.fetch_add(1, Ordering::Release);
    }

    /// Loads a byte.
    pub fn read_u8(&mut self, addr: u64) -> Result<u8, Fault> {
        let frames: &crate::frame::FrameAllocator = self.space.frames();
        self.with_frame(addr, Access::Read, |f, off| frames.load_u8(f, off))
    }

    /// Stores a byte.
    pub fn write_u8(&mut self, addr: u64, value: u8) -> Result<(), Fault> {
        let frames: &crate::frame::FrameAllocator = self.space.frames();
        self.with_frame(addr, Access::Write, |f, off| frames.store_u8(f, off, value))
    }

    /// Fetches an instruction byte (needs execute permission).
    pub fn fetch_u8(&mut self, addr: u64) -> Result<u8, Fault> {
        let frames: &crate::frame::FrameAllocator = self.space.frames();
        self.with_frame(addr, Access::Fetch, |f, off| frames.load_u8(f, off))
    }

    /// Loads an aligned 8-byte word (never torn). An unaligned address is a
    /// protection fault (as a strict-alignment CPU would raise).
    pub fn read_u64(&mut self, addr: u64) -> Result<u64, Fault> {
        self.check_aligned(addr, Access::Read)?;
        let frames: &crate::frame::FrameAllocator = self.space.frames();
        self.with_frame(addr, Access::Read, |f, off| {
            frames.word(f, off).load(Ordering::Relaxed)
        })
    }

    /// Stores an aligned 8-byte word (never torn).
    pub fn write_u64(&mut self, addr: u64, value: u64) -> Result<(), Fault> {
        self.check_aligned(addr, Access::Write)?;
        let frames: &crate::frame::FrameAllocator = self.space.frames();
        self.with_frame(addr, Access::Write, |f, off| {
            frames.word(f, off).store(value, Ordering::Relaxed)
        })
    }

    /// Atomic compare-exchange on an aligned word: `Ok(previous)` is the value
    /// found (equal to `current` on success). SeqCst, as `lock cmpxchg`.
    pub fn compare_exchange_u64(
        &mut self,
        addr: u64,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, Fault> {
        self.check_aligned(addr, Access::Write)?;
        let frames: &crate::frame::FrameAllocator = self.space.frames();
        self.with_frame(addr, Access::Write, |f, off| {
            frames
                .word(f, off)
                .compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
        })
    }

    /// Atomic fetch-add on an aligned word; returns the previous value.
    pub fn fetch_add_u64(&mut self, addr: u64, value: u64) -> Result<u64, Fault> {
        self.check_aligned(addr, Access::Write)?;
        let frames: &crate::frame::FrameAllocator = self.space.frames();
        self.with_frame(addr, Access::Write, |f, off| {
            frames.word(f, off).fetch_add(value, Ordering::SeqCst)
        })
    }

    /// Atomic swap on an aligned word; returns the previous value.
    pub fn swap_u64(&mut self, addr: u64, value: u64) -> Result<u64, Fault> {
        self.check_aligned(addr, Access::Write)?;
        let frames: &crate::frame::FrameAllocator = self.space.frames();
        self.with_frame(addr, Access::Write, |f, off| {
            frames.word(f, off).swap(value, Ordering::SeqCst)
        })
    }

    /// Reads `buf.len()` bytes from `addr` (byte by byte across pages). On a
    /// fault, the bytes before the faulting address have been read.
    pub fn read_bytes(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fault> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.read_u8(addr.wrapping_add(i as u64))?;
        }
        Ok(())
    }

    /// Writes `data` at `addr`. On a fault, the bytes before the faulting
    /// address have been written.
    pub fn write_bytes(&mut self, addr: u64, data: &[u8]) -> Result<(), Fault> {
        for (i, &b) in data.iter().enumerate() {
            self.write_u8(addr.wrapping_add(i as u64), b)?;
        }
        Ok(())
    }

    fn check_aligned(&self, addr: u64, access: Access) -> Result<(), Fault> {
        if !addr.is_multiple_of(8) {
            return Err(Fault {
                addr,
                access,
                cause: crate::error::FaultCause::Protection,
            });
        }
        Ok(())
    }
}

impl Drop for Cpu {
    fn drop(&mut self) {
        self.space.cpus().unregister(&self.state);
    }
}
