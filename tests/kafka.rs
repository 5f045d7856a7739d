//! The Kafka path against a real Apache Kafka broker: `prescale produce`
//! writes a real trace, `prescale run --source kafka://…` reads it back with
//! 1 worker and with 2 processes × 2 workers, and the features and
//! forecasts must equal a replay of the same trace; a job killed mid-stream
//! and restarted from its commits (with another number of workers) writes
//! every feature row exactly once;
//! undecodable messages reach a dead-letter topic with their origin, and
//! forecasts a sink topic keyed by deployment.
//!
//! The broker is `KAFKA_BOOTSTRAP` when set (CI starts one with
//! `tests/harness/kafka.sh`); otherwise the test starts its own with the
//! harness, in a state directory of its own, and stops it at the end. When
//! no broker can be had the test fails with the reason: it never passes
//! without having talked to Kafka.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::broker::Broker;
use common::{free_port, prescale, run_ok, sorted_lines, summary, trace};
use prescale_dataflows::decode::bincode::BinarySample;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// A real trace extract: four NAB series (a fortnight of 5-minute CPU
/// utilisation each), as CSV sorted by series like the original.
fn extract(dir: &Path) -> (PathBuf, usize) {
    let text = std::fs::read_to_string(trace("nab")).unwrap();
    let mut keep: Vec<&str> = Vec::new();
    let mut series: Vec<&str> = Vec::new();
    for line in text.lines().skip(1) {
        let Some(name) = line.split(',').nth(1) else { continue };
        if !series.contains(&name) {
            if series.len() == 4 {
                break;
            }
            series.push(name);
        }
        keep.push(line);
    }
    let path = dir.join("extract.csv");
    std::fs::write(&path, format!("timestamp,series,value\n{}\n", keep.join("\n"))).unwrap();
    (path, keep.len())
}

/// Features, forecasts and summary of one run.
struct Outputs {
    features: Vec<String>,
    forecasts: Vec<String>,
    summary: serde_json::Value,
}

fn outputs_args(dir: &Path, name: &str) -> (Vec<String>, [PathBuf; 3]) {
    let paths = [
        dir.join(format!("{name}.features.jsonl")),
        dir.join(format!("{name}.forecasts.jsonl")),
        dir.join(format!("{name}.summary.json")),
    ];
    let args = vec![
        "--features".to_owned(),
        paths[0].display().to_string(),
        "--forecasts".to_owned(),
        paths[1].display().to_string(),
        "--summary-json".to_owned(),
        paths[2].display().to_string(),
    ];
    (args, paths)
}

fn read_outputs(paths: &[PathBuf; 3]) -> Outputs {
    Outputs { features: sorted_lines(&paths[0]), forecasts: sorted_lines(&paths[1]), summary: summary(&paths[2]) }
}

fn run(dir: &Path, name: &str, args: &[&str]) -> Outputs {
    let (mut all, paths) = outputs_args(dir, name);
    all.splice(0..0, args.iter().map(|s| s.to_string()));
    all.insert(0, "run".to_owned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run_ok(&all);
    read_outputs(&paths)
}

/// Runs `args` as 2 processes × 2 workers on loopback.
fn run_cluster(dir: &Path, name: &str, args: &[&str]) -> Outputs {
    let hosts = dir.join(format!("{name}.hosts"));
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let (outputs, paths) = outputs_args(dir, name);
    let children: Vec<Child> = (0..2)
        .map(|p| {
            prescale()
                .arg("run")
                .args(args)
                .args(["--workers", "2", "--processes", "2", "--process", &p.to_string()])
                .arg("--hosts")
                .arg(&hosts)
                .args(&outputs)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "cluster process failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    read_outputs(&paths)
}

fn produce(broker: &Broker, topic: &str, trace: &Path, format: &str) -> u64 {
    let out = run_ok(&[
        "produce",
        "--brokers",
        &broker.bootstrap,
        "--topic",
        topic,
        "--trace",
        &trace.display().to_string(),
        "--format",
        format,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn assert_same(kafka: &Outputs, replay: &Outputs, what: &str) {
    assert!(replay.features.len() > 10_000, "expected many feature rows, got {}", replay.features.len());
    assert!(replay.forecasts.len() > 1_000, "expected many forecasts, got {}", replay.forecasts.len());
    assert!(
        kafka.features == replay.features,
        "{what}: features differ ({} vs {} rows)",
        kafka.features.len(),
        replay.features.len()
    );
    assert!(
        kafka.forecasts == replay.forecasts,
        "{what}: forecasts differ ({} vs {} rows)",
        kafka.forecasts.len(),
        replay.forecasts.len()
    );
    for field in ["records_in", "records_used", "rejected", "windows_emitted", "corrections", "lag_rows"] {
        assert_eq!(kafka.summary[field], replay.summary[field], "{what}: {field}");
    }
}

/// Waits until `path` exists, is not empty and has not grown for `quiet`.
fn wait_until_quiet(path: &Path, quiet: Duration, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (0, Instant::now());
    loop {
        assert!(child.try_wait().unwrap().is_none(), "the job ended on its own");
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        if len != last.0 {
            last = (len, Instant::now());
        } else if len > 0 && last.1.elapsed() >= quiet {
            return;
        }
        assert!(Instant::now() < deadline, "{} never settled", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kafka_round_trips_match_the_replay_and_survive_a_restart() {
    let broker = Broker::get();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (trace, records) = extract(dir);
    let replay_source = format!("replay:{}", trace.display());
    // Kafka delivers the trace in event-time order (see `prescale produce`):
    // the replay reference reads the same order.
    let mut lines: Vec<String> = std::fs::read_to_string(&trace).unwrap().lines().skip(1).map(str::to_owned).collect();
    lines.sort_by_key(|l| l.split(',').next().and_then(|t| t.parse::<u64>().ok()));
    let sorted = dir.join("sorted.csv");
    std::fs::write(&sorted, format!("timestamp,series,value\n{}\n", lines.join("\n"))).unwrap();
    let replay = run(dir, "replay", &["--source", &format!("replay:{}", sorted.display())]);
    let unsorted = run(dir, "replay-by-series", &["--source", &replay_source]);
    assert_same(&unsorted, &replay, "replay in file order vs event-time order");
    assert_eq!(replay.summary["records_in"], records as u64);

    // Binary records, one worker.
    let topic = broker.topic("bincode", 3);
    assert_eq!(produce(&broker, &topic, &trace, "bincode"), records as u64);
    let uri = broker.uri(&topic);
    let kafka_args =
        ["--from", "beginning", "--exit-when-idle", "2s", "--idle-timeout", "60s", "--group", "one-worker"];
    let one = run(dir, "bincode-1", &[&["--source", &uri, "--format", "bincode"][..], &kafka_args].concat());
    assert_same(&one, &replay, "bincode, 1 worker");

    // prometheus-kafka-adapter JSON, 2 processes × 2 workers over 3
    // partitions: one worker owns none.
    let topic = broker.topic("adapter", 3);
    assert_eq!(produce(&broker, &topic, &trace, "adapter-json"), records as u64);
    let uri = broker.uri(&topic);
    let cluster =
        run_cluster(dir, "adapter-2x2", &[&["--source", &uri, "--format", "adapter-json"][..], &kafka_args].concat());
    assert_same(&cluster, &replay, "adapter JSON, 2 processes x 2 workers");
    assert_eq!(cluster.summary["workers"], 4);

    // Restart: the first half of every series, a job killed once it has
    // written and committed what it can, the second half, and a job that
    // resumes from the commits. Together they write each feature row of a
    // job that read everything, exactly once.
    let (first, second): (Vec<&String>, Vec<&String>) = {
        let mut per_series: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for l in &lines {
            per_series.entry(l.split(',').nth(1).unwrap()).or_default().push(l);
        }
        let mut first = Vec::new();
        let mut second = Vec::new();
        for rows in per_series.values() {
            let (a, b) = rows.split_at(rows.len() / 2);
            first.extend_from_slice(a);
            second.extend_from_slice(b);
        }
        (first, second)
    };
    let half = |name: &str, rows: &[&String]| {
        let path = dir.join(name);
        let body: Vec<&str> = rows.iter().map(|s| s.as_str()).collect();
        std::fs::write(&path, format!("timestamp,series,value\n{}\n", body.join("\n"))).unwrap();
        path
    };
    let (first, second) = (half("first.csv", &first), half("second.csv", &second));
    let topic = broker.topic("restart", 3);
    let uri = broker.uri(&topic);
    let common = ["--source", &uri, "--format", "bincode", "--idle-timeout", "60s", "--group", "restarted"];
    produce(&broker, &topic, &first, "bincode");
    let (outputs, before) = outputs_args(dir, "before");
    let mut job = prescale().arg("run").args(common).args(&outputs).stdout(Stdio::null()).spawn().unwrap();
    // Quiet for 3 s: everything the frontier allows is written, and the
    // commit that follows each second has happened.
    wait_until_quiet(&before[0], Duration::from_secs(3), &mut job);
    std::thread::sleep(Duration::from_secs(2));
    job.kill().unwrap();
    job.wait().unwrap();
    produce(&broker, &topic, &second, "bincode");
    // The resumed job has two workers where the killed one had one: the
    // commits are per partition, whoever owns it next.
    let after = run(dir, "after", &[&common[..], &["--exit-when-idle", "2s", "--workers", "2"]].concat());
    let whole = run(
        dir,
        "whole",
        &[&common[..6], &["--group", "whole", "--from", "beginning", "--exit-when-idle", "2s"]].concat(),
    );
    let before = sorted_lines(&before[0]);
    assert!(
        before.len() > 1_000 && after.features.len() > 1_000,
        "{} rows, then {}",
        before.len(),
        after.features.len()
    );
    let mut both: Vec<String> = before.iter().chain(&after.features).cloned().collect();
    both.sort();
    let doubled = both.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(doubled, 0, "rows written twice across the restart");
    assert!(both == whole.features, "restart: {} rows vs {} in one run", both.len(), whole.features.len());
    assert_eq!(whole.features.len(), replay.features.len());
}

#[test]
fn undecodable_messages_are_dead_lettered_and_decisions_reach_a_topic() {
    let broker = Broker::get();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let input = broker.topic("mixed", 2);
    let sink = broker.topic("forecasts", 2);
    let dead = broker.topic("dead", 1);
    let producer: BaseProducer = broker.config().create().unwrap();
    let mut garbage = 0;
    let start = 1_767_225_600_000u64;
    for i in 0..3000u64 {
        let deployment = ["checkout", "cart"][(i % 2) as usize];
        let record = BinarySample {
            time: start + (i / 2) * 15_000,
            namespace: "shop".into(),
            deployment: deployment.into(),
            pod: format!("{deployment}-7d9f8-abcde").into(),
            metric: "cpu".into(),
            value: 1.0 + (i % 7) as f64,
        };
        let mut payload = record.to_bytes();
        if i % 500 == 7 {
            payload.truncate(payload.len() / 2);
            garbage += 1;
        }
        producer.send(BaseRecord::to(&input).key(deployment).payload(&payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let out = run(
        dir,
        "mixed",
        &[
            "--source",
            &broker.uri(&input),
            "--format",
            "bincode",
            "--from",
            "beginning",
            "--exit-when-idle",
            "2s",
            "--sink",
            &broker.uri(&sink),
            "--dead-letter",
            &broker.uri(&dead),
        ],
    );
    assert_eq!(out.summary["records_in"], 3000);
    assert_eq!(out.summary["rejected"]["malformed"], garbage);
    let letters = broker.read_all(&dead, garbage);
    assert_eq!(letters.len(), garbage, "dead letters");
    for (_, _, key, payload) in &letters {
        let letter: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(letter["reason"], "malformed");
        assert_eq!(letter["origin"]["source"], format!("kafka:{input}"));
        assert!(letter["origin"]["offset"].as_u64().is_some());
        assert_eq!(key, &format!("kafka:{input}/{}", letter["origin"]["partition"]));
    }
    let expected = usize::try_from(out.summary["decisions"].as_u64().unwrap()).unwrap();
    let decisions = broker.read_all(&sink, expected);
    assert!(!decisions.is_empty());
    assert_eq!(decisions.len(), expected, "the sink topic holds every decision, once");
    for (_, _, key, payload) in &decisions {
        let row: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert!(row["desired"].is_u64() && row["reason"].is_string(), "{row}");
        assert_eq!(key, &format!("{}/{}", row["namespace"].as_str().unwrap(), row["deployment"].as_str().unwrap()));
    }
    // One deployment's decisions stay in one partition, in order.
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for (partition, _, key, _) in &decisions {
        assert_eq!(*partition_of.entry(key.clone()).or_insert(*partition), *partition, "{key}");
    }
}

#[test]
fn the_embedded_source_reads_the_generator_through_the_kafka_code() {
    // No broker: librdkafka's mock cluster, in process.
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s.json");
    let args = ["--duration", "6h", "--deployments", "3", "--pods", "2", "--summary-json", &s.to_string_lossy()];
    run_ok(&[&["run", "--source", "kafka-embedded"][..], &args].concat());
    let embedded = summary(&s);
    assert_eq!(embedded["records_in"], 3 * 2 * 6 * 240, "{embedded}");
    assert!(embedded["windows_emitted"].as_u64().unwrap() > 100, "{embedded}");
}
