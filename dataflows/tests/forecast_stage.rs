//! The forecast stage in the dataflow (2 workers) against the same
//! ensemble run sequentially over the same window values: one forecast per
//! series each time a 5-minute window closes, equal up to floating-point
//! rounding (the dataflow sums windows in fixed point).

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prescale_dataflows::event_time::{Arrival, EventTimeSettings, PartitionClock};
use prescale_dataflows::features::{self, FeatureSettings, WindowCounters};
use prescale_dataflows::forecast::stage::{self, ForecastRow, ForecastSettings, Signal};
use prescale_dataflows::forecast::{Ensemble, EnsembleConfig, Seasons};
use prescale_dataflows::ingest::{self, Ingest};
use prescale_dataflows::record::{Sample, Series, SeriesKey};
use prescale_dataflows::time::{HOUR, MINUTE, Millis};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::core::{Inspect, Probe};

const START: Millis = 1_767_571_200_000;
const DAYS: u64 = 3;

fn series(i: usize) -> Series {
    Series::new(SeriesKey { namespace: "ns".into(), deployment: format!("d{i}"), metric: "m".into() })
}

/// One sample a minute: a daily sine with a per-series level.
fn value(i: usize, minute: u64) -> f64 {
    let phase = (minute % 1440) as f64 / 1440.0 * std::f64::consts::TAU;
    (10.0 + i as f64) * (1.5 + phase.sin()) + (minute % 7) as f64 * 0.01
}

fn settings() -> (FeatureSettings, ForecastSettings) {
    let features = FeatureSettings { tumbling: vec![5 * MINUTE], sliding: vec![], lags: vec![], ..Default::default() };
    let forecast = ForecastSettings { signal: Signal::Avg, ..ForecastSettings::default() };
    (features, forecast)
}

fn run_dataflow() -> Vec<ForecastRow> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    timely::execute(timely::Config::process(2), move |worker| {
        let (features, forecast) = settings();
        let probe = ProbeHandle::new();
        let sink = Arc::clone(&sink);
        let inputs = worker.dataflow::<Millis, _, _>(|scope| {
            let (inputs, partials, rejected) = ingest::inputs(&scope);
            let rows = features::features(partials, &features, WindowCounters::default());
            stage::forecasts(rows, &forecast).inspect(move |r| sink.lock().unwrap().push(r.clone())).probe_with(&probe);
            rejected.probe_with(&probe);
            inputs
        });
        let mut ingest = Ingest::new(inputs, features.pane());
        let mine: Vec<usize> = (0..3).filter(|i| i % worker.peers() == worker.index()).collect();
        let mut clocks = vec![PartitionClock::new(EventTimeSettings::default()); mine.len()];
        for minute in 0..DAYS * 1440 {
            for (k, &i) in mine.iter().enumerate() {
                let time = START + minute * MINUTE;
                if let Arrival::OnTime(at) = clocks[k].observe(time) {
                    ingest.push(at, Sample { time, series: series(i), pod: 1, value: value(i, minute) });
                }
            }
            if minute % 60 == 59 {
                let frontier = clocks.iter().filter_map(PartitionClock::tick).min().unwrap_or(0);
                ingest.advance_to(frontier);
                worker.step();
            }
        }
        ingest.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

/// (deployment, origin) → (model, point, upper).
type Expected = BTreeMap<(String, Millis), (String, Vec<f64>, Vec<f64>)>;

fn reference() -> Expected {
    let (_, forecast) = settings();
    let seasons = Seasons::from_step(300).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..3 {
        let s = series(i);
        let mut config = EnsembleConfig::for_seasons(&seasons);
        config.refit_every = 12;
        config.score_horizon = 6;
        let mut ensemble = Ensemble::new(config).unwrap();
        ensemble.stagger_refits((s.route() % 12) as usize);
        for window in 0..DAYS * 288 {
            let mean = (0..5).map(|m| value(i, window * 5 + m)).sum::<f64>() / 5.0;
            ensemble.push(mean);
            let end = START + (window + 1) * 5 * MINUTE;
            if let Ok(f) = ensemble.forecast(6, forecast.level) {
                out.insert((format!("d{i}"), end), (f.model.to_string(), f.forecast.point, f.forecast.upper));
            }
        }
    }
    out
}

#[test]
fn dataflow_forecasts_equal_the_sequential_ensemble() {
    let got = run_dataflow();
    let want = reference();
    assert_eq!(got.len(), want.len(), "one forecast per series and closed window");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0);
    for row in &got {
        let (model, point, upper) = want.get(&(row.series.deployment.clone(), row.origin_ms)).unwrap();
        assert_eq!(&row.model, model, "model at {}", row.origin_ms);
        assert!(point.iter().zip(&row.point).all(|(a, b)| close(*a, *b)), "point at {}", row.origin_ms);
        assert!(upper.iter().zip(&row.upper).all(|(a, b)| close(*a, *b)), "upper at {}", row.origin_ms);
    }
    // After two days the seasonal models forecast the sine almost exactly.
    let late = got.iter().filter(|r| r.origin_ms > START + 2 * 24 * HOUR + HOUR);
    for r in late {
        let minute = (r.origin_ms - START) / MINUTE;
        let i: usize = r.series.deployment[1..].parse().unwrap();
        let actual = (0..5).map(|m| value(i, minute + m)).sum::<f64>() / 5.0;
        assert!(
            (r.point[0] - actual).abs() < 0.05 * actual,
            "{} at {}: {} vs {actual}",
            r.model,
            r.origin_ms,
            r.point[0]
        );
    }
}
