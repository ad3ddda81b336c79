//! Deterministic race tests: a fault that sleeps in its backing store while
//! writers run, the StackRot regression, named regressions for fault races,
//! the VMA cache against replaced VMAs, and the share of lockless faults.

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use vmspace::*;

const P: u64 = PAGE_SIZE;
/// How long a test waits for something that must happen before it fails.
const TIMEOUT: Duration = Duration::from_secs(10);

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

fn fixed() -> MapFlags {
    MapFlags {
        fixed: true,
        ..MapFlags::default()
    }
}

fn anon(s: &AddressSpace, addr: u64, len: u64, prot: Prot) -> u64 {
    s.mmap(addr, len, prot, fixed(), MapSource::Anon).unwrap()
}

/// Runs `f` on another thread and waits at most `TIMEOUT` for it: a call
/// that blocks fails the test instead of hanging it.
fn within_timeout<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("{what} did not return while a fault slept in I/O"))
}

// ---------------------------------------------------------------------------
// (a) A fault that sleeps in its backing store holds no lock.

/// A slow store whose reads block until the test opens the gate; it tells
/// the test when a read has started.
struct GateStore {
    open: Mutex<bool>,
    cv: Condvar,
    entered: Mutex<mpsc::Sender<u64>>,
}

impl BackingStore for GateStore {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> io::Result<()> {
        let _ = self.entered.lock().unwrap().send(pgoff);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
        buf.fill(pgoff as u8 + 1);
        Ok(())
    }
    fn write_page(&self, _: u64, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn is_slow(&self) -> bool {
        true
    }
}

fn sleeping_fault(strategy: Strategy, unmap_faulting_range: bool) {
    let s = space(strategy, 64);
    let (tx, entered) = mpsc::channel();
    let store = Arc::new(GateStore {
        open: Mutex::new(false),
        cv: Condvar::new(),
        entered: Mutex::new(tx),
    });
    struct Shared(Arc<GateStore>);
    impl BackingStore for Shared {
        fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_page(pgoff, buf)
        }
        fn write_page(&self, pgoff: u64, buf: &[u8]) -> io::Result<()> {
            self.0.write_page(pgoff, buf)
        }
        fn is_slow(&self) -> bool {
            true
        }
    }
    let file = File::new(4, Box::new(Shared(store.clone())), s.frames().clone());
    let fa = 0x1000_0000;
    let src = MapSource::File { file, pgoff: 0 };
    s.mmap(fa, 4 * P, Prot::READ, fixed(), src).unwrap();
    let other = anon(&s, 0x2000_0000, 4 * P, Prot::READ_WRITE);
    let faulter = {
        let s = s.clone();
        thread::spawn(move || s.cpu().read_u8(fa + P))
    };
    assert_eq!(
        entered.recv_timeout(TIMEOUT),
        Ok(1),
        "the fault never reached the store"
    );
    // While the fault sleeps: writers elsewhere, and on the faulting range.
    let s2 = s.clone();
    within_timeout("mmap/munmap/mprotect elsewhere", move || {
        let a = s2
            .mmap(
                0,
                8 * P,
                Prot::READ_WRITE,
                MapFlags::default(),
                MapSource::Anon,
            )
            .unwrap();
        s2.cpu().write_u8(a, 1).unwrap();
        s2.munmap(a, 8 * P).unwrap();
        s2.mprotect(other, P, Prot::READ).unwrap();
        s2.munmap(other, 4 * P).unwrap();
    });
    if unmap_faulting_range {
        let s2 = s.clone();
        within_timeout("munmap of the faulting range", move || {
            s2.munmap(fa, 4 * P).unwrap()
        });
    }
    // Release the store: the fault retries and reports the current state.
    *store.open.lock().unwrap() = true;
    store.cv.notify_all();
    let r = faulter.join().unwrap();
    if unmap_faulting_range {
        assert_eq!(r.unwrap_err().cause, FaultCause::NoMapping, "{strategy:?}");
        assert_eq!(s.debug_ptes(fa, fa + 4 * P), vec![]);
    } else {
        assert_eq!(r, Ok(2), "{strategy:?}");
        assert_eq!(s.cpu().read_u8(fa + P + 9), Ok(2));
    }
    assert!(s.fault_stats().retry >= 1);
}

#[test]
fn sleeping_fault_blocks_no_writer() {
    for strategy in Strategy::ALL {
        sleeping_fault(strategy, false);
        sleeping_fault(strategy, true);
    }
}

// ---------------------------------------------------------------------------
// (b) StackRot (CVE-2023-3269): stack growth racing lockless faults and
// changes to neighbouring ranges.

#[test]
fn stackrot_regression() {
    for strategy in Strategy::ALL {
        let s = space(strategy, 4096);
        let top = 0x4000_0000u64;
        let grows = MapFlags {
            fixed: true,
            growsdown: true,
            ..MapFlags::default()
        };
        s.mmap(top - 4 * P, 4 * P, Prot::READ_WRITE, grows, MapSource::Anon)
            .unwrap();
        // A neighbour far enough below to leave room for growth plus the gap.
        let low = top - 64 * P - STACK_GUARD_GAP - 16 * P;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        // Growers: fault just below the stack, page by page, and check content.
        for t in 0..2u64 {
            let s = s.clone();
            threads.push(thread::spawn(move || {
                let mut cpu = s.cpu();
                for i in 4..64u64 {
                    let a = top - (i + 1) * P + t * 8;
                    cpu.write_u64(a, a ^ 0x5a5a).unwrap();
                    assert_eq!(cpu.read_u64(a), Ok(a ^ 0x5a5a), "stack content lost");
                }
            }));
        }
        // Lockless readers of the stack's top pages.
        for _ in 0..2 {
            let (s, stop) = (s.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                let mut cpu = s.cpu();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for i in 0..4u64 {
                        let v = cpu.read_u64(top - (i + 1) * P + 64).unwrap();
                        assert!(v == 0 || v == 0x77, "foreign memory {v:#x}");
                        assert_ne!(v, POISON);
                    }
                    cpu.write_u64(top - P + 64, 0x77).unwrap();
                }
            }));
        }
        // Neighbours below the gap: map, touch, remap, unmap.
        {
            let (s, stop) = (s.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                let mut cpu = s.cpu();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let a = anon(&s, low, 4 * P, Prot::READ_WRITE);
                    cpu.write_u8(a, 3).unwrap();
                    let b = s
                        .mremap(a, 4 * P, 8 * P, RemapFlags::default())
                        .unwrap_or(a);
                    assert_eq!(cpu.read_u8(b), Ok(3));
                    s.munmap(low, 8 * P).unwrap();
                }
            }));
        }
        for t in threads.drain(..2) {
            t.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let maps = s.maps();
        let stack = maps.iter().find(|m| m.end == top).unwrap();
        assert_eq!(stack.start, top - 64 * P, "{strategy:?}: {maps:?}");
        let mut cpu = s.cpu();
        for i in 4..64u64 {
            let a = top - (i + 1) * P;
            assert_eq!(cpu.read_u64(a), Ok(a ^ 0x5a5a));
        }
        drop(cpu);
        s.munmap(top - 64 * P, 64 * P).unwrap();
        assert_eq!(s.frames().in_use(), 0, "{strategy:?}: frames leaked");
    }
}

// ---------------------------------------------------------------------------
// (c) Named regressions: one race each, repeated, on every strategy.

fn repeat(f: impl Fn(Strategy, u32)) {
    for strategy in Strategy::ALL {
        for round in 0..300 {
            f(strategy, round);
        }
    }
}

/// A write fault racing `mprotect(READ)` of its page: after both, the page
/// is not writable, and it holds the written byte only if the write succeeded.
#[test]
fn fault_vs_mprotect_downgrade() {
    repeat(|strategy, _| {
        let s = space(strategy, 16);
        let a = anon(&s, 0x1000_0000, 2 * P, Prot::READ_WRITE);
        s.cpu().write_u8(a + P, 1).unwrap(); // an anonymous object exists
        let t = {
            let s = s.clone();
            thread::spawn(move || s.cpu().write_u8(a, 9))
        };
        s.mprotect(a, P, Prot::READ).unwrap();
        let r = t.join().unwrap();
        assert!(s.debug_ptes(a, a + P).iter().all(|p| !p.write));
        let mut cpu = s.cpu();
        assert_eq!(
            cpu.write_u8(a, 1).unwrap_err().cause,
            FaultCause::Protection
        );
        let expect = if r.is_ok() { 9 } else { 0 };
        assert_eq!(cpu.read_u8(a), Ok(expect), "{strategy:?} {r:?}");
    });
}

/// A write fault racing `munmap` of the same page: no entry and no frame
/// left, and the fault either succeeded first or reports no mapping.
#[test]
fn fault_vs_munmap_same_page() {
    repeat(|strategy, _| {
        let s = space(strategy, 16);
        let a = anon(&s, 0x1000_0000, P, Prot::READ_WRITE);
        let t = {
            let s = s.clone();
            thread::spawn(move || s.cpu().write_u8(a, 9))
        };
        s.munmap(a, P).unwrap();
        if let Err(e) = t.join().unwrap() {
            assert_eq!(e.cause, FaultCause::NoMapping);
        }
        assert_eq!(s.debug_ptes(a, a + P), vec![]);
        assert_eq!(s.frames().in_use(), 0, "{strategy:?}");
    });
}

/// A copy-on-write fault (read first: zero page; then write) racing
/// `madvise(MADV_DONTNEED)`: the page reads as the write or as zero, never as
/// anything else, and the frame accounting matches the page table.
#[test]
fn cow_fault_vs_madvise_dontneed() {
    repeat(|strategy, _| {
        let s = space(strategy, 16);
        let a = anon(&s, 0x1000_0000, 2 * P, Prot::READ_WRITE);
        let mut cpu = s.cpu();
        cpu.write_u8(a + P, 1).unwrap();
        assert_eq!(cpu.read_u8(a), Ok(0));
        let t = thread::spawn(move || {
            let r = cpu.write_u8(a, 9);
            (r, cpu.read_u8(a))
        });
        s.madvise_dontneed(a, P).unwrap();
        let (r, seen) = t.join().unwrap();
        r.unwrap();
        assert!(matches!(seen, Ok(0) | Ok(9)), "{strategy:?} {seen:?}");
        let v = s.cpu().read_u8(a).unwrap();
        assert!(v == 0 || v == 9);
        let owned = s
            .debug_ptes(0, ADDR_LIMIT)
            .iter()
            .filter(|p| p.frame.0 != 0)
            .count();
        assert_eq!(s.frames().in_use(), owned, "{strategy:?}");
    });
}

/// Two copy-on-write faults on the same read-only private file page at once:
/// only the fault whose copy went in may drop the page-cache frame's
/// reference. (Both dropped it once; the cached page was freed while still in
/// the cache and then read as poison: found by `vmspace torture`.)
#[test]
fn two_cow_faults_on_one_page_cache_page() {
    for strategy in Strategy::ALL {
        let frames = Arc::new(FrameAllocator::new(64 * P).unwrap());
        let file = File::new(
            1,
            Box::new(MemoryStore::new(1, |_, page| page[0] = 42)),
            frames.clone(),
        );
        let s = AddressSpace::new(
            Config {
                strategy,
                ..Config::default()
            },
            frames.clone(),
        )
        .unwrap();
        let source = || MapSource::File {
            file: file.clone(),
            pgoff: 0,
        };
        let a = 0x1000_0000;
        for round in 0..400 {
            s.mmap(a, P, Prot::READ_WRITE, fixed(), source()).unwrap();
            // Map the page-cache page read-only first, so both writes copy.
            assert_eq!(s.cpu().read_u8(a), Ok(42));
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let writers: Vec<_> = (0..2u8)
                .map(|i| {
                    let (s, barrier) = (s.clone(), barrier.clone());
                    thread::spawn(move || {
                        let mut cpu = s.cpu();
                        barrier.wait();
                        cpu.write_u8(a + 1 + u64::from(i), 7)
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap().unwrap();
            }
            s.munmap(a, P).unwrap();
            // The cache still holds the page, with its content.
            s.mmap(a, P, Prot::READ, fixed(), source()).unwrap();
            assert_eq!(s.cpu().read_u8(a), Ok(42), "{strategy:?} round {round}");
            s.munmap(a, P).unwrap();
            assert_eq!(
                frames.in_use(),
                1,
                "{strategy:?} round {round}: only the cached page"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The VMA cache never returns a replaced VMA (CVE-2018-17182).

/// A `Cpu` caches a read-write VMA, then a writer replaces it by a read-only
/// one of the same range: the `Cpu` must see the new VMA (a stale hit would
/// install a writable entry and read the old data). In Linux the hole was a
/// 32-bit cache sequence that wrapped; here hits are validated by each VMA's
/// own lock word, and the address-space lock sequence (which the lock words
/// hold) is taken across 2^32 and 2^33 while the entry is cached.
#[test]
fn vma_cache_never_returns_a_replaced_vma() {
    for strategy in [Strategy::PerVma, Strategy::Speculative] {
        for start in [0, (1u64 << 32) - 2, (1u64 << 33) - 1] {
            let s = space(strategy, 16);
            let a = anon(&s, 0x1000_0000, 2 * P, Prot::READ_WRITE);
            let mut cpu = s.cpu();
            cpu.write_u8(a + P, 1).unwrap(); // an anonymous object exists
            s.debug_advance_lock_sequence(start);
            cpu.write_u8(a, 5).unwrap(); // cached, and the Cpu read the sequence
            s.munmap(a, P).unwrap();
            anon(&s, a, P, Prot::READ);
            if start > 0 {
                assert!(
                    s.debug_lock_sequence() >> 32 > start >> 32,
                    "the sequence crossed a 2^32 boundary"
                );
            }
            assert_eq!(
                cpu.read_u8(a),
                Ok(0),
                "{strategy:?}: stale VMA from the cache"
            );
            let e = cpu.write_u8(a, 6).unwrap_err();
            assert_eq!(e.cause, FaultCause::Protection, "{strategy:?}: stale hit");
            assert!(s.debug_ptes(a, a + P).iter().all(|p| !p.write));
            // The cached VMA that stayed (the second page) is still used.
            cpu.write_u8(a + P + 8, 2).unwrap();
            assert_eq!(cpu.read_u8(a + P + 8), Ok(2));
        }
    }
}

// ---------------------------------------------------------------------------
// Uncontended faults stay lockless.

/// page_fault1 (map 16 MiB private anonymous, write one byte per page,
/// unmap, repeat) on one thread: at least 99% of the faults of the per-vma
/// and speculative strategies complete without the address-space lock.
#[test]
fn uncontended_faults_are_lockless() {
    for strategy in [Strategy::PerVma, Strategy::Speculative] {
        let len = 16u64 << 20;
        let s = space(strategy, len / P + 16);
        let mut cpu = s.cpu();
        let start = Instant::now();
        for _ in 0..4 {
            let a = s
                .mmap(
                    0,
                    len,
                    Prot::READ_WRITE,
                    MapFlags::default(),
                    MapSource::Anon,
                )
                .unwrap();
            let mut x = a;
            while x < a + len {
                cpu.write_u8(x, 1).unwrap();
                x += P;
            }
            s.munmap(a, len).unwrap();
        }
        drop(cpu);
        let st = s.fault_stats();
        let total = st.lockless + st.locked;
        assert_eq!(total, 4 * len / P, "{strategy:?}: {st:?}");
        assert!(
            st.lockless * 100 >= total * 99,
            "{strategy:?}: only {} of {total} faults lockless ({st:?})",
            st.lockless
        );
        assert!(start.elapsed() < Duration::from_secs(60));
    }
}
