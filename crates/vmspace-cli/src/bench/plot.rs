//! SVG plots of the results (plotters' SVG backend):
//!
//! * `<workload>-throughput.svg`: ops/s against threads, one line per strategy
//!   (host included);
//! * `<workload>-latency.svg`: latency percentiles of single operations at the
//!   largest thread count, one line per strategy, log scale;
//! * `mixed-kept.svg`: for each mixed workload and strategy, the share of the
//!   faulters' throughput kept while the extra thread works (bar) and while it
//!   only spins (the control, a dot);
//! * `lookup.svg`: nanoseconds per lookup against the number of VMAs.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::report::{ns, rate};
use super::{Row, Workload};

const SIZE: (u32, u32) = (860, 520);
const FONT: &str = "sans-serif";

fn color(name: &str) -> RGBColor {
    match name {
        "mmap-lock" | "rwlock-btreemap" => RGBColor(214, 39, 40),
        "per-vma" | "btreemap" => RGBColor(31, 119, 180),
        "speculative" | "skiplist" => RGBColor(44, 160, 44),
        "vmspace" => RGBColor(148, 103, 189),
        _ => RGBColor(40, 40, 40),
    }
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

fn names(rows: &[&Row]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in rows {
        if !v.contains(&r.strategy) {
            v.push(r.strategy.clone());
        }
    }
    v
}

/// Draws every plot the rows allow into `dir`; returns how many files.
pub fn all(rows: &[Row], dir: &Path) -> Result<usize> {
    let mut n = 0;
    let mut workloads: Vec<Workload> = rows.iter().map(|r| r.workload).collect();
    workloads.dedup();
    for w in workloads {
        let rs: Vec<&Row> = rows
            .iter()
            .filter(|r| r.workload == w && r.ops_per_sec.is_some())
            .collect();
        if rs.is_empty() || w == Workload::Lookup || w.is_named_only() {
            continue;
        }
        if !w.is_mixed() {
            throughput(w, &rs, &dir.join(format!("{}-throughput.svg", w.name())))?;
            n += 1;
        }
        latency(w, &rs, &dir.join(format!("{}-latency.svg", w.name())))?;
        n += 1;
    }
    let mixed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload.is_mixed() && r.mixed.is_some())
        .collect();
    if !mixed.is_empty() {
        kept(&mixed, &dir.join("mixed-kept.svg"))?;
        n += 1;
    }
    let lookups: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload == Workload::Lookup)
        .collect();
    if !lookups.is_empty() {
        lookup(&lookups, &dir.join("lookup.svg"))?;
        n += 1;
    }
    Ok(n)
}

fn throughput(w: Workload, rows: &[&Row], path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let tmax = rows.iter().map(|r| r.threads).max().unwrap_or(1) as f64;
    let ymax = rows
        .iter()
        .map(|r| r.max.max(r.ops_per_sec.unwrap_or(0.0)))
        .fold(0.0, f64::max)
        * 1.15;
    let what = if w == Workload::Mmap1 {
        "mmap+munmap pairs/s"
    } else {
        "faults/s"
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: throughput (all threads)", w.name()),
            (FONT, 24),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0.5f64..tmax + 0.5, 0f64..ymax.max(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("threads")
        .y_desc(what)
        .x_labels(tmax as usize + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round())
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| rate(*y))
        .label_style((FONT, 15))
        .draw()
        .map_err(err)?;
    for name in names(rows) {
        let c = color(&name);
        let mut pts: Vec<&Row> = rows
            .iter()
            .copied()
            .filter(|r| r.strategy == name)
            .collect();
        pts.sort_by_key(|r| r.threads);
        let line: Vec<(f64, f64)> = pts
            .iter()
            .map(|r| (r.threads as f64, r.ops_per_sec.unwrap_or(0.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(3)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(err)?;
        // The spread of the runs, as a vertical bar.
        chart
            .draw_series(pts.iter().map(|r| {
                let x = r.threads as f64;
                PathElement::new(vec![(x, r.min), (x, r.max)], c.stroke_width(1))
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

fn latency(w: Workload, rows: &[&Row], path: &Path) -> Result<()> {
    let t = rows.iter().map(|r| r.threads).max().unwrap_or(1);
    let rows: Vec<&Row> = rows
        .iter()
        .copied()
        .filter(|r| r.threads == t && r.lat.as_ref().is_some_and(|h| !h.is_empty()))
        .collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let ymax = rows
        .iter()
        .filter_map(|r| r.lat.as_ref().map(|h| h.max()))
        .max()
        .unwrap_or(1000) as f64
        * 2.0;
    let ymin = rows
        .iter()
        .filter_map(|r| r.lat.as_ref().map(|h| h.value_at_quantile(0.5)))
        .min()
        .unwrap_or(100)
        .max(1) as f64
        / 2.0;
    let what = if w.is_mixed() {
        "faulter latency while the extra thread works"
    } else {
        "latency of single operations"
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: {what}, {t} threads", w.name()), (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.3f64..4.3, (ymin..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile (1 op in 64 timed)")
        .y_desc("nanoseconds (log)")
        .x_labels(5)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-9 && (0.0..=4.0).contains(&i) {
                QUANTILES[i as usize].0.to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| ns(*y as u64))
        .label_style((FONT, 15))
        .draw()
        .map_err(err)?;
    for r in rows {
        let c = color(&r.strategy);
        let h = r.lat.as_ref().expect("latency");
        let pts: Vec<(f64, f64)> = QUANTILES
            .iter()
            .enumerate()
            .map(|(i, &(_, q))| (i as f64, h.value_at_quantile(q).max(1) as f64))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(err)?
            .label(r.strategy.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn kept(rows: &[&Row], path: &Path) -> Result<()> {
    let mut groups: Vec<(Workload, usize)> = Vec::new();
    for r in rows {
        if !groups.contains(&(r.workload, r.threads)) {
            groups.push((r.workload, r.threads));
        }
    }
    let strategies = names(rows);
    let k = strategies.len().max(1) as f64;
    let ymax = rows
        .iter()
        .filter_map(|r| r.mixed.as_ref())
        .map(|m| m.kept.max(m.spin_kept))
        .fold(1.0, f64::max)
        * 1.25;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = groups
        .iter()
        .map(|(w, t)| format!("{} ({t} thr)", w.name()))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "mixed: faulter throughput kept while the extra thread works",
            (FONT, 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..groups.len() as f64 - 0.5, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len().max(2))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-9 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("kept = ops/s busy / ops/s idle")
        .label_style((FONT, 15))
        .draw()
        .map_err(err)?;
    // The line at 1.0: nothing lost.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(-0.5, 1.0), (groups.len() as f64 - 0.5, 1.0)],
            BLACK.mix(0.5).stroke_width(1),
        )))
        .map_err(err)?;
    let width = 0.8 / k;
    for (si, name) in strategies.iter().enumerate() {
        let c = color(name);
        let bars: Vec<(f64, f64, f64)> = rows
            .iter()
            .filter(|r| &r.strategy == name)
            .filter_map(|r| {
                let g = groups.iter().position(|&g| g == (r.workload, r.threads))? as f64;
                let x0 = g - 0.4 + si as f64 * width;
                let m = r.mixed.as_ref()?;
                Some((x0, m.kept, m.spin_kept))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, kept, _)| {
                Rectangle::new([(x0 + 0.01, 0.0), (x0 + width - 0.01, kept)], c.filled())
            }))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], c.filled()));
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x0, _, spin)| Circle::new((x0 + width / 2.0, spin), 5, BLACK.filled())),
            )
            .map_err(err)?;
    }
    chart
        .draw_series(Vec::<Circle<(f64, f64), i32>>::new())
        .map_err(err)?
        .label("spin control (extra thread only spins)")
        .legend(|(x, y)| Circle::new((x + 9, y), 5, BLACK.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn lookup(rows: &[&Row], path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let nmin = rows.iter().filter_map(|r| r.vmas).min().unwrap_or(1) as f64;
    let nmax = rows.iter().filter_map(|r| r.vmas).max().unwrap_or(10) as f64;
    let ymax = rows.iter().filter_map(|r| r.ns_per_op).fold(1.0, f64::max) * 1.2;
    let t = rows.iter().map(|r| r.threads).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("lookup: one VMA lookup, {t} threads at once"),
            (FONT, 24),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((nmin / 1.5..nmax * 1.5).log_scale(), 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("VMAs in the map (log)")
        .y_desc("ns per lookup per thread")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style((FONT, 15))
        .draw()
        .map_err(err)?;
    for name in names(rows) {
        let c = color(&name);
        let mut pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.strategy == name)
            .filter_map(|r| Some((r.vmas? as f64, r.ns_per_op?)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
