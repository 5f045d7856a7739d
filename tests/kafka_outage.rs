//! A Kafka broker outage mid-stream, against a real broker of this test's
//! own (`tests/harness/kafka.sh`, never the shared `KAFKA_BOOTSTRAP` one:
//! it is stopped and started again here, on the same data and port).
//!
//! Strategy: a reference job reads a real trace from one topic with no
//! outage. A second job reads the same trace from another topic while the
//! broker goes down after the first half was consumed and comes back, and
//! the second half is produced only then. The second job must keep running
//! through the outage (its `--exit-when-idle` is far shorter than the
//! outage), back off (little CPU, few log lines), make no decision while it
//! sees no data, and end with exactly the reference's feature rows,
//! forecasts, decisions and counts: nothing lost, nothing doubled, no
//! record judged late because of the silence. After the restart one
//! series' second half comes a moment before the others': partitions that
//! were silent only because the broker was down must not be taken for
//! idle, or that series would move the frontier past the others' records.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::broker::Broker;
use common::{prescale, run_ok, sorted_lines, summary, trace};

/// How long the broker stays down: longer than the job's idle timeouts.
const OUTAGE: Duration = Duration::from_secs(12);

/// The job's `--exit-when-idle` and `--idle-timeout`: both shorter than the
/// outage, so an outage taken for idleness ends the job or judges records
/// late; the idle timeout is longer than the time the second half takes to
/// arrive once the broker is back.
const JOB_ARGS: [&str; 8] =
    ["--format", "bincode", "--from", "beginning", "--exit-when-idle", "4s", "--idle-timeout", "8s"];

/// The job's librdkafka properties: reconnect soon after the broker is
/// back, so that the first series' records reach the job before the
/// others' are produced.
const JOB_CONFIG: &str = "[kafka]\nproperties = { \"reconnect.backoff.max.ms\" = \"200\" }\n";

/// The parts of the trace, in the order they are produced.
struct Parts {
    /// Every series up to the middle of the fortnight.
    first: PathBuf,
    /// One series after it...
    second_one: PathBuf,
    /// ...and the two others.
    second_rest: PathBuf,
    records: usize,
    /// The split's event time in ms.
    split_ms: u64,
}

/// Three NAB series over the same fortnight (5-minute CPU utilisation), in
/// event-time order, split at the middle of that fortnight; the second half
/// of the first series apart from the others'. Each series is its own
/// deployment, keyed to its own partition of three.
fn parts(dir: &Path) -> Parts {
    let text = std::fs::read_to_string(trace("nab")).unwrap();
    let series = [
        "realAWSCloudwatch/ec2_cpu_utilization_24ae8d",
        "realAWSCloudwatch/ec2_cpu_utilization_53ea38",
        "realAWSCloudwatch/rds_cpu_utilization_cc0c53",
    ];
    let mut rows: Vec<(u64, &str)> = text
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(1).is_some_and(|s| series.contains(&s)))
        .map(|l| (l.split(',').next().unwrap().parse().unwrap(), l))
        .collect();
    rows.sort_by_key(|&(t, _)| t);
    assert!(rows.len() > 10_000, "the NAB series changed: {} rows", rows.len());
    let split = rows[rows.len() / 2].0;
    let write = |name: &str, part: &[(u64, &str)]| {
        let path = dir.join(name);
        let body: Vec<&str> = part.iter().map(|&(_, l)| l).collect();
        std::fs::write(&path, format!("timestamp,series,value\n{}\n", body.join("\n"))).unwrap();
        path
    };
    let cut = rows.partition_point(|&(t, _)| t < split);
    type Rows<'a> = Vec<(u64, &'a str)>;
    let (one, rest): (Rows, Rows) = rows[cut..].iter().partition(|(_, l)| l.split(',').nth(1) == Some(series[0]));
    Parts {
        first: write("first.csv", &rows[..cut]),
        second_one: write("second-one.csv", &one),
        second_rest: write("second-rest.csv", &rest),
        records: rows.len(),
        split_ms: split * 1000,
    }
}

fn produce(broker: &Broker, topic: &str, trace: &Path) -> u64 {
    let args = ["produce", "--brokers", &broker.bootstrap, "--topic", topic, "--format", "bincode", "--trace"];
    let out = run_ok(&[&args[..], &[&trace.display().to_string()]].concat());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The output files of one run.
struct Files {
    features: PathBuf,
    forecasts: PathBuf,
    decisions: PathBuf,
    summary: PathBuf,
}

impl Files {
    fn new(dir: &Path, name: &str) -> Files {
        let f = |what: &str| dir.join(format!("{name}.{what}"));
        Files {
            features: f("features.jsonl"),
            forecasts: f("forecasts.jsonl"),
            decisions: f("decisions.jsonl"),
            summary: f("summary.json"),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in
            [("--features", &self.features), ("--forecasts", &self.forecasts), ("--summary-json", &self.summary)]
        {
            args.push(flag.to_owned());
            args.push(path.display().to_string());
        }
        args.push("--sink".to_owned());
        args.push(format!("jsonl:{}", self.decisions.display()));
        args
    }
}

fn job(broker: &Broker, topic: &str, group: &str, files: &Files, stderr: &Path) -> Child {
    let config = stderr.with_extension("toml");
    std::fs::write(&config, JOB_CONFIG).unwrap();
    prescale()
        .args(["run", "--config", &config.display().to_string()])
        .args(["--source", &broker.uri(topic), "--group", group])
        .args(JOB_ARGS)
        .args(files.args())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for `child` to end, at most `limit`; kills it and fails otherwise.
fn wait(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of a file (0 when it does not exist yet); a line being written
/// counts once complete.
fn line_count(path: &Path) -> usize {
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        f.read_to_end(&mut text).unwrap();
    }
    text.iter().filter(|&&b| b == b'\n').count()
}

/// The latest window end among the feature rows written so far.
fn latest_window_end(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|row| row["end_ms"].as_u64())
        .max()
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // In clock ticks: USER_HZ, 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[test]
fn a_broker_outage_mid_stream_neither_ends_the_job_nor_loses_or_doubles_a_record() {
    let broker = Broker::private();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let Parts { first, second_one, second_rest, records, split_ms } = parts(dir);

    // The reference: the whole trace, no outage.
    let topic = broker.topic("reference", 3);
    let produced: u64 = [&first, &second_one, &second_rest].iter().map(|p| produce(&broker, &topic, p)).sum();
    assert_eq!(produced, records as u64);
    let reference = Files::new(dir, "reference");
    let mut child = job(&broker, &topic, "reference", &reference, &dir.join("reference.stderr"));
    let status = wait(&mut child, Duration::from_secs(60), "the reference job");
    let stderr = std::fs::read_to_string(dir.join("reference.stderr")).unwrap();
    assert!(status.success(), "the reference job failed: {stderr}");

    // The outage: the first half, consumed; the broker down; then back, and
    // the second half.
    let topic = broker.topic("outage", 3);
    let first_count = produce(&broker, &topic, &first);
    let outage = Files::new(dir, "outage");
    let log = dir.join("outage.stderr");
    let mut child = job(&broker, &topic, "outage", &outage, &log);
    // Consumed: rows of windows up to an hour before the split are written
    // (the frontier trails the last record by the lateness and the window).
    let deadline = Instant::now() + Duration::from_secs(60);
    while latest_window_end(&outage.features) + 3_600_000 < split_ms {
        assert!(child.try_wait().unwrap().is_none(), "the job ended before the outage");
        assert!(Instant::now() < deadline, "the job did not consume the first half within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopping = Instant::now();
    broker.stop_broker();
    let down = Instant::now();
    let (cpu_before, log_before) = (cpu_time(child.id()), line_count(&log));
    // Whatever was in flight when the broker stopped has been processed
    // within a second or two; from then on nothing may be decided.
    let mut decisions_in_outage = None;
    while stopping.elapsed() < OUTAGE {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the job ended during the outage ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        if decisions_in_outage.is_none() && stopping.elapsed() > Duration::from_secs(3) {
            decisions_in_outage = Some(line_count(&outage.decisions));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cpu, lines) = (cpu_time(child.id()) - cpu_before, line_count(&log) - log_before);
    let decided_in_outage = line_count(&outage.decisions) - decisions_in_outage.unwrap();
    let outage_wall = down.elapsed();
    broker.start_broker();
    let back = Instant::now();
    // One series first, and the others a moment later (well within the idle
    // timeout): partitions taken for idle because of the outage would let
    // the first series move the frontier past the others' records. The
    // pause gives that failure its chance; nothing can be polled for, as
    // a correct job shows nothing until the others arrive.
    let mut second_count = produce(&broker, &topic, &second_one);
    std::thread::sleep(Duration::from_millis(1500));
    second_count += produce(&broker, &topic, &second_rest);
    assert_eq!(first_count + second_count, records as u64);
    let status = wait(&mut child, Duration::from_secs(60), "the job after the outage");
    let ended = back.elapsed();
    let stderr = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "outage of {outage_wall:.1?}: {cpu:?} of CPU, {lines} log lines, {decided_in_outage} decisions; \
         the job ended {ended:.1?} after the broker was back\n--- its stderr:\n{stderr}"
    );
    assert!(status.success(), "the job failed after the outage: {stderr}");

    // It backed off: no hot loop, no log flood, and it said what happened.
    assert!(cpu < outage_wall / 4, "{cpu:?} of CPU during an outage of {outage_wall:?}: a hot loop?");
    assert!(lines <= 10, "{lines} log lines during the outage:\n{stderr}");
    assert!(stderr.contains("broker unreachable; retrying"), "the outage is not reported:\n{stderr}");
    assert!(stderr.contains(" again ") && stderr.contains("client_errors="), "the recovery is not reported:\n{stderr}");
    // No decision from a stale view: nothing decided while no data came.
    assert_eq!(decided_in_outage, 0, "decisions made while the broker was down");

    // Every record, once: the same outputs as the reference.
    let (got, want) = (summary(&outage.summary), summary(&reference.summary));
    assert_eq!(got["records_in"], records as u64, "{got}");
    for field in ["records_in", "records_used", "rejected", "windows_emitted", "corrections", "lag_rows", "decisions"] {
        assert_eq!(got[field], want[field], "{field}: {got} vs {want}");
    }
    for (what, a, b) in [
        ("feature rows", &outage.features, &reference.features),
        ("forecasts", &outage.forecasts, &reference.forecasts),
        ("decisions", &outage.decisions, &reference.decisions),
    ] {
        let (a, b) = (sorted_lines(a), sorted_lines(b));
        assert!(b.len() > 100, "too few {what} to compare: {}", b.len());
        let doubled = a.windows(2).filter(|w| w[0] == w[1]).count();
        assert_eq!(doubled, b.windows(2).filter(|w| w[0] == w[1]).count(), "{what} written twice");
        assert!(a == b, "{what} differ from the run without an outage: {} vs {}", a.len(), b.len());
    }
}
