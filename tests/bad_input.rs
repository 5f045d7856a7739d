//! Bad input through the whole pipeline (decode → event time → features →
//! forecast → decide): nothing crashes, every record is counted under the
//! right reason, and nothing bad causes a scale-down.
//!
//! - An adversarial corpus (truncated JSON, wrong types, huge numbers,
//!   NaN/Inf, timestamps in milliseconds, in the future, in 1970, unicode
//!   and 1 MB labels, duplicates) mixed into a clean stream: a deployment
//!   that only gets garbage the decoders refuse decides exactly as without
//!   it; one whose timestamps go bad is held in fallback.
//! - A real trace whose timestamps switch to milliseconds halfway through
//!   ends in fallback, never in a scale-down.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use common::{run_ok, summary, trace};
use prescale_dataflows::time::format_datetime;
use serde_json::Value;

/// 2026-01-01T00:00:00Z.
const START: u64 = 1_767_225_600;
const HOURS: u64 = 12;

fn rfc3339(t: u64) -> String {
    format_datetime(t * 1000)
}

fn line(ts: &str, value: &str, ns: &str, pod: &str) -> String {
    format!(r#"{{"timestamp":"{ts}","value":"{value}","name":"rps","labels":{{"namespace":"{ns}","pod":"{pod}"}}}}"#)
}

/// The clean stream: deployments `web` and `api`, 4 pods each, a sample per
/// pod every 15 s for 12 hours, on a 3-hour wave.
fn clean() -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for t in (START..START + HOURS * 3600).step_by(15) {
        let phase = (t - START) as f64 / 10_800.0 * std::f64::consts::TAU;
        for (d, base) in [("web", 30.0), ("api", 12.0)] {
            for p in 0..4 {
                let v = base * (1.5 + phase.sin()) + p as f64;
                out.push((t, line(&rfc3339(t), &format!("{v:.3}"), "shop", &format!("{d}-5d8f7c9b6d-x2k7{p}"))));
            }
        }
    }
    out
}

/// What the corpus adds, by the reason each line must be counted under
/// (`used` for lines that are valid).
fn corpus(clean: &[(u64, String)]) -> Vec<(u64, &'static str, String)> {
    let mut bad = Vec::new();
    let at = START + 6 * 3600;
    let ts = rfc3339(at);
    let web = |v: &str| line(&ts, v, "shop", "web-5d8f7c9b6d-x2k79");
    // Garbage the decoders refuse, for `web`: its decisions must not move.
    bad.push((at, "malformed", web("1")[..40].to_owned()));
    bad.push((
        at,
        "malformed",
        r#"{"timestamp":"2026-01-01T06:00:00Z","value":true,"name":"rps","labels":{"pod":"web-5d8f7c9b6d-x2k79"}}"#
            .into(),
    ));
    bad.push((
        at,
        "malformed",
        r#"{"timestamp":"2026-01-01T06:00:00Z","value":{"v":1},"name":"rps","labels":{"pod":"web-5d8f7c9b6d-x2k79"}}"#
            .into(),
    ));
    bad.push((
        at,
        "malformed",
        r#"{"timestamp":"2026-01-01T06:00:00Z","value":"1","name":"rps","labels":"web"}"#.into(),
    ));
    bad.push((
        at,
        "malformed",
        r#"{"timestamp":1767247200,"value":"1","name":"rps","labels":{"pod":"web-5d8f7c9b6d-x2k79"}}"#.into(),
    ));
    bad.push((
        at,
        "malformed",
        r#"{"timestamp":"2026-01-01T06:00:00Z","value":1e400,"name":"rps","labels":{"pod":"web-5d8f7c9b6d-x2k79"}}"#
            .into(),
    ));
    bad.push((at, "malformed", "\u{0}\u{1}\u{2}garbage".into()));
    bad.push((at, "malformed", "[]".into()));
    bad.push((at, "out-of-range", web("1e300")));
    bad.push((at, "non-finite", web("NaN")));
    bad.push((at, "non-finite", web("+Inf")));
    bad.push((at, "non-finite", web("-Inf")));
    bad.push((at, "negative", web("-5")));
    bad.push((at, "bad-timestamp", line("1767247200000", "1", "shop", "web-5d8f7c9b6d-x2k79")));
    bad.push((at, "bad-timestamp", line("yesterday", "1", "shop", "web-5d8f7c9b6d-x2k79")));
    // A pod name of 1 MB: no Kubernetes name is that long.
    bad.push((at, "malformed", line(&ts, "1", "shop", &format!("web-{}", "x".repeat(1 << 20)))));
    // Exact repeats of web's samples, one of them carrying a 1 MB label.
    for (t, l) in clean.iter().filter(|(t, l)| *t == at && l.contains("web-")).take(3) {
        bad.push((*t, "duplicate", l.clone()));
    }
    let (t, l) = clean.iter().find(|(t, l)| *t == at + 15 && l.contains("web-")).unwrap();
    let big = l.replacen(r#""labels":{"#, &format!(r#""labels":{{"instance":"{}","#, "i".repeat(1 << 20)), 1);
    bad.push((*t, "duplicate", big));
    // Unicode names are names: used, as a deployment of their own.
    for k in 0..8 {
        let t = at + k * 15;
        bad.push((t, "used", line(&rfc3339(t), "3", "shöp", "wéb-😀-5d8f7c9b6d-abcde")));
    }
    // `api`'s timestamps go bad: three days ahead (a clock gone wrong) and
    // in 1970, among its good records.
    for k in 0..20 {
        let t = at + 60 * k;
        bad.push((t, "bad-timestamp", line(&rfc3339(t + 3 * 86_400 + 7), "500", "shop", "api-5d8f7c9b6d-x2k70")));
    }
    bad.push((at, "late", line("1970-01-01T00:00:00Z", "1", "shop", "api-5d8f7c9b6d-x2k70")));
    bad
}

fn write_trace(path: &Path, records: &[(u64, String)]) {
    let mut text = String::new();
    for (_, l) in records {
        writeln!(text, "{l}").unwrap();
    }
    std::fs::write(path, text).unwrap();
}

struct Run {
    summary: Value,
    decisions: Vec<Value>,
    dead: Vec<Value>,
}

fn run(dir: &Path, name: &str, trace: &Path, workers: &str, config: &str) -> Run {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let s = dir.join(format!("{name}-summary.json"));
    let d = dir.join(format!("{name}-decisions.jsonl"));
    let dead = dir.join(format!("{name}-dead.jsonl"));
    run_ok(&[
        "run",
        "--config",
        &cfg.to_string_lossy(),
        "--workers",
        workers,
        "--source",
        &format!("replay:{}", trace.display()),
        "--sink",
        &format!("jsonl:{}", d.display()),
        "--dead-letter",
        &dead.to_string_lossy(),
        "--summary-json",
        &s.to_string_lossy(),
    ]);
    let read = |p: &Path| -> Vec<Value> {
        std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    Run { summary: summary(&s), decisions: read(&d), dead: read(&dead) }
}

fn of(decisions: &[Value], deployment: &str) -> Vec<String> {
    decisions.iter().filter(|d| d["deployment"] == deployment).map(|d| d.to_string()).collect()
}

/// A decision lowering the count.
fn lowers(d: &Value) -> bool {
    d["desired"].as_u64() < d["current"].as_u64()
}

#[test]
fn an_adversarial_corpus_is_counted_and_never_scales_down() {
    let dir = tempfile::tempdir().unwrap();
    let clean = clean();
    let bad = corpus(&clean);
    let mut mixed: Vec<(u64, String)> = clean.clone();
    mixed.extend(bad.iter().map(|(t, _, l)| (*t, l.clone())));
    // Stable: the corpus lands after the clean records of its time.
    mixed.sort_by_key(|(t, _)| *t);
    let (clean_path, mixed_path) = (dir.path().join("clean.jsonl"), dir.path().join("mixed.jsonl"));
    write_trace(&clean_path, &clean);
    write_trace(&mixed_path, &mixed);
    let config = "[decide]\ntarget_per_replica = 20.0\n";
    let reference = run(dir.path(), "clean", &clean_path, "1", config);
    let got = run(dir.path(), "mixed", &mixed_path, "2", config);

    // Every record counted once, under its reason.
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, reason, _) in &bad {
        *expected.entry(reason).or_default() += 1;
    }
    let s = &got.summary;
    let used = expected.remove("used").unwrap_or(0);
    assert_eq!(s["records_in"].as_u64(), Some((clean.len() + bad.len()) as u64), "{s}");
    assert_eq!(s["records_used"].as_u64(), Some(clean.len() as u64 + used), "{s}");
    for (reason, n) in s["rejected"].as_object().unwrap() {
        assert_eq!(n.as_u64(), Some(expected.get(reason.as_str()).copied().unwrap_or(0)), "{reason}: {s}");
    }
    assert_eq!(got.dead.len() as u64, s["records_in"].as_u64().unwrap() - s["records_used"].as_u64().unwrap());
    assert!(got.dead.iter().all(|d| d["raw"].as_str().unwrap().len() <= 512), "raw text is bounded");

    // Garbage the decoders refuse changes nothing for `web`.
    let (web, web_ref) = (of(&got.decisions, "web"), of(&reference.decisions, "web"));
    let names: std::collections::BTreeSet<String> =
        got.decisions.iter().map(|d| d["deployment"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(web.len() > 50, "{} decisions of web among {names:?}", web.len());
    if let Some(i) = (0..web.len().max(web_ref.len())).find(|&i| web.get(i) != web_ref.get(i)) {
        panic!("web decides as without the garbage; first difference:\n{:?}\n{:?}", web.get(i), web_ref.get(i));
    }

    // `api`'s bad clock holds it in fallback, and nothing lowers its count
    // from the first bad timestamp until it has recovered.
    let flagged = got.dead.iter().filter(|d| d["flag"]["issue"] == "timestamp-jump").count();
    assert_eq!(flagged, 20);
    let api: Vec<&Value> = got.decisions.iter().filter(|d| d["deployment"] == "api").collect();
    let first = api.iter().position(|d| d["reason"] == "fallback:timestamp-jump").expect("api is held");
    let bad_from = api[first]["time_ms"].as_u64().unwrap();
    let recovered = bad_from + 20 * 60_000 + 15 * 60_000;
    for d in api.iter().filter(|d| (bad_from..recovered).contains(&d["time_ms"].as_u64().unwrap())) {
        assert!(!lowers(d), "{d}");
        assert!(d["reason"].as_str().unwrap().starts_with("fallback:"), "{d}");
    }
    assert!(reference.decisions.iter().all(|d| d["reason"] != "fallback:timestamp-jump"));
}

#[test]
fn a_trace_switching_to_milliseconds_halfway_ends_in_fallback_not_in_a_scale_down() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(trace("nab")).unwrap();
    // Three NAB series of 4032 five-minute points; the second half of each
    // has its timestamps written in milliseconds.
    let mut by_series: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for l in text.lines().skip(1) {
        let mut f = l.split(',');
        let (t, series, value) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        by_series.entry(series).or_default().push((t.parse().unwrap(), value));
    }
    let chosen: Vec<_> = by_series.into_iter().filter(|(_, v)| v.len() >= 4000).take(3).collect();
    let mut out = String::from("timestamp,series,value\n");
    let mut switched = 0u64;
    let mut switch_at = BTreeMap::new();
    for (series, rows) in &chosen {
        let half = rows.len() / 2;
        switch_at.insert(series.to_string(), rows[half].0 * 1000);
        for (i, (t, v)) in rows.iter().enumerate() {
            let t = if i >= half { t * 1000 } else { *t };
            switched += u64::from(i >= half);
            writeln!(out, "{t},{series},{v}").unwrap();
        }
    }
    let path = dir.path().join("switched.csv");
    std::fs::write(&path, out).unwrap();
    let got = run(dir.path(), "switched", &path, "2", "[decide]\ntarget_per_replica = 5.0\n");

    let s = &got.summary;
    assert_eq!(s["rejected"]["bad-timestamp"].as_u64(), Some(switched), "{s}");
    let flags = got.dead.iter().filter(|d| d["flag"]["issue"] == "timestamp-unit").count() as u64;
    assert_eq!(flags, switched, "every switched record is flagged");
    for (series, at) in &switch_at {
        let mine: Vec<&Value> = got.decisions.iter().filter(|d| d["deployment"] == series.as_str()).collect();
        assert!(mine.len() > 100, "{series}: {}", mine.len());
        let last = mine.last().unwrap();
        assert!(last["reason"].as_str().unwrap().starts_with("fallback:"), "{series} ends in {last}");
        assert!(mine.iter().any(|d| d["reason"] == "fallback:timestamp-unit"), "{series}");
        // From the last good record on, nothing lowers the count.
        let last_good = at - 5 * 60_000;
        for d in mine.iter().filter(|d| d["time_ms"].as_u64().unwrap() >= last_good) {
            assert!(!lowers(d), "{series}: {d}");
        }
    }
}
