//! Regressions of issue 12 (groundwork): page tables freed when their range
//! holds no VMA, frame metadata (mapcount, owner) kept by the one page-table
//! update path, and the other defects that issue lists. Each test failed
//! before its fix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vmspace::*;

const P: u64 = PAGE_SIZE;
/// Bytes one last-level page table maps.
const TABLE: u64 = 512 * P;

fn space(strategy: Strategy, arena_pages: u64) -> Arc<AddressSpace> {
    let frames = Arc::new(FrameAllocator::new(arena_pages * P).unwrap());
    AddressSpace::new(
        Config {
            strategy,
            ..Config::default()
        },
        frames,
    )
    .unwrap()
}

fn map_anon(s: &AddressSpace, addr: u64, len: u64) -> u64 {
    let flags = MapFlags {
        fixed: true,
        ..MapFlags::default()
    };
    s.mmap(addr, len, Prot::READ_WRITE, flags, MapSource::Anon)
        .unwrap()
}

/// 20 000 map/touch/unmap cycles at distinct 2 MiB regions used to leave
/// one table each behind; now no table outlives the last VMA of its range.
#[test]
fn page_tables_are_freed_with_the_last_vma_of_their_range() {
    for st in Strategy::ALL {
        let s = space(st, 64);
        let mut cpu = s.cpu();
        let base = 0x1000_0000_0000;
        for i in 0..20_000u64 {
            let a = base + i * TABLE;
            map_anon(&s, a, P);
            cpu.write_u8(a, 1).unwrap();
            s.munmap(a, P).unwrap();
        }
        assert_eq!(s.page_tables(), 0, "{st:?}");
        assert_eq!(s.frames().in_use(), 0);
        s.check_invariants().unwrap();
    }
}

/// A table that still maps part of a VMA stays, and so does its data; it
/// goes when that VMA goes too. A table spanning two VMAs (a 2 MiB
/// boundary inside one VMA) goes only with the last of them.
#[test]
fn a_table_still_used_by_a_vma_is_kept() {
    for st in Strategy::ALL {
        let s = space(st, 64);
        let mut cpu = s.cpu();
        let t = 0x2000_0000_0000;
        map_anon(&s, t, P);
        map_anon(&s, t + 8 * P, P);
        cpu.write_u8(t, 7).unwrap();
        cpu.write_u8(t + 8 * P, 8).unwrap();
        assert_eq!(s.page_tables(), 1);
        s.munmap(t, P).unwrap();
        assert_eq!(s.page_tables(), 1, "the other VMA still uses the table");
        assert_eq!(cpu.read_u8(t + 8 * P).unwrap(), 8);
        s.munmap(t + 8 * P, P).unwrap();
        assert_eq!(s.page_tables(), 0);
        // A VMA across a table boundary: unmapping its lower half frees
        // nothing while the upper half's neighbour range holds the VMA.
        let v = t + TABLE - 2 * P;
        map_anon(&s, v, 4 * P);
        cpu.write_u8(v, 1).unwrap();
        cpu.write_u8(v + 3 * P, 2).unwrap();
        assert_eq!(s.page_tables(), 2);
        s.munmap(v, 2 * P).unwrap();
        assert_eq!(s.page_tables(), 1, "the lower table had no VMA left");
        assert_eq!(cpu.read_u8(v + 3 * P).unwrap(), 2);
        assert!(cpu.read_u8(v).is_err());
        s.check_invariants().unwrap();
    }
}

/// Threads fault in their own regions while another thread maps, touches
/// and unmaps regions in the same tables' neighbourhood, so tables are
/// unlinked and freed while faults (lockless ones too) walk the page table.
/// Every value read back is the one written; every frame comes back.
#[test]
fn tables_freed_under_concurrent_faults() {
    for st in Strategy::ALL {
        let s = space(st, 4096);
        let stop = AtomicBool::new(false);
        let base = 0x3000_0000_0000u64;
        std::thread::scope(|sc| {
            for t in 0..2u64 {
                let s = &s;
                let stop = &stop;
                sc.spawn(move || {
                    let mut cpu = s.cpu();
                    let mine = base + t * 64 * TABLE;
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Two tables per round, at alternating places.
                        let a = mine + (round % 16) * 2 * TABLE + TABLE - 4 * P;
                        map_anon(s, a, 8 * P);
                        for p in 0..8 {
                            cpu.write_u8(a + p * P, (round + p) as u8).unwrap();
                        }
                        for p in 0..8 {
                            assert_eq!(cpu.read_u8(a + p * P).unwrap(), (round + p) as u8);
                        }
                        s.munmap(a, 8 * P).unwrap();
                        assert!(cpu.read_u8(a).is_err());
                        round += 1;
                    }
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(700));
            stop.store(true, Ordering::Relaxed);
        });
        s.check_invariants().unwrap();
        assert_eq!(s.page_tables(), 0, "{st:?}");
        assert_eq!(s.frames().in_use(), 0, "{st:?}");
    }
}

/// The mapcount counts the entries that map a frame, in every address
/// space; the owner names the object and the page index.
#[test]
fn frames_know_their_mappings_and_owner() {
    let frames = Arc::new(FrameAllocator::new(64 * P).unwrap());
    let a = AddressSpace::new(Config::default(), frames.clone()).unwrap();
    let b = AddressSpace::new(Config::default(), frames.clone()).unwrap();
    let file = File::new(4, Box::new(ZeroStore), frames.clone());
    let shared = MapFlags {
        shared: true,
        ..MapFlags::default()
    };
    let src = || MapSource::File {
        file: file.clone(),
        pgoff: 0,
    };
    let ma = a.mmap(0, 4 * P, Prot::READ_WRITE, shared, src()).unwrap();
    let mb = b.mmap(0, 4 * P, Prot::READ, shared, src()).unwrap();
    let (mut ca, mut cb) = (a.cpu(), b.cpu());
    ca.write_u8(ma + 2 * P, 5).unwrap();
    assert_eq!(cb.read_u8(mb + 2 * P).unwrap(), 5);
    let f = a.debug_ptes(ma, ma + 4 * P)[0].frame;
    assert_eq!(frames.mapcount(f), 2);
    assert_eq!(
        frames.owner(f),
        Owner::File {
            file: file.id(),
            index: 2
        }
    );
    // Anonymous memory: owned by the VMA's object at its page index.
    let anon = a
        .mmap(
            0,
            2 * P,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::Anon,
        )
        .unwrap();
    ca.write_u8(anon + P, 1).unwrap();
    let g = a.debug_ptes(anon, anon + 2 * P)[0].frame;
    assert_eq!(frames.mapcount(g), 1);
    assert!(matches!(frames.owner(g), Owner::Anon { index, .. } if index == anon / P + 1));
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
    b.munmap(mb, 4 * P).unwrap();
    assert_eq!(frames.mapcount(f), 1);
    a.munmap(ma, 4 * P).unwrap();
    assert_eq!(frames.mapcount(f), 0);
    assert_eq!(frames.refcount(f), 1, "the page cache's reference");
    a.munmap(anon, 2 * P).unwrap();
    assert_eq!(frames.refcount(g), 0);
    assert_eq!(frames.owner(g), Owner::None, "a free frame has no owner");
}

/// Copy-on-write of a page-cache page: the copy is the VMA's, the cached
/// page keeps its owner and loses the mapping.
#[test]
fn copy_on_write_moves_the_mapping_to_the_copy() {
    for st in Strategy::ALL {
        let frames = Arc::new(FrameAllocator::new(64 * P).unwrap());
        let s = AddressSpace::new(
            Config {
                strategy: st,
                ..Config::default()
            },
            frames.clone(),
        )
        .unwrap();
        let store = MemoryStore::new(2, |p, page| page.fill(p as u8 + 1));
        let file = File::new(2, Box::new(store), frames.clone());
        let at = s
            .mmap(
                0,
                2 * P,
                Prot::READ_WRITE,
                MapFlags::default(),
                MapSource::File { file, pgoff: 0 },
            )
            .unwrap();
        let mut cpu = s.cpu();
        assert_eq!(cpu.read_u8(at).unwrap(), 1);
        let cached = s.debug_ptes(at, at + P)[0].frame;
        assert_eq!(frames.mapcount(cached), 1);
        cpu.write_u8(at, 9).unwrap();
        let copy = s.debug_ptes(at, at + P)[0].frame;
        assert_ne!(copy, cached);
        assert_eq!(frames.mapcount(cached), 0);
        assert_eq!(frames.mapcount(copy), 1);
        assert!(matches!(frames.owner(copy), Owner::Anon { .. }));
        assert!(matches!(frames.owner(cached), Owner::File { index: 0, .. }));
        s.check_invariants().unwrap();
    }
}

/// A store that fails writes while `fail` is set and counts write attempts.
struct Flaky {
    inner: MemoryStore,
    fail: Arc<AtomicBool>,
    writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl BackingStore for Flaky {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_page(pgoff, buf)
    }
    fn write_page(&self, pgoff: u64, buf: &[u8]) -> std::io::Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected"));
        }
        self.inner.write_page(pgoff, buf)
    }
}

/// A write-back that fails when the mapping goes keeps the page dirty and
/// is reported by the next `sync`, which writes it again once the store
/// works; dropping the address space writes back its shared mappings'
/// dirty pages (and only those: a write-back cleans).
#[test]
fn failed_write_back_is_reported_and_retried() {
    let frames = Arc::new(FrameAllocator::new(64 * P).unwrap());
    let s = AddressSpace::new(Config::default(), frames.clone()).unwrap();
    let fail = Arc::new(AtomicBool::new(true));
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = Flaky {
        inner: MemoryStore::new(2, |_, p| p.fill(0)),
        fail: fail.clone(),
        writes: writes.clone(),
    };
    let file = File::new(2, Box::new(store), frames);
    let shared = MapFlags {
        shared: true,
        ..MapFlags::default()
    };
    let src = || MapSource::File {
        file: file.clone(),
        pgoff: 0,
    };
    let a = s.mmap(0, 2 * P, Prot::READ_WRITE, shared, src()).unwrap();
    s.cpu().write_u8(a, 3).unwrap();
    s.munmap(a, 2 * P).unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 1, "written back at munmap");
    fail.store(false, Ordering::SeqCst);
    let err = file.sync().expect_err("the munmap's failure is reported");
    assert_eq!(err.to_string(), "injected");
    assert_eq!(
        writes.load(Ordering::SeqCst),
        2,
        "and the page written again"
    );
    file.sync().unwrap();
    // msync reports the same way (EIO).
    let a = s.mmap(0, 2 * P, Prot::READ_WRITE, shared, src()).unwrap();
    s.cpu().write_u8(a + P, 4).unwrap();
    fail.store(true, Ordering::SeqCst);
    assert_eq!(s.msync(a, 2 * P), Err(Errno::EIO));
    let before = writes.load(Ordering::SeqCst);
    drop(s);
    drop(file);
    // Page 0 is clean since the successful sync (write-back cleans), so
    // only page 1 is dirty and tried again.
    assert_eq!(
        writes.load(Ordering::SeqCst) - before,
        1,
        "the dirty page tried when the space drops"
    );
}

fn with_config(config: Config) -> Arc<AddressSpace> {
    let frames = Arc::new(FrameAllocator::new(64 * P).unwrap());
    AddressSpace::new(config, frames).unwrap()
}

fn layout(s: &AddressSpace) -> Vec<(u64, u64, Prot)> {
    s.maps()
        .iter()
        .map(|m| (m.start / P, m.end / P, m.prot))
        .collect()
}

/// Execute-only protection keys (Linux on a CPU with PKU): `--x` of part of
/// a written anonymous VMA gets the execute-only key, so a new `rwx`
/// mapping beside it cannot share its anonymous object; made `--x` later,
/// it keeps its own object and the two do not merge. Without keys, they
/// share the object and merge, and execute-only memory is readable.
#[test]
fn execute_only_keys_keep_vmas_apart() {
    let x = Prot::new(false, false, true);
    let rwx = Prot::new(true, true, true);
    for keys in [true, false] {
        let s = with_config(Config {
            exec_only_pkey: keys,
            ..Config::default()
        });
        let base = 0x4000_0000;
        map_anon(&s, base, 8 * P);
        let mut cpu = s.cpu();
        cpu.write_u8(base, 1).unwrap();
        s.mprotect(base + 4 * P, 4 * P, x).unwrap();
        let flags = MapFlags {
            fixed: true,
            ..MapFlags::default()
        };
        s.mmap(base + 8 * P, 4 * P, rwx, flags, MapSource::Anon)
            .unwrap();
        cpu.write_u8(base + 8 * P, 2).unwrap();
        s.mprotect(base + 8 * P, 4 * P, x).unwrap();
        let b = base / P;
        let expected = if keys {
            vec![
                (b, b + 4, Prot::READ_WRITE),
                (b + 4, b + 8, x),
                (b + 8, b + 12, x),
            ]
        } else {
            vec![(b, b + 4, Prot::READ_WRITE), (b + 4, b + 12, x)]
        };
        assert_eq!(layout(&s), expected, "keys: {keys}");
        assert_eq!(cpu.read_u8(base + 8 * P).is_ok(), !keys, "keys: {keys}");
        assert_eq!(cpu.fetch_u8(base + 8 * P).unwrap(), 2);
        // Made readable again, the key goes back to the default one.
        s.mprotect(base + 4 * P, 8 * P, Prot::new(true, false, true))
            .unwrap();
        assert_eq!(cpu.read_u8(base + 8 * P).unwrap(), 2);
        s.check_invariants().unwrap();
    }
}

/// Linux's limits, measured on the host (Linux 6.18, x86-64, 4-level
/// paging): `TASK_SIZE` is 2^47 - 4096, and a regular file has at most
/// 2^51 - 1 pages for `mmap`.
#[test]
fn the_limits_are_linux_limits() {
    let s = with_config(Config::default());
    let fixed = MapFlags {
        fixed: true,
        ..MapFlags::default()
    };
    let rw = Prot::READ_WRITE;
    let top = 1u64 << 47;
    assert_eq!(TASK_SIZE, top - P);
    assert_eq!(
        s.mmap(top - P, P, rw, fixed, MapSource::Anon),
        Err(Errno::ENOMEM)
    );
    assert_eq!(
        s.mmap(top - 2 * P, 2 * P, rw, fixed, MapSource::Anon),
        Err(Errno::ENOMEM)
    );
    assert_eq!(
        s.mmap(top - 2 * P, P, rw, fixed, MapSource::Anon),
        Ok(top - 2 * P)
    );
    // A hint on the last page is not taken.
    let hinted = s
        .mmap(top - P, P, rw, MapFlags::default(), MapSource::Anon)
        .unwrap();
    assert_ne!(hinted, top - P);
    assert_eq!(s.munmap(top - P, P), Err(Errno::EINVAL));
    assert_eq!(s.munmap(top - 2 * P, 2 * P), Err(Errno::EINVAL));
    assert_eq!(s.munmap(top - 2 * P, P), Ok(()));
    let dest = RemapFlags {
        may_move: true,
        fixed: Some(top - P),
    };
    assert_eq!(s.mremap(hinted, P, P, dest), Err(Errno::EINVAL));
    // File offsets: pgoff + pages <= 2^51 - 1.
    let frames = s.frames().clone();
    let file = File::new(1, Box::new(ZeroStore), frames);
    let at = |pgoff: u64, pages: u64| {
        let src = MapSource::File {
            file: file.clone(),
            pgoff,
        };
        s.mmap(0, pages * P, Prot::READ, MapFlags::default(), src)
            .map(|_| ())
    };
    let max = (1u64 << 51) - 1;
    assert_eq!(at(max - 1, 1), Ok(()));
    assert_eq!(at(max, 1), Err(Errno::EOVERFLOW));
    assert_eq!(at(max - 2, 2), Ok(()));
    assert_eq!(at(max - 1, 2), Err(Errno::EOVERFLOW));
    s.check_invariants().unwrap();
}

/// Bad configurations are refused at creation; the VMA count may pass
/// `max_map_count` by one, as on Linux, and the invariant check agrees.
#[test]
fn configurations_are_validated() {
    let frames = Arc::new(FrameAllocator::new(16 * P).unwrap());
    let bad = |config: Config| {
        AddressSpace::new(config, frames.clone())
            .err()
            .map(|e| e.field)
    };
    let d = Config::default;
    assert_eq!(
        bad(Config {
            mmap_base: u64::MAX,
            ..d()
        }),
        Some("mmap_base")
    );
    assert_eq!(
        bad(Config {
            mmap_base: TASK_SIZE + P,
            ..d()
        }),
        Some("mmap_base")
    );
    assert_eq!(
        bad(Config {
            mmap_base: 0x10001,
            ..d()
        }),
        Some("mmap_base")
    );
    assert_eq!(
        bad(Config {
            mmap_min_addr: 7,
            ..d()
        }),
        Some("mmap_min_addr")
    );
    assert_eq!(
        bad(Config {
            mmap_min_addr: 0x20000,
            mmap_base: 0x20000,
            ..d()
        }),
        Some("mmap_min_addr")
    );
    assert_eq!(
        bad(Config {
            max_map_count: 0,
            ..d()
        }),
        Some("max_map_count")
    );
    assert_eq!(
        bad(Config {
            stack_limit: u64::MAX,
            ..d()
        }),
        Some("stack_limit")
    );
    assert_eq!(
        bad(Config {
            mmap_base: TASK_SIZE,
            ..d()
        }),
        None
    );
    // Nine mappings with a limit of 8 (Linux allows one over), and not ten.
    let s = with_config(Config {
        max_map_count: 8,
        ..d()
    });
    for i in 0..9u64 {
        // Apart, so that they do not merge.
        map_anon(&s, 0x100_0000 + i * 2 * P, P);
    }
    let tenth = s.mmap(
        0x200_0000,
        P,
        Prot::READ_WRITE,
        MapFlags::default(),
        MapSource::Anon,
    );
    assert_eq!(tenth, Err(Errno::ENOMEM));
    assert_eq!(s.map_count(), 9);
    s.check_invariants().unwrap();
}

/// `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)` that shrinks: only the part that
/// moves must lie in one VMA; the old tail goes whatever it spans (VMAs,
/// holes). If the moving part leaves its VMA, `EFAULT` and nothing changes.
#[test]
fn fixed_shrinking_mremap_needs_only_the_moving_part_in_one_vma() {
    let s = with_config(Config::default());
    let rw = Prot::READ_WRITE;
    let fixed = MapFlags {
        fixed: true,
        ..MapFlags::default()
    };
    let b = 0x5000_0000u64;
    let mv = |to: u64| RemapFlags {
        may_move: true,
        fixed: Some(to),
    };
    // Two VMAs (no merge: different protections), shrink to the first's part.
    s.mmap(b, 4 * P, rw, fixed, MapSource::Anon).unwrap();
    s.mmap(b + 4 * P, 4 * P, Prot::READ, fixed, MapSource::Anon)
        .unwrap();
    s.cpu().write_u8(b + P, 9).unwrap();
    assert_eq!(s.mremap(b, 8 * P, 2 * P, mv(b + 100 * P)), Ok(b + 100 * P));
    assert_eq!(layout(&s), vec![(b / P + 100, b / P + 102, rw)]);
    assert_eq!(s.cpu().read_u8(b + 101 * P).unwrap(), 9);
    // A hole in the tail.
    s.mmap(b, 4 * P, rw, fixed, MapSource::Anon).unwrap();
    s.mmap(b + 6 * P, 2 * P, rw, fixed, MapSource::Anon)
        .unwrap();
    assert_eq!(s.mremap(b, 8 * P, 2 * P, mv(b + 200 * P)), Ok(b + 200 * P));
    assert!(s.maps().iter().all(|m| m.start >= b + 100 * P));
    // The moving part crosses its VMA's end: EFAULT, nothing unmapped.
    s.mmap(b + 300 * P, 8 * P, rw, fixed, MapSource::Anon)
        .unwrap();
    s.mmap(b, 4 * P, rw, fixed, MapSource::Anon).unwrap();
    s.mmap(b + 4 * P, 4 * P, Prot::READ, fixed, MapSource::Anon)
        .unwrap();
    let before = layout(&s);
    assert_eq!(
        s.mremap(b, 8 * P, 5 * P, mv(b + 300 * P)),
        Err(Errno::EFAULT)
    );
    assert_eq!(layout(&s), before);
    s.check_invariants().unwrap();
}

/// A shared anonymous object kept its frames until the object itself was
/// freed: after the grace period of its removed VMAs, and only if no one
/// else held it (here the caller, through `maps()`), so mapping, writing and
/// unmapping it again and again ran out of frames. Its pages now go with its
/// last mapping. While a mapping remains, every page stays (Linux's
/// semantics: `mremap` can grow a mapping back over pages unmapped before).
#[test]
fn shared_anonymous_pages_go_with_their_last_mapping() {
    for st in Strategy::ALL {
        let s = space(st, 40);
        let shared = MapFlags {
            shared: true,
            ..MapFlags::default()
        };
        let mut cpu = s.cpu();
        let mut held = Vec::new();
        for round in 0..8u8 {
            let a = s
                .mmap(0, 32 * P, Prot::READ_WRITE, shared, MapSource::Anon)
                .unwrap();
            held.push(s.maps()[0].object.clone());
            for p in 0..32 {
                cpu.write_u8(a + p * P, round).unwrap();
            }
            s.munmap(a, 32 * P).unwrap();
            // The frames come back after a grace period (other tests'
            // threads may hold it back for a while): wait for them. Without
            // the fix they never came back while the object was held.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while s.frames().in_use() != 0 && std::time::Instant::now() < deadline {
                vmspace_tree::sync::collect();
                std::thread::yield_now();
            }
            assert_eq!(s.frames().in_use(), 0, "{st:?} round {round}");
        }
        // Unmapped in the middle and grown back: the content is still there.
        let a = s
            .mmap(0, 8 * P, Prot::READ_WRITE, shared, MapSource::Anon)
            .unwrap();
        cpu.write_u8(a + 6 * P, 77).unwrap();
        s.munmap(a + 4 * P, 4 * P).unwrap();
        assert_eq!(s.mremap(a, 4 * P, 8 * P, RemapFlags::default()), Ok(a));
        assert_eq!(cpu.read_u8(a + 6 * P).unwrap(), 77, "{st:?}");
        s.check_invariants().unwrap();
    }
}

/// A file knows which of its pages attached VMAs map: one entry per VMA,
/// through splits and merges, none left after the last unmap.
#[test]
fn files_count_the_vmas_that_map_them() {
    let s = with_config(Config::default());
    let file = File::new(8, Box::new(ZeroStore), s.frames().clone());
    let src = MapSource::File {
        file: file.clone(),
        pgoff: 0,
    };
    let a = s
        .mmap(0, 8 * P, Prot::READ, MapFlags::default(), src)
        .unwrap();
    assert_eq!(file.mapping_count(), 1);
    s.mprotect(a + 2 * P, 2 * P, Prot::READ_WRITE).unwrap();
    assert_eq!(file.mapping_count(), 3);
    // Shared: no accounting keeps the pieces apart, so they merge back.
    s.munmap(a, 8 * P).unwrap();
    let shared = MapFlags {
        shared: true,
        ..MapFlags::default()
    };
    let src = MapSource::File {
        file: file.clone(),
        pgoff: 0,
    };
    let a = s.mmap(0, 8 * P, Prot::READ, shared, src).unwrap();
    s.mprotect(a + 2 * P, 2 * P, Prot::READ_WRITE).unwrap();
    assert_eq!(file.mapping_count(), 3);
    s.mprotect(a + 2 * P, 2 * P, Prot::READ).unwrap();
    assert_eq!(s.map_count(), 1);
    assert_eq!(file.mapping_count(), 1, "merged back");
    s.munmap(a, 8 * P).unwrap();
    assert_eq!(file.mapping_count(), 0);
}

/// This machine's answer is what `/proc/cpuinfo` says (pku and ospke).
#[test]
fn host_keys_are_detected() {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    assert_eq!(
        Config::host_has_exec_only_pkey(),
        has("pku") && has("ospke")
    );
}
