//! The table on standard output and the JSON document (the trust warnings
//! are `trust`'s).

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::trust::{self, Warning};
use super::{Ratio, RatioRow, Row, Workload};

/// Operations per second, short: `1.23M`.
pub fn rate(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Nanoseconds, short: `850ns`, `1.2us`, `3.4ms`.
pub fn ns(x: u64) -> String {
    if x == 0 {
        return "-".into();
    }
    let x = x as f64;
    if x >= 1e6 {
        format!("{:.1}ms", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}us", x / 1e3)
    } else {
        format!("{x:.0}ns")
    }
}

/// Spread of the runs around the median, in percent: `±3%`.
fn spread(r: &Row) -> String {
    match r.ops_per_sec {
        Some(m) if r.runs > 1 && m > 0.0 => {
            let d = (r.max - m).max(m - r.min) / m * 100.0;
            format!("±{d:.0}%")
        }
        _ => String::new(),
    }
}

fn pct(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q)
}

/// The table: one section per kind of workload.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let faults: Vec<_> = rows
        .iter()
        .filter(|r| {
            !r.workload.is_mixed() && r.workload != Workload::Lookup && !r.workload.is_named_only()
        })
        .collect();
    if !faults.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<12} {:>3} {:<12} {:>9} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7}",
            "workload",
            "thr",
            "strategy",
            "ops/s",
            "+-",
            "p50",
            "p99",
            "p99.9",
            "max",
            "lockless",
            "fallback",
            "retry"
        );
        for r in faults {
            let Some(ops) = r.ops_per_sec else {
                let _ = writeln!(
                    out,
                    "{:<12} {:>3} {:<12} {:>9}",
                    r.workload.name(),
                    r.threads,
                    r.strategy,
                    "n/a"
                );
                continue;
            };
            let h = r.lat.as_ref().expect("latency");
            let (lockless, fallback, retry) = match r.stats {
                Some(s) => {
                    let all = s.lockless + s.locked;
                    (
                        if all == 0 {
                            "no faults".into()
                        } else {
                            format!("{:.1}%", s.lockless as f64 / all as f64 * 100.0)
                        },
                        s.fallback.to_string(),
                        s.retry.to_string(),
                    )
                }
                None => ("-".into(), "-".into(), "-".into()),
            };
            let _ = writeln!(
                out,
                "{:<12} {:>3} {:<12} {:>9} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7}",
                r.workload.name(),
                r.threads,
                r.strategy,
                rate(ops),
                spread(r),
                ns(pct(h, 0.5)),
                ns(pct(h, 0.99)),
                ns(pct(h, 0.999)),
                ns(h.max()),
                lockless,
                fallback,
                retry
            );
        }
    }
    let mixed: Vec<_> = rows.iter().filter(|r| r.workload.is_mixed()).collect();
    if !mixed.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<13} {:>3} {:<12} {:>9} {:>5} {:>9} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "workload",
            "thr",
            "strategy",
            "faults/s",
            "+-",
            "baseline",
            "kept",
            "spin_kept",
            "extra/s",
            "xp50",
            "xp99",
            "idle p99",
            "fault p99"
        );
        for r in mixed {
            let (Some(ops), Some(m)) = (r.ops_per_sec, r.mixed.as_ref()) else {
                let why = r.skipped.as_deref().unwrap_or("n/a");
                let _ = writeln!(
                    out,
                    "{:<13} {:>3} {:<12} {why}",
                    r.workload.name(),
                    r.threads,
                    r.strategy
                );
                continue;
            };
            let h = r.lat.as_ref().expect("latency");
            let _ = writeln!(
                out,
                "{:<13} {:>3} {:<12} {:>9} {:>5} {:>9} {:>6.2} {:>9.2} {:>9} {:>8} {:>8} {:>8} {:>8}",
                r.workload.name(),
                r.threads,
                r.strategy,
                rate(ops),
                spread(r),
                rate(m.baseline),
                m.kept,
                m.spin_kept,
                rate(m.churn_ops_per_sec),
                ns(pct(&m.churn_lat, 0.5)),
                ns(pct(&m.churn_lat, 0.99)),
                ns(pct(&m.idle_lat, 0.99)),
                ns(pct(h, 0.99)),
            );
        }
    }
    let lookups: Vec<_> = rows
        .iter()
        .filter(|r| r.workload == Workload::Lookup)
        .collect();
    if !lookups.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<8} {:>3} {:>9} {:<16} {:>9} {:>5} {:>8}",
            "workload", "thr", "vmas", "structure", "ops/s", "+-", "ns/op"
        );
        for r in lookups {
            let _ = writeln!(
                out,
                "{:<8} {:>3} {:>9} {:<16} {:>9} {:>5} {:>8.1}",
                r.workload.name(),
                r.threads,
                r.vmas.unwrap_or(0),
                r.strategy,
                rate(r.ops_per_sec.unwrap_or(0.0)),
                spread(r),
                r.ns_per_op.unwrap_or(0.0)
            );
        }
    }
    fork_table(&mut out, rows);
    reclaim_table(&mut out, rows);
    mirror_tables(&mut out, rows);
    reclaim_mirror_table(&mut out, rows);
    out
}

/// `x / y`, 0 when `y` is.
fn per(x: f64, y: f64) -> f64 {
    if y == 0.0 {
        0.0
    } else {
        x / y
    }
}

/// p50 and p99 of a row's latency, short, or `-`.
fn p50_p99(r: &Row) -> (String, String) {
    match r.lat.as_ref().filter(|h| !h.is_empty()) {
        Some(h) => (ns(pct(h, 0.5)), ns(pct(h, 0.99))),
        None => ("-".into(), "-".into()),
    }
}

/// The mirror workload's sections: the cost of munmap and mprotect with
/// 0, 1 and 4 mirrors (nanoseconds per call), then faults per second of the
/// CPU and of a device, and device faults under a churning writer.
fn mirror_tables(out: &mut String, rows: &[Row]) {
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| r.workload == Workload::Mirror)
        .filter_map(|r| r.mirror.as_ref().map(|m| (r, m)))
        .collect();
    let cost: Vec<_> = rows
        .iter()
        .filter(|(_, m)| matches!(m.op, "munmap" | "mprotect"))
        .collect();
    if !cost.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<8} {:<9} {:>3} {:>7} {:>9} {:>5} {:>8} {:>8} {:>9} {:>9} {:>17}",
            "workload",
            "op",
            "thr",
            "mirrors",
            "ns/call",
            "+-",
            "p50",
            "p99",
            "zapped/c",
            "wprot/c",
            "ns down/up"
        );
        for (r, m) in cost {
            let calls = r.measured_ops as f64;
            let _ = writeln!(
                out,
                "{:<8} {:<9} {:>3} {:>7} {:>9.0} {:>5} {:>8} {:>8} {:>9.1} {:>9.1} {:>17}",
                r.workload.name(),
                m.op,
                r.threads,
                m.mirrors,
                r.ns_per_op.unwrap_or(0.0),
                spread(r),
                p50_p99(r).0,
                p50_p99(r).1,
                per(m.stats.zapped as f64, calls),
                per(m.stats.write_protected as f64, calls),
                m.mprotect_ns
                    .map_or("-".into(), |(d, u)| format!("{d:.0}/{u:.0}")),
            );
        }
    }
    let faults: Vec<_> = rows
        .iter()
        .filter(|(_, m)| matches!(m.op, "fault" | "churn"))
        .collect();
    if !faults.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<8} {:<6} {:>3} {:<7} {:>9} {:>5} {:>8} {:>8} {:>10} {:>9} {:>9} {:>8}",
            "workload",
            "op",
            "thr",
            "target",
            "faults/s",
            "+-",
            "p50",
            "p99",
            "dev acc/s",
            "retries",
            "retry/flt",
            "churn/s"
        );
        for (r, m) in faults {
            let device = m.target == Some("device");
            let st = &m.stats;
            let _ = writeln!(
                out,
                "{:<8} {:<6} {:>3} {:<7} {:>9} {:>5} {:>8} {:>8} {:>10} {:>9} {:>9} {:>8}",
                r.workload.name(),
                m.op,
                r.threads,
                m.target.unwrap_or("-"),
                rate(r.ops_per_sec.unwrap_or(0.0)),
                spread(r),
                p50_p99(r).0,
                p50_p99(r).1,
                if device {
                    rate(per(st.device_accesses as f64, m.seconds))
                } else {
                    "-".into()
                },
                if device {
                    st.fault_retries.to_string()
                } else {
                    "-".into()
                },
                if device {
                    format!(
                        "{:.3}",
                        per(st.fault_retries as f64, st.device_faults as f64)
                    )
                } else {
                    "-".into()
                },
                m.churn_ops_per_sec.map_or("-".into(), rate),
            );
        }
        let _ = writeln!(
            out,
            "(fault: page_fault1's first touches, by a Cpu or through a Device per thread; \
             churn: thr device threads read random pages while one more thread \
             DONTNEEDs and mprotects; p50/p99: sampled accesses)"
        );
    }
}

/// The reclaim_mirror workload's section: pages reclaimed per second and
/// what the mirror cost per backing and rmap lock kind.
fn reclaim_mirror_table(out: &mut String, rows: &[Row]) {
    let rs: Vec<_> = rows
        .iter()
        .filter(|r| r.workload == Workload::ReclaimMirror)
        .filter_map(|r| Some((r, r.reclaim.as_ref()?, r.mirror.as_ref()?)))
        .collect();
    if rs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:>3} {:<5} {:<10} {:>11} {:>9} {:>5} {:>8} {:>8} {:>10} {:>11} {:>7} {:>9} {:>11}",
        "workload",
        "thr",
        "back",
        "rmap lock",
        "reclaimed/s",
        "faults/s",
        "+-",
        "p50",
        "p99",
        "notif busy",
        "mirror busy",
        "slept",
        "dev acc/s",
        "dev fault/s"
    );
    for (r, rc, m) in rs {
        let st = &rc.stats;
        let reclaimed = (st.reclaimed_direct + st.reclaimed_background) as f64;
        let (p50, p99) = p50_p99(r);
        let _ = writeln!(
            out,
            "{:<14} {:>3} {:<5} {:<10} {:>11} {:>9} {:>5} {:>8} {:>8} {:>10} {:>11} {:>7} {:>9} {:>11}",
            r.workload.name(),
            r.threads,
            rc.backing,
            r.rmap_lock.unwrap_or("-"),
            rate(per(reclaimed, rc.seconds)),
            rate(r.ops_per_sec.unwrap_or(0.0)),
            spread(r),
            p50,
            p99,
            st.notifier_busy,
            m.stats.busy,
            m.stats.invalidations_slept,
            rate(per(m.stats.device_accesses as f64, m.seconds)),
            rate(per(m.stats.device_faults as f64, m.seconds)),
        );
    }
    if let Some((_, _, m)) = rows
        .iter()
        .filter(|r| r.workload == Workload::ReclaimMirror)
        .find_map(|r| Some((r, r.reclaim.as_ref()?, r.mirror.as_ref()?)))
    {
        let _ = writeln!(
            out,
            "(thr CPU threads plus {} device thread(s); mirror invalidations sleep {} us one in {}; \
             p50/p99: the CPU threads' sampled accesses)",
            m.extra_threads,
            m.config.invalidate_sleep.as_micros(),
            m.config.sleep_one_in.max(1)
        );
    }
}

/// The reclaim workload's section: faults/s per backing and rmap lock
/// kind, with the reclaim counters of the measured windows.
fn reclaim_table(out: &mut String, rows: &[Row]) {
    let rs: Vec<_> = rows
        .iter()
        .filter(|r| r.workload == Workload::Reclaim && r.reclaim.is_some())
        .collect();
    if rs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<8} {:>3} {:<5} {:<10} {:>9} {:>5} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6}",
        "workload",
        "thr",
        "back",
        "rmap lock",
        "faults/s",
        "+-",
        "p99",
        "swap out",
        "swap in",
        "bg/direct",
        "written",
        "eff"
    );
    for r in rs {
        let m = r.reclaim.as_ref().expect("filtered");
        let st = &m.stats;
        let p99 = r
            .lat
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or("-".into(), |h| format!("{}us", pct(h, 0.99) / 1000));
        let bg = st.reclaimed_background as f64
            / (st.reclaimed_background + st.reclaimed_direct).max(1) as f64;
        let _ = writeln!(
            out,
            "{:<8} {:>3} {:<5} {:<10} {:>9} {:>5} {:>8} {:>9} {:>9} {:>8.0}% {:>8} {:>6.2}",
            r.workload.name(),
            r.threads,
            m.backing,
            r.rmap_lock.unwrap_or("-"),
            rate(r.ops_per_sec.unwrap_or(0.0)),
            spread(r),
            p99,
            st.swap_outs,
            st.swap_ins,
            100.0 * bg,
            st.file_written,
            m.scan_efficiency,
        );
    }
}

/// The fork workloads' section: forks/s per rmap lock kind (fork_storm)
/// or with and without VMA write-locking (fork_vmas).
fn fork_table(out: &mut String, rows: &[Row]) {
    let forks: Vec<_> = rows.iter().filter(|r| r.workload.is_fork()).collect();
    if forks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:>3} {:>6} {:<10} {:<10} {:>9} {:>5} {:>10} {:>9}",
        "workload",
        "thr",
        "vmas",
        "strategy",
        "rmap lock",
        "forks/s",
        "+-",
        "rmap waits",
        "lock cost"
    );
    for r in forks {
        let _ = writeln!(
            out,
            "{:<10} {:>3} {:>6} {:<10} {:<10} {:>9} {:>5} {:>10} {:>9}",
            r.workload.name(),
            r.threads,
            r.vmas.unwrap_or(0),
            r.strategy,
            r.rmap_lock.unwrap_or("-"),
            rate(r.ops_per_sec.unwrap_or(0.0)),
            spread(r),
            r.rmap_lock_waits.map_or("-".into(), |w| w.to_string()),
            r.fork_lock_overhead
                .map_or("-".into(), |x| format!("{:+.1}%", x * 100.0)),
        );
    }
}

fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    })
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| std::env::consts::OS.to_string())
}

fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn date_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The `meta` object.
pub fn meta(plan: &Value, elapsed: f64) -> Value {
    let commit = first_line("git", &["rev-parse", "HEAD"]).map(|c| {
        let dirty = first_line("git", &["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|l| !l.is_empty());
        if dirty {
            c + "-dirty"
        } else {
            c
        }
    });
    json!({
        "commit": commit.unwrap_or_else(|| "unknown".into()),
        "kernel": kernel(),
        "cpu": cpu(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "date": date_utc(),
        "elapsed_seconds": elapsed,
        "plan": plan,
    })
}

fn put(o: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    o.insert(k.to_string(), v.into());
}

/// One row as JSON.
pub fn row_json(r: &Row) -> Value {
    let mut o = Map::new();
    put(&mut o, "workload", r.workload.name());
    put(&mut o, "strategy", r.strategy.as_str());
    put(&mut o, "threads", r.threads);
    if let Some(n) = r.vmas {
        put(&mut o, "vmas", n);
    }
    put(&mut o, "ops_per_sec", r.ops_per_sec);
    if let Some(why) = &r.skipped {
        put(&mut o, "skipped", why.as_str());
        return Value::Object(o);
    }
    put(&mut o, "ops_per_sec_min", r.min);
    put(&mut o, "ops_per_sec_max", r.max);
    put(&mut o, "runs", r.runs);
    put(&mut o, "measured_ops", r.measured_ops);
    if let Some(h) = r.lat.as_ref().filter(|h| !h.is_empty()) {
        put(&mut o, "p50_ns", pct(h, 0.5));
        put(&mut o, "p99_ns", pct(h, 0.99));
        put(&mut o, "p999_ns", pct(h, 0.999));
        put(&mut o, "max_ns", h.max());
        put(&mut o, "latency_samples", h.len());
    }
    if r.workload != Workload::Lookup {
        let s = r.stats;
        put(&mut o, "lockless", s.map(|s| s.lockless));
        put(&mut o, "locked", s.map(|s| s.locked));
        put(&mut o, "fallback", s.map(|s| s.fallback));
        put(&mut o, "retry", s.map(|s| s.retry));
        if let Some(f) = r.minflt {
            put(&mut o, "host_minflt", f);
        }
    }
    if let Some(m) = &r.mixed {
        put(&mut o, "baseline_ops_per_sec", m.baseline);
        put(&mut o, "kept", m.kept);
        put(&mut o, "spin_kept", m.spin_kept);
        put(&mut o, "churn_ops_per_sec", m.churn_ops_per_sec);
        put(&mut o, "churn_p50_ns", pct(&m.churn_lat, 0.5));
        put(&mut o, "churn_p99_ns", pct(&m.churn_lat, 0.99));
        put(&mut o, "churn_max_ns", m.churn_lat.max());
        put(&mut o, "idle_p50_ns", pct(&m.idle_lat, 0.5));
        put(&mut o, "idle_p99_ns", pct(&m.idle_lat, 0.99));
    }
    if let Some(x) = r.ns_per_op {
        put(&mut o, "ns_per_op", x);
    }
    if let Some(k) = r.rmap_lock {
        put(&mut o, "rmap_lock", k);
    }
    if let Some(w) = r.rmap_lock_waits {
        put(&mut o, "rmap_lock_waits", w);
    }
    if let Some(x) = r.fork_lock_overhead {
        put(&mut o, "fork_lock_overhead", x);
    }
    if let Some(m) = &r.reclaim {
        let st = &m.stats;
        put(&mut o, "backing", m.backing);
        put(&mut o, "limit_pages", m.limit_pages);
        put(&mut o, "working_set_pages", m.working_set_pages);
        put(&mut o, "swap_direct", m.swap_direct);
        put(&mut o, "scan_efficiency", m.scan_efficiency);
        put(&mut o, "scanned", st.scanned);
        put(&mut o, "referenced", st.referenced);
        put(&mut o, "reclaimed_direct", st.reclaimed_direct);
        put(&mut o, "reclaimed_background", st.reclaimed_background);
        put(&mut o, "swap_outs", st.swap_outs);
        put(&mut o, "swap_ins", st.swap_ins);
        put(&mut o, "file_written", st.file_written);
        put(&mut o, "file_dropped", st.file_dropped);
        put(&mut o, "skipped_busy", st.skipped_busy);
        put(&mut o, "notifier_busy", st.notifier_busy);
        put(&mut o, "oom", st.oom);
        put(&mut o, "measured_seconds", m.seconds);
        let reclaimed = (st.reclaimed_direct + st.reclaimed_background) as f64;
        put(&mut o, "reclaimed_per_sec", per(reclaimed, m.seconds));
    }
    if let Some(m) = &r.mirror {
        mirror_json(&mut o, m);
    }
    Value::Object(o)
}

/// The mirror columns of a row.
fn mirror_json(o: &mut Map<String, Value>, m: &super::MirrorRow) {
    let st = &m.stats;
    put(o, "op", m.op);
    put(o, "mirrors", m.mirrors);
    if let Some(t) = m.target {
        put(o, "target", t);
    }
    put(o, "device_threads", m.device_threads);
    put(o, "extra_threads", m.extra_threads);
    put(
        o,
        "invalidate_sleep_us",
        m.config.invalidate_sleep.as_micros() as u64,
    );
    put(o, "sleep_one_in", m.config.sleep_one_in.max(1));
    put(o, "mirror_seconds", m.seconds);
    put(o, "device_accesses", st.device_accesses);
    put(o, "device_faults", st.device_faults);
    put(o, "fault_retries", st.fault_retries);
    put(
        o,
        "retries_per_fault",
        per(st.fault_retries as f64, st.device_faults as f64),
    );
    put(o, "invalidations", st.invalidations);
    put(o, "invalidations_slept", st.invalidations_slept);
    put(o, "mirror_busy", st.busy);
    put(o, "zapped", st.zapped);
    put(o, "write_protected", st.write_protected);
    put(
        o,
        "device_accesses_per_sec",
        per(st.device_accesses as f64, m.seconds),
    );
    put(
        o,
        "device_faults_per_sec",
        per(st.device_faults as f64, m.seconds),
    );
    if let Some((down, up)) = m.mprotect_ns {
        put(o, "downgrade_ns_per_op", down);
        put(o, "upgrade_ns_per_op", up);
    }
    if let Some(x) = m.churn_ops_per_sec {
        put(o, "churn_ops_per_sec", x);
    }
}

/// `1.23 [1.01-1.40]`, or `-`.
fn ratio_cell(r: Option<Ratio>) -> String {
    match r {
        Some(r) => format!("{:.2} [{:.2}-{:.2}]", r.median, r.min, r.max),
        None => "-".into(),
    }
}

/// The paired ratios: each strategy against mmap-lock at each thread count,
/// and each thread count against the first, per repeat, then the median and
/// the range over the repeats.
pub fn ratio_table(rows: &[RatioRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "paired ratios (rates of the same repeat divided, then median [min-max] over the repeats):"
    );
    let _ = writeln!(
        out,
        "{:<12} {:<12} {:<44} scaling",
        "workload", "strategy", "vs mmap-lock"
    );
    for r in rows {
        let vs = r
            .vs_mmap_lock
            .iter()
            .map(|&(t, x)| format!("{t}t {}", ratio_cell(x)))
            .collect::<Vec<_>>()
            .join("  ");
        let sc = r
            .scaling
            .iter()
            .map(|&(t, x)| format!("{t}t/{}t {}", r.base_threads, ratio_cell(x)))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(
            out,
            "{:<12} {:<12} {:<44} {}",
            r.workload.name(),
            r.strategy,
            if vs.is_empty() { "-".into() } else { vs },
            if sc.is_empty() { "-".into() } else { sc }
        );
    }
    out
}

fn ratio_json(r: Option<Ratio>) -> Value {
    match r {
        Some(r) => json!({"median": r.median, "min": r.min, "max": r.max, "repeats": r.n}),
        None => Value::Null,
    }
}

fn ratio_row_json(r: &RatioRow) -> Value {
    json!({
        "workload": r.workload.name(),
        "strategy": r.strategy,
        "vs_mmap_lock": r.vs_mmap_lock.iter().map(|&(t, x)| json!({"threads": t, "ratio": ratio_json(x)})).collect::<Vec<_>>(),
        "scaling": r.scaling.iter().map(|&(t, x)| json!({"threads": t, "base_threads": r.base_threads, "ratio": ratio_json(x)})).collect::<Vec<_>>(),
    })
}

/// The whole document: `trustworthy` is false when `warnings` (the broken
/// rules of `trust::check`) is not empty.
pub fn json(meta: Value, rows: &[Row], ratios: &[RatioRow], warnings: &[Warning]) -> Value {
    json!({
        "meta": meta,
        "trustworthy": warnings.is_empty(),
        "warnings": trust::to_json(warnings),
        "results": rows.iter().map(row_json).collect::<Vec<_>>(),
        "ratios": ratios.iter().map(ratio_row_json).collect::<Vec<_>>(),
    })
}
