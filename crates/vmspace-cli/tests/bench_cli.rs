//! `vmspace bench` end to end: a tiny run of a few workloads on every strategy,
//! the host and the no-fault control, checking the JSON it writes.

use std::process::Command;

use serde_json::Value;

/// The tests of this file run one at a time: two benches at once on a 2-core
/// machine preempt each other's main thread between the reads of a run's
/// operation count and its fault counters, which the first test compares.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn tiny_bench_writes_sound_json() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("vmspace-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args([
            "bench",
            "page_fault1",
            "page_fault3",
            "mmap1",
            "mixed_churn",
            "lookup",
            "--quick",
        ])
        .args(["--seconds", "0.1", "--threads", "2", "--repeat", "1"])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("page_fault1"), "no table: {stdout}");
    assert!(dir.join("page_fault1-throughput.svg").exists());
    assert!(dir.join("mixed-kept.svg").exists());

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in ["commit", "kernel", "cpu", "cores", "date"] {
        assert!(!doc["meta"][key].is_null(), "meta.{key} missing");
    }
    // The trust verdict: `trustworthy` is false exactly when there are
    // warnings, and each warning is printed in the output's WARNING block.
    let warnings = doc["warnings"].as_array().expect("warnings");
    assert_eq!(doc["trustworthy"].as_bool(), Some(warnings.is_empty()));
    assert_eq!(stdout.contains("NOT TRUSTWORTHY"), !warnings.is_empty());
    for w in warnings {
        for key in [
            "workload", "strategy", "threads", "check", "value", "message",
        ] {
            assert!(!w[key].is_null(), "warning without {key}: {w}");
        }
        assert!(stdout.contains(w["message"].as_str().unwrap()), "{w}");
    }
    let results = doc["results"].as_array().unwrap();
    let find = |w: &str, s: &str| {
        results
            .iter()
            .filter(|r| r["workload"] == w && r["strategy"] == s)
            .collect::<Vec<_>>()
    };
    for strategy in ["mmap-lock", "per-vma", "speculative", "host"] {
        for w in ["page_fault1", "mmap1", "mixed_churn"] {
            let rows = find(w, strategy);
            assert_eq!(rows.len(), 1, "{w} {strategy}: {rows:?}");
            let r = rows[0];
            assert_eq!(r["threads"], 2);
            assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
            for k in ["p50_ns", "p99_ns", "p999_ns", "max_ns"] {
                assert!(r[k].as_u64().is_some(), "{w} {strategy}: no {k}");
            }
            assert!(r["p50_ns"].as_u64() <= r["p99_ns"].as_u64());
            assert!(r["p99_ns"].as_u64() <= r["max_ns"].as_u64());
        }
        // Faults counted by vmspace match the faults the workload made.
        let r = find("page_fault1", strategy)[0];
        let ops = r["measured_ops"].as_u64().unwrap();
        if strategy == "host" {
            assert!(r["lockless"].is_null());
            let minflt = r["host_minflt"].as_u64().unwrap();
            assert!(
                minflt >= ops * 9 / 10,
                "host: {minflt} minor faults for {ops} ops"
            );
        } else {
            let done = r["lockless"].as_u64().unwrap() + r["locked"].as_u64().unwrap();
            let slack = ops / 50 + 64;
            assert!(
                done.abs_diff(ops) <= slack,
                "{strategy}: {done} faults counted for {ops} ops"
            );
            // A fallback is counted when the lockless attempt gives up, its
            // completion under the lock a moment later: at the edges of the
            // measured window one thread's pair may be split.
            let threads = r["threads"].as_u64().unwrap();
            assert!(r["fallback"].as_u64().unwrap() <= r["locked"].as_u64().unwrap() + threads);
            if strategy == "mmap-lock" {
                assert_eq!(r["lockless"], 0);
            } else {
                assert!(r["lockless"].as_u64().unwrap() * 10 >= ops * 9, "{r}");
            }
        }
        let m = find("mixed_churn", strategy)[0];
        for k in [
            "baseline_ops_per_sec",
            "kept",
            "spin_kept",
            "churn_ops_per_sec",
        ] {
            assert!(
                m[k].as_f64().unwrap() > 0.0,
                "mixed_churn {strategy}: {k} in {m}"
            );
        }
        let kept = m["ops_per_sec"].as_f64().unwrap() / m["baseline_ops_per_sec"].as_f64().unwrap();
        assert!((kept - m["kept"].as_f64().unwrap()).abs() < 1e-6);
    }
    // The no-fault control has a row for page_fault1 (no address space, no
    // counters) and page_fault3 (an address space that took no fault in the
    // measured window), and none for the other workloads.
    let m = find("page_fault1", "no-fault");
    assert_eq!(m.len(), 1, "no-fault: {m:?}");
    assert!(m[0]["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert!(m[0]["lockless"].is_null());
    let m = find("page_fault3", "no-fault");
    assert_eq!(m.len(), 1, "no-fault: {m:?}");
    assert!(m[0]["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(m[0]["lockless"].as_u64(), Some(0), "{}", m[0]);
    assert_eq!(m[0]["locked"].as_u64(), Some(0), "{}", m[0]);
    for w in ["mmap1", "mixed_churn"] {
        assert!(find(w, "no-fault").is_empty(), "no-fault row for {w}");
    }
    // Paired ratios: with one repeat, each is the quotient of the two rows'
    // rates; none for mixed workloads (they report `kept`).
    let ratios = doc["ratios"].as_array().expect("ratios");
    let ratio_of = |w: &str, s: &str| {
        ratios
            .iter()
            .find(|r| r["workload"] == w && r["strategy"] == s)
            .unwrap_or_else(|| panic!("no ratio row for {w} {s}"))
    };
    for w in ["page_fault1", "page_fault3"] {
        let lock = find(w, "mmap-lock")[0]["ops_per_sec"].as_f64().unwrap();
        for s in ["per-vma", "speculative"] {
            let vs = &ratio_of(w, s)["vs_mmap_lock"][0];
            assert_eq!(vs["threads"], 2);
            assert_eq!(vs["ratio"]["repeats"], 1);
            let mine = find(w, s)[0]["ops_per_sec"].as_f64().unwrap();
            let got = vs["ratio"]["median"].as_f64().unwrap();
            assert!(
                (got - mine / lock).abs() < 1e-9 * got.max(1.0),
                "{w} {s}: {got} vs {mine}/{lock}"
            );
        }
        // One thread count: no scaling entries; no-fault has no mmap-lock ratio.
        assert_eq!(
            ratio_of(w, "per-vma")["scaling"].as_array().unwrap().len(),
            0
        );
        assert_eq!(
            ratio_of(w, "no-fault")["vs_mmap_lock"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
    }
    assert!(ratios.iter().all(|r| r["workload"] != "mixed_churn"));
    for s in ["vmspace", "btreemap", "rwlock-btreemap", "skiplist"] {
        let rows = find("lookup", s);
        assert_eq!(rows.len(), 3, "lookup {s}: one row per map size");
        for r in rows {
            assert!(r["vmas"].as_u64().unwrap() >= 1000);
            assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0);
            assert!(r["ns_per_op"].as_f64().unwrap() > 0.0);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Two thread counts: the scaling ratio is the quotient of the rows' rates
/// (one repeat); page_fault2 has its no-fault control.
#[test]
fn scaling_follows_from_the_rows_and_page_fault2_has_a_control() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let json =
        std::env::temp_dir().join(format!("vmspace-bench-scaling-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args([
            "bench",
            "page_fault2",
            "--quick",
            "--strategy",
            "per-vma,no-fault",
        ])
        .args(["--seconds", "0.05", "--threads", "1,2", "--repeat", "1"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).ok();
    let rate = |s: &str, t: u64| {
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["workload"] == "page_fault2" && r["strategy"] == s && r["threads"] == t)
            .unwrap_or_else(|| panic!("no row {s} {t}"))["ops_per_sec"]
            .as_f64()
            .unwrap()
    };
    for s in ["per-vma", "no-fault"] {
        let (r1, r2) = (rate(s, 1), rate(s, 2));
        assert!(r1 > 0.0 && r2 > 0.0);
        let row = doc["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["strategy"] == s)
            .unwrap_or_else(|| panic!("{s}: no ratios"));
        let sc = &row["scaling"][0];
        assert_eq!(
            (sc["threads"].as_u64(), sc["base_threads"].as_u64()),
            (Some(2), Some(1))
        );
        let got = sc["ratio"]["median"].as_f64().unwrap();
        assert!(
            (got - r2 / r1).abs() < 1e-9,
            "{s}: scaling {got} vs {}",
            r2 / r1
        );
    }
}
