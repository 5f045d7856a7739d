//! Simple exponential smoothing: a level that tracks the series, no trend
//! and no season — ETS(A,N,N).
//!
//! Per-VM and per-instance loads are often noise around a level that moves
//! now and then. Last value repeats the noise of the latest step; the
//! seasonal models fit a day's noise as if it were a shape. A smoothed
//! level forecasts such a series better than either (on the NAB and
//! Bitbrains traces a level-tracking AutoETS was the strongest peer at 30
//! minutes), and it costs almost nothing.
//!
//! With one-step forecast `ŷ = ℓ` and error `e = y − ℓ`, the update is
//! `ℓ ← ℓ + α e`: O(1) in [`Model::update`].
//!
//! **Fit.** `α` minimises the one-step squared error over the last
//! [`SesConfig::fit_window`] steps (golden-section search on `[0.01, 1]`,
//! a fixed number of passes; the error is close to unimodal in `α` for
//! real loads, and a fixed budget keeps the fit a function of its input
//! only). The level starts at the mean of the window's first finite values
//! and runs over the window, so after the fit it stands at the last value
//! seen.
//!
//! **Level shifts.** A noisy series fits a small `α`, which would take tens
//! of steps to follow a lasting change of load. As in [`super::holt_winters`],
//! a run of [`SesConfig::shift_after`] errors beyond [`SesConfig::shift_z`]
//! standard deviations on the same side moves the level onto the last
//! value; a lone spike breaks no run.
//!
//! **Intervals** are analytic: the `h`-step variance of ETS(A,N,N) is
//! `σ² (1 + (h − 1) α²)`, `σ²` an exponentially weighted mean of squared
//! one-step errors with a memory of [`SesConfig::variance_window`] steps
//! (volatility changes over days). The ensemble rescales them by the
//! model's out-of-sample errors in any case ([`super::intervals`]).
//!
//! **Missing values** leave the level where it is.

use super::{
    Error, Forecast, Model, ModelKind, Result, Seasons, check_level, clean, completes_shift, ew_variance, normal_z,
};

/// Settings of the exponential smoothing model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SesConfig {
    /// Most recent steps `α` is estimated on and the level is run over.
    pub fit_window: usize,
    /// Steps of history a fit needs (and finite values among them).
    pub min_history: usize,
    /// Memory, in steps, of the residual variance behind the intervals.
    pub variance_window: usize,
    /// Consecutive same-side errors beyond `shift_z` σ taken as a level
    /// shift (0 disables the detector).
    pub shift_after: usize,
    /// Size, in standard deviations, of an error that counts towards a shift.
    pub shift_z: f64,
}

impl SesConfig {
    /// Defaults: `α` from the last two days, at least an hour (and eight
    /// steps) of history, a one-day variance memory, a level shift after
    /// three errors beyond 3 σ.
    pub fn for_seasons(seasons: &Seasons) -> SesConfig {
        SesConfig {
            fit_window: 2 * seasons.day,
            min_history: seasons.steps_for_minutes(60).max(8),
            variance_window: seasons.day,
            shift_after: 3,
            shift_z: 3.0,
        }
    }
}

/// Smallest and largest `α` searched: below 0.01 the level would ignore a
/// day of data, and 1 is last value.
const ALPHA_MIN: f64 = 0.01;
const ALPHA_MAX: f64 = 1.0;
/// Golden-section iterations: the bracket shrinks to 0.618^40 of its width,
/// far finer than any difference in the forecasts.
const SEARCH_STEPS: usize = 40;
/// One-step errors not counted in the fit while the level settles from its
/// start value.
const BURN_IN: usize = 12;

/// Level and error variance at the end of the data seen.
#[derive(Debug, Clone, Copy)]
struct State {
    level: f64,
    /// Exponentially weighted variance of one-step errors (`NaN` before the
    /// first error).
    var: f64,
    errors_seen: usize,
    /// Consecutive large errors, signed by their direction.
    run: i64,
}

/// Simple exponential smoothing with analytic intervals and O(1) updates.
#[derive(Debug, Clone)]
pub struct Ses {
    config: SesConfig,
    alpha: Option<f64>,
    state: Option<State>,
}

impl Ses {
    /// An unfitted model.
    pub fn new(config: SesConfig) -> Ses {
        Ses { config, alpha: None, state: None }
    }

    /// The fitted smoothing parameter, if fitted.
    pub fn alpha(&self) -> Option<f64> {
        self.alpha
    }

    fn step(&self, alpha: f64, state: &mut State, value: f64) {
        if !value.is_finite() {
            return;
        }
        let e = value - state.level;
        let level = state.level + alpha * e;
        let weight = 1.0 / self.config.variance_window.max(1) as f64;
        let var = ew_variance(state.var, e, weight, state.level, state.errors_seen >= BURN_IN);
        if !(level + e * e).is_finite() {
            // So extreme that the state would overflow: treated as missing
            // rather than poisoning every later forecast.
            return;
        }
        state.level = level;
        self.track_shift(alpha, state, e);
        state.var = var;
        state.errors_seen += 1;
    }

    /// See the module docs; compares with the variance before this error.
    fn track_shift(&self, alpha: f64, state: &mut State, e: f64) {
        let (after, z) = (self.config.shift_after, self.config.shift_z);
        if after == 0 || state.errors_seen < self.config.min_history || state.var.is_nan() || state.var <= 0.0 {
            return;
        }
        if completes_shift(&mut state.run, e, state.var, z, after) {
            state.level += (1.0 - alpha) * e;
        }
    }
}

/// One-step squared error of `alpha` over `y` from `start`, after the
/// burn-in. The search calls it `2 × SEARCH_STEPS` times, so it is the bare
/// recursion, without the variance and the shift detector.
fn sse(alpha: f64, y: &[f64], start: f64) -> f64 {
    let mut level = start;
    let mut total = 0.0;
    let mut seen = 0usize;
    for &v in y {
        if !v.is_finite() {
            continue;
        }
        let e = v - level;
        // As in `Ses::step`: a value that would overflow the state is
        // skipped, so one absurd value does not make every α look alike.
        if !(level + alpha * e + e * e).is_finite() {
            continue;
        }
        if seen >= BURN_IN {
            total += e * e;
        }
        seen += 1;
        level += alpha * e;
    }
    if total.is_finite() { total } else { f64::INFINITY }
}

/// The `α` in `[ALPHA_MIN, ALPHA_MAX]` with the least one-step error.
fn best_alpha(y: &[f64], start: f64) -> f64 {
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (ALPHA_MIN, ALPHA_MAX);
    let mut c = b - ratio * (b - a);
    let mut d = a + ratio * (b - a);
    let (mut fc, mut fd) = (sse(c, y, start), sse(d, y, start));
    for _ in 0..SEARCH_STEPS {
        if fc <= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - ratio * (b - a);
            fc = sse(c, y, start);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + ratio * (b - a);
            fd = sse(d, y, start);
        }
    }
    // The ends are candidates too: the error can fall all the way to α = 1
    // (a random walk) or to the floor (pure noise around a fixed level).
    let inner = if fc <= fd { c } else { d };
    [inner, ALPHA_MIN, ALPHA_MAX]
        .into_iter()
        .map(|alpha| (alpha, sse(alpha, y, start)))
        .fold((inner, f64::INFINITY), |best, x| if x.1 < best.1 { x } else { best })
        .0
}

impl Model for Ses {
    fn kind(&self) -> ModelKind {
        ModelKind::Ses
    }

    fn fit(&mut self, history: &[f64]) -> Result<()> {
        self.alpha = None;
        self.state = None;
        let need = self.min_history();
        if history.len() < need {
            return Err(Error::InsufficientHistory { model: ModelKind::Ses, need, have: history.len() });
        }
        let window = self.config.fit_window.max(need);
        let y: Vec<f64> = history[history.len().saturating_sub(window)..].iter().copied().map(clean).collect();
        let finite: Vec<f64> = y.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.len() < need {
            return Err(Error::InsufficientHistory { model: ModelKind::Ses, need, have: finite.len() });
        }
        let head = &finite[..BURN_IN.min(finite.len())];
        let start = head.iter().sum::<f64>() / head.len() as f64;
        let alpha = best_alpha(&y, start);
        let mut state = State { level: start, var: f64::NAN, errors_seen: 0, run: 0 };
        for &v in &y {
            self.step(alpha, &mut state, v);
        }
        if !state.level.is_finite() || !state.var.is_finite() {
            return Err(Error::Fit { model: ModelKind::Ses, reason: "one-step errors are not finite".into() });
        }
        self.alpha = Some(alpha);
        self.state = Some(state);
        Ok(())
    }

    fn update(&mut self, value: f64) {
        let (Some(alpha), Some(mut state)) = (self.alpha, self.state) else {
            return;
        };
        self.step(alpha, &mut state, clean(value));
        self.state = Some(state);
    }

    fn predict(&self, horizon: usize, level: f64) -> Result<Forecast> {
        check_level(level)?;
        let (Some(alpha), Some(state)) = (self.alpha, self.state) else {
            return Err(Error::NotFitted { model: ModelKind::Ses });
        };
        let z = normal_z(level)?;
        let point = vec![state.level; horizon];
        let half = |h: usize| z * (state.var * (1.0 + (h as f64 - 1.0) * alpha * alpha)).sqrt();
        let lower = (1..=horizon).map(|h| state.level - half(h)).collect();
        let upper = (1..=horizon).map(|h| state.level + half(h)).collect();
        Forecast { point, lower, upper, level }.checked(ModelKind::Ses)
    }

    fn predict_point(&self, horizon: usize, out: &mut Vec<f64>) -> Result<()> {
        out.clear();
        let Some(state) = self.state else {
            return Err(Error::NotFitted { model: ModelKind::Ses });
        };
        out.resize(horizon, state.level);
        Ok(())
    }

    fn min_history(&self) -> usize {
        self.config.min_history.max(2)
    }

    fn is_fitted(&self) -> bool {
        self.state.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::testing::{gaussian_noise, one_step_coverage};

    fn model() -> Ses {
        Ses::new(SesConfig::for_seasons(&Seasons::from_step(300).expect("valid step")))
    }

    #[test]
    fn noise_around_a_level_is_forecast_by_the_level_not_the_last_value() {
        let y: Vec<f64> = gaussian_noise(2000, 5).iter().map(|v| 100.0 + 5.0 * v).collect();
        let mut m = model();
        m.fit(&y).expect("long enough");
        let alpha = m.alpha().expect("fitted");
        assert!(alpha < 0.1, "white noise fits a small alpha, got {alpha}");
        let f = m.predict(6, 0.9).expect("fitted");
        assert!((f.point[0] - 100.0).abs() < 2.0, "level {} vs 100", f.point[0]);
        // 90% of N(0, 5²) lies within ±8.2; the estimate is close to it.
        let half = f.upper[0] - f.point[0];
        assert!((7.0..9.5).contains(&half), "half width {half}");
    }

    #[test]
    fn a_random_walk_fits_alpha_near_one() {
        let mut level = 100.0;
        let y: Vec<f64> = gaussian_noise(1000, 8)
            .iter()
            .map(|v| {
                level += v;
                level
            })
            .collect();
        let mut m = model();
        m.fit(&y).expect("long enough");
        assert!(m.alpha().expect("fitted") > 0.8);
        let f = m.predict(1, 0.9).expect("fitted");
        assert!((f.point[0] - y[y.len() - 1]).abs() < 1.0);
    }

    #[test]
    fn step_change_followed_within_a_few_steps() {
        let y: Vec<f64> = gaussian_noise(600, 3).iter().map(|v| 100.0 + v).collect();
        let mut m = model();
        m.fit(&y).expect("long enough");
        for _ in 0..4 {
            m.update(200.0);
        }
        let f = m.predict(1, 0.9).expect("fitted");
        assert!((f.point[0] - 200.0).abs() < 5.0, "after four steps at 200 the forecast is {}", f.point[0]);
        // A lone spike is smoothed, not followed.
        let mut m = model();
        m.fit(&y).expect("long enough");
        m.update(200.0);
        m.update(100.0);
        let f = m.predict(1, 0.9).expect("fitted");
        assert!(f.point[0] < 110.0, "one spike moved the level to {}", f.point[0]);
    }

    #[test]
    fn a_lone_spike_does_not_leave_the_interval_wide() {
        let y: Vec<f64> = gaussian_noise(600, 13).iter().map(|v| 50.0 + 3.0 * v).collect();
        let mut m = model();
        m.fit(&y).expect("long enough");
        let width = |m: &Ses| {
            let f = m.predict(1, 0.9).expect("fitted");
            f.upper[0] - f.lower[0]
        };
        let before = width(&m);
        m.update(5000.0);
        for v in &y[..6] {
            m.update(*v);
        }
        let after = width(&m);
        assert!(after < 1.5 * before, "width {before} before a spike of 100×, {after} after");
    }

    #[test]
    fn intervals_widen_with_the_horizon_and_cover_noise_at_the_nominal_rate() {
        let y: Vec<f64> = gaussian_noise(4000, 11).iter().map(|v| 50.0 + 2.0 * v).collect();
        let mut m = model();
        m.fit(&y[..1000]).expect("long enough");
        let f = m.predict(12, 0.9).expect("fitted");
        assert!(f.upper[11] - f.lower[11] > f.upper[0] - f.lower[0]);
        let rate = one_step_coverage(&mut m, &y[1000..]);
        assert!((0.86..=0.94).contains(&rate), "coverage {rate}");
    }

    #[test]
    fn missing_extreme_and_short_inputs_do_not_panic() {
        let mut m = model();
        assert!(m.fit(&[1.0; 5]).is_err(), "shorter than an hour");
        assert!(m.fit(&[f64::NAN; 100]).is_err(), "nothing finite");
        assert!(m.predict(1, 0.9).is_err());
        let mut y: Vec<f64> = gaussian_noise(300, 1).iter().map(|v| 10.0 + v).collect();
        y[50] = f64::INFINITY;
        y[51] = f64::NAN;
        y[52] = 1e308;
        m.fit(&y).expect("mostly finite");
        m.update(f64::NAN);
        m.update(f64::MAX);
        m.update(-f64::MAX);
        let f = m.predict(6, 0.9).expect("fitted");
        assert!(f.point.iter().chain(&f.lower).chain(&f.upper).all(|v| v.is_finite()));
    }

    #[test]
    fn a_fit_depends_on_its_input_only() {
        let y: Vec<f64> = gaussian_noise(1500, 21).iter().map(|v| 30.0 + v).collect();
        let (mut a, mut b) = (model(), model());
        a.fit(&y[..700]).expect("long enough");
        b.fit(&y[..900]).expect("long enough");
        b.update(5.0);
        b.fit(&y[..700]).expect("long enough");
        assert_eq!(a.predict(12, 0.9).expect("fitted"), b.predict(12, 0.9).expect("fitted"));
    }
}
