//! The decide operator: forecasts and scaler specs in, decisions out.
//!
//! Forecast rows arrive on the worker that owns their series (no exchange);
//! spec updates are routed to the same worker by the series' stable hash.
//! Times are processed in order once both inputs have passed them: first
//! the spec updates of a time, then the staleness checks due at it, then
//! its forecasts, so a scaler created at `t` decides on the forecast of
//! `t`. A series no scaler targets is decided by the job's default scaler
//! when there is one, under the name [`DEFAULT_SCALER`].
//!
//! Staleness needs a clock that runs without data: after each forecast the
//! operator keeps a capability at `origin + stale_after`, and when the
//! frontier passes it with no newer forecast the scaler reports the data
//! stale (holding its count). When both inputs end, pending checks are
//! dropped: the end of a replay is not an outage.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::{Decision, ScalerSpec, SpecUpdate, policy::Scaler};
use crate::forecast::stage::ForecastRow;
use crate::record::{Series, SeriesKey};
use crate::time::{DAY, Millis};

/// The name decisions of the default scaler carry. Parentheses are not
/// allowed in Kubernetes names, so it cannot collide with a real scaler.
pub const DEFAULT_SCALER: &str = "(default)";

/// Decide stage settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecideSettings {
    /// The scaler applied to every series no explicit scaler targets;
    /// `None` decides only for explicit scalers (how a cluster runs).
    pub default: Option<ScalerSpec>,
}

/// The scalers on one worker.
#[derive(Default)]
struct Scalers {
    /// (namespace, name) → target series and state.
    explicit: FxHashMap<(String, String), (SeriesKey, Scaler)>,
    /// Series → names of the explicit scalers targeting it.
    targeting: FxHashMap<SeriesKey, BTreeSet<String>>,
    /// Default scalers, per series with no explicit one.
    defaults: FxHashMap<SeriesKey, Scaler>,
}

impl Scalers {
    fn update(&mut self, u: SpecUpdate) {
        let id = (u.series.namespace.clone(), u.scaler.clone());
        match u.spec {
            Some(spec) => match self.explicit.get_mut(&id) {
                Some((series, scaler)) if *series == u.series => scaler.set_spec(spec),
                _ => {
                    self.remove(&id);
                    self.targeting.entry(u.series.clone()).or_default().insert(u.scaler);
                    self.defaults.remove(&u.series);
                    self.explicit.insert(id, (u.series, Scaler::new(spec)));
                }
            },
            None => self.remove(&id),
        }
    }

    fn remove(&mut self, id: &(String, String)) {
        if let Some((series, _)) = self.explicit.remove(id)
            && let Some(names) = self.targeting.get_mut(&series)
        {
            names.remove(&id.1);
            if names.is_empty() {
                self.targeting.remove(&series);
            }
        }
    }

    /// Calls `f` with every scaler of `series` (explicit ones by name, else
    /// the default), creating the default scaler when needed.
    fn for_series(&mut self, series: &SeriesKey, default: Option<&ScalerSpec>, mut f: impl FnMut(&str, &mut Scaler)) {
        if let Some(names) = self.targeting.get(series) {
            for name in names {
                let id = (series.namespace.clone(), name.clone());
                if let Some((_, scaler)) = self.explicit.get_mut(&id) {
                    f(name, scaler);
                }
            }
        } else if let Some(spec) = default {
            let scaler = self.defaults.entry(series.clone()).or_insert_with(|| Scaler::new(spec.clone()));
            f(DEFAULT_SCALER, scaler);
        }
    }

    /// Drops default scalers that have not decided for a week.
    fn forget_defaults(&mut self, now: Millis) {
        self.defaults.retain(|_, s| s.stale_deadline().is_none_or(|d| d + 7 * DAY > now));
    }
}

/// Builds the decide stage.
pub fn decisions<'scope>(
    forecasts: StreamVec<'scope, Millis, ForecastRow>,
    specs: StreamVec<'scope, Millis, SpecUpdate>,
    settings: &DecideSettings,
) -> StreamVec<'scope, Millis, Decision> {
    let default = settings.default.clone();
    let route = Exchange::new(|u: &SpecUpdate| Series::new(u.series.clone()).route());
    forecasts.binary_frontier::<_, CapacityContainerBuilder<Vec<Decision>>, _, _, _, _>(
        specs,
        Pipeline,
        route,
        "Decide",
        move |_, _| {
            let mut scalers = Scalers::default();
            let mut rows: BTreeMap<Millis, (Capability<Millis>, Vec<ForecastRow>)> = BTreeMap::new();
            let mut updates: BTreeMap<Millis, Vec<SpecUpdate>> = BTreeMap::new();
            // Deadline → a capability to report at it, and the series to check.
            let mut deadlines: BTreeMap<Millis, (Capability<Millis>, Vec<SeriesKey>)> = BTreeMap::new();
            let mut last_cleanup: Millis = 0;
            move |(forecasts, forecasts_frontier), (specs, specs_frontier), output| {
                forecasts.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    let entry = rows.entry(*cap.time()).or_insert_with(|| (cap, Vec::new()));
                    for batch in data {
                        entry.1.append(batch);
                    }
                });
                specs.for_each_stamp(|cap, data| {
                    // Updates sent under no capability claim no time: they
                    // apply at the next time processed.
                    let time = cap.least().copied().unwrap_or(0);
                    let entry = updates.entry(time).or_default();
                    for batch in data {
                        entry.append(batch);
                    }
                });
                let limit = [forecasts_frontier.frontier().first(), specs_frontier.frontier().first()]
                    .into_iter()
                    .flatten()
                    .min()
                    .copied();
                let Some(limit) = limit else {
                    // Both inputs are done: flush what is left, but report
                    // no staleness past the end of the input.
                    deadlines.clear();
                    for (_, batch) in std::mem::take(&mut updates) {
                        batch.into_iter().for_each(|u| scalers.update(u));
                    }
                    for (_, (cap, batch)) in std::mem::take(&mut rows) {
                        let mut session = output.session(&cap);
                        for row in sorted(batch) {
                            scalers.for_series(&row.series, default.as_ref(), |name, s| {
                                session.give(s.on_forecast(name, &row))
                            });
                        }
                    }
                    return;
                };
                loop {
                    let next = [rows.keys().next(), updates.keys().next(), deadlines.keys().next()]
                        .into_iter()
                        .flatten()
                        .min()
                        .copied();
                    let Some(time) = next.filter(|t| *t < limit) else { break };
                    for u in updates.remove(&time).unwrap_or_default() {
                        scalers.update(u);
                    }
                    if let Some((cap, mut series)) = deadlines.remove(&time) {
                        series.sort();
                        series.dedup();
                        let mut session = output.session(&cap);
                        for key in series {
                            scalers.for_series(&key, None, |name, s| {
                                if s.stale_deadline() == Some(time)
                                    && let Some(d) = s.on_stale(name, &key, time)
                                {
                                    session.give(d);
                                }
                            });
                            // Default scalers are not created by a check.
                            if let Some(s) = scalers.defaults.get_mut(&key)
                                && s.stale_deadline() == Some(time)
                                && let Some(d) = s.on_stale(DEFAULT_SCALER, &key, time)
                            {
                                session.give(d);
                            }
                        }
                    }
                    if let Some((cap, batch)) = rows.remove(&time) {
                        let mut session = output.session(&cap);
                        for row in sorted(batch) {
                            let mut due = BTreeSet::new();
                            scalers.for_series(&row.series, default.as_ref(), |name, s| {
                                session.give(s.on_forecast(name, &row));
                                due.extend(s.stale_deadline());
                            });
                            for d in due {
                                let entry = deadlines.entry(d).or_insert_with(|| (cap.delayed(&d), Vec::new()));
                                entry.1.push(row.series.clone());
                            }
                        }
                    }
                }
                if limit >= last_cleanup + DAY {
                    last_cleanup = limit;
                    scalers.forget_defaults(limit);
                }
            }
        },
    )
}

/// Rows in series order, so decisions leave in the same order on any
/// number of workers.
fn sorted(mut rows: Vec<ForecastRow>) -> Vec<ForecastRow> {
    rows.sort_by(|a, b| a.series.cmp(&b.series));
    rows
}
