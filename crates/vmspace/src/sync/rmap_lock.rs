//! The rmap lock: the reader-writer lock of an object's mapping list
//! (`object/mappings.rs`), in the three variants of the 2013 anon_vma debate
//! (seed 003), chosen per frame arena ([`crate::ArenaConfig`]):
//!
//! * [`RmapLockKind::Rwsem`]: sleeping, strict FIFO hand-off (Linux's rwsem
//!   before lock stealing). Waiters park in a queue; a release hands the lock
//!   to the head waiter (a writer, or every reader up to the next writer),
//!   and no newcomer may take the lock while anyone waits.
//! * [`RmapLockKind::RwsemSpin`]: sleeping, with writer lock stealing (a
//!   newcomer writer takes a free lock even if others are queued) and
//!   optimistic spinning (a writer spins a bounded while before it parks),
//!   as Linux's rwsem ended up. A release only wakes the queue; the woken
//!   head competes with stealers (and may lose again: there is no hand-off
//!   bit bounding a waiter's wait, as Linux added later). The spin cannot
//!   see whether the holder runs: it is bounded instead.
//! * [`RmapLockKind::Rwlock`]: spinning (Ingo's `rwlock_t` patch): nobody
//!   sleeps, waiters spin (and yield, see `sync::spin_wait`); readers
//!   enter whenever no writer holds it (a stream of readers can hold a
//!   writer off, as with the old `rwlock_t`). Nothing may
//!   sleep under it: code that may sleep calls `assert_may_sleep`, which
//!   in debug builds panics if this thread holds a spinning rmap lock. The
//!   MMU notifiers called from rmap walks (`try_to_unmap`) go through it
//!   before a callback that may sleep: that is Andrea's objection, checked.
//!
//! # The state word
//!
//! ```text
//! bit 0      WRITER   a writer holds the lock
//! bit 1      WAITERS  the queue is not empty, or a thread holding the queue
//!                     mutex is about to queue (sleeping kinds only)
//! bits 2..   readers  how many readers hold the lock
//! ```
//!
//! Fast paths are one compare-exchange on the word. Slow paths take the
//! queue mutex (`queue`), a leaf below every other lock; the queue's
//! condition variable is where sleeping waiters park.
//!
//! # Why no wake-up is lost
//!
//! A thread queues only while holding the queue mutex, and it sets WAITERS
//! (a read-modify-write of the word) before it looks at the word a last
//! time; it then waits without dropping the mutex in between (the condition
//! variable releases it atomically). A release is a read-modify-write of the
//! same word: if it comes after the WAITERS update it sees the bit and takes
//! the mutex to hand off or wake, which it can only get once the waiter
//! waits; if it comes before, the waiter's last look sees the lock free.
//! WAITERS is cleared only under the mutex with the queue empty.
//!
//! # Hand-off (Rwsem)
//!
//! A granted waiter's ticket is below `Queue::granted`; the releaser sets the
//! word for it (WRITER, or the batch's reader count) under the mutex, so the
//! lock goes from the releaser to the waiter with no window for a newcomer
//! (who sees WAITERS and queues).
//!
//! Memory ordering: acquisitions are Acquire and releases Release on the
//! word; a hand-off is ordered by the queue mutex (the releaser writes the
//! word and `granted` under it, the waiter reads `granted` under it).
//!
//! Lock order: see `sync` (the rmap lock; the queue mutex is internal and a
//! leaf).

use super::{AtomicUsize, Ordering};
use std::collections::VecDeque;
use std::sync::Arc;

#[cfg(not(loom))]
use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
use loom::sync::{Condvar, Mutex, MutexGuard};

const WRITER: usize = 1;
const WAITERS: usize = 2;
const READER: usize = 4;
const HOLDERS: usize = !WAITERS;

/// Spins of a writer's optimistic spinning (RwsemSpin) before it parks.
#[cfg(not(loom))]
const SPIN_LIMIT: u32 = 200;
#[cfg(loom)]
const SPIN_LIMIT: u32 = 1;

/// Which variant of the rmap lock an arena uses (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RmapLockKind {
    /// Sleeping, strict FIFO hand-off.
    Rwsem,
    /// Sleeping, writer lock stealing and optimistic spinning.
    #[default]
    RwsemSpin,
    /// Spinning; nothing may sleep under it.
    Rwlock,
}

impl RmapLockKind {
    /// Every variant, in the order benchmarks show them.
    pub const ALL: [RmapLockKind; 3] = [
        RmapLockKind::Rwsem,
        RmapLockKind::RwsemSpin,
        RmapLockKind::Rwlock,
    ];

    /// The name used on command lines and in results.
    pub fn name(self) -> &'static str {
        match self {
            RmapLockKind::Rwsem => "rwsem",
            RmapLockKind::RwsemSpin => "rwsem-spin",
            RmapLockKind::Rwlock => "rwlock",
        }
    }

    /// Whether a holder of this kind may sleep.
    pub fn may_sleep(self) -> bool {
        self != RmapLockKind::Rwlock
    }
}

impl std::fmt::Display for RmapLockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RmapLockKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RmapLockKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown rmap lock {s:?} (rwsem, rwsem-spin, rwlock)"))
    }
}

/// Counts of an arena's rmap locks (every object's mapping list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RmapLockStats {
    /// Acquisitions that could not take the lock at once (spun or parked).
    pub waits: u64,
    /// Acquisitions that parked (slept) at least once.
    pub parks: u64,
    /// Acquisitions, read and write.
    pub acquisitions: u64,
}

const COUNTER_SHARDS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct CounterShard {
    acquisitions: std::sync::atomic::AtomicU64,
    waits: std::sync::atomic::AtomicU64,
    parks: std::sync::atomic::AtomicU64,
}

/// The counters behind [`RmapLockStats`], shared by an arena's locks: one
/// cache line per shard, a thread counts in its own shard. Statistics, not
/// protocol: std atomics, Relaxed.
#[derive(Default)]
pub struct RmapLockCounters {
    shards: [CounterShard; COUNTER_SHARDS],
}

impl RmapLockCounters {
    fn count(&self, waited: bool, parked: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.shards[crate::frame::thread_index() % COUNTER_SHARDS];
        s.acquisitions.fetch_add(1, Relaxed);
        if waited {
            s.waits.fetch_add(1, Relaxed);
        }
        if parked {
            s.parks.fetch_add(1, Relaxed);
        }
    }

    /// The sums over the shards (not a snapshot while locks are taken).
    pub fn stats(&self) -> RmapLockStats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut st = RmapLockStats::default();
        for s in &self.shards {
            st.acquisitions += s.acquisitions.load(Relaxed);
            st.waits += s.waits.load(Relaxed);
            st.parks += s.parks.load(Relaxed);
        }
        st
    }
}

/// One queued thread (sleeping kinds).
struct Waiter {
    ticket: u64,
    writer: bool,
}

/// The wait queue, under `RmapLock::queue`.
#[derive(Default)]
struct Queue {
    /// Waiting threads in arrival order.
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
    /// Rwsem: every ticket below this one has been handed the lock.
    granted: u64,
}

/// The data cell: loom's under loom, so that the model checker itself
/// reports a reader and a writer inside at once.
#[cfg(not(loom))]
struct Cell<T>(std::cell::UnsafeCell<T>);
#[cfg(loom)]
struct Cell<T>(loom::cell::UnsafeCell<T>);

/// A reader-writer lock of one of the [`RmapLockKind`]s (see the module
/// documentation).
pub struct RmapLock<T> {
    kind: RmapLockKind,
    state: AtomicUsize,
    queue: Mutex<Queue>,
    wake: Condvar,
    counters: Arc<RmapLockCounters>,
    data: Cell<T>,
}

// SAFETY: the data is reached only through guards; the state word grants
// either one writer (`&mut T`) or readers (`&T`) at a time (the invariant of
// the module documentation), so sharing the lock shares `T` like an RwLock.
unsafe impl<T: Send + Sync> Sync for RmapLock<T> {}
// SAFETY: the lock owns its `T`.
unsafe impl<T: Send> Send for RmapLock<T> {}

/// Whether this acquisition waited, and parked.
#[derive(Clone, Copy, Default)]
struct Waited {
    waited: bool,
    parked: bool,
}

impl<T> RmapLock<T> {
    /// A lock of `kind` counting into `counters`.
    pub fn new(kind: RmapLockKind, counters: Arc<RmapLockCounters>, value: T) -> Self {
        RmapLock {
            kind,
            state: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            counters,
            #[cfg(not(loom))]
            data: Cell(std::cell::UnsafeCell::new(value)),
            #[cfg(loom)]
            data: Cell(loom::cell::UnsafeCell::new(value)),
        }
    }

    /// This lock's variant.
    pub fn kind(&self) -> RmapLockKind {
        self.kind
    }

    /// Whether a holder of this lock may sleep.
    pub fn may_sleep(&self) -> bool {
        self.kind.may_sleep()
    }

    /// Locks for reading.
    pub fn read(&self) -> RmapReadGuard<'_, T> {
        let w = if self.try_read_fast() {
            Waited::default()
        } else {
            self.read_slow()
        };
        self.counters.count(w.waited, w.parked);
        spin_depth_add(self.kind, 1);
        RmapReadGuard {
            lock: self,
            #[cfg(loom)]
            ptr: Some(self.data.0.get()),
        }
    }

    /// Locks for writing.
    pub fn write(&self) -> RmapWriteGuard<'_, T> {
        let w = if self.try_write_fast() {
            Waited::default()
        } else {
            self.write_slow()
        };
        self.counters.count(w.waited, w.parked);
        spin_depth_add(self.kind, 1);
        RmapWriteGuard {
            lock: self,
            #[cfg(loom)]
            ptr: Some(self.data.0.get_mut()),
        }
    }

    /// A reader enters if no writer holds the lock and (sleeping kinds) no
    /// one waits.
    #[inline]
    fn try_read_fast(&self) -> bool {
        let block = match self.kind {
            RmapLockKind::Rwlock => WRITER,
            _ => WRITER | WAITERS,
        };
        let s = self.state.load(Ordering::Relaxed);
        // Acquire: pairs with the Release of the last holder's release.
        s & block == 0
            && self
                .state
                .compare_exchange(s, s + READER, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// A writer enters a lock nobody holds; under Rwsem only if nobody waits
    /// either (RwsemSpin steals past waiters).
    #[inline]
    fn try_write_fast(&self) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        let free = match self.kind {
            RmapLockKind::Rwsem => s == 0,
            _ => s & HOLDERS == 0,
        };
        // Acquire: as in `try_read_fast`.
        free && self
            .state
            .compare_exchange(s, s | WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock if no holder excludes it, whatever WAITERS says.
    fn try_ignoring_waiters(&self, writer: bool) -> bool {
        #[cfg(not(loom))]
        let mut s = self.state.load(Ordering::Relaxed);
        // Under loom a spinning load may read stale values without end; a
        // read-modify-write reads the latest (the compare-exchange below
        // validates either way).
        #[cfg(loom)]
        let mut s = self.state.fetch_add(0, Ordering::Relaxed);
        loop {
            let (ok, new) = if writer {
                (s & HOLDERS == 0, s | WRITER)
            } else {
                (s & WRITER == 0, s + READER)
            };
            if !ok {
                return false;
            }
            // Acquire: as in `try_read_fast`.
            match self
                .state
                .compare_exchange(s, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
    }

    #[cold]
    fn read_slow(&self) -> Waited {
        match self.kind {
            RmapLockKind::Rwlock => self.spin(false),
            _ => self.park(false),
        }
    }

    #[cold]
    fn write_slow(&self) -> Waited {
        match self.kind {
            RmapLockKind::Rwlock => self.spin(true),
            RmapLockKind::Rwsem => self.park(true),
            RmapLockKind::RwsemSpin => {
                // Optimistic spinning: the holder is presumed running and
                // about to release.
                let mut spins = 0;
                while spins < SPIN_LIMIT {
                    super::spin_wait(&mut spins);
                    if self.try_ignoring_waiters(true) {
                        return Waited {
                            waited: true,
                            parked: false,
                        };
                    }
                }
                self.park(true)
            }
        }
    }

    /// The spinning kind's wait.
    fn spin(&self, writer: bool) -> Waited {
        let mut spins = 0;
        while !self.try_ignoring_waiters(writer) {
            super::spin_wait(&mut spins);
        }
        Waited {
            waited: true,
            parked: false,
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sleeping kinds' wait: queue, then park until handed the lock
    /// (Rwsem) or until this waiter, at the head, takes it (RwsemSpin).
    fn park(&self, writer: bool) -> Waited {
        let mut q = self.lock_queue();
        // Set WAITERS before the last look at the word (see "Why no
        // wake-up is lost"); AcqRel: a read-modify-write ordered with the
        // releases it must be seen by.
        self.state.fetch_or(WAITERS, Ordering::AcqRel);
        if q.waiters.is_empty() && self.try_ignoring_waiters(writer) {
            self.state.fetch_and(!WAITERS, Ordering::Relaxed);
            return Waited {
                waited: true,
                parked: false,
            };
        }
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiters.push_back(Waiter { ticket, writer });
        loop {
            match self.kind {
                RmapLockKind::Rwsem if q.granted > ticket => break,
                RmapLockKind::Rwsem => {}
                _ => {
                    if Self::eligible(&q, ticket) && self.try_ignoring_waiters(writer) {
                        q.waiters.retain(|w| w.ticket != ticket);
                        if q.waiters.is_empty() {
                            self.state.fetch_and(!WAITERS, Ordering::Relaxed);
                        } else if !writer {
                            // Readers queued behind this one may enter too.
                            self.wake.notify_all();
                        }
                        break;
                    }
                }
            }
            q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        Waited {
            waited: true,
            parked: true,
        }
    }

    /// RwsemSpin: a writer may try at the head of the queue, a reader when
    /// only readers are ahead of it.
    fn eligible(q: &Queue, ticket: u64) -> bool {
        for w in &q.waiters {
            if w.ticket == ticket {
                return true;
            }
            if w.writer {
                return false;
            }
        }
        false
    }

    fn read_unlock(&self) {
        // Release: this reader's accesses happen before the next holder's.
        let prev = self.state.fetch_sub(READER, Ordering::Release);
        if prev & !WAITERS == READER && prev & WAITERS != 0 {
            self.release_slow();
        }
    }

    fn write_unlock(&self) {
        // Release: as in `read_unlock`.
        let prev = self.state.fetch_and(!WRITER, Ordering::Release);
        if prev & WAITERS != 0 {
            self.release_slow();
        }
    }

    /// The last holder left with WAITERS set: hand off (Rwsem) or wake the
    /// queue (RwsemSpin).
    #[cold]
    fn release_slow(&self) {
        let mut q = self.lock_queue();
        if self.kind == RmapLockKind::Rwsem {
            // Acquire: the word as the last holder left it.
            let s = self.state.load(Ordering::Acquire);
            if s & HOLDERS != 0 || q.waiters.is_empty() {
                // A thread that found the queue empty took the lock.
                return;
            }
            let n = if q.waiters[0].writer {
                self.state.fetch_add(WRITER, Ordering::Relaxed);
                1
            } else {
                let n = q.waiters.iter().take_while(|w| !w.writer).count();
                self.state.fetch_add(n * READER, Ordering::Relaxed);
                n
            };
            let last = q.waiters.drain(..n).next_back().map(|w| w.ticket);
            q.granted = last.map_or(q.granted, |t| t + 1);
            if q.waiters.is_empty() {
                self.state.fetch_and(!WAITERS, Ordering::Relaxed);
            }
        }
        drop(q);
        self.wake.notify_all();
    }
}

/// Read guard of [`RmapLock`].
pub struct RmapReadGuard<'a, T> {
    lock: &'a RmapLock<T>,
    #[cfg(loom)]
    ptr: Option<loom::cell::ConstPtr<T>>,
}

/// Write guard of [`RmapLock`].
pub struct RmapWriteGuard<'a, T> {
    lock: &'a RmapLock<T>,
    #[cfg(loom)]
    ptr: Option<loom::cell::MutPtr<T>>,
}

impl<T> std::ops::Deref for RmapReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        #[cfg(not(loom))]
        // SAFETY: this guard holds the lock for reading: no writer guard
        // exists (the state-word invariant), so a shared borrow is sound.
        return unsafe { &*self.lock.data.0.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        return unsafe { self.ptr.as_ref().expect("guard alive").deref() };
    }
}

impl<T> std::ops::Deref for RmapWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        #[cfg(not(loom))]
        // SAFETY: this guard holds the lock for writing: no other guard
        // exists (the state-word invariant).
        return unsafe { &*self.lock.data.0.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        return unsafe { &*self.ptr.as_ref().expect("guard alive").deref() };
    }
}

impl<T> std::ops::DerefMut for RmapWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        // SAFETY: as in `deref`; `&mut self` keeps the borrow unique.
        return unsafe { &mut *self.lock.data.0.get() };
        #[cfg(loom)]
        // SAFETY: as above; loom checks it.
        return unsafe { self.ptr.as_mut().expect("guard alive").deref() };
    }
}

impl<T> Drop for RmapReadGuard<'_, T> {
    fn drop(&mut self) {
        // Under loom the access ends before the lock is released.
        #[cfg(loom)]
        drop(self.ptr.take());
        spin_depth_add(self.lock.kind, -1);
        self.lock.read_unlock();
    }
}

impl<T> Drop for RmapWriteGuard<'_, T> {
    fn drop(&mut self) {
        // Under loom the access ends before the lock is released.
        #[cfg(loom)]
        drop(self.ptr.take());
        spin_depth_add(self.lock.kind, -1);
        self.lock.write_unlock();
    }
}

#[cfg(all(debug_assertions, not(loom)))]
thread_local! {
    /// Spinning rmap locks this thread holds (debug builds).
    static SPIN_DEPTH: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

#[inline]
fn spin_depth_add(kind: RmapLockKind, delta: i32) {
    #[cfg(all(debug_assertions, not(loom)))]
    if kind == RmapLockKind::Rwlock {
        SPIN_DEPTH.with(|d| d.set(d.get() + delta));
    }
    #[cfg(not(all(debug_assertions, not(loom))))]
    let _ = (kind, delta);
}

/// Called by code about to do something that may sleep (an MMU notifier's
/// sleeping callback, I/O): in debug builds, panics naming `what` if this
/// thread holds a spinning ([`RmapLockKind::Rwlock`]) rmap lock. Free in
/// release builds. Its callers are the actions that may sleep under an rmap
/// walk (MMU-notifier callbacks).
#[inline]
#[allow(dead_code)]
pub(crate) fn assert_may_sleep(what: impl std::fmt::Display) {
    #[cfg(all(debug_assertions, not(loom)))]
    SPIN_DEPTH.with(|d| {
        assert!(
            d.get() == 0,
            "{what} may sleep, but this thread holds a spinning rmap lock (rwlock)"
        );
    });
    #[cfg(not(all(debug_assertions, not(loom))))]
    let _ = what;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Barrier;
    use std::time::Duration;

    fn lock<T>(kind: RmapLockKind, v: T) -> Arc<RmapLock<T>> {
        Arc::new(RmapLock::new(kind, Arc::default(), v))
    }

    /// Writers and readers at once: a writer's two writes are never seen
    /// half done, and no increment is lost.
    #[test]
    fn mutual_exclusion_many_threads() {
        for kind in RmapLockKind::ALL {
            let l = lock(kind, (0u64, 0u64));
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let l = l.clone();
                    std::thread::spawn(move || {
                        for _ in 0..2000 {
                            if t % 2 == 0 {
                                let mut g = l.write();
                                g.0 += 1;
                                std::hint::spin_loop();
                                g.1 += 1;
                            } else {
                                let g = l.read();
                                assert_eq!(g.0, g.1, "{kind}: a reader saw a half write");
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(*l.read(), (8000, 8000), "{kind}");
            let st = l.counters.stats();
            assert_eq!(st.acquisitions, 16_001, "{kind}");
            assert_eq!(l.state.load(Ordering::Relaxed), 0, "{kind}");
        }
    }

    /// Waits until `n` threads are queued on `l`.
    fn until_queued<T>(l: &RmapLock<T>, n: usize) {
        while l.lock_queue().waiters.len() < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Rwsem hands the lock over in arrival order: writers queued one after
    /// the other get it in that order, a newcomer after them gets it last.
    #[test]
    fn rwsem_grants_in_fifo_order() {
        let l = lock(RmapLockKind::Rwsem, Vec::new());
        let held = l.write();
        let mut threads = Vec::new();
        for i in 0..4 {
            let l2 = l.clone();
            threads.push(std::thread::spawn(move || l2.write().push(i)));
            until_queued(&l, i + 1);
        }
        drop(held);
        // A newcomer after the release must not overtake the queue.
        l.write().push(99);
        for t in threads {
            t.join().unwrap();
        }
        let order = l.read().clone();
        assert_eq!(order, vec![0, 1, 2, 3, 99]);
        assert!(l.counters.stats().parks >= 4);
    }

    /// Rwsem: a reader batch at the head is granted together.
    #[test]
    fn rwsem_grants_reader_batch() {
        let l = lock(RmapLockKind::Rwsem, ());
        let held = l.write();
        let inside = Arc::new(Barrier::new(3));
        let mut threads = Vec::new();
        for i in 0..2 {
            let (l2, b) = (l.clone(), inside.clone());
            threads.push(std::thread::spawn(move || {
                let _g = l2.read();
                // Both readers must be inside at once to pass.
                b.wait();
            }));
            until_queued(&l, i + 1);
        }
        drop(held);
        inside.wait();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// RwsemSpin: a newcomer writer takes a free lock although a waiter is
    /// queued (lock stealing). Rwsem would queue it behind.
    #[test]
    fn rwsem_spin_steals() {
        let l = lock(RmapLockKind::RwsemSpin, Vec::new());
        let held = l.write();
        let l2 = l.clone();
        let waiter = std::thread::spawn(move || l2.write().push("waiter"));
        until_queued(&l, 1);
        // Release without waking the queue (the window between a release
        // and the waiter's wake-up), then take the free lock as a newcomer:
        // the fast path ignores WAITERS.
        std::mem::forget(held);
        l.state.fetch_and(!WRITER, Ordering::Release);
        let stolen = l.try_write_fast();
        assert!(stolen, "the free lock could not be stolen past the waiter");
        // We hold the lock now: a guard releases it (and wakes the waiter).
        let mut g = RmapWriteGuard { lock: &*l };
        g.push("stealer");
        drop(g);
        waiter.join().unwrap();
        assert_eq!(*l.read(), vec!["stealer", "waiter"]);
        // Rwsem hands the lock to the queued writer on release: it is never
        // free for a newcomer while someone waits.
        let f = lock(RmapLockKind::Rwsem, ());
        let held = f.write();
        let (f2, (tx, rx)) = (f.clone(), std::sync::mpsc::channel::<()>());
        let waiter = std::thread::spawn(move || {
            let _g = f2.write();
            rx.recv().unwrap();
        });
        until_queued(&f, 1);
        drop(held);
        assert!(
            !f.try_write_fast(),
            "rwsem let a newcomer past the queued writer"
        );
        tx.send(()).unwrap();
        waiter.join().unwrap();
    }

    /// A sleeping action under a spinning rmap lock panics in debug builds,
    /// naming it; under a sleeping one it is fine.
    #[test]
    #[cfg(debug_assertions)]
    fn assert_may_sleep_catches_rwlock_holder() {
        let s = lock(RmapLockKind::RwsemSpin, ());
        {
            let _g = s.read();
            assert_may_sleep("a test callback");
        }
        let l = lock(RmapLockKind::Rwlock, ());
        let done = AtomicBool::new(false);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = l.write();
            assert_may_sleep("the notifier callback");
            done.store(true, Ordering::Relaxed);
        }));
        let msg = r.expect_err("no panic under rwlock");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("the notifier callback") && msg.contains("rwlock"),
            "{msg}"
        );
        assert!(!done.load(Ordering::Relaxed));
        // The guard was dropped by the unwind: sleeping is allowed again.
        assert_may_sleep("after");
    }

    #[test]
    fn kind_names_round_trip() {
        for k in RmapLockKind::ALL {
            assert_eq!(k.name().parse::<RmapLockKind>(), Ok(k));
        }
        assert!("spin".parse::<RmapLockKind>().is_err());
        assert_eq!(RmapLockKind::default(), RmapLockKind::RwsemSpin);
    }
}
