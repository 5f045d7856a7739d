//! The metrics endpoint, scraped over TCP from a running `prescale run`.
//!
//! Strategy: run the generator for one simulated day on two workers with
//! the endpoint on a free port (`--metrics-addr 127.0.0.1:0`) and a linger,
//! learn the port and the end of the job from the JSON log lines on stderr,
//! then scrape. The scrape is checked against two things the test does not
//! control: the README's list of metrics (every name listed must be
//! exported) and the job's own summary (`--summary-json`), which counts
//! records at the ingest while the metrics count them in the dataflow.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// One HTTP GET; returns the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Samples of a Prometheus text scrape: (name, labels, value).
fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (name.to_owned(), labels.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// Sum of a metric's samples whose labels contain `filter`.
fn total(samples: &[(String, String, f64)], name: &str, filter: &str) -> f64 {
    samples.iter().filter(|(n, l, _)| n == name && l.contains(filter)).map(|(_, _, v)| v).sum()
}

/// The metric names the README's metrics table lists.
fn readme_metrics() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("<!-- metrics:begin -->").expect("README marks its metrics table");
    let end = readme.find("<!-- metrics:end -->").expect("README marks the end of its metrics table");
    let mut names: Vec<String> = readme[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `prescale_"))
        .map(|rest| format!("prescale_{}", rest.split('`').next().unwrap()))
        .collect();
    names.dedup();
    names
}

struct Job {
    child: Child,
    /// JSON log events from stderr, as they come.
    events: mpsc::Receiver<serde_json::Value>,
}

impl Job {
    fn start(args: &[&str]) -> Job {
        let mut child = common::prescale().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // The summary and anything else not JSON is not an event.
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(event);
                }
            }
        });
        Job { child, events }
    }

    /// Waits for the event with this message; returns it.
    fn wait_for(&self, message: &str) -> serde_json::Value {
        loop {
            let event = self
                .events
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|e| panic!("no {message:?} event: {e}"));
            if event["message"] == message {
                return event;
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // The job lingers to be scraped; the test ends it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_listed_metric_is_scraped_and_the_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let summary_path = dir.path().join("summary.json");
    let job = Job::start(&[
        "--log-format",
        "json",
        "run",
        "--duration",
        "1d",
        "--workers",
        "2",
        "--metrics-addr",
        "127.0.0.1:0",
        "--metrics-linger",
        "60s",
        "--summary-json",
        summary_path.to_str().unwrap(),
    ]);
    let listening = job.wait_for("metrics endpoint listening");
    let addr = listening["addr"].as_str().unwrap().to_owned();
    // Alive from the start; the job may or may not be ready yet.
    let (status, _) = get(&addr, "/healthz");
    assert!(status.contains("200"), "{status}");
    job.wait_for("metrics endpoint lingering");

    let (status, body) = get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    let scraped = samples(&body);
    let names: Vec<&str> = scraped.iter().map(|(n, _, _)| n.as_str()).collect();

    let listed = readme_metrics();
    assert!(listed.len() >= 15, "the README lists only {listed:?}");
    for name in &listed {
        let present = names.iter().any(|n| n == name || n.strip_prefix(name.as_str()).is_some_and(|s| s == "_count"));
        assert!(present, "{name} is listed in the README but not scraped:\n{body}");
    }
    // And nothing is exported that the README does not list.
    for name in &names {
        let base = ["_bucket", "_sum", "_count"].iter().fold(*name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(listed.iter().any(|l| l == name || l == base), "{name} is exported but not in the README");
    }

    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let n = |key: &str| summary[key].as_u64().unwrap() as f64;
    let records_in = total(&scraped, "prescale_records_in_total", "source=\"generator\"");
    let used = total(&scraped, "prescale_records_used_total", "source=\"generator\"");
    let rejected = total(&scraped, "prescale_records_rejected_total", "source=\"generator\"");
    assert!(records_in > 0.0);
    assert_eq!(records_in, used + rejected, "records in = used + rejected");
    assert_eq!((records_in, used), (n("records_in"), n("records_used")), "metrics and summary disagree");
    // Every reject reason is a series, rejected or not, with the summary's count.
    let reasons: BTreeMap<String, u64> = serde_json::from_value(summary["rejected"].clone()).unwrap();
    for (reason, count) in &reasons {
        let series = format!("reason=\"{reason}\"");
        let found = scraped.iter().find(|(n, l, _)| n == "prescale_records_rejected_total" && l.contains(&series));
        assert_eq!(found.map(|(_, _, v)| *v), Some(*count as f64), "rejected {reason}");
    }
    assert_eq!(total(&scraped, "prescale_records_corrected_total", ""), n("corrected_records"));
    assert_eq!(total(&scraped, "prescale_windows_emitted_total", "kind=\"tumbling\""), n("tumbling_windows"));
    assert_eq!(total(&scraped, "prescale_windows_emitted_total", "kind=\"sliding\""), n("sliding_windows"));
    assert_eq!(total(&scraped, "prescale_windows_emitted_total", "kind=\"correction\""), n("corrections"));
    assert_eq!(total(&scraped, "prescale_windows_emitted_total", "kind=\"lag\""), n("lag_rows"));
    assert_eq!(total(&scraped, "prescale_forecasts_total", ""), n("forecasts"));
    let decisions = total(&scraped, "prescale_decisions_total", "");
    assert!(decisions > 0.0);
    assert_eq!(decisions, n("decisions"));
    let fallbacks = total(&scraped, "prescale_fallbacks_total", "");
    let fallback_decisions = total(&scraped, "prescale_decisions_total", "reason=\"fallback:");
    assert_eq!(fallbacks, fallback_decisions, "a fallback is a decision with a fallback reason");
    // Every decision is timed from its window's close, the last ones from
    // the end of the input.
    assert_eq!(total(&scraped, "prescale_decision_latency_seconds_count", ""), decisions);
    let within_13s = total(&scraped, "prescale_decision_latency_seconds_bucket", "le=\"+Inf\"");
    assert_eq!(within_13s, decisions);
    // A day of event time refits every series' models every hour; at the
    // end no refit is left waiting (the input's end discards them).
    assert!(total(&scraped, "prescale_refits_total", "") > 0.0);
    for worker in ["0", "1"] {
        assert_eq!(total(&scraped, "prescale_refits_waiting", &format!("worker=\"{worker}\"")), 0.0);
    }
    for worker in ["0", "1"] {
        let frontier = total(&scraped, "prescale_worker_frontier_seconds", &format!("worker=\"{worker}\""));
        // The generator starts on 2026-01-05; its frontier is past that.
        assert!(frontier > 1_767_571_200.0, "worker {worker} frontier {frontier}");
    }

    // Done: alive, no longer ready.
    assert!(get(&addr, "/healthz").0.contains("200"));
    assert!(get(&addr, "/readyz").0.contains("503"));
    assert!(get(&addr, "/nowhere").0.contains("404"));
}

#[test]
fn a_bad_metrics_address_names_the_field() {
    let out = common::prescale().args(["run", "--metrics-addr", "nowhere"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics.addr"), "{stderr}");
}
