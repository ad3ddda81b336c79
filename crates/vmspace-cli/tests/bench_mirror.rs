//! `vmspace bench mirror reclaim_mirror`: the cost of munmap and mprotect
//! with 0, 1 and 4 mirrors, device faults beside CPU faults, device-fault
//! retries under a churning writer, and reclaim with a sleeping mirror per
//! rmap lock kind. Only structure and what must hold are checked, never one
//! timing against another.

use std::process::Command;

use serde_json::Value;

/// Pages of each mapping the cost rows unmap or protect (`mirror.rs`).
const COST_PAGES: u64 = 64;

#[test]
fn mirror_and_reclaim_mirror_rows() {
    let dir = std::env::temp_dir().join(format!("vmspace-bench-mirror-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(["bench", "mirror", "reclaim_mirror", "--quick"])
        .args(["--seconds", "0.2", "--threads", "1", "--repeat", "1"])
        .args(["--rmap-lock", "rwsem,rwlock", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for header in ["ns/call", "retry/flt", "reclaimed/s", "mirror busy"] {
        assert!(stdout.contains(header), "no {header:?} column:\n{stdout}");
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = doc["results"].as_array().expect("results");
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap_or_else(|| panic!("no {k}: {r}"));
    let x = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("no {k}: {r}"));

    let mirror: Vec<_> = results
        .iter()
        .filter(|r| r["workload"] == "mirror")
        .collect();
    let op = |r: &Value| r["op"].as_str().unwrap().to_string();

    // Cost rows: munmap, then mprotect, each with 0, 1 and 4 mirrors.
    let cost: Vec<_> = mirror
        .iter()
        .filter(|r| r["op"] == "munmap" || r["op"] == "mprotect")
        .collect();
    let keys: Vec<_> = cost.iter().map(|r| (op(r), n(r, "mirrors"))).collect();
    let want: Vec<_> = ["munmap", "mprotect"]
        .iter()
        .flat_map(|o| [0, 1, 4].map(|m| (o.to_string(), m)))
        .collect();
    assert_eq!(keys, want);
    for r in &cost {
        let (calls, mirrors) = (n(r, "measured_ops"), n(r, "mirrors"));
        assert_eq!(n(r, "threads"), 1, "{r}");
        assert!(calls > 0 && x(r, "ns_per_op") > 0.0, "{r}");
        assert!(n(r, "p99_ns") >= n(r, "p50_ns"), "{r}");
        assert_eq!(n(r, "device_threads"), u64::from(mirrors > 0), "{r}");
        // Every mirror held a writable entry of every page before each call.
        if r["op"] == "munmap" {
            assert_eq!(n(r, "zapped"), calls * COST_PAGES * mirrors, "{r}");
            assert_eq!(n(r, "write_protected"), 0, "{r}");
        } else {
            // Each round is a downgrade (write-protects) and an upgrade.
            assert_eq!(calls % 2, 0, "{r}");
            assert_eq!(
                n(r, "write_protected"),
                calls / 2 * COST_PAGES * mirrors,
                "{r}"
            );
            assert_eq!(n(r, "zapped"), 0, "{r}");
            assert!(x(r, "downgrade_ns_per_op") > 0.0, "{r}");
            assert!(x(r, "upgrade_ns_per_op") > 0.0, "{r}");
        }
        assert_eq!(n(r, "invalidations_slept"), 0, "{r}");
    }

    // Fault rows: a CPU and a device target at one thread.
    let faults: Vec<_> = mirror.iter().filter(|r| r["op"] == "fault").collect();
    let targets: Vec<_> = faults
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["cpu", "device"]);
    for r in &faults {
        assert_eq!(n(r, "threads"), 1, "{r}");
        assert!(x(r, "ops_per_sec") > 0.0 && n(r, "measured_ops") > 0, "{r}");
        if r["target"] == "device" {
            // The space's fault counters are its Cpus': none here.
            assert!(r["lockless"].is_null(), "{r}");
            assert_eq!(n(r, "mirrors"), 1, "{r}");
            assert!(
                n(r, "device_faults") > 0 && n(r, "device_accesses") > 0,
                "{r}"
            );
            assert!(x(r, "device_faults_per_sec") > 0.0, "{r}");
        } else {
            assert!(n(r, "lockless") + n(r, "locked") > 0, "no fault: {r}");
            assert_eq!(n(r, "mirrors"), 0, "{r}");
            assert_eq!(n(r, "device_faults"), 0, "{r}");
        }
    }

    // The churn row: device reads beside a churning writer.
    let churn: Vec<_> = mirror.iter().filter(|r| r["op"] == "churn").collect();
    assert_eq!(churn.len(), 1, "{churn:?}");
    let r = churn[0];
    assert_eq!((n(r, "threads"), n(r, "extra_threads")), (1, 1), "{r}");
    assert!(
        n(r, "device_faults") > 0 && n(r, "device_accesses") > 0,
        "{r}"
    );
    assert!(
        x(r, "ops_per_sec") > 0.0 && x(r, "churn_ops_per_sec") > 0.0,
        "{r}"
    );
    assert!(n(r, "zapped") > 0, "DONTNEED dropped no entry: {r}");
    let retries = n(r, "fault_retries") as f64;
    let per = x(r, "retries_per_fault");
    assert!(
        (per - retries / n(r, "device_faults") as f64).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(mirror.len(), cost.len() + faults.len() + churn.len());

    // reclaim_mirror: one row per backing and rmap lock kind.
    let rm: Vec<_> = results
        .iter()
        .filter(|r| r["workload"] == "reclaim_mirror")
        .collect();
    let keys: Vec<_> = rm
        .iter()
        .map(|r| {
            (
                r["backing"].as_str().unwrap(),
                r["rmap_lock"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("anon", "rwsem"),
            ("anon", "rwlock"),
            ("file", "rwsem"),
            ("file", "rwlock")
        ]
    );
    for r in &rm {
        assert_eq!(n(r, "threads"), 1, "{r}");
        assert_eq!(n(r, "device_threads"), 1, "{r}");
        assert_eq!(n(r, "invalidate_sleep_us"), 20, "{r}");
        assert_eq!(n(r, "working_set_pages"), 2 * n(r, "limit_pages"), "{r}");
        assert!(x(r, "reclaimed_per_sec") > 0.0, "{r}");
        assert!(x(r, "device_accesses_per_sec") > 0.0, "{r}");
        assert!(n(r, "p99_ns") >= n(r, "p50_ns"), "{r}");
        assert_eq!(n(r, "oom"), 0, "{r}");
        if r["rmap_lock"] == "rwlock" {
            // Reverse-map walks may not sleep: the mirror answers busy and
            // reclaim passes the page by.
            assert!(n(r, "notifier_busy") > 0 && n(r, "mirror_busy") > 0, "{r}");
        } else {
            // They may: the mirror sleeps in them and is never busy.
            assert!(n(r, "invalidations_slept") > 0, "{r}");
            assert_eq!(n(r, "notifier_busy") + n(r, "mirror_busy"), 0, "{r}");
        }
    }

    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "results.json")
        .collect();
    assert!(left.is_empty(), "scratch files left behind: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
