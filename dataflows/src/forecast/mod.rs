//! Online forecasting of one evenly spaced series per deployment.
//!
//! # What this is for
//!
//! The decide stage scales a deployment to an *upper quantile* of the load
//! expected over the next minutes. This module turns the history of one
//! metric of one deployment into such a forecast: a point path and a
//! prediction interval at a requested level, together with the name of the
//! model that made it and how well that model has done recently.
//!
//! # How data enters and leaves
//!
//! A series is a sequence of `f64` values at a fixed step of
//! [`Seasons::step_secs`] seconds (60 s or 300 s in practice). The window
//! stage produces one value per step and per deployment; a missing step is
//! pushed as `NaN`. Every model here treats any non-finite value (`NaN`,
//! `±inf`) as *missing*: it never enters a fit and the state is carried
//! forward over it, so bad input cannot panic or poison the state.
//!
//! * [`Ensemble::push`] takes the next value. It scores the forecasts that the
//!   value resolves, updates every candidate model in O(1) (O(horizon) for
//!   bookkeeping) and refits all of them on the retained history on a
//!   schedule.
//! * [`Ensemble::forecast`] returns a [`SelectedForecast`]: the forecast of
//!   the candidate with the lowest recent out-of-sample error, that error, and
//!   a `note` when a candidate had to be skipped (for instance too little
//!   history).
//!
//! ```
//! use prescale_dataflows::forecast::{Ensemble, EnsembleConfig, Seasons};
//!
//! let seasons = Seasons::from_step(300)?; // 5-minute steps
//! let mut ensemble = Ensemble::new(EnsembleConfig::for_seasons(&seasons))?;
//! for t in 0..600 {
//!     // One value per step; a missing step would be f64::NAN.
//!     ensemble.push(100.0 + 20.0 * (t as f64 * std::f64::consts::TAU / 288.0).sin());
//! }
//! let selected = ensemble.forecast(12, 0.9)?; // one hour ahead, 90% interval
//! assert_eq!(selected.forecast.upper.len(), 12);
//! // Two days of history: seasonal models are fitted, the weekly one is not.
//! assert!(selected.note.is_some_and(|n| n.contains("seasonal-naive-week unavailable")));
//! # Ok::<(), prescale_dataflows::forecast::Error>(())
//! ```
//!
//! Each model can also be used alone through the [`Model`] trait, which
//! follows the fit/predict split of `augurs` but keeps the fitted state in the
//! model so that [`Model::update`] can advance it between refits.
//!
//! # The parts
//!
//! * [`last_value`] — the reactive baseline: the last finite value.
//! * [`ses`] — simple exponential smoothing: a level that tracks a noisy
//!   series, O(1) update, analytic intervals.
//! * [`seasonal_naive`] — the value one day or one week earlier.
//! * [`cycle`] — the values one to a few cycles earlier, for a cycle
//!   shorter than a quarter of a day found in the series itself (an hourly
//!   job).
//! * [`holt_winters`] — additive Holt–Winters with damped trend and a daily
//!   season (ETS(A,Ad,A)), O(1) update, analytic intervals.
//! * [`mstl`] — `augurs`' MSTL decomposition (daily season at full
//!   resolution, weekly season on hourly blocks) with an AutoETS trend,
//!   refitted on a schedule and rolled forward between refits.
//! * [`intervals`] — empirical error quantiles for the models without an
//!   error model of their own, and the calibrator with which the ensemble
//!   rescales every model's intervals by its out-of-sample errors.
//! * [`selection`] — the per-series [`Ensemble`].
//! * [`metrics`] — MASE, sMAPE and interval coverage.
//! * [`eval`] — rolling-origin evaluation of every candidate and the ensemble.
//! * [`stage`] — the forecast stage of the dataflow: an ensemble per series,
//!   fed each time a window of the forecast step closes.
//!
//! # The "two seasons" rule
//!
//! A model whose longest season is `m` steps needs at least `2 m` steps of
//! retained history ([`Model::min_history`]). With less, its fit fails with
//! [`Error::InsufficientHistory`], and the ensemble chooses among the models
//! that remain, which need less history (the chain is
//! [`ModelKind::simpler`]: MSTL → Holt–Winters → seasonal naive →
//! exponential smoothing → last value), naming each skipped model and why
//! in [`SelectedForecast::note`]. MSTL applies the same rule to each of its
//! seasons: with less than two weeks it drops the weekly season, with less
//! than two days it cannot be used. Exponential smoothing has no season and
//! needs an hour of history.
//!
//! # Determinism
//!
//! Same inputs, same outputs, bit for bit: no hash maps, no threads, no
//! randomness; optimisers start from fixed points and stop after a fixed
//! budget.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod cycle;
pub mod eval;
pub mod holt_winters;
pub mod intervals;
pub mod last_value;
pub mod metrics;
pub mod mstl;
pub mod seasonal_naive;
pub mod selection;
pub mod ses;
pub mod stage;
#[cfg(test)]
pub(crate) mod testing;

pub use cycle::{Cycle, CycleConfig};
pub use holt_winters::{HoltWinters, HoltWintersConfig};
pub use last_value::LastValue;
pub use mstl::{Mstl, MstlConfig};
pub use seasonal_naive::SeasonalNaive;
pub use selection::{CandidateStatus, Ensemble, EnsembleConfig, SelectedForecast};
pub use ses::{Ses, SesConfig};

/// Errors of the forecasting module. None of them is fatal to the caller: a
/// model that errs is skipped and the next simpler one is used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The history is shorter than the model needs (two of its longest
    /// season, or too few finite values).
    #[error("{model} needs {need} steps of history, has {have}")]
    InsufficientHistory {
        /// The model that cannot be used.
        model: ModelKind,
        /// Steps (or finite values) needed.
        need: usize,
        /// Steps (or finite values) available.
        have: usize,
    },
    /// `predict` or `update` before a successful `fit`.
    #[error("{model} has not been fitted")]
    NotFitted {
        /// The model asked.
        model: ModelKind,
    },
    /// A prediction-interval level outside the open interval (0, 1).
    #[error("interval level {0} is not in (0, 1)")]
    InvalidLevel(f64),
    /// The step width does not divide a day into at least two whole steps.
    #[error("step of {0} s does not divide a day (86400 s) into two or more whole steps")]
    InvalidStep(u64),
    /// A configuration value out of range; names the field.
    #[error("invalid configuration `{field}`: {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The model does not apply to this series (for instance no cycle was
    /// found for the cycle model); not a failure, the others are used.
    #[error("{model} does not apply: {reason}")]
    NotApplicable {
        /// The model that does not apply.
        model: ModelKind,
        /// Why.
        reason: String,
    },
    /// The model's numerical fit failed (for instance an `augurs` error).
    #[error("{model} fit failed: {reason}")]
    Fit {
        /// The model that failed.
        model: ModelKind,
        /// The underlying reason.
        reason: String,
    },
    /// The model produced a non-finite forecast (extreme input values).
    #[error("{model} produced a non-finite forecast")]
    NonFinite {
        /// The model that failed.
        model: ModelKind,
    },
    /// No candidate of the ensemble can forecast yet.
    #[error("no model can forecast yet: {0}")]
    NoModelReady(String),
}

impl Error {
    /// A short, fixed label for metrics (one time series per error kind).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InsufficientHistory { .. } => "insufficient_history",
            Error::NotFitted { .. } => "not_fitted",
            Error::InvalidLevel(_) => "invalid_level",
            Error::InvalidStep(_) => "invalid_step",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::NotApplicable { .. } => "not_applicable",
            Error::Fit { .. } => "fit_failed",
            Error::NonFinite { .. } => "non_finite",
            Error::NoModelReady(_) => "no_model_ready",
        }
    }
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A forecast path of `horizon` steps starting one step after the last value
/// seen, with a central prediction interval at `level`.
///
/// `point[h - 1]`, `lower[h - 1]` and `upper[h - 1]` are for `h` steps ahead.
/// All three vectors have the same length and hold finite values, with
/// `lower <= point <= upper` for the models in this module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Point forecasts (mean or median, depending on the model).
    pub point: Vec<f64>,
    /// Lower bound of the central interval.
    pub lower: Vec<f64>,
    /// Upper bound of the central interval.
    pub upper: Vec<f64>,
    /// Nominal coverage of the interval, in (0, 1).
    pub level: f64,
}

impl Forecast {
    /// Number of steps in the forecast.
    pub fn horizon(&self) -> usize {
        self.point.len()
    }

    /// An empty forecast (horizon 0).
    pub(crate) fn empty(level: f64) -> Forecast {
        Forecast { point: Vec::new(), lower: Vec::new(), upper: Vec::new(), level }
    }

    /// Rejects forecasts with non-finite numbers, so that extreme inputs turn
    /// into an error (and a fallback) instead of a nonsensical scale decision.
    pub(crate) fn checked(self, model: ModelKind) -> Result<Forecast> {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if finite(&self.point) && finite(&self.lower) && finite(&self.upper) {
            Ok(self)
        } else {
            Err(Error::NonFinite { model })
        }
    }
}

/// The candidate models, ordered from simplest to most complex.
///
/// Serialised (and displayed) as lower-case kebab names: `last-value`,
/// `ses`, `cycle`, `seasonal-naive-day`, `seasonal-naive-week`,
/// `holt-winters`, `mstl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// The last finite value (reactive baseline).
    LastValue,
    /// Simple exponential smoothing: a level tracking the series.
    Ses,
    /// The mean of the values one to a few cycles earlier, the cycle
    /// (under a quarter of a day) found in the series' own autocorrelation.
    Cycle,
    /// The value one day earlier.
    SeasonalNaiveDay,
    /// The value one week earlier.
    SeasonalNaiveWeek,
    /// Additive Holt–Winters, damped trend, daily season.
    HoltWinters,
    /// MSTL (daily and weekly seasons) with an AutoETS trend.
    Mstl,
}

impl ModelKind {
    /// Every kind, simplest first.
    pub const ALL: [ModelKind; 7] = [
        ModelKind::LastValue,
        ModelKind::Ses,
        ModelKind::Cycle,
        ModelKind::SeasonalNaiveDay,
        ModelKind::SeasonalNaiveWeek,
        ModelKind::HoltWinters,
        ModelKind::Mstl,
    ];

    /// The kebab-case name used in serde, `Display` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::LastValue => "last-value",
            ModelKind::Ses => "ses",
            ModelKind::Cycle => "cycle",
            ModelKind::SeasonalNaiveDay => "seasonal-naive-day",
            ModelKind::SeasonalNaiveWeek => "seasonal-naive-week",
            ModelKind::HoltWinters => "holt-winters",
            ModelKind::Mstl => "mstl",
        }
    }

    /// The model to fall back to when this one lacks history: each step
    /// needs a shorter history than the one before (week → day → an hour →
    /// one step).
    pub fn simpler(self) -> Option<ModelKind> {
        match self {
            ModelKind::Mstl => Some(ModelKind::HoltWinters),
            ModelKind::HoltWinters => Some(ModelKind::SeasonalNaiveDay),
            ModelKind::SeasonalNaiveWeek => Some(ModelKind::SeasonalNaiveDay),
            ModelKind::SeasonalNaiveDay | ModelKind::Cycle => Some(ModelKind::Ses),
            ModelKind::Ses => Some(ModelKind::LastValue),
            ModelKind::LastValue => None,
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The seasonal periods of a series, in steps, derived from its step width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seasons {
    /// Width of one step in seconds.
    pub step_secs: u64,
    /// Steps per day.
    pub day: usize,
    /// Steps per week.
    pub week: usize,
}

impl Seasons {
    /// Seasons for a step of `step_secs` seconds.
    ///
    /// # Errors
    /// [`Error::InvalidStep`] unless the step divides a day into at least two
    /// whole steps: a fractional season cannot be indexed.
    pub fn from_step(step_secs: u64) -> Result<Seasons> {
        const DAY_SECS: u64 = 86_400;
        if step_secs == 0 || !DAY_SECS.is_multiple_of(step_secs) || DAY_SECS / step_secs < 2 {
            return Err(Error::InvalidStep(step_secs));
        }
        // At most 86400 steps per day, so the conversion cannot truncate.
        let day = (DAY_SECS / step_secs) as usize;
        Ok(Seasons { step_secs, day, week: 7 * day })
    }

    /// Number of whole steps in `minutes` (rounded up, at least one).
    pub fn steps_for_minutes(&self, minutes: u64) -> usize {
        let secs = minutes.saturating_mul(60);
        let steps = secs.div_ceil(self.step_secs).max(1);
        usize::try_from(steps).unwrap_or(usize::MAX)
    }

    /// Duration of `steps` steps in minutes.
    pub fn minutes_for_steps(&self, steps: usize) -> f64 {
        steps as f64 * self.step_secs as f64 / 60.0
    }
}

/// A forecasting model of one series that keeps its fitted state, so that it
/// can be updated value by value between refits.
///
/// The life cycle is `fit` on a history (the last value of `history` is the
/// most recent), then any mix of `update` with each new value and `predict`
/// from the current end of the series, and `fit` again on a schedule. `fit`
/// replaces the state completely; it does not depend on earlier updates, so a
/// refit after a restart gives the same model.
pub trait Model: Send {
    /// Which model this is.
    fn kind(&self) -> ModelKind;

    /// Fits the model to `history` (oldest first, non-finite = missing).
    ///
    /// # Errors
    /// [`Error::InsufficientHistory`] when `history` is shorter than
    /// [`Model::min_history`] or holds too few finite values; [`Error::Fit`]
    /// when the numerical fit fails. On error the model is left unfitted.
    fn fit(&mut self, history: &[f64]) -> Result<()>;

    /// Advances the state by one step with the next value. Non-finite values
    /// are missing: the state moves one step on its own forecast. Does
    /// nothing before the first successful `fit`.
    fn update(&mut self, value: f64);

    /// Forecasts `horizon` steps from the current end of the series with a
    /// central interval at `level`.
    ///
    /// # Errors
    /// [`Error::NotFitted`], [`Error::InvalidLevel`], or
    /// [`Error::NonFinite`] when the numbers overflowed.
    fn predict(&self, horizon: usize, level: f64) -> Result<Forecast>;

    /// Steps of history `fit` needs: two of the model's longest season.
    fn min_history(&self) -> usize;

    /// Point forecasts only, written into `out` (cleared first). The ensemble
    /// calls this on every candidate at every step to score them, so models
    /// override it when intervals are costly.
    ///
    /// # Errors
    /// As [`Model::predict`].
    fn predict_point(&self, horizon: usize, out: &mut Vec<f64>) -> Result<()> {
        let forecast = self.predict(horizon, 0.5)?;
        out.clear();
        out.extend_from_slice(&forecast.point);
        Ok(())
    }

    /// Something the caller should know about the current fit (for instance
    /// that MSTL dropped its weekly season); `None` when all is as configured.
    fn note(&self) -> Option<String> {
        None
    }

    /// Whether the last `fit` succeeded (and `predict` can be called).
    fn is_fitted(&self) -> bool;
}

/// Errors beyond this many standard deviations enter a residual variance
/// as if they were this large (see `ew_variance`).
pub(crate) const VARIANCE_CLIP_Z: f64 = 4.0;

/// One step of an exponentially weighted variance of one-step errors,
/// with `weight` the weight of the new error; `NaN` (no error yet) starts
/// at `e²`. A squared error beyond `(VARIANCE_CLIP_Z σ)²` counts as that
/// much: on bursty loads one spike of a hundred times the level would
/// otherwise widen every interval by an order of magnitude for the whole
/// variance memory (a day), long after the load is back. Volatility that
/// really rises still raises the variance within a few steps (each clipped
/// error adds up to 16× the old variance times the weight), and the
/// spikes themselves are in the tails the calibrator learns from
/// out-of-sample errors. The clip never falls below a thousandth of
/// `level`, so a series that was constant (variance zero or nearly) and
/// turns noisy is not stuck with a zero-width interval, and nothing is
/// clipped until `warm` (the variance started from a single error, which
/// may be tiny, and must first settle on the errors that follow).
pub(crate) fn ew_variance(var: f64, e: f64, weight: f64, level: f64, warm: bool) -> f64 {
    if var.is_nan() {
        return e * e;
    }
    if !warm {
        return var + weight.max(0.1) * (e * e - var);
    }
    let floor = 1e-3 * level;
    let e2 = (e * e).min(VARIANCE_CLIP_Z * VARIANCE_CLIP_Z * var.max(floor * floor));
    var + weight * (e2 - var)
}

/// The level-shift rule of the smoothing models: `run` counts consecutive
/// one-step errors beyond `z` standard deviations (`var` is the variance
/// before this error), signed by their side; `after` of them on one side
/// are a level shift. Returns whether `e` completed a shift (the run
/// starts again); the caller then moves its level onto the last value.
pub(crate) fn completes_shift(run: &mut i64, e: f64, var: f64, z: f64, after: usize) -> bool {
    let large = e * e > z * z * var;
    *run = match (large, e > 0.0) {
        (false, _) => 0,
        (true, true) => (*run).max(0) + 1,
        (true, false) => (*run).min(0) - 1,
    };
    if run.unsigned_abs() >= after as u64 {
        *run = 0;
        return true;
    }
    false
}

/// Checks an interval level.
pub(crate) fn check_level(level: f64) -> Result<()> {
    if level > 0.0 && level < 1.0 { Ok(()) } else { Err(Error::InvalidLevel(level)) }
}

/// Maps non-finite values to `NaN`, the one spelling of "missing" used inside.
#[inline]
pub(crate) fn clean(value: f64) -> f64 {
    if value.is_finite() { value } else { f64::NAN }
}

/// Where the bound of a central interval at `level` lies between the
/// point (0) and the upper end (1) of an interval at `interval_level`, if
/// the forecast were normal: `z(level) / z(interval_level)`, 0 for a level
/// of 0 (the point forecast). This is how the decide stage reads its
/// sizing bound off a forecast, and how the ensemble scores candidates
/// for it. `None` when either level is outside [0, 1) or the interval
/// level is 0 (nothing to scale from).
pub fn sizing_share(level: f64, interval_level: f64) -> Option<f64> {
    let z = |l: f64| if l <= 0.0 { Some(0.0) } else { normal_z(l).ok() };
    let (a, b) = (z(level)?, z(interval_level)?);
    (b > 0.0).then(|| a / b)
}

/// The two-sided standard normal quantile for a central interval at `level`,
/// i.e. `z` with `P(|Z| <= z) = level`.
///
/// Newton's method on the normal CDF, evaluated with the series
/// `Φ(x) = 1/2 + φ(x) Σ x^(2n+1) / (1·3·…·(2n+1))`; starting at 0 the
/// iteration approaches the root from below because Φ is concave on x > 0,
/// so it needs no bracketing. Accurate to ~1e-12 for levels up to 1 − 1e-9.
pub(crate) fn normal_z(level: f64) -> Result<f64> {
    check_level(level)?;
    let target = 0.5 + level / 2.0;
    let mut x = 0.0_f64;
    for _ in 0..100 {
        let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        if density < 1e-300 {
            break;
        }
        let step = (normal_cdf_series(x) - target) / density;
        x -= step;
        if step.abs() < 1e-13 {
            break;
        }
    }
    Ok(x)
}

fn normal_cdf_series(x: f64) -> f64 {
    let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 1.0;
    // The terms grow while 2n + 1 < x², then shrink geometrically; 500 terms
    // are far more than |x| < 12 needs.
    for _ in 0..500 {
        n += 2.0;
        term *= x2 / n;
        sum += term;
        if term.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    (0.5 + density * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasons_from_common_steps() {
        let s = Seasons::from_step(300).expect("300 s divides a day");
        assert_eq!((s.day, s.week), (288, 2016));
        let s = Seasons::from_step(60).expect("60 s divides a day");
        assert_eq!((s.day, s.week), (1440, 10080));
        assert_eq!(s.steps_for_minutes(30), 30);
        assert!(Seasons::from_step(0).is_err());
        assert!(Seasons::from_step(7).is_err());
        assert!(Seasons::from_step(86_400).is_err());
    }

    #[test]
    fn normal_quantiles_match_tables() {
        for (level, z) in
            [(0.8, 1.281_551_565_5), (0.9, 1.644_853_626_9), (0.95, 1.959_963_984_5), (0.99, 2.575_829_303_5)]
        {
            let got = normal_z(level).expect("valid level");
            assert!((got - z).abs() < 1e-8, "level {level}: {got} vs {z}");
        }
        assert!(normal_z(1.0).is_err());
        assert!(normal_z(0.0).is_err());
        assert!(normal_z(f64::NAN).is_err());
    }

    #[test]
    fn one_spike_barely_moves_the_variance_but_lasting_volatility_does() {
        let w = 1.0 / 288.0;
        let spiked = ew_variance(1.0, 1000.0, w, 100.0, true);
        assert!(spiked < 1.0 + 16.0 * w, "one spike of 1000 σ made the variance {spiked}");
        // Noise twice as large takes the variance most of the way to 4×
        // within a day of steps.
        let mut var = 1.0;
        for i in 0..288 {
            var = ew_variance(var, if i % 2 == 0 { 2.0 } else { -2.0 }, w, 100.0, true);
        }
        assert!(var > 2.5, "{var}");
        // A constant series that turns noisy is not stuck at zero width.
        let mut var = ew_variance(f64::NAN, 0.0, w, 100.0, true);
        for _ in 0..288 {
            var = ew_variance(var, 1.0, w, 100.0, true);
        }
        assert!(var > 0.5, "{var}");
    }

    #[test]
    fn model_kind_names() {
        for kind in ModelKind::ALL {
            let json = serde_json::to_string(&kind).expect("serialisable");
            assert_eq!(json, format!("\"{kind}\""));
            let back: ModelKind = serde_json::from_str(&json).expect("round trip");
            assert_eq!(back, kind);
        }
        assert_eq!(ModelKind::SeasonalNaiveWeek.to_string(), "seasonal-naive-week");
    }
}
