//! `cargo bench --bench features`: throughput of the feature dataflow.
//!
//! The workload is the built-in generator with 1,000 deployments × 10 pods
//! (one sample per pod every 15 s), 90 minutes of event time, generated
//! before the measurement. Three cases, each with 1 and 2 workers:
//! - `samples`: decoded samples through ingest, windows and lags, with
//!   the default feature settings;
//! - `samples-1m-readings`: the same with one-minute windows for the
//!   reactive floor (`tumbling = ["1m", "5m"]`, lags on both), the default
//!   before 15-second readings: what the 15-second windows cost;
//! - `adapter-json`: prometheus-kafka-adapter JSON lines decoded, then the
//!   default dataflow.
//!
//! Throughput is in samples per second for the whole job; divide by the
//! workers for the per-worker figure the README reports.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prescale::source::generator::{Deployment, GeneratorFormat, GeneratorSettings};
use prescale_dataflows::decode::{DecodeOptions, Decoder, Format};
use prescale_dataflows::event_time::{Arrival, EventTimeSettings, PartitionClock};
use prescale_dataflows::features::{self, FeatureSettings, WindowCounters};
use prescale_dataflows::ingest::{self, Ingest};
use prescale_dataflows::record::{Interner, Sample};
use prescale_dataflows::time::{MINUTE, Millis, SECOND};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::core::Probe;

const DEPLOYMENTS: usize = 1_000;
const PODS: usize = 10;
const SPAN: Millis = 90 * MINUTE;

fn settings() -> GeneratorSettings {
    GeneratorSettings {
        deployments: DEPLOYMENTS,
        pods: PODS,
        scrape_interval: 15 * SECOND,
        duration: SPAN,
        start: 1_767_571_200_000,
        seed: 42,
        out_of_order: 0.005,
        late: 0.0005,
        format: GeneratorFormat::Samples,
    }
}

/// One partition's input: a deployment's samples (or lines) in arrival order.
enum Partition {
    Samples(Vec<Sample>),
    Lines(Vec<String>),
}

/// Every deployment's input, generated once.
fn workload(json: bool) -> Arc<Vec<Partition>> {
    let s = settings();
    let mut interner = Interner::default();
    let parts = (0..DEPLOYMENTS)
        .map(|i| {
            let mut d = Deployment::new(&s, i, &mut interner);
            let mut samples = Vec::new();
            d.generate(&s, s.end(), &mut |x, pod| samples.push((x, pod)));
            d.drain(&mut |x, pod| samples.push((x, pod)));
            if json {
                let mut line = String::new();
                Partition::Lines(
                    samples
                        .iter()
                        .map(|(x, pod)| {
                            d.adapter_json(x, *pod, &mut line);
                            line.clone()
                        })
                        .collect(),
                )
            } else {
                Partition::Samples(samples.into_iter().map(|(x, _)| x).collect())
            }
        })
        .collect();
    Arc::new(parts)
}

fn count(parts: &[Partition]) -> u64 {
    parts
        .iter()
        .map(|p| match p {
            Partition::Samples(v) => v.len(),
            Partition::Lines(v) => v.len(),
        })
        .sum::<usize>() as u64
}

/// Runs the dataflow over the workload with `workers` threads.
fn run(parts: &Arc<Vec<Partition>>, workers: usize, features: &FeatureSettings) {
    let parts = Arc::clone(parts);
    let features = features.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let features = features.clone();
        let event_time = EventTimeSettings::default();
        let probe = ProbeHandle::new();
        let inputs = worker.dataflow::<Millis, _, _>(|scope| {
            let (inputs, partials, rejected) = ingest::inputs(&scope);
            features::features(partials, &features, WindowCounters::default()).probe_with(&probe);
            rejected.probe_with(&probe);
            inputs
        });
        let mut ingest = Ingest::new(inputs, features.pane());
        let owned: Vec<&Partition> = parts.iter().skip(worker.index()).step_by(worker.peers()).collect();
        let mut clocks = vec![PartitionClock::new(event_time); owned.len()];
        let mut cursors = vec![0usize; owned.len()];
        let mut decoder = Decoder::new(Format::AdapterJson, DecodeOptions::default(), "bench");
        // One minute of event time per step, as the generator source does at this size.
        let per_step = (MINUTE / (15 * SECOND)) as usize * PODS;
        loop {
            let mut any = false;
            for (k, part) in owned.iter().enumerate() {
                let clock = &mut clocks[k];
                let mut push = |sample: Sample| {
                    if let Arrival::OnTime(at) = clock.admit(&sample) {
                        ingest.push(at, sample)
                    }
                };
                let from = cursors[k];
                match part {
                    Partition::Samples(v) => {
                        let to = (from + per_step).min(v.len());
                        v[from..to].iter().cloned().for_each(&mut push);
                        cursors[k] = to;
                    }
                    Partition::Lines(v) => {
                        let to = (from + per_step).min(v.len());
                        for (i, line) in v[from..to].iter().enumerate() {
                            decoder.decode(line, k as u32, (from + i) as u64, &mut |r| {
                                if let Ok(sample) = r {
                                    push(sample)
                                }
                            });
                        }
                        cursors[k] = to;
                    }
                }
                any |= cursors[k] > from;
            }
            if !any {
                break;
            }
            let frontier = clocks.iter().filter_map(PartitionClock::tick).min().unwrap_or(0);
            ingest.advance_to(frontier);
            while probe.less_than(&frontier.saturating_sub(2 * MINUTE)) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
        }
        ingest.close();
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|r| r.expect("worker ran"));
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("features");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(2));
    let one_minute_readings = FeatureSettings {
        tumbling: vec![MINUTE, 5 * MINUTE],
        lagged: vec![MINUTE, 5 * MINUTE],
        ..FeatureSettings::default()
    };
    let cases = [
        ("samples", false, FeatureSettings::default()),
        ("samples-1m-readings", false, one_minute_readings),
        ("adapter-json", true, FeatureSettings::default()),
    ];
    for (name, json, features) in cases {
        let parts = workload(json);
        group.throughput(Throughput::Elements(count(&parts)));
        for workers in [1, 2] {
            group.bench_with_input(BenchmarkId::new(name, format!("{workers}w")), &workers, |b, &w| {
                b.iter(|| run(&parts, w, &features))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
