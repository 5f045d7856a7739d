//! The decide stage: forecasts in, replica decisions out.
//!
//! Per scaler (a `PredictiveScaler`, or the job's default scaler applied to
//! every series without one) and per forecast, [`policy::Scaler`] turns the
//! forecast's upper bound over the look-ahead into a replica count, never
//! below what a reactive HPA would ask for the load seen now, clamped to
//! `[min, max]`, then stabilised and rate-limited by HPA-shaped
//! [`behavior`] rules. When the input is bad (stale, gappy, jumping, out of
//! range) or the model's recent error is too high it falls back to reactive
//! scaling, and a bad input never lowers the count. Every [`Decision`] says
//! which of these bound it.
//!
//! Data enters as [`ForecastRow`](crate::forecast::stage::ForecastRow)s (on
//! the worker that owns their series) and as [`SpecUpdate`]s (routed there
//! by the series' hash); [`stage::decisions`] is the operator.

pub mod behavior;
pub mod persistence;
pub mod policy;
pub mod stage;

use serde::{Deserialize, Serialize};

pub use behavior::{Behavior, PolicyKind, ScalingPolicy, ScalingRules, SelectPolicy};
pub use policy::Scaler;
pub use stage::{DecideSettings, decisions, readings};

use crate::error::{Error, Result};
use crate::record::SeriesKey;
use crate::time::{MINUTE, Millis, SECOND};

/// Whether decisions are meant to be applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Decisions scale the target.
    #[default]
    Auto,
    /// Decisions are reported only.
    ForecastOnly,
}

/// When the stage stops trusting its input and falls back to reactive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FallbackSpec {
    /// No forecast for this long (event time) means the data is stale
    /// (default 15 min).
    pub stale_after: Millis,
    /// A forecast whose origin follows the previous one by more than this
    /// closes a gap in the data (default 15 min).
    pub max_gap: Millis,
    /// A load above this is out of range (default: none).
    pub max_load: Option<f64>,
    /// A load more than this factor above or below the previous one is a
    /// jump by orders of magnitude, not load (default 100).
    pub max_change_factor: f64,
    /// Fall back while the selected model's recent MASE is above this
    /// (default 10). MASE here is scaled by the in-sample one-step naive
    /// error, so a 30-minute horizon on a noisy series normally sits at
    /// 2–8 (the generator's median is 2, its worst 7.6); above 10 the model
    /// is far off what the series does.
    pub max_error: f64,
    /// After a bad input, how long the input must stay healthy before the
    /// forecast is trusted again (default 15 min).
    pub recover_after: Millis,
    /// Pods missing: fewer pods than this share of the replicas report
    /// metrics, where at least that many did before (default 0.5; 0 turns
    /// the check off).
    #[serde(default = "default_min_reporting")]
    pub min_reporting: f64,
}

fn default_min_reporting() -> f64 {
    0.5
}

impl Default for FallbackSpec {
    fn default() -> Self {
        FallbackSpec {
            stale_after: 15 * MINUTE,
            max_gap: 15 * MINUTE,
            max_load: None,
            max_change_factor: 100.0,
            max_error: 10.0,
            recover_after: 15 * MINUTE,
            min_reporting: default_min_reporting(),
        }
    }
}

/// The sizing level a scaler uses when its spec names none: the upper
/// bound of the central 90% interval, the forecast's own (its 95th
/// percentile). Chosen on the backtest's traces: with the target
/// utilisation swept for equal service, and the step under way sized from
/// its readings once they have shown it, the forecast's bound is only
/// what the steps not yet seen are sized for, and 0.9 needed fewer
/// replica-hours than 0.6 on four of the five traces and about as many
/// on the fifth, where HPA is within 8% of the oracle (see the README's
/// Backtest).
pub const DEFAULT_LEVEL: f64 = 0.9;

/// What one scaler asks for: the pure form of a `PredictiveScaler` spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerSpec {
    /// Fewest replicas (at least 1).
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// The load one replica should carry: its capacity times the target
    /// utilisation, in the unit of the forecast signal.
    pub target_per_replica: f64,
    /// How far past the next decision the count must hold (default 5 min,
    /// one forecast step: the next decision takes over after it).
    pub horizon: Millis,
    /// Pod start-up lead time (default 120 s): a scale-up is ready this
    /// long after it is decided, so the forecast must look this much
    /// further ahead.
    pub startup: Millis,
    /// The level of the central interval whose upper bound the count is
    /// sized for; `None` sizes for the forecast's own upper bound. (The
    /// job's config, the `PredictiveScaler` and the backtest default to
    /// [`DEFAULT_LEVEL`]; `ScalerSpec::default()` keeps `None`.) Other levels are read off the forecast's interval as if its
    /// shape were normal: the bound is `point + (upper − point) ×
    /// z(level) / z(forecast level)`, so 0 sizes for the point forecast
    /// and 0.6 for about the 80th percentile of a 90% interval's forecast.
    /// Together with the target utilisation it sets the headroom: a lower
    /// level with a lower target pays less for noise the forecast cannot
    /// predict.
    pub level: Option<f64>,
    /// Auto or forecast-only.
    pub mode: Mode,
    /// Stabilisation and rate limits.
    pub behavior: Behavior,
    /// When to fall back to reactive scaling.
    pub fallback: FallbackSpec,
}

impl Default for ScalerSpec {
    fn default() -> Self {
        ScalerSpec {
            min_replicas: 1,
            max_replicas: 100,
            target_per_replica: 1.0,
            horizon: 5 * MINUTE,
            startup: 120 * SECOND,
            level: None,
            mode: Mode::Auto,
            behavior: Behavior::default(),
            fallback: FallbackSpec::default(),
        }
    }
}

impl ScalerSpec {
    /// Checks the spec; `field` prefixes the names in errors (e.g.
    /// `decide.default`).
    pub fn validate(self, field: &'static str) -> Result<Self> {
        let bad = |reason: String| Err(Error::InvalidSetting { field, reason });
        if self.min_replicas < 1 {
            return bad("min_replicas must be at least 1".into());
        }
        if self.max_replicas < self.min_replicas {
            return bad(format!("max_replicas {} is below min_replicas {}", self.max_replicas, self.min_replicas));
        }
        if !(self.target_per_replica.is_finite() && self.target_per_replica > 0.0) {
            return bad(format!("target_per_replica {} must be a positive number", self.target_per_replica));
        }
        if self.horizon == 0 {
            return bad("horizon must be positive".into());
        }
        if self.level.is_some_and(|l| !(0.0..1.0).contains(&l)) {
            return bad(format!("level {:?} must be at least 0 and below 1", self.level));
        }
        let f = &self.fallback;
        if !(f.max_change_factor > 1.0 && f.max_error > 0.0) {
            return bad("fallback.max_change_factor must exceed 1 and fallback.max_error must be positive".into());
        }
        if !(0.0..=1.0).contains(&f.min_reporting) {
            return bad(format!("fallback.min_reporting {} must be between 0 and 1", f.min_reporting));
        }
        if f.max_load.is_some_and(|m| m.is_nan() || m <= 0.0) {
            return bad("fallback.max_load must be positive".into());
        }
        for rules in [&self.behavior.scale_up, &self.behavior.scale_down] {
            if rules.policies.iter().any(|p| p.period == 0 || p.value == 0) {
                return bad("behavior policies need a positive value and period".into());
            }
        }
        Ok(self)
    }
}

/// The load of a short window (shorter than the forecast step), which the
/// decide stage checks against the reactive floor between forecasts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadReading {
    /// Namespace, deployment, metric.
    pub series: SeriesKey,
    /// End of the window (ms).
    pub end_ms: Millis,
    /// Its load, in the forecast signal's unit.
    pub load: f64,
    /// Distinct pods that reported in the window (0 when unknown).
    #[serde(default)]
    pub pods: u32,
}

/// A scaler appearing, changing or going away, on one series. Updates
/// reach the worker that owns their series, so a scaler that moves to
/// another series is retracted from the old one (`spec: None`, naming the
/// old series) and added to the new one, as the PredictiveScaler watcher
/// does; an update never touches the scaler's other series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecUpdate {
    /// Event time from which the update applies (ms). Timely's message
    /// stamps only bound the times of the records they carry, so the time
    /// travels in the record; the sender sets it to its input's time.
    #[serde(default)]
    pub time_ms: Millis,
    /// The scaler's name (unique within the namespace of its target).
    pub scaler: String,
    /// The series it scales on: namespace, target deployment, metric.
    pub series: SeriesKey,
    /// The new spec, or `None` when the scaler was deleted.
    pub spec: Option<ScalerSpec>,
}

/// Why the input was not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FallbackReason {
    /// No forecast (no data) for longer than `stale_after`.
    Stale,
    /// Data resumed after a gap longer than `max_gap`.
    Gap,
    /// The load is above `max_load`, negative or not finite.
    OutOfRange,
    /// The load jumped by more than `max_change_factor`.
    Jump,
    /// The forecast is unusable (not finite).
    NoForecast,
    /// The model's recent error is above `max_error`.
    ModelError,
    /// Healthy again, but not yet for `recover_after`.
    Recovering,
    /// The data-quality gate saw timestamps switch unit.
    TimestampUnit,
    /// The data-quality gate saw timestamps shift by whole hours.
    TimestampShift,
    /// The data-quality gate saw timestamps jump far ahead.
    TimestampJump,
    /// Fewer pods report metrics than the deployment has replicas: the
    /// load seen undercounts.
    PodsMissing,
}

impl FallbackReason {
    /// Every reason, in a fixed order for reports and metrics.
    pub const ALL: [FallbackReason; 11] = [
        FallbackReason::Stale,
        FallbackReason::Gap,
        FallbackReason::OutOfRange,
        FallbackReason::Jump,
        FallbackReason::NoForecast,
        FallbackReason::ModelError,
        FallbackReason::Recovering,
        FallbackReason::TimestampUnit,
        FallbackReason::TimestampShift,
        FallbackReason::TimestampJump,
        FallbackReason::PodsMissing,
    ];

    /// The kebab-case name used in reasons and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Stale => "stale",
            FallbackReason::Gap => "gap",
            FallbackReason::OutOfRange => "out-of-range",
            FallbackReason::Jump => "jump",
            FallbackReason::NoForecast => "no-forecast",
            FallbackReason::ModelError => "model-error",
            FallbackReason::Recovering => "recovering",
            FallbackReason::TimestampUnit => "timestamp-unit",
            FallbackReason::TimestampShift => "timestamp-shift",
            FallbackReason::TimestampJump => "timestamp-jump",
            FallbackReason::PodsMissing => "pods-missing",
        }
    }

    /// Whether the input itself is suspect, so that even a reactive
    /// scale-down on it is refused.
    pub fn input_is_bad(self) -> bool {
        !matches!(self, FallbackReason::ModelError)
    }
}

/// What bound a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The forecast's upper bound.
    Forecast,
    /// What a reactive HPA would ask for the load seen now.
    ReactiveFloor,
    /// `minReplicas`.
    Min,
    /// `maxReplicas`.
    Max,
    /// A stabilisation window.
    Stabilised,
    /// A rate-limiting policy.
    RateLimited,
    /// Reactive fallback, and why.
    Fallback(FallbackReason),
}

impl From<crate::quality::Issue> for FallbackReason {
    fn from(issue: crate::quality::Issue) -> Self {
        match issue {
            crate::quality::Issue::TimestampUnit => FallbackReason::TimestampUnit,
            crate::quality::Issue::TimestampShift => FallbackReason::TimestampShift,
            crate::quality::Issue::TimestampJump => FallbackReason::TimestampJump,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Forecast => f.write_str("forecast"),
            Reason::ReactiveFloor => f.write_str("reactive-floor"),
            Reason::Min => f.write_str("min"),
            Reason::Max => f.write_str("max"),
            Reason::Stabilised => f.write_str("stabilised"),
            Reason::RateLimited => f.write_str("rate-limited"),
            Reason::Fallback(why) => write!(f, "fallback:{}", why.as_str()),
        }
    }
}

impl std::str::FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "forecast" => Reason::Forecast,
            "reactive-floor" => Reason::ReactiveFloor,
            "min" => Reason::Min,
            "max" => Reason::Max,
            "stabilised" => Reason::Stabilised,
            "rate-limited" => Reason::RateLimited,
            other => {
                let why = other.strip_prefix("fallback:").ok_or_else(|| format!("unknown reason `{other}`"))?;
                let found = FallbackReason::ALL.into_iter().find(|f| f.as_str() == why);
                Reason::Fallback(found.ok_or_else(|| format!("unknown fallback `{why}`"))?)
            }
        })
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The part of a forecast a decision used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsedForecast {
    /// The forecast's origin (ms).
    pub origin_ms: Millis,
    /// The end of the look-ahead covered (ms).
    pub until_ms: Millis,
    /// Highest point forecast over the look-ahead (between forecasts,
    /// moved by the lasting part of the step under way's surprise; for
    /// the step under way itself, once its readings have shown it, their
    /// mean).
    pub point: f64,
    /// Highest upper bound over the look-ahead: what the count is sized
    /// for (for the step under way, once seen, its readings' mean plus
    /// their spread within a step at the sizing level, if that is lower).
    pub upper: f64,
    /// Interval level.
    pub level: f64,
    /// Whether the step under way had been seen: its readings' mean and
    /// spread, not its forecast's interval, sized it (at most to that
    /// interval's bound). Later steps of the look-ahead are sized from the
    /// forecast either way.
    #[serde(default)]
    pub step_seen: bool,
}

/// One replica decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Event time the decision was made at (ms): a forecast's origin, or
    /// the moment the data was found stale.
    pub time_ms: Millis,
    /// The scaler that decided.
    pub scaler: String,
    /// Namespace, deployment, metric.
    #[serde(flatten)]
    pub series: SeriesKey,
    /// Auto or forecast-only.
    pub mode: Mode,
    /// Replicas before this decision (as the stage last decided them).
    pub current: u32,
    /// Replicas wanted now.
    pub desired: u32,
    /// What bound `desired`.
    pub reason: Reason,
    /// Why the input was not trusted, when it was not.
    pub detail: Option<String>,
    /// The load seen now (the window just closed), when there was one.
    pub load: Option<f64>,
    /// The reactive floor: replicas for the load seen now.
    pub reactive: Option<u32>,
    /// The forecast used, when one was.
    pub forecast: Option<UsedForecast>,
    /// The model that made it.
    pub model: Option<String>,
    /// The model's recent MASE.
    pub recent_error: Option<f64>,
}

impl Decision {
    /// The key sinks order by: `namespace/deployment`.
    pub fn target_key(&self) -> String {
        format!("{}/{}", self.series.namespace, self.series.deployment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_as_kebab_strings() {
        for r in [
            Reason::Forecast,
            Reason::ReactiveFloor,
            Reason::Min,
            Reason::Max,
            Reason::Stabilised,
            Reason::RateLimited,
            Reason::Fallback(FallbackReason::Stale),
            Reason::Fallback(FallbackReason::OutOfRange),
            Reason::Fallback(FallbackReason::ModelError),
            Reason::Fallback(FallbackReason::TimestampUnit),
            Reason::Fallback(FallbackReason::PodsMissing),
        ] {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Reason>(&json).ok(), Some(r), "{json}");
        }
        assert_eq!(Reason::Fallback(FallbackReason::OutOfRange).to_string(), "fallback:out-of-range");
        assert!("fallback:nope".parse::<Reason>().is_err());
    }

    #[test]
    fn spec_validation_names_the_problem() {
        let spec = ScalerSpec { min_replicas: 5, max_replicas: 2, ..ScalerSpec::default() };
        let err = spec.validate("decide.default").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("decide.default") && err.contains("below min_replicas"), "{err}");
        let spec = ScalerSpec { target_per_replica: 0.0, ..ScalerSpec::default() };
        assert!(spec.validate("x").is_err());
        assert!(ScalerSpec::default().validate("x").is_ok());
    }
}
