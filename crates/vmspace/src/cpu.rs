//! `Cpu`: how a thread touches user memory, in access sections that the
//! shootdown (`tlb.rs`) waits for.
//!
//! # Access sections
//!
//! A `Cpu` keeps no translation between accesses (per-`Cpu` TLBs come later).
//! Each access is a short *access section* (`tlb.rs`): the `Cpu`'s section
//! counter becomes odd, the PTE is read (its accessed bit, and for a write
//! its dirty bit, set if missing, as hardware does: `pagetable.rs`) and the
//! frame accessed, the counter becomes even. Nothing blocks inside a section;
//! a missing or insufficient PTE ends the section and runs the fault path
//! outside it, then the access starts over.
//!
//! # Shootdown
//!
//! The writer's side, and why an access section cannot use a translation
//! removed before a shootdown, is in `tlb.rs`.

use crate::error::{Access, Fault};
use crate::frame::{FrameId, PAGE_SIZE};
use crate::pagetable::Pte;
use crate::space::AddressSpace;
use crate::sync::Ordering;
use crate::tlb::CpuState;
use crate::vma::SeqHint;
use crate::vmacache::VmaCache;
use std::cell::RefCell;
use std::sync::Arc;

/// Whether a new `Cpu`'s VMA cache is on (see `vmacache.rs`): on, because
/// lockless faults are cheaper with it (`docs/decisions.md`). The mmap-lock
/// strategy does not use it.
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
        let (need, used) = Pte::bits_for(access);
        loop {
            self.enter();
            let pte = self.space.page_table().read_for_access(addr);
            if pte.has(need) {
                if !pte.has(used)
                    && !self.space.page_table().mark_used(addr, pte, used)
                    && access == Access::Write
                {
                    // The entry changed before its dirty bit was set: a
                    // store must not land through an entry seen clean
                    // (`pagetable.rs`, "PTE format"). Translate again.
                    self.exit();
                    continue;
                }
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
        self.state.enter();
    }

    #[inline]
    fn exit(&self) {
        self.state.exit();
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
