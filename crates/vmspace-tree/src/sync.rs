//! The synchronization shim: every atomic, every epoch operation and every
//! published node cell of the tree goes through here, so that `--cfg loom`
//! swaps them for loom's model-checked versions without touching the tree code.
//!
//! * Without loom: std atomics, `crossbeam_epoch` for read-side sections and
//!   deferred reclamation, and `Published<T>` is a plain `T`.
//! * With loom: loom atomics; `Guard` is an empty token (loom cannot model the
//!   crossbeam collector), retired garbage is kept until the tree is dropped, and
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

    /// Runs `drop(garbage)` once every thread pinned now has unpinned.
    pub(crate) fn defer_drop<G: Send + 'static>(guard: &Guard, garbage: G) {
        guard.defer(move || drop(garbage));
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

    /// Under loom a read-side section is a no-op token: reclamation is deferred
    /// until the tree is dropped (see `RangeTree::loom_garbage`).
    pub struct Guard {
        _private: (),
    }

    /// Enters a read-side section.
    pub fn pin() -> Guard {
        Guard { _private: () }
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

pub(crate) use imp::*;
pub use imp::{pin, Guard};
