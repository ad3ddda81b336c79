//! One run on one strategy: the threads, the checkpoints, and the final
//! checks (no write lost, no frame leaked).
//!
//! A checkpoint stops every worker at a barrier, judges the epoch's accesses
//! against the model, prunes the model to what later accesses can be judged
//! against, arms the next phase of injection, and lets the workers go on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use vmspace::{
    AddressSpace, ArenaConfig, Config, FrameAllocator, Mirror, MirrorConfig, RmapLockKind,
    Strategy, SwapConfig, PAGE_SIZE,
};

use super::files::{Files, DATA_IDS};
use super::inject::{Armed, Injector};
use super::judge::{cause_index, judge, value_name};
use super::model::Model;
use super::store::file_word;
use super::worker::{device_worker, worker, Shared};
use super::{Injected, MirrorTotals, Options, Report, ARENA_FRAMES, EPOCH_OPS, SHOWN};

/// How often the checkpoint looks at the clock while it waits.
const POLL: Duration = Duration::from_millis(1);
/// Slots of the swap file: more than the window and its forks can hold.
const SWAP_SLOTS: u64 = 8192;
/// Frames the reclaimer asks for at a time.
const RECLAIM_RUN: usize = 16;
/// A mirror's invalidation that removes entries sleeps this long, one in
/// [`MIRROR_SLEEP_ONE_IN`] times (a device TLB flush).
const MIRROR_SLEEP: Duration = Duration::from_micros(20);
const MIRROR_SLEEP_ONE_IN: u32 = 3;

/// The reclaimer thread: memory pressure without a tight arena (which would
/// make out-of-memory faults the checker cannot tell from lost pages). It
/// reclaims a few frames at a time, all the time, until the run stops, so
/// that pages go to swap and come back under every operation.
fn reclaimer(sh: &Shared, frames: &FrameAllocator) {
    while !sh.stop.load(Ordering::Acquire) {
        frames.reclaim(RECLAIM_RUN);
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// What the checkpoints found so far.
#[derive(Default)]
struct Tally {
    /// The first [`SHOWN`] violations.
    violations: Vec<String>,
    violation_count: u64,
    epochs: u64,
    accesses: u64,
    fault_causes: [u64; 5],
    /// Records of the model after the last checkpoint.
    records: usize,
    /// The most records held at a checkpoint.
    peak_records: usize,
    /// The first failure of the swap references check.
    swap_check: Option<String>,
}

impl Tally {
    fn violation(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < SHOWN {
            self.violations.push(what);
        }
    }
}

/// The frame allocator and the stores' switch, and the rate of the kinds of
/// failure armed.
struct Injection<'a> {
    frames: &'a FrameAllocator,
    stores: &'a Injector,
    rate: f64,
}

impl Injection<'_> {
    /// Arms the kinds of the `epoch`th epoch (none when the rate is 0).
    fn arm(&self, epoch: u64) -> Armed {
        let armed = if self.rate > 0.0 {
            Armed::phase(epoch)
        } else {
            Armed::NONE
        };
        armed.apply(self.rate, self.frames, self.stores);
        armed
    }
}

/// Runs the torture on one strategy, with the default rmap lock.
pub fn run(strategy: Strategy, opts: &Options) -> anyhow::Result<Report> {
    run_with(strategy, RmapLockKind::default(), opts)
}

/// Runs the torture on one strategy over an arena whose rmap lock is `kind`.
pub fn run_with(strategy: Strategy, kind: RmapLockKind, opts: &Options) -> anyhow::Result<Report> {
    let swap = opts.swap_dir.as_ref().map(|dir| SwapConfig {
        path: dir.join(format!(
            "vmspace-torture-{}-{}-{}.swap",
            std::process::id(),
            strategy.name(),
            kind.name()
        )),
        slots: SWAP_SLOTS,
        direct: false,
    });
    let arena = ArenaConfig {
        bytes: ARENA_FRAMES * PAGE_SIZE,
        rmap_lock: kind,
        swap,
        ..ArenaConfig::default()
    };
    let mut frames =
        FrameAllocator::with_config(&arena).map_err(|e| anyhow::anyhow!("frame arena: {}", e.0))?;
    frames.set_poison(true);
    let frames = Arc::new(frames);
    let stores = Arc::new(Injector::new(opts.seed));
    let threads = opts.threads.max(1);
    let config = Config {
        strategy,
        ..Config::default()
    };
    let sh = Arc::new(Shared {
        space: AddressSpace::new(config, frames.clone()).expect("a default configuration is valid"),
        files: Files::new(&frames, &stores),
        model: Mutex::new(Model::new()),
        clock: AtomicU64::new(1),
        pause: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        barrier: Barrier::new(threads + opts.mirrors + 1),
        accesses: Mutex::new(Vec::new()),
        ops: AtomicU64::new(0),
    });
    let injection = Injection {
        frames: &frames,
        stores: &stores,
        rate: opts.inject,
    };
    let handles: Vec<_> = (0..threads as u64)
        .map(|i| {
            let sh = sh.clone();
            let seed = opts.seed.wrapping_add(i);
            std::thread::spawn(move || worker(&sh, i, seed))
        })
        .collect();
    let mirror_config = MirrorConfig {
        invalidate_sleep: MIRROR_SLEEP,
        sleep_one_in: MIRROR_SLEEP_ONE_IN,
    };
    let mirrors: Vec<Mirror> = (0..opts.mirrors)
        .map(|_| Mirror::new(&sh.space, mirror_config))
        .collect();
    let devices: Vec<_> = mirrors
        .iter()
        .enumerate()
        .map(|(m, mirror)| {
            let (sh, dev) = (sh.clone(), mirror.device());
            let index = (threads + m) as u64;
            let seed = opts.seed.wrapping_add(index);
            std::thread::spawn(move || device_worker(&sh, dev, index, seed))
        })
        .collect();
    let reclaimer = frames.swap_device().is_some().then(|| {
        let sh = sh.clone();
        let frames = frames.clone();
        std::thread::spawn(move || reclaimer(&sh, &frames))
    });
    let mut tally = checkpoints(&sh, opts, &injection);
    for h in handles.into_iter().chain(devices).chain(reclaimer) {
        h.join()
            .map_err(|_| anyhow::anyhow!("a torture thread panicked"))?;
    }
    Armed::NONE.apply(0.0, &frames, &stores);
    let sh = Arc::into_inner(sh).expect("every thread joined");
    let stats = sh.space.fault_stats();
    let ops = sh.ops.load(Ordering::Relaxed);
    let mut model = sh.model.into_inner().unwrap();
    no_write_lost(&sh.files, &model, &mut tally);
    let (read, write) = stores.failed();
    let injected = Injected {
        alloc: frames.injected_failures(),
        read,
        write,
    };
    // No leak: with the space, the files and the model's objects gone, every
    // frame is back.
    let unknown_pages = model.unknown_pages;
    let mapping_ops = model.mapping_ops;
    let forks = model.forks_done;
    model.objects.clear();
    drop(model);
    // The space goes with its mirrors still subscribed: each must hear
    // `release` (and drop its entries) before the frames go.
    drop(sh.space);
    let mirrors = mirror_totals(&mirrors, &mut tally);
    drop(sh.files);
    // Swap-cache pages whose slot only the cache still holds are garbage
    // that reclaim would drop when it met them (or at once, if nobody held
    // the page when its last entry went): drop them now.
    frames.drop_swap_cache();
    let leaked_frames = frames_after_grace_periods(&frames);
    let rs = frames.reclaim_stats();
    let leaked_slots = frames.swap_device().map_or(0, |d| d.used());
    Ok(Report {
        strategy,
        rmap_lock: kind,
        ops,
        accesses: tally.accesses,
        mapping_ops,
        forks,
        epochs: tally.epochs,
        stats,
        violations: tally.violations,
        violation_count: tally.violation_count,
        leaked_frames,
        swap: opts.swap_dir.is_some(),
        swap_outs: rs.swap_outs,
        swap_ins: rs.swap_ins,
        reclaimed: rs.reclaimed_direct + rs.reclaimed_background,
        leaked_slots,
        swap_check: tally.swap_check,
        fault_causes: tally.fault_causes,
        injected,
        unknown_pages,
        records: tally.records,
        peak_records: tally.peak_records,
        mirrors,
    })
}

/// The mirrors' counters, summed; a mirror that was not released at the
/// teardown, a run whose devices did nothing, or one in which no
/// invalidation slept is a violation (it would prove nothing).
fn mirror_totals(mirrors: &[Mirror], tally: &mut Tally) -> MirrorTotals {
    let mut t = MirrorTotals {
        mirrors: mirrors.len(),
        ..MirrorTotals::default()
    };
    for (i, m) in mirrors.iter().enumerate() {
        let s = m.stats();
        t.device_accesses += s.device_accesses;
        t.device_faults += s.device_faults;
        t.retries += s.fault_retries;
        t.invalidations_slept += s.invalidations_slept;
        t.busy += s.busy;
        if !m.is_released() || m.entries() != 0 {
            tally.violation(format!("mirror {i} kept entries after the teardown"));
        }
    }
    if !mirrors.is_empty() && t.device_accesses == 0 {
        tally.violation("the devices made no access".into());
    }
    if !mirrors.is_empty() && t.invalidations_slept == 0 && tally.violation_count == 0 {
        tally.violation("no mirror invalidation slept".into());
    }
    t
}

/// The checkpoints, until the run's time or operations are spent or a
/// violation is found.
fn checkpoints(sh: &Shared, opts: &Options, injection: &Injection) -> Tally {
    let deadline = Instant::now() + Duration::from_secs_f64(opts.seconds.max(0.0));
    let mut tally = Tally::default();
    let mut armed = injection.arm(0);
    loop {
        wait_for_checkpoint(sh, opts.epoch, deadline);
        sh.pause.store(true, Ordering::Release);
        sh.barrier.wait();
        // Every worker waits at the second barrier: the space is quiet.
        checkpoint(sh, armed, &mut tally);
        // A violation ends the run at once: the seed and the first report are
        // what the user needs, and a broken build should fail fast.
        let done = Instant::now() >= deadline
            || tally.violation_count > 0
            || opts
                .max_ops
                .is_some_and(|max| sh.ops.load(Ordering::Relaxed) >= max);
        armed = injection.arm(tally.epochs);
        sh.pause.store(false, Ordering::Release);
        sh.stop.store(done, Ordering::Release);
        sh.barrier.wait();
        if done {
            return tally;
        }
    }
}

/// Waits until the epoch that began now is over: `epoch` has passed, the
/// run's `deadline` has come, or the epoch has done [`EPOCH_OPS`] operations
/// (each access and each mapping change ticks the clock twice).
fn wait_for_checkpoint(sh: &Shared, epoch: Duration, deadline: Instant) {
    let until = deadline.min(Instant::now() + epoch);
    let first_tick = sh.clock.load(Ordering::Relaxed);
    loop {
        let now = Instant::now();
        let ticks = sh.clock.load(Ordering::Relaxed) - first_tick;
        if now >= until || ticks >= 2 * EPOCH_OPS {
            return;
        }
        std::thread::sleep(POLL.min(until - now));
    }
}

/// Judges the epoch that ran with `armed`, then starts the next one.
///
/// # Preconditions
///
/// Every worker waits at the barrier.
fn checkpoint(sh: &Shared, armed: Armed, tally: &mut Tally) {
    let mut accesses = std::mem::take(&mut *sh.accesses.lock().unwrap());
    tally.accesses += accesses.len() as u64;
    for a in &accesses {
        if let Err(cause) = a.result {
            tally.fault_causes[cause_index(cause)] += 1;
        }
    }
    let mut model = sh.model.lock().unwrap();
    for violation in judge(&mut model, &mut accesses, armed) {
        tally.violation(violation);
    }
    // The workers wait at the barrier (no forked child is alive): the
    // space's own invariants (VMAs, entries, counts, the reverse map), then
    // the swap slots, which the window's space alone holds now.
    if let Err(e) = sh.space.check_invariants() {
        tally.violation(format!("the space breaks an invariant: {e}"));
    }
    if let Err(e) = sh.space.frames().check_swap(&[&sh.space]) {
        tally.violation(format!("swap references: {e}"));
        tally.swap_check.get_or_insert(e);
    }
    tally.peak_records = tally.peak_records.max(model.records() + accesses.len());
    model.carry_over(sh.tick());
    tally.records = model.records();
    tally.epochs += 1;
}

/// No write lost: once synced with injection off, what the data files'
/// stores hold is a legitimate final content of each page.
fn no_write_lost(files: &Files, model: &Model, tally: &mut Tally) {
    for (i, file) in files.data.iter().enumerate() {
        // A write-back that failed while injection was on is reported by the
        // next sync, which writes the page again (`File::sync`): that report
        // is expected; the sync after it must succeed.
        let _earlier = file.sync();
        if let Err(e) = file.sync() {
            tally.violation(format!(
                "sync of data file {} failed with injection off: {e}",
                DATA_IDS[i]
            ));
        }
    }
    for (i, store) in files.data_stores.iter().enumerate() {
        let words = store.words.lock().unwrap().clone();
        for (pgoff, &word) in words.iter().enumerate() {
            let key = (Arc::as_ptr(&files.data[i]) as usize, pgoff as u64);
            let ok = match model.shared.get(&key) {
                Some(c) => model
                    .events
                    .get(c)
                    .is_some_and(|evs| evs.iter().any(|e| e.value == word)),
                None => word == file_word(DATA_IDS[i], pgoff as u64),
            };
            if !ok {
                tally.violation(format!(
                    "data file {} page {pgoff} holds {} in its store, not a final value",
                    DATA_IDS[i],
                    value_name(word)
                ));
            }
        }
    }
}

/// Frames still in use once the epoch garbage (old tree nodes, and with them
/// the last references to unmapped VMAs and their objects) has been
/// collected. Reclamation is lazy: each pin-and-flush lets the global epoch
/// advance and frees what no reader can reach any more.
fn frames_after_grace_periods(frames: &FrameAllocator) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames.in_use() != 0 && Instant::now() < deadline {
        frames.drop_swap_cache();
        vmspace_tree::pin().flush();
        std::thread::yield_now();
    }
    frames.in_use()
}
