//! The decide stage in the dataflow (1 and 3 workers) against the same
//! scalers driven sequentially: decisions on forecasts, on short-window
//! readings, on staleness, with scalers created, edited and deleted
//! mid-stream and a default scaler for the rest.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prescale_dataflows::decide::stage::DEFAULT_SCALER;
use prescale_dataflows::decide::{
    self, DecideSettings, Decision, FallbackReason, LoadReading, Scaler, ScalerSpec, SpecUpdate,
};
use prescale_dataflows::forecast::stage::ForecastRow;
use prescale_dataflows::quality::{Flag, Issue};
use prescale_dataflows::record::{Series, SeriesKey};
use prescale_dataflows::time::{MINUTE, Millis, format_datetime};
use timely::dataflow::InputHandle;
use timely::dataflow::operators::core::{Inspect, Probe};

const STEP: Millis = 5 * MINUTE;
const STEPS: u64 = 40;

fn key(i: usize) -> SeriesKey {
    SeriesKey { namespace: "shop".into(), deployment: format!("d{i}"), metric: "rps".into() }
}

/// Series 0 stops after step 20 (stale); series 1 jumps 1000× at step 25;
/// the rest follow a slow wave.
fn load(i: usize, step: u64) -> Option<f64> {
    let base = 40.0 + 10.0 * i as f64 + 30.0 * ((step as f64) / 6.0).sin();
    match i {
        0 if step > 20 => None,
        1 if step >= 25 => Some(base * 1000.0),
        _ => Some(base),
    }
}

fn forecast(i: usize, step: u64) -> Option<ForecastRow> {
    let actual = load(i, step)?;
    let next = load(i, step + 1).unwrap_or(actual);
    Some(ForecastRow {
        series: key(i),
        origin_ms: step * STEP,
        step_s: STEP / 1000,
        model: "holt-winters".into(),
        recent_error: Some(if i == 4 && step > 30 { 50.0 } else { 1.0 }),
        level: 0.9,
        actual,
        point: vec![next; 6],
        lower: vec![next * 0.9; 6],
        upper: vec![next * 1.1 + 3.0 * (step % 4) as f64; 6],
        note: None,
    })
}

/// One reading a minute between forecasts.
fn reading(i: usize, step: u64, minute: u64) -> Option<LoadReading> {
    let l = load(i, step)?;
    Some(LoadReading {
        series: key(i),
        end_ms: step * STEP + minute * MINUTE,
        load: l * (1.0 + 0.3 * (minute == 2) as u8 as f64),
        // Series 3's metrics lose most of their pods for a minute.
        pods: if i == 3 && step == 32 && minute == 3 { 1 } else { 10 },
    })
}

fn spec(target: f64) -> ScalerSpec {
    ScalerSpec { min_replicas: 2, max_replicas: 60, target_per_replica: target, ..ScalerSpec::default() }
}

/// Spec updates by step: scaler "web" on series 2 until step 30, "api"
/// on series 3 from step 10 (edited at step 20), "batch" on series 4 from
/// step 5, moved to series 5 at step 35 (retracted from 4 and added to
/// 5, as the watcher sends a move); the default elsewhere.
fn updates() -> Vec<(u64, SpecUpdate)> {
    let up = |step: u64, scaler: &str, i, spec| {
        (step, SpecUpdate { time_ms: step * STEP, scaler: scaler.into(), series: key(i), spec })
    };
    vec![
        up(0, "web", 2, Some(spec(8.0))),
        up(10, "api", 3, Some(spec(6.0))),
        up(20, "api", 3, Some(spec(4.0))),
        up(30, "web", 2, None),
        up(5, "batch", 4, Some(spec(7.0))),
        up(35, "batch", 4, None),
        up(35, "batch", 5, Some(spec(7.0))),
    ]
}

/// The data-quality gate flags series 5's timestamps at step 15.
fn flags(i: usize, step: u64) -> Option<Flag> {
    (i == 5 && step == 15).then(|| Flag { series: key(i), issue: Issue::TimestampUnit, at_ms: step * STEP })
}

fn settings() -> DecideSettings {
    DecideSettings { default: Some(spec(10.0)), reactive_width: Some(MINUTE) }
}

fn run_dataflow(workers: usize) -> Vec<String> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    timely::execute(timely::Config::process(workers), move |worker| {
        let sink = Arc::clone(&sink);
        let mut forecasts = InputHandle::new();
        let mut readings = InputHandle::new();
        let mut specs = InputHandle::new();
        let mut flag_input = InputHandle::new();
        let probe = worker.dataflow::<Millis, _, _>(|scope| {
            let s = settings();
            let (f, r, u, q) = (
                forecasts.to_stream(scope),
                readings.to_stream(scope),
                specs.to_stream(scope),
                flag_input.to_stream(scope),
            );
            decide::decisions(f, r, u, q, &s)
                .inspect(move |d: &Decision| sink.lock().unwrap().push(serde_json::to_string(d).unwrap()))
                .probe()
                .0
        });
        let (index, peers) = (worker.index() as u64, worker.peers() as u64);
        let mine = |i: usize| Series::new(key(i)).route() % peers == index;
        for step in 0..STEPS {
            let t = step * STEP;
            for x in [&mut forecasts as &mut dyn Advance, &mut readings, &mut specs, &mut flag_input] {
                x.advance(t);
            }
            for (_, u) in updates().into_iter().filter(|(s, _)| *s == step) {
                if index == 0 {
                    specs.send(u);
                }
            }
            // Flags come from whichever worker rejected the record.
            for f in (0..6).filter_map(|i| flags(i, step)).filter(|_| index == peers - 1) {
                flag_input.send(f);
            }
            for i in (0..6).filter(|&i| mine(i)) {
                if let Some(row) = forecast(i, step) {
                    forecasts.send(row);
                }
            }
            for minute in 1..5 {
                readings.advance_to(t + minute * MINUTE);
                for i in (0..6).filter(|&i| mine(i)) {
                    if let Some(r) = reading(i, step, minute) {
                        readings.send(r);
                    }
                }
            }
            // Let the dataflow catch up, as a live stream does: staleness is
            // noticed as time passes, not all at once at the end.
            while probe.less_than(&t) {
                worker.step();
            }
        }
        // Keep time moving past the last step, as a live stream would, so
        // that series 0's silence is noticed.
        for x in [&mut forecasts as &mut dyn Advance, &mut readings, &mut specs, &mut flag_input] {
            x.advance(STEPS * STEP);
        }
        drop((forecasts, readings, specs, flag_input));
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    let mut lines = out.lock().unwrap().clone();
    lines.sort();
    lines
}

/// Advances any input handle.
trait Advance {
    fn advance(&mut self, t: Millis);
}
impl<D: Clone + 'static> Advance for InputHandle<Millis, timely::container::CapacityContainerBuilder<Vec<D>>> {
    fn advance(&mut self, t: Millis) {
        self.advance_to(t);
    }
}

/// The same, one scaler at a time.
fn run_sequentially() -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..6 {
        let mut scalers: BTreeMap<String, Scaler> = BTreeMap::new();
        let mut explicit = false;
        let mut deadline_checked = None;
        for step in 0..=STEPS {
            let t = step * STEP;
            for (_, u) in updates().into_iter().filter(|(s, u)| *s == step && u.series == key(i)) {
                explicit = true;
                scalers.remove(DEFAULT_SCALER);
                match u.spec {
                    Some(spec) => match scalers.get_mut(&u.scaler) {
                        Some(s) => s.set_spec(spec),
                        None => {
                            scalers.insert(u.scaler, Scaler::new(spec).with_cadence(Some(MINUTE)));
                        }
                    },
                    None => {
                        scalers.remove(&u.scaler);
                        // With no scaler left, the default takes over.
                        explicit = !scalers.is_empty();
                    }
                }
            }
            if let Some(f) = flags(i, step) {
                for (name, s) in &mut scalers {
                    let detail = format!("{} (seen at {})", f.issue.describe(), format_datetime(f.at_ms));
                    let d = s.on_flag(name, &f.series, t, FallbackReason::from(f.issue), detail, None);
                    out.extend(d.map(|d| serde_json::to_string(&d).unwrap()));
                }
            }
            // Staleness deadlines fall on step boundaries here (15 min).
            for (name, s) in &mut scalers {
                if let Some(d) = s.stale_deadline()
                    && d == t
                    && deadline_checked != Some((name.clone(), d))
                    && t < STEPS * STEP
                {
                    deadline_checked = Some((name.clone(), d));
                    out.extend(s.on_stale(name, &key(i), t).map(|d| serde_json::to_string(&d).unwrap()));
                }
            }
            if step == STEPS {
                break;
            }
            if let Some(row) = forecast(i, step) {
                if !explicit && scalers.is_empty() {
                    scalers.insert(
                        DEFAULT_SCALER.into(),
                        Scaler::new(settings().default.unwrap()).with_cadence(Some(MINUTE)),
                    );
                }
                for (name, s) in &mut scalers {
                    out.push(serde_json::to_string(&s.on_forecast(name, &row)).unwrap());
                }
            }
            for minute in 1..5 {
                if let Some(r) = reading(i, step, minute) {
                    for (name, s) in &mut scalers {
                        out.extend(s.on_load(name, &r).map(|d| serde_json::to_string(&d).unwrap()));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// Equal, or a panic that shows the first differences.
fn same(got: &[String], expected: &[String], what: &str) {
    if got == expected {
        return;
    }
    let extra: Vec<_> = got.iter().filter(|l| !expected.contains(l)).take(3).collect();
    let missing: Vec<_> = expected.iter().filter(|l| !got.contains(l)).take(3).collect();
    panic!(
        "{what}: {} decisions vs {} sequential\nonly in the dataflow: {extra:#?}\nonly sequential: {missing:#?}",
        got.len(),
        expected.len()
    );
}

#[test]
fn decisions_match_a_sequential_run_on_one_and_three_workers() {
    let expected = run_sequentially();
    let one = run_dataflow(1);
    let three = run_dataflow(3);
    same(&one, &expected, "1 worker");
    same(&three, &expected, "3 workers");
    let reasons: Vec<Decision> = expected.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let has = |reason: &str| reasons.iter().any(|d| d.reason.to_string() == reason);
    for reason in [
        "forecast",
        "fallback:stale",
        "fallback:jump",
        "fallback:model-error",
        "fallback:timestamp-unit",
        "fallback:pods-missing",
        "fallback:recovering",
    ] {
        assert!(has(reason), "no {reason} decision");
    }
    // The deleted scaler decides nothing after step 30 (the default takes
    // its series over); the edited one keeps deciding; the stale series
    // holds its count.
    assert!(!reasons.iter().any(|d| d.scaler == "web" && d.time_ms >= 30 * STEP));
    assert!(
        reasons.iter().any(|d| d.scaler == DEFAULT_SCALER && d.series.deployment == "d2" && d.time_ms >= 30 * STEP)
    );
    assert!(reasons.iter().any(|d| d.scaler == "api" && d.time_ms > 20 * STEP));
    // The moved scaler decides for its new series only, and the default
    // takes the old one back.
    let on = |scaler: &str, deployment: &str, from: u64, to: u64| {
        reasons.iter().any(|d| {
            d.scaler == scaler && d.series.deployment == deployment && (from * STEP..to * STEP).contains(&d.time_ms)
        })
    };
    assert!(on("batch", "d4", 5, 35) && on("batch", "d5", 35, STEPS + 1));
    assert!(!on("batch", "d4", 35, STEPS + 1) && on(DEFAULT_SCALER, "d4", 35, STEPS + 1));
    let stale = reasons.iter().find(|d| d.reason.to_string() == "fallback:stale").unwrap();
    assert_eq!((stale.series.deployment.as_str(), stale.current), ("d0", stale.desired));
    assert!(reasons.iter().all(|d| !(d.series.deployment == "d1" && d.time_ms >= 25 * STEP && d.desired < d.current)));
    // Bad input never lowers the count, whatever the gate saw.
    for d in &reasons {
        let bad_input = d.reason.to_string().starts_with("fallback:") && d.reason.to_string() != "fallback:model-error";
        assert!(!(bad_input && d.desired < d.current), "{d:?}");
    }
    // Series 5 is held from the flag until its data has been healthy for
    // `recover_after`: no forecast-driven decision in between.
    let recover = ScalerSpec::default().fallback.recover_after;
    assert!(reasons.iter().all(|d| !(d.series.deployment == "d5"
        && (15 * STEP..15 * STEP + recover).contains(&d.time_ms)
        && !d.reason.to_string().starts_with("fallback:"))));
}
