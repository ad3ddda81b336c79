//! Loom models of the MMU-notifier sequence (`notifier.rs`, "The sequence")
//! on the production code: a device fault of a mirror (`read_begin`,
//! `resolve_range`, the mirror's lock, `read_retry`, the install) against an
//! invalidation (`MADV_DONTNEED` of the page: `invalidate_range_start`, the
//! mirror's zap under its lock, the PTE change, the shootdown, the end).
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!   cargo test -p vmspace --release --test loom_notifier
//! ```
//!
//! Whatever the interleaving, when both are done the mirror maps the page
//! to the frame the CPU entry maps, or not at all: a mirror entry to the
//! old frame (freed by the flush) would be a device access to freed memory.
//! The device reads the old value or the new (zero) one.
//!
//! `device_fault_vs_invalidation`: the mirror subscribed before both.
//! `subscribe_vs_invalidation`: the mirror subscribes while the
//! invalidation runs, so the invalidation may see no subscriber: the
//! subscription must wait for it (the in-flight counts) before its device
//! reads anything.
#![cfg(loom)]

use loom::thread;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use vmspace::{
    AddressSpace, Config, FrameAllocator, MapFlags, MapSource, Mirror, MirrorConfig, Prot,
    Strategy, PAGE_SIZE, TASK_SIZE,
};

const P: u64 = PAGE_SIZE;
/// Inside the 24-bit loom address space.
const A: u64 = 0x10_0000;

/// A space with one private page at `A` holding 7.
fn setup() -> (Arc<FrameAllocator>, Arc<AddressSpace>) {
    let frames = Arc::new(FrameAllocator::new(4 * P).unwrap());
    let s = AddressSpace::new(
        Config {
            strategy: Strategy::PerVma,
            max_map_count: 64,
            mmap_min_addr: P,
            mmap_base: TASK_SIZE,
            ..Config::default()
        },
        frames.clone(),
    )
    .unwrap();
    let flags = MapFlags {
        fixed: true,
        ..MapFlags::default()
    };
    assert_eq!(
        s.mmap(A, P, Prot::READ_WRITE, flags, MapSource::Anon),
        Ok(A)
    );
    let mut cpu = s.cpu();
    cpu.write_u64(A, 7).unwrap();
    (frames, s)
}

/// The mirror maps `A` to what the CPU entry maps, or not at all.
fn check_coherent(s: &AddressSpace, mirror: &Mirror) {
    let cpu = s.debug_ptes(A, A + P).first().map(|p| p.frame);
    if let Some((frame, _)) = mirror.translation(A) {
        assert_eq!(Some(frame), cpu, "the mirror kept a stale translation");
    }
}

/// Runs `f` under loom; `f` returns what the device read. Both values must
/// have been seen (the race was explored).
fn model(name: &str, f: impl Fn() -> u64 + Sync + Send + 'static) {
    static OLD: AtomicUsize = AtomicUsize::new(0);
    static NEW: AtomicUsize = AtomicUsize::new(0);
    OLD.store(0, Relaxed);
    NEW.store(0, Relaxed);
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(move || match f() {
        7 => drop(OLD.fetch_add(1, Relaxed)),
        0 => drop(NEW.fetch_add(1, Relaxed)),
        v => panic!("the device read {v}"),
    });
    let (old, new) = (OLD.load(Relaxed), NEW.load(Relaxed));
    eprintln!(
        "{name}: {} interleavings, {old} read the old page",
        old + new
    );
    assert!(old > 0 && new > 0, "{name}: the race was not explored");
}

#[test]
fn device_fault_vs_invalidation() {
    model("device_fault_vs_invalidation", || {
        let (_frames, s) = setup();
        let mirror = Arc::new(Mirror::new(&s, MirrorConfig::default()));
        let mut dev = mirror.device();
        let device = thread::spawn(move || dev.read_u64(A).unwrap());
        s.madvise_dontneed(A, P).unwrap();
        let seen = device.join().unwrap();
        check_coherent(&s, &mirror);
        seen
    });
}

#[test]
fn subscribe_vs_invalidation() {
    model("subscribe_vs_invalidation", || {
        let (_frames, s) = setup();
        let s2 = s.clone();
        let device = thread::spawn(move || {
            let mirror = Mirror::new(&s2, MirrorConfig::default());
            let seen = mirror.device().read_u64(A).unwrap();
            (mirror, seen)
        });
        s.madvise_dontneed(A, P).unwrap();
        let (mirror, seen) = device.join().unwrap();
        check_coherent(&s, &mirror);
        seen
    });
}
