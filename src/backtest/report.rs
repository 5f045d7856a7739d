//! The backtest's findings for people (a table, an HTML page with plots)
//! and for machines (one JSON document).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Backtest, EqualService, PolicyResult, SeriesReport};
use crate::error::{Error, Result};

/// The headline of one series: cost at equal service and at the common
/// target, relative to HPA and the oracle.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Headline {
    /// The series.
    pub series: String,
    /// HPA's replica-hours at equal service.
    pub hpa: f64,
    /// prescale's replica-hours at equal service.
    pub prescale: f64,
    /// The oracle's replica-hours.
    pub oracle: f64,
    /// Whether both HPA and prescale met the budget at some target.
    pub both_met: bool,
    /// prescale ÷ HPA at equal service.
    pub prescale_vs_hpa: f64,
    /// prescale ÷ oracle at equal service.
    pub prescale_vs_oracle: f64,
    /// HPA ÷ oracle at equal service.
    pub hpa_vs_oracle: f64,
    /// (HPA − prescale) ÷ (HPA − oracle): the share of the gap closed.
    pub gap_closed: Option<f64>,
    /// 1 − prescale ÷ HPA, both at the common target.
    pub saving_at_common_target: f64,
    /// prescale's under-provisioned minutes ÷ HPA's, at the common target.
    pub underprovisioning_vs_hpa: Option<f64>,
}

fn find<'a, T>(rows: &'a [T], series: &str, policy: &str, key: impl Fn(&T) -> (&str, &str)) -> Option<&'a T> {
    rows.iter().find(|r| key(r) == (series, policy))
}

/// The headline per series, then the trace total (`series` = `all`) over
/// the series where both policies met the budget.
pub fn headlines(b: &Backtest) -> Vec<Headline> {
    let eq = |s: &str, p: &str| find(&b.equal_service, s, p, |r: &EqualService| (&r.series, &r.policy));
    let at = |s: &str, p: &str| find(&b.results, s, p, |r: &PolicyResult| (&r.series, &r.policy));
    let mut out = Vec::new();
    let mut totals = [0.0; 5];
    for s in &b.series {
        let name = s.name.as_str();
        let (Some(h), Some(p), Some(o), Some(hc), Some(pc)) =
            (eq(name, "hpa"), eq(name, "prescale"), eq(name, "oracle"), at(name, "hpa"), at(name, "prescale"))
        else {
            continue;
        };
        let both_met = h.met && p.met;
        if both_met {
            for (t, v) in totals.iter_mut().zip([
                h.replica_hours,
                p.replica_hours,
                o.replica_hours,
                hc.replica_hours,
                pc.replica_hours,
            ]) {
                *t += v;
            }
        }
        out.push(headline(name, [h.replica_hours, p.replica_hours, o.replica_hours], both_met, (hc, pc)));
    }
    if out.len() > 1 {
        let met: Vec<&Headline> = out.iter().filter(|h| h.both_met).collect();
        let under = |policy: &str| {
            met.iter().filter_map(|h| at(&h.series, policy)).map(|r| r.underprovisioned_minutes).sum::<f64>()
        };
        let (hu, pu) = (under("hpa"), under("prescale"));
        let total = Headline {
            series: "all".into(),
            hpa: totals[0],
            prescale: totals[1],
            oracle: totals[2],
            both_met: !met.is_empty(),
            prescale_vs_hpa: ratio(totals[1], totals[0]),
            prescale_vs_oracle: ratio(totals[1], totals[2]),
            hpa_vs_oracle: ratio(totals[0], totals[2]),
            gap_closed: gap(totals[0], totals[1], totals[2]),
            saving_at_common_target: 1.0 - ratio(totals[4], totals[3]),
            underprovisioning_vs_hpa: (hu > 0.0).then(|| pu / hu),
        };
        out.push(total);
    }
    out
}

fn headline(series: &str, [h, p, o]: [f64; 3], both_met: bool, (hc, pc): (&PolicyResult, &PolicyResult)) -> Headline {
    Headline {
        series: series.to_owned(),
        hpa: h,
        prescale: p,
        oracle: o,
        both_met,
        prescale_vs_hpa: ratio(p, h),
        prescale_vs_oracle: ratio(p, o),
        hpa_vs_oracle: ratio(h, o),
        gap_closed: gap(h, p, o),
        saving_at_common_target: 1.0 - ratio(pc.replica_hours, hc.replica_hours),
        underprovisioning_vs_hpa: (hc.underprovisioned_minutes > 0.0)
            .then(|| pc.underprovisioned_minutes / hc.underprovisioned_minutes),
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn gap(hpa: f64, prescale: f64, oracle: f64) -> Option<f64> {
    (hpa - oracle > 1e-9).then(|| (hpa - prescale) / (hpa - oracle))
}

/// The JSON document: `{"results", "equal_service", "headlines",
/// "curves"}`, with the settings that shape them. Each curve is one policy
/// on one series at one scale-down window: `[target, replica-hours,
/// under-provisioned minutes]` per target of the sweep.
pub fn json(b: &Backtest) -> serde_json::Value {
    serde_json::json!({
        "target_utilization": b.target_utilization,
        "budget_fraction": b.budget,
        "level": b.level,
        "results": b.results,
        "equal_service": b.equal_service,
        "headlines": headlines(b),
        "curves": b.curves,
    })
}

/// The table for people.
pub fn table(b: &Backtest) -> String {
    let mut t = String::new();
    let common = b.target_utilization * 100.0;
    let _ = writeln!(t, "At the common target ({common:.0}% utilisation; oracle and static-peak at the SLO):");
    let _ = writeln!(
        t,
        "{:<28} {:<12} {:>7} {:>13} {:>12} {:>10} {:>7}",
        "series", "policy", "target", "replica-h", "under-min", "p99 ms", "scales"
    );
    for r in &b.results {
        let _ = writeln!(
            t,
            "{:<28} {:<12} {:>6.0}% {:>13.1} {:>12.1} {:>10} {:>7}",
            truncate(&r.series, 28),
            r.policy,
            r.target_utilization * 100.0,
            r.replica_hours,
            r.underprovisioned_minutes,
            r.p99_ms.map_or("-".into(), |p| format!("{p:.0}")),
            r.scale_events
        );
    }
    let budget = b.budget * 100.0;
    let _ = writeln!(
        t,
        "\nAt equal service (at most {budget:.2}% of minutes under-provisioned; cheapest target and \
         scale-down window that meet it):"
    );
    let _ = writeln!(
        t,
        "{:<28} {:<12} {:>7} {:>7} {:>13} {:>12} {:>5} {:>7}",
        "series", "policy", "target", "window", "replica-h", "under-min", "met", "scales"
    );
    for r in &b.equal_service {
        let _ = writeln!(
            t,
            "{:<28} {:<12} {:>6.0}% {:>7} {:>13.1} {:>12.1} {:>5} {:>7}",
            truncate(&r.series, 28),
            r.policy,
            r.target_utilization * 100.0,
            r.scale_down_stabilization_s.map_or("-".into(), |w| format!("{w}s")),
            r.replica_hours,
            r.underprovisioned_minutes,
            if r.met { "yes" } else { "NO" },
            r.scale_events
        );
    }
    let _ = writeln!(t, "\nHeadline (replica-hours at equal service):");
    let _ = writeln!(
        t,
        "{:<28} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11}",
        "series", "pre/HPA", "pre/orc", "HPA/orc", "gap closed", "save@common", "under/HPA"
    );
    for h in headlines(b) {
        let _ = writeln!(
            t,
            "{:<28} {:>9.3} {:>9.3} {:>9.3} {:>11} {:>10.1}% {:>11}{}",
            truncate(&h.series, 28),
            h.prescale_vs_hpa,
            h.prescale_vs_oracle,
            h.hpa_vs_oracle,
            h.gap_closed.map_or("-".into(), |g| format!("{:.0}%", g * 100.0)),
            h.saving_at_common_target * 100.0,
            h.underprovisioning_vs_hpa.map_or("-".into(), |u| format!("{u:.2}")),
            if h.both_met { "" } else { "  (budget not met)" }
        );
    }
    t
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { s.chars().take(n - 1).collect::<String>() + "…" }
}

/// Writes `DIR/index.html`: per series, the load with each policy's ready
/// capacity and the forecast band, and the cost-versus-service curves.
pub fn html(b: &Backtest, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: "creating report directory",
        path: dir.to_owned(),
        source,
    })?;
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>prescale backtest</title><style>\
         body{font-family:sans-serif;margin:2em;max-width:1100px}pre{font-size:12px;overflow-x:auto}\
         .legend span{margin-right:1.2em}svg{background:#fafafa;border:1px solid #ddd}</style></head><body>\
         <h1>prescale backtest</h1>",
    );
    let _ = write!(page, "<pre>{}</pre>", escape(&table(b)));
    let colors = [("hpa", "#d62728"), ("prescale", "#1f77b4"), ("oracle", "#2ca02c"), ("static-peak", "#7f7f7f")];
    let legend: String = colors
        .iter()
        .map(|(p, c)| format!("<span style=\"color:{c}\">■ {p}</span>"))
        .chain([
            "<span style=\"color:#000\">■ load</span>".into(),
            "<span style=\"color:#9ecae1\">■ forecast band (point to upper)</span>".into(),
        ])
        .collect();
    for s in b.series.iter().take(50) {
        let _ = write!(page, "<h2>{}</h2><p>capacity per replica {:.4}; decisions: ", escape(&s.name), s.capacity);
        for (reason, n) in &s.reasons {
            let _ = write!(page, "{} {n}; ", escape(reason));
        }
        let _ = write!(page, "</p><div class=\"legend\">{legend}</div>");
        page.push_str(&capacity_plot(s, &colors));
        let curves: Vec<_> = b.curves.iter().filter(|c| c.series == s.name).collect();
        page.push_str(&curve_plot(&curves, b, &s.name, &colors));
    }
    page.push_str("</body></html>\n");
    let path = dir.join("index.html");
    std::fs::write(&path, page).map_err(|source| Error::Io { what: "writing report", path: path.clone(), source })?;
    Ok(path)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

const W: f64 = 1000.0;
const H: f64 = 260.0;

/// A line through `points`; `dash` is an SVG `stroke-dasharray`, empty
/// for a solid line.
fn polyline(points: impl Iterator<Item = (f64, f64)>, color: &str, width: f64, dash: &str) -> String {
    let mut d = String::new();
    for (x, y) in points {
        let _ = write!(d, "{x:.1},{y:.1} ");
    }
    let dash = if dash.is_empty() { String::new() } else { format!(" stroke-dasharray=\"{dash}\"") };
    format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\"{dash} points=\"{d}\"/>")
}

/// Load, ready capacity at the SLO utilisation per policy, forecast band.
/// Long traces show their last 3 days so steps stay visible.
fn capacity_plot(s: &SeriesReport, colors: &[(&str, &str)]) -> String {
    let load = &s.load;
    let end = load.end();
    let from = end.saturating_sub(3 * 24 * 3_600_000).max(load.start);
    let span = (end - from).max(1) as f64;
    let cap = s.capacity;
    let mut top = 0.0f64;
    for (i, v) in load.values.iter().enumerate() {
        if load.start + i as u64 * load.step >= from {
            top = top.max(*v);
        }
    }
    for (_, tl) in &s.timelines {
        for &(t, _, ready) in tl {
            if t >= from {
                top = top.max(f64::from(ready) * cap);
            }
        }
    }
    let top = if top > 0.0 { top * 1.05 } else { 1.0 };
    let x = |t: u64| (t.saturating_sub(from)) as f64 / span * W;
    let y = |v: f64| H - v / top * H;
    let mut svg = format!("<svg viewBox=\"0 0 {W} {H}\" width=\"100%\">");
    // The band as a filled polygon between point and upper.
    let band: Vec<_> = s.band.iter().filter(|b| b.0 >= from).collect();
    if !band.is_empty() {
        let mut d = String::new();
        for b in &band {
            let _ = write!(d, "{:.1},{:.1} ", x(b.0), y(b.2));
        }
        for b in band.iter().rev() {
            let _ = write!(d, "{:.1},{:.1} ", x(b.0), y(b.1));
        }
        let _ = write!(svg, "<polygon fill=\"#9ecae1\" fill-opacity=\"0.6\" points=\"{d}\"/>");
    }
    let steps = load
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| (load.start + i as u64 * load.step, *v))
        .filter(|(t, _)| *t >= from)
        .flat_map(|(t, v)| [(x(t), y(v)), (x(t + load.step), y(v))]);
    svg.push_str(&polyline(steps, "#000", 1.2, ""));
    for (policy, tl) in &s.timelines {
        let color = colors.iter().find(|c| c.0 == policy).map_or("#999", |c| c.1);
        let pts = tl.iter().filter(|p| p.0 >= from).map(|&(t, _, ready)| (x(t), y(f64::from(ready) * cap)));
        svg.push_str(&polyline(pts, color, 1.0, ""));
    }
    svg.push_str("</svg>");
    svg
}

/// Replica-hours against under-provisioned minutes, one curve per policy
/// and window over the sweep (shorter windows dashed), the oracle as a
/// point, and the budget as a line.
fn curve_plot(curves: &[&super::Curve], b: &Backtest, series: &str, colors: &[(&str, &str)]) -> String {
    let oracle = b.results.iter().find(|r| r.series == series && r.policy == "oracle");
    let minutes =
        b.series.iter().find(|s| s.name == series).map_or(1.0, |s| (s.load.end() - s.load.start) as f64 / 60_000.0);
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let max_cost = pts.clone().map(|p| p.1).chain(oracle.map(|o| o.replica_hours)).fold(0.0, f64::max).max(1e-9);
    let max_under = pts.map(|p| p.2).fold(b.budget * minutes * 2.0, f64::max).max(1e-9);
    let (w, h) = (600.0, 300.0);
    let x = |u: f64| 40.0 + u.max(0.0).sqrt() / max_under.sqrt() * (w - 60.0);
    let y = |c: f64| h - 30.0 - c / max_cost * (h - 50.0);
    let mut svg = format!(
        "<p>Cost against service: replica-hours (up) and under-provisioned minutes (right, square-root scale) \
         at each target of the sweep, one curve per scale-down window (solid: 300 s; dashes get shorter \
         with the window); the dashed black line is the budget.</p><svg viewBox=\"0 0 {w} {h}\" width=\"600\">"
    );
    let bx = x(b.budget * minutes);
    let _ = write!(
        svg,
        "<line x1=\"{bx:.1}\" y1=\"10\" x2=\"{bx:.1}\" y2=\"{:.1}\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>",
        h - 30.0
    );
    for c in curves {
        let color = colors.iter().find(|k| k.0 == c.policy).map_or("#999", |k| k.1);
        let dash = match c.scale_down_stabilization_s {
            w if w >= 300 => String::new(),
            w => format!("{} 3", 2 + w / 30),
        };
        svg.push_str(&polyline(c.points.iter().map(|p| (x(p.2), y(p.1))), color, 1.5, &dash));
        for p in &c.points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"><title>{} {:.0}%, {} s window: {:.1} replica-h, {:.1} min</title></circle>",
                x(p.2),
                y(p.1),
                c.policy,
                p.0 * 100.0,
                c.scale_down_stabilization_s,
                p.1,
                p.2
            );
        }
    }
    if let Some(o) = oracle {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#2ca02c\"><title>oracle: {:.1} replica-h</title></circle>",
            x(o.underprovisioned_minutes),
            y(o.replica_hours),
            o.replica_hours
        );
    }
    svg.push_str("</svg>");
    svg
}
