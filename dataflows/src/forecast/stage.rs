//! The forecast stage of the dataflow: per series, an online forecast each
//! time a window of the forecast step closes.
//!
//! Tumbling rows of the configured width enter (every revision); a window
//! is *closed* when the frontier reaches its end, so its last revision is
//! final. Closed windows are pushed, in event-time order, into the series'
//! [`Ensemble`] (missing steps as gaps), and the selected model's forecast
//! leaves as a [`ForecastRow`] at the window's end. Series stay on the
//! worker the window operator chose by their stable hash, so the fits of
//! many deployments are spread over the workers by deployment key.
//!
//! # Refits never hold up the stream for more than one series' fit
//!
//! Every series refits on its own phase of the schedule, and yet with
//! 10,000 deployments and hourly refits of 5-minute windows some 830
//! series come due at each close, about 9 ms each: seconds in which a
//! worker running them in line would do nothing else. So the stage pushes
//! with [`Ensemble::push_deferred`]: a push that hits the schedule updates
//! the models as between refits, the forecast of that window leaves at
//! once (from the models updated with its value), and the series joins a
//! queue of due refits. An activation that emitted forecasts runs none and
//! asks to be activated again after 1 ms of wall time (`YIELD_AFTER_EMIT`),
//! so that the decide stage has them first; every other activation runs
//! **one** due refit and, while more remain, asks timely to activate it
//! again, so the decide stage and the ingest loop run between two fits.
//!
//! The install point is fixed in event time, not by how busy the worker
//! was: a refit made due by the window ending at `T` is installed before
//! the series' window ending at `T + step` is pushed. Normally idle
//! activations have run it long before; if not, the close of that next
//! window runs it first. Either way the models that forecast `T + step`
//! are the same, so forecasts are bit for bit the same with 1 or 4 workers
//! and whatever the wall-clock timing. The queue is in the order the
//! windows closed (window end, then series), a refit whose series is
//! dropped or whose input has ended is discarded, and [`RefitCounters`]
//! tell how many ran in idle activations and how many were forced by the
//! next window.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::{Ensemble, EnsembleConfig, Seasons};
use crate::error::{Error, Result};
use crate::features::FeatureRow;
use crate::record::Series;
use crate::time::{HOUR, MINUTE, Millis, SECOND};

/// Which value of a window is forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// The deployment's total: the window mean times its distinct pods. It
    /// does not change when replicas are added, which a per-pod mean does.
    Total,
    /// The window mean (per pod).
    Avg,
}

/// Forecast stage settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastSettings {
    /// The step: the width of the tumbling windows forecast (default 5 min).
    pub step: Millis,
    /// How far ahead (default 30 min), rounded up to whole steps.
    pub horizon: Millis,
    /// Interval level (default 0.9).
    pub level: f64,
    /// Event time between refits (default 1 h).
    pub refit_every: Millis,
    /// Which value is forecast (default the deployment total).
    pub signal: Signal,
    /// The sizing level the models are ranked for (default the decide
    /// stage's, 0.9; see [`EnsembleConfig::selection_level`]).
    pub selection_level: f64,
    /// The leads the models' sizing loss is taken over (default 2; see
    /// [`EnsembleConfig::sizing_leads`] and [`ForecastSettings::sizing_leads_for`]).
    pub sizing_leads: usize,
}

impl ForecastSettings {
    /// The leads a decision reads for a pod start-up lead of `startup`:
    /// the step the decision is in and those until the next decision's
    /// pods can be ready, `1 + ceil(startup / step)`.
    pub fn sizing_leads_for(step: Millis, startup: Millis) -> usize {
        usize::try_from(1 + startup.div_ceil(step.max(1))).unwrap_or(usize::MAX)
    }
}

impl Default for ForecastSettings {
    fn default() -> Self {
        ForecastSettings {
            step: 5 * MINUTE,
            horizon: 30 * MINUTE,
            level: 0.9,
            refit_every: HOUR,
            signal: Signal::Total,
            selection_level: crate::decide::DEFAULT_LEVEL,
            sizing_leads: 2,
        }
    }
}

impl ForecastSettings {
    /// Checks the settings against the tumbling widths computed.
    pub fn validate(self, tumbling: &[Millis]) -> Result<Self> {
        let invalid = |field, reason: String| Err(Error::InvalidSetting { field, reason });
        if !tumbling.contains(&self.step) {
            return invalid(
                "forecast.step",
                format!("{} ms is not one of the tumbling widths {tumbling:?}", self.step),
            );
        }
        if Seasons::from_step(self.step / SECOND).is_err() || !self.step.is_multiple_of(SECOND) {
            return invalid("forecast.step", "must divide a day into whole steps of whole seconds".into());
        }
        if self.horizon < self.step {
            return invalid("forecast.horizon", "must be at least one step".into());
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return invalid("forecast.level", format!("{} is not in (0, 1)", self.level));
        }
        if !(0.0..1.0).contains(&self.selection_level) {
            return invalid("decide.level", format!("{} is not in [0, 1)", self.selection_level));
        }
        if self.refit_every < self.step {
            return invalid("forecast.refit_every", "must be at least one step".into());
        }
        Ok(self)
    }

    fn steps(&self, d: Millis) -> usize {
        usize::try_from(d.div_ceil(self.step)).unwrap_or(usize::MAX)
    }
}

/// One forecast, made when a window closed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastRow {
    /// Namespace, deployment, metric.
    #[serde(flatten)]
    pub series: crate::record::SeriesKey,
    /// End of the window just closed: the forecast's origin (ms).
    pub origin_ms: Millis,
    /// Step in seconds; `point[i]` is for the step ending `(i + 1)` steps
    /// after the origin.
    pub step_s: u64,
    /// The model the series' recent errors selected.
    pub model: String,
    /// Its recent out-of-sample MASE (`null` before it was scored).
    pub recent_error: Option<f64>,
    /// Interval level.
    pub level: f64,
    /// The value of the window just closed: the load seen at the origin.
    pub actual: f64,
    /// Point forecasts.
    pub point: Vec<f64>,
    /// Lower interval bounds.
    pub lower: Vec<f64>,
    /// Upper interval bounds.
    pub upper: Vec<f64>,
    /// Why a simpler model was used, when one was.
    pub note: Option<String>,
}

/// How the stage's due refits ran (read by tests; the host does not export
/// them yet). A
/// refit here is what [`Ensemble::run_due_refit`] runs: a scheduled refit,
/// or the first fit of models that just reached their minimum history.
#[derive(Clone, Default, Debug)]
pub struct RefitCounters {
    /// Refits run from the queue, one per activation of the operator.
    pub idle: Rc<Cell<u64>>,
    /// Refits still due when the series' next window closed, and so run
    /// before it was pushed: the worker was behind.
    pub forced: Rc<Cell<u64>>,
    /// The most refits one activation ran from the queue (the design says
    /// one; forced refits are not counted here).
    pub most_idle_in_one_activation: Rc<Cell<u64>>,
    /// Entries in the queue after the last activation (an entry whose
    /// refit was forced counts until it comes up and is skipped).
    pub waiting: Rc<Cell<u64>>,
}

/// Wall time the operator leaves to the rest of the worker after it emitted
/// forecasts, before its next refit. Timely runs a worker's activated
/// operators in dataflow order, so an immediate re-activation would run a
/// fit before the decide stage and the sinks downstream had the forecasts
/// just emitted. Only latency depends on it: the install point of a refit
/// is fixed in event time.
const YIELD_AFTER_EMIT: Duration = Duration::from_millis(1);

struct SeriesForecaster {
    ensemble: Ensemble,
    last_end: Option<Millis>,
    /// Window end → latest value, for windows not yet closed.
    pending: BTreeMap<Millis, f64>,
}

/// Builds the forecast stage over the feature rows.
pub fn forecasts<'scope>(
    rows: StreamVec<'scope, Millis, FeatureRow>,
    settings: &ForecastSettings,
) -> StreamVec<'scope, Millis, ForecastRow> {
    forecasts_counted(rows, settings, RefitCounters::default())
}

/// [`forecasts`], counting how the refits ran into `counters`.
pub fn forecasts_counted<'scope>(
    rows: StreamVec<'scope, Millis, FeatureRow>,
    settings: &ForecastSettings,
    counters: RefitCounters,
) -> StreamVec<'scope, Millis, ForecastRow> {
    let settings = settings.clone();
    let scope = rows.scope();
    let step_secs = settings.step / SECOND;
    let horizon = settings.steps(settings.horizon);
    let refit_every = settings.steps(settings.refit_every);
    // Validated settings give a valid step; fall back to 5 minutes if not.
    let seasons = Seasons::from_step(step_secs).or_else(|_| Seasons::from_step(300));
    // Tumbling rows are already on the worker that owns their series (the
    // window operator exchanged partials by the same hash), so they stay
    // where they are: no exchange, and no serialization of rows.
    rows.unary_frontier::<CapacityContainerBuilder<Vec<ForecastRow>>, _, _, _>(Pipeline, "Forecast", move |_, info| {
        let activator = scope.activator_for(info.address);
        let mut series: FxHashMap<Series, SeriesForecaster> = FxHashMap::default();
        // Window end → a capability to emit there, and the series with a
        // window ending there.
        let mut closing: BTreeMap<Millis, (Capability<Millis>, Vec<Series>)> = BTreeMap::new();
        // Series with a refit due, in the order their windows closed. An
        // entry whose refit already ran (forced by the next window) or whose
        // series was dropped is skipped when it comes up.
        let mut due: VecDeque<Series> = VecDeque::new();
        // The frontier at which idle series were last dropped.
        let mut retained_at: Option<Millis> = None;
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                for batch in data {
                    for row in batch.drain(..) {
                        let FeatureRow::Tumbling(r) = row else { continue };
                        if r.width_s * 1000 != settings.step {
                            continue;
                        }
                        let Ok(seasons) = &seasons else { continue };
                        let value = match settings.signal {
                            Signal::Total => r.avg * f64::from(r.pods),
                            Signal::Avg => r.avg,
                        };
                        if !series.contains_key(&r.series) {
                            let mut config = EnsembleConfig::for_seasons(seasons);
                            config.refit_every = refit_every;
                            config.score_horizon = horizon;
                            config.selection_level = Some(settings.selection_level);
                            config.sizing_leads = settings.sizing_leads.clamp(1, horizon.max(1));
                            // Validated settings always give a valid config.
                            let Ok(mut ensemble) = Ensemble::new(config) else { continue };
                            ensemble.stagger_refits((r.series.route() % refit_every.max(1) as u64) as usize);
                            let fresh = SeriesForecaster { ensemble, last_end: None, pending: BTreeMap::new() };
                            series.insert(r.series.clone(), fresh);
                        }
                        let Some(state) = series.get_mut(&r.series) else { continue };
                        if state.pending.insert(r.end_ms, value).is_none() {
                            let entry =
                                closing.entry(r.end_ms).or_insert_with(|| (cap.delayed(&r.end_ms, 0), Vec::new()));
                            entry.1.push(r.series.clone());
                        }
                    }
                }
            });
            let limit = frontier.frontier().first().copied();
            let mut emitted = false;
            while let Some(entry) = closing.first_entry() {
                if limit.is_some_and(|f| *entry.key() >= f) {
                    break;
                }
                let end = *entry.key();
                let (cap, mut closed) = entry.remove();
                closed.sort();
                emitted = true;
                let mut session = output.session(&cap);
                for s in closed {
                    let Some(state) = series.get_mut(&s) else { continue };
                    let Some(value) = state.pending.remove(&end) else { continue };
                    if let Some(last) = state.last_end {
                        let missing = end.saturating_sub(last) / settings.step;
                        if missing > state.ensemble.config().max_history as u64 {
                            // A refit still due goes with the old models.
                            if let Ok(fresh) = Ensemble::new(state.ensemble.config().clone()) {
                                state.ensemble = fresh;
                            }
                        } else {
                            // `push_deferred` would run it too; here it is
                            // counted.
                            if state.ensemble.run_due_refit() {
                                counters.forced.set(counters.forced.get() + 1);
                            }
                            // Gaps refit in line: no forecast is made between
                            // them, and the next value is their install point.
                            for _ in 1..missing {
                                state.ensemble.push(f64::NAN);
                            }
                        }
                    }
                    state.last_end = Some(end);
                    if state.ensemble.push_deferred(value) {
                        due.push_back(s.clone());
                    }
                    if let Ok(selected) = state.ensemble.forecast(horizon, settings.level) {
                        session.give(ForecastRow {
                            series: s.key().clone(),
                            origin_ms: end,
                            step_s: step_secs,
                            model: selected.model.to_string(),
                            recent_error: selected.recent_error.is_finite().then_some(selected.recent_error),
                            level: selected.level,
                            actual: value,
                            point: selected.forecast.point,
                            lower: selected.forecast.lower,
                            upper: selected.forecast.upper,
                            note: selected.note,
                        });
                    }
                }
            }
            // A series without a window for a week is gone (its deployment
            // deleted or renamed): drop its models, bounding memory under churn.
            // Only when the frontier moved: activations that run one refit
            // each come by the hundreds between two advances, and nothing
            // can go stale without one.
            if let Some(f) = limit
                && retained_at != Some(f)
            {
                retained_at = Some(f);
                series.retain(|_, s| !s.pending.is_empty() || s.last_end.is_some_and(|e| e + 7 * 24 * HOUR > f));
            }
            if limit.is_none() {
                // The input is exhausted: no window will install them.
                due.clear();
            }
            // One refit per activation, so that other operators run between
            // fits; timely activates the operator again while some are due.
            // Not in an activation that emitted: its forecasts leave when it
            // returns, and the decide stage should not wait for a fit.
            let mut ran = 0;
            while !emitted && let Some(s) = due.pop_front() {
                if series.get_mut(&s).is_some_and(|state| state.ensemble.run_due_refit()) {
                    ran += 1;
                    break;
                }
            }
            counters.idle.set(counters.idle.get() + ran);
            let most = &counters.most_idle_in_one_activation;
            most.set(most.get().max(ran));
            counters.waiting.set(due.len() as u64);
            if !due.is_empty() {
                if emitted {
                    activator.activate_after(YIELD_AFTER_EMIT);
                } else {
                    activator.activate();
                }
            }
        }
    })
}
