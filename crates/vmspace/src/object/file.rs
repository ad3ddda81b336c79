//! Files: a size, a page cache, and a backing store behind a small trait.
//!
//! # Page cache protocol
//!
//! The cache is one `AtomicU32` slot per page (0 = not cached, else a frame
//! number), so lookups take no lock: a fault loads the slot (Acquire), takes
//! a reference with `try_get` and checks the slot again ([`File::get_page`]),
//! then maps the frame. Filling a slot takes the file's `fill` mutex,
//! re-checks the slot, reads the page from the backing store into a fresh
//! frame, and publishes it with a Release store. The cache holds one frame
//! reference per cached page, dropped when the file is dropped (after
//! writing dirty pages back) or when reclaim evicts the page
//! ([`File::evict`]: clean, unmapped, under the `fill` mutex, by freezing
//! the count from the cache's and reclaim's two references to zero, so that
//! no lookup can take a reference afterwards).
//!
//! A fault that must read from a slow store is told so before it blocks
//! ([`File::cached`] returns `None`), so that it can drop its locks first and
//! call [`File::fill`] with nothing held, then retry (Linux's VM_FAULT_RETRY).
//!
//! Dirty tracking: a page is dirty from the write fault that makes a shared
//! entry writable (the fault marks it right after installing the entry, so
//! a write-back that runs between the two still finds it marked afterwards)
//! until a write-back *cleans* it: the write-back clears the mark, then
//! write-protects every entry that maps the page through the reverse map
//! (`File::write_protect_page`, the `clean` event, with its shootdown), and
//! only then copies the page to the store. A write that lands before the
//! shootdown ends is in the copy; a write after it faults and marks the page
//! dirty again. So no write is lost to a page thought clean. A failed write
//! marks the page dirty again (before the write-back lets the page go).
//! Write-backs of one page are serialized (a striped mutex, taken with no
//! other lock held): otherwise a slow one could store its older copy after a
//! later one stored the newer, and reclaim would drop the page as clean.
//!
//! # When dirty pages reach the store
//!
//! * [`File::sync`] (and `msync` of a shared mapping): every dirty page.
//! * When a shared mapping is removed (`munmap`, `mmap(MAP_FIXED)` over it,
//!   `mremap`'s old range, the address space dropped): the dirty pages of
//!   the range it mapped, after the address-space lock is released
//!   ([`File::write_back`]). So the data is on the store when the mapping's
//!   last call returns, whenever the VMA itself is freed (a removed VMA can
//!   live on in deferred epoch garbage, and that is never collected at
//!   process exit).
//! * When the `File` is dropped: every dirty page.
//!
//! A failed write-back keeps the page dirty (it is written again by the next
//! write-back) and records the error, which the next `sync` reports (as
//! Linux reports a write-back error at the next `fsync`). A write-back that
//! fails at drop has no one to report to: `Drop` prints the error and the
//! number of pages whose data did not reach the store on standard error,
//! never silently.
//!
//! # Mappings
//!
//! The file keeps the page ranges its attached VMAs map (`mappings.rs`).
//! Shared anonymous memory is reachable only through its mappings, and any
//! of them can reach every page again (`mremap` grows a mapping over pages
//! unmapped before, as on Linux, which keeps them), so its pages are dropped
//! when its last mapping goes, not when the object is freed (which waits for
//! the removed VMAs' grace period, and for whoever else holds the object).
//!
//! Locks: `fill` is taken with no PTE lock held (under at most a VMA read lock
//! or the address-space lock); only the frame free list is taken under it.

use super::mappings::{Mapping, Mappings};
use crate::frame::{FrameAllocator, FrameId, PAGE_SIZE};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where a file's pages live when they are not in the page cache.
pub trait BackingStore: Send + Sync {
    /// Reads page `pgoff` into `buf` (4096 bytes).
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes page `pgoff` from `buf` (4096 bytes).
    fn write_page(&self, pgoff: u64, buf: &[u8]) -> io::Result<()>;
    /// Whether a read may block for long (a fault then drops its locks first).
    fn is_slow(&self) -> bool {
        false
    }
    /// Whether written pages can be read back (false for [`ZeroStore`]:
    /// write-back to it is skipped).
    fn keeps_writes(&self) -> bool {
        true
    }
}

/// A store that reads zeros and forgets writes: the backing of shared anonymous
/// memory, whose pages live only in the page cache.
pub struct ZeroStore;

impl BackingStore for ZeroStore {
    fn read_page(&self, _: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_page(&self, _: u64, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn keeps_writes(&self) -> bool {
        false
    }
}

/// A store in memory, with an optional latency per read (to model slow I/O).
pub struct MemoryStore {
    pages: parking_lot::Mutex<Vec<Box<[u8]>>>,
    latency: Duration,
}

impl MemoryStore {
    /// A store of `pages` pages, each filled by `init(pgoff, page)`.
    pub fn new(pages: u64, init: impl Fn(u64, &mut [u8])) -> MemoryStore {
        let pages = (0..pages)
            .map(|p| {
                let mut page = vec![0u8; PAGE_SIZE as usize].into_boxed_slice();
                init(p, &mut page);
                page
            })
            .collect();
        MemoryStore {
            pages: parking_lot::Mutex::new(pages),
            latency: Duration::ZERO,
        }
    }

    /// The same store, with every read taking `latency`.
    pub fn with_latency(mut self, latency: Duration) -> MemoryStore {
        self.latency = latency;
        self
    }

    /// A copy of page `pgoff` as stored (for tests).
    pub fn page(&self, pgoff: u64) -> Option<Vec<u8>> {
        self.pages.lock().get(pgoff as usize).map(|p| p.to_vec())
    }
}

impl BackingStore for MemoryStore {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> io::Result<()> {
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
        let pages = self.pages.lock();
        let page = pages
            .get(pgoff as usize)
            .ok_or_else(|| io::Error::other("read past the store"))?;
        buf.copy_from_slice(page);
        Ok(())
    }
    fn write_page(&self, pgoff: u64, buf: &[u8]) -> io::Result<()> {
        let mut pages = self.pages.lock();
        let page = pages
            .get_mut(pgoff as usize)
            .ok_or_else(|| io::Error::other("write past the store"))?;
        page.copy_from_slice(buf);
        Ok(())
    }
    fn is_slow(&self) -> bool {
        !self.latency.is_zero()
    }
}

/// A real file on disk, read and written with positioned I/O.
pub struct DiskStore {
    file: std::fs::File,
}

impl DiskStore {
    /// Wraps an open file (read and write access).
    pub fn new(file: std::fs::File) -> DiskStore {
        DiskStore { file }
    }
}

impl BackingStore for DiskStore {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        buf.fill(0);
        let mut done = 0;
        while done < buf.len() {
            match self
                .file
                .read_at(&mut buf[done..], pgoff * PAGE_SIZE + done as u64)?
            {
                0 => break, // past the end of the file on disk: zeros
                n => done += n,
            }
        }
        Ok(())
    }
    fn write_page(&self, pgoff: u64, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, pgoff * PAGE_SIZE)
    }
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "File({} pages)", self.pages)
    }
}

/// Stripes of a file's write-back locks.
const WRITEBACK_STRIPES: usize = 16;

/// A file: a fixed size in pages, a page cache, and its backing store.
pub struct File {
    /// Process-unique id (the owner recorded in the frames of its page cache).
    id: u64,
    pages: u64,
    cache: Box<[AtomicU32]>,
    dirty: Box<[AtomicBool]>,
    fill: crate::sync::Mutex<()>,
    /// Write-back of a page runs under the stripe of its index, so that two
    /// write-backs of one page never overlap: a slower one would store an
    /// older copy over a newer one, which the cleared dirty mark would then
    /// let reclaim drop (Linux waits on the page's writeback bit).
    writeback: Box<[crate::sync::Mutex<()>]>,
    store: Box<dyn BackingStore>,
    frames: Arc<FrameAllocator>,
    /// The first write-back error not yet reported by `sync`.
    error: parking_lot::Mutex<Option<io::Error>>,
    /// The page ranges attached VMAs map (`mappings.rs`).
    mappings: Mappings,
    /// Shared anonymous memory: pages no mapping covers any more are dropped.
    anonymous: bool,
}

/// Why a page could not be brought into the cache.
#[derive(Debug)]
pub enum FillError {
    /// The page is past the end of the file.
    PastEnd,
    /// No frame was available.
    NoMemory,
    /// The backing store failed.
    Io(io::Error),
}

impl File {
    /// A file of `pages` pages over `store`, caching into `frames`.
    pub fn new(pages: u64, store: Box<dyn BackingStore>, frames: Arc<FrameAllocator>) -> Arc<File> {
        File::build(pages, store, frames, false)
    }

    /// The arena its page cache draws frames from.
    pub(crate) fn frames(&self) -> &Arc<FrameAllocator> {
        &self.frames
    }

    /// The object behind a shared anonymous mapping of `pages` pages: a file
    /// whose store keeps nothing, and whose pages are dropped as soon as no
    /// mapping covers them (see "Mappings").
    pub(crate) fn new_anonymous(pages: u64, frames: Arc<FrameAllocator>) -> Arc<File> {
        File::build(pages, Box::new(ZeroStore), frames, true)
    }

    fn build(
        pages: u64,
        store: Box<dyn BackingStore>,
        frames: Arc<FrameAllocator>,
        anonymous: bool,
    ) -> Arc<File> {
        let mappings = Mappings::new(&frames);
        Arc::new_cyclic(|weak| File {
            id: frames.objects.insert_file(weak.clone()),
            pages,
            cache: (0..pages).map(|_| AtomicU32::new(0)).collect(),
            dirty: (0..pages).map(|_| AtomicBool::new(false)).collect(),
            fill: crate::sync::Mutex::new(()),
            writeback: (0..WRITEBACK_STRIPES)
                .map(|_| crate::sync::Mutex::new(()))
                .collect(),
            store,
            frames,
            error: parking_lot::Mutex::new(None),
            mappings,
            anonymous,
        })
    }

    /// Records an attached VMA that maps this file (`mappings.rs`).
    pub(crate) fn mapping_added(&self, m: Mapping) {
        self.mappings.add(m);
    }

    /// Forgets the record of a detached VMA; for shared anonymous memory
    /// whose last mapping this was, drops every cached page.
    pub(crate) fn mapping_removed(&self, m: Mapping) {
        let dropped = self.mappings.remove(m, |rest| {
            let mut dropped = Vec::new();
            if !self.anonymous || !rest.is_empty() {
                return dropped;
            }
            for p in 0..self.pages {
                let f = self.cache[p as usize].swap(0, Ordering::AcqRel);
                if f != 0 {
                    self.dirty[p as usize].store(false, Ordering::Relaxed);
                    dropped.push(FrameId(f));
                }
            }
            dropped
        });
        if !dropped.is_empty() {
            self.release_after_grace(dropped);
        }
    }

    /// The records of the VMAs that map this file (`rmap.rs`).
    pub(crate) fn mappings(&self) -> &Mappings {
        &self.mappings
    }

    /// VMAs attached now that map this file (for checkers).
    pub fn mapping_count(&self) -> usize {
        self.mappings.len()
    }

    /// Drops the cache's references to `dropped` once every fault that may
    /// have read their slots has finished: a fault reads a slot without a
    /// lock and then takes a reference, and only a speculative fault through
    /// a removed VMA (pinned, `fault.rs`) can still be doing so.
    fn release_after_grace(&self, dropped: Vec<FrameId>) {
        struct Release(Arc<FrameAllocator>, Vec<FrameId>);
        impl Drop for Release {
            fn drop(&mut self) {
                for &f in &self.1 {
                    self.0.put(f);
                }
            }
        }
        let guard = vmspace_tree::pin();
        vmspace_tree::sync::defer_drop(&guard, Release(self.frames.clone(), dropped));
    }

    /// The file's id in its arena (unique among the arena's live objects
    /// and files; what its page-cache frames record as their owner).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Size in pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Whether reads of the store may block for long.
    pub fn is_slow(&self) -> bool {
        self.store.is_slow()
    }

    /// The cached frame of page `pgoff`, without locks. `None` when not cached
    /// (or past the end).
    pub fn cached(&self, pgoff: u64) -> Option<FrameId> {
        let slot = self.cache.get(pgoff as usize)?;
        match slot.load(Ordering::Acquire) {
            0 => None,
            f => Some(FrameId(f)),
        }
    }

    /// The cached frame of page `pgoff` with a reference taken, without
    /// locks, or `None` when it is not cached: the page may be evicted
    /// (`File::evict`) at any moment, so a frame read from the slot is held
    /// only if `try_get` succeeds and the slot still names it afterwards
    /// (Linux's `filemap_get_entry`).
    pub(crate) fn get_page(&self, pgoff: u64) -> Option<FrameId> {
        let mut spins = 0;
        loop {
            let f = self.cached(pgoff)?;
            if self.frames.try_get(f) {
                if self.cached(pgoff) == Some(f) {
                    return Some(f);
                }
                self.frames.put(f);
            }
            // Frozen by an eviction, which clears the slot next.
            crate::sync::spin_wait(&mut spins);
        }
    }

    /// The frame of page `pgoff`, reading it from the store if needed. May
    /// block on I/O: call with no PTE lock held. The frame may be evicted
    /// as soon as this returns (the fault path holds the pages it maps).
    pub fn fill(&self, pgoff: u64) -> Result<FrameId, FillError> {
        let f = self.fill_held(pgoff)?;
        self.frames.put(f);
        Ok(f)
    }

    /// [`File::fill`], returning the frame with a reference taken.
    pub(crate) fn fill_held(&self, pgoff: u64) -> Result<FrameId, FillError> {
        if pgoff >= self.pages {
            return Err(FillError::PastEnd);
        }
        if let Some(f) = self.get_page(pgoff) {
            return Ok(f);
        }
        let _g = self.fill.lock();
        if let Some(f) = self.get_page(pgoff) {
            return Ok(f);
        }
        let f = self.frames.alloc().ok_or(FillError::NoMemory)?;
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        if let Err(e) = self.store.read_page(pgoff, &mut buf) {
            self.frames.put(f);
            return Err(FillError::Io(e));
        }
        self.frames.write_frame(f, &buf);
        self.frames.set_owner(
            f,
            crate::frame::Owner::File {
                file: self.id,
                index: pgoff,
            },
        );
        // The cache's reference, and the caller's.
        self.frames.get(f);
        // Release: the content written above is visible to whoever maps it.
        self.cache[pgoff as usize].store(f.0, Ordering::Release);
        Ok(f)
    }

    /// Drops page `pgoff` from the cache if it is `f`, clean, and held by
    /// no one but the cache and the caller (whose reference this consumes
    /// either way); returns whether the frame was freed. Under the fill
    /// lock, so a fill does not race it; the count is frozen (2 -> 0), so a
    /// lock-free `get_page` either got in first (and the eviction fails) or
    /// fails and looks again.
    pub(crate) fn evict(&self, pgoff: u64, f: FrameId) -> bool {
        let evicted = {
            let _g = self.fill.lock();
            // Frozen first, then the mark read: the last user who let the
            // page go (an unmapped writer's entry) marked it dirty before
            // its release, which the freeze acquires. Read before the
            // freeze, the mark could predate a write whose entry then went.
            let evicted = self.cached(pgoff) == Some(f) && self.frames.freeze(f, 2);
            let clean = !self.dirty[pgoff as usize].load(Ordering::Acquire)
                || crate::debug::broken(crate::debug::ProtocolBreak::EvictDirty);
            if evicted && !clean {
                self.frames.unfreeze(f, 2);
            }
            let evicted = evicted && clean;
            if evicted {
                self.cache[pgoff as usize].store(0, Ordering::Release);
            }
            evicted
        };
        if evicted {
            self.frames.free_frozen(f);
        } else {
            self.frames.put(f);
        }
        evicted
    }

    /// Whether written pages reach a store (not shared anonymous memory,
    /// whose pages reclaim must keep).
    pub(crate) fn keeps_writes(&self) -> bool {
        self.store.keeps_writes()
    }

    /// Whether page `pgoff` is marked dirty.
    pub(crate) fn is_dirty(&self, pgoff: u64) -> bool {
        self.dirty
            .get(pgoff as usize)
            .is_some_and(|d| d.load(Ordering::Acquire))
    }

    /// Marks page `pgoff` dirty (a fault just made a shared entry to it
    /// writable, or a dirty entry to it was removed).
    pub fn mark_dirty(&self, pgoff: u64) {
        if let Some(d) = self.dirty.get(pgoff as usize) {
            d.store(true, Ordering::Relaxed);
        }
    }

    /// Writes every page marked dirty back to the store. Every page is
    /// tried; the first error, or an earlier unreported write-back error, is
    /// returned (and then counts as reported).
    pub fn sync(&self) -> io::Result<()> {
        let _ = self.write_back(0, self.pages);
        self.error.lock().take().map_or(Ok(()), Err)
    }

    /// Writes the dirty pages of `[first, end)` (page offsets) back to the
    /// store. Every page is tried; the first error is returned and kept for
    /// the next `sync`. Returns how many dirty pages could not be written.
    pub fn write_back(&self, first: u64, end: u64) -> usize {
        if !self.store.keeps_writes() {
            return 0;
        }
        let end = end.min(self.pages);
        let mut failed = 0;
        let mut buf = vec![0u8; PAGE_SIZE as usize];
        for p in first..end {
            if !self.dirty[p as usize].load(Ordering::Acquire) {
                continue;
            }
            let _one_at_a_time = self.writeback[p as usize % WRITEBACK_STRIPES].lock();
            // Held before the mark is cleared, and while it is copied:
            // reclaim evicts a page only when it holds the page's every
            // reference but the cache's, and finds it clean.
            let Some(f) = self.get_page(p) else {
                continue;
            };
            if !self.dirty[p as usize].swap(false, Ordering::AcqRel) {
                self.frames.put(f);
                continue;
            }
            // Clean, then copy (see "Dirty tracking"): a write after the
            // write-protect faults and marks the page again. A secondary
            // MMU that could not be write-protected (busy, `notifier.rs`)
            // may still write: the copy goes out, and the page stays dirty.
            let protected = self.write_protect_page(p);
            self.frames.read_frame(f, &mut buf);
            // A failed write marks the page dirty again before the
            // reference goes, so that reclaim never finds it clean.
            if let Err(e) = self.store.write_page(p, &buf) {
                failed += 1;
                self.dirty[p as usize].store(true, Ordering::Release);
                self.error.lock().get_or_insert(e);
            } else if !protected {
                self.dirty[p as usize].store(true, Ordering::Release);
            }
            self.frames.put(f);
        }
        failed
    }
}

impl Drop for File {
    /// Writes back the dirty pages (see "When dirty pages reach the store"
    /// for a failure), then releases the cache's frames.
    fn drop(&mut self) {
        let failed = self.write_back(0, self.pages);
        let error = self.error.get_mut().take();
        if let (true, Some(e)) = (failed > 0, error) {
            eprintln!(
                "vmspace: file {}: {failed} dirty page(s) could not be written back when the \
                 file was dropped, their data is lost: {e}",
                self.id
            );
        }
        for slot in self.cache.iter() {
            let f = slot.load(Ordering::Acquire);
            if f != 0 {
                self.frames.put(FrameId(f));
            }
        }
        self.frames.objects.remove(self.id);
    }
}
