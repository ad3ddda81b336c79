//! Loom models of reclaim against a store, on the production code
//! (the reference counts, the fill lock, the rmap lock, the PTE locks and
//! the shootdown all come from the `sync` shim, loom's under `--cfg loom`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!   cargo test -p vmspace --release --test loom_reclaim
//! ```
//!
//! (`scripts/test.sh` runs them at three preemptions.)
//!
//! `store_vs_reclaim_of_a_shared_file_page`: a shared file page, written
//! once, is reclaimed (unmapped through the reverse map, written back,
//! evicted by freezing its count) while another
//! thread stores to it and zaps it (`MADV_DONTNEED`): the store goes
//! through the old entry, through an entry a fault installs again (its
//! page-cache lookup's `try_get` racing the freeze), or after a refill from
//! the store, and the zap may drop the entry's reference between eviction's
//! freeze and anything else. Whatever the interleaving, the store is not
//! lost: the page reads it afterwards, and the backing store holds it after
//! a sync.
//!
//! `store_vs_swap_out_of_an_anonymous_page`: the same for a private page
//! that reclaim swaps out (see its comment).
#![cfg(loom)]

use loom::thread;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use vmspace::{
    AddressSpace, Config, File, FrameAllocator, MapFlags, MapSource, MemoryStore, Prot, Strategy,
    PAGE_SIZE, TASK_SIZE,
};

const P: u64 = PAGE_SIZE;

/// Interleavings run, and those in which reclaim evicted the page.
static RUNS: AtomicUsize = AtomicUsize::new(0);
static EVICTED: AtomicUsize = AtomicUsize::new(0);
/// Inside the 24-bit loom address space.
const A: u64 = 0x10_0000;

/// The store, shared with the test so that it can look inside after the
/// file is gone.
struct Shared(Arc<MemoryStore>);

impl vmspace::BackingStore for Shared {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_page(pgoff, buf)
    }
    fn write_page(&self, pgoff: u64, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_page(pgoff, buf)
    }
}

#[test]
fn store_vs_reclaim_of_a_shared_file_page() {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(|| {
        // Two frames: the page and a spare (a refill may come before the
        // eviction's frame is back).
        let frames = Arc::new(FrameAllocator::new(2 * P).unwrap());
        let store = Arc::new(MemoryStore::new(1, |_, _| ()));
        let file = File::new(1, Box::new(Shared(store.clone())), frames.clone());
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
            shared: true,
            fixed: true,
            ..MapFlags::default()
        };
        let src = MapSource::File {
            file: file.clone(),
            pgoff: 0,
        };
        assert_eq!(s.mmap(A, P, Prot::READ_WRITE, flags, src), Ok(A));
        let mut cpu = s.cpu();
        cpu.write_u8(A, 1).unwrap();
        let s2 = s.clone();
        let writer = thread::spawn(move || {
            cpu.write_u8(A, 7).unwrap();
            drop(cpu);
            // The entry goes (and its frame reference with it) while
            // reclaim may be evicting the page; `DONTNEED` writes nothing
            // back (`munmap` would).
            s2.madvise_dontneed(A, P).unwrap();
        });
        // One visit clears the accessed bit, the next reclaims.
        frames.reclaim(1);
        writer.join().unwrap();
        RUNS.fetch_add(1, Relaxed);
        if frames.reclaim_stats().file_dropped > 0 {
            EVICTED.fetch_add(1, Relaxed);
        }
        let mut me = s.cpu();
        assert_eq!(me.read_u8(A), Ok(7), "the store was lost");
        drop(me);
        file.sync().unwrap();
        assert_eq!(
            store.page(0).unwrap()[0],
            7,
            "the store did not reach the file"
        );
        drop(s);
        drop(file);
    });
    let (runs, evicted) = (RUNS.load(Relaxed), EVICTED.load(Relaxed));
    eprintln!("{runs} interleavings, {evicted} of them evicted the page");
    assert!(
        evicted > 0 && evicted < runs,
        "{evicted} of {runs}: the race was not explored"
    );
}

/// A private anonymous page swapped out by reclaim (every entry turned into
/// a swap entry through the reverse map, the frame written to its slot and
/// freed by freezing its count) while another thread stores to it and loads
/// it back: the store lands in the frame before it is written, or faults on
/// the swap entry (a swap-cache hit under the frame lock, or a read of the
/// slot with no lock held). The thread reads its own store; afterwards the
/// page holds it, every slot reference is accounted for, and nothing leaks.
#[test]
fn store_vs_swap_out_of_an_anonymous_page() {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    // Swap-out, swap-in and the teardown are long paths.
    b.max_branches = 100_000;
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("loom-swap-{}", std::process::id()));
    b.check(move || {
        // Room for the page, its swap-in and a spare: the model is about
        // swapping, not about running out of frames.
        let config = vmspace::ArenaConfig {
            bytes: 4 * P,
            swap: Some(vmspace::SwapConfig {
                path: path.clone(),
                slots: 4,
                direct: false,
            }),
            reclaim: vmspace::ReclaimConfig {
                background: false,
                ..vmspace::ReclaimConfig::default()
            },
            ..vmspace::ArenaConfig::default()
        };
        let frames = Arc::new(FrameAllocator::with_config(&config).unwrap());
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
        cpu.write_u8(A, 1).unwrap();
        let writer = thread::spawn(move || {
            cpu.write_u8(A, 7).unwrap();
            let seen = cpu.read_u8(A).unwrap();
            drop(cpu);
            seen
        });
        // One visit clears the accessed bit, the next swaps out.
        frames.reclaim(1);
        assert_eq!(writer.join().unwrap(), 7, "the thread lost its own store");
        SWAP_RUNS.fetch_add(1, Relaxed);
        // The writer met the swap entry (or the frame in the swap cache).
        if frames.reclaim_stats().swap_ins > 0 {
            SWAPPED.fetch_add(1, Relaxed);
        }
        let mut me = s.cpu();
        assert_eq!(me.read_u8(A), Ok(7), "the store was lost");
        drop(me);
        s.check_invariants().unwrap();
        frames.check_swap(&[&s]).unwrap();
        drop(s);
        frames.drop_swap_cache();
        assert_eq!(frames.swap_device().unwrap().used(), 0, "a slot leaked");
        assert_eq!(frames.in_use(), 0, "a frame leaked");
    });
    let (runs, swapped) = (SWAP_RUNS.load(Relaxed), SWAPPED.load(Relaxed));
    eprintln!("{runs} interleavings, in {swapped} of them the writer swapped the page in");
    assert!(
        swapped > 0 && swapped < runs,
        "{swapped} of {runs}: the race was not explored"
    );
}

static SWAP_RUNS: AtomicUsize = AtomicUsize::new(0);
static SWAPPED: AtomicUsize = AtomicUsize::new(0);
