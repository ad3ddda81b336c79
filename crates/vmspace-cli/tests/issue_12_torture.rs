//! Issue 12, torture: the checker's memory stays bounded however long the
//! run and however long its epochs, and every kind of injected failure is
//! reached.

use std::time::Duration;

use vmspace::Strategy;
use vmspace_cli::torture::{run, Options, Report, EPOCH_OPS};

/// A clean run on per-vma that stops at the first checkpoint after `ops`
/// operations.
fn run_for(ops: u64, epoch: Duration, inject: f64) -> Report {
    let opts = Options {
        seconds: 600.0,
        threads: 4,
        seed: 12,
        inject,
        epoch,
        max_ops: Some(ops),
        swap_dir: Some(env!("CARGO_TARGET_TMPDIR").into()),
        mirrors: 1,
    };
    let report = run(Strategy::PerVma, &opts).expect("torture runs");
    eprintln!(
        "{}; records kept {}, peak {}",
        report.summary(),
        report.records,
        report.peak_records
    );
    assert!(report.clean(), "{:#?}", report.violations);
    report
}

/// What the checker keeps from one checkpoint to the next is what later
/// accesses can still be judged against: the cells the window and the live
/// objects show, and their legitimate values. That does not grow with the
/// length of the run.
#[test]
fn records_kept_across_checkpoints_do_not_grow_with_the_run() {
    let epoch = Duration::from_millis(50);
    // A run stops at the first checkpoint after its operations, so the
    // short one may overshoot by most of an epoch: six times as many
    // operations asked of the long one leave it at least three times longer.
    let short = run_for(40_000, epoch, 0.0);
    let long = run_for(240_000, epoch, 0.0);
    assert!(
        long.ops >= 3 * short.ops,
        "the long run is not longer: {} against {} ops",
        long.ops,
        short.ops
    );
    assert!(
        long.records < 2 * short.records,
        "records kept grew with the run: {} after {} ops, {} after {} ops",
        short.records,
        short.ops,
        long.records,
        long.ops
    );
}

/// An epoch ends early once it has done `EPOCH_OPS` operations, so a long
/// `--epoch-ms` does not let the checker's memory grow with the run either.
#[test]
fn a_long_epoch_holds_a_bounded_number_of_records() {
    let report = run_for(150_000, Duration::from_secs(60), 0.0);
    assert!(
        report.epochs >= 3,
        "{} checkpoints in {} ops",
        report.epochs,
        report.ops
    );
    // An operation adds about three records on average (a load one, a store
    // two with its value event, a mapping change a state and the cells and
    // events of its pages); what the model keeps across checkpoints comes on
    // top.
    let bound = 6 * EPOCH_OPS as usize + report.records;
    assert!(
        report.peak_records <= bound,
        "{} records held at once, more than {bound}",
        report.peak_records
    );
}

/// Each injected kind of failure happens in a short run, at a moderate rate
/// and at rate 1, and the run stays clean: nothing lost, nothing leaked.
#[test]
fn every_injected_kind_of_failure_happens() {
    for rate in [0.05, 1.0] {
        let report = run_for(60_000, Duration::from_millis(50), rate);
        let injected = report.injected;
        assert!(
            injected.alloc > 0 && injected.read > 0 && injected.write > 0,
            "at rate {rate} a kind never failed: {injected:?}"
        );
        // Every allocation failing: retries after reclaim fail too, and the
        // access faults out of memory (allowed in those epochs only).
        if rate == 1.0 {
            assert!(
                report.fault_causes[4] > 0,
                "no out-of-memory fault: {report:?}"
            );
        }
    }
}
