//! Loom models of the rmap lock (`sync/rmap_lock.rs`), one per kind, run on
//! the production code:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!   cargo test -p vmspace --release --test loom_rmap_lock
//! ```
//!
//! The lock's data is a loom cell, so loom itself reports a reader and a
//! writer (or two writers) inside at once; a lost wake-up of a parked waiter
//! is reported as a deadlock.
#![cfg(loom)]

use loom::thread;
use std::sync::Arc;
use vmspace::sync::rmap_lock::{RmapLock, RmapLockCounters};
use vmspace::RmapLockKind;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    // Spinning waiters (Rwlock, RwsemSpin's optimistic spin) take a branch
    // per spin.
    b.max_branches = 20_000;
    b.check(f);
}

/// `writers` writers and a reader: every increment lands, the reader sees a
/// whole write, and every waiter is woken (no deadlock).
fn writers_and_reader(kind: RmapLockKind, writers: u32) {
    model(move || {
        let l = Arc::new(RmapLock::new(
            kind,
            Arc::new(RmapLockCounters::default()),
            (0u32, 0u32),
        ));
        let ws: Vec<_> = (0..writers)
            .map(|_| {
                let l = l.clone();
                thread::spawn(move || {
                    let mut g = l.write();
                    g.0 += 1;
                    g.1 += 1;
                })
            })
            .collect();
        {
            let g = l.read();
            assert_eq!(g.0, g.1);
        }
        for w in ws {
            w.join().unwrap();
        }
        assert_eq!(*l.read(), (writers, writers));
    });
}

/// Rwsem (FIFO hand-off): mutual exclusion and no lost wake-up.
#[test]
fn rwsem_writers_and_reader() {
    writers_and_reader(RmapLockKind::Rwsem, 2);
}

/// RwsemSpin (stealing, spinning): mutual exclusion and no lost wake-up
/// when a stealer takes the lock from a woken waiter.
#[test]
fn rwsem_spin_writers_and_reader() {
    writers_and_reader(RmapLockKind::RwsemSpin, 2);
}

/// Rwlock (spinning): mutual exclusion. One writer: with two spinners at
/// once loom's exploration of their spins does not end within its branch
/// bound.
#[test]
fn rwlock_writer_and_reader() {
    writers_and_reader(RmapLockKind::Rwlock, 1);
}

/// Two readers and a writer under Rwsem: a reader batch handed the lock
/// together, and the writer after them, with nobody left parked.
#[test]
fn rwsem_reader_batch_then_writer() {
    model(|| {
        let l = Arc::new(RmapLock::new(
            RmapLockKind::Rwsem,
            Arc::new(RmapLockCounters::default()),
            0u32,
        ));
        let rs: Vec<_> = (0..2)
            .map(|_| {
                let l = l.clone();
                thread::spawn(move || *l.read())
            })
            .collect();
        *l.write() += 1;
        for r in rs {
            let seen = r.join().unwrap();
            assert!(seen <= 1);
        }
        assert_eq!(*l.read(), 1);
    });
}
