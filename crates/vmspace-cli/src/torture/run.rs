//! One run on one strategy: the threads, the checkpoints, and the final
//! checks (no write lost, no frame leaked).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use vmspace::{AddressSpace, Config, FrameAllocator, Strategy, PAGE_SIZE};

use super::files::{Files, DATA_IDS};
use super::judge::{cause_index, judge, value_name};
use super::model::Model;
use super::store::{file_word, Injector};
use super::worker::{worker, Shared};
use super::{Options, Report, ARENA_FRAMES, EPOCH_OPS, SHOWN};

/// Frames still in use once the epoch garbage (old tree nodes, and with them
/// the last references to unmapped VMAs and their objects) has been
/// collected. Reclamation is lazy: each pin-and-flush lets the global epoch
/// advance and frees what no reader can reach any more.
pub(super) fn frames_after_grace_periods(frames: &FrameAllocator) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames.in_use() != 0 && Instant::now() < deadline {
        vmspace_tree::pin().flush();
        std::thread::yield_now();
    }
    frames.in_use()
}

/// How often the checkpoint looks at the clock while it waits.
const POLL: Duration = Duration::from_millis(1);

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
        space: AddressSpace::new(config, frames.clone()).expect("a default configuration is valid"),
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
    let mut peak_records = 0;
    let mut records;
    loop {
        wait_for_checkpoint(&sh, opts.epoch, deadline);
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
        peak_records = peak_records.max(model.records() + accesses.len());
        let now = sh.tick();
        model.carry_over(now);
        records = model.records();
        drop(model);
        epochs += 1;
        // A violation ends the run at once: the seed and the first report are
        // what the user needs, and a broken build should fail fast.
        let done = Instant::now() >= deadline
            || violation_count > 0
            || opts
                .max_ops
                .is_some_and(|max| sh.ops.load(Ordering::Relaxed) >= max);
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
                DATA_IDS[i]
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
                None => word == file_word(DATA_IDS[i], pgoff as u64),
            };
            if !ok {
                violation_count += 1;
                if violations.len() < SHOWN {
                    violations.push(format!(
                        "data file {} page {pgoff} holds {} in its store, not a final value",
                        DATA_IDS[i],
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
        records,
        peak_records,
    })
}
