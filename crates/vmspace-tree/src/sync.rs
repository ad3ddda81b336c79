//! The synchronization shim: every atomic, every epoch operation and every
//! published node cell of the tree goes through here, so that `--cfg loom`
//! swaps them for loom's model-checked versions without touching the tree code.
//!
//! * Without loom: std atomics, `crossbeam_epoch` for read-side sections and
//!   deferred reclamation, and `Published<T>` is a plain `T`.
//! * With loom: loom atomics; `Guard` is a section of a small model collector
//!   (loom cannot run crossbeam's): retired garbage is freed when no thread is
//!   pinned, under a loom mutex, so a free that races a reader is reported; and
//!   `Published<T>` is a `loom::cell::UnsafeCell`, so that loom reports a reader
//!   that reads a node not published to it by a release/acquire pair.

#[cfg(not(loom))]
mod imp {
    pub use crossbeam_epoch::{pin, Guard};
    pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};

    /// A value written once, before it is published, and only read afterwards.
    #[repr(transparent)]
    pub(crate) struct Published<T>(T);

    impl<T> Published<T> {
        pub(crate) fn new(value: T) -> Self {
            Published(value)
        }

        #[inline(always)]
        pub(crate) fn get(&self) -> &T {
            &self.0
        }

        /// For the writer, before publication.
        pub(crate) fn get_mut(&mut self) -> &mut T {
            &mut self.0
        }
    }

    /// Pushes this thread's deferred garbage to the collector and collects
    /// what no guard can reach any more (a few rounds, so that the epoch can
    /// advance past it). For callers that ran out of something garbage may
    /// hold (memory).
    pub fn collect() {
        for _ in 0..4 {
            pin().flush();
        }
    }

    /// Runs `drop(garbage)` once every thread pinned now has unpinned.
    pub fn defer_drop<G: Send + 'static>(guard: &Guard, garbage: G) {
        guard.defer(move || drop(garbage));
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

    /// The model collector: one grace period for all trees. Garbage retired
    /// while any thread is pinned is freed when the last guard is dropped (by
    /// whichever thread drops it). Coarser than crossbeam's epochs (it waits
    /// for readers that pinned after the retire too) but with the property the
    /// tree relies on: nothing retired is freed while a guard that might have
    /// reached it is alive. Its state is one loom mutex, so loom sees the
    /// unpin -> free ordering (and reports a free racing a reader's access).
    struct Collector {
        pins: usize,
        garbage: Vec<Box<dyn Send>>,
    }

    loom::lazy_static! {
        static ref COLLECTOR: loom::sync::Mutex<Collector> =
            loom::sync::Mutex::new(Collector { pins: 0, garbage: Vec::new() });
    }

    /// A read-side section of the model collector (see `Collector`).
    pub struct Guard {
        _private: (),
    }

    /// Enters a read-side section.
    pub fn pin() -> Guard {
        COLLECTOR.lock().unwrap().pins += 1;
        Guard { _private: () }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let mut c = COLLECTOR.lock().unwrap();
            c.pins -= 1;
            let garbage = if c.pins == 0 {
                std::mem::take(&mut c.garbage)
            } else {
                Vec::new()
            };
            drop(c);
            drop(garbage);
        }
    }

    /// The model collector frees garbage when the last guard goes: nothing
    /// to push.
    pub fn collect() {}

    /// Runs `drop(garbage)` once no thread is pinned (`guard` is the caller's).
    pub fn defer_drop<G: Send + 'static>(_guard: &Guard, garbage: G) {
        COLLECTOR.lock().unwrap().garbage.push(Box::new(garbage));
    }

    /// Synchronizes with every read-side section that ended before (takes and
    /// releases the collector's mutex). For users whose objects are freed by
    /// the last of several `std::sync::Arc`s, whose reference counts loom does
    /// not see: an object's drop calls this, standing in for the release /
    /// acquire edge from the collector's drop of the tree's reference.
    pub fn sync_with_collector() {
        drop(COLLECTOR.lock().unwrap());
    }

    /// A value written once, before it is published, and only read afterwards.
    pub(crate) struct Published<T>(loom::cell::UnsafeCell<T>);

    impl<T> Published<T> {
        pub(crate) fn new(value: T) -> Self {
            Published(loom::cell::UnsafeCell::new(value))
        }

        pub(crate) fn get(&self) -> &T {
            // SAFETY: a published value is never written after `new`; loom checks
            // that this read happens after the write that created it.
            self.0.with(|p| unsafe { &*p })
        }

        /// For the writer, before publication.
        pub(crate) fn get_mut(&mut self) -> &mut T {
            // SAFETY: `&mut self`: the node is not published yet, nobody else
            // can reach it; loom checks the writes against later reads.
            self.0.with_mut(|p| unsafe { &mut *p })
        }
    }
}

#[cfg(loom)]
pub use imp::sync_with_collector;
pub(crate) use imp::*;
pub use imp::{collect, defer_drop, pin, Guard};
