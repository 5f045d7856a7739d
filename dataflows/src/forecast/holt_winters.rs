//! Additive Holt–Winters with a damped trend and one daily season:
//! ETS(A,Ad,A) in error-correction form.
//!
//! With one-step forecast `ŷ = ℓ + φ b + s` and error `e = y − ŷ`:
//!
//! ```text
//! ℓ ← ℓ + φ b + α e        b ← φ b + β e        s ← s + γ e
//! ```
//!
//! where `s` is the seasonal term of the current time of day, kept in a ring
//! of `m` (steps per day) values. [`Model::update`] is this step: O(1).
//!
//! **Fit.** The state starts from the first two days of the fit window
//! (level and trend from the two daily means, the season from the deviations
//! from them) and the filter runs over the window. `α, β, γ, φ` minimise the
//! one-step squared error (after a burn-in day) by Nelder–Mead in an
//! unconstrained parametrisation that keeps `0 < β < α < 1`,
//! `0 < γ < 1 − α` and `0.8 ≤ φ ≤ 0.98` (the usual admissible region; the
//! damping floor stops a trend from being fitted away entirely, the ceiling
//! stops it from extrapolating linearly over the horizon). The search starts
//! at fixed values and stops after [`HoltWintersConfig::max_evals`]
//! evaluations on the last [`HoltWintersConfig::estimation_window`] steps,
//! so a fit costs a fixed, small number of passes over two weeks. It does
//! not start from the previous fit: a fit is a function of its input only,
//! so a restarted job that refits on the same history gets the same model.
//!
//! **Missing values.** A non-finite value skips the error correction: the
//! state moves one step on its own forecast (`ℓ ← ℓ + φ b`, `b ← φ b`), the
//! seasonal ring advances unchanged.
//!
//! **Intervals** are analytic (Hyndman et al., *Forecasting with Exponential
//! Smoothing*, 2008, class 1 models): the `h`-step variance is
//! `σ² (1 + Σ_{j<h} c_j²)` with `c_j = α + β (φ + … + φ^j) + γ [j mod m = 0]`,
//! and the interval is `ŷ ± z σ_h` for the normal quantile `z`. `σ²` is an
//! exponentially weighted mean of squared one-step errors with a memory of
//! [`HoltWintersConfig::variance_window`] steps, started on the fit window and
//! updated by `update`: load volatility changes over days, and an interval
//! from a month-long average would be too wide in quiet periods and too
//! narrow in busy ones.

use super::{
    Error, Forecast, Model, ModelKind, Result, Seasons, check_level, clean, completes_shift, ew_variance, normal_z,
};

/// Settings of the Holt–Winters model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoltWintersConfig {
    /// Most recent steps of the history the fitted state is run over (at
    /// least two days).
    pub fit_window: usize,
    /// Most recent steps used to estimate the smoothing parameters (at
    /// least two days): the search runs the filter `max_evals` times, so
    /// this window sets the fit time.
    pub estimation_window: usize,
    /// Objective evaluations allowed to Nelder–Mead per fit.
    pub max_evals: usize,
    /// Memory, in steps, of the residual variance behind the intervals.
    pub variance_window: usize,
    /// Consecutive same-side errors beyond `shift_z` σ taken as a level
    /// shift (0 disables the detector).
    pub shift_after: usize,
    /// Size, in standard deviations, of an error that counts towards a shift.
    pub shift_z: f64,
}

impl HoltWintersConfig {
    /// Defaults: the state runs over four weeks, the parameters are
    /// estimated on the last two, 120 evaluations, a one-day variance
    /// memory, a level shift after three errors beyond 3 σ.
    pub fn for_seasons(seasons: &Seasons) -> HoltWintersConfig {
        HoltWintersConfig {
            fit_window: 4 * seasons.week,
            estimation_window: 2 * seasons.week,
            max_evals: 120,
            variance_window: seasons.day,
            shift_after: 3,
            shift_z: 3.0,
        }
    }

    fn rules(&self) -> StepRules {
        StepRules {
            var_weight: 1.0 / self.variance_window.max(1) as f64,
            shift_after: self.shift_after,
            shift_z: self.shift_z,
        }
    }
}

/// Smoothing parameters of a fitted model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoltWintersParams {
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing (error-correction form, `< alpha`).
    pub beta: f64,
    /// Seasonal smoothing (`< 1 − alpha`).
    pub gamma: f64,
    /// Trend damping.
    pub phi: f64,
}

const PHI_MIN: f64 = 0.8;
const PHI_MAX: f64 = 0.98;

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

impl HoltWintersParams {
    /// Maps an unconstrained point to admissible parameters.
    fn from_free(x: &[f64; 4]) -> HoltWintersParams {
        let alpha = 0.001 + 0.998 * logistic(x[0]);
        HoltWintersParams {
            alpha,
            beta: alpha * logistic(x[1]),
            gamma: (1.0 - alpha) * logistic(x[2]),
            phi: PHI_MIN + (PHI_MAX - PHI_MIN) * logistic(x[3]),
        }
    }

    fn to_free(self) -> [f64; 4] {
        let alpha_frac = (self.alpha - 0.001) / 0.998;
        [
            logit(alpha_frac),
            logit(self.beta / self.alpha),
            logit(self.gamma / (1.0 - self.alpha)),
            logit((self.phi - PHI_MIN) / (PHI_MAX - PHI_MIN)),
        ]
    }
}

/// Filter state at the end of the data seen so far.
#[derive(Debug, Clone)]
struct State {
    level: f64,
    trend: f64,
    season: Vec<f64>,
    /// Index in `season` of the term for the *next* step.
    pos: usize,
    /// Exponentially weighted variance of the one-step errors (`NaN` until
    /// the first error).
    var: f64,
    /// One-step errors seen, for the burn-in of the shift detector.
    errors_seen: usize,
    /// Consecutive large errors, signed by their direction.
    run: i64,
}

/// How the filter weighs errors and detects level shifts.
#[derive(Debug, Clone, Copy)]
struct StepRules {
    /// Weight of a new squared error in the variance.
    var_weight: f64,
    /// Consecutive large same-sign errors that count as a level shift (0 =
    /// never).
    shift_after: usize,
    /// "Large" means beyond this many standard deviations.
    shift_z: f64,
}

impl State {
    /// One filter step; returns the one-step error, or `None` if `value` is
    /// missing. A value so extreme that the state would overflow counts as
    /// missing too, rather than poisoning every later forecast.
    #[inline]
    fn step(&mut self, p: &HoltWintersParams, rules: &StepRules, value: f64) -> Option<f64> {
        let s = self.season[self.pos];
        let damped = p.phi * self.trend;
        let e = value - (self.level + damped + s);
        let level = self.level + damped + p.alpha * e;
        let trend = damped + p.beta * e;
        let season = s + p.gamma * e;
        let var = ew_variance(self.var, e, rules.var_weight, self.level, self.errors_seen >= self.season.len());
        // A sum of finite numbers can only overflow when some are huge, and
        // then the step is rejected as well; one check instead of five.
        let usable = (e * e + level + trend + season + var).is_finite();
        let error = if usable {
            self.level = level;
            self.trend = trend;
            self.season[self.pos] = season;
            // The detector compares with the variance before this error.
            self.track_shift(p, rules, e);
            self.var = var;
            self.errors_seen += 1;
            Some(e)
        } else {
            self.level += damped;
            self.trend = damped;
            None
        };
        self.pos += 1;
        if self.pos == self.season.len() {
            self.pos = 0;
        }
        error
    }

    /// With a small `α` (the optimum on noisy data) the level would take
    /// tens of steps to follow a sudden, lasting change in load, the very
    /// event an autoscaler must not miss. A run of `shift_after` errors
    /// beyond `shift_z` σ on the same side is taken as a level shift, and
    /// the level jumps to absorb the last error in full. A lone spike
    /// breaks no run and is smoothed as usual.
    fn track_shift(&mut self, p: &HoltWintersParams, rules: &StepRules, e: f64) {
        if rules.shift_after == 0 || self.errors_seen < self.season.len() || !self.var.is_finite() {
            return;
        }
        if completes_shift(&mut self.run, e, self.var, rules.shift_z, rules.shift_after) {
            self.level += (1.0 - p.alpha) * e;
        }
    }

    /// Initial state from the first two seasons of `y` (`y.len() >= 2 m`).
    fn initial(y: &[f64], m: usize) -> State {
        let mean = |s: &[f64]| {
            let (sum, n) = s.iter().filter(|v| v.is_finite()).fold((0.0, 0usize), |(a, n), v| (a + v, n + 1));
            (n > 0).then(|| sum / n as f64)
        };
        let (first, second) = (&y[..m], &y[m..2 * m]);
        let (mean1, mean2) = match (mean(first), mean(second)) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) | (None, Some(a)) => (a, a),
            (None, None) => {
                let overall = mean(y).unwrap_or(0.0);
                (overall, overall)
            }
        };
        let trend = (mean2 - mean1) / m as f64;
        let mut season: Vec<f64> = (0..m)
            .map(|i| {
                let devs = [first[i] - mean1, second[i] - mean2];
                let (sum, n) = devs.iter().filter(|d| d.is_finite()).fold((0.0, 0usize), |(a, n), d| (a + d, n + 1));
                if n > 0 { sum / n as f64 } else { 0.0 }
            })
            .collect();
        let centre = season.iter().sum::<f64>() / m as f64;
        season.iter_mut().for_each(|s| *s -= centre);
        // mean1 is the level at the middle of the first day; step back to
        // just before the first value.
        let level = mean1 - trend * ((m as f64 - 1.0) / 2.0 + 1.0);
        State { level, trend, season, pos: 0, var: f64::NAN, errors_seen: 0, run: 0 }
    }
}

/// Additive Holt–Winters (damped trend, daily season) with O(1) updates.
#[derive(Debug, Clone)]
pub struct HoltWinters {
    period: usize,
    config: HoltWintersConfig,
    params: Option<HoltWintersParams>,
    state: Option<State>,
}

impl HoltWinters {
    /// An unfitted model with the daily season of `seasons`.
    pub fn new(seasons: &Seasons, config: HoltWintersConfig) -> HoltWinters {
        HoltWinters::with_period(seasons.day, config)
    }

    /// An unfitted model with a season of `period` steps (at least 2).
    pub fn with_period(period: usize, config: HoltWintersConfig) -> HoltWinters {
        HoltWinters { period: period.max(2), config, params: None, state: None }
    }

    /// The fitted smoothing parameters, if fitted.
    pub fn params(&self) -> Option<HoltWintersParams> {
        self.params
    }

    /// Runs the filter over `y` from the initial state; returns the state
    /// and the squared one-step error after the burn-in season, with its
    /// count.
    fn run(&self, p: &HoltWintersParams, y: &[f64], init: &State) -> (State, f64, usize) {
        let rules = self.config.rules();
        let mut state = init.clone();
        let (mut sse, mut count) = (0.0, 0usize);
        for (t, &v) in y.iter().enumerate() {
            if let Some(e) = state.step(p, &rules, v)
                && t >= self.period
            {
                sse += e * e;
                count += 1;
            }
        }
        (state, sse, count)
    }

    /// One-step squared error of `x` after the burn-in season. A lean copy
    /// of [`State::step`] without the variance and the shift detector: the
    /// search calls it `max_evals` times, and those extras would double its
    /// cost while barely moving the optimum.
    fn objective(&self, x: &[f64; 4], y: &[f64], init: &State, season: &mut Vec<f64>) -> f64 {
        let p = HoltWintersParams::from_free(x);
        season.clear();
        season.extend_from_slice(&init.season);
        let (mut level, mut trend, mut pos) = (init.level, init.trend, init.pos);
        let mut sse = 0.0;
        for (t, &v) in y.iter().enumerate() {
            let s = season[pos];
            let damped = p.phi * trend;
            if v.is_finite() {
                let e = v - (level + damped + s);
                level += damped + p.alpha * e;
                trend = damped + p.beta * e;
                season[pos] = s + p.gamma * e;
                if t >= self.period {
                    sse += e * e;
                }
            } else {
                level += damped;
                trend = damped;
            }
            pos += 1;
            if pos == self.period {
                pos = 0;
            }
        }
        if sse.is_finite() { sse } else { f64::INFINITY }
    }

    fn variance(&self, p: &HoltWintersParams, sigma2: f64, horizon: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(horizon);
        let mut acc = 1.0;
        let mut phi_sum = 0.0;
        let mut phi_pow = 1.0;
        for h in 1..=horizon {
            out.push(sigma2 * acc);
            // c_j for j = h, used from horizon h + 1 on.
            phi_pow *= p.phi;
            phi_sum += phi_pow;
            let seasonal = if h % self.period == 0 { p.gamma } else { 0.0 };
            let c = p.alpha + p.beta * phi_sum + seasonal;
            acc += c * c;
        }
        out
    }
}

/// Minimises `f` over R⁴ by Nelder–Mead from `start` with initial steps of
/// `step`, within `max_evals` evaluations. Deterministic.
fn nelder_mead(mut f: impl FnMut(&[f64; 4]) -> f64, start: [f64; 4], step: f64, max_evals: usize) -> [f64; 4] {
    let mut simplex: Vec<([f64; 4], f64)> = Vec::with_capacity(5);
    let mut evals = 0usize;
    let mut eval = |x: &[f64; 4], evals: &mut usize| {
        *evals += 1;
        let v = f(x);
        if v.is_nan() { f64::INFINITY } else { v }
    };
    simplex.push((start, eval(&start, &mut evals)));
    for i in 0..4 {
        let mut x = start;
        x[i] += step;
        let v = eval(&x, &mut evals);
        simplex.push((x, v));
    }
    let lerp = |a: &[f64; 4], b: &[f64; 4], t: f64| -> [f64; 4] { std::array::from_fn(|i| a[i] + t * (b[i] - a[i])) };
    while evals < max_evals {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[4].1);
        // Relative spread of 1e-7 in squared error is far below what moves a
        // forecast; stopping there saves a third of the evaluations.
        if (worst - best).abs() <= 1e-7 * (best.abs() + 1e-300) {
            break;
        }
        let centroid: [f64; 4] = std::array::from_fn(|i| simplex[..4].iter().map(|(x, _)| x[i]).sum::<f64>() / 4.0);
        let worst_x = simplex[4].0;
        let reflected = lerp(&centroid, &worst_x, -1.0);
        let fr = eval(&reflected, &mut evals);
        if fr < simplex[0].1 {
            let expanded = lerp(&centroid, &worst_x, -2.0);
            let fe = eval(&expanded, &mut evals);
            simplex[4] = if fe < fr { (expanded, fe) } else { (reflected, fr) };
        } else if fr < simplex[3].1 {
            simplex[4] = (reflected, fr);
        } else {
            let (towards, f_towards) = if fr < worst { (reflected, fr) } else { (worst_x, worst) };
            let contracted = lerp(&centroid, &towards, 0.5);
            let fc = eval(&contracted, &mut evals);
            if fc < f_towards {
                simplex[4] = (contracted, fc);
            } else {
                let best_x = simplex[0].0;
                for entry in simplex.iter_mut().skip(1) {
                    let x = lerp(&best_x, &entry.0, 0.5);
                    *entry = (x, eval(&x, &mut evals));
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex[0].0
}

impl Model for HoltWinters {
    fn kind(&self) -> ModelKind {
        ModelKind::HoltWinters
    }

    fn fit(&mut self, history: &[f64]) -> Result<()> {
        self.params = None;
        self.state = None;
        let m = self.period;
        if history.len() < 2 * m {
            return Err(Error::InsufficientHistory { model: ModelKind::HoltWinters, need: 2 * m, have: history.len() });
        }
        let window = self.config.fit_window.max(2 * m);
        let y: Vec<f64> = history[history.len().saturating_sub(window)..].iter().copied().map(clean).collect();
        let finite = y.iter().filter(|v| v.is_finite()).count();
        if finite < m {
            return Err(Error::InsufficientHistory { model: ModelKind::HoltWinters, need: m, have: finite });
        }
        let estimation = &y[y.len().saturating_sub(self.config.estimation_window.max(2 * m))..];
        let estimation_init = State::initial(estimation, m);
        let start = HoltWintersParams { alpha: 0.5, beta: 0.01, gamma: 0.1, phi: 0.9 }.to_free();
        let mut season = Vec::with_capacity(m);
        let best = nelder_mead(
            |x| self.objective(x, estimation, &estimation_init, &mut season),
            start,
            1.0,
            self.config.max_evals.max(6),
        );
        let params = HoltWintersParams::from_free(&best);
        let (state, sse, count) = self.run(&params, &y, &State::initial(&y, m));
        if !sse.is_finite() || count == 0 || !state.level.is_finite() || !state.var.is_finite() {
            return Err(Error::Fit { model: ModelKind::HoltWinters, reason: "one-step errors are not finite".into() });
        }
        self.params = Some(params);
        self.state = Some(state);
        Ok(())
    }

    fn update(&mut self, value: f64) {
        let rules = self.config.rules();
        let (Some(p), Some(state)) = (self.params, self.state.as_mut()) else {
            return;
        };
        state.step(&p, &rules, clean(value));
    }

    fn predict(&self, horizon: usize, level: f64) -> Result<Forecast> {
        check_level(level)?;
        let (Some(p), Some(state)) = (self.params, self.state.as_ref()) else {
            return Err(Error::NotFitted { model: ModelKind::HoltWinters });
        };
        let mut point = Vec::with_capacity(horizon);
        self.predict_point(horizon, &mut point)?;
        let z = normal_z(level)?;
        let var = self.variance(&p, state.var, horizon);
        let lower = point.iter().zip(&var).map(|(y, v)| y - z * v.sqrt()).collect();
        let upper = point.iter().zip(&var).map(|(y, v)| y + z * v.sqrt()).collect();
        Forecast { point, lower, upper, level }.checked(ModelKind::HoltWinters)
    }

    fn predict_point(&self, horizon: usize, out: &mut Vec<f64>) -> Result<()> {
        out.clear();
        let (Some(p), Some(s)) = (self.params, self.state.as_ref()) else {
            return Err(Error::NotFitted { model: ModelKind::HoltWinters });
        };
        let mut phi_sum = 0.0;
        let mut phi_pow = 1.0;
        let mut idx = s.pos;
        for _ in 0..horizon {
            phi_pow *= p.phi;
            phi_sum += phi_pow;
            out.push(s.level + phi_sum * s.trend + s.season[idx]);
            idx += 1;
            if idx == self.period {
                idx = 0;
            }
        }
        if out.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(Error::NonFinite { model: ModelKind::HoltWinters }) }
    }

    fn min_history(&self) -> usize {
        2 * self.period
    }

    fn is_fitted(&self) -> bool {
        self.state.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::testing::{daily_sine, gaussian_noise, one_step_coverage};

    fn seasons() -> Seasons {
        Seasons::from_step(300).expect("valid step")
    }

    fn model() -> HoltWinters {
        let s = seasons();
        HoltWinters::new(&s, HoltWintersConfig::for_seasons(&s))
    }

    #[test]
    fn pure_daily_sine_after_two_days() {
        let s = seasons();
        let y = daily_sine(&s, 3 * s.day, 0.0);
        let mut m = model();
        m.fit(&y[..2 * s.day]).expect("two days");
        let f = m.predict(s.day, 0.9).expect("fitted");
        let amplitude = 20.0;
        for (h, p) in f.point.iter().enumerate() {
            let err = (p - y[2 * s.day + h]).abs();
            assert!(err < 0.01 * amplitude, "h={h} err={err}");
        }
    }

    #[test]
    fn step_change_followed_within_a_few_steps() {
        let s = seasons();
        let mut y = gaussian_noise(3 * s.day, 3);
        y.iter_mut().for_each(|v| *v += 100.0);
        let mut m = model();
        m.fit(&y).expect("three days");
        for _ in 0..6 {
            m.update(200.0 + 0.0);
        }
        let f = m.predict(1, 0.9).expect("fitted");
        assert!((f.point[0] - 200.0).abs() < 15.0, "after six steps at 200 the forecast is {}", f.point[0]);
    }

    #[test]
    fn intervals_cover_gaussian_noise_at_nominal_rate() {
        let s = seasons();
        let mut noise = gaussian_noise(12 * s.day, 11);
        noise.iter_mut().for_each(|v| *v = 50.0 + 2.0 * *v);
        let mut m = model();
        m.fit(&noise[..4 * s.day]).expect("four days");
        let rate = one_step_coverage(&mut m, &noise[4 * s.day..]);
        assert!((0.86..=0.94).contains(&rate), "coverage {rate}");
    }

    #[test]
    fn variance_grows_with_horizon() {
        let s = seasons();
        let y = daily_sine(&s, 4 * s.day, 1.0);
        let mut m = model();
        m.fit(&y).expect("four days");
        let f = m.predict(24, 0.9).expect("fitted");
        let width = |h: usize| f.upper[h] - f.lower[h];
        assert!(width(23) > width(0));
        assert!(f.lower.iter().zip(&f.point).all(|(l, p)| l <= p));
    }

    #[test]
    fn missing_and_extreme_values_do_not_panic() {
        let s = seasons();
        let mut y = daily_sine(&s, 3 * s.day, 1.0);
        for i in (0..y.len()).step_by(7) {
            y[i] = f64::NAN;
        }
        y[100] = f64::INFINITY;
        y[101] = f64::NEG_INFINITY;
        let mut m = model();
        m.fit(&y).expect("mostly finite");
        m.update(f64::NAN);
        m.update(1e300);
        m.update(f64::MAX);
        // Either a forecast or an error, never a panic or a non-finite value.
        if let Ok(f) = m.predict(12, 0.9) {
            assert!(f.point.iter().all(|v| v.is_finite()));
        }
        let mut all_missing = model();
        assert!(all_missing.fit(&vec![f64::NAN; 3 * s.day]).is_err());
    }

    #[test]
    fn refit_is_deterministic() {
        let s = seasons();
        let y = daily_sine(&s, 5 * s.day, 3.0);
        let run = || {
            let mut m = model();
            m.fit(&y[..4 * s.day]).expect("four days");
            for &v in &y[4 * s.day..] {
                m.update(v);
            }
            m.predict(12, 0.9).expect("fitted")
        };
        let (a, b) = (run(), run());
        let bits = |f: &Forecast| f.point.iter().chain(&f.upper).map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
    }
}
