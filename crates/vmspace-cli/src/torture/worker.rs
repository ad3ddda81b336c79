//! The worker threads: what they share, and how each does the steps it
//! draws, every one stamped by the global clock at its start and its end.
//!
//! Loads and stores take no lock of the checker, so they race every mapping
//! change; they are logged per thread and handed in at the next checkpoint.
//! A mapping change holds the model's lock around its call (the address
//! space's write lock serializes the calls anyway), so the model records the
//! changes in the order they happened.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use vmspace::{AddressSpace, Cpu, Device, Fault};

use crate::backend::{self, Placement};
use crate::script::Op;

use super::draw::{self, Step};
use super::files::Files;
use super::fork;
use super::model::{Access, Model};
use super::{PAGES, STORE_TAG};

/// What the threads share.
pub(super) struct Shared {
    pub(super) space: Arc<AddressSpace>,
    pub(super) files: Files,
    /// The model; held around each mapping change and by the checkpoint.
    pub(super) model: Mutex<Model>,
    /// The global clock: one tick at the start and one at the end of every
    /// operation.
    pub(super) clock: AtomicU64,
    /// Set by the checkpoint: hand in the log and wait at the barrier.
    pub(super) pause: AtomicBool,
    /// Set by the checkpoint before the second barrier: the run is over.
    pub(super) stop: AtomicBool,
    /// The workers and the checkpoint meet here twice per checkpoint.
    pub(super) barrier: Barrier,
    /// Accesses handed in at a checkpoint.
    pub(super) accesses: Mutex<Vec<Access>>,
    /// Operations done, handed in at each checkpoint.
    pub(super) ops: AtomicU64,
}

impl Shared {
    /// The next tick of the global clock.
    pub(super) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// A thread's side of a checkpoint, if one is asked for: hands in `log`
    /// and `ops`, waits at both barriers. Returns whether the run is over.
    pub(super) fn at_checkpoint(&self, log: &mut Vec<Access>, ops: &mut u64) -> bool {
        if !self.pause.load(Ordering::Acquire) {
            return false;
        }
        self.accesses.lock().unwrap().append(log);
        self.ops.fetch_add(*ops, Ordering::Relaxed);
        *ops = 0;
        self.barrier.wait();
        self.barrier.wait();
        self.stop.load(Ordering::Acquire)
    }
}

/// What touches memory for a thread: a `Cpu`, or a device of a mirror.
pub(super) trait Accessor {
    fn load(&mut self, addr: u64) -> Result<u64, Fault>;
    fn store(&mut self, addr: u64, value: u64) -> Result<(), Fault>;
}

impl Accessor for Cpu {
    fn load(&mut self, addr: u64) -> Result<u64, Fault> {
        self.read_u64(addr)
    }
    fn store(&mut self, addr: u64, value: u64) -> Result<(), Fault> {
        self.write_u64(addr, value)
    }
}

impl Accessor for Device {
    fn load(&mut self, addr: u64) -> Result<u64, Fault> {
        self.read_u64(addr)
    }
    fn store(&mut self, addr: u64, value: u64) -> Result<(), Fault> {
        self.write_u64(addr, value)
    }
}

/// Worker `index`: draws and does steps until a checkpoint says stop.
pub(super) fn worker(sh: &Shared, index: u64, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cpu = sh.space.cpu();
    let mut log = Vec::new();
    let mut seq = 0u64;
    let mut ops = 0u64;
    loop {
        if sh.at_checkpoint(&mut log, &mut ops) {
            return;
        }
        ops += 1;
        match draw::step(&mut rng) {
            Step::Store { page } => {
                seq += 1;
                let value = STORE_TAG | (index << 40) | seq;
                log.push(access(sh, &mut cpu, page, Some(value)));
            }
            Step::Load { page } => log.push(access(sh, &mut cpu, page, None)),
            Step::Msync => {
                let _ = backend::msync(&sh.space, 0, PAGES);
            }
            Step::Change(op, placement) => change(sh, &op, placement),
            Step::Fork => fork::fork(sh, &mut cpu, &mut rng, index, &mut seq, &mut log),
        }
    }
}

/// Device thread `index` (numbered after the workers): loads and stores
/// through its mirror (`vmspace::Device`), drawn like the workers' and
/// judged like them, until a checkpoint says stop. A device access through a
/// translation that an invalidation should have removed shows as a value
/// the page could not hold, or as an access that should have faulted.
pub(super) fn device_worker(sh: &Shared, mut dev: Device, index: u64, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut log = Vec::new();
    let (mut seq, mut ops) = (0u64, 0u64);
    loop {
        if sh.at_checkpoint(&mut log, &mut ops) {
            return;
        }
        ops += 1;
        let page = rng.gen_range(0..PAGES);
        let store = rng.gen_bool(0.5).then(|| {
            seq += 1;
            STORE_TAG | (index << 40) | seq
        });
        log.push(access(sh, &mut dev, page, store));
    }
}

/// A load (`store` is `None`) or a store of the first word of window page
/// `page`.
pub(super) fn access(
    sh: &Shared,
    cpu: &mut impl Accessor,
    page: u64,
    store: Option<u64>,
) -> Access {
    let addr = backend::addr(page);
    let start = sh.tick();
    let (value, result) = match store {
        Some(v) => (v, cpu.store(addr, v).map_err(|f| f.cause)),
        None => match cpu.load(addr) {
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

/// A mapping change, recorded in the model with the state it left.
fn change(sh: &Shared, op: &Op, placement: Placement) {
    let mut model = sh.model.lock().unwrap();
    let start = sh.tick();
    let result = backend::apply(&sh.space, &sh.files, op, placement);
    let end = sh.tick();
    if let Some(result) = result {
        let maps = sh.space.maps();
        model.apply(op, result, &maps, &sh.files, start, end);
    }
}
