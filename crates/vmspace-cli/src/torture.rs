//! `vmspace torture`: random concurrent operations on one address space per
//! strategy, with fault injection, judged by a checker that knows what every
//! word of memory may hold.
//!
//! # The run
//!
//! `threads` threads share a window of [`PAGES`] pages at [`BASE`], small on
//! purpose so that operations collide. Each thread draws operations at random:
//! loads and stores of the first word of a page (through its own [`Cpu`]),
//! `mmap` (fixed, anonymous or file, private or shared), `munmap`, `mprotect`,
//! `mremap` (in place, or fixed within the window), `madvise(DONTNEED)` and
//! `msync`. Loads and stores take no lock of the checker, so they race every
//! mapping change; mapping changes take the checker's model lock around the
//! call (they are serialized by the address space's write lock anyway), so
//! that the model sees them in the order they happened.
//!
//! # The checker (interval semantics)
//!
//! A global clock (one `SeqCst` counter) stamps the start and the end of every
//! operation. The model keeps the mapping state after each mapping change: for
//! every page, the *cell* it shows (a unit of memory content: a private page,
//! or a page of a file or shared-memory object, identified across `mremap`
//! moves) and its protection. An access whose interval is `[s, e]` may have
//! seen any state current at some moment of that interval.
//!
//! * A store writes a value that names its thread and sequence number. It
//!   lands in one of the cells its candidate states allow writing to (exactly
//!   one: a *definite* write).
//! * A load of value `v` is legitimate if some candidate cell holds an event
//!   with value `v` (a store, the cell's initial content: zero or the file's
//!   word, a `DONTNEED` reset) that began before the load ended and that no
//!   definite event on the same cell superseded (began after it ended and
//!   ended before the load began). Any other value (poison of a freed frame,
//!   another cell's data, a failed store's value) is a violation.
//! * A fault is legitimate if some candidate state allows it: no mapping,
//!   a protection that forbids the access, a page past the end of its object,
//!   and, only with injection on, out-of-memory or an I/O error.
//!
//! Every `epoch`, the threads stop at a barrier, the checker judges what
//! happened, and the legitimate contents of each live cell carry over to the
//! next epoch, so memory stays bounded however long the run.
//!
//! At the end, injection is turned off, the files are synced, and the words in
//! their backing stores must be legitimate final contents (no write lost);
//! when everything is dropped, every frame must be back in the allocator.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, Weak};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vmspace::{
    AddressSpace, BackingStore, Config, Cpu, Errno, FaultCause, FaultStats, File, FrameAllocator,
    MapFlags, MapInfo, MapSource, Prot, RemapFlags, Strategy, PAGE_SIZE,
};

/// Base address of the window the threads work in.
pub const BASE: u64 = 0x4000_0000;
/// Pages in the window.
pub const PAGES: u64 = 64;
/// Pages of each data file (mapped shared, written).
const DATA_PAGES: u64 = 32;
/// Pages of the read-only file (mapped private; mappings may pass its end).
const RO_PAGES: u64 = 24;
/// Frames in the arena: the window, the page caches, and room to spare.
const ARENA_FRAMES: u64 = 2048;
/// The top byte of a value written by a store.
const STORE_TAG: u64 = 0xA5 << 56;
/// The top byte of a file's initial word.
const FILE_TAG: u64 = 0xF1 << 56;
/// Violations printed in full (the rest are counted).
const SHOWN: usize = 10;

/// What a run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seconds of random operations (for this strategy).
    pub seconds: f64,
    /// Threads.
    pub threads: usize,
    /// Seed of every random choice (thread `i` uses `seed + i`).
    pub seed: u64,
    /// Probability that a frame allocation or a backing-store I/O fails.
    pub inject: f64,
    /// Time between checkpoints.
    pub epoch: Duration,
}

/// What a run found.
#[derive(Debug)]
pub struct Report {
    /// The strategy.
    pub strategy: Strategy,
    /// Operations done (accesses and calls).
    pub ops: u64,
    /// Loads and stores.
    pub accesses: u64,
    /// Mapping changes (`mmap`, `munmap`, `mprotect`, `mremap`, `madvise`).
    pub mapping_ops: u64,
    /// Checkpoints.
    pub epochs: u64,
    /// Faults by path.
    pub stats: FaultStats,
    /// The first violations, in words.
    pub violations: Vec<String>,
    /// All violations.
    pub violation_count: u64,
    /// Frames still allocated after everything was dropped.
    pub leaked_frames: usize,
    /// Failed accesses by cause: no mapping, protection, past the end, I/O
    /// error, out of memory.
    pub fault_causes: [u64; 5],
    /// Pages whose cell the model lost track of (a partly failed call); their
    /// content is not checked.
    pub unknown_pages: u64,
}

impl Report {
    /// Whether the run found nothing wrong.
    pub fn clean(&self) -> bool {
        self.violation_count == 0 && self.leaked_frames == 0
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "{}: {} ops ({} accesses, {} mapping changes), {} checkpoints, faults lockless {} locked {} fallback {} retry {}, failed accesses segv {} prot {} bus {} io {} oom {}, {} violations, {} leaked frames, {} unchecked pages",
            self.strategy.name(),
            self.ops,
            self.accesses,
            self.mapping_ops,
            self.epochs,
            s.lockless,
            s.locked,
            s.fallback,
            s.retry,
            self.fault_causes[0],
            self.fault_causes[1],
            self.fault_causes[2],
            self.fault_causes[3],
            self.fault_causes[4],
            self.violation_count,
            self.leaked_frames,
            self.unknown_pages,
        )
    }
}

// ---- the backing store with injected failures ----

/// Word 0 of every page (the rest of a page is zero).
struct StoreWords {
    words: Mutex<Vec<u64>>,
    fail: Arc<Injector>,
}

/// Shared failure switch of the stores.
struct Injector {
    rate: AtomicU64,
    state: AtomicU64,
}

impl Injector {
    fn fails(&self) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return false;
        }
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        (x >> 32) < rate
    }

    fn set(&self, p: f64) {
        self.rate.store(
            (p.clamp(0.0, 1.0) * (1u64 << 32) as f64) as u64,
            Ordering::Relaxed,
        );
    }
}

struct FlakyStore(Arc<StoreWords>);

impl BackingStore for FlakyStore {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.0.fail.fails() {
            return Err(io::Error::other("injected read error"));
        }
        let words = self.0.words.lock().unwrap();
        let w = words
            .get(pgoff as usize)
            .copied()
            .ok_or_else(|| io::Error::other("read past the end"))?;
        buf.fill(0);
        buf[..8].copy_from_slice(&w.to_le_bytes());
        Ok(())
    }

    fn write_page(&self, pgoff: u64, buf: &[u8]) -> io::Result<()> {
        if self.0.fail.fails() {
            return Err(io::Error::other("injected write error"));
        }
        let mut words = self.0.words.lock().unwrap();
        let slot = words
            .get_mut(pgoff as usize)
            .ok_or_else(|| io::Error::other("write past the end"))?;
        *slot = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        Ok(())
    }
}

/// The initial word of page `pgoff` of file `id`.
fn file_word(id: u64, pgoff: u64) -> u64 {
    FILE_TAG | (id << 32) | pgoff
}

// ---- the model ----

/// What a cell is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A private anonymous page.
    Anon,
    /// A private copy of page `pgoff` of the read-only file.
    PrivFile(u64),
    /// A page of a file or shared-memory object.
    Shared,
    /// A page past the end of its object: every access is a bus error.
    PastEnd,
    /// The model lost track (a call failed half-way): not checked.
    Unknown,
}

/// What a page shows in one mapping state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    cell: u32,
    prot: Prot,
}

/// An event that gives a cell a value.
#[derive(Clone, Copy, Debug)]
struct Ev {
    value: u64,
    start: u64,
    end: u64,
    /// It certainly happened to this cell (so it supersedes older values).
    definite: bool,
}

/// A mapping state and the interval of the change that made it.
struct StateRec {
    start: u64,
    end: u64,
    slots: Vec<Option<Slot>>,
}

/// One load or store.
#[derive(Clone, Copy, Debug)]
struct Access {
    page: u64,
    write: bool,
    value: u64,
    start: u64,
    end: u64,
    result: Result<(), FaultCause>,
}

/// A mapping change, as drawn.
#[derive(Clone, Copy, Debug)]
enum Change {
    Mmap {
        page: u64,
        len: u64,
        prot: Prot,
        source: Source,
        noreplace: bool,
    },
    Munmap {
        page: u64,
        len: u64,
    },
    Mprotect {
        page: u64,
        len: u64,
        prot: Prot,
    },
    Mremap {
        page: u64,
        old: u64,
        new: u64,
        dest: Option<u64>,
    },
    Dontneed {
        page: u64,
        len: u64,
    },
}

#[derive(Clone, Copy, Debug)]
enum Source {
    Anon { shared: bool },
    Data { file: usize, pgoff: u64 },
    ReadOnly { pgoff: u64 },
}

/// The checker's model; see the module documentation.
struct Model {
    kinds: Vec<Kind>,
    /// Cells of shared pages by (object address, page offset).
    shared: HashMap<(usize, u64), u32>,
    /// Every object seen, as a weak reference: that keeps its allocation,
    /// so its address is never reused for another object, but lets the
    /// object (and its pages) go when the last mapping does.
    objects: HashMap<usize, Weak<File>>,
    /// The current state.
    state: Vec<Option<Slot>>,
    /// The state when the epoch began, then one per change.
    history: Vec<StateRec>,
    /// Value events of this epoch, by cell (carried ones included).
    events: HashMap<u32, Vec<Ev>>,
    /// The single cell of private pages past the end of the read-only file.
    past_end: u32,
    mapping_ops: u64,
    unknown_pages: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            kinds: vec![Kind::PastEnd],
            shared: HashMap::new(),
            objects: HashMap::new(),
            state: vec![None; PAGES as usize],
            history: vec![StateRec {
                start: 0,
                end: 0,
                slots: vec![None; PAGES as usize],
            }],
            events: HashMap::new(),
            past_end: 0,
            mapping_ops: 0,
            unknown_pages: 0,
        }
    }

    fn new_cell(&mut self, kind: Kind, initial: Option<u64>, start: u64, end: u64) -> u32 {
        let id = self.kinds.len() as u32;
        self.kinds.push(kind);
        if let Some(value) = initial {
            self.add_event(id, value, start, end, true);
        }
        id
    }

    fn add_event(&mut self, cell: u32, value: u64, start: u64, end: u64, definite: bool) {
        self.events.entry(cell).or_default().push(Ev {
            value,
            start,
            end,
            definite,
        });
    }

    /// The cell of page `pgoff` of a shared object (created on first sight,
    /// with the object's initial content from before the run).
    fn shared_cell(&mut self, object: &Arc<File>, pgoff: u64, initial: u64) -> u32 {
        let key = (Arc::as_ptr(object) as usize, pgoff);
        if let Some(&c) = self.shared.get(&key) {
            return c;
        }
        self.objects
            .entry(key.0)
            .or_insert_with(|| Arc::downgrade(object));
        let c = self.new_cell(Kind::Shared, Some(initial), 0, 0);
        self.shared.insert(key, c);
        c
    }

    /// Records the state after `change` (which returned `result`), read from
    /// `maps`, stamped `[start, end]`.
    fn apply(
        &mut self,
        change: Change,
        result: Result<u64, Errno>,
        maps: &[MapInfo],
        files: &Files,
        start: u64,
        end: u64,
    ) {
        self.mapping_ops += 1;
        let prev = self.state.clone();
        let mut next = vec![None; PAGES as usize];
        for info in maps {
            let from = info.start.max(BASE);
            let to = info.end.min(BASE + PAGES * PAGE_SIZE);
            let mut addr = from;
            while addr < to {
                let p = (addr - BASE) / PAGE_SIZE;
                let cell = self.cell_after(change, result, info, addr, p, &prev, files, start, end);
                next[p as usize] = Some(Slot {
                    cell,
                    prot: info.prot,
                });
                addr += PAGE_SIZE;
            }
        }
        if let Change::Dontneed { page, len } = change {
            for p in page..(page + len).min(PAGES) {
                let Some(slot) = next[p as usize] else {
                    continue;
                };
                let value = match self.kinds[slot.cell as usize] {
                    Kind::Anon => 0,
                    Kind::PrivFile(pgoff) => file_word(files.ro_id, pgoff),
                    _ => continue,
                };
                self.add_event(slot.cell, value, start, end, result.is_ok());
            }
        }
        self.history.push(StateRec {
            start,
            end,
            slots: next.clone(),
        });
        self.state = next;
    }

    /// The cell page `p` (at `addr`, inside `info`) shows after the change.
    #[allow(clippy::too_many_arguments)]
    fn cell_after(
        &mut self,
        change: Change,
        result: Result<u64, Errno>,
        info: &MapInfo,
        addr: u64,
        p: u64,
        prev: &[Option<Slot>],
        files: &Files,
        start: u64,
        end: u64,
    ) -> u32 {
        let pgoff_here = |object_pgoff: u64| object_pgoff + (addr - info.start) / PAGE_SIZE;
        if let (true, Some((object, pgoff))) = (info.shared, &info.object) {
            let pgoff = pgoff_here(*pgoff);
            if pgoff >= object.pages() {
                return self.past_end;
            }
            let initial = files.initial_word(object, pgoff);
            return self.shared_cell(object, pgoff, initial);
        }
        let want = match &info.object {
            None => Kind::Anon,
            Some((_, pgoff)) if pgoff_here(*pgoff) >= RO_PAGES => return self.past_end,
            Some((_, pgoff)) => Kind::PrivFile(pgoff_here(*pgoff)),
        };
        match origin(change, result, p) {
            Origin::New => {
                let initial = match want {
                    Kind::PrivFile(pgoff) => file_word(files.ro_id, pgoff),
                    _ => 0,
                };
                self.new_cell(want, Some(initial), start, end)
            }
            Origin::From(q) => {
                let q = match (change, prev[q as usize]) {
                    // A moved page whose source was a gap keeps what was there.
                    (Change::Mremap { .. }, None) => p,
                    _ => q,
                };
                match prev[q as usize] {
                    Some(slot) if self.kinds[slot.cell as usize] == want => slot.cell,
                    _ => {
                        self.unknown_pages += 1;
                        self.new_cell(Kind::Unknown, None, start, end)
                    }
                }
            }
        }
    }

    /// Starts a new epoch at clock `now`: the current state is the first,
    /// and every live cell keeps the values that were legitimate at the end.
    fn carry_over(&mut self, now: u64) {
        // Pages of objects that are gone cannot be seen again.
        let objects = &self.objects;
        self.shared
            .retain(|(object, _), _| objects[object].strong_count() > 0);
        let mut live: Vec<u32> = self.state.iter().flatten().map(|s| s.cell).collect();
        live.extend(self.shared.values().copied());
        live.sort_unstable();
        live.dedup();
        let mut events = HashMap::new();
        for c in live {
            let Some(evs) = self.events.get(&c) else {
                continue;
            };
            let mut kept: Vec<Ev> = evs
                .iter()
                .filter(|x| !superseded(evs, x, u64::MAX))
                .map(|x| Ev {
                    value: x.value,
                    start: now,
                    end: now,
                    definite: true,
                })
                .collect();
            kept.sort_by_key(|e| e.value);
            kept.dedup_by_key(|e| e.value);
            events.insert(c, kept);
        }
        self.events = events;
        self.history = vec![StateRec {
            start: now,
            end: now,
            slots: self.state.clone(),
        }];
    }
}

/// Where a page's content comes from after a change.
enum Origin {
    /// A fresh cell.
    New,
    /// The cell page `q` showed before.
    From(u64),
}

fn origin(change: Change, result: Result<u64, Errno>, p: u64) -> Origin {
    let Ok(ret) = result else {
        return Origin::From(p);
    };
    match change {
        Change::Mmap { page, len, .. } if (page..page + len).contains(&p) => Origin::New,
        Change::Mremap { page, old, new, .. } => {
            let r = (ret - BASE) / PAGE_SIZE;
            let kept = old.min(new);
            if r == page {
                if (page + old..page + new).contains(&p) {
                    return Origin::New;
                }
                return Origin::From(p);
            }
            if (r..r + kept).contains(&p) {
                Origin::From(page + (p - r))
            } else if (r + kept..r + new).contains(&p) {
                Origin::New
            } else {
                Origin::From(p)
            }
        }
        _ => Origin::From(p),
    }
}

/// Whether a definite event of `evs` began after `x` ended and ended before
/// `before`.
fn superseded(evs: &[Ev], x: &Ev, before: u64) -> bool {
    evs.iter()
        .any(|y| y.definite && y.start > x.end && y.end < before)
}

// ---- the files ----

struct Files {
    data: Vec<Arc<File>>,
    data_stores: Vec<Arc<StoreWords>>,
    ro: Arc<File>,
    ro_id: u64,
}

impl Files {
    fn new(frames: &Arc<FrameAllocator>, injector: &Arc<Injector>) -> Files {
        let store = |id: u64, pages: u64| {
            Arc::new(StoreWords {
                words: Mutex::new((0..pages).map(|p| file_word(id, p)).collect()),
                fail: injector.clone(),
            })
        };
        let data_stores: Vec<_> = (1..=2).map(|id| store(id, DATA_PAGES)).collect();
        let data = data_stores
            .iter()
            .map(|s| {
                Arc::new(File::new(
                    DATA_PAGES,
                    Box::new(FlakyStore(s.clone())),
                    frames.clone(),
                ))
            })
            .collect();
        let ro_id = 3;
        let ro = Arc::new(File::new(
            RO_PAGES,
            Box::new(FlakyStore(store(ro_id, RO_PAGES))),
            frames.clone(),
        ));
        Files {
            data,
            data_stores,
            ro,
            ro_id,
        }
    }

    /// The initial word of a page of `object` (zero for shared memory).
    fn initial_word(&self, object: &Arc<File>, pgoff: u64) -> u64 {
        match self.data.iter().position(|f| Arc::ptr_eq(f, object)) {
            Some(i) => file_word(i as u64 + 1, pgoff),
            None => 0,
        }
    }
}

// ---- the workers ----

/// What the threads share.
struct Shared {
    space: Arc<AddressSpace>,
    files: Files,
    model: Mutex<Model>,
    clock: AtomicU64,
    pause: AtomicBool,
    stop: AtomicBool,
    barrier: Barrier,
    /// Accesses handed in at a checkpoint.
    accesses: Mutex<Vec<Access>>,
    ops: AtomicU64,
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

fn worker(sh: &Shared, index: u64, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cpu = sh.space.cpu();
    let mut log = Vec::new();
    let mut seq = 0u64;
    let mut ops = 0u64;
    loop {
        if sh.pause.load(Ordering::Acquire) {
            sh.accesses.lock().unwrap().append(&mut log);
            sh.ops.fetch_add(ops, Ordering::Relaxed);
            ops = 0;
            sh.barrier.wait();
            sh.barrier.wait();
            if sh.stop.load(Ordering::Acquire) {
                return;
            }
        }
        ops += 1;
        match rng.gen_range(0..100) {
            0..=24 => {
                seq += 1;
                let value = STORE_TAG | (index << 40) | seq;
                log.push(access(sh, &mut cpu, &mut rng, Some(value)));
            }
            25..=49 => log.push(access(sh, &mut cpu, &mut rng, None)),
            50..=51 => {
                let _ = sh.space.msync(BASE, PAGES * PAGE_SIZE);
            }
            _ => change(sh, &mut rng),
        }
    }
}

fn access(sh: &Shared, cpu: &mut Cpu, rng: &mut SmallRng, store: Option<u64>) -> Access {
    let page = rng.gen_range(0..PAGES);
    let addr = BASE + page * PAGE_SIZE;
    let start = sh.tick();
    let (value, result) = match store {
        Some(v) => (v, cpu.write_u64(addr, v).map_err(|f| f.cause)),
        None => match cpu.read_u64(addr) {
            Ok(v) => (v, Ok(())),
            Err(f) => (0, Err(f.cause)),
        },
    };
    let end = sh.tick();
    Access {
        page,
        write: store.is_some(),
        value,
        start,
        end,
        result,
    }
}

fn prot(rng: &mut SmallRng) -> Prot {
    match rng.gen_range(0..10) {
        0..=5 => Prot::READ_WRITE,
        6..=8 => Prot::READ,
        _ => Prot::NONE,
    }
}

fn draw_change(rng: &mut SmallRng) -> Change {
    let page = rng.gen_range(0..PAGES);
    let len = rng.gen_range(1..=8).min(PAGES - page);
    match rng.gen_range(0..100) {
        0..=29 => {
            let source = match rng.gen_range(0..10) {
                0..=3 => Source::Anon { shared: false },
                4..=5 => Source::Anon { shared: true },
                6..=7 => Source::Data {
                    file: rng.gen_range(0..2),
                    pgoff: rng.gen_range(0..DATA_PAGES - 4),
                },
                _ => Source::ReadOnly {
                    pgoff: rng.gen_range(0..RO_PAGES),
                },
            };
            Change::Mmap {
                page,
                len,
                prot: prot(rng),
                source,
                noreplace: rng.gen_bool(0.1),
            }
        }
        30..=44 => Change::Munmap { page, len },
        45..=69 => Change::Mprotect {
            page,
            len,
            prot: prot(rng),
        },
        70..=89 => {
            let new = rng.gen_range(1..=8);
            let dest = rng
                .gen_bool(0.6)
                .then(|| rng.gen_range(0..PAGES.saturating_sub(new).max(1)));
            Change::Mremap {
                page,
                old: len,
                new: if dest.is_none() || rng.gen_bool(0.5) {
                    new
                } else {
                    len
                },
                dest,
            }
        }
        _ => Change::Dontneed { page, len },
    }
}

fn change(sh: &Shared, rng: &mut SmallRng) {
    let change = draw_change(rng);
    let mut model = sh.model.lock().unwrap();
    let start = sh.tick();
    let result = call(sh, change);
    let end = sh.tick();
    let maps = sh.space.maps();
    model.apply(change, result, &maps, &sh.files, start, end);
}

fn call(sh: &Shared, change: Change) -> Result<u64, Errno> {
    let at = |page: u64| BASE + page * PAGE_SIZE;
    let s = &sh.space;
    match change {
        Change::Mmap {
            page,
            len,
            prot,
            source,
            noreplace,
        } => {
            let (shared, source) = match source {
                Source::Anon { shared } => (shared, MapSource::Anon),
                Source::Data { file, pgoff } => (
                    true,
                    MapSource::File {
                        file: sh.files.data[file].clone(),
                        pgoff,
                    },
                ),
                Source::ReadOnly { pgoff } => (
                    false,
                    MapSource::File {
                        file: sh.files.ro.clone(),
                        pgoff,
                    },
                ),
            };
            let flags = MapFlags {
                shared,
                fixed: !noreplace,
                fixed_noreplace: noreplace,
                growsdown: false,
            };
            s.mmap(at(page), len * PAGE_SIZE, prot, flags, source)
        }
        Change::Munmap { page, len } => s.munmap(at(page), len * PAGE_SIZE).map(|()| 0),
        Change::Mprotect { page, len, prot } => {
            s.mprotect(at(page), len * PAGE_SIZE, prot).map(|()| 0)
        }
        Change::Mremap {
            page,
            old,
            new,
            dest,
        } => {
            let flags = RemapFlags {
                may_move: dest.is_some(),
                fixed: dest.map(at),
            };
            s.mremap(at(page), old * PAGE_SIZE, new * PAGE_SIZE, flags)
        }
        Change::Dontneed { page, len } => s.madvise_dontneed(at(page), len * PAGE_SIZE).map(|()| 0),
    }
}

// ---- judging an epoch ----

/// Judges one epoch's accesses against the model; returns the violations.
fn judge(model: &mut Model, accesses: &mut [Access], injecting: bool) -> Vec<String> {
    accesses.sort_by_key(|a| a.start);
    let mut violations = Vec::new();
    // Stores first: they are events of the cells they may have hit.
    for a in accesses.iter().filter(|a| a.write) {
        let states = candidates(&model.history, a.start, a.end);
        if let Err(cause) = a.result {
            if !fault_allowed(model, states, a, cause, injecting) {
                violations.push(describe(model, a, states, "a fault no state allows"));
            }
            continue;
        }
        let mut cells: Vec<u32> = states
            .iter()
            .filter_map(|s| s.slots[a.page as usize])
            .filter(|s| s.prot.write && model.kinds[s.cell as usize] != Kind::PastEnd)
            .map(|s| s.cell)
            .collect();
        cells.sort_unstable();
        cells.dedup();
        if cells.is_empty() {
            violations.push(describe(
                model,
                a,
                states,
                "a store succeeded where no state allows it",
            ));
            continue;
        }
        let definite = cells.len() == 1;
        for c in cells {
            model.add_event(c, a.value, a.start, a.end, definite);
        }
    }
    for evs in model.events.values_mut() {
        evs.sort_by_key(|e| e.start);
    }
    for a in accesses.iter().filter(|a| !a.write) {
        let states = candidates(&model.history, a.start, a.end);
        if let Err(cause) = a.result {
            if !fault_allowed(model, states, a, cause, injecting) {
                violations.push(describe(model, a, states, "a fault no state allows"));
            }
            continue;
        }
        let cells: Vec<u32> = states
            .iter()
            .filter_map(|s| s.slots[a.page as usize])
            .filter(|s| s.prot.read || s.prot.write)
            .map(|s| s.cell)
            .filter(|&c| model.kinds[c as usize] != Kind::PastEnd)
            .collect();
        if cells.is_empty() {
            violations.push(describe(
                model,
                a,
                states,
                "a load succeeded where no state allows it",
            ));
            continue;
        }
        if cells
            .iter()
            .any(|&c| model.kinds[c as usize] == Kind::Unknown || explains(model, c, a))
        {
            continue;
        }
        violations.push(describe(
            model,
            a,
            states,
            "a value that no store, initial content or reset explains",
        ));
    }
    violations
}

/// The states an access during `[start, end]` may have seen: those made
/// before it ended and not replaced before it began.
fn candidates(history: &[StateRec], start: u64, end: u64) -> &[StateRec] {
    let first = history[1..].partition_point(|s| s.end < start);
    let last = history.partition_point(|s| s.start < end).max(1);
    &history[first.min(last - 1)..last]
}

fn explains(model: &Model, cell: u32, a: &Access) -> bool {
    let Some(evs) = model.events.get(&cell) else {
        return false;
    };
    evs.iter()
        .take_while(|x| x.start < a.end)
        .any(|x| x.value == a.value && !superseded(evs, x, a.start))
}

fn fault_allowed(
    model: &Model,
    states: &[StateRec],
    a: &Access,
    cause: FaultCause,
    injecting: bool,
) -> bool {
    match cause {
        FaultCause::OutOfMemory | FaultCause::Io => return injecting,
        FaultCause::NoMapping | FaultCause::Protection | FaultCause::PastEnd => {}
    }
    states
        .iter()
        .any(|s| match (s.slots[a.page as usize], cause) {
            (None, FaultCause::NoMapping) => true,
            (Some(slot), FaultCause::Protection) => {
                if a.write {
                    !slot.prot.write
                } else {
                    !slot.prot.read && !slot.prot.write
                }
            }
            (Some(slot), FaultCause::PastEnd) => {
                matches!(
                    model.kinds[slot.cell as usize],
                    Kind::PastEnd | Kind::Unknown
                )
            }
            _ => false,
        })
}

fn describe(model: &Model, a: &Access, states: &[StateRec], what: &str) -> String {
    let seen: Vec<String> = states
        .iter()
        .map(|s| match s.slots[a.page as usize] {
            None => "unmapped".to_string(),
            Some(slot) => format!(
                "cell {} {:?} {}",
                slot.cell,
                model.kinds[slot.cell as usize],
                prot_name(slot.prot)
            ),
        })
        .collect();
    format!(
        "{what}: {} of page {} ({:#x}) {} during [{}, {}], states then: [{}]",
        if a.write { "store" } else { "load" },
        a.page,
        BASE + a.page * PAGE_SIZE,
        match a.result {
            Ok(()) => format!("= {}", value_name(a.value)),
            Err(c) => format!("-> {c:?} (value {})", value_name(a.value)),
        },
        a.start,
        a.end,
        seen.join("; ")
    )
}

fn cause_index(c: FaultCause) -> usize {
    match c {
        FaultCause::NoMapping => 0,
        FaultCause::Protection => 1,
        FaultCause::PastEnd => 2,
        FaultCause::Io => 3,
        FaultCause::OutOfMemory => 4,
    }
}

fn prot_name(p: Prot) -> &'static str {
    match (p.read, p.write) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "none",
    }
}

fn value_name(v: u64) -> String {
    match v >> 56 {
        0xA5 => format!("store {}#{}", (v >> 40) & 0xffff, v & 0xff_ffff_ffff),
        0xF1 => format!("file {} page {}", (v >> 32) & 0xff, v & 0xffff_ffff),
        _ if v == 0 => "0".to_string(),
        _ => format!("{v:#x}"),
    }
}

// ---- the run ----

/// Frames still in use once the epoch garbage (old tree nodes, and with them
/// the last references to unmapped VMAs and their objects) has been
/// collected. Reclamation is lazy: each pin-and-flush lets the global epoch
/// advance and frees what no reader can reach any more.
fn frames_after_grace_periods(frames: &FrameAllocator) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames.in_use() != 0 && Instant::now() < deadline {
        vmspace_tree::pin().flush();
        std::thread::yield_now();
    }
    frames.in_use()
}

/// Runs the torture on one strategy.
pub fn run(strategy: Strategy, opts: &Options) -> anyhow::Result<Report> {
    let mut frames = FrameAllocator::new(ARENA_FRAMES * PAGE_SIZE)
        .map_err(|e| anyhow::anyhow!("frame arena: {}", e.0))?;
    frames.set_poison(true);
    let frames = Arc::new(frames);
    let injector = Arc::new(Injector {
        rate: AtomicU64::new(0),
        state: AtomicU64::new(opts.seed | 1),
    });
    let config = Config {
        strategy,
        ..Config::default()
    };
    let threads = opts.threads.max(1);
    let sh = Arc::new(Shared {
        space: AddressSpace::new(config, frames.clone()),
        files: Files::new(&frames, &injector),
        model: Mutex::new(Model::new()),
        clock: AtomicU64::new(1),
        pause: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        barrier: Barrier::new(threads + 1),
        accesses: Mutex::new(Vec::new()),
        ops: AtomicU64::new(0),
    });
    frames.set_failure_rate(opts.inject);
    injector.set(opts.inject);
    let handles: Vec<_> = (0..threads as u64)
        .map(|i| {
            let sh = sh.clone();
            let seed = opts.seed.wrapping_add(i);
            std::thread::spawn(move || worker(&sh, i, seed))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs_f64(opts.seconds.max(0.0));
    let mut violations = Vec::new();
    let mut violation_count = 0u64;
    let mut epochs = 0u64;
    let mut accesses_total = 0u64;
    let mut fault_causes = [0u64; 5];
    loop {
        std::thread::sleep(
            opts.epoch
                .min(deadline.saturating_duration_since(Instant::now())),
        );
        sh.pause.store(true, Ordering::Release);
        sh.barrier.wait();
        // Every worker waits at the second barrier: the space is quiet.
        let mut accesses = std::mem::take(&mut *sh.accesses.lock().unwrap());
        accesses_total += accesses.len() as u64;
        for a in &accesses {
            if let Err(cause) = a.result {
                fault_causes[cause_index(cause)] += 1;
            }
        }
        let mut model = sh.model.lock().unwrap();
        let found = judge(&mut model, &mut accesses, opts.inject > 0.0);
        violation_count += found.len() as u64;
        violations.extend(
            found
                .into_iter()
                .take(SHOWN.saturating_sub(violations.len())),
        );
        let now = sh.tick();
        model.carry_over(now);
        drop(model);
        epochs += 1;
        // A violation ends the run at once: the seed and the first report are
        // what the user needs, and a broken build should fail fast.
        let done = Instant::now() >= deadline || violation_count > 0;
        sh.pause.store(false, Ordering::Release);
        sh.stop.store(done, Ordering::Release);
        sh.barrier.wait();
        if done {
            break;
        }
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a torture thread panicked"))?;
    }
    frames.set_failure_rate(0.0);
    injector.set(0.0);
    let sh = Arc::into_inner(sh).expect("every thread joined");
    let stats = sh.space.fault_stats();
    let ops = sh.ops.load(Ordering::Relaxed);
    let mut model = sh.model.into_inner().unwrap();
    // No write lost: what the files hold after a sync is a legitimate final
    // content of each page.
    for (i, file) in sh.files.data.iter().enumerate() {
        if let Err(e) = file.sync() {
            violation_count += 1;
            violations.push(format!(
                "sync of data file {} failed with injection off: {e}",
                i + 1
            ));
        }
    }
    for (i, store) in sh.files.data_stores.iter().enumerate() {
        let words = store.words.lock().unwrap().clone();
        for (pgoff, &word) in words.iter().enumerate() {
            let key = (Arc::as_ptr(&sh.files.data[i]) as usize, pgoff as u64);
            let ok = match model.shared.get(&key) {
                Some(c) => model
                    .events
                    .get(c)
                    .is_some_and(|evs| evs.iter().any(|e| e.value == word)),
                None => word == file_word(i as u64 + 1, pgoff as u64),
            };
            if !ok {
                violation_count += 1;
                if violations.len() < SHOWN {
                    violations.push(format!(
                        "data file {} page {pgoff} holds {} in its store, not a final value",
                        i + 1,
                        value_name(word)
                    ));
                }
            }
        }
    }
    // No leak: with the space, the files and the model's objects gone, every
    // frame is back.
    let unknown_pages = model.unknown_pages;
    let mapping_ops = model.mapping_ops;
    model.objects.clear();
    drop(model);
    drop(sh.space);
    drop(sh.files);
    let leaked_frames = frames_after_grace_periods(&frames);
    Ok(Report {
        strategy,
        ops,
        accesses: accesses_total,
        mapping_ops,
        epochs,
        stats,
        violations,
        violation_count,
        leaked_frames,
        fault_causes,
        unknown_pages,
    })
}
