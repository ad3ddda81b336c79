//! `vmspace bench fork_storm fork_vmas`: rows per rmap lock kind with
//! `rmap_lock` and `rmap_lock_waits`, the fork_vmas pair with its overhead,
//! and `--rmap-lock` usage errors.

use std::process::Command;

use serde_json::Value;

#[test]
fn fork_workloads_write_rows_per_rmap_lock() {
    let dir = std::env::temp_dir().join(format!("vmspace-bench-fork-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(["bench", "fork_storm", "fork_vmas", "--quick"])
        .args(["--seconds", "0.2", "--threads", "2", "--repeat", "1"])
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
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = doc["results"].as_array().expect("results");
    let storm: Vec<_> = rows
        .iter()
        .filter(|r| r["workload"] == "fork_storm" && r["strategy"] != "host")
        .collect();
    // The host row: real fork + _exit of the same shape in a fresh process.
    let host: Vec<_> = rows
        .iter()
        .filter(|r| r["workload"] == "fork_storm" && r["strategy"] == "host")
        .collect();
    assert_eq!(host.len(), 1, "one host row: {host:?}");
    assert!(
        host[0]["ops_per_sec"].as_f64().unwrap() > 0.0,
        "{}",
        host[0]
    );
    assert!(host[0]["rmap_lock"].is_null(), "{}", host[0]);
    let kinds: Vec<_> = storm
        .iter()
        .map(|r| r["rmap_lock"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rwsem", "rwlock"], "one row per --rmap-lock kind");
    for r in &storm {
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["rmap_lock_waits"].as_u64().is_some(), "{r}");
    }
    // Two threads forking one parent (and dropping children) contend its
    // objects' rmap locks. Fork itself runs under the parent's write lock,
    // so the waits come from a child's drop meeting another thread's fork:
    // summed over the kinds, since one short window on a loaded machine may
    // see none.
    let waits: u64 = storm
        .iter()
        .map(|r| r["rmap_lock_waits"].as_u64().unwrap())
        .sum();
    assert!(
        waits > 0,
        "no rmap lock wait in any fork_storm row: {storm:?}"
    );
    let vmas: Vec<_> = rows
        .iter()
        .filter(|r| r["workload"] == "fork_vmas")
        .collect();
    let names: Vec<_> = vmas
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["locked", "unlocked"],
        "fork_vmas runs once, two rows"
    );
    for r in &vmas {
        assert!(r["fork_lock_overhead"].as_f64().is_some(), "{r}");
        assert_eq!(r["rmap_lock"], "rwsem-spin", "{r}");
    }
    assert!(stdout.contains("fork_storm"), "no table: {stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_rmap_lock_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(["bench", "fork_storm", "--rmap-lock", "rwsem,spin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spin"), "{err}");
}
