//! `vmspace bench reclaim`: a working set twice the memory limit, anon
//! (swap) and file (write-back), one row per backing and rmap lock kind,
//! with the reclaim counters; the swap file lives beside the JSON and is
//! gone afterwards.

use std::process::Command;

use serde_json::Value;

#[test]
fn reclaim_rows_swap_and_write_back() {
    let dir = std::env::temp_dir().join(format!("vmspace-bench-reclaim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vmspace"))
        .args(["bench", "reclaim", "--quick"])
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
    assert!(stdout.contains("faults/s"), "no reclaim table:\n{stdout}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows: Vec<_> = doc["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["workload"] == "reclaim")
        .collect();
    let keys: Vec<_> = rows
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
    for r in &rows {
        let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("no {k}: {r}"));
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(n("working_set_pages"), 2 * n("limit_pages"), "{r}");
        assert!(n("reclaimed_direct") + n("reclaimed_background") > 0, "{r}");
        assert!(n("p99_ns") >= n("p50_ns"), "{r}");
        let eff = r["scan_efficiency"].as_f64().unwrap();
        assert!(eff > 0.0 && eff <= 1.0, "{r}");
        assert_eq!(n("oom"), 0, "{r}");
        if r["backing"] == "anon" {
            assert!(n("swap_outs") > 0 && n("swap_ins") > 0, "{r}");
        } else {
            assert!(n("file_written") > 0 && n("file_dropped") > 0, "{r}");
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
