//! Replays of files with bad lines: every line is accounted for, by reason,
//! in the summary and the dead-letter file; nothing crashes.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

use common::{run_ok, summary};

fn replay(name: &str, text: &str, workers: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(name);
    std::fs::write(&input, text).unwrap();
    let s = dir.path().join("summary.json");
    let dead = dir.path().join("dead.jsonl");
    run_ok(&[
        "run",
        "--workers",
        workers,
        "--source",
        &format!("replay:{}", input.display()),
        "--summary-json",
        &s.to_string_lossy(),
        "--dead-letter",
        &dead.to_string_lossy(),
    ]);
    let dead = std::fs::read_to_string(&dead).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (summary(&s), dead)
}

#[test]
fn bad_csv_lines_are_counted_by_reason_and_dead_lettered() {
    let mut text = String::from("timestamp,series,value\n");
    for i in 0..600 {
        text.push_str(&format!("{},web,{}\n", 1_767_225_600 + i * 10, i % 7));
    }
    // A record behind the watermark (30 s lateness), then garbage of every kind.
    text.push_str("1767225600,web,1\n");
    text.push_str("not,a,number\n");
    text.push_str("1767231600,web,NaN\n");
    text.push_str("1767231600,web,-3\n");
    text.push_str("1767231600,web,1e300\n");
    text.push_str("1767231600,web\n");
    text.push_str("yesterday,web,1\n");
    text.push('\n');
    for workers in ["1", "3"] {
        let (s, dead) = replay("trace.csv", &text, workers);
        assert_eq!(s["records_used"], 600, "{s}");
        assert_eq!(s["records_in"], 607, "{s}");
        let r = &s["rejected"];
        assert_eq!((r["late"].as_u64(), r["non-finite"].as_u64(), r["negative"].as_u64()), (Some(1), Some(1), Some(1)));
        assert_eq!(
            (r["out-of-range"].as_u64(), r["malformed"].as_u64(), r["bad-timestamp"].as_u64()),
            (Some(1), Some(1), Some(2))
        );
        assert_eq!(dead.len(), 7);
        let late = dead.iter().find(|d| d["reason"] == "late").unwrap();
        assert_eq!(late["origin"]["offset"], 602, "line number of the late record");
        assert_eq!(late["raw"], "1767225600,web,1");
        assert!(s["windows_emitted"].as_u64().unwrap() > 0);
    }
}

#[test]
fn adapter_and_blog_json_replays_use_good_lines_and_reject_bad_ones() {
    let mut adapter = String::new();
    for i in 0..120 {
        adapter.push_str(&format!(
            "{{\"timestamp\":\"2026-01-01T00:{:02}:{:02}Z\",\"value\":\"{}\",\"name\":\"cpu\",\"labels\":{{\"namespace\":\"shop\",\"pod\":\"checkout-7d9f8-ab{:03}\"}}}}\n",
            i / 2,
            (i % 2) * 30,
            i,
            i % 5
        ));
    }
    adapter.push_str("{\"timestamp\":\"2026-01-01T01:00:00Z\",\"value\":\"1\"\n");
    adapter.push_str("\u{feff}garbage \u{1F600}\n");
    adapter.push_str(&format!(
        "{{\"timestamp\":\"2026-01-01T01:00:00Z\",\"value\":\"1\",\"name\":\"cpu\",\"labels\":{{\"pod\":\"{}\"}}}}\n",
        "x".repeat(100_000)
    ));
    let (s, dead) = replay("adapter.jsonl", &adapter, "2");
    // A 100 kB pod name is no Kubernetes name: malformed too.
    assert_eq!(s["records_used"], 120, "{s}");
    assert_eq!(s["rejected"]["malformed"], 3, "{s}");
    assert!(dead.iter().all(|d| d["raw"].as_str().unwrap().len() <= 512));

    let mut blog = String::new();
    for i in 0..60 {
        blog.push_str(&format!(
            "{{\"timestamp\":\"2026-01-01 00:{i:02}:00.000\",\"pod_name\":\"api-gateway-5c9d7b8f6-x2x9q\",\"cpu_usage\":0.{i},\"memory_usage\":1.2e8}}\n"
        ));
    }
    blog.push_str("{\"timestamp\":\"2026-01-01 01:00:00.000\",\"pod_name\":\"api-gateway-5c9d7b8f6-x2x9q\",\"cpu_usage\":\"high\"}\n");
    let (s, _) = replay("blog.jsonl", &blog, "1");
    assert_eq!(s["records_used"], 120, "{s}");
    assert_eq!(s["rejected"]["malformed"], 1, "{s}");
}

#[test]
fn a_missing_trace_is_an_error_not_a_crash() {
    let out = common::prescale().args(["run", "--source", "replay:/nonexistent/trace.csv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trace.csv"));
}

#[test]
fn invalid_settings_exit_2_and_name_the_field() {
    let out = common::prescale().args(["run", "--workers", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster.workers"));
}

#[test]
fn a_paced_replay_follows_event_time() {
    // Ten minutes of event time at 600x take about a second.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("trace.csv");
    let text: String = (0..=600).map(|i| format!("{},web,1\n", 1_767_225_600 + i)).collect();
    std::fs::write(&input, text).unwrap();
    let started = std::time::Instant::now();
    run_ok(&["run", "--source", &format!("replay:{}", input.display()), "--speedup", "600"]);
    let took = started.elapsed().as_secs_f64();
    assert!((0.9..10.0).contains(&took), "paced replay took {took:.2}s");
    let started = std::time::Instant::now();
    run_ok(&["run", "--source", &format!("replay:{}", input.display())]);
    assert!(started.elapsed().as_secs_f64() < 0.9, "an unpaced replay is not held back");
}
