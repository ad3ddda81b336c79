//! Issue 14, MMU notifiers and a device mirror. Every path that changes
//! translations tells the subscribers first, with its event. A device
//! mirror stays coherent with the CPU page table: CPU and device see each
//! other's writes, munmap takes the mirror's entries, a downgrade leaves
//! them readable. An invalidation between a reader's `read_begin` and its
//! install makes it retry. A non-blockable invalidation (the spinning rmap
//! lock) never sleeps, and reclaim moves on. `release` comes at teardown.
//! Device writes are never lost while the CPU side forks, swaps, protects
//! and zaps.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use vmspace::{
    Access, AddressSpace, Advice, ArenaConfig, Busy, Config, Event, FaultCause, File,
    FrameAllocator, MapFlags, MapSource, MemoryStore, Mirror, MirrorConfig, MmuNotifier,
    NotifierRange, Prot, ReclaimConfig, RemapFlags, RmapLockKind, Strategy, SwapConfig, PAGE_SIZE,
};

const P: u64 = PAGE_SIZE;

fn arena(frames: u64, rmap_lock: RmapLockKind, swap: Option<&str>) -> Arc<FrameAllocator> {
    let config = ArenaConfig {
        bytes: frames * P,
        rmap_lock,
        swap: swap.map(|name| SwapConfig {
            path: PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("issue14-{}-{name}", std::process::id())),
            slots: 4096,
            direct: false,
        }),
        reclaim: ReclaimConfig {
            background: false,
            ..ReclaimConfig::default()
        },
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

fn anon(space: &AddressSpace, pages: u64, prot: Prot) -> u64 {
    space
        .mmap(0, pages * P, prot, MapFlags::default(), MapSource::Anon)
        .unwrap()
}

fn shared_file(space: &AddressSpace, file: &Arc<File>, pages: u64) -> u64 {
    let flags = MapFlags {
        shared: true,
        ..MapFlags::default()
    };
    let source = MapSource::File {
        file: file.clone(),
        pgoff: 0,
    };
    space
        .mmap(0, pages * P, Prot::READ_WRITE, flags, source)
        .unwrap()
}

/// One call a [`Recorder`] saw: the range, and how many of its pages were
/// mapped when `start` and `end` ran.
#[derive(Clone, Debug)]
struct Call {
    range: NotifierRange,
    mapped_at_start: usize,
    mapped_at_end: Option<usize>,
}

/// A notifier that records every call and what the page table held then.
#[derive(Default)]
struct Recorder {
    space: OnceLock<Weak<AddressSpace>>,
    calls: Mutex<Vec<Call>>,
    released: AtomicBool,
}

impl Recorder {
    fn on(space: &Arc<AddressSpace>) -> Arc<Recorder> {
        let r = Arc::new(Recorder::default());
        r.space.set(Arc::downgrade(space)).unwrap();
        space.subscribe(r.clone());
        r
    }

    fn mapped(&self, range: &NotifierRange) -> usize {
        let space = self.space.get().unwrap().upgrade();
        space.map_or(0, |s| s.debug_ptes(range.start, range.end).len())
    }

    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }

    /// The calls of `event`, each checked to have been ended.
    fn of(&self, event: Event) -> Vec<Call> {
        let calls: Vec<Call> = self
            .take()
            .into_iter()
            .filter(|c| c.range.event == event)
            .collect();
        for c in &calls {
            assert!(c.mapped_at_end.is_some(), "{c:?} was never ended");
        }
        calls
    }
}

impl MmuNotifier for Recorder {
    fn invalidate_range_start(&self, range: &NotifierRange) -> Result<(), Busy> {
        let mapped_at_start = self.mapped(range);
        self.calls.lock().unwrap().push(Call {
            range: *range,
            mapped_at_start,
            mapped_at_end: None,
        });
        Ok(())
    }

    fn invalidate_range_end(&self, range: &NotifierRange) {
        let mapped = self.mapped(range);
        let mut calls = self.calls.lock().unwrap();
        let open = calls
            .iter_mut()
            .rev()
            .find(|c| c.range == *range && c.mapped_at_end.is_none())
            .expect("an end without its start");
        open.mapped_at_end = Some(mapped);
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

/// munmap, mprotect, mremap, DONTNEED, MADV_FREE, fork, a copy-on-write
/// break, try_to_unmap and a write-back's cleaning each call the subscriber
/// before the entries change (the pages are still mapped in `start`), with
/// the right event, and end the call after the change.
#[test]
fn every_path_notifies_before_the_entries_change() {
    for strategy in Strategy::ALL {
        let frames = arena(256, RmapLockKind::RwsemSpin, None);
        let s = space(&frames, strategy);
        let rec = Recorder::on(&s);
        let mut cpu = s.cpu();
        let a = anon(&s, 4, Prot::READ_WRITE);
        for i in 0..4 {
            cpu.write_u64(a + i * P, i + 1).unwrap();
        }
        rec.take();

        s.mprotect(a, 2 * P, Prot::READ).unwrap();
        let c = rec.of(Event::Protect);
        assert_eq!(c.len(), 1, "{strategy:?}: {c:?}");
        assert_eq!((c[0].range.start, c[0].range.end), (a, a + 2 * P));
        assert!(c[0].range.write_only && c[0].range.blockable);
        assert_eq!(c[0].mapped_at_start, 2);
        s.mprotect(a, 2 * P, Prot::NONE).unwrap();
        assert!(!rec.of(Event::Protect)[0].range.write_only);
        s.mprotect(a, 2 * P, Prot::READ_WRITE).unwrap();

        s.madvise(a + P, P, Advice::Free).unwrap();
        let c = rec.of(Event::Clean);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].range.write_only);

        s.madvise_dontneed(a + 3 * P, P).unwrap();
        let c = rec.of(Event::Zap);
        assert_eq!((c.len(), c[0].mapped_at_start), (1, 1), "{c:?}");
        assert_eq!(c[0].mapped_at_end, Some(0));

        let child = s.fork();
        let c = rec.of(Event::Fork);
        assert!(
            !c.is_empty() && c.iter().all(|c| c.range.write_only),
            "{c:?}"
        );
        assert!(c.iter().any(|c| c.range.start <= a && a < c.range.end));
        cpu.write_u64(a + 2 * P, 9).unwrap();
        let c = rec.of(Event::CowBreak);
        assert_eq!(c.len(), 1, "{strategy:?}: {c:?}");
        assert_eq!((c[0].range.start, c[0].mapped_at_start), (a + 2 * P, 1));
        drop(child);

        let b = s
            .mremap(
                a,
                4 * P,
                4 * P,
                RemapFlags {
                    may_move: true,
                    fixed: Some(a + 64 * P),
                },
            )
            .unwrap();
        let c = rec.of(Event::Move);
        assert_eq!((c.len(), c[0].range.start), (1, a), "{c:?}");
        assert!(c[0].mapped_at_start > 0);
        assert_eq!(c[0].mapped_at_end, Some(0));

        s.munmap(b, 4 * P).unwrap();
        let c = rec.of(Event::Unmap);
        assert_eq!(
            (c.len(), c[0].range.start, c[0].range.end),
            (1, b, b + 4 * P)
        );
        assert!(c[0].mapped_at_start > 0, "{c:?}");
        assert_eq!(c[0].mapped_at_end, Some(0));

        let file = File::new(4, Box::new(MemoryStore::new(4, |_, _| {})), frames.clone());
        let m = shared_file(&s, &file, 4);
        cpu.write_u64(m, 5).unwrap();
        rec.take();
        file.sync().unwrap();
        let c = rec.of(Event::Clean);
        assert_eq!((c.len(), c[0].range.start, c[0].mapped_at_start), (1, m, 1));
        let f = s.debug_ptes(m, m + P)[0].frame;
        assert_eq!(frames.try_to_unmap(f), Ok(1));
        let c = rec.of(Event::Reclaim);
        assert_eq!((c.len(), c[0].mapped_at_start), (1, 1), "{c:?}");
        assert_eq!(c[0].mapped_at_end, Some(0));
        assert!(c[0].range.blockable, "the sleeping rmap lock lets it block");

        drop(cpu);
        assert!(!rec.released.load(Ordering::SeqCst));
        drop(s);
        assert!(rec.released.load(Ordering::SeqCst), "release at teardown");
    }
}

/// A range subscription hears only of the changes that meet its range, and
/// nothing after it unsubscribed.
#[test]
fn a_range_subscription_hears_only_its_range() {
    let frames = arena(64, RmapLockKind::Rwsem, None);
    let s = space(&frames, Strategy::PerVma);
    let a = anon(&s, 8, Prot::READ_WRITE);
    let rec = Arc::new(Recorder::default());
    rec.space.set(Arc::downgrade(&s)).unwrap();
    let sub = s.subscribe_range(a + 2 * P, 2 * P, rec.clone()).unwrap();
    assert_eq!(sub.range(), (a + 2 * P, a + 4 * P));
    s.madvise_dontneed(a, 2 * P).unwrap();
    s.madvise_dontneed(a + 4 * P, 4 * P).unwrap();
    assert!(rec.take().is_empty());
    let seq = sub.read_begin();
    s.madvise_dontneed(a + 3 * P, 2 * P).unwrap();
    assert_eq!(rec.of(Event::Zap).len(), 1);
    assert!(sub.read_retry(seq), "the sequence moved");
    assert_eq!(s.subscriptions(), 1);
    s.unsubscribe(&sub);
    assert_eq!(s.subscriptions(), 0);
    s.munmap(a, 8 * P).unwrap();
    assert!(rec.take().is_empty());
    for (start, len) in [(a + 1, P), (a, 0), (a, u64::MAX), (vmspace::TASK_SIZE, P)] {
        assert!(s.subscribe_range(start, len, rec.clone()).is_err());
    }
}

/// The reader's protocol: an invalidation between `read_begin` and the
/// install makes `read_retry` say so; a resolve after it sees the new
/// entries.
#[test]
fn an_invalidation_between_read_begin_and_install_forces_a_retry() {
    let frames = arena(64, RmapLockKind::Rwsem, None);
    let s = space(&frames, Strategy::Speculative);
    let mirror = Mirror::new(&s, MirrorConfig::default());
    let sub = mirror.subscription().clone();
    let a = anon(&s, 2, Prot::READ_WRITE);
    let mut cpu = s.cpu();
    cpu.write_u64(a, 7).unwrap();
    let seq = sub.read_begin();
    let mut pages = Vec::new();
    s.resolve_range(a, a + 2 * P, Access::Write, &mut pages)
        .unwrap();
    assert_eq!(pages.len(), 2);
    assert!(pages.iter().all(|p| p.writable));
    let old = pages[0].frame;
    assert!(!sub.read_retry(seq), "nothing changed yet");
    // The invalidation lands before the reader installs.
    s.madvise_dontneed(a, P).unwrap();
    assert!(sub.read_retry(seq), "the reader must retry");
    let seq = sub.read_begin();
    pages.clear();
    s.resolve_range(a, a + P, Access::Read, &mut pages).unwrap();
    assert!(!sub.read_retry(seq));
    assert_eq!(cpu.read_u64(a).unwrap(), 0, "DONTNEED zeroed it");
    assert_eq!(s.debug_ptes(a, a + P)[0].frame, pages[0].frame);
    assert!(pages[0].frame != old || frames.refcount(old) > 0);
    // A page the access may not reach is the access's fault.
    let err = s
        .resolve_range(a + 8 * P, a + 9 * P, Access::Read, &mut pages)
        .unwrap_err();
    assert_eq!(err.cause, FaultCause::NoMapping);
}

/// CPU and device see each other's writes through one frame; munmap takes
/// the mirror's entries (and the device then faults); a downgrade to
/// read-only leaves the mirror readable but not writable.
#[test]
fn the_mirror_follows_the_cpu_page_table() {
    for strategy in Strategy::ALL {
        let frames = arena(64, RmapLockKind::RwsemSpin, None);
        let s = space(&frames, strategy);
        let mirror = Mirror::new(&s, MirrorConfig::default());
        let mut dev = mirror.device();
        let mut cpu = s.cpu();
        let a = anon(&s, 4, Prot::READ_WRITE);
        cpu.write_u64(a, 11).unwrap();
        assert_eq!(dev.read_u64(a).unwrap(), 11);
        dev.write_u64(a + 8, 12).unwrap();
        assert_eq!(cpu.read_u64(a + 8).unwrap(), 12);
        assert_eq!(
            mirror.translation(a).unwrap().0,
            s.debug_ptes(a, a + P)[0].frame
        );
        assert!(
            s.debug_ptes(a, a + P)[0].dirty,
            "the device's write dirtied the CPU entry"
        );
        dev.write_u64(a + P, 13).unwrap();
        assert_eq!(cpu.read_u64(a + P).unwrap(), 13);

        s.mprotect(a, 2 * P, Prot::READ).unwrap();
        assert_eq!(
            mirror.translation(a).map(|t| t.1),
            Some(false),
            "kept, read-only"
        );
        let hits = mirror.stats().device_faults;
        assert_eq!(dev.read_u64(a).unwrap(), 11);
        assert_eq!(mirror.stats().device_faults, hits, "a read hits the mirror");
        let err = dev.write_u64(a, 1).unwrap_err();
        assert_eq!(err.cause, FaultCause::Protection);
        assert_eq!(mirror.stats().write_protected, 2);

        let before = mirror.stats().zapped;
        s.munmap(a, 4 * P).unwrap();
        assert_eq!(mirror.entries(), 0);
        assert_eq!(mirror.stats().zapped, before + 2);
        assert_eq!(dev.read_u64(a).unwrap_err().cause, FaultCause::NoMapping);
        drop(cpu);
        s.check_invariants().unwrap();
    }
}

/// A device access counts as a reference for reclaim's aging (the
/// notifier's `clear_young`), as the CPU's accessed bit does.
#[test]
fn device_accesses_count_as_references() {
    let frames = arena(64, RmapLockKind::Rwsem, None);
    let s = space(&frames, Strategy::PerVma);
    let file = File::new(2, Box::new(MemoryStore::new(2, |_, _| {})), frames.clone());
    let m = shared_file(&s, &file, 2);
    let mirror = Mirror::new(&s, MirrorConfig::default());
    let mut dev = mirror.device();
    dev.read_u64(m).unwrap();
    let f = s.debug_ptes(m, m + P)[0].frame;
    assert_eq!(frames.page_referenced(f), 1);
    assert_eq!(frames.page_referenced(f), 0, "both bits were cleared");
    assert!(!s.notifier_test_young(m, m + P));
    dev.read_u64(m).unwrap();
    assert!(s.notifier_test_young(m, m + P));
    assert!(
        !s.debug_ptes(m, m + P)[0].accessed,
        "the CPU entry was not used"
    );
    assert_eq!(frames.page_referenced(f), 1, "the device's use counts");
}

/// Under the spinning rmap lock, reclaim's invalidations are non-blockable:
/// a mirror whose invalidation would sleep answers busy at once, the page
/// stays mapped, and reclaim frees other pages. Under the sleeping rwsem
/// the same invalidation sleeps and the page goes.
#[test]
fn a_non_blockable_invalidation_never_sleeps_and_reclaim_moves_on() {
    let sleep = Duration::from_millis(300);
    for kind in [RmapLockKind::Rwlock, RmapLockKind::Rwsem] {
        let frames = arena(128, kind, None);
        let s = space(&frames, Strategy::PerVma);
        let file = File::new(
            16,
            Box::new(MemoryStore::new(16, |_, _| {})),
            frames.clone(),
        );
        let m = shared_file(&s, &file, 16);
        let mut cpu = s.cpu();
        for i in 0..16 {
            cpu.write_u64(m + i * P, i).unwrap();
        }
        let mirror = Mirror::new(
            &s,
            MirrorConfig {
                invalidate_sleep: sleep,
                sleep_one_in: 1,
            },
        );
        let mut dev = mirror.device();
        assert_eq!(dev.read_u64(m + 3 * P).unwrap(), 3);
        let f = s.debug_ptes(m + 3 * P, m + 4 * P)[0].frame;
        let t = Instant::now();
        let removed = frames.try_to_unmap(f).unwrap();
        let took = t.elapsed();
        let st = mirror.stats();
        if kind == RmapLockKind::Rwlock {
            assert_eq!(removed, 0, "the busy mirror keeps the page mapped");
            assert!(took < sleep, "a non-blockable call slept: {took:?}");
            assert_eq!((st.invalidations_slept, st.busy), (0, 1), "{st:?}");
            assert_eq!(mirror.translation(m + 3 * P).map(|t| t.0), Some(f));
            file.sync().unwrap();
            let before = frames.reclaim_stats();
            let freed = frames.reclaim(64) + frames.reclaim(64);
            let after = frames.reclaim_stats().since(&before);
            assert!(freed >= 8, "reclaim moved on past the busy page: {freed}");
            assert!(after.notifier_busy > 0, "{after:?}");
            assert_eq!(mirror.stats().invalidations_slept, 0);
            assert_eq!(dev.read_u64(m + 3 * P).unwrap(), 3);
        } else {
            assert_eq!(removed, 1);
            assert!(took >= sleep, "the blockable invalidation slept: {took:?}");
            assert_eq!((st.invalidations_slept, st.busy), (1, 0), "{st:?}");
            assert_eq!(mirror.translation(m + 3 * P), None);
        }
        for i in 0..16 {
            assert_eq!(cpu.read_u64(m + i * P).unwrap(), i);
        }
        drop(cpu);
        s.check_invariants().unwrap();
    }
}

/// The address space torn down with a mirror still subscribed: the mirror
/// hears `release`, drops its entries, and its devices' accesses fail.
#[test]
fn release_on_teardown_with_a_mirror_subscribed() {
    let frames = arena(64, RmapLockKind::Rwsem, None);
    let s = space(&frames, Strategy::PerVma);
    let a = anon(&s, 2, Prot::READ_WRITE);
    let mirror = Mirror::new(&s, MirrorConfig::default());
    let mut dev = mirror.device();
    dev.write_u64(a, 3).unwrap();
    assert_eq!(mirror.entries(), 1);
    let free = frames.free_frames();
    drop(s);
    assert!(mirror.is_released());
    assert_eq!(mirror.entries(), 0);
    assert_eq!(dev.read_u64(a).unwrap_err().cause, FaultCause::NoMapping);
    assert!(frames.free_frames() > free, "the space's frames went");
}

/// Device threads count in their own words through the mirror while a CPU
/// thread forks (copy-on-write breaks in the parent), swaps the pages out,
/// write-protects and unprotects them, and subscribes and unsubscribes
/// another notifier. A device write through a stale mirror entry (an old
/// frame after a copy-on-write break or a swap-out) would be lost: every
/// count must be whole at the end, on every strategy and rmap lock.
#[test]
fn device_writes_survive_fork_swap_and_protection_churn() {
    const DEVICES: u64 = 2;
    const COUNTS: u64 = 3000;
    let mut swap_outs = 0;
    for strategy in Strategy::ALL {
        for kind in RmapLockKind::ALL {
            let name = format!("churn-{strategy:?}-{kind:?}");
            let frames = arena(512, kind, Some(&name));
            let s = space(&frames, strategy);
            let a = anon(&s, DEVICES, Prot::READ_WRITE);
            let mirror = Mirror::new(&s, MirrorConfig::default());
            let before = frames.reclaim_stats();
            std::thread::scope(|scope| {
                for d in 0..DEVICES {
                    let mut dev = mirror.device();
                    scope.spawn(move || {
                        let addr = a + d * P + 8 * d;
                        let mut n = 0;
                        while n < COUNTS {
                            match dev.fetch_add_u64(addr, 1) {
                                Ok(prev) => {
                                    assert_eq!(prev, n, "device {d} lost a write");
                                    n += 1;
                                }
                                Err(e) => assert_eq!(e.cause, FaultCause::Protection),
                            }
                            // Idle now and then, so that reclaim finds the
                            // page unused (not young) and swaps it out.
                            if n % 64 == 0 {
                                std::thread::sleep(Duration::from_micros(200));
                            }
                        }
                    });
                }
                scope.spawn(|| {
                    let rec = Arc::new(Recorder::default());
                    let mut round = 0u64;
                    while mirror.stats().device_accesses < DEVICES * COUNTS {
                        match round % 4 {
                            0 => drop(s.fork()),
                            1 => {
                                frames.reclaim(DEVICES as usize);
                                frames.reclaim(DEVICES as usize);
                            }
                            2 => {
                                s.mprotect(a, DEVICES * P, Prot::READ).unwrap();
                                s.mprotect(a, DEVICES * P, Prot::READ_WRITE).unwrap();
                            }
                            _ => {
                                let sub = s.subscribe(rec.clone());
                                s.unsubscribe(&sub);
                                rec.take();
                            }
                        }
                        round += 1;
                    }
                });
            });
            swap_outs += frames.reclaim_stats().since(&before).swap_outs;
            let mut cpu = s.cpu();
            for d in 0..DEVICES {
                assert_eq!(cpu.read_u64(a + d * P + 8 * d).unwrap(), COUNTS, "{name}");
            }
            let st = mirror.stats();
            assert!(st.zapped > 0 && st.write_protected > 0, "{name}: {st:?}");
            drop(cpu);
            s.check_invariants().unwrap();
            frames.check_swap(&[&s]).unwrap();
        }
    }
    assert!(swap_outs > 0, "no page was swapped out under the devices");
}

/// Pinned pages stay: reclaim passes them by while it swaps the others out,
/// and takes them once unpinned.
#[test]
fn pinned_pages_are_not_reclaimed() {
    let frames = arena(256, RmapLockKind::RwsemSpin, Some("pinned"));
    let s = space(&frames, Strategy::PerVma);
    let a = anon(&s, 8, Prot::READ_WRITE);
    let mut cpu = s.cpu();
    for i in 0..8 {
        cpu.write_u64(a + i * P, i + 100).unwrap();
    }
    let pins = s.pin_pages(a, a + 2 * P, Access::Write).unwrap();
    assert_eq!(pins.pages().len(), 2);
    let before = s.debug_ptes(a, a + 2 * P);
    for _ in 0..4 {
        frames.reclaim(64);
    }
    assert_eq!(s.swapped_pages(), 6, "every unpinned page went to swap");
    let after = s.debug_ptes(a, a + 2 * P);
    assert_eq!(
        before.iter().map(|p| p.frame).collect::<Vec<_>>(),
        after.iter().map(|p| p.frame).collect::<Vec<_>>(),
        "the pinned pages stayed in their frames"
    );
    assert!(frames.reclaim_stats().skipped_pinned > 0);
    // The device's DMA lands in the page the CPU reads.
    pins.frames()
        .word(pins.pages()[1].1, 8)
        .store(77, Ordering::Relaxed);
    assert_eq!(cpu.read_u64(a + P + 8).unwrap(), 77);
    drop(pins);
    for _ in 0..4 {
        frames.reclaim(64);
    }
    assert_eq!(s.swapped_pages(), 8, "unpinned, they go too");
    for i in 0..8 {
        assert_eq!(cpu.read_u64(a + i * P).unwrap(), i + 100);
    }
    drop(cpu);
    s.check_invariants().unwrap();
    frames.check_swap(&[&s]).unwrap();
}

/// Fork copies a pinned private page for the child at once: the parent
/// keeps its frame, writable, so the device's later writes reach the parent
/// and not the child; an unpinned page is shared copy-on-write as before.
#[test]
fn fork_copies_a_pinned_page_at_once() {
    for strategy in Strategy::ALL {
        let frames = arena(64, RmapLockKind::Rwsem, None);
        let s = space(&frames, strategy);
        let a = anon(&s, 2, Prot::READ_WRITE);
        let mut cpu = s.cpu();
        cpu.write_u64(a, 1).unwrap();
        cpu.write_u64(a + P, 2).unwrap();
        let pins = s.pin_pages(a, a + P, Access::Write).unwrap();
        let pinned = pins.pages()[0].1;
        let child = s.fork();
        let parent_ptes = s.debug_ptes(a, a + 2 * P);
        let child_ptes = child.debug_ptes(a, a + 2 * P);
        assert_eq!(parent_ptes[0].frame, pinned);
        assert!(
            parent_ptes[0].write,
            "{strategy:?}: the pinned entry stays writable"
        );
        assert_ne!(child_ptes[0].frame, pinned, "the child got a copy");
        assert_eq!(
            child_ptes[1].frame, parent_ptes[1].frame,
            "unpinned: shared"
        );
        assert!(!parent_ptes[1].write, "unpinned: write-protected for COW");
        pins.frames().word(pinned, 0).store(5, Ordering::Relaxed);
        let mut ccpu = child.cpu();
        assert_eq!(cpu.read_u64(a).unwrap(), 5, "the DMA reaches the parent");
        assert_eq!(ccpu.read_u64(a).unwrap(), 1, "and not the child");
        ccpu.write_u64(a, 9).unwrap();
        assert_eq!(cpu.read_u64(a).unwrap(), 5);
        drop((cpu, ccpu));
        s.check_invariants().unwrap();
        child.check_invariants().unwrap();
        // munmap leaves the device its frame until it unpins.
        s.munmap(a, 2 * P).unwrap();
        assert_eq!(frames.pincount(pinned), 1);
        assert!(frames.refcount(pinned) >= 1);
        assert_eq!(pins.frames().word(pinned, 0).load(Ordering::Relaxed), 5);
        let in_use = frames.in_use();
        drop(pins);
        assert_eq!(frames.pincount(pinned), 0);
        assert!(frames.in_use() < in_use, "unpinned, the frame was freed");
    }
}

/// Seed 003's argument, end to end: a device writes a working set twice the
/// memory through a mirror whose every invalidation sleeps. Under the
/// sleeping rmap locks, reclaim sleeps through the device's flushes and
/// swaps the device's own pages out, so every write lands. Under the
/// spinning `rwlock`, every page the device holds answers busy, nothing can
/// be reclaimed, and the device's fault fails with a prompt out-of-memory
/// error (no livelock).
#[test]
fn a_sleeping_mirror_under_the_spinning_lock_runs_out_of_memory() {
    const FRAMES: u64 = 48;
    for kind in RmapLockKind::ALL {
        let frames = arena(FRAMES, kind, Some(&format!("oom-{kind:?}")));
        let s = space(&frames, Strategy::PerVma);
        let a = anon(&s, 2 * FRAMES, Prot::READ_WRITE);
        let mirror = Mirror::new(
            &s,
            MirrorConfig {
                invalidate_sleep: Duration::from_micros(50),
                sleep_one_in: 1,
            },
        );
        let mut dev = mirror.device();
        let t = Instant::now();
        let failed = (0..2 * FRAMES).find_map(|i| dev.write_u64(a + i * P, i + 1).err());
        let st = mirror.stats();
        if kind == RmapLockKind::Rwlock {
            let f = failed.expect("the spinning lock cannot take the device's pages");
            assert_eq!(f.cause, FaultCause::OutOfMemory, "{f:?}");
            assert!(t.elapsed() < Duration::from_secs(10), "not prompt");
            assert_eq!(st.invalidations_slept, 0, "{st:?}");
            assert!(frames.reclaim_stats().notifier_busy > 0);
        } else {
            assert_eq!(failed, None, "{kind:?}: {st:?}");
            assert!(st.invalidations_slept > 0, "{st:?}");
            let mut cpu = s.cpu();
            for i in 0..2 * FRAMES {
                assert_eq!(cpu.read_u64(a + i * P).unwrap(), i + 1, "{kind:?}");
            }
        }
        drop(dev);
        s.check_invariants().unwrap();
        frames.check_swap(&[&s]).unwrap();
    }
}

/// A slow store whose first read of page 0 runs `during` (with no lock of
/// the fault held: a slow read drops them), then reads zeros.
struct InterruptingStore {
    during: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl vmspace::BackingStore for InterruptingStore {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if pgoff == 0 {
            if let Some(f) = self.during.lock().unwrap().take() {
                f();
            }
        }
        buf.fill(0);
        Ok(())
    }
    fn write_page(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn is_slow(&self) -> bool {
        true
    }
}

/// A device fault whose resolve is interrupted by an invalidation (a
/// `DONTNEED` elsewhere in the space, run by the store's read, after the
/// fault's `read_begin` and before its install) retries once and then
/// installs; the mirror ends up coherent with the CPU page table.
#[test]
fn an_invalidation_during_a_device_fault_makes_it_retry() {
    for strategy in Strategy::ALL {
        let frames = arena(64, RmapLockKind::RwsemSpin, None);
        let s = space(&frames, strategy);
        let other = anon(&s, 1, Prot::READ_WRITE);
        s.cpu().write_u64(other, 1).unwrap();
        let weak = Arc::downgrade(&s);
        let store = InterruptingStore {
            during: Mutex::new(Some(Box::new(move || {
                weak.upgrade().unwrap().madvise_dontneed(other, P).unwrap();
            }))),
        };
        let file = File::new(1, Box::new(store), frames.clone());
        let m = shared_file(&s, &file, 1);
        let mirror = Mirror::new(&s, MirrorConfig::default());
        let mut dev = mirror.device();
        assert_eq!(dev.read_u64(m).unwrap(), 0);
        let st = mirror.stats();
        assert_eq!(st.fault_retries, 1, "{strategy:?}: {st:?}");
        assert_eq!(
            mirror.translation(m).map(|t| t.0),
            Some(s.debug_ptes(m, m + P)[0].frame)
        );
        drop(dev);
        s.check_invariants().unwrap();
    }
}
