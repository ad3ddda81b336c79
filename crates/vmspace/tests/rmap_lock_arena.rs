//! The rmap lock kind of an arena (`ArenaConfig::rmap_lock`) reaches every
//! object on it, and a fork storm (threads forking one parent) contends the
//! parent objects' rmap locks, on each kind, with the data intact.

use std::sync::Arc;
use vmspace::{
    AddressSpace, ArenaConfig, Config, FrameAllocator, MapFlags, MapSource, Prot, RmapLockKind,
    PAGE_SIZE,
};

const P: u64 = PAGE_SIZE;

fn arena(kind: RmapLockKind) -> Arc<FrameAllocator> {
    let config = ArenaConfig {
        bytes: 64 << 20,
        rmap_lock: kind,
        ..ArenaConfig::default()
    };
    Arc::new(FrameAllocator::with_config(&config).unwrap())
}

#[test]
fn default_arena_uses_rwsem_spin() {
    let frames = FrameAllocator::new(1 << 20).unwrap();
    assert_eq!(frames.rmap_lock_kind(), RmapLockKind::RwsemSpin);
    assert_eq!(frames.rmap_lock_stats().acquisitions, 0);
}

/// Four threads fork a parent of 8 VMAs, write in each child and drop it:
/// every kind counts rmap lock acquisitions, the children see the parent's
/// data and the parent's data stays, and every frame comes back.
#[test]
fn fork_storm_on_every_kind() {
    for kind in RmapLockKind::ALL {
        let frames = arena(kind);
        assert_eq!(frames.rmap_lock_kind(), kind);
        let parent = AddressSpace::new(Config::default(), frames.clone()).unwrap();
        let mut starts = Vec::new();
        let mut pc = parent.cpu();
        for i in 0..8u64 {
            let prot = if i % 2 == 0 {
                Prot::READ_WRITE
            } else {
                Prot::READ
            };
            let a = parent
                .mmap(
                    0,
                    2 * P,
                    Prot::READ_WRITE,
                    MapFlags::default(),
                    MapSource::Anon,
                )
                .unwrap();
            pc.write_u64(a, i).unwrap();
            parent.mprotect(a, 2 * P, prot).unwrap();
            starts.push(a);
        }
        drop(pc);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (parent, starts) = (parent.clone(), starts.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let child = parent.fork();
                        let mut cc = child.cpu();
                        for (i, &a) in starts.iter().enumerate() {
                            assert_eq!(cc.read_u64(a).unwrap(), i as u64, "{kind}");
                            if i % 2 == 0 {
                                cc.write_u64(a + P, 1).unwrap();
                            }
                        }
                        drop(cc);
                        child.check_invariants().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        parent.check_invariants().unwrap();
        let mut pc = parent.cpu();
        for (i, &a) in starts.iter().enumerate() {
            assert_eq!(pc.read_u64(a).unwrap(), i as u64, "{kind}");
            assert_eq!(
                pc.read_u64(a + P).unwrap(),
                0,
                "{kind}: a child write leaked"
            );
        }
        let st = frames.rmap_lock_stats();
        assert!(st.acquisitions >= 80 * 8, "{kind}: {st:?}");
        drop(pc);
        drop(parent);
        vmspace_tree::sync::collect();
        assert_eq!(frames.in_use(), 0, "{kind}: every frame back");
    }
}

/// The benchmark-only fork without VMA write-locking gives the same child.
#[test]
fn fork_unlocked_for_bench_copies_the_same() {
    let frames = arena(RmapLockKind::Rwlock);
    let parent = AddressSpace::new(Config::default(), frames.clone()).unwrap();
    let a = parent
        .mmap(
            0,
            4 * P,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::Anon,
        )
        .unwrap();
    parent.cpu().write_u64(a, 42).unwrap();
    let child = parent.fork_unlocked_for_bench();
    assert_eq!(child.cpu().read_u64(a).unwrap(), 42);
    child.check_invariants().unwrap();
    parent.check_invariants().unwrap();
}
