//! Oracle tests: the feature dataflow, run with several workers on seeded
//! random input, against a plain sequential computation of the same
//! features.
//!
//! Strategy. The input is a few series spread over a few source partitions,
//! each partition with its own pace, and out of order: some records within
//! the lateness (they must correct windows already emitted) and some beyond
//! it (they must be rejected as late). The reference below knows nothing of
//! panes, timely or differential: it judges lateness per partition, then
//! for every window lists the timestamps at which its content changes
//! after it is due, and aggregates the raw records visible at each. Rows
//! are compared as sorted lists: exact for counts, pods, times and
//! revisions, within 1e-9 (relative) for floating-point values, because the
//! reference sums in floating point and the dataflow in fixed point. The
//! dataflow's runs with 1 and 3 workers must also be byte-identical.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prescale_dataflows::event_time::{Arrival, EventTimeSettings, PartitionClock};
use prescale_dataflows::features::{self, FeatureRow, FeatureSettings, SlidingSpec, WindowCounters};
use prescale_dataflows::ingest::{self, Ingest};
use prescale_dataflows::record::{Sample, Series, SeriesKey, stable_hash};
use prescale_dataflows::time::{MINUTE, Millis, SECOND, day_of_week, hour_of_day};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::core::{Inspect, Probe};

const LATENESS: Millis = 30 * SECOND;
const TICK: Millis = SECOND;
const START: Millis = 1_767_225_600_000;

#[derive(Clone, Debug)]
struct Rec {
    series: usize,
    time: Millis,
    pod: u64,
    value: f64,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn settings() -> FeatureSettings {
    FeatureSettings {
        // The 30 s windows get no lags, as the job's reactive windows.
        tumbling: vec![30 * SECOND, MINUTE, 5 * MINUTE],
        sliding: vec![SlidingSpec { width: 10 * MINUTE, slide: MINUTE }],
        lags: vec![10 * MINUTE, 30 * MINUTE],
        lagged: vec![MINUTE, 5 * MINUTE],
        lateness: LATENESS,
    }
}

fn series(i: usize) -> Series {
    Series::new(SeriesKey { namespace: "ns".into(), deployment: format!("dep-{i}"), metric: "cpu".into() })
}

/// Records in arrival order per partition.
fn input(seed: u64, partitions: usize, per_partition: usize) -> Vec<Vec<Rec>> {
    let mut rng = Rng(seed);
    (0..partitions)
        .map(|_| {
            // Each partition at its own pace and offset.
            let pace = 1_000 + rng.below(3_000);
            let mut t = START + rng.below(120_000);
            (0..per_partition)
                .map(|_| {
                    t += rng.below(2 * pace);
                    let roll = rng.below(100);
                    let time = if roll < 8 {
                        t.saturating_sub(rng.below(LATENESS)) // within lateness
                    } else if roll < 11 {
                        t.saturating_sub(LATENESS + rng.below(5 * MINUTE)) // mostly late
                    } else {
                        t
                    };
                    Rec {
                        series: rng.below(4) as usize,
                        time,
                        pod: rng.below(6),
                        value: (rng.below(1_000_000) as f64) / 1000.0,
                    }
                })
                .collect()
        })
        .collect()
}

/// Runs the dataflow; returns every row as a JSON line, sorted.
fn run_dataflow(workers: usize, input: Arc<Vec<Vec<Rec>>>) -> (Vec<String>, u64) {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(Mutex::new(0u64));
    let (rows2, late2) = (Arc::clone(&rows), Arc::clone(&late));
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let settings = settings();
        let probe = ProbeHandle::new();
        let sink = Arc::clone(&rows2);
        let inputs = worker.dataflow::<Millis, _, _>(|scope| {
            let (inputs, partials, rejected) = ingest::inputs(&scope);
            features::features(partials, &settings, WindowCounters::default())
                .inspect(move |row: &FeatureRow| {
                    sink.lock().unwrap().push(serde_json::to_string(row).unwrap());
                })
                .probe_with(&probe);
            rejected.probe_with(&probe);
            inputs
        });
        let mut ingest = Ingest::new(inputs, settings.pane());
        let event_time = EventTimeSettings { lateness: LATENESS, tick: TICK, ..EventTimeSettings::default() };
        let owned: Vec<usize> = (0..input.len()).filter(|p| p % peers == index).collect();
        let mut clocks: Vec<PartitionClock> = owned.iter().map(|_| PartitionClock::new(event_time)).collect();
        let mut cursors = vec![0usize; owned.len()];
        let series: Vec<Series> = (0..4).map(series).collect();
        let mut late = 0;
        loop {
            let mut any = false;
            for (k, &p) in owned.iter().enumerate() {
                let records = &input[p];
                let end = (cursors[k] + 37).min(records.len());
                for r in &records[cursors[k]..end] {
                    any = true;
                    match clocks[k].observe(r.time) {
                        Arrival::OnTime(at) => ingest.push(
                            at,
                            Sample {
                                time: r.time,
                                series: series[r.series].clone(),
                                pod: stable_hash(&r.pod),
                                value: r.value,
                            },
                        ),
                        // `observe` judges lateness only: anything else is late.
                        _ => late += 1,
                    }
                }
                cursors[k] = end;
            }
            if !any {
                break;
            }
            let frontier = clocks.iter().map(|c| c.tick().unwrap_or(0)).min().unwrap_or(0);
            ingest.advance_to(frontier);
            worker.step();
        }
        ingest.close();
        while !probe.done() {
            worker.step();
        }
        *late2.lock().unwrap() += late;
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let mut rows = Arc::try_unwrap(rows).unwrap().into_inner().unwrap();
    rows.sort();
    let late = *late.lock().unwrap();
    (rows, late)
}

/// A row as (exact key, approximate values).
type Canon = (String, Vec<f64>);

fn canon_of_json(line: &str) -> Canon {
    let row: FeatureRow = serde_json::from_str(line).unwrap();
    match row {
        FeatureRow::Tumbling(r) => (
            format!(
                "T {} w{} {}..{} r{} n{} pods{} h{} d{}",
                r.series, r.width_s, r.start_ms, r.end_ms, r.revision, r.count, r.pods, r.hour_of_day, r.day_of_week
            ),
            vec![r.avg, r.max, r.min, r.sum],
        ),
        FeatureRow::Sliding(r) => (
            format!(
                "S {} w{} s{} {}..{} r{} n{} steps{}",
                r.series, r.width_s, r.slide_s, r.start_ms, r.end_ms, r.revision, r.count, r.steps
            ),
            vec![r.mean, r.stddev, r.slope_per_min],
        ),
        FeatureRow::Lag(r) => (format!("L {} w{} e{} lag{}", r.series, r.width_s, r.end_ms, r.lag_s), vec![r.value]),
    }
}

/// The sequential reference.
fn reference(input: &[Vec<Rec>]) -> (Vec<Canon>, u64) {
    // Lateness and timestamps, per partition, in arrival order.
    let mut accepted: Vec<(Millis, Rec)> = Vec::new();
    let mut late = 0;
    for records in input {
        let mut max_seen: Option<Millis> = None;
        for r in records {
            let watermark = max_seen.map(|m| m.saturating_sub(LATENESS));
            if watermark.is_some_and(|w| r.time < w) {
                late += 1;
                continue;
            }
            let m = max_seen.map_or(r.time, |m| m.max(r.time));
            max_seen = Some(m);
            let w = m.saturating_sub(LATENESS);
            accepted.push((w - w % TICK, r.clone()));
        }
    }
    let s = settings();
    let mut rows = Vec::new();
    // Per tumbling window: its revisions as (time, mean), for the lags.
    let mut timelines: BTreeMap<(usize, Millis, Millis), Vec<(Millis, f64)>> = BTreeMap::new();
    let shapes: Vec<(bool, Millis, Millis)> = s
        .tumbling
        .iter()
        .map(|&w| (true, w, w))
        .chain(s.sliding.iter().map(|sl| (false, sl.width, sl.slide)))
        .collect();
    for ser in 0..4 {
        let mine: Vec<&(Millis, Rec)> = accepted.iter().filter(|(_, r)| r.series == ser).collect();
        let ends: BTreeSet<Millis> = mine.iter().map(|(_, r)| r.time).collect();
        for &(tumbling, width, step) in &shapes {
            let mut window_ends = BTreeSet::new();
            for &t in &ends {
                let mut e = (t / step + 1) * step;
                while e <= t + width {
                    window_ends.insert(e);
                    e += step;
                }
            }
            for end in window_ends {
                let start = end - width;
                let inside: Vec<&(Millis, Rec)> =
                    mine.iter().copied().filter(|(_, r)| (start..end).contains(&r.time)).collect();
                let due = end - LATENESS;
                let mut times: BTreeSet<Millis> = inside.iter().map(|(at, _)| *at).filter(|&at| at > due).collect();
                if inside.iter().any(|(at, _)| *at <= due) {
                    times.insert(due);
                }
                for (revision, &p) in times.iter().enumerate() {
                    let seen: Vec<&Rec> = inside.iter().filter(|(at, _)| *at <= p).map(|(_, r)| r).collect();
                    let n = seen.len() as f64;
                    let sum: f64 = seen.iter().map(|r| r.value).sum();
                    let name = series(ser).to_string();
                    if tumbling {
                        let pods: BTreeSet<u64> = seen.iter().map(|r| r.pod).collect();
                        let max = seen.iter().map(|r| r.value).fold(f64::MIN, f64::max);
                        let min = seen.iter().map(|r| r.value).fold(f64::MAX, f64::min);
                        rows.push((
                            format!(
                                "T {name} w{} {start}..{end} r{revision} n{} pods{} h{} d{}",
                                width / 1000,
                                seen.len(),
                                pods.len(),
                                hour_of_day(start),
                                day_of_week(start)
                            ),
                            vec![sum / n, max, min, sum],
                        ));
                        timelines.entry((ser, width, end)).or_default().push((p, sum / n));
                    } else {
                        let mut points = Vec::new();
                        let mut a = start;
                        while a < end {
                            let in_step: Vec<f64> =
                                seen.iter().filter(|r| (a..a + step).contains(&r.time)).map(|r| r.value).collect();
                            if !in_step.is_empty() {
                                let x = ((a - start) as f64 + step as f64 / 2.0) / MINUTE as f64;
                                points.push((x, in_step.iter().sum::<f64>() / in_step.len() as f64));
                            }
                            a += step;
                        }
                        let k = points.len() as f64;
                        let (mut stddev, mut slope) = (0.0, 0.0);
                        if points.len() >= 2 {
                            let mx = points.iter().map(|p| p.0).sum::<f64>() / k;
                            let my = points.iter().map(|p| p.1).sum::<f64>() / k;
                            let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
                            let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
                            let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
                            stddev = (syy / (k - 1.0)).sqrt();
                            slope = sxy / sxx;
                        }
                        rows.push((
                            format!(
                                "S {name} w{} s{} {start}..{end} r{revision} n{} steps{}",
                                width / 1000,
                                step / 1000,
                                seen.len(),
                                points.len()
                            ),
                            vec![sum / n, stddev, slope],
                        ));
                    }
                }
            }
        }
    }
    // Lags: whenever the lagged mean visible to an existing window changes.
    for (&(ser, width, end), current) in &timelines {
        for &lag in &s.lags {
            if !s.lagged.contains(&width) || lag % width != 0 || end < lag {
                continue;
            }
            let Some(lagged) = timelines.get(&(ser, width, end - lag)) else { continue };
            let appear = current[0].0;
            let mut times: BTreeSet<Millis> = lagged.iter().map(|x| x.0).filter(|&t| t > appear).collect();
            times.insert(appear);
            let mut last: Option<u64> = None;
            for t in times {
                let Some(&(_, v)) = lagged.iter().rev().find(|x| x.0 <= t) else { continue };
                if last != Some(v.to_bits()) {
                    last = Some(v.to_bits());
                    rows.push((format!("L {} w{} e{end} lag{}", series(ser), width / 1000, lag / 1000), vec![v]));
                }
            }
        }
    }
    (rows, late)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn check(seed: u64) {
    let input = Arc::new(input(seed, 3, 4_000));
    let (one, late_one) = run_dataflow(1, Arc::clone(&input));
    let (three, late_three) = run_dataflow(3, Arc::clone(&input));
    if let Some(i) = (0..one.len().min(three.len())).find(|&i| one[i] != three[i]) {
        panic!("1 and 3 workers differ at row {i} (seed {seed}):\n{}\n{}", one[i], three[i]);
    }
    assert_eq!(one.len(), three.len(), "1 and 3 workers: row counts (seed {seed})");
    assert_eq!(late_one, late_three);

    let mut got: Vec<Canon> = one.iter().map(|l| canon_of_json(l)).collect();
    let (mut want, late) = reference(&input);
    assert_eq!(late_one, late, "late records (seed {seed})");
    assert!(late > 0, "the input must exercise lateness");
    got.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.partial_cmp(&b.1).unwrap()));
    want.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.partial_cmp(&b.1).unwrap()));
    let got_keys: Vec<&String> = got.iter().map(|c| &c.0).collect();
    let want_keys: Vec<&String> = want.iter().map(|c| &c.0).collect();
    for (g, w) in got_keys.iter().zip(&want_keys) {
        assert_eq!(g, w, "first differing row (seed {seed})");
    }
    assert_eq!(got_keys.len(), want_keys.len(), "row count (seed {seed})");
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.1.iter().zip(&w.1) {
            assert!(close(*a, *b), "{}: {:?} vs {:?} (seed {seed})", g.0, g.1, w.1);
        }
    }
    // The input exercised corrections and lags.
    assert!(got.iter().any(|c| c.0.contains(" r1 ")), "no corrections (seed {seed})");
    assert!(got.iter().any(|c| c.0.starts_with("L ")), "no lag rows (seed {seed})");
}

#[test]
fn features_match_the_sequential_reference() {
    for seed in [1, 2, 3] {
        check(seed);
    }
}
