//! One scaler's decisions, forecast by forecast: the policy without the
//! dataflow around it.
//!
//! For a forecast made at origin `t` over steps of width `s`, the count must
//! hold from `t` (a scale-down takes effect at once) until the decision
//! after next can have pods ready: `t + horizon + startup`, where the
//! horizon defaults to one step because the next decision comes one step
//! later. The count is sized for the highest upper bound of the forecast
//! interval over those steps, and never below the reactive floor
//! `ceil(load now / target per replica)`, which is what an HPA would ask.
//!
//! Between forecasts each short-window reading re-reads the last one, its
//! steps moved by as much of the step under way's surprise as this
//! scaler's earlier surprises lasted ([`super::persistence`]). The step
//! under way itself is sized from its readings once they have shown how
//! far readings stray within a step: its forecast's interval is what was
//! unknown of it before they came in.

use std::cell::Cell;

use super::behavior::{Bound, History};
use super::persistence::{Persistence, StepLoad, StepSpread, UnderWay};
use super::{Decision, FallbackReason, LoadReading, Reason, ScalerSpec, UsedForecast};
use crate::forecast::stage::ForecastRow;
use crate::forecast::{normal_z, sizing_share};
use crate::record::SeriesKey;
use crate::time::{Millis, SECOND, format_duration};

/// Weight of a new reading in the level of reporting pods: a few minutes
/// of readings, so that pods coming and going with scaling are followed.
const PODS_WEIGHT: f64 = 0.25;

/// A scaler's state between decisions.
#[derive(Clone, Debug)]
pub struct Scaler {
    spec: ScalerSpec,
    /// Replicas as last decided; `None` before the first decision.
    current: Option<u32>,
    history: History,
    last_origin: Option<Millis>,
    /// A slow average of recent loads (about an hour of forecasts), the
    /// reference jumps are judged against: one odd reading does not move
    /// it much, a lasting new level does.
    level: Option<f64>,
    /// Held in fallback after bad input: the reason, and since when the
    /// input has been healthy again.
    held: Option<(FallbackReason, Option<Millis>)>,
    /// The origin whose silence was already reported as stale.
    stale_reported: Option<Millis>,
    /// The last forecast judged healthy, which short-window readings
    /// re-read as time moves through it.
    plan: Option<ForecastRow>,
    /// How much of a surprise in the step under way lasts, learnt from
    /// the forecasts whose load is believed.
    persistence: Persistence,
    /// The readings of the plan's step under way.
    step_load: StepLoad,
    /// How far the load strays within a step over the look-ahead: the
    /// uncertainty left in the step under way once its readings are in.
    step_spread: StepSpread,
    /// Time between this scaler's decisions when short-window readings
    /// drive it; `None` decides on forecasts only (every step).
    cadence: Option<Millis>,
    /// The latest event time the data-quality gate (or the pods check)
    /// flagged this series at, and what it said: forecasts up to it were
    /// made from the suspect stretch, so the hold keeps its reason until
    /// data after it arrives.
    flagged: Option<(Millis, String)>,
    /// A slow average of the pods reporting in recent readings.
    pods_level: Option<f64>,
    /// The last sizing computed: (spec level, forecast level) → share of
    /// the interval. Normal quantiles cost far more than the rest of a
    /// decision, and both levels rarely change.
    sizing_cache: Cell<Option<(f64, f64, Sizing)>>,
}

/// How a forecast's interval becomes the bound a count is sized for.
#[derive(Clone, Copy, Debug)]
struct Sizing {
    /// The central interval level sized for.
    level: f64,
    /// The share of the forecast's interval, from the point to its upper
    /// bound, that the level's upper bound lies at.
    width: f64,
    /// The standard normal quantile of the level's upper bound.
    z: f64,
}

/// What is wrong with one forecast's input, if anything.
struct Verdict {
    reason: FallbackReason,
    detail: String,
}

impl Scaler {
    /// A scaler that has not decided yet.
    pub fn new(spec: ScalerSpec) -> Self {
        Scaler {
            spec,
            current: None,
            history: History::default(),
            last_origin: None,
            level: None,
            held: None,
            stale_reported: None,
            plan: None,
            persistence: Persistence::default(),
            step_load: StepLoad::default(),
            step_spread: StepSpread::default(),
            cadence: None,
            flagged: None,
            pods_level: None,
            sizing_cache: Cell::new(None),
        }
    }

    /// Sets the time between decisions when readings drive them.
    pub fn with_cadence(mut self, cadence: Option<Millis>) -> Self {
        self.cadence = cadence;
        self
    }

    /// The spec in force.
    pub fn spec(&self) -> &ScalerSpec {
        &self.spec
    }

    /// Replaces the spec, keeping the history (an edited scaler does not
    /// forget its current count or its stabilisation window).
    pub fn set_spec(&mut self, spec: ScalerSpec) {
        self.spec = spec;
    }

    /// When the data counts as stale if no forecast comes before it.
    pub fn stale_deadline(&self) -> Option<Millis> {
        let last = self.last_origin?;
        (self.stale_reported != Some(last)).then(|| last + self.spec.fallback.stale_after)
    }

    /// Decides on a forecast.
    pub fn on_forecast(&mut self, scaler: &str, row: &ForecastRow) -> Decision {
        let origin = row.origin_ms;
        let load = row.actual;
        let target = self.spec.target_per_replica;
        let verdict = self.judge(row);
        let healthy = verdict.is_none();
        let prev_origin = self.last_origin.replace(origin);
        if prev_origin.is_some_and(|p| p > origin) {
            // Decisions move forward only; the stage never sends an older
            // origin, but a stale clock must not rewind the state.
            self.last_origin = prev_origin;
        }
        // A load that jumped down is not believed: scaling down on a unit
        // change or a broken exporter would take capacity away. One that
        // jumped up may be either, or a real burst: it is believed as far
        // as the reactive floor (what an HPA would ask), while the jump
        // holds the scaler in fallback, never lower, until it has settled.
        let load_trusted = match verdict.as_ref().map(|v| v.reason) {
            Some(FallbackReason::OutOfRange) => false,
            Some(FallbackReason::Jump) => self.level.is_some_and(|l| load > l),
            _ => true,
        };
        // A lasting new level is learnt within a few forecasts, and the
        // hold below keeps the scaler in fallback until the input has been
        // healthy for `recover_after`.
        let in_range = self.in_range(load);
        if in_range {
            self.level = Some(self.level.map_or(load, |l| l + LEVEL_WEIGHT * (load - l)));
        }
        let reactive = load_trusted.then(|| replicas_for(load, target));

        // Input problems hold the scaler in fallback until the input has
        // been healthy for `recover_after`; model problems do not.
        let mut fallback = None;
        match &verdict {
            Some(v) if v.reason.input_is_bad() => {
                self.held = Some((v.reason, None));
                fallback = Some((v.reason, v.detail.clone()));
            }
            _ => {
                if let Some((why, healthy_since)) = self.held {
                    let since = healthy_since.unwrap_or(origin);
                    if let Some((_, detail)) = self.flagged.as_ref().filter(|(until, _)| origin <= *until) {
                        fallback = Some((why, detail.clone()));
                    } else if origin.saturating_sub(since) >= self.spec.fallback.recover_after {
                        self.held = None;
                    } else {
                        self.held = Some((why, Some(since)));
                        let detail = format!(
                            "after {}: healthy for {} of {}",
                            why.as_str(),
                            format_duration(origin - since),
                            format_duration(self.spec.fallback.recover_after)
                        );
                        fallback = Some((FallbackReason::Recovering, detail));
                    }
                }
                if fallback.is_none()
                    && let Some(v) = verdict
                {
                    fallback = Some((v.reason, v.detail));
                }
            }
        }

        // Bursts judged jumps are what the share must learn from; loads
        // not believed are not.
        if load_trusted {
            self.persistence.observe(row);
        }
        let used = self.used_forecast(row, origin, 0.0, None);
        self.plan = (healthy && self.held.is_none() && used.is_some()).then(|| row.clone());
        let current = self.current;
        let (raw, reason, detail) = match fallback {
            Some((why, detail)) if why.input_is_bad() => {
                // Never lower the count on bad input.
                let floor = current.unwrap_or(0).max(reactive.unwrap_or(0));
                (floor, Reason::Fallback(why), Some(detail))
            }
            Some((why, detail)) => (reactive.unwrap_or(0), Reason::Fallback(why), Some(detail)),
            None => {
                let forecast = used.as_ref().map_or(0, |u| replicas_for(u.upper, target));
                let floor = reactive.unwrap_or(0);
                if forecast >= floor {
                    (forecast, Reason::Forecast, None)
                } else {
                    (floor, Reason::ReactiveFloor, None)
                }
            }
        };
        let (current, desired, reason) = self.settle(origin, current, raw, reason);
        self.current = Some(desired);
        Decision {
            time_ms: origin,
            scaler: scaler.to_owned(),
            series: row.series.clone(),
            mode: self.spec.mode,
            current,
            desired,
            reason,
            detail,
            load: load_trusted.then_some(load),
            reactive,
            forecast: used,
            model: Some(row.model.clone()),
            recent_error: row.recent_error,
        }
    }

    /// Clamps `raw` to `[min, max]`, then stabilises and rate-limits it
    /// from `current` (the clamped count before any decision). Returns the
    /// count it started from, the count decided and what bound it; a
    /// fallback keeps its own reason.
    fn settle(&mut self, now: Millis, current: Option<u32>, raw: u32, mut reason: Reason) -> (u32, u32, Reason) {
        let (min, max) = (self.spec.min_replicas, self.spec.max_replicas);
        let clamped = raw.clamp(min, max);
        let in_fallback = matches!(reason, Reason::Fallback(_));
        if clamped != raw && !in_fallback {
            reason = if clamped == min { Reason::Min } else { Reason::Max };
        }
        let current = current.unwrap_or(clamped);
        let (desired, bound) = self.history.normalize(&self.spec.behavior, now, current, clamped, min, max);
        if let Some(bound) = bound
            && !in_fallback
        {
            reason = match bound {
                Bound::Stabilised => Reason::Stabilised,
                Bound::RateLimited => Reason::RateLimited,
                Bound::Min => Reason::Min,
                Bound::Max => Reason::Max,
            };
        }
        (current, desired, reason)
    }

    /// Decides again on a short window's load between forecasts, as time
    /// moves through the last forecast: the count follows the forecast
    /// steps still ahead and the reactive floor for the load just seen.
    /// Without a healthy forecast (or while held in fallback) it only
    /// scales up to the floor, as an HPA would within a sync period. Says
    /// nothing before the first forecast, when the reading is not
    /// believable (out of range, or a jump down), or when the count does
    /// not change.
    pub fn on_load(&mut self, scaler: &str, reading: &LoadReading) -> Option<Decision> {
        let current = self.current?;
        let load = reading.load;
        let believable = self.in_range(load) && !(self.jumps(load) && self.level.is_some_and(|l| load < l));
        if !believable {
            return None;
        }
        let now = reading.end_ms;
        if let Some(detail) = self.pods_missing(reading.pods, current) {
            return self.on_flag(scaler, &reading.series, now, FallbackReason::PodsMissing, detail, Some(load));
        }
        let target = self.spec.target_per_replica;
        let floor = replicas_for(load, target);
        let used = match (&self.held, &self.plan) {
            (None, Some(plan)) => {
                let carried = self
                    .step_load
                    .record(plan, now, load)
                    .map_or(0.0, |(seen, expected)| self.persistence.carried(seen - expected));
                let lead = self.look_ahead(plan.step_s.max(1) * SECOND);
                let under_way = self.step_spread.record(plan, now, load, lead);
                self.used_forecast(plan, now, carried, under_way)
            }
            _ => None,
        };
        let (raw, reason) = match &used {
            Some(u) => {
                let forecast = replicas_for(u.upper, target);
                if forecast >= floor { (forecast, Reason::Forecast) } else { (floor, Reason::ReactiveFloor) }
            }
            // Held in fallback, the scale-up to the floor is the fallback.
            None => match self.held {
                Some((_, Some(_))) => (floor.max(current), Reason::Fallback(FallbackReason::Recovering)),
                Some((why, None)) => (floor.max(current), Reason::Fallback(why)),
                None => (floor.max(current), Reason::ReactiveFloor),
            },
        };
        let (_, desired, reason) = self.settle(now, Some(current), raw, reason);
        if desired == current {
            return None;
        }
        self.current = Some(desired);
        let plan = self.plan.as_ref();
        Some(Decision {
            time_ms: now,
            scaler: scaler.to_owned(),
            series: reading.series.clone(),
            mode: self.spec.mode,
            current,
            desired,
            reason,
            detail: None,
            load: Some(load),
            reactive: Some(floor),
            model: used.as_ref().and(plan).map(|p| p.model.clone()),
            recent_error: used.as_ref().and(plan).and_then(|p| p.recent_error),
            forecast: used,
        })
    }

    /// Reports the data stale at `now` (no forecast since the last origin
    /// for `stale_after`): holds the count, and holds the scaler in
    /// fallback until the data has been healthy again for `recover_after`.
    /// `None` when there is nothing to report.
    pub fn on_stale(&mut self, scaler: &str, series: &SeriesKey, now: Millis) -> Option<Decision> {
        let deadline = self.stale_deadline()?;
        if now < deadline {
            return None;
        }
        let last = self.last_origin?;
        self.stale_reported = Some(last);
        self.held = Some((FallbackReason::Stale, None));
        let detail = format!("no data for {}", format_duration(now - last));
        self.hold(scaler, series, now, FallbackReason::Stale, detail, None)
    }

    /// Takes a flag of the data-quality gate (or of the pods check, with
    /// the load it saw) at `now`: holds the count and the scaler in
    /// fallback for `why` until data after the flag has been healthy for
    /// `recover_after`. Reports only a new hold, not every bad record of
    /// one.
    pub fn on_flag(
        &mut self,
        scaler: &str,
        series: &SeriesKey,
        now: Millis,
        why: FallbackReason,
        detail: String,
        load: Option<f64>,
    ) -> Option<Decision> {
        let newly = self.held.is_none_or(|(held, since)| held != why || since.is_some());
        self.held = Some((why, None));
        let until = self.flagged.as_ref().map_or(now, |(t, _)| now.max(*t));
        self.flagged = Some((until, detail.clone()));
        self.plan = None;
        if !newly {
            return None;
        }
        self.hold(scaler, series, now, why, detail, load)
    }

    /// A decision that keeps the current count (within `[min, max]`), for
    /// a fallback on bad input. `None` before the first decision.
    fn hold(
        &mut self,
        scaler: &str,
        series: &SeriesKey,
        now: Millis,
        why: FallbackReason,
        detail: String,
        load: Option<f64>,
    ) -> Option<Decision> {
        let current = self.current?;
        let (min, max) = (self.spec.min_replicas, self.spec.max_replicas);
        let (desired, _) = self.history.normalize(&self.spec.behavior, now, current, current.clamp(min, max), min, max);
        self.current = Some(desired);
        Some(Decision {
            time_ms: now,
            scaler: scaler.to_owned(),
            series: series.clone(),
            mode: self.spec.mode,
            current,
            desired,
            reason: Reason::Fallback(why),
            detail: Some(detail),
            load,
            reactive: None,
            forecast: None,
            model: None,
            recent_error: None,
        })
    }

    /// Whether too few pods report for the replicas the scaler set, where
    /// more did recently: the load seen would undercount. Learns the usual
    /// number of reporting pods from readings that pass.
    fn pods_missing(&mut self, pods: u32, current: u32) -> Option<String> {
        let share = self.spec.fallback.min_reporting;
        if pods == 0 || share <= 0.0 {
            return None;
        }
        let pods = f64::from(pods);
        let expected = self.pods_level.unwrap_or(pods).min(f64::from(current));
        if expected >= 2.0 && pods < share * expected {
            // The level is not learnt from a collapse, or a lasting one
            // would soon look normal.
            return Some(format!("{pods} pods report metrics where {expected:.0} did"));
        }
        self.pods_level = Some(self.pods_level.map_or(pods, |l| l + PODS_WEIGHT * (pods - l)));
        None
    }

    /// Whether `load` is a load at all: finite, not negative, at most
    /// `max_load`.
    fn in_range(&self, load: f64) -> bool {
        load.is_finite() && load >= 0.0 && self.spec.fallback.max_load.is_none_or(|m| load <= m)
    }

    /// Whether `load` is off the recent level by more than the change
    /// factor, up or down. Ratios are taken against at least what
    /// `min_replicas` carry at their target: near zero they are noise (a
    /// sparse count series goes from 0.01 to 1 all day), and no replica
    /// count depends on loads that small.
    fn jumps(&self, load: f64) -> bool {
        let Some(level) = self.level else { return false };
        let factor = self.spec.fallback.max_change_factor;
        let least = self.spec.target_per_replica * f64::from(self.spec.min_replicas.max(1));
        load > level.max(least) * factor || (level >= least && load * factor < level)
    }

    fn judge(&self, row: &ForecastRow) -> Option<Verdict> {
        let f = &self.spec.fallback;
        let load = row.actual;
        let verdict = |reason, detail: String| Some(Verdict { reason, detail });
        if !self.in_range(load) {
            return verdict(FallbackReason::OutOfRange, format!("load {load} outside [0, {:?}]", f.max_load));
        }
        if self.jumps(load) {
            let level = self.level.unwrap_or(0.0);
            return verdict(FallbackReason::Jump, format!("load {load} against a recent level of {level:.4}"));
        }
        if let Some(prev) = self.last_origin
            && row.origin_ms.saturating_sub(prev) > f.max_gap
        {
            let gap = format_duration(row.origin_ms - prev);
            return verdict(FallbackReason::Gap, format!("no data for {gap} before this window"));
        }
        let usable = !row.upper.is_empty() && row.upper.iter().chain(&row.point).all(|v| v.is_finite());
        if !usable {
            return verdict(FallbackReason::NoForecast, "the forecast is empty or not finite".into());
        }
        if let Some(e) = row.recent_error
            && e > f.max_error
        {
            return verdict(FallbackReason::ModelError, format!("{} recent MASE {e:.2} > {}", row.model, f.max_error));
        }
        None
    }

    /// The steps of `row` that overlap `[now, now + look-ahead]`: the count
    /// set now must hold until the next decision can have its pods ready,
    /// so the look-ahead is the start-up lead plus the time to the next
    /// decision (a reading's width, else a step), at most `horizon`. Each
    /// step is moved by `carried`, the lasting part of the step under
    /// way's surprise. The step under way itself, once its readings have
    /// shown it (`under_way`), is sized from them: their mean and as far
    /// above it as readings stray within a step, at the sizing level. Its
    /// forecast's interval was the uncertainty before any of it was seen,
    /// and stays the most it is sized for: readings that stray more are
    /// noise the reactive floor meets as it comes.
    fn used_forecast(
        &self,
        row: &ForecastRow,
        now: Millis,
        carried: f64,
        under_way: Option<UnderWay>,
    ) -> Option<UsedForecast> {
        let step = row.step_s.max(1) * SECOND;
        let until = now + self.look_ahead(step);
        // Step k covers [origin + k·step, origin + (k+1)·step).
        let first = usize::try_from(now.saturating_sub(row.origin_ms) / step).ok()?;
        let last = usize::try_from(until.saturating_sub(row.origin_ms).div_ceil(step)).ok()?.min(row.upper.len());
        let last = last.max(first + 1);
        let upper = row.upper.get(first..last)?;
        let point = row.point.get(first..last)?;
        let Sizing { level, width, z } = self.sizing(row.level);
        let seen = under_way.filter(|u| u.start == row.origin_ms + first as u64 * step);
        let (mut high, mut top) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (i, (p, u)) in point.iter().zip(upper).enumerate() {
            let (p, forecast) = (p + carried, p + carried + width * (u - p));
            let (p, bound) = match seen {
                Some(seen) if i == 0 => (seen.mean, forecast.min(seen.mean + z * seen.spread)),
                _ => (p, forecast),
            };
            high = high.max(bound);
            top = top.max(p);
        }
        (high.is_finite() && top.is_finite()).then(|| UsedForecast {
            origin_ms: row.origin_ms,
            until_ms: row.origin_ms + last as u64 * step,
            point: top,
            upper: high.max(0.0),
            level,
            step_seen: seen.is_some(),
        })
    }

    /// How long a count set now must hold, for forecasts in steps of
    /// `step`: until the next decision (a reading's width, else a step,
    /// at most `horizon`) can have its pods ready.
    fn look_ahead(&self, step: Millis) -> Millis {
        self.cadence.unwrap_or(step).min(self.spec.horizon) + self.spec.startup
    }

    /// How the count is sized from a forecast at `forecast_level`: the
    /// interval level asked for, the share of the forecast's interval
    /// (from the point to the upper bound) that level's upper bound lies
    /// at (see [`ScalerSpec::level`]), and that bound's normal quantile.
    fn sizing(&self, forecast_level: f64) -> Sizing {
        let asked = self.spec.level.unwrap_or(f64::NAN);
        if let Some((a, f, sizing)) = self.sizing_cache.get()
            && a.to_bits() == asked.to_bits()
            && f.to_bits() == forecast_level.to_bits()
        {
            return sizing;
        }
        let (level, width) = self.compute_sizing(forecast_level);
        let z = if level > 0.0 { normal_z(level).unwrap_or(0.0) } else { 0.0 };
        let sizing = Sizing { level, width, z };
        self.sizing_cache.set(Some((asked, forecast_level, sizing)));
        sizing
    }

    fn compute_sizing(&self, forecast_level: f64) -> (f64, f64) {
        match self.spec.level {
            Some(level) if level != forecast_level => match sizing_share(level, forecast_level) {
                Some(share) => (level, share),
                // A forecast level outside (0, 1) cannot be scaled from;
                // its own bound is used.
                None => (forecast_level, 1.0),
            },
            _ => (forecast_level, 1.0),
        }
    }
}

/// Weight of each new forecast's load in the reference level: about an
/// hour of 5-minute steps.
const LEVEL_WEIGHT: f64 = 1.0 / 12.0;

/// Replicas that carry `load` at `target` each: `ceil(load / target)`.
pub fn replicas_for(load: f64, target: f64) -> u32 {
    let n = (load / target).ceil();
    if n.is_nan() || n <= 0.0 {
        0
    } else if n >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // In range by the checks above.
        n as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Behavior, FallbackSpec, PolicyKind, ScalingPolicy, ScalingRules, SelectPolicy};
    use crate::time::MINUTE;

    fn spec() -> ScalerSpec {
        ScalerSpec { min_replicas: 2, max_replicas: 20, target_per_replica: 10.0, ..ScalerSpec::default() }
    }

    /// A forecast at minute `m` (5-minute steps) with load `actual` and a
    /// flat forecast `point ± spread`.
    fn row(m: u64, actual: f64, point: f64, spread: f64) -> ForecastRow {
        ForecastRow {
            series: SeriesKey { namespace: "shop".into(), deployment: "web".into(), metric: "rps".into() },
            origin_ms: m * MINUTE,
            step_s: 300,
            model: "holt-winters".into(),
            recent_error: Some(0.8),
            level: 0.9,
            actual,
            point: vec![point; 6],
            lower: vec![point - spread; 6],
            upper: vec![point + spread; 6],
            note: None,
        }
    }

    #[test]
    fn sizes_for_the_upper_bound_over_the_look_ahead_only() {
        let mut s = Scaler::new(spec());
        let mut r = row(0, 50.0, 50.0, 10.0);
        // A peak beyond horizon + startup (5 + 2 min → 2 steps) is ignored.
        r.upper[2] = 500.0;
        let d = s.on_forecast("ps", &r);
        assert_eq!((d.desired, d.reason), (6, Reason::Forecast));
        let used = d.forecast.unwrap_or_else(|| panic!("a forecast was used"));
        assert_eq!((used.upper, used.until_ms), (60.0, 10 * MINUTE));
        r.origin_ms = 5 * MINUTE;
        r.upper[1] = 95.0;
        assert_eq!(s.on_forecast("ps", &r).desired, 10);
    }

    #[test]
    fn a_lower_sizing_level_sizes_between_the_point_and_the_upper_bound() {
        // Forecast 100 ± 40 at 90%: z(0.9) = 1.645.
        let sized = |level: Option<f64>| {
            let mut s = Scaler::new(ScalerSpec { level, max_replicas: 1000, target_per_replica: 1.0, ..spec() });
            let d = s.on_forecast("ps", &row(0, 50.0, 100.0, 40.0));
            let used = d.forecast.unwrap_or_else(|| panic!("a forecast was used"));
            (d.desired, used.upper, used.level)
        };
        assert_eq!(sized(None), (140, 140.0, 0.9));
        assert_eq!(sized(Some(0.9)), (140, 140.0, 0.9));
        assert_eq!(sized(Some(0.0)), (100, 100.0, 0.0));
        // z(0.6) = 0.8416: 100 + 40 × 0.8416 / 1.6449 = 120.47.
        let (desired, upper, level) = sized(Some(0.6));
        assert!((upper - 120.466).abs() < 0.01, "{upper}");
        assert_eq!((desired, level), (121, 0.6));
        // Above the forecast's level the bound lies beyond its interval.
        assert!(sized(Some(0.99)).1 > 140.0);
    }

    #[test]
    fn reactive_floor_binds_when_load_exceeds_the_forecast() {
        let mut s = Scaler::new(spec());
        let d = s.on_forecast("ps", &row(0, 120.0, 40.0, 5.0));
        assert_eq!((d.desired, d.reason, d.reactive), (12, Reason::ReactiveFloor, Some(12)));
    }

    #[test]
    fn min_and_max_bind() {
        let mut s = Scaler::new(spec());
        assert_eq!(s.on_forecast("ps", &row(0, 1.0, 1.0, 1.0)).reason, Reason::Min);
        let mut s = Scaler::new(spec());
        let d = s.on_forecast("ps", &row(0, 100.0, 900.0, 10.0));
        assert_eq!((d.desired, d.reason), (20, Reason::Max));
    }

    #[test]
    fn scale_down_is_stabilised_then_allowed() {
        let mut s = Scaler::new(spec());
        assert_eq!(s.on_forecast("ps", &row(0, 100.0, 100.0, 0.0)).desired, 10);
        // Within the 300 s window the earlier 10 holds.
        let d = s.on_forecast("ps", &row(4, 30.0, 30.0, 0.0));
        assert_eq!((d.current, d.desired, d.reason), (10, 10, Reason::Stabilised));
        let d = s.on_forecast("ps", &row(10, 30.0, 30.0, 0.0));
        assert_eq!((d.desired, d.reason), (3, Reason::Forecast));
    }

    #[test]
    fn scale_up_is_rate_limited() {
        let mut s = Scaler::new(spec());
        assert_eq!(s.on_forecast("ps", &row(0, 20.0, 20.0, 0.0)).desired, 2);
        // The default allows +100% or +4 pods per 15 s: 20 periods since the
        // last decision allow far more than the 19 wanted.
        assert_eq!(s.on_forecast("ps", &row(5, 20.0, 190.0, 0.0)).desired, 19);
        // 4 pods per 10 minutes: half a period since the last decision
        // still allows one period's change.
        let mut b = Behavior::default();
        b.scale_up.policies = vec![ScalingPolicy { kind: PolicyKind::Pods, value: 4, period: 10 * MINUTE }];
        let mut s = Scaler::new(ScalerSpec { behavior: b, ..spec() });
        assert_eq!(s.on_forecast("ps", &row(0, 20.0, 20.0, 0.0)).desired, 2);
        let d = s.on_forecast("ps", &row(5, 20.0, 190.0, 0.0));
        assert_eq!((d.desired, d.reason), (6, Reason::RateLimited));
    }

    #[test]
    fn out_of_range_and_jumps_never_scale_down() {
        let mut s = Scaler::new(ScalerSpec {
            fallback: FallbackSpec { max_load: Some(1e6), ..FallbackSpec::default() },
            behavior: Behavior {
                scale_down: ScalingRules { stabilization: 0, select: SelectPolicy::Max, policies: vec![] },
                ..Behavior::default()
            },
            ..spec()
        });
        assert_eq!(s.on_forecast("ps", &row(0, 150.0, 150.0, 0.0)).desired, 15);
        // A unit change upstream: the load reads 1000× lower.
        let d = s.on_forecast("ps", &row(5, 0.15, 0.15, 0.0));
        assert_eq!((d.desired, d.reason), (15, Reason::Fallback(FallbackReason::Jump)));
        // Held, never lower, while the new level is still a jump from the
        // learnt one and then for 15 min of healthy readings; released after.
        let (mut m, mut first_healthy) = (10, None);
        let released = loop {
            let d = s.on_forecast("ps", &row(m, 0.15, 0.15, 0.0));
            match d.reason {
                Reason::Fallback(FallbackReason::Jump) => assert!(first_healthy.is_none(), "{m}"),
                Reason::Fallback(FallbackReason::Recovering) => {
                    first_healthy.get_or_insert(m);
                }
                _ => break m,
            }
            assert_eq!(d.desired, 15, "{m}");
            m += 5;
            assert!(m < 6 * 60, "never released");
        };
        assert!(first_healthy.is_some_and(|h| released >= h + 15), "{first_healthy:?} {released}");
        let d = s.on_forecast("ps", &row(released + 5, 0.15, 0.15, 0.0));
        assert_eq!((d.desired, d.reason), (2, Reason::Min));
        // Tiny loads, below one replica's target, jump by ratios without
        // being held: nothing depends on them.
        let mut quiet = Scaler::new(spec());
        quiet.on_forecast("ps", &row(0, 0.01, 0.01, 0.0));
        assert_eq!(quiet.on_forecast("ps", &row(5, 5.0, 5.0, 0.0)).reason, Reason::Min);
        let m = released + 5;
        let d = s.on_forecast("ps", &row(m + 5, f64::INFINITY, 1.0, 0.0));
        assert_eq!((d.desired, d.reason), (2, Reason::Fallback(FallbackReason::OutOfRange)));
        let d = s.on_forecast("ps", &row(m + 10, 2e6, 1.0, 0.0));
        assert_eq!((d.desired, d.reason, d.load), (2, Reason::Fallback(FallbackReason::OutOfRange), None));
    }

    #[test]
    fn a_gap_holds_the_count_and_a_high_model_error_goes_reactive() {
        let mut s = Scaler::new(spec());
        assert_eq!(s.on_forecast("ps", &row(0, 100.0, 100.0, 0.0)).desired, 10);
        let d = s.on_forecast("ps", &row(60, 20.0, 20.0, 0.0));
        assert_eq!((d.desired, d.reason), (10, Reason::Fallback(FallbackReason::Gap)));
        let mut s = Scaler::new(spec());
        let mut r = row(0, 55.0, 200.0, 0.0);
        r.recent_error = Some(12.0);
        let d = s.on_forecast("ps", &r);
        assert_eq!((d.desired, d.reason, d.reactive), (6, Reason::Fallback(FallbackReason::ModelError), Some(6)));
        let mut r = row(5, 55.0, 200.0, 0.0);
        r.upper[0] = f64::NAN;
        assert_eq!(s.on_forecast("ps", &r).reason, Reason::Fallback(FallbackReason::NoForecast));
    }

    #[test]
    fn a_flag_holds_the_count_until_data_after_it_has_recovered() {
        let mut s = Scaler::new(ScalerSpec {
            behavior: Behavior {
                scale_down: ScalingRules { stabilization: 0, select: SelectPolicy::Max, policies: vec![] },
                ..Behavior::default()
            },
            ..spec()
        });
        assert_eq!(s.on_forecast("ps", &row(0, 150.0, 150.0, 0.0)).desired, 15);
        let series = row(0, 0.0, 0.0, 0.0).series;
        let d = s.on_flag("ps", &series, 7 * MINUTE, FallbackReason::TimestampUnit, "ms".into(), None);
        let d = d.expect("a new hold is reported");
        assert_eq!((d.current, d.desired, d.reason), (15, 15, Reason::Fallback(FallbackReason::TimestampUnit)));
        // More bad records of the same hold say nothing more.
        assert!(s.on_flag("ps", &series, 8 * MINUTE, FallbackReason::TimestampUnit, "ms".into(), None).is_none());
        // A forecast from before the last flag keeps the flag's reason, even
        // though its load asks for 3 replicas; later ones recover first.
        let d = s.on_forecast("ps", &row(5, 30.0, 30.0, 0.0));
        assert_eq!((d.desired, d.reason), (15, Reason::Fallback(FallbackReason::TimestampUnit)));
        let d = s.on_forecast("ps", &row(10, 30.0, 30.0, 0.0));
        assert_eq!((d.desired, d.reason), (15, Reason::Fallback(FallbackReason::Recovering)));
        // Readings meanwhile only scale up.
        let reading = |m: u64, load: f64| LoadReading { series: series.clone(), end_ms: m * MINUTE, load, pods: 0 };
        assert!(s.on_load("ps", &reading(11, 30.0)).is_none());
        assert_eq!(s.on_load("ps", &reading(12, 170.0)).map(|d| d.desired), Some(17));
        let d = s.on_forecast("ps", &row(25, 30.0, 30.0, 0.0));
        assert_eq!((d.desired, d.reason), (3, Reason::Forecast));
    }

    #[test]
    fn pods_vanishing_from_the_metrics_hold_the_count() {
        let mut s = Scaler::new(spec()).with_cadence(Some(MINUTE));
        assert_eq!(s.on_forecast("ps", &row(0, 100.0, 100.0, 0.0)).desired, 10);
        let series = row(0, 0.0, 0.0, 0.0).series;
        let reading =
            |m: u64, load: f64, pods: u32| LoadReading { series: series.clone(), end_ms: m * MINUTE, load, pods };
        for m in 1..4 {
            assert!(s.on_load("ps", &reading(m, 100.0, 10)).is_none());
        }
        // Two pods of ten report: the load seen is a fifth of the real one.
        let d = s.on_load("ps", &reading(4, 20.0, 2)).expect("the hold is reported");
        assert_eq!((d.desired, d.reason), (10, Reason::Fallback(FallbackReason::PodsMissing)));
        assert!(s.on_load("ps", &reading(5, 20.0, 2)).is_none());
        let d = s.on_forecast("ps", &row(5, 20.0, 20.0, 0.0));
        assert_eq!((d.desired, d.reason), (10, Reason::Fallback(FallbackReason::PodsMissing)));
        // A scaler whose pods never matched its replicas (one exporter for
        // the whole deployment) is not flagged.
        let mut s = Scaler::new(spec()).with_cadence(Some(MINUTE));
        s.on_forecast("ps", &row(0, 100.0, 100.0, 0.0));
        assert!(s.on_load("ps", &reading(1, 100.0, 1)).is_none());
        assert!(s.on_load("ps", &reading(2, 100.0, 1)).is_none());
    }

    #[test]
    fn stale_data_holds_once_per_silence() {
        let mut s = Scaler::new(spec());
        let key = row(0, 0.0, 0.0, 0.0).series;
        assert!(s.on_stale("ps", &key, 60 * MINUTE).is_none(), "nothing decided yet");
        s.on_forecast("ps", &row(0, 100.0, 100.0, 0.0));
        assert_eq!(s.stale_deadline(), Some(15 * MINUTE));
        assert!(s.on_stale("ps", &key, 14 * MINUTE).is_none());
        let d = s.on_stale("ps", &key, 15 * MINUTE).unwrap_or_else(|| panic!("stale"));
        assert_eq!((d.desired, d.reason), (10, Reason::Fallback(FallbackReason::Stale)));
        assert_eq!(s.stale_deadline(), None);
        assert!(s.on_stale("ps", &key, 30 * MINUTE).is_none());
    }

    #[test]
    fn short_window_loads_scale_up_between_forecasts_but_never_down() {
        let mut s = Scaler::new(spec());
        let reading =
            |m: u64, load: f64| LoadReading { series: row(0, 0.0, 0.0, 0.0).series, end_ms: m * MINUTE, load, pods: 0 };
        assert!(s.on_load("ps", &reading(1, 500.0)).is_none(), "nothing before the first forecast");
        s.on_forecast("ps", &row(0, 50.0, 50.0, 0.0));
        assert!(s.on_load("ps", &reading(1, 20.0)).is_none(), "no scale-down");
        assert!(s.on_load("ps", &reading(2, 50.0)).is_none(), "already enough");
        let d = s.on_load("ps", &reading(3, 75.0)).unwrap_or_else(|| panic!("a scale-up"));
        assert_eq!((d.current, d.desired, d.reason), (5, 8, Reason::ReactiveFloor));
        // A jump up scales up as far as the floor (here, maxReplicas);
        // a jump down is not believed.
        let d = s.on_load("ps", &reading(4, 1e9)).unwrap_or_else(|| panic!("a scale-up"));
        assert_eq!((d.desired, d.reason), (20, Reason::Max));
        assert!(s.on_load("ps", &reading(5, 0.01)).is_none(), "a jump down is not believed");
    }

    /// Regression: on sparse count series (tweets per 5 minutes on NAB,
    /// mostly 0 at night) the hour-long level sinks near zero and every
    /// count of a few was judged a jump: half of all decisions on some
    /// series were held in fallback, never scaling down.
    #[test]
    fn a_sparse_count_series_is_not_a_jump_from_near_zero() {
        let mut s = Scaler::new(ScalerSpec { min_replicas: 1, target_per_replica: 1.0, ..spec() });
        for m in 0..24 {
            s.on_forecast("ps", &row(5 * m, 0.0, 0.1, 0.1));
        }
        let d = s.on_forecast("ps", &row(120, 3.0, 0.1, 0.1));
        assert_eq!((d.desired, d.reason), (3, Reason::ReactiveFloor));
        // Far above what min_replicas carry, it is a jump.
        let d = s.on_forecast("ps", &row(125, 500.0, 0.1, 0.1));
        assert_eq!(d.reason, Reason::Fallback(FallbackReason::Jump));
    }

    /// Regression: a burst more than `max_change_factor` above the recent
    /// level (Twitter volumes on the NAB trace) was judged a jump and
    /// ignored, so the scaler held its count through the burst where an
    /// HPA scaled up.
    #[test]
    fn a_burst_judged_a_jump_still_scales_up_to_the_reactive_floor() {
        let mut s = Scaler::new(ScalerSpec { max_replicas: 500, ..spec() });
        assert_eq!(s.on_forecast("ps", &row(0, 20.0, 20.0, 0.0)).desired, 2);
        let d = s.on_forecast("ps", &row(5, 2500.0, 20.0, 0.0));
        assert_eq!((d.desired, d.reason), (250, Reason::Fallback(FallbackReason::Jump)));
        assert_eq!(d.reactive, Some(250));
        // Back to the old level: held (stabilised) in fallback, not lower.
        let d = s.on_forecast("ps", &row(10, 20.0, 20.0, 0.0));
        assert!(matches!(d.reason, Reason::Fallback(_)), "{:?}", d.reason);
        assert_eq!(d.desired, 250);
    }

    #[test]
    fn readings_follow_the_forecast_steps_still_ahead() {
        let spec = ScalerSpec { startup: 2 * MINUTE, ..spec() };
        let spec = ScalerSpec {
            behavior: Behavior {
                scale_down: ScalingRules { stabilization: 0, select: SelectPolicy::Max, policies: vec![] },
                ..Behavior::default()
            },
            ..spec
        };
        let mut s = Scaler::new(spec).with_cadence(Some(MINUTE));
        let mut r = row(0, 50.0, 50.0, 0.0);
        r.upper[1] = 80.0;
        // At the origin, [0, 3 min] covers only the first step.
        assert_eq!(s.on_forecast("ps", &r).desired, 5);
        let reading = |m: u64| LoadReading { series: r.series.clone(), end_ms: m * MINUTE, load: 50.0, pods: 0 };
        assert!(s.on_load("ps", &reading(1)).is_none());
        assert!(s.on_load("ps", &reading(2)).is_none(), "[2, 5 min] ends where the second step starts");
        // At 3 min, [3, 6 min] reaches the second step: pods asked for now
        // are ready when it starts.
        let d = s.on_load("ps", &reading(3)).unwrap_or_else(|| panic!("a scale-up for the next step"));
        assert_eq!((d.desired, d.reason), (8, Reason::Forecast));
        assert_eq!(d.forecast.map(|f| f.upper), Some(80.0));
    }

    /// A 2-minute start-up and no scale-down stabilisation: the count
    /// follows each re-read at once.
    fn unstabilised() -> ScalerSpec {
        ScalerSpec {
            startup: 2 * MINUTE,
            behavior: Behavior {
                scale_down: ScalingRules { stabilization: 0, select: SelectPolicy::Max, policies: vec![] },
                ..Behavior::default()
            },
            ..spec()
        }
    }

    /// A scaler without scale-down stabilisation, re-reading 5-minute
    /// forecasts of 50 ± 30 (upper bound 80) every 15 s; `load(step, i)`
    /// is the `i`-th reading (1 to 20) of step `step`. Returns the counts
    /// decided during the last step, by reading.
    fn counts_in_last_step(steps: u64, load: impl Fn(u64, u64) -> f64) -> Vec<u32> {
        decisions_in_last_step(steps, load).into_iter().map(|(count, _)| count).collect()
    }

    /// The count at the origin and after each reading of the last of
    /// `steps` forecasts, with whether the decision that set it had seen
    /// the step under way.
    fn decisions_in_last_step(steps: u64, load: impl Fn(u64, u64) -> f64) -> Vec<(u32, bool)> {
        let spec = unstabilised();
        let mut s = Scaler::new(spec).with_cadence(Some(15 * SECOND));
        let seen = |d: &Decision| d.forecast.as_ref().is_some_and(|f| f.step_seen);
        let mut out = vec![];
        for k in 0..steps {
            let d = s.on_forecast("ps", &row(5 * k, 50.0, 50.0, 30.0));
            out = vec![(d.desired, seen(&d))];
            let mut last = (d.desired, seen(&d));
            for i in 1..=20 {
                let reading = LoadReading {
                    series: d.series.clone(),
                    end_ms: 5 * k * MINUTE + i * 15 * SECOND,
                    load: load(k, i),
                    pods: 0,
                };
                if let Some(d) = s.on_load("ps", &reading) {
                    last = (d.desired, seen(&d));
                }
                out.push(last);
            }
        }
        out
    }

    #[test]
    fn the_step_under_way_is_sized_from_its_readings_once_their_spread_is_known() {
        // Before readings have shown how far they stray within a step, the
        // step is sized from its forecast's bound all through.
        assert_eq!(decisions_in_last_step(11, |_, _| 50.0), vec![(8, false); 21]);
        // Readings that hold still: from the first one, the rest of the
        // step is sized for what they show, until the look-ahead (2 min
        // start-up and 15 s to the next reading) reaches the next step,
        // sized from its forecast again. The decisions say when the step
        // under way was seen.
        let decisions = decisions_in_last_step(12, |_, _| 50.0);
        assert_eq!(decisions[0], (8, false), "at the origin nothing of the step is seen");
        assert!(decisions[1..].iter().all(|&(_, seen)| seen), "{decisions:?}");
        let counts: Vec<u32> = decisions.iter().map(|&(count, _)| count).collect();
        assert_eq!(&counts[1..12], &[5; 11]);
        assert_eq!(&counts[12..], &[8; 9]);
        // Readings that stray (40 and 60 in turn): the step under way keeps
        // headroom above their mean, less than its forecast's; at times
        // more than the highest reading needs (6 replicas).
        let counts = counts_in_last_step(12, |k, i| if (k + i) % 2 == 0 { 40.0 } else { 60.0 });
        assert!(counts[1..12].iter().all(|c| (6..=7).contains(c)), "{counts:?}");
        assert!(counts[1..12].contains(&7), "{counts:?}");
        // Readings that stray more than the forecast's interval (0 and 100
        // in turn) do not widen it: the reactive floor meets their peaks.
        let counts = counts_in_last_step(12, |k, i| if (k + i) % 2 == 0 { 0.0 } else { 100.0 });
        assert!(counts[1..12].iter().all(|c| (8..=10).contains(c)), "{counts:?}");
        assert!(counts[1..12].contains(&8), "{counts:?}");
    }

    /// Regression: a forecast made at the height of a tweet burst (NAB)
    /// was re-read for the steps after it while the readings already
    /// showed the burst over, and held its replicas ten minutes longer.
    #[test]
    fn a_burst_that_is_over_does_not_keep_its_replicas() {
        let spec = unstabilised();
        // Last-value forecasts over `history`, then one at 100 and
        // readings of 60 during its first step: the last count re-read.
        let probe = |history: &[f64]| {
            let mut s = Scaler::new(spec.clone()).with_cadence(Some(MINUTE));
            let mut m = 0;
            for &y in history {
                s.on_forecast("ps", &row(m, y, y, 0.0));
                m += 5;
            }
            let d = s.on_forecast("ps", &row(m, 100.0, 100.0, 0.0));
            assert_eq!(d.desired, 10);
            let reading =
                |k: u64| LoadReading { series: d.series.clone(), end_ms: (m + k) * MINUTE, load: 60.0, pods: 0 };
            (1..4).filter_map(|k| s.on_load("ps", &reading(k))).map(|d| (d.desired, d.reason)).last()
        };
        // Falls that lasted: the forecast moves down with the readings.
        let lasting: Vec<f64> = (0..100).map(|i| if i % 4 < 2 { 100.0 } else { 60.0 }).collect();
        assert_eq!(probe(&lasting), Some((6, Reason::Forecast)));
        // Falls that came straight back: the forecast holds.
        let passing: Vec<f64> = (0..100).map(|i| if i % 2 == 0 { 100.0 } else { 60.0 }).collect();
        assert_eq!(probe(&passing), None);
    }

    #[test]
    fn replicas_for_rounds_up_and_saturates() {
        assert_eq!(replicas_for(10.0, 10.0), 1);
        assert_eq!(replicas_for(10.01, 10.0), 2);
        assert_eq!(replicas_for(0.0, 10.0), 0);
        assert_eq!(replicas_for(f64::NAN, 10.0), 0);
        assert_eq!(replicas_for(1e300, 1.0), u32::MAX);
    }
}
