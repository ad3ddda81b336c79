//! The worker threads: what they share, how they draw operations, and how
//! they do them (timestamped by the global clock).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vmspace::{AddressSpace, Cpu, Errno, MapFlags, MapSource, Prot, RemapFlags, PAGE_SIZE};

use super::files::Files;
use super::model::{Access, Change, Model, Source};
use super::{BASE, DATA_PAGES, PAGES, RO_PAGES, STORE_TAG};

/// What the threads share.
pub(super) struct Shared {
    pub(super) space: Arc<AddressSpace>,
    pub(super) files: Files,
    pub(super) model: Mutex<Model>,
    pub(super) clock: AtomicU64,
    pub(super) pause: AtomicBool,
    pub(super) stop: AtomicBool,
    pub(super) barrier: Barrier,
    /// Accesses handed in at a checkpoint.
    pub(super) accesses: Mutex<Vec<Access>>,
    pub(super) ops: AtomicU64,
}

impl Shared {
    pub(super) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

pub(super) fn worker(sh: &Shared, index: u64, seed: u64) {
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

pub(super) fn access(sh: &Shared, cpu: &mut Cpu, rng: &mut SmallRng, store: Option<u64>) -> Access {
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

pub(super) fn prot(rng: &mut SmallRng) -> Prot {
    match rng.gen_range(0..10) {
        0..=5 => Prot::READ_WRITE,
        6..=8 => Prot::READ,
        _ => Prot::NONE,
    }
}

pub(super) fn draw_change(rng: &mut SmallRng) -> Change {
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

pub(super) fn change(sh: &Shared, rng: &mut SmallRng) {
    let change = draw_change(rng);
    let mut model = sh.model.lock().unwrap();
    let start = sh.tick();
    let result = call(sh, change);
    let end = sh.tick();
    let maps = sh.space.maps();
    model.apply(change, result, &maps, &sh.files, start, end);
}

pub(super) fn call(sh: &Shared, change: Change) -> Result<u64, Errno> {
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
