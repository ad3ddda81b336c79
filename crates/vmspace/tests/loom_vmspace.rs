//! Loom models of the fault protocols, run on the production code (every
//! atomic, lock and spin of `vmspace` comes from its `sync` shim, which is
//! loom's under `--cfg loom`; the page table has 8 entries a level there):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!   cargo test -p vmspace --release --test loom_vmspace
//! ```
//!
//! * `per_vma_fault_vs_mprotect`, `per_vma_fault_vs_munmap`: the per-VMA read
//!   try-lock racing a writer that write-marks the VMA;
//! * `speculative_fault_vs_munmap_and_mprotect`: validation of the VMA's lock word racing
//!   both kinds of page-table change;
//! * `vma_freed_only_after_readers_unpin` (both lockless strategies): a VMA
//!   detached and retired while a fault uses it under its epoch guard.
//!
//! After the threads finish, each model checks the page table itself
//! (`debug_ptes`), the memory content and the frame accounting. VMAs carry a
//! loom cell that faults read and `Drop` writes, so a VMA freed while a fault
//! may still use it is reported by loom itself.
#![cfg(loom)]

use loom::thread;
use std::sync::Arc;
use vmspace::{
    AddressSpace, Config, FaultCause, File, FrameAllocator, MapFlags, MapSource, Prot, Strategy,
    ZeroStore, ADDR_LIMIT, PAGE_SIZE, TASK_SIZE,
};

const P: u64 = PAGE_SIZE;
/// Start of the mappings: inside the 24-bit loom address space, two tables in.
const A: u64 = 0x10_0000;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

fn space(strategy: Strategy) -> Arc<AddressSpace> {
    let frames = Arc::new(FrameAllocator::new(8 * P).unwrap());
    AddressSpace::new(
        Config {
            strategy,
            max_map_count: 64,
            mmap_min_addr: P,
            mmap_base: TASK_SIZE,
            ..Config::default()
        },
        frames,
    )
    .unwrap()
}

fn map(s: &AddressSpace, addr: u64, pages: u64) {
    let flags = MapFlags {
        fixed: true,
        ..MapFlags::default()
    };
    let got = s.mmap(addr, pages * P, Prot::READ_WRITE, flags, MapSource::Anon);
    assert_eq!(got, Ok(addr));
}

/// Frames referenced by the page table, the zero frame excluded, counted once.
fn mapped_frames(s: &AddressSpace) -> usize {
    let mut f: Vec<_> = s
        .debug_ptes(0, ADDR_LIMIT)
        .into_iter()
        .map(|p| p.frame)
        .filter(|f| f.0 != 0)
        .collect();
    f.sort();
    f.dedup();
    f.len()
}

/// Per-VMA fault (a write: allocates a frame, sets the anonymous object)
/// racing `mprotect(READ)` of the same page. The fault runs on the old VMA
/// before the writer marks it (the writer then waits for it and downgrades
/// its entry), or sees the mark and falls back to the lock path, which runs
/// after the writer and fails with a protection fault. Never a writable entry
/// left in the read-only range.
#[test]
fn per_vma_fault_vs_mprotect() {
    model(|| {
        let s = space(Strategy::PerVma);
        map(&s, A, 1);
        let t = {
            let s = s.clone();
            thread::spawn(move || s.cpu().write_u8(A, 7))
        };
        s.mprotect(A, P, Prot::READ).unwrap();
        let r = t.join().unwrap();
        let ptes = s.debug_ptes(A, A + P);
        assert!(
            ptes.iter().all(|p| !p.write),
            "writable PTE after mprotect(READ): {ptes:?}"
        );
        let mut cpu = s.cpu();
        match r {
            Ok(()) => assert_eq!(cpu.read_u8(A), Ok(7)),
            Err(e) => {
                assert_eq!(e.cause, FaultCause::Protection);
                assert_eq!(cpu.read_u8(A), Ok(0));
            }
        }
        assert_eq!(
            cpu.write_u8(A, 1).unwrap_err().cause,
            FaultCause::Protection
        );
        drop(cpu);
        assert_eq!(s.frames().in_use(), mapped_frames(&s));
    });
}

/// Per-VMA fault racing `munmap` of its page: afterwards no entry in the
/// range, no frame leaked, and the fault either completed before the unmap or
/// reports that nothing is mapped.
#[test]
fn per_vma_fault_vs_munmap() {
    model(|| {
        let s = space(Strategy::PerVma);
        map(&s, A, 2);
        let t = {
            let s = s.clone();
            thread::spawn(move || s.cpu().write_u8(A, 7))
        };
        s.munmap(A, P).unwrap();
        let r = t.join().unwrap();
        if let Err(e) = r {
            assert_eq!(e.cause, FaultCause::NoMapping);
        }
        assert_eq!(
            s.debug_ptes(A, A + P),
            vec![],
            "PTE left in an unmapped range"
        );
        assert_eq!(s.frames().in_use(), mapped_frames(&s));
        assert_eq!(s.frames().in_use(), 0);
        assert_eq!(s.cpu().read_u8(A).unwrap_err().cause, FaultCause::NoMapping);
    });
}

/// Speculative faults on two pages racing `munmap` of the first and
/// `mprotect(READ)` of the second. The VMA already has its anonymous object
/// (page 2 was written), so the faults take the speculative path. Afterwards:
/// no entry in the unmapped page, no writable entry in the read-only page,
/// content consistent with the faults' results, and every allocated frame is
/// mapped (none leaked, none freed while mapped).
#[test]
fn speculative_fault_vs_munmap_and_mprotect() {
    model(|| {
        let s = space(Strategy::Speculative);
        map(&s, A, 3);
        s.cpu().write_u8(A + 2 * P, 1).unwrap();
        let t = {
            let s = s.clone();
            thread::spawn(move || {
                let mut cpu = s.cpu();
                let r0 = cpu.write_u8(A, 7);
                let r1 = cpu.write_u8(A + P, 8);
                (r0, r1)
            })
        };
        s.munmap(A, P).unwrap();
        s.mprotect(A + P, P, Prot::READ).unwrap();
        let (r0, r1) = t.join().unwrap();
        if let Err(e) = r0 {
            assert_eq!(e.cause, FaultCause::NoMapping);
        }
        assert_eq!(
            s.debug_ptes(A, A + P),
            vec![],
            "PTE left in an unmapped range"
        );
        let ptes = s.debug_ptes(A + P, A + 2 * P);
        assert!(
            ptes.iter().all(|p| !p.write),
            "writable PTE in a read-only range: {ptes:?}"
        );
        let mut cpu = s.cpu();
        match r1 {
            Ok(()) => assert_eq!(cpu.read_u8(A + P), Ok(8)),
            Err(e) => {
                assert_eq!(e.cause, FaultCause::Protection);
                assert_eq!(cpu.read_u8(A + P), Ok(0));
            }
        }
        assert_eq!(cpu.read_u8(A + 2 * P), Ok(1));
        drop(cpu);
        assert_eq!(s.frames().in_use(), mapped_frames(&s));
        let st = s.fault_stats();
        assert!(st.lockless + st.locked >= 1, "{st:?}");
    });
}

/// A lockless fault uses a VMA (under its epoch guard) while `munmap` takes
/// it out of the tree, detaches it and retires it. Loom reports a free that
/// is not ordered after the fault's use (the VMA's liveness cell); after both
/// finish the VMA is freed (no VMA object left alive) and no entry remains.
fn vma_freed_only_after_readers_unpin(strategy: Strategy) {
    model(move || {
        let s = space(strategy);
        map(&s, A, 1);
        // The anonymous object exists, so a speculative write stays lockless.
        s.cpu().write_u8(A, 1).unwrap();
        s.madvise_dontneed(A, P).unwrap();
        assert_eq!(vmspace::sync::live_objects(), 1);
        let t = {
            let s = s.clone();
            thread::spawn(move || s.cpu().write_u8(A, 7))
        };
        s.munmap(A, P).unwrap();
        if let Err(e) = t.join().unwrap() {
            assert_eq!(e.cause, FaultCause::NoMapping);
        }
        assert_eq!(
            vmspace::sync::live_objects(),
            0,
            "a detached VMA was never freed"
        );
        assert_eq!(s.debug_ptes(A, A + P), vec![]);
        assert_eq!(s.frames().in_use(), 0);
    });
}

#[test]
fn vma_freed_only_after_readers_unpin_per_vma() {
    vma_freed_only_after_readers_unpin(Strategy::PerVma);
}

#[test]
fn vma_freed_only_after_readers_unpin_speculative() {
    vma_freed_only_after_readers_unpin(Strategy::Speculative);
}

/// The shootdown: a `Cpu` stores to a mapped page (no fault: the entry is
/// there) while another thread unmaps the page and maps a read-only file page
/// at the same address. The arena has one frame, so the page cache reads the
/// file page into the frame just freed: if the shootdown let `munmap` return
/// while the store could still go through the old entry, the store would land
/// in the file's page. (The store cannot reach the new mapping legitimately:
/// it is read-only.) The page must read 0, before and after the store's
/// thread ends.
#[test]
fn shootdown_vs_access() {
    model(|| {
        let frames = Arc::new(FrameAllocator::new(P).unwrap());
        let file = File::new(1, Box::new(ZeroStore), frames.clone());
        let s = AddressSpace::new(
            Config {
                strategy: Strategy::PerVma,
                max_map_count: 64,
                mmap_min_addr: P,
                mmap_base: TASK_SIZE,
                ..Config::default()
            },
            frames,
        )
        .unwrap();
        map(&s, A, 1);
        let mut cpu = s.cpu();
        cpu.write_u8(A, 1).unwrap();
        let t = thread::spawn(move || {
            let r = cpu.write_u8(A, 7);
            drop(cpu);
            r
        });
        s.munmap(A, P).unwrap();
        let flags = MapFlags {
            fixed: true,
            ..MapFlags::default()
        };
        let src = MapSource::File { file, pgoff: 0 };
        assert_eq!(s.mmap(A, P, Prot::READ, flags, src), Ok(A));
        let mut me = s.cpu();
        assert_eq!(me.read_u8(A), Ok(0), "a store through a shot-down entry");
        let r = t.join().unwrap();
        assert_eq!(me.read_u8(A), Ok(0), "a store through a shot-down entry");
        if let Err(e) = r {
            assert!(
                matches!(e.cause, FaultCause::NoMapping | FaultCause::Protection),
                "{e:?}"
            );
        }
        drop(me);
        assert_eq!(s.frames().in_use(), 1);
    });
}
