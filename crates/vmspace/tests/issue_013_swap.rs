//! Issue 13, reclaim and swap: a memory limit (the arena) smaller than the
//! working set, private anonymous pages written to a swap file and read back
//! by faults, pages copy-on-write-shared by many children swapped out and
//! back in each, swap I/O errors, `mlock`, `MADV_FREE` pages dropped by
//! reclaim, and a prompt out-of-memory error when nothing can be reclaimed.
//! Every test ends with the address spaces' invariants and the swap slots'
//! reference counts checked against their holders (no slot leaked).

use std::path::PathBuf;
use std::sync::Arc;
use vmspace::{
    Access, AddressSpace, Advice, ArenaConfig, Config, FaultCause, FrameAllocator, MapFlags,
    MapSource, Prot, ReclaimConfig, Strategy, SwapConfig, PAGE_SIZE,
};

const P: u64 = PAGE_SIZE;

fn swap_path(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("issue13-swap-{}-{name}", std::process::id()))
}

/// An arena of `frames` frames with a swap file of `slots` slots;
/// `background`: with a background reclaimer.
fn arena(name: &str, frames: u64, slots: u64, background: bool) -> Arc<FrameAllocator> {
    let config = ArenaConfig {
        bytes: frames * P,
        swap: (slots > 0).then(|| SwapConfig {
            path: swap_path(name),
            slots,
            direct: false,
        }),
        reclaim: ReclaimConfig {
            background,
            ..ReclaimConfig::default()
        },
        ..ArenaConfig::default()
    };
    Arc::new(FrameAllocator::with_config(&config).unwrap())
}

fn space(frames: &Arc<FrameAllocator>, strategy: Strategy) -> Arc<AddressSpace> {
    let config = Config {
        strategy,
        ..Config::default()
    };
    AddressSpace::new(config, frames.clone()).unwrap()
}

fn anon(space: &AddressSpace, pages: u64) -> u64 {
    space
        .mmap(
            0,
            pages * P,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::Anon,
        )
        .unwrap()
}

fn value(page: u64, tag: u64) -> u64 {
    (page << 20) ^ tag ^ 0x5a5a_0000_0000
}

/// Invariants of every space, then the swap references of all of them.
fn check(frames: &FrameAllocator, spaces: &[&AddressSpace]) {
    for s in spaces {
        s.check_invariants().unwrap();
    }
    frames.check_swap(spaces).unwrap();
}

/// A working set four times the memory limit, written and read back on
/// every strategy: reclaim swaps pages out (direct reclaim, no background
/// thread here), faults swap them in, nothing is lost, and once the space
/// is gone every slot is free.
#[test]
fn working_set_larger_than_memory_comes_back_intact() {
    for strategy in Strategy::ALL {
        let frames = arena(&format!("ws-{}", strategy.name()), 64, 1024, false);
        let s = space(&frames, strategy);
        let pages = 256;
        let base = anon(&s, pages);
        let mut cpu = s.cpu();
        for round in 0..2 {
            for p in 0..pages {
                cpu.write_u64(base + p * P + 8 * round, value(p, round))
                    .unwrap();
            }
        }
        for p in (0..pages).rev() {
            for round in 0..2 {
                let got = cpu.read_u64(base + p * P + 8 * round).unwrap();
                assert_eq!(got, value(p, round), "{strategy:?} page {p}");
            }
        }
        let st = frames.reclaim_stats();
        assert!(st.swap_outs >= pages - 64, "{st:?}");
        assert!(st.swap_ins > 0 && st.reclaimed_direct > 0, "{st:?}");
        assert!(s.swapped_pages() > 0);
        assert!(s.resident_pages() <= 64);
        drop(cpu);
        check(&frames, &[&s]);
        drop(s);
        frames.drop_swap_cache();
        check(&frames, &[]);
        assert_eq!(frames.swap_device().unwrap().used(), 0, "slots leaked");
        assert_eq!(frames.in_use(), 0, "frames leaked");
    }
}

/// Reclaims every page it can: one pass clears accessed bits, the next
/// swaps out.
fn reclaim_all(frames: &FrameAllocator) {
    for _ in 0..3 {
        frames.reclaim(frames.capacity());
    }
}

/// A page copy-on-write-shared by a parent and several children is swapped
/// out: every address space's entry becomes a swap entry of one slot; the
/// data comes back in each; a write in one child changes only that child.
#[test]
fn cow_page_shared_by_many_children_swaps_out_and_back_in_each() {
    let frames = arena("cow", 256, 256, false);
    let parent = space(&frames, Strategy::PerVma);
    let base = anon(&parent, 4);
    let mut cpu = parent.cpu();
    for p in 0..4 {
        cpu.write_u64(base + p * P, value(p, 1)).unwrap();
    }
    drop(cpu);
    let children: Vec<_> = (0..5).map(|_| parent.fork()).collect();
    reclaim_all(&frames);
    let mut owned = vec![parent.clone()];
    owned.extend(children.iter().cloned());
    let all: Vec<&AddressSpace> = owned.iter().map(|s| &**s).collect();
    for s in &all {
        assert_eq!(s.swapped_pages(), 4, "every entry is a swap entry");
        assert_eq!(s.resident_pages(), 0);
    }
    check(&frames, &all);
    assert_eq!(frames.swap_device().unwrap().used(), 4, "one slot a page");
    // The data comes back in every space.
    for (k, s) in owned.iter().enumerate() {
        let mut cpu = s.cpu();
        for p in 0..4 {
            assert_eq!(
                cpu.read_u64(base + p * P).unwrap(),
                value(p, 1),
                "space {k}"
            );
        }
    }
    check(&frames, &all);
    // A write in one child is its own.
    let mut c0 = children[0].cpu();
    c0.write_u64(base, 77).unwrap();
    drop(c0);
    for (k, s) in owned.iter().enumerate() {
        let want = if k == 1 { 77 } else { value(0, 1) };
        assert_eq!(s.cpu().read_u64(base).unwrap(), want, "space {k}");
    }
    // Out again and back again, after the write.
    reclaim_all(&frames);
    for (k, s) in owned.iter().enumerate() {
        let want = if k == 1 { 77 } else { value(0, 1) };
        assert_eq!(s.cpu().read_u64(base).unwrap(), want, "space {k}");
    }
    check(&frames, &all);
    drop(all);
    drop(owned);
    drop(children);
    drop(parent);
    frames.drop_swap_cache();
    check(&frames, &[]);
    assert_eq!(frames.swap_device().unwrap().used(), 0);
    assert_eq!(frames.in_use(), 0);
}

/// A swapped-out page that is written after swap-in by its only user is
/// taken over (mapped owned: no copy), and munmap of swap entries frees
/// their slots at once.
#[test]
fn exclusive_swap_in_and_munmap_free_slots() {
    let frames = arena("excl", 64, 64, false);
    let s = space(&frames, Strategy::MmapLock);
    let base = anon(&s, 8);
    let mut cpu = s.cpu();
    for p in 0..8 {
        cpu.write_u64(base + p * P, value(p, 2)).unwrap();
    }
    reclaim_all(&frames);
    assert_eq!(s.swapped_pages(), 8);
    let used_before = frames.in_use();
    cpu.write_u64(base, 5).unwrap();
    assert_eq!(frames.in_use(), used_before + 1, "one frame: no copy");
    assert_eq!(frames.swap_device().unwrap().used(), 7, "its slot is free");
    assert_eq!(frames.swap_cache_pages(), 0);
    drop(cpu);
    s.munmap(base + 4 * P, 4 * P).unwrap();
    assert_eq!(frames.swap_device().unwrap().used(), 3);
    s.madvise_dontneed(base + P, P).unwrap();
    assert_eq!(frames.swap_device().unwrap().used(), 2);
    assert_eq!(s.cpu().read_u64(base + P).unwrap(), 0, "DONTNEED: zero");
    assert_eq!(s.cpu().read_u64(base + 2 * P).unwrap(), value(2, 2));
    check(&frames, &[&s]);
}

/// mremap moves swap entries with the memory; fork copies them.
#[test]
fn mremap_and_fork_carry_swap_entries() {
    let frames = arena("mremap", 64, 64, false);
    let s = space(&frames, Strategy::PerVma);
    let base = anon(&s, 4);
    let mut cpu = s.cpu();
    for p in 0..4 {
        cpu.write_u64(base + p * P, value(p, 3)).unwrap();
    }
    drop(cpu);
    reclaim_all(&frames);
    let moved = s
        .mremap(
            base,
            4 * P,
            8 * P,
            vmspace::RemapFlags {
                may_move: true,
                fixed: Some(base + 64 * P),
            },
        )
        .unwrap();
    assert_eq!(s.swapped_pages(), 4);
    let child = s.fork();
    assert_eq!(child.swapped_pages(), 4);
    check(&frames, &[&s, &child]);
    for sp in [&s, &child] {
        let mut cpu = sp.cpu();
        for p in 0..4 {
            assert_eq!(cpu.read_u64(moved + p * P).unwrap(), value(p, 3));
        }
    }
    check(&frames, &[&s, &child]);
}

/// Swap I/O errors: a failed write keeps the page in memory (nothing lost),
/// a failed read is the fault's error (`Io`) for that access, and the page
/// reads fine once the device works again.
#[test]
fn swap_io_errors_lose_nothing() {
    let frames = arena("io", 64, 64, false);
    let s = space(&frames, Strategy::PerVma);
    let base = anon(&s, 8);
    let mut cpu = s.cpu();
    for p in 0..8 {
        cpu.write_u64(base + p * P, value(p, 4)).unwrap();
    }
    let dev = frames.swap_device().unwrap();
    dev.set_failure_rates(1.0, 0.0);
    reclaim_all(&frames);
    let st = frames.reclaim_stats();
    assert!(st.swap_out_failures >= 8, "{st:?}");
    assert_eq!(st.swap_outs, 0);
    assert_eq!(
        s.swapped_pages(),
        8,
        "entries are swap entries, pages cached"
    );
    for p in 0..8 {
        assert_eq!(cpu.read_u64(base + p * P).unwrap(), value(p, 4));
    }
    check(&frames, &[&s]);
    dev.set_failure_rates(0.0, 0.0);
    reclaim_all(&frames);
    assert_eq!(frames.swap_cache_pages(), 0, "written and dropped now");
    dev.set_failure_rates(0.0, 1.0);
    let err = cpu.read_u64(base).unwrap_err();
    assert_eq!(err.cause, FaultCause::Io);
    assert_eq!(err.access, Access::Read);
    assert!(frames.reclaim_stats().swap_in_failures >= 1);
    dev.set_failure_rates(0.0, 0.0);
    for p in 0..8 {
        assert_eq!(cpu.read_u64(base + p * P).unwrap(), value(p, 4));
    }
    drop(cpu);
    check(&frames, &[&s]);
}

/// `mlock`ed pages stay resident through reclaim; `munlock` lets them go.
#[test]
fn mlock_keeps_pages_resident() {
    let frames = arena("mlock", 64, 64, false);
    let s = space(&frames, Strategy::PerVma);
    let base = anon(&s, 8);
    s.mlock(base, 4 * P, false).unwrap();
    let mut cpu = s.cpu();
    for p in 0..8 {
        cpu.write_u64(base + p * P, value(p, 5)).unwrap();
    }
    drop(cpu);
    reclaim_all(&frames);
    assert_eq!(s.swapped_pages(), 4, "only the unlocked half");
    assert_eq!(s.resident_pages(), 4);
    assert!(frames.reclaim_stats().skipped_locked > 0);
    s.munlock(base, 4 * P).unwrap();
    reclaim_all(&frames);
    assert_eq!(s.swapped_pages(), 8);
    check(&frames, &[&s]);
}

/// `MADV_FREE` pages are dropped by reclaim (they read as zero after) unless
/// written again, without swap.
#[test]
fn lazyfree_pages_are_dropped_unless_written_again() {
    let frames = arena("lazy", 64, 0, false);
    let s = space(&frames, Strategy::PerVma);
    let base = anon(&s, 4);
    let mut cpu = s.cpu();
    for p in 0..4 {
        cpu.write_u64(base + p * P, value(p, 6)).unwrap();
    }
    s.madvise(base, 4 * P, Advice::Free).unwrap();
    cpu.write_u64(base + 3 * P + 8, 1).unwrap();
    reclaim_all(&frames);
    assert_eq!(frames.reclaim_stats().lazyfree_dropped, 3);
    for p in 0..3 {
        assert_eq!(cpu.read_u64(base + p * P).unwrap(), 0, "page {p} dropped");
    }
    assert_eq!(
        cpu.read_u64(base + 3 * P).unwrap(),
        value(3, 6),
        "written again"
    );
    drop(cpu);
    check(&frames, &[&s]);
}

/// With no swap and nothing else to reclaim, a fault past the limit fails
/// with out-of-memory (no hang), and so it does with swap full.
#[test]
fn out_of_memory_is_prompt_without_swap_or_with_swap_full() {
    for slots in [0, 8] {
        let frames = arena(&format!("oom-{slots}"), 16, slots, false);
        let s = space(&frames, Strategy::PerVma);
        let base = anon(&s, 64);
        let mut cpu = s.cpu();
        let mut written = 0;
        let err = loop {
            match cpu.write_u64(base + written * P, value(written, 7)) {
                Ok(()) => written += 1,
                Err(e) => break e,
            }
            assert!(written < 64, "the limit was not enforced");
        };
        assert_eq!(err.cause, FaultCause::OutOfMemory);
        assert!(
            written >= 16 - 2 && written <= 16 + slots,
            "{written} pages"
        );
        assert!(frames.reclaim_stats().oom >= 1);
        // Without swap every page written is resident and reads back; with
        // swap full, a swapped-out page cannot come back either (no frame).
        if slots == 0 {
            for p in 0..written {
                assert_eq!(cpu.read_u64(base + p * P).unwrap(), value(p, 7));
            }
        }
        drop(cpu);
        check(&frames, &[&s]);
    }
}

/// With a background reclaimer, two threads over a working set twice the
/// limit, round by round (a barrier between rounds, so that neither
/// thread's half fits in memory on its own while the other waits): every
/// value is intact, pages come back from swap, and the background thread
/// frees frames too (it is woken below the low watermark; on a loaded
/// machine the faulting threads' direct reclaim may do everything while
/// they run, so it is given a few seconds afterwards to refill).
#[test]
fn background_reclaimer_keeps_frames_free() {
    let frames = arena("bg", 256, 2048, true);
    let s = space(&frames, Strategy::PerVma);
    let pages = 512;
    let base = anon(&s, pages);
    let rounds = std::sync::Barrier::new(2);
    std::thread::scope(|sc| {
        for t in 0..2u64 {
            let (s, rounds) = (s.clone(), &rounds);
            sc.spawn(move || {
                let mut cpu = s.cpu();
                for round in 0..3 {
                    rounds.wait();
                    for p in (t..pages).step_by(2) {
                        let a = base + p * P;
                        if round > 0 {
                            assert_eq!(cpu.read_u64(a).unwrap(), value(p, round - 1));
                        }
                        cpu.write_u64(a, value(p, round)).unwrap();
                    }
                }
            });
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while frames.reclaim_stats().reclaimed_background == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let st = frames.reclaim_stats();
    assert!(st.swap_ins > 0, "{st:?}");
    assert!(st.reclaimed_background > 0, "{st:?}");
    check(&frames, &[&s]);
}

/// A shared file mapping larger than the memory limit: dirty pages are
/// written to the store by reclaim before their frames go (every write
/// lands), clean ones are dropped and read again, and a private mapping of
/// the same file sees the store's data, copy-on-write.
#[test]
fn file_pages_are_written_back_and_dropped_by_reclaim() {
    use vmspace::{File, MemoryStore};
    let frames = arena("file", 64, 0, false);
    let s = space(&frames, Strategy::PerVma);
    let pages = 200;
    let store = Arc::new(MemoryStore::new(pages, |p, page| {
        page[..8].copy_from_slice(&p.to_le_bytes())
    }));
    struct Shared(Arc<MemoryStore>);
    impl vmspace::BackingStore for Shared {
        fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> std::io::Result<()> {
            self.0.read_page(pgoff, buf)
        }
        fn write_page(&self, pgoff: u64, buf: &[u8]) -> std::io::Result<()> {
            self.0.write_page(pgoff, buf)
        }
    }
    let file = File::new(pages, Box::new(Shared(store.clone())), frames.clone());
    let flags = MapFlags {
        shared: true,
        ..MapFlags::default()
    };
    let base = s
        .mmap(
            0,
            pages * P,
            Prot::READ_WRITE,
            flags,
            MapSource::File {
                file: file.clone(),
                pgoff: 0,
            },
        )
        .unwrap();
    let mut cpu = s.cpu();
    for p in 0..pages {
        assert_eq!(cpu.read_u64(base + p * P).unwrap(), p, "initial page {p}");
        cpu.write_u64(base + p * P + 8, value(p, 8)).unwrap();
    }
    let st = frames.reclaim_stats();
    assert!(st.file_written >= pages - 64, "{st:?}");
    assert!(st.file_dropped >= pages - 64, "{st:?}");
    // Written pages that were evicted are in the store already.
    let in_store = (0..pages)
        .filter(|&p| {
            let page = store.page(p).unwrap();
            u64::from_le_bytes(page[8..16].try_into().unwrap()) == value(p, 8)
        })
        .count() as u64;
    assert!(in_store >= pages - 64, "{in_store} pages written back");
    for p in 0..pages {
        assert_eq!(
            cpu.read_u64(base + p * P + 8).unwrap(),
            value(p, 8),
            "page {p}"
        );
    }
    let private = s
        .mmap(
            0,
            4 * P,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::File {
                file: file.clone(),
                pgoff: 0,
            },
        )
        .unwrap();
    cpu.write_u64(private, 99).unwrap();
    assert_eq!(cpu.read_u64(private + 8).unwrap(), value(0, 8));
    assert_eq!(
        cpu.read_u64(base).unwrap(),
        0,
        "the private write stays private"
    );
    drop(cpu);
    check(&frames, &[&s]);
    file.sync().unwrap();
    for p in 0..pages {
        let page = store.page(p).unwrap();
        assert_eq!(
            u64::from_le_bytes(page[8..16].try_into().unwrap()),
            value(p, 8)
        );
    }
}
