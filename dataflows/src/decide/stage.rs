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

use timely::dataflow::operators::core::Concat;
use timely::dataflow::operators::vec::Map;

use super::{Decision, FallbackReason, LoadReading, ScalerSpec, SpecUpdate, policy::Scaler};
use crate::features::FeatureRow;
use crate::forecast::stage::{ForecastRow, Signal};
use crate::quality::Flag;
use crate::record::{Series, SeriesKey};
use crate::time::{DAY, Millis};

/// The name decisions of the default scaler carry. Parentheses are not
/// allowed in Kubernetes names, so it cannot collide with a real scaler.
pub const DEFAULT_SCALER: &str = "(default)";

/// What the operator takes in on the worker that owns a series.
#[derive(Clone, Debug)]
enum Input {
    Forecast(ForecastRow),
    Reading(LoadReading),
}

impl Input {
    /// The event time the input is for.
    fn time(&self) -> Millis {
        match self {
            Input::Forecast(r) => r.origin_ms,
            Input::Reading(r) => r.end_ms,
        }
    }

    fn series(&self) -> &SeriesKey {
        match self {
            Input::Forecast(r) => &r.series,
            Input::Reading(r) => &r.series,
        }
    }

    /// Forecasts of a time before readings of it, each in series order.
    fn order(&self) -> (u8, &SeriesKey) {
        (matches!(self, Input::Reading(_)) as u8, self.series())
    }
}

/// What reaches a series' worker by its hash: scaler specs, and the flags
/// of the data-quality gate from whichever worker rejected the record.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Control {
    // Boxed: a spec is several times the size of a flag, and flags are
    // the many.
    Spec(Box<SpecUpdate>),
    Flag(Flag),
}

impl Control {
    fn series(&self) -> &SeriesKey {
        match self {
            Control::Spec(u) => &u.series,
            Control::Flag(f) => &f.series,
        }
    }

    fn time(&self) -> Millis {
        match self {
            Control::Spec(u) => u.time_ms,
            Control::Flag(f) => f.at_ms,
        }
    }
}

/// The short-window loads for [`decisions`]: tumbling rows of `width`
/// (first revisions, which leave as soon as the window can be emitted),
/// as the forecast signal measures them.
pub fn readings<'scope>(
    rows: StreamVec<'scope, Millis, FeatureRow>,
    width: Option<Millis>,
    signal: Signal,
) -> StreamVec<'scope, Millis, LoadReading> {
    rows.flat_map(move |row| match row {
        FeatureRow::Tumbling(r) if r.revision == 0 && Some(r.width_s * 1000) == width => Some(LoadReading {
            series: r.series.key().clone(),
            end_ms: r.end_ms,
            load: match signal {
                Signal::Total => r.avg * f64::from(r.pods),
                Signal::Avg => r.avg,
            },
            pods: r.pods,
        }),
        _ => None,
    })
}

/// Decide stage settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecideSettings {
    /// The scaler applied to every series no explicit scaler targets;
    /// `None` decides only for explicit scalers (how a cluster runs).
    pub default: Option<ScalerSpec>,
    /// Width of the short tumbling windows whose loads are checked against
    /// the reactive floor between forecasts (default: the smallest
    /// tumbling width below the forecast step, 1 min by default).
    pub reactive_width: Option<Millis>,
}

/// The scalers on one worker.
#[derive(Default)]
struct Scalers {
    /// Series → the explicit scalers targeting it, by name. Keyed by
    /// series, as updates are: each worker holds the scalers of its own
    /// series, whatever other workers hold.
    targeting: FxHashMap<SeriesKey, BTreeMap<String, Scaler>>,
    /// Default scalers, per series with no explicit one.
    defaults: FxHashMap<SeriesKey, Scaler>,
}

impl Scalers {
    fn update(&mut self, u: SpecUpdate, cadence: Option<Millis>) {
        match u.spec {
            Some(spec) => {
                self.defaults.remove(&u.series);
                let scalers = self.targeting.entry(u.series).or_default();
                match scalers.get_mut(&u.scaler) {
                    Some(scaler) => scaler.set_spec(spec),
                    None => {
                        scalers.insert(u.scaler, Scaler::new(spec).with_cadence(cadence));
                    }
                }
            }
            None => {
                if let Some(scalers) = self.targeting.get_mut(&u.series) {
                    scalers.remove(&u.scaler);
                    if scalers.is_empty() {
                        self.targeting.remove(&u.series);
                    }
                }
            }
        }
    }

    /// Calls `f` with every scaler of `series` (explicit ones by name, else
    /// the default), creating the default scaler when needed.
    fn for_series(
        &mut self,
        series: &SeriesKey,
        default: Option<(&ScalerSpec, Option<Millis>)>,
        mut f: impl FnMut(&str, &mut Scaler),
    ) {
        if let Some(scalers) = self.targeting.get_mut(series) {
            for (name, scaler) in scalers.iter_mut() {
                f(name, scaler);
            }
        } else if let Some((spec, cadence)) = default {
            let scaler =
                self.defaults.entry(series.clone()).or_insert_with(|| Scaler::new(spec.clone()).with_cadence(cadence));
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
    readings: StreamVec<'scope, Millis, LoadReading>,
    specs: StreamVec<'scope, Millis, SpecUpdate>,
    flags: StreamVec<'scope, Millis, Flag>,
    settings: &DecideSettings,
) -> StreamVec<'scope, Millis, Decision> {
    let default = settings.default.clone();
    let cadence = settings.reactive_width;
    let route = Exchange::new(|c: &Control| Series::new(c.series().clone()).route());
    let control = specs.map(|u| Control::Spec(Box::new(u))).concat(flags.map(Control::Flag));
    // Both come from the worker that owns the series: no exchange.
    let inputs = forecasts.map(Input::Forecast).concat(readings.map(Input::Reading));
    inputs.binary_frontier::<_, CapacityContainerBuilder<Vec<Decision>>, _, _, _, _>(
        control,
        Pipeline,
        route,
        "Decide",
        move |_, _| {
            let mut scalers = Scalers::default();
            let mut rows: BTreeMap<Millis, (Capability<Millis>, Vec<Input>)> = BTreeMap::new();
            // Time → a capability when a flag (which decides) is among the
            // controls of that time, and the controls.
            let mut updates: BTreeMap<Millis, (Option<Capability<Millis>>, Vec<Control>)> = BTreeMap::new();
            // Deadline → a capability to report at it, and the series to check.
            let mut deadlines: BTreeMap<Millis, (Capability<Millis>, Vec<SeriesKey>)> = BTreeMap::new();
            let mut last_cleanup: Millis = 0;
            move |(forecasts, forecasts_frontier), (specs, specs_frontier), output| {
                // Records carry their own times: a message's stamp only
                // bounds them from below. Each is keyed by its own time and
                // held with a capability delayed to it.
                forecasts.for_each_stamp(|cap, data| {
                    let Some(least) = cap.least().copied() else { return };
                    for batch in data {
                        for input in batch.drain(..) {
                            let time = input.time().max(least);
                            let entry = rows.entry(time).or_insert_with(|| (cap.delayed(&time, 0), Vec::new()));
                            entry.1.push(input);
                        }
                    }
                });
                specs.for_each_stamp(|cap, data| {
                    let Some(least) = cap.least().copied() else { return };
                    for batch in data {
                        for c in batch.drain(..) {
                            let time = c.time().max(least);
                            let entry = updates.entry(time).or_default();
                            if matches!(c, Control::Flag(_)) && entry.0.is_none() {
                                entry.0 = Some(cap.delayed(&time, 0));
                            }
                            entry.1.push(c);
                        }
                    }
                });
                let limit = [forecasts_frontier.frontier().first(), specs_frontier.frontier().first()]
                    .into_iter()
                    .flatten()
                    .min()
                    .copied();
                if limit.is_none() {
                    // Both inputs are done: what is left is decided in time
                    // order, but no staleness is reported past the end of
                    // the input.
                    deadlines.clear();
                }
                loop {
                    let next = [rows.keys().next(), updates.keys().next(), deadlines.keys().next()]
                        .into_iter()
                        .flatten()
                        .min()
                        .copied();
                    let Some(time) = next.filter(|t| limit.is_none_or(|l| *t < l)) else { break };
                    // Flags decide, so they need a capability at their
                    // time: the one of the rows at it, or a delayed one.
                    let (flag_cap, controls) = updates.remove(&time).unwrap_or_default();
                    let mut flags = Vec::new();
                    for c in controls {
                        match c {
                            Control::Spec(u) => scalers.update(*u, cadence),
                            Control::Flag(f) => flags.push(f),
                        }
                    }
                    if let Some(cap) = flag_cap {
                        let mut session = output.session(&cap);
                        flag(&mut scalers, time, flags, |d| session.give(d));
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
                        for input in sorted(batch) {
                            let mut due = BTreeSet::new();
                            decide(&mut scalers, default.as_ref().map(|d| (d, cadence)), &input, |d, deadline| {
                                session.give(d);
                                due.extend(deadline);
                            });
                            for d in due.into_iter().filter(|_| limit.is_some()) {
                                let entry = deadlines.entry(d).or_insert_with(|| (cap.delayed(&d), Vec::new()));
                                entry.1.push(input.series().clone());
                            }
                        }
                    }
                }
                if let Some(limit) = limit
                    && limit >= last_cleanup + DAY
                {
                    last_cleanup = limit;
                    scalers.forget_defaults(limit);
                }
            }
        },
    )
}

/// Hands the gate's flags of one time to the scalers of their series, in
/// a fixed order; `emit` gets each decision. A flag never creates a
/// default scaler: a series is first decided on a forecast.
fn flag(scalers: &mut Scalers, time: Millis, mut flags: Vec<Flag>, mut emit: impl FnMut(Decision)) {
    // The latest flag of each series and issue, whichever worker sent it
    // first, so that decisions do not depend on the cluster's shape.
    flags.sort_by(|a, b| (&a.series, a.issue, b.at_ms).cmp(&(&b.series, b.issue, a.at_ms)));
    flags.dedup_by(|a, b| a.series == b.series && a.issue == b.issue);
    for f in flags {
        let why = FallbackReason::from(f.issue);
        let detail = format!("{} (seen at {})", f.issue.describe(), crate::time::format_datetime(f.at_ms));
        scalers.for_series(&f.series, None, |name, s| {
            s.on_flag(name, &f.series, time, why, detail.clone(), None).into_iter().for_each(&mut emit);
        });
        if let Some(s) = scalers.defaults.get_mut(&f.series) {
            s.on_flag(DEFAULT_SCALER, &f.series, time, why, detail.clone(), None).into_iter().for_each(&mut emit);
        }
    }
}

/// Inputs in a fixed order, so decisions leave in the same order on any
/// number of workers.
fn sorted(mut inputs: Vec<Input>) -> Vec<Input> {
    inputs.sort_by(|a, b| a.order().cmp(&b.order()));
    inputs
}

/// Hands one input to the scalers of its series; `emit` gets each
/// decision and, after a forecast, the scaler's next staleness deadline.
fn decide(
    scalers: &mut Scalers,
    default: Option<(&ScalerSpec, Option<Millis>)>,
    input: &Input,
    mut emit: impl FnMut(Decision, Option<Millis>),
) {
    match input {
        Input::Forecast(row) => scalers.for_series(&row.series, default, |name, s| {
            let d = s.on_forecast(name, row);
            emit(d, s.stale_deadline());
        }),
        // Readings never create a default scaler: a series is first
        // decided on a forecast.
        Input::Reading(r) => scalers.for_series(&r.series, None, |name, s| {
            if let Some(d) = s.on_load(name, r) {
                emit(d, None);
            }
        }),
    }
    if let Input::Reading(r) = input
        && let Some(s) = scalers.defaults.get_mut(&r.series)
        && let Some(d) = s.on_load(DEFAULT_SCALER, r)
    {
        emit(d, None);
    }
}
