//! Issue 13, the calls real programs make: `madvise` advices `MADV_FREE`,
//! `MADV_DONTFORK`/`DOFORK`, `MADV_WIPEONFORK`/`KEEPONFORK`,
//! `MADV_POPULATE_READ`/`WRITE`; `mlock`/`munlock`; `MAP_NORESERVE` and
//! `MAP_STACK`; committed-memory accounting across fork. The behaviour the
//! host shows (errors, splits, merges, what the child sees) is checked
//! against Linux by the vmscript differential scripts 18-25
//! (`crates/vmspace-cli/tests/scripts`); these tests check what only the
//! library shows: PTE bits, lazy-free marks, locked VMAs, counts.

use std::sync::Arc;
use vmspace::{
    AddressSpace, Advice, Config, Errno, File, FrameAllocator, MapFlags, MapSource, MemoryStore,
    Prot, Strategy, PAGE_SIZE,
};

const P: u64 = PAGE_SIZE;

fn arena() -> Arc<FrameAllocator> {
    Arc::new(FrameAllocator::new(16 << 20).unwrap())
}

fn space_with(frames: &Arc<FrameAllocator>, strategy: Strategy) -> Arc<AddressSpace> {
    let config = Config {
        strategy,
        ..Config::default()
    };
    AddressSpace::new(config, frames.clone()).unwrap()
}

fn space() -> Arc<AddressSpace> {
    space_with(&arena(), Strategy::PerVma)
}

fn map(space: &AddressSpace, pages: u64, prot: Prot, flags: MapFlags) -> u64 {
    space
        .mmap(0, pages * P, prot, flags, MapSource::Anon)
        .unwrap()
}

fn anon(space: &AddressSpace, pages: u64) -> u64 {
    map(space, pages, Prot::READ_WRITE, MapFlags::default())
}

fn shared() -> MapFlags {
    MapFlags {
        shared: true,
        ..MapFlags::default()
    }
}

fn file(frames: &Arc<FrameAllocator>) -> Arc<File> {
    let store = MemoryStore::new(16, |p, page| page[0] = p as u8 + 1);
    File::new(16, Box::new(store), frames.clone())
}

/// The number of VMAs meeting `[start, end)`.
fn vmas(space: &AddressSpace, start: u64, end: u64) -> usize {
    space
        .maps()
        .iter()
        .filter(|m| m.end > start && m.start < end)
        .count()
}

#[test]
fn madvise_free_cleans_private_pages_and_marks_them_lazy_free() {
    for strategy in [Strategy::MmapLock, Strategy::PerVma, Strategy::Speculative] {
        let frames = arena();
        let space = space_with(&frames, strategy);
        let a = anon(&space, 4);
        let mut cpu = space.cpu();
        for i in 0..3 {
            cpu.write_u8(a + i * P, 10 + i as u8).unwrap();
        }
        let before = space.debug_ptes(a, a + 4 * P);
        assert_eq!(before.len(), 3);
        assert!(before.iter().all(|p| p.dirty && p.write));
        space.madvise(a, 4 * P, Advice::Free).unwrap();
        let after = space.debug_ptes(a, a + 4 * P);
        assert_eq!(after.len(), 3, "{strategy:?}: the pages stay mapped");
        for p in &after {
            assert!(!p.dirty && !p.accessed, "{strategy:?}: {p:?} not cleaned");
            assert!(p.write, "{strategy:?}: MADV_FREE keeps write permission");
            assert!(frames.is_lazyfree(p.frame));
        }
        // Without memory pressure the data stays; a write dirties again.
        assert_eq!(cpu.read_u8(a + P).unwrap(), 11);
        cpu.write_u8(a + 2 * P, 99).unwrap();
        let p2 = space.debug_ptes(a + 2 * P, a + 3 * P);
        assert!(
            p2[0].dirty,
            "{strategy:?}: a write after MADV_FREE marks dirty"
        );
        assert_eq!(cpu.read_u8(a + 2 * P).unwrap(), 99);
        // A freed frame loses its mark.
        let f = after[0].frame;
        space.munmap(a, 4 * P).unwrap();
        drop(cpu);
        assert!(
            !frames.is_lazyfree(f),
            "{strategy:?}: freed frame still lazy-free"
        );
        space.check_invariants().unwrap();
    }
}

#[test]
fn madvise_free_leaves_pages_shared_with_a_child_and_refuses_other_memory() {
    let frames = arena();
    let parent = space_with(&frames, Strategy::PerVma);
    let a = anon(&parent, 2);
    let mut pc = parent.cpu();
    pc.write_u8(a, 1).unwrap();
    pc.write_u8(a + P, 2).unwrap();
    let child = parent.fork();
    // Page 1 is private to the parent again after a write; page 0 is
    // mapped by both.
    pc.write_u8(a + P, 3).unwrap();
    parent.madvise(a, 2 * P, Advice::Free).unwrap();
    let ptes = parent.debug_ptes(a, a + 2 * P);
    assert!(!frames.is_lazyfree(ptes[0].frame), "shared with the child");
    assert!(frames.is_lazyfree(ptes[1].frame), "mapped only here");
    assert_eq!(child.cpu().read_u8(a).unwrap(), 1);

    let s = parent
        .mmap(0, 2 * P, Prot::READ_WRITE, shared(), MapSource::Anon)
        .unwrap();
    assert_eq!(parent.madvise(s, 2 * P, Advice::Free), Err(Errno::EINVAL));
    let f = file(&frames);
    let fp = parent
        .mmap(
            0,
            2 * P,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::File { file: f, pgoff: 0 },
        )
        .unwrap();
    assert_eq!(parent.madvise(fp, 2 * P, Advice::Free), Err(Errno::EINVAL));
    assert_eq!(parent.madvise(a + 1, P, Advice::Free), Err(Errno::EINVAL));
    assert_eq!(parent.madvise(a, 0, Advice::Free), Ok(()));
}

#[test]
fn dontfork_and_wipeonfork_split_merge_and_shape_the_child() {
    let parent = space();
    let a = anon(&parent, 6);
    let mut pc = parent.cpu();
    for i in 0..6 {
        pc.write_u8(a + i * P, 1 + i as u8).unwrap();
    }
    parent.madvise(a + P, P, Advice::DontFork).unwrap();
    parent
        .madvise(a + 3 * P, 2 * P, Advice::WipeOnFork)
        .unwrap();
    assert_eq!(vmas(&parent, a, a + 6 * P), 5);
    let child = parent.fork();
    let mut cc = child.cpu();
    assert_eq!(cc.read_u8(a).unwrap(), 1);
    assert!(cc.read_u8(a + P).is_err(), "DONTFORK range in the child");
    assert_eq!(cc.read_u8(a + 2 * P).unwrap(), 3);
    assert_eq!(cc.read_u8(a + 3 * P).unwrap(), 0, "WIPEONFORK not wiped");
    assert_eq!(cc.read_u8(a + 4 * P).unwrap(), 0, "WIPEONFORK not wiped");
    assert_eq!(cc.read_u8(a + 5 * P).unwrap(), 6);
    // The child keeps WIPEONFORK (Linux keeps the flag), so its own child
    // gets the range wiped again.
    cc.write_u8(a + 3 * P, 42).unwrap();
    let grandchild = child.fork();
    assert_eq!(grandchild.cpu().read_u8(a + 3 * P).unwrap(), 0);
    // The parent's data is untouched.
    assert_eq!(pc.read_u8(a + 3 * P).unwrap(), 4);
    // Undone, the flags merge the VMAs back.
    parent.madvise(a, 6 * P, Advice::DoFork).unwrap();
    parent.madvise(a, 6 * P, Advice::KeepOnFork).unwrap();
    assert_eq!(vmas(&parent, a, a + 6 * P), 1);
    for s in [&parent, &child, &grandchild] {
        s.check_invariants().unwrap();
    }
}

#[test]
fn madvise_flag_errors_follow_linux() {
    let space = space();
    let a = anon(&space, 4);
    space.munmap(a + 2 * P, P).unwrap();
    // A hole: ENOMEM, the mapped parts changed anyway.
    assert_eq!(
        space.madvise(a, 4 * P, Advice::DontFork),
        Err(Errno::ENOMEM)
    );
    let child = space.fork();
    assert_eq!(vmas(&child, a, a + 4 * P), 0);
    let s = space
        .mmap(0, 2 * P, Prot::READ_WRITE, shared(), MapSource::Anon)
        .unwrap();
    assert_eq!(
        space.madvise(s, 2 * P, Advice::WipeOnFork),
        Err(Errno::EINVAL)
    );
    assert_eq!(space.madvise(s, 2 * P, Advice::DontFork), Ok(()));
    assert_eq!(space.madvise(s + 1, P, Advice::DoFork), Err(Errno::EINVAL));
    assert_eq!(
        space.madvise(s, u64::MAX, Advice::DoFork),
        Err(Errno::EINVAL)
    );
}

#[test]
fn populate_faults_pages_in_without_changing_them() {
    let frames = arena();
    let space = space_with(&frames, Strategy::Speculative);
    let a = anon(&space, 4);
    space.madvise(a, 4 * P, Advice::PopulateRead).unwrap();
    let read = space.debug_ptes(a, a + 4 * P);
    assert_eq!(read.len(), 4);
    assert!(
        read.iter().all(|p| !p.write),
        "read populate maps the zero page"
    );
    space.madvise(a, 4 * P, Advice::PopulateWrite).unwrap();
    let written = space.debug_ptes(a, a + 4 * P);
    assert!(written.iter().all(|p| p.write), "write populate breaks COW");
    assert_eq!(space.cpu().read_u8(a).unwrap(), 0);

    let f = file(&frames);
    let fp = space
        .mmap(
            0,
            2 * P,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::File { file: f, pgoff: 15 },
        )
        .unwrap();
    // Page 0 of the mapping is file page 15; page 1 is past the end.
    assert_eq!(
        space.madvise(fp, 2 * P, Advice::PopulateWrite),
        Err(Errno::EFAULT)
    );
    assert_eq!(space.debug_ptes(fp, fp + 2 * P).len(), 1);
    assert_eq!(space.cpu().read_u8(fp).unwrap(), 16);

    let none = map(&space, 2, Prot::NONE, MapFlags::default());
    assert_eq!(
        space.madvise(none, 2 * P, Advice::PopulateRead),
        Err(Errno::EINVAL)
    );
    space.munmap(none, 2 * P).unwrap();
    assert_eq!(
        space.madvise(none, P, Advice::PopulateRead),
        Err(Errno::ENOMEM)
    );
    space.check_invariants().unwrap();
}

#[test]
fn mlock_splits_populates_and_is_not_inherited() {
    let space = space();
    let a = anon(&space, 8);
    space.mlock(a + 2 * P, 2 * P, false).unwrap();
    assert_eq!(vmas(&space, a, a + 8 * P), 3);
    assert!(space.is_locked(a + 2 * P) && space.is_locked(a + 3 * P));
    assert!(!space.is_locked(a + P) && !space.is_locked(a + 4 * P));
    let ptes = space.debug_ptes(a, a + 8 * P);
    assert_eq!(ptes.len(), 2, "mlock populates the locked pages only");
    assert!(
        ptes.iter().all(|p| p.write),
        "private writable: write faults"
    );
    assert_eq!(space.madvise_dontneed(a + 2 * P, P), Err(Errno::EINVAL));
    assert_eq!(
        space.madvise(a + 2 * P, P, Advice::Free),
        Err(Errno::EINVAL)
    );
    let child = space.fork();
    assert!(
        !child.is_locked(a + 2 * P),
        "fork's child inherited VM_LOCKED"
    );
    space.munlock(a, 8 * P).unwrap();
    assert_eq!(vmas(&space, a, a + 8 * P), 1);
    // On fault: locked, nothing populated.
    let b = anon(&space, 4);
    space.mlock(b, 4 * P, true).unwrap();
    assert!(space.is_locked(b));
    assert!(space.debug_ptes(b, b + 4 * P).is_empty());
    // Holes and unmapped starts.
    space.munmap(b + P, P).unwrap();
    assert_eq!(space.mlock(b, 4 * P, false), Err(Errno::ENOMEM));
    assert_eq!(space.munlock(b + P, P), Err(Errno::ENOMEM));
    let none = map(&space, 2, Prot::NONE, MapFlags::default());
    assert_eq!(space.mlock(none, 2 * P, false), Err(Errno::ENOMEM));
    assert!(space.is_locked(none), "the VMA stays locked");
    assert_eq!(space.mlock(none, 0, false), Ok(()));
    space.check_invariants().unwrap();
    child.check_invariants().unwrap();
}

#[test]
fn noreserve_and_stack_are_vma_flags() {
    let space = space();
    let a = map(&space, 8, Prot::READ_WRITE, MapFlags::default());
    let fixed = |noreserve, stack| MapFlags {
        fixed: true,
        noreserve,
        stack,
        ..MapFlags::default()
    };
    let mm = |at: u64, flags| {
        space
            .mmap(at, 2 * P, Prot::READ_WRITE, flags, MapSource::Anon)
            .unwrap()
    };
    mm(a + 2 * P, fixed(true, false));
    assert_eq!(vmas(&space, a, a + 8 * P), 3);
    mm(a + 4 * P, fixed(false, true));
    assert_eq!(vmas(&space, a, a + 8 * P), 4);
    mm(a + 2 * P, fixed(false, false));
    mm(a + 4 * P, fixed(false, false));
    assert_eq!(vmas(&space, a, a + 8 * P), 1);
}

#[test]
fn committed_pages_count_private_writable_memory() {
    let frames = arena();
    let space = space_with(&frames, Strategy::PerVma);
    assert_eq!(space.committed_pages(), 0);
    let a = anon(&space, 4);
    assert_eq!(space.committed_pages(), 4);
    let _ro = map(&space, 3, Prot::READ, MapFlags::default());
    let noreserve = MapFlags {
        noreserve: true,
        ..MapFlags::default()
    };
    let nr = map(&space, 5, Prot::READ_WRITE, noreserve);
    let _sh = map(&space, 6, Prot::READ_WRITE, shared());
    assert_eq!(space.committed_pages(), 4, "read-only, noreserve, shared");
    // Making a noreserve mapping writable again charges nothing.
    space.mprotect(nr, 5 * P, Prot::READ).unwrap();
    space.mprotect(nr, 5 * P, Prot::READ_WRITE).unwrap();
    assert_eq!(space.committed_pages(), 4);
    let b = map(&space, 2, Prot::READ, MapFlags::default());
    space.mprotect(b, 2 * P, Prot::READ_WRITE).unwrap();
    assert_eq!(space.committed_pages(), 6, "made writable: charged");
    // fork charges the child for its copies, not for DONTFORK ranges.
    space.madvise(a, P, Advice::DontFork).unwrap();
    let child = space.fork();
    assert_eq!(space.committed_pages(), 6);
    assert_eq!(child.committed_pages(), 5);
    space.munmap(a, 4 * P).unwrap();
    assert_eq!(space.committed_pages(), 2);
}

/// `resident_pages` counts present entries but not the shared zero page,
/// follows faults, `DONTNEED` and `munmap`, and counts a page shared with a
/// child once in each side (as `VmRSS` does).
#[test]
fn resident_pages_follow_faults_and_unmaps() {
    let frames = std::sync::Arc::new(vmspace::FrameAllocator::new(16 << 20).unwrap());
    let s = vmspace::AddressSpace::new(vmspace::Config::default(), frames).unwrap();
    let p = vmspace::PAGE_SIZE;
    let a = s
        .mmap(
            0,
            8 * p,
            vmspace::Prot::READ_WRITE,
            vmspace::MapFlags::default(),
            vmspace::MapSource::Anon,
        )
        .unwrap();
    assert_eq!(s.resident_pages(), 0);
    let mut c = s.cpu();
    c.read_u8(a).unwrap();
    assert_eq!(
        s.resident_pages(),
        0,
        "the zero page is not resident memory"
    );
    for i in 0..4 {
        c.write_u8(a + i * p, 1).unwrap();
    }
    assert_eq!(s.resident_pages(), 4);
    let child = s.fork();
    assert_eq!(child.resident_pages(), 4);
    s.madvise_dontneed(a, p).unwrap();
    assert_eq!(s.resident_pages(), 3);
    s.munmap(a + 3 * p, p).unwrap();
    assert_eq!(s.resident_pages(), 2);
    assert_eq!(child.resident_pages(), 4);
}
