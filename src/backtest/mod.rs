//! `prescale backtest`: prescale's decisions against HPA, an oracle and a
//! static peak, on a recorded trace, on the simulated cluster.
//!
//! The trace is replayed through the same dataflow `prescale run` builds
//! (features → forecast → decide) on timely workers; the decide stage gets
//! one scaler per series and [`Tuning`] of the sweep (a target utilisation
//! and a scale-down stabilisation window), so a single pass over the trace
//! yields prescale's decisions at every tuning. Each series is then
//! simulated ([`crate::simulate`]) under every policy: HPA and prescale at
//! every tuning, the oracle and the static peak once. Reported per series:
//! each policy at the common tuning (HPA's usual 70% with Kubernetes'
//! default 300 s window), and each policy at *equal service* — the fewest
//! replica-hours any tuning needs to stay within the under-provisioning
//! budget — with the share of the HPA–oracle gap prescale closes.
//! [`report`] renders the table, the JSON and the HTML.
//!
//! Both policies are tuned on the same grid. The window is part of it
//! because a policy that looks ahead may need less of it than one that
//! reacts: a shorter window that only prescale were given would be a
//! saving HPA could have had too.
//!
//! The first `warmup` of the trace (default 7 days, at most half of it)
//! feeds the models but is not scored, for any policy: a deployment
//! adopting prescale brings its metrics history along.

pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prescale_dataflows::decide::{self, DEFAULT_LEVEL, FallbackSpec, Reason, ScalerSpec, SpecUpdate};
use prescale_dataflows::decode::{DecodeOptions, Decoder, Format};
use prescale_dataflows::event_time::{Arrival, EventTimeSettings, PartitionClock};
use prescale_dataflows::features::{self, FeatureSettings, WindowCounters};
use prescale_dataflows::forecast::stage::{self, ForecastSettings, Signal};
use prescale_dataflows::ingest::{self, Ingest};
use prescale_dataflows::quality;
use prescale_dataflows::record::{Sample, Series, SeriesKey};
use prescale_dataflows::time::{DAY, HOUR, MINUTE, Millis, SECOND};
use rustc_hash::FxHashMap;
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::{Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

use crate::error::{Error, Result};
use crate::simulate::hpa::Hpa;
use crate::simulate::oracle::{Oracle, Static};
use crate::simulate::{ClusterModel, LatencyModel, Load, Outcome, Policy, Schedule, simulate};
use crate::source::{Feed, PARK};

/// What to backtest and how, validated.
#[derive(Clone, Debug)]
pub struct BacktestSettings {
    /// The trace.
    pub trace: PathBuf,
    /// Only these series (all when empty).
    pub series: Vec<String>,
    /// Load one replica serves at 100%; `None` derives it per series so
    /// that the series' 99th-percentile load needs 20 replicas at the SLO
    /// utilisation.
    pub capacity: Option<f64>,
    /// The common target utilisation (default 0.7).
    pub target_utilization: f64,
    /// Pod start-up (default 120 s).
    pub startup: Millis,
    /// Age of the metrics HPA sees (default 60 s).
    pub metric_delay: Millis,
    /// SLO utilisation (default 0.85).
    pub slo_utilization: f64,
    /// Under-provisioned share of minutes allowed at equal service
    /// (default 0.005).
    pub budget: f64,
    /// Target utilisations swept for equal service.
    pub sweep: Vec<f64>,
    /// Scale-down stabilisation windows swept for equal service (default
    /// 0, 30, 60, 120 s and Kubernetes' 300 s, which is always among
    /// them: on the shared traces HPA's best was 30–120 s on most series,
    /// 0 or 300 s on a few).
    pub windows: Vec<Millis>,
    /// The interval level prescale sizes for (default 0.9).
    pub level: Option<f64>,
    /// Scored from this far into the trace (default 7 d, at most half).
    pub warmup: Millis,
    /// The step prescale forecasts and decides in, a multiple of the
    /// trace's (default: the trace's own; a series already at a multiple
    /// of it keeps its own). A coarser one leaves the load to vary within
    /// each forecast step, as a live load varies within the job's
    /// 5-minute step while it is read every 15 s.
    pub forecast_step: Option<Millis>,
    /// Timely workers.
    pub workers: usize,
}

impl BacktestSettings {
    /// The defaults for a trace.
    pub fn new(trace: PathBuf) -> Self {
        BacktestSettings {
            trace,
            series: Vec::new(),
            capacity: None,
            target_utilization: 0.7,
            startup: 120 * SECOND,
            metric_delay: 60 * SECOND,
            slo_utilization: 0.85,
            budget: 0.005,
            sweep: (5..=60).map(|i| f64::from(i) * 0.02).collect(),
            windows: vec![0, 30 * SECOND, MINUTE, 2 * MINUTE, DEFAULT_WINDOW],
            level: None,
            warmup: 7 * DAY,
            forecast_step: None,
            workers: 1,
        }
    }

    /// Checks the settings, naming the flag at fault.
    pub fn validate(mut self) -> Result<Self> {
        let share = |flag: &'static str, v: f64, max: f64| {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(())
            } else {
                Err(Error::invalid(flag, format!("{v} must be in (0, {max}]")))
            }
        };
        share("--target-utilization", self.target_utilization, 2.0)?;
        share("--slo-utilization", self.slo_utilization, 1.0)?;
        share("--budget", self.budget, 1.0)?;
        if let Some(c) = self.capacity {
            share("--capacity", c, f64::MAX)?;
        }
        for &u in &self.sweep {
            share("--sweep", u, 2.0)?;
        }
        // The common target, and the SLO utilisation (where a policy that
        // forecast perfectly would sit), are always among the targets.
        for u in [self.target_utilization, self.slo_utilization] {
            if !self.sweep.iter().any(|s| (s - u).abs() < 1e-9) {
                self.sweep.push(u);
            }
        }
        self.sweep.sort_by(f64::total_cmp);
        self.sweep.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        if let Some(&w) = self.windows.iter().find(|&&w| w > HOUR) {
            // HPA's API caps the window at an hour.
            return Err(Error::invalid("--sweep-windows", format!("{} s is longer than an hour", w / SECOND)));
        }
        self.windows.push(DEFAULT_WINDOW);
        self.windows.sort_unstable();
        self.windows.dedup();
        if self.sweep.len() * self.windows.len() > usize::from(u16::MAX) {
            return Err(Error::invalid("--sweep-windows", "targets × windows must stay below 65,536"));
        }
        if self.workers == 0 {
            return Err(Error::invalid("--workers", "must be at least 1"));
        }
        if let Some(l) = self.level
            && !(0.0..1.0).contains(&l)
        {
            return Err(Error::invalid("--level", format!("{l} must be at least 0 and below 1")));
        }
        Ok(self)
    }
}

/// Kubernetes' default scale-down stabilisation window, the common
/// tuning's.
const DEFAULT_WINDOW: Millis = 300 * SECOND;

/// One point of the sweep, applied alike to HPA and prescale.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Target utilisation (0.7 = 70% of a replica's capacity).
    pub target: f64,
    /// Scale-down stabilisation window (ms).
    pub window: Millis,
}

impl Tuning {
    /// The same tuning, up to the rounding of targets parsed from `--sweep`.
    fn is(&self, other: &Tuning) -> bool {
        (self.target - other.target).abs() < 1e-9 && self.window == other.window
    }

    /// Kubernetes' default behaviour with this tuning's window.
    fn behavior(&self) -> decide::Behavior {
        let mut b = decide::Behavior::default();
        b.scale_down.stabilization = self.window;
        b
    }
}

impl BacktestSettings {
    /// Every tuning of the sweep, window by window.
    pub fn tunings(&self) -> Vec<Tuning> {
        self.windows
            .iter()
            .flat_map(|&window| self.sweep.iter().map(move |&target| Tuning { target, window }))
            .collect()
    }

    /// HPA's usual configuration: the common target, the default window.
    pub fn common(&self) -> Tuning {
        Tuning { target: self.target_utilization, window: DEFAULT_WINDOW }
    }
}

/// One series of the trace on its grid.
#[derive(Clone, Debug)]
pub struct TraceSeries {
    /// The name in the trace.
    pub name: String,
    /// The key the decoder gave it.
    pub key: SeriesKey,
    /// Time of the first step.
    pub start: Millis,
    /// The step.
    pub step: Millis,
    /// Values per step (NaN where the trace has none).
    pub raw: Vec<f64>,
}

/// Every series of a trace on a grid of its own step (the most common
/// distance between its consecutive timestamps).
pub fn load_trace(path: &Path, decode: &DecodeOptions) -> Result<Vec<TraceSeries>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "reading trace",
        path: path.to_owned(),
        source,
    })?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let format = Format::guess(&path.to_string_lossy(), first);
    let mut decoder = Decoder::new(format, decode.clone(), &path.to_string_lossy());
    let mut points: BTreeMap<SeriesKey, Vec<(Millis, f64)>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        decoder.decode(line, 0, i as u64 + 1, &mut |r| {
            if let Ok(sample) = r {
                points.entry(sample.series.key().clone()).or_default().push((sample.time, sample.value));
            }
        });
    }
    points
        .into_iter()
        .filter_map(|(key, mut pts)| {
            pts.sort_by_key(|p| p.0);
            let name = if format == Format::Csv {
                key.deployment.clone()
            } else {
                format!("{}/{}/{}", key.namespace, key.deployment, key.metric)
            };
            // The series' step: the most common distance between its
            // consecutive timestamps (traces mix 5- and 30-minute series).
            let mut gaps: BTreeMap<Millis, usize> = BTreeMap::new();
            for w in pts.windows(2) {
                if w[1].0 > w[0].0 {
                    *gaps.entry(w[1].0 - w[0].0).or_default() += 1;
                }
            }
            let step = gaps
                .iter()
                .max_by_key(|(gap, n)| (**n, std::cmp::Reverse(**gap)))
                .map(|(g, _)| *g)
                .filter(|s| *s >= SECOND && s.is_multiple_of(SECOND) && DAY.is_multiple_of(*s));
            let Some(step) = step else {
                return Some(Err(Error::invalid(
                    "--trace",
                    format!("series {name:?} has no regular step (whole seconds dividing a day)"),
                )));
            };
            let start = pts.first()?.0 / step * step;
            let len = usize::try_from((pts.last()?.0 - start) / step + 1).ok()?;
            let mut sums = vec![(0.0, 0u32); len];
            for (t, v) in pts {
                let slot = &mut sums[((t - start) / step) as usize];
                slot.0 += v;
                slot.1 += 1;
            }
            let raw = sums.into_iter().map(|(s, n)| if n == 0 { f64::NAN } else { s / f64::from(n) }).collect();
            Some(Ok(TraceSeries { name, key, start, step, raw }))
        })
        .collect()
}

/// What one worker keeps of the decisions it saw. A schedule only needs
/// the changes of each scaler's count, so a decision that repeats its
/// scaler's last count is counted (for the common tuning's reasons) and
/// dropped: keeping every decision of every tuning held the whole sweep
/// in memory until the simulation (28,500 scalers on the Azure VMs
/// outgrew 24 GiB).
#[derive(Debug, Default)]
struct Kept {
    /// The sweep's size: scaler `(series, tuning)` is at
    /// `series × tunings + tuning` of `schedules`.
    tunings: usize,
    /// `(time, desired)` where each scaler's count changed, in time order.
    schedules: Vec<Vec<(Millis, u32)>>,
    /// The common tuning's reasons per series.
    reasons: FxHashMap<(u32, Reason), u64>,
    /// `(series, time, point, upper)` of the common tuning's forecasts.
    band: Vec<(u32, Millis, f32, f32)>,
    /// Decisions seen.
    seen: u64,
}

impl Kept {
    fn new(series: usize, tunings: usize) -> Self {
        Kept { tunings, schedules: vec![Vec::new(); series * tunings], ..Kept::default() }
    }

    /// Keeps what the backtest needs of one decision. A scaler's decisions
    /// reach this in time order: the decide operator emits them so on its
    /// worker, and `inspect` runs on the same worker.
    fn keep(&mut self, series: u32, tuning: u16, common: bool, d: &decide::Decision) {
        self.seen += 1;
        let index = series as usize * self.tunings + usize::from(tuning);
        if let Some(schedule) = self.schedules.get_mut(index)
            && schedule.last().is_none_or(|&(_, n)| n != d.desired)
        {
            schedule.push((d.time_ms, d.desired));
        }
        if common {
            *self.reasons.entry((series, d.reason)).or_default() += 1;
            if let Some(f) = &d.forecast {
                self.band.push((series, d.time_ms, f.point as f32, f.upper as f32));
            }
        }
    }

    /// Adds another worker's keep: each scaler lives on one worker, so a
    /// schedule is taken whole from the one that has it.
    fn absorb(&mut self, other: Kept) {
        for (mine, theirs) in self.schedules.iter_mut().zip(other.schedules) {
            if mine.is_empty() {
                *mine = theirs;
            }
        }
        self.band.extend(other.band);
        for (k, n) in other.reasons {
            *self.reasons.entry(k).or_default() += n;
        }
        self.seen += other.seen;
    }
}

/// The scaler name for series `s` and the sweep's `i`-th tuning. Scaler
/// names are unique within a namespace, as Kubernetes names are.
fn scaler_name(s: usize, i: usize) -> String {
    format!("series-{s}-tuning-{i}")
}

/// One series' decisions, by tuning index.
#[derive(Clone, Debug, Default)]
pub struct SeriesDecisions {
    /// `(time, desired)` per tuning of the sweep.
    pub by_tuning: Vec<Vec<(Millis, u32)>>,
    /// `(time, point, upper)` of the forecasts the common tuning used.
    pub band: Vec<(Millis, f64, f64)>,
    /// Reasons of the common tuning's decisions.
    pub reasons: BTreeMap<String, u64>,
}

/// The dataflow's settings for a trace of this step.
fn stage_settings(step: Millis, level: f64, startup: Millis) -> (FeatureSettings, ForecastSettings) {
    let mut tumbling = vec![step];
    if step > REACTIVE_WIDTH {
        tumbling.insert(0, REACTIVE_WIDTH);
    }
    let features = FeatureSettings { tumbling, sliding: vec![], lags: vec![], lagged: vec![], lateness: LATENESS };
    let forecast = ForecastSettings {
        step,
        horizon: (30 * MINUTE).max(3 * step),
        level: 0.9,
        refit_every: HOUR.max(step),
        signal: Signal::Total,
        selection_level: level,
        sizing_leads: ForecastSettings::sizing_leads_for(step, startup),
    };
    (features, forecast)
}

/// The short windows the decide stage checks the reactive floor on: the
/// HPA's sync period and Prometheus' default scrape interval. With
/// one-minute windows the floor acted on a surprise 15–30 s after the
/// simulated HPA (which sees the load 60 s late), and the under-
/// provisioning of every burst cost prescale headroom everywhere else.
const REACTIVE_WIDTH: Millis = 15 * SECOND;
/// The event-time lateness: a window closes this long after its end, so
/// prescale's decisions reach the cluster this long after their time.
const LATENESS: Millis = 30 * SECOND;

/// The scaler for one series and tuning.
fn scaler_spec(step: Millis, capacity: f64, tuning: Tuning, max: u32, settings: &BacktestSettings) -> ScalerSpec {
    // With steps longer than the defaults, a missing step is not a gap.
    let patience = (15 * MINUTE).max(3 * step);
    ScalerSpec {
        min_replicas: 1,
        max_replicas: max,
        target_per_replica: capacity * tuning.target,
        horizon: step,
        // Decisions reach the cluster `LATENESS` after the window ends,
        // and pods are ready `startup` later.
        startup: settings.startup + LATENESS,
        level: Some(settings.level.unwrap_or(DEFAULT_LEVEL)),
        fallback: FallbackSpec {
            stale_after: patience,
            max_gap: patience,
            recover_after: patience,
            ..FallbackSpec::default()
        },
        behavior: tuning.behavior(),
        ..ScalerSpec::default()
    }
}

/// `maxReplicas` for a series, as an operator would set it: twice what
/// the trace's peak needs at the SLO utilisation. Without it a forecast
/// that extrapolates a burst could ask for any number of replicas.
fn max_replicas(s: &TraceSeries, capacity: f64, slo: f64) -> u32 {
    let peak = s.raw.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max);
    prescale_dataflows::decide::policy::replicas_for(peak, capacity * slo).max(1).saturating_mul(2)
}

/// Capacity per replica for a series: given, or derived so that its 99th
/// percentile load needs 20 replicas at the SLO utilisation.
pub fn capacity_for(load: &Load, given: Option<f64>, slo: f64) -> f64 {
    if let Some(c) = given {
        return c;
    }
    let mut v: Vec<f64> = load.values.iter().copied().filter(|v| v.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let p99 = v.get(v.len().saturating_sub(1) * 99 / 100).copied().unwrap_or(1.0);
    let c = p99 / (20.0 * slo);
    if c > 0.0 && c.is_finite() { c } else { 1.0 }
}

/// Feeds this worker's series as one sample per reactive window (15 s):
/// each step's value held for the whole step, as scrapes of a steady load
/// would report it. The reactive policies of the simulation see the same
/// steps.
fn feed_trace(feed: &mut Feed<'_>, series: &[TraceSeries], step: Millis) {
    let (index, peers) = (feed.worker.index() as u64, feed.worker.peers() as u64);
    let sub = if step > REACTIVE_WIDTH && step.is_multiple_of(REACTIVE_WIDTH) { REACTIVE_WIDTH } else { step };
    let clock_settings = EventTimeSettings { lateness: LATENESS, ..EventTimeSettings::default() };
    let mut samples: Vec<(Millis, Sample)> = Vec::new();
    for s in series {
        let handle = Series::new(s.key.clone());
        if handle.route() % peers != index {
            continue;
        }
        let mut clock = PartitionClock::new(clock_settings);
        for (i, v) in s.raw.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let t0 = s.start + i as Millis * step;
            for k in 0..step / sub {
                let time = t0 + k * sub;
                if let Arrival::OnTime(at) = clock.observe(time) {
                    samples.push((at, Sample { time, series: handle.clone(), pod: 0, value: *v }));
                }
            }
        }
    }
    samples.sort_by_key(|(at, _)| *at);
    let mut last_advance = 0;
    for (at, sample) in samples {
        if at >= last_advance + HOUR {
            feed.advance_to(at);
            last_advance = at;
        }
        feed.ingest.push(at, sample);
    }
    // Every worker ends at the watermark of the trace's latest minute.
    let last = series.iter().map(|s| s.start + s.raw.len() as Millis * step).max().unwrap_or(0);
    if let Arrival::OnTime(end) = PartitionClock::new(clock_settings).observe(last.saturating_sub(sub)) {
        feed.advance_to(end);
    }
}

/// Runs the dataflow over the trace with the sweep's scalers; returns each
/// series' decisions (in `series` order).
fn decide_over_trace(
    settings: &BacktestSettings,
    step: Millis,
    series: &[(TraceSeries, f64)],
) -> Result<Vec<SeriesDecisions>> {
    // The trace is fed at its own step; the models and scalers work in
    // the forecast step.
    let trace_step = step;
    let step = match settings.forecast_step {
        None => trace_step,
        Some(f) if f > 0 && f.is_multiple_of(trace_step) => f,
        // A series already coarser keeps its own step.
        Some(f) if f > 0 && trace_step.is_multiple_of(f) => trace_step,
        Some(f) => {
            return Err(Error::invalid(
                "--forecast-step",
                format!("{} s neither divides nor is a multiple of a {} s step", f / SECOND, trace_step / SECOND),
            ));
        }
    };
    let (features_settings, forecast_settings) =
        stage_settings(step, settings.level.unwrap_or(DEFAULT_LEVEL), settings.startup + LATENESS);
    let features_settings = features_settings.validate()?;
    let forecast_settings = forecast_settings.validate(&features_settings.tumbling)?;
    let tunings = settings.tunings();
    // `validate` keeps the tunings below `u16::MAX`.
    let names: Arc<FxHashMap<String, (u32, u16)>> = Arc::new(
        (0..series.len())
            .flat_map(|s| (0..tunings.len()).map(move |i| (scaler_name(s, i), (s as u32, i as u16))))
            .collect(),
    );
    let common = tunings.iter().position(|t| t.is(&settings.common())).unwrap_or(0);
    let updates: Vec<SpecUpdate> = series
        .iter()
        .enumerate()
        .flat_map(|(n, (s, capacity))| {
            let max = max_replicas(s, *capacity, settings.slo_utilization);
            tunings.iter().enumerate().map(move |(i, &tuning)| SpecUpdate {
                time_ms: 0,
                scaler: scaler_name(n, i),
                series: s.key.clone(),
                spec: Some(scaler_spec(step, *capacity, tuning, max, settings)),
            })
        })
        .collect();
    let kept = Arc::new(Mutex::new(Kept::new(series.len(), tunings.len())));
    let (series_count, tuning_count) = (series.len(), tunings.len());
    let shared =
        (Arc::clone(&kept), Arc::new(series.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()), Arc::new(updates));
    let config = timely::Config::process(settings.workers);
    let guards = timely::execute(config, move |worker| -> Result<()> {
        let (kept, series, updates) = &shared;
        let names = Arc::clone(&names);
        let local = std::rc::Rc::new(std::cell::RefCell::new(Kept::new(series_count, tuning_count)));
        let sink = std::rc::Rc::clone(&local);
        let probe = ProbeHandle::new();
        let mut specs = InputHandle::<Millis, CapacityContainerBuilder<Vec<SpecUpdate>>>::new();
        let inputs = worker.dataflow::<Millis, _, _>(|scope| {
            let (inputs, partials, rejected) = ingest::inputs(&scope);
            let rows = features::features(partials, &features_settings, WindowCounters::default());
            let forecasts = stage::forecasts(rows.clone(), &forecast_settings);
            let settings = decide::DecideSettings {
                default: None,
                reactive_width: (step > REACTIVE_WIDTH).then_some(REACTIVE_WIDTH),
            };
            let readings = decide::readings(rows.clone(), settings.reactive_width, Signal::Total);
            decide::decisions(forecasts, readings, specs.to_stream(scope), quality::flags(rejected), &settings)
                .inspect(move |d| {
                    let Some(&(series, tuning)) = names.get(&d.scaler) else { return };
                    sink.borrow_mut().keep(series, tuning, usize::from(tuning) == common, d);
                })
                .probe_with(&probe);
            inputs
        });
        if worker.index() == 0 {
            for u in updates.iter() {
                specs.send(u.clone());
            }
        }
        specs.close();
        let mut ingest = Ingest::new(inputs, features_settings.pane());
        let mut feed = Feed::new(worker, &mut ingest, &probe, 2 * MINUTE);
        feed_trace(&mut feed, series, trace_step);
        ingest.close();
        while !probe.done() {
            worker.step_or_park(Some(PARK));
        }
        // Only this worker's thread touched `local`; the lock is not poisoned
        // unless another worker panicked, which ends the process.
        if let Ok(mut all) = kept.lock() {
            all.absorb(local.take());
        }
        Ok(())
    })
    .map_err(Error::Runtime)?;
    for result in guards.join() {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(panic) => return Err(Error::Runtime(panic)),
        }
    }
    let kept = std::mem::take(&mut *kept.lock().map_err(|_| Error::Runtime("a worker panicked".into()))?);
    let changes: usize = kept.schedules.iter().map(Vec::len).sum();
    eprintln!("backtest: {changes} of {} decisions changed their scaler's count; only those are kept", kept.seen);
    let mut schedules = kept.schedules.into_iter();
    let mut out: Vec<SeriesDecisions> = (0..series.len())
        .map(|_| SeriesDecisions {
            by_tuning: schedules.by_ref().take(tunings.len()).collect(),
            ..SeriesDecisions::default()
        })
        .collect();
    for ((series, reason), n) in kept.reasons {
        if let Some(s) = out.get_mut(series as usize) {
            *s.reasons.entry(reason.to_string()).or_default() += n;
        }
    }
    for (series, time, point, upper) in kept.band {
        if let Some(s) = out.get_mut(series as usize) {
            s.band.push((time, f64::from(point), f64::from(upper)));
        }
    }
    for s in &mut out {
        s.by_tuning.iter_mut().for_each(|l| l.shrink_to_fit());
        s.band.sort_by_key(|b| b.0);
    }
    Ok(out)
}

/// One policy on one series at one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyResult {
    /// The series.
    pub series: String,
    /// `prescale`, `hpa`, `oracle` or `static-peak`.
    pub policy: String,
    /// The target utilisation (the SLO utilisation for oracle and static).
    pub target_utilization: f64,
    /// Pod-hours asked for.
    pub replica_hours: f64,
    /// Minutes with demand above ready capacity × the SLO utilisation.
    pub underprovisioned_minutes: f64,
    /// Estimated p99 response time over all requests (ms).
    pub p99_ms: Option<f64>,
    /// Changes of the replica count.
    pub scale_events: u32,
}

/// One policy at equal service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EqualService {
    /// The series.
    pub series: String,
    /// The policy.
    pub policy: String,
    /// The under-provisioning budget (share of minutes).
    pub budget_fraction: f64,
    /// The target chosen: the cheapest within the budget (or, when none
    /// is, the one closest to it).
    pub target_utilization: f64,
    /// The scale-down stabilisation window chosen with it (seconds; the
    /// oracle and the static peak have none).
    pub scale_down_stabilization_s: Option<u64>,
    /// Its replica-hours.
    pub replica_hours: f64,
    /// Its under-provisioned minutes.
    pub underprovisioned_minutes: f64,
    /// Its changes of the replica count: the churn its saving comes with,
    /// which the cost does not price.
    pub scale_events: u32,
    /// Whether any tuning of the sweep met the budget.
    pub met: bool,
}

/// A policy's cost and under-provisioning at each target of the sweep,
/// with one scale-down stabilisation window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Curve {
    /// The series.
    pub series: String,
    /// The policy.
    pub policy: String,
    /// The scale-down stabilisation window (seconds).
    pub scale_down_stabilization_s: u64,
    /// `(target, replica-hours, under-provisioned minutes)`.
    pub points: Vec<(f64, f64, f64)>,
}

/// `(time, pods asked for, pods ready)` at each step of a simulation.
pub type Timeline = Vec<(Millis, u32, u32)>;

/// Everything about one series, for the report.
#[derive(Clone, Debug)]
pub struct SeriesReport {
    /// The series.
    pub name: String,
    /// Capacity per replica used.
    pub capacity: f64,
    /// The scored load.
    pub load: Load,
    /// Timelines at the common target: policy → `(time, asked, ready)`.
    pub timelines: Vec<(String, Timeline)>,
    /// The forecast band the common target used: `(time, point, upper)`.
    pub band: Vec<(Millis, f64, f64)>,
    /// Reasons of prescale's decisions at the common target.
    pub reasons: BTreeMap<String, u64>,
}

/// The backtest's findings.
#[derive(Clone, Debug, Default)]
pub struct Backtest {
    /// Policies at the common target, per series.
    pub results: Vec<PolicyResult>,
    /// Policies at equal service, per series.
    pub equal_service: Vec<EqualService>,
    /// Cost-versus-service curves.
    pub curves: Vec<Curve>,
    /// Per-series details for plots.
    pub series: Vec<SeriesReport>,
    /// The common target.
    pub target_utilization: f64,
    /// The budget.
    pub budget: f64,
    /// The interval level prescale sized for.
    pub level: f64,
}

/// How the policies are simulated on a series.
pub struct Evaluation<'a> {
    /// The cluster model.
    pub model: ClusterModel,
    /// The sweep.
    pub sweep: &'a [Tuning],
    /// The common tuning.
    pub common: Tuning,
    /// The under-provisioning budget.
    pub budget: f64,
    /// How long after their time prescale's decisions reach the cluster.
    pub decision_delay: Millis,
    /// `maxReplicas` of HPA (prescale's scalers carry their own).
    pub max_replicas: u32,
}

impl Evaluation<'_> {
    /// Simulates every policy on `load` (already cut to the scored part),
    /// with prescale's decisions per tuning of the sweep.
    pub fn run(
        &self,
        name: &str,
        load: &Load,
        decisions: &[Vec<(Millis, u32)>],
        backtest: &mut Backtest,
    ) -> Vec<(String, Timeline)> {
        let model = &self.model;
        let initial = Oracle::initial(model, load);
        let delay = self.decision_delay;
        let mut timelines = Vec::new();
        let result = |policy: &str, target: f64, out: &Outcome| PolicyResult {
            series: name.to_owned(),
            policy: policy.to_owned(),
            target_utilization: target,
            replica_hours: out.replica_hours,
            underprovisioned_minutes: out.underprovisioned_minutes,
            p99_ms: out.p99_ms,
            scale_events: out.scale_events,
        };
        for policy in ["hpa", "prescale"] {
            let mut points = Vec::new();
            for (i, &tuning) in self.sweep.iter().enumerate() {
                let is_common = tuning.is(&self.common);
                let mut p: Box<dyn Policy> = if policy == "hpa" {
                    let mut hpa = Hpa::new(tuning.target, 1, self.max_replicas);
                    hpa.behavior = tuning.behavior();
                    Box::new(hpa)
                } else {
                    let steps = decisions.get(i).map(|d| d.iter().map(|&(t, n)| (t + delay, n)).collect());
                    Box::new(Schedule::new(steps.unwrap_or_default()))
                };
                let out = simulate(model, load, p.as_mut(), initial, is_common);
                points.push((tuning, out.replica_hours, out.underprovisioned_minutes, out.scale_events));
                if is_common {
                    backtest.results.push(result(policy, tuning.target, &out));
                    timelines.push((policy.to_owned(), out.timeline));
                }
            }
            let minutes = (load.end() - load.start) as f64 / 60_000.0;
            backtest.equal_service.push(equal_service(name, policy, &points, self.budget, minutes));
            let mut windows: Vec<Millis> = points.iter().map(|p| p.0.window).collect();
            windows.dedup();
            for window in windows {
                backtest.curves.push(Curve {
                    series: name.to_owned(),
                    policy: policy.to_owned(),
                    scale_down_stabilization_s: window / SECOND,
                    points: points.iter().filter(|p| p.0.window == window).map(|p| (p.0.target, p.1, p.2)).collect(),
                });
            }
        }
        let slo = model.slo_utilization;
        let mut oracle = Oracle::new(load);
        let out = simulate(model, load, &mut oracle, initial, true);
        backtest.results.push(result("oracle", slo, &out));
        let minutes = out.minutes;
        backtest.equal_service.push(EqualService {
            series: name.to_owned(),
            policy: "oracle".into(),
            budget_fraction: self.budget,
            target_utilization: slo,
            scale_down_stabilization_s: None,
            replica_hours: out.replica_hours,
            underprovisioned_minutes: out.underprovisioned_minutes,
            scale_events: out.scale_events,
            met: out.underprovisioned_minutes <= self.budget * minutes,
        });
        timelines.push(("oracle".into(), out.timeline));
        let mut peak = Static::for_peak(model, load);
        let peak_count = peak.0;
        let out = simulate(model, load, &mut peak, peak_count, true);
        backtest.results.push(result("static-peak", slo, &out));
        backtest.equal_service.push(EqualService {
            series: name.to_owned(),
            policy: "static-peak".into(),
            budget_fraction: self.budget,
            target_utilization: slo,
            scale_down_stabilization_s: None,
            replica_hours: out.replica_hours,
            underprovisioned_minutes: out.underprovisioned_minutes,
            scale_events: out.scale_events,
            met: out.underprovisioned_minutes <= self.budget * minutes,
        });
        timelines
    }
}

/// The cheapest point within the budget, or the least under-provisioned.
fn equal_service(
    series: &str,
    policy: &str,
    points: &[(Tuning, f64, f64, u32)],
    budget: f64,
    minutes: f64,
) -> EqualService {
    let allowed = budget * minutes;
    let within = points.iter().filter(|p| p.2 <= allowed + 1e-9).min_by(|a, b| a.1.total_cmp(&b.1));
    let none = (Tuning { target: 0.0, window: 0 }, 0.0, 0.0, 0);
    let (chosen, met) = match within {
        Some(p) => (p, true),
        None => (points.iter().min_by(|a, b| a.2.total_cmp(&b.2).then(a.1.total_cmp(&b.1))).unwrap_or(&none), false),
    };
    EqualService {
        series: series.to_owned(),
        policy: policy.to_owned(),
        budget_fraction: budget,
        target_utilization: chosen.0.target,
        scale_down_stabilization_s: Some(chosen.0.window / SECOND),
        replica_hours: chosen.1,
        underprovisioned_minutes: chosen.2,
        scale_events: chosen.3,
        met,
    }
}

/// Runs the backtest.
pub fn run(settings: &BacktestSettings) -> Result<Backtest> {
    let started = Instant::now();
    let mut all = load_trace(&settings.trace, &DecodeOptions::default())?;
    if !settings.series.is_empty() {
        if let Some(name) = settings.series.iter().find(|name| !all.iter().any(|s| &s.name == *name)) {
            return Err(Error::invalid("--series", format!("no series {name:?} in {}", settings.trace.display())));
        }
        all.retain(|s| settings.series.contains(&s.name));
    }
    let series: Vec<(TraceSeries, f64)> = all
        .into_iter()
        .filter_map(|s| {
            let load = Load::filled(s.start, s.step, &s.raw)?;
            let capacity = capacity_for(&load, settings.capacity, settings.slo_utilization);
            Some((s, capacity))
        })
        .collect();
    // One pass of the dataflow per step among the series: the forecast
    // stage runs at one step.
    let mut by_step: BTreeMap<Millis, Vec<usize>> = BTreeMap::new();
    for (i, (s, _)) in series.iter().enumerate() {
        by_step.entry(s.step).or_default().push(i);
    }
    let mut decisions: Vec<SeriesDecisions> = vec![SeriesDecisions::default(); series.len()];
    for (step, members) in by_step {
        eprintln!(
            "backtest: {} series at a {} s step; replaying them through the dataflow ({} targets × {} windows each)…",
            members.len(),
            step / SECOND,
            settings.sweep.len(),
            settings.windows.len()
        );
        let group: Vec<(TraceSeries, f64)> = members.iter().map(|&i| series[i].clone()).collect();
        for (i, d) in members.into_iter().zip(decide_over_trace(settings, step, &group)?) {
            decisions[i] = d;
        }
    }
    let model = |capacity| ClusterModel {
        capacity,
        startup: settings.startup,
        metric_delay: settings.metric_delay,
        slo_utilization: settings.slo_utilization,
        tick: 15 * SECOND,
        latency: LatencyModel::default(),
    };
    let mut backtest = Backtest {
        target_utilization: settings.target_utilization,
        budget: settings.budget,
        level: settings.level.unwrap_or(DEFAULT_LEVEL),
        ..Backtest::default()
    };
    let tunings = settings.tunings();
    let simulate_one = |s: &TraceSeries, capacity: f64, d: SeriesDecisions, into: &mut Backtest| {
        let step = s.step;
        let Some(full) = Load::filled(s.start, step, &s.raw) else { return };
        let span = full.end() - full.start;
        let skip = (settings.warmup.min(span / 2) / step) as usize;
        let load = Load { start: full.start + skip as Millis * step, step, values: full.values[skip..].to_vec() };
        let eval = Evaluation {
            model: model(capacity),
            sweep: &tunings,
            common: settings.common(),
            budget: settings.budget,
            decision_delay: LATENESS,
            max_replicas: max_replicas(s, capacity, settings.slo_utilization),
        };
        let timelines = eval.run(&s.name, &load, &d.by_tuning, into);
        into.series.push(SeriesReport {
            name: s.name.clone(),
            capacity,
            band: d.band.into_iter().filter(|b| b.0 >= load.start).collect(),
            load,
            timelines,
            reasons: d.reasons,
        });
    };
    // Series are simulated apart on `workers` threads, each over a run of
    // consecutive series, and joined in order: the report is the same as
    // one thread's.
    eprintln!("backtest: simulating {} series ({:.0} s)", series.len(), started.elapsed().as_secs_f64());
    let mut jobs: Vec<Vec<(&(TraceSeries, f64), SeriesDecisions)>> = Vec::new();
    let per_thread = series.len().div_ceil(settings.workers).max(1);
    for (i, job) in series.iter().zip(decisions).enumerate() {
        if i % per_thread == 0 {
            jobs.push(Vec::new());
        }
        if let Some(last) = jobs.last_mut() {
            last.push(job);
        }
    }
    let parts: Vec<std::thread::Result<Backtest>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                scope.spawn(|| {
                    let mut part = Backtest::default();
                    for ((s, capacity), d) in job {
                        simulate_one(s, *capacity, d, &mut part);
                    }
                    part
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    for part in parts {
        let part = part.map_err(|_| Error::Runtime("a simulation thread panicked".into()))?;
        backtest.results.extend(part.results);
        backtest.equal_service.extend(part.equal_service);
        backtest.curves.extend(part.curves);
        backtest.series.extend(part.series);
    }
    eprintln!("backtest: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(backtest)
}

/// A policy's totals over every deployment of a run.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PolicyTotals {
    /// `static-peak`, `hpa`, `prescale` or `oracle`.
    pub policy: String,
    /// Pod-hours over all deployments.
    pub replica_hours: f64,
    /// Under-provisioned minutes over all deployments.
    pub underprovisioned_minutes: f64,
    /// Scale events over all deployments.
    pub scale_events: u64,
    /// The worst deployment's p99 response time (ms).
    pub worst_p99_ms: f64,
}

/// Compares a run's decisions (of one scaler per series) with HPA, the
/// oracle and the static peak on the simulated cluster, at the target the
/// decisions were made for: HPA gets the same target utilisation
/// (`utilization`, HPA's usual 70%), so one replica's capacity is
/// `target_per_replica / utilization`, and the same `maxReplicas`. The load
/// is what the decisions saw.
pub fn compare_run(
    decisions: &[decide::Decision],
    step: Millis,
    target_per_replica: f64,
    utilization: f64,
    decision_delay: Millis,
    max_replicas: u32,
) -> Vec<PolicyTotals> {
    let mut by_series: BTreeMap<&SeriesKey, Vec<&decide::Decision>> = BTreeMap::new();
    for d in decisions {
        by_series.entry(&d.series).or_default().push(d);
    }
    let mut backtest = Backtest::default();
    // HPA as usually configured; prescale as the run's scalers were.
    let common = Tuning { target: utilization, window: DEFAULT_WINDOW };
    let sweep = [common];
    for (key, mut list) in by_series {
        list.sort_by_key(|d| d.time_ms);
        let Some(first) = list.first().map(|d| d.time_ms) else { continue };
        let start = first.saturating_sub(step) / step * step;
        let Some(end) = list.last().map(|d| d.time_ms) else { continue };
        let mut raw = vec![f64::NAN; ((end - start) / step) as usize];
        // A decision on a forecast at `t` saw the load of the step ending
        // at `t`; decisions on short-window readings (between steps, or
        // after the forecast at the same time) saw less of it.
        let mut last = None;
        for d in &list {
            if !d.time_ms.is_multiple_of(step) || last == Some(d.time_ms) {
                continue;
            }
            last = Some(d.time_ms);
            let i = ((d.time_ms - start) / step) as usize;
            if let (Some(slot), Some(load)) = (i.checked_sub(1).and_then(|i| raw.get_mut(i)), d.load) {
                *slot = load;
            }
        }
        let Some(load) = Load::filled(start, step, &raw) else { continue };
        let schedule: Vec<(Millis, u32)> = list.iter().map(|d| (d.time_ms, d.desired)).collect();
        let eval = Evaluation {
            model: ClusterModel::with_capacity(target_per_replica / utilization),
            sweep: &sweep,
            common,
            budget: 0.005,
            decision_delay,
            max_replicas,
        };
        let name = format!("{}/{}", key.namespace, key.deployment);
        eval.run(&name, &load, &[schedule], &mut backtest);
    }
    ["static-peak", "hpa", "prescale", "oracle"]
        .iter()
        .map(|policy| {
            let rows = backtest.results.iter().filter(|r| r.policy == *policy);
            PolicyTotals {
                policy: (*policy).to_owned(),
                replica_hours: rows.clone().map(|r| r.replica_hours).sum(),
                underprovisioned_minutes: rows.clone().map(|r| r.underprovisioned_minutes).sum(),
                scale_events: rows.clone().map(|r| u64::from(r.scale_events)).sum(),
                worst_p99_ms: rows.filter_map(|r| r.p99_ms).fold(0.0, f64::max),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(time_ms: Millis, desired: u32, reason: Reason) -> decide::Decision {
        decide::Decision {
            time_ms,
            scaler: "s".into(),
            series: SeriesKey { namespace: "n".into(), deployment: "d".into(), metric: "m".into() },
            mode: decide::Mode::Auto,
            current: 0,
            desired,
            reason,
            detail: None,
            load: None,
            reactive: None,
            forecast: None,
            model: None,
            recent_error: None,
        }
    }

    /// The Azure VMs' five-window sweep ran out of memory when every
    /// decision of every tuning was kept until the simulation.
    #[test]
    fn the_backtest_keeps_only_changes_of_each_scalers_count() {
        let mut kept = Kept::new(2, 2);
        for (t, n) in [(0, 3), (15, 3), (30, 4), (30, 4), (45, 3), (60, 3)] {
            kept.keep(1, 1, false, &decision(t * SECOND, n, Reason::Forecast));
        }
        kept.keep(0, 0, true, &decision(0, 2, Reason::Forecast));
        kept.keep(0, 0, true, &decision(15 * SECOND, 2, Reason::ReactiveFloor));
        assert_eq!(kept.schedules[3], vec![(0, 3), (30 * SECOND, 4), (45 * SECOND, 3)]);
        assert_eq!(kept.schedules[0], vec![(0, 2)]);
        assert!(kept.schedules[1].is_empty() && kept.schedules[2].is_empty());
        // Reasons are counted for every decision of the common tuning.
        assert_eq!(kept.reasons.get(&(0, Reason::ReactiveFloor)), Some(&1));
        assert_eq!(kept.reasons.len(), 2);
        assert_eq!(kept.seen, 8);
    }

    #[test]
    fn of_two_decisions_at_one_time_the_later_stands() {
        let mut kept = Kept::new(1, 1);
        let tick = 15 * SECOND;
        kept.keep(0, 0, false, &decision(0, 2, Reason::Forecast));
        kept.keep(0, 0, false, &decision(tick, 5, Reason::Forecast));
        kept.keep(0, 0, false, &decision(tick, 4, Reason::ReactiveFloor));
        let mut other = Kept::new(1, 1);
        other.absorb(kept);
        let mut schedule = Schedule::new(other.schedules[0].clone());
        let load = Load { start: 0, step: tick, values: vec![1.0; 4] };
        let out = simulate(&ClusterModel::with_capacity(1.0), &load, &mut schedule, 2, false);
        assert_eq!(out.timeline[1].1, 4, "{:?}", out.timeline);
    }
}
