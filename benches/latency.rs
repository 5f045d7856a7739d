//! `cargo bench --bench latency`: how long after a window closes its
//! decisions leave the dataflow, with the generator at a fixed rate.
//!
//! The workload is the built-in generator (default 100 deployments × 10
//! pods, one sample per pod every 15 s of event time) paced at a fixed
//! number of records per second of wall time (default 100,000, split over
//! the workers), through the job's stages: ingest, windows and lags,
//! forecasts, decisions. A window ending at `e` closes when the input
//! frontier of every worker reaches `e` (the job's
//! [`CloseClock`](prescale::metrics::latency::CloseClock) records when);
//! each decision is timed from the close of its window to the moment it
//! leaves the decide operator, into an hdrhistogram (microseconds) per
//! worker, merged at the end. Windows that close only because the input
//! ends (the last of each width, all flushed together when the frontier
//! jumps to the end of time, which a stream that goes on never does) are
//! timed apart and reported on their own line, not in the percentiles.
//! The pacing loop is the job's own
//! [`Feed`](prescale::source::Feed): it steps the dataflow between
//! batches of 10 ms of records, and keeps the input at most 2 minutes of
//! event time ahead of the outputs.
//!
//! It is a plain program (`harness = false`) rather than a criterion
//! group: criterion times iterations of a routine, whereas this measures a
//! distribution inside one long run. It makes several runs and prints each
//! run's percentiles and their medians; on a shared machine compare
//! medians and ratios, not one run's absolute figures.
//!
//! Environment (all optional): `LATENCY_RATE` records/s (100000),
//! `LATENCY_WORKERS` (2), `LATENCY_SECONDS` per run (15), `LATENCY_RUNS`
//! (5), `LATENCY_DEPLOYMENTS` (100), `LATENCY_PODS` (10).

#![allow(clippy::unwrap_used)] // A benchmark fails loudly on any unexpected error.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prescale::config::{JobConfig, Settings};
use prescale::metrics::latency::CloseClock;
use prescale::source::Feed;
use prescale::source::generator::{Deployment, GeneratorSettings};
use prescale_dataflows::decide::{self, SpecUpdate};
use prescale_dataflows::event_time::{Arrival, PartitionClock};
use prescale_dataflows::features::{self, WindowCounters};
use prescale_dataflows::forecast::stage;
use prescale_dataflows::ingest::{self, Ingest};
use prescale_dataflows::record::Interner;
use prescale_dataflows::time::{MINUTE, Millis};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

/// Wall time between two batches of records.
const TICK: Duration = Duration::from_millis(10);

/// 1 µs to 60 s at 3 significant digits; longer is clamped to 60 s.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Params {
    rate: u64,
    workers: usize,
    seconds: u64,
    deployments: usize,
    pods: usize,
}

/// What one run measured.
struct Run {
    /// Decisions for windows closed while the input ran.
    latency_us: Histogram<u64>,
    /// Decisions for windows closed by the end of the input.
    at_end_us: Histogram<u64>,
    records: u64,
    decisions: u64,
    elapsed: Duration,
}

fn run(p: &Params) -> Run {
    let mut config = JobConfig::default();
    config.generator.deployments = Some(p.deployments);
    config.generator.pods = Some(p.pods);
    let settings = Arc::new(Settings::from_config(&config).unwrap());
    let prescale::config::SourceSettings::Generator(generator) = settings.source.clone() else {
        unreachable!("the default source is the generator")
    };
    // Event time per wall millisecond that gives the rate: the generator
    // makes `deployments × pods` samples per scrape interval.
    let samples_per_event_ms = (p.deployments * p.pods) as f64 / generator.scrape_interval as f64;
    let event_per_wall_ms = p.rate as f64 / 1000.0 / samples_per_event_ms;
    let span = (p.seconds as f64 * 1000.0 * event_per_wall_ms) as Millis;
    let generator = GeneratorSettings { duration: span, ..generator };
    let closes = Arc::new(CloseClock::default());
    closes.start(p.workers);
    let started = Instant::now();
    let shared = Arc::clone(&settings);
    let guards = timely::execute(timely::Config::process(p.workers), move |worker| {
        let settings = &*shared;
        let local = worker.index();
        let latency = Rc::new(std::cell::RefCell::new(histogram()));
        let at_end = Rc::new(std::cell::RefCell::new(histogram()));
        let probe = ProbeHandle::new();
        let mut specs = InputHandle::<Millis, CapacityContainerBuilder<Vec<SpecUpdate>>>::new();
        let counters = WindowCounters::default();
        let inputs = worker.dataflow::<Millis, _, _>(|scope| {
            let (inputs, partials, rejected) = ingest::inputs(&scope);
            let rows = features::features(partials, &settings.features, counters.clone());
            let forecasts = stage::forecasts(rows.clone(), &settings.forecast);
            let readings = decide::readings(rows.clone(), settings.decide.reactive_width, settings.forecast.signal);
            let clock = Arc::clone(&closes);
            let timed = Rc::clone(&latency);
            let timed_at_end = Rc::clone(&at_end);
            let flags = prescale_dataflows::quality::flags(rejected.clone());
            decide::decisions(forecasts, readings, specs.to_stream(scope), flags, &settings.decide)
                .inspect(move |d| {
                    if let Some(closed) = clock.closed_at(d.time_ms) {
                        let us = Instant::now().saturating_duration_since(closed).as_micros() as u64;
                        let into = if clock.closed_by_end_of_input(d.time_ms) { &timed_at_end } else { &timed };
                        into.borrow_mut().saturating_record(us);
                    }
                })
                .probe_with(&probe);
            rows.probe_with(&probe);
            rejected.probe_with(&probe);
            inputs
        });
        specs.close();
        let mut ingest = Ingest::new(inputs, settings.features.pane());
        let clock = Arc::clone(&closes);
        let mut on_advance = move |f: Option<Millis>| clock.advanced(local, f.unwrap_or(Millis::MAX));
        let mut feed = Feed::new(worker, &mut ingest, &probe, 2 * MINUTE).on_advance(&mut on_advance);
        let records = drive(&mut feed, &generator, settings, event_per_wall_ms, started);
        feed.finish();
        while !probe.done() {
            worker.step_or_park(Some(prescale::source::PARK));
        }
        let histograms = (latency.borrow().clone(), at_end.borrow().clone());
        (histograms, records)
    })
    .unwrap();
    let (mut latency_us, mut at_end_us) = (histogram(), histogram());
    let mut records = 0;
    for result in guards.join() {
        let ((h, e), n) = result.unwrap();
        latency_us.add(&h).unwrap();
        at_end_us.add(&e).unwrap();
        records += n;
    }
    let elapsed = started.elapsed();
    let decisions = latency_us.len();
    Run { latency_us, at_end_us, records, decisions, elapsed }
}

/// Feeds this worker's deployments, paced: every [`TICK`] the event time
/// that the rate allows so far. Returns the records fed.
fn drive(
    feed: &mut Feed<'_>,
    generator: &GeneratorSettings,
    settings: &Settings,
    event_per_wall_ms: f64,
    started: Instant,
) -> u64 {
    let (index, peers) = (feed.worker.index(), feed.worker.peers());
    let mut interner = Interner::default();
    let mut owned: Vec<(Deployment, PartitionClock)> = (index..generator.deployments)
        .step_by(peers)
        .map(|i| (Deployment::new(generator, i, &mut interner), PartitionClock::new(settings.event_time)))
        .collect();
    let tick = settings.event_time.tick;
    let floor = |t: Millis| t - t % tick;
    let mut records = 0u64;
    let mut batch = Vec::new();
    let end = generator.end();
    let mut next = started;
    loop {
        let wall_ms = next.duration_since(started).as_secs_f64() * 1000.0;
        let until = (generator.start + (wall_ms * event_per_wall_ms) as Millis).min(end);
        for (deployment, clock) in &mut owned {
            deployment.generate(generator, until, &mut |s, _| batch.push(s));
            for sample in batch.drain(..) {
                records += 1;
                // What is not used the job would dead-letter.
                if let Arrival::OnTime(at) = clock.admit(&sample) {
                    feed.ingest.push(at, sample);
                }
            }
        }
        let frontier = owned.iter().filter_map(|(_, c)| c.tick()).min();
        feed.advance_to(frontier.unwrap_or_else(|| floor(until.saturating_sub(settings.event_time.lateness))));
        if until >= end {
            break;
        }
        next += TICK;
        feed.wait_until(next);
    }
    // Samples held back (out of order) arrive after the end.
    for (deployment, clock) in &mut owned {
        deployment.drain(&mut |s, _| batch.push(s));
        for sample in batch.drain(..) {
            records += 1;
            if let Arrival::OnTime(at) = clock.observe(sample.time) {
                feed.ingest.push(at, sample);
            }
        }
    }
    records
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    let p = Params {
        rate: env("LATENCY_RATE", 100_000),
        workers: env("LATENCY_WORKERS", 2) as usize,
        seconds: env("LATENCY_SECONDS", 15),
        deployments: env("LATENCY_DEPLOYMENTS", 100) as usize,
        pods: env("LATENCY_PODS", 10) as usize,
    };
    let runs = env("LATENCY_RUNS", 5).max(1);
    println!(
        "latency from window close to decision: {} records/s on {} workers, {} deployments x {} pods, {} s per run",
        p.rate, p.workers, p.deployments, p.pods, p.seconds
    );
    println!("run  records/s  decisions     p50 ms     p90 ms     p99 ms     max ms");
    let mut rows = Vec::new();
    let mut at_end = Vec::new();
    for i in 0..runs {
        let r = run(&p);
        let q = |x: f64| r.latency_us.value_at_quantile(x) as f64 / 1000.0;
        let row =
            [r.records as f64 / r.elapsed.as_secs_f64(), q(0.5), q(0.9), q(0.99), r.latency_us.max() as f64 / 1000.0];
        println!(
            "{:>3} {:>10.0} {:>10} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            i + 1,
            row[0],
            r.decisions,
            row[1],
            row[2],
            row[3],
            row[4]
        );
        rows.push(row);
        at_end.push((r.at_end_us.len(), r.at_end_us.max() as f64 / 1000.0));
    }
    let col = |j: usize| median(rows.iter().map(|r| r[j]).collect());
    println!("median {:>7.0} {:>10} {:>10.2} {:>10.2} {:>10.2} {:>10.2}", col(0), "", col(1), col(2), col(3), col(4));
    let counts: Vec<String> = at_end.iter().map(|(n, _)| n.to_string()).collect();
    println!(
        "windows closed by the end of the input, not above: {} decisions per run, median max {:.2} ms",
        counts.join("/"),
        median(at_end.iter().map(|&(_, m)| m).collect())
    );
}
