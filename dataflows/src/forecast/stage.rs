//! The forecast stage of the dataflow: per series, an online forecast each
//! time a window of the forecast step closes.
//!
//! Tumbling rows of the configured width enter (every revision); a window
//! is *closed* when the frontier reaches its end, so its last revision is
//! final. Closed windows are pushed, in event-time order, into the series'
//! [`Ensemble`] (missing steps as gaps), and the selected model's forecast
//! leaves as a [`ForecastRow`] at the window's end. Series stay on the
//! worker the window operator chose by their stable hash, and every series
//! refits on its own
//! phase of the schedule, so a refit holds up the stream for one series'
//! fit at a time, not all of them at once.

use std::collections::BTreeMap;

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
}

impl Default for ForecastSettings {
    fn default() -> Self {
        ForecastSettings {
            step: 5 * MINUTE,
            horizon: 30 * MINUTE,
            level: 0.9,
            refit_every: HOUR,
            signal: Signal::Total,
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
    let settings = settings.clone();
    let step_secs = settings.step / SECOND;
    let horizon = settings.steps(settings.horizon);
    let refit_every = settings.steps(settings.refit_every);
    // Validated settings give a valid step; fall back to 5 minutes if not.
    let seasons = Seasons::from_step(step_secs).or_else(|_| Seasons::from_step(300));
    // Tumbling rows are already on the worker that owns their series (the
    // window operator exchanged partials by the same hash), so they stay
    // where they are: no exchange, and no serialization of rows.
    rows.unary_frontier::<CapacityContainerBuilder<Vec<ForecastRow>>, _, _, _>(Pipeline, "Forecast", move |_, _| {
        let mut series: FxHashMap<Series, SeriesForecaster> = FxHashMap::default();
        // Window end → a capability to emit there, and the series with a
        // window ending there.
        let mut closing: BTreeMap<Millis, (Capability<Millis>, Vec<Series>)> = BTreeMap::new();
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
            while let Some(entry) = closing.first_entry() {
                if limit.is_some_and(|f| *entry.key() >= f) {
                    break;
                }
                let end = *entry.key();
                let (cap, mut closed) = entry.remove();
                closed.sort();
                let mut session = output.session(&cap);
                for s in closed {
                    let Some(state) = series.get_mut(&s) else { continue };
                    let Some(value) = state.pending.remove(&end) else { continue };
                    if let Some(last) = state.last_end {
                        let missing = end.saturating_sub(last) / settings.step;
                        if missing > state.ensemble.config().max_history as u64 {
                            if let Ok(fresh) = Ensemble::new(state.ensemble.config().clone()) {
                                state.ensemble = fresh;
                            }
                        } else {
                            for _ in 1..missing {
                                state.ensemble.push(f64::NAN);
                            }
                        }
                    }
                    state.last_end = Some(end);
                    state.ensemble.push(value);
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
            if let Some(f) = limit {
                series.retain(|_, s| !s.pending.is_empty() || s.last_end.is_some_and(|e| e + 7 * 24 * HOUR > f));
            }
        }
    })
}
