//! Reverse mapping: from a frame to every page-table entry that maps it, in
//! every address space of the arena.
//!
//! # The question and where its answer lives
//!
//! A frame's owner ([`Owner`], `frame.rs`) names the object it holds a page
//! of and the page's index there. The object keeps one [`Mapping`] per
//! attached VMA that may map its pages (`object/mappings.rs`): the address
//! space, the VMA's start address and the index range `[first, end)` it maps.
//! A page at `index` is mapped, if at all, at `start + (index - first) *
//! PAGE_SIZE` of each mapping whose range holds `index`. The walk visits
//! those addresses and checks, under the PTE lock, that the entry maps this
//! frame. The work is bounded by the object's mapping count, not by the size
//! of any address space.
//!
//! * **Files** (and shared anonymous memory): the file's list holds every
//!   attached VMA that maps it (Linux's `i_mmap`).
//! * **Anonymous memory**: the VMA's [`AnonObject`] owns the pages its first
//!   fault or a copy-on-write allocated. `fork` gives each child VMA a new
//!   object whose *parent* is the parent VMA's, and the child VMA is recorded
//!   in its object and in every ancestor (Linux's `anon_vma` chain): a page
//!   owned by an ancestor may be mapped by any descendant that has not
//!   broken the sharing yet, and its walk must see them.
//!
//! # Why the walk sees every entry (the invariant)
//!
//! *Every present entry that maps a frame owned by object `O` at index `i`
//! lies in a VMA that is recorded in `O` with a range holding `i`, at the
//! address the record computes.*
//!
//! * A fault installs an owned frame only into a VMA whose object is the
//!   owner (`fault.rs`); the VMA was recorded in its object before the fault
//!   could reach it (`Writer::insert`), or by the fault that gave it the
//!   object (`ensure_anon`, under that VMA's lock, before the frame exists).
//! * Splits, merges, `mprotect` and `mremap` record the replacement VMA (same
//!   object, same index for each page: anonymous indexes follow the memory)
//!   before they detach the old one, so a page is never in a gap.
//! * `fork` copies entries only into child VMAs that are recorded in the
//!   chain of the parent's object, and write-locks every parent VMA first, so
//!   no parent fault gives a VMA an object after its child was built
//!   without it (the Linux 6.4 corruption, fixed by commit fb49c455323f).
//! * A record is removed only when its VMA is detached, after which no entry
//!   is installed through it; its entries are zapped by the same writer.
//!
//! `check_invariants` checks it for every entry of an address space.
//!
//! # Safety of a record's address-space pointer
//!
//! A [`Mapping`] names its address space by pointer. An address space
//! removes all its records (under each list's lock) before its page table and
//! `Cpu` registry are freed (`AddressSpace::drop`), so a walk that holds a
//! list's lock may use the address space of any record it finds there.
//!
//! # Owners by id: the object table
//!
//! A frame names its owner by a small id; the arena's [`ObjectTable`] maps
//! ids to the live objects (weak references). Ids are slots, reused after an
//! object is dropped: a frame whose owner was dropped is mapped by nothing
//! (every VMA that could map it held the object), so a walk through a reused
//! id finds no entry that maps the frame, and nothing happens.
//!
//! Locks: a walk takes an object's mapping list (the rmap lock) with no
//! address-space or VMA lock held, and the PTE locks under it, one at a time;
//! each visited address space's shootdown runs under it too. The object
//! table's shard locks are leaves.

use crate::frame::{FrameAllocator, FrameId, Owner, PAGE_SIZE};
use crate::notifier::NotifierRange;
use crate::object::{AnonObject, File};
use crate::pagetable::{Event, Pte};
use crate::space::AddressSpace;
use crossbeam_utils::CachePadded;
use std::sync::{Arc, Weak};

/// Shards of the object table: objects are created and dropped by faults and
/// forks on every thread, so one lock would serialize them.
const TABLE_SHARDS: usize = 16;

/// A live object, as the table holds it.
enum Object {
    Anon(Weak<AnonObject>),
    File(Weak<File>),
}

/// One shard: slots and the free ones.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Object>>,
    free: Vec<usize>,
}

/// Id to object, for every anonymous object and file of one arena (see "Owners
/// by id"). Ids are never 0.
pub(crate) struct ObjectTable {
    /// Leaf locks outside every protocol: plain `parking_lot` mutexes, not
    /// the `sync` shim's.
    shards: Box<[CachePadded<parking_lot::Mutex<Slab>>]>,
}

impl Default for ObjectTable {
    fn default() -> Self {
        ObjectTable {
            shards: (0..TABLE_SHARDS)
                .map(|_| CachePadded::new(parking_lot::Mutex::new(Slab::default())))
                .collect(),
        }
    }
}

impl ObjectTable {
    fn insert(&self, object: Object) -> u64 {
        let shard = crate::frame::thread_index() % TABLE_SHARDS;
        let mut slab = self.shards[shard].lock();
        let slot = match slab.free.pop() {
            Some(slot) => {
                slab.slots[slot] = Some(object);
                slot
            }
            None => {
                slab.slots.push(Some(object));
                slab.slots.len() - 1
            }
        };
        1 + (slot * TABLE_SHARDS + shard) as u64
    }

    /// A new id for the anonymous object that `weak` will point to.
    pub(crate) fn insert_anon(&self, weak: Weak<AnonObject>) -> u64 {
        self.insert(Object::Anon(weak))
    }

    /// A new id for the file that `weak` will point to.
    pub(crate) fn insert_file(&self, weak: Weak<File>) -> u64 {
        self.insert(Object::File(weak))
    }

    /// Frees `id` (its object is being dropped).
    pub(crate) fn remove(&self, id: u64) {
        let (shard, slot) = Self::locate(id);
        let mut slab = self.shards[shard].lock();
        if slab.slots.get_mut(slot).and_then(Option::take).is_some() {
            slab.free.push(slot);
        }
    }

    fn locate(id: u64) -> (usize, usize) {
        let n = id.saturating_sub(1) as usize;
        (n % TABLE_SHARDS, n / TABLE_SHARDS)
    }

    fn get(&self, id: u64, f: impl FnOnce(&Object) -> Option<Owned>) -> Option<Owned> {
        let (shard, slot) = Self::locate(id);
        let slab = self.shards[shard].lock();
        slab.slots.get(slot)?.as_ref().and_then(f)
    }

    /// The live object an owner names, if any.
    fn resolve(&self, owner: Owner) -> Option<(Owned, u64)> {
        let (id, index) = match owner {
            Owner::None => return None,
            Owner::Anon { object, index } => (object, index),
            Owner::File { file, index } => (file, index),
        };
        let wants_anon = matches!(owner, Owner::Anon { .. });
        let found = self.get(id, |object| match object {
            Object::Anon(w) if wants_anon => w.upgrade().map(Owned::Anon),
            Object::File(w) if !wants_anon => w.upgrade().map(Owned::File),
            _ => None,
        })?;
        Some((found, index))
    }
}

/// A strong reference to a frame's owner, held during a walk. Dropped after
/// the walk's locks are released (a drop may take them).
enum Owned {
    Anon(Arc<AnonObject>),
    File(Arc<File>),
}

/// What [`FrameAllocator::unmap_frame`] did.
#[derive(Default)]
pub(crate) struct Unmapped {
    /// Entries replaced.
    pub(crate) removed: usize,
    /// A replaced entry was dirty.
    pub(crate) dirty: bool,
    /// An `mlock`ed VMA stopped the walk.
    pub(crate) mlocked: bool,
    /// A secondary MMU answered busy to a non-blockable invalidation: its
    /// entry stays (`notifier.rs`).
    pub(crate) busy: bool,
}

/// Why [`FrameAllocator::try_to_unmap`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// The frame holds a private anonymous page, whose only copy it is.
    Anonymous,
    /// The shared zero frame is never unmapped this way.
    ZeroFrame,
}

impl std::fmt::Display for UnmapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UnmapError::Anonymous => {
                "a private anonymous page cannot be unmapped: it is its only copy"
            }
            UnmapError::ZeroFrame => "the zero frame is never unmapped",
        })
    }
}

impl std::error::Error for UnmapError {}

/// What a walk does at one address that may map the frame.
pub(crate) type Visit<'a> = dyn FnMut(&AddressSpace, u64) + 'a;

impl FrameAllocator {
    /// Calls `visit(space, addr)` for every address that may map `f` (see
    /// "The question"), under the owner's rmap lock. The caller holds a
    /// reference to `f`.
    pub(crate) fn walk_rmap(&self, f: FrameId, visit: &mut Visit<'_>) {
        let Some((owner, index)) = self.objects.resolve(self.owner(f)) else {
            return;
        };
        match &owner {
            Owned::Anon(object) => object.mappings.for_each_at(index, visit),
            Owned::File(file) => file.mappings().for_each_at(index, visit),
        }
        drop(owner);
    }

    /// Removes every page-table entry that maps `f`, in every address space
    /// of this arena, with the shootdown: once it returns, no `Cpu` uses a
    /// translation to `f` that existed when it was called (a fault may map
    /// the page again afterwards). A removed entry that was dirty marks the
    /// file page dirty, so its data reaches the store. Returns how many
    /// entries it removed.
    ///
    /// Only page-cache frames can be unmapped: their data stays in the cache
    /// and a later fault maps it again. A private anonymous page has nowhere
    /// else to be, so it is refused ([`UnmapError::Anonymous`]), as is the
    /// zero frame: reclaim sends anonymous pages to swap instead
    /// (`swapcache.rs`), which turns their entries into swap entries.
    ///
    /// The caller holds a reference to `f` (so the frame is not freed and
    /// reused meanwhile), and holds no address-space, VMA or PTE lock.
    pub fn try_to_unmap(&self, f: FrameId) -> Result<usize, UnmapError> {
        let owner = self.owner(f);
        match owner {
            _ if f == FrameId::ZERO => return Err(UnmapError::ZeroFrame),
            Owner::Anon { .. } => return Err(UnmapError::Anonymous),
            Owner::None => return Ok(0),
            Owner::File { .. } => {}
        }
        Ok(self.unmap_file_page(f, false).0)
    }

    /// [`FrameAllocator::try_to_unmap`] of a page-cache frame, for reclaim
    /// when `keep_mlocked`: a VMA that is `mlock`ed stops the walk (the page
    /// stays). Returns the entries removed and whether an `mlock`ed VMA was
    /// met.
    pub(crate) fn unmap_file_page(&self, f: FrameId, keep_mlocked: bool) -> (usize, bool) {
        let owner = self.owner(f);
        let done = self.unmap_frame(f, keep_mlocked, || Some(Pte(0)));
        if done.dirty {
            self.mark_owner_dirty(owner);
        }
        (done.removed, done.mlocked)
    }

    /// Replaces every entry that maps `f` by what `replacement` gives (an
    /// empty entry, or a swap entry; `None` leaves that entry as it is),
    /// page by page through the reverse map, each with its shootdown. With
    /// `keep_mlocked`, an `mlock`ed VMA stops the walk. The caller holds a
    /// reference to `f` and no address-space, VMA or PTE lock.
    pub(crate) fn unmap_frame(
        &self,
        f: FrameId,
        keep_mlocked: bool,
        mut replacement: impl FnMut() -> Option<Pte>,
    ) -> Unmapped {
        let mut done = Unmapped::default();
        let blockable = self.walks_may_sleep();
        self.walk_rmap(f, &mut |space, addr| {
            if done.mlocked || (keep_mlocked && space.mlocked_at(addr)) {
                done.mlocked = true;
                return;
            }
            let range = NotifierRange::new(addr, addr + PAGE_SIZE, Event::Reclaim, blockable);
            let Ok(batch) = space.update_range(range, |_, pte| {
                if pte.frame() != f {
                    return pte;
                }
                match replacement() {
                    Some(new) => {
                        done.removed += 1;
                        new
                    }
                    None => pte,
                }
            }) else {
                done.busy = true;
                return;
            };
            done.dirty |= !batch.dirty_frames.is_empty();
            space.flush(batch);
        });
        if done.busy {
            self.reclaim_counters().notifier_busy.bump();
        }
        done
    }

    /// Whether MMU-notifier callbacks of a reverse-map walk may sleep: they
    /// run under the rmap lock, which must then be a sleeping one
    /// (`notifier.rs`, "Blockable calls"). The debug break
    /// `sleep-under-rwlock` claims they may under the spinning one too.
    pub(crate) fn walks_may_sleep(&self) -> bool {
        self.rmap_lock_kind() != crate::RmapLockKind::Rwlock
            || crate::debug::broken(crate::debug::ProtocolBreak::SleepUnderRwlock)
    }

    /// The file whose page-cache frame `f` is, and the page's index, if the
    /// file is alive.
    pub(crate) fn file_of(&self, f: FrameId) -> Option<(Arc<File>, u64)> {
        match self.objects.resolve(self.owner(f)) {
            Some((Owned::File(file), index)) => Some((file, index)),
            _ => None,
        }
    }

    /// Reads and clears the accessed bit of every entry that maps `f`;
    /// returns how many had it (Linux's `folio_referenced`). The caller holds
    /// a reference to `f` and no address-space, VMA or PTE lock.
    pub fn page_referenced(&self, f: FrameId) -> usize {
        if f == FrameId::ZERO {
            return 0;
        }
        let mut referenced = 0;
        self.walk_rmap(f, &mut |space, addr| {
            // A secondary MMU's use counts as the entry's (`clear_young`),
            // where the entry maps this frame.
            if let Some(accessed) = space.pt.test_and_clear_accessed(addr, f) {
                if space.notifier_clear_young(addr, addr + PAGE_SIZE) | accessed {
                    referenced += 1;
                }
            }
        });
        referenced
    }

    /// A dirty entry to a file page was removed: the page's data must reach
    /// the store.
    pub(crate) fn mark_owner_dirty(&self, owner: Owner) {
        if let Some((Owned::File(file), index)) = self.objects.resolve(owner) {
            file.mark_dirty(index);
        }
    }
}

impl File {
    /// Write-protects every entry that maps page `pgoff` and flushes them
    /// (the `clean` event), so that the next write faults and marks the page
    /// dirty again: a write-back that copies the page after this returns
    /// cannot miss a write that reclaim would then lose. Called with no
    /// address-space, VMA or PTE lock held.
    /// Only entries that map the cached frame change: a private mapping's
    /// entry at that address may map its own anonymous copy, which is not
    /// this page and must keep its dirty bit.
    ///
    /// Returns `false` if a secondary MMU answered busy to the (then
    /// non-blockable) invalidation of an entry, which keeps its write
    /// access: the caller must keep the page dirty.
    pub(crate) fn write_protect_page(&self, pgoff: u64) -> bool {
        let Some(cached) = self.cached(pgoff) else {
            return true;
        };
        let mut protected = true;
        let blockable = self.frames().walks_may_sleep();
        self.mappings().for_each_at(pgoff, &mut |space, addr| {
            let range = NotifierRange::new(addr, addr + PAGE_SIZE, Event::Clean, blockable);
            let Ok(batch) = space.update_range(range, |_, pte| {
                if pte.frame() != cached {
                    return pte;
                }
                Pte(pte.0 & !(Pte::WRITE | Pte::DIRTY))
            }) else {
                protected = false;
                return;
            };
            space.flush(batch);
        });
        protected
    }
}
