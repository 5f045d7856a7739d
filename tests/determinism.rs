//! Determinism: the same input gives byte-identical feature rows,
//! forecasts and decisions (after sorting lines) with 1 worker, 4 workers, and 2
//! processes of 2 workers on localhost, for a real trace and for the
//! generator; and the same counts.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::{free_port, prescale, run_ok, sorted_lines, summary, trace};

/// The counts that must not depend on the cluster shape.
fn counts(summary: &serde_json::Value) -> serde_json::Value {
    let mut s = summary.clone();
    for volatile in ["elapsed_seconds", "records_per_second", "workers"] {
        s.as_object_mut().map(|o| o.remove(volatile));
    }
    s
}

/// Sorted feature, forecast and decision lines, and the summary.
type Outputs = (Vec<String>, Vec<String>, Vec<String>, serde_json::Value);

/// Runs `args` as one process with `workers` threads.
fn one_process(dir: &Path, name: &str, args: &[&str], workers: usize) -> Outputs {
    let features = dir.join(format!("{name}.jsonl"));
    let forecasts = dir.join(format!("{name}.forecasts.jsonl"));
    let decisions = dir.join(format!("{name}.decisions.jsonl"));
    let summary_path = dir.join(format!("{name}.json"));
    let w = workers.to_string();
    let mut all = vec!["run", "--workers", &w];
    let (f, fc, d, s) = (
        features.to_string_lossy().into_owned(),
        forecasts.to_string_lossy().into_owned(),
        format!("jsonl:{}", decisions.display()),
        summary_path.to_string_lossy().into_owned(),
    );
    all.extend_from_slice(args);
    all.extend_from_slice(&["--features", &f, "--forecasts", &fc, "--sink", &d, "--summary-json", &s]);
    run_ok(&all);
    (sorted_lines(&features), sorted_lines(&forecasts), sorted_lines(&decisions), summary(&summary_path))
}

/// Runs `args` as two processes of two workers each on loopback.
fn two_processes(dir: &Path, args: &[&str]) -> Outputs {
    let hosts = dir.join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let features = dir.join("cluster.jsonl");
    let forecasts = dir.join("cluster.forecasts.jsonl");
    let decisions = dir.join("cluster.decisions.jsonl");
    let summary_path = dir.join("cluster.json");
    let children: Vec<_> = (0..2)
        .map(|p| {
            let mut cmd = prescale();
            cmd.arg("run")
                .args(args)
                .args(["--workers", "2", "--processes", "2", "--process", &p.to_string()])
                .arg("--hosts")
                .arg(&hosts)
                .arg("--features")
                .arg(&features)
                .arg("--forecasts")
                .arg(&forecasts)
                .arg("--sink")
                .arg(format!("jsonl:{}", decisions.display()))
                .arg("--summary-json")
                .arg(&summary_path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            cmd.spawn().expect("spawn a prescale process")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "cluster process failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    (sorted_lines(&features), sorted_lines(&forecasts), sorted_lines(&decisions), summary(&summary_path))
}

fn check(args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (one, fc1, d1, s1) = one_process(dir.path(), "one", args, 1);
    let (four, fc4, d4, s4) = one_process(dir.path(), "four", args, 4);
    let (cluster, fc22, d22, s22) = two_processes(dir.path(), args);
    assert!(one.len() > 1000, "expected many feature rows, got {}", one.len());
    assert!(one == four, "1 and 4 workers differ: {} vs {} rows", one.len(), four.len());
    assert!(one == cluster, "1 worker and 2x2 differ: {} vs {} rows", one.len(), cluster.len());
    assert!(fc1.len() > 100, "expected many forecasts, got {}", fc1.len());
    assert!(fc1 == fc4, "forecasts: 1 and 4 workers differ: {} vs {}", fc1.len(), fc4.len());
    assert!(fc1 == fc22, "forecasts: 1 worker and 2x2 differ: {} vs {}", fc1.len(), fc22.len());
    assert!(d1.len() >= fc1.len(), "a decision per forecast at least: {} < {}", d1.len(), fc1.len());
    assert!(d1 == d4, "decisions: 1 and 4 workers differ: {} vs {}", d1.len(), d4.len());
    assert!(d1 == d22, "decisions: 1 worker and 2x2 differ: {} vs {}", d1.len(), d22.len());
    assert_eq!(counts(&s1), counts(&s4));
    assert_eq!(counts(&s1), counts(&s22));
    assert_eq!(s22["workers"], 4);
}

#[test]
fn real_trace_gives_identical_features_on_every_cluster_shape() {
    let path = trace("dc_aggregates");
    check(&["--source", &format!("replay:{}", path.display())]);
}

#[test]
fn generator_gives_identical_features_on_every_cluster_shape() {
    let summary_dir = tempfile::tempdir().unwrap();
    check(&["--duration", "1d", "--deployments", "7", "--pods", "3"]);
    // The generator's stream has late and out-of-order records: the
    // comparison above covered rejections and corrections too.
    let s = summary_dir.path().join("s.json");
    run_ok(&["run", "--duration", "1d", "--deployments", "7", "--pods", "3", "--summary-json", &s.to_string_lossy()]);
    let s = summary(&s);
    assert!(s["rejected"]["late"].as_u64().unwrap() > 0, "{s}");
    assert!(s["corrections"].as_u64().unwrap() > 0, "{s}");
}
