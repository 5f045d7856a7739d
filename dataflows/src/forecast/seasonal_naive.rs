//! Seasonal naive forecasts: the value one season (a day or a week) earlier.
//!
//! The forecast `h` steps ahead is the value `m·⌈h/m⌉` steps before the
//! target, where `m` is the season in steps: yesterday's (or last week's)
//! value at the same time of day. The same core with `m = 1` is the last-value
//! model ([`super::last_value`]), and with a season found in the data and
//! the mean of the values one to `k` seasons back, the cycle model
//! ([`super::cycle`]).
//!
//! **Missing values.** If the value one season back is missing, the one a
//! further season back is used, and if all of those are missing the last
//! finite value: a gap in yesterday's data should not become a gap today.
//!
//! **Intervals** are empirical ([`super::intervals`]): a naive forecast has no
//! fitted parameters, so its in-sample errors at lag `L`, `y_t − y_{t−L}`,
//! *are* its out-of-sample errors. They are taken over the last
//! `error_window` steps of the retained buffer, so the interval is ready as
//! soon as the model is fitted rather than after a day of scoring.
//!
//! **State** is a bounded buffer of the most recent values: enough for the
//! longest lag plus the error window plus one season of fallback.

use std::collections::VecDeque;

use super::intervals::{error_offsets, min_errors_for};
use super::{Error, Forecast, Model, ModelKind, Result, Seasons, check_level, clean};

/// Settings shared by the naive models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NaiveConfig {
    /// Number of recent errors per lag used for the empirical interval.
    pub error_window: usize,
    /// Longest horizon (steps) for which lagged errors are kept; longer
    /// horizons still forecast, with intervals scaled from shorter lags.
    pub max_horizon: usize,
}

impl NaiveConfig {
    /// Defaults: a one-day error window and horizons up to one day.
    pub fn for_seasons(seasons: &Seasons) -> NaiveConfig {
        NaiveConfig { error_window: seasons.day, max_horizon: seasons.day }
    }
}

/// The shared engine of the lag forecasts (last value, seasonal naive).
#[derive(Debug, Clone)]
pub(crate) struct LagCore {
    kind: ModelKind,
    season: usize,
    config: NaiveConfig,
    /// Seasons averaged into a forecast (1: the value one season back).
    cycles: usize,
    capacity: usize,
    buf: VecDeque<f64>,
    fitted: bool,
}

impl LagCore {
    pub(crate) fn new(kind: ModelKind, season: usize, config: NaiveConfig) -> LagCore {
        let season = season.max(1);
        let config = NaiveConfig { error_window: config.error_window.max(1), max_horizon: config.max_horizon.max(1) };
        let longest_lag = season * config.max_horizon.div_ceil(season);
        let capacity = config.error_window + longest_lag + season;
        LagCore { kind, season, config, cycles: 1, capacity, buf: VecDeque::with_capacity(capacity), fitted: false }
    }

    /// The same core forecasting the mean of the values `cycles` seasons
    /// back (at least one) rather than the value one season back.
    pub(crate) fn averaging(mut self, cycles: usize) -> LagCore {
        self.cycles = cycles.max(1);
        self.capacity += (self.cycles - 1) * self.season;
        self
    }

    pub(crate) fn kind(&self) -> ModelKind {
        self.kind
    }

    pub(crate) fn is_fitted(&self) -> bool {
        self.fitted
    }

    pub(crate) fn season(&self) -> usize {
        self.season
    }

    pub(crate) fn cycles(&self) -> usize {
        self.cycles
    }

    pub(crate) fn min_history(&self) -> usize {
        2 * self.season
    }

    pub(crate) fn fit(&mut self, history: &[f64]) -> Result<()> {
        self.fitted = false;
        self.buf.clear();
        if history.len() < self.min_history() {
            return Err(Error::InsufficientHistory { model: self.kind, need: self.min_history(), have: history.len() });
        }
        let start = history.len().saturating_sub(self.capacity);
        self.buf.extend(history[start..].iter().copied().map(clean));
        let finite = self.buf.iter().filter(|v| v.is_finite()).count();
        if finite < 2 {
            self.buf.clear();
            return Err(Error::InsufficientHistory { model: self.kind, need: 2, have: finite });
        }
        self.fitted = true;
        Ok(())
    }

    pub(crate) fn update(&mut self, value: f64) {
        if !self.fitted {
            return;
        }
        if self.buf.len() == self.capacity {
            self.buf.pop_front();
        }
        self.buf.push_back(clean(value));
    }

    fn lag(&self, h: usize) -> usize {
        self.season * h.div_ceil(self.season)
    }

    fn last_finite(&self) -> Option<f64> {
        self.buf.iter().rev().copied().find(|v| v.is_finite())
    }

    /// The mean of up to `cycles` finite values at `idx`, `idx − season`,
    /// …; a missing one is replaced by the one a further season back.
    fn seasonal_mean(&self, mut idx: Option<usize>) -> Option<f64> {
        let (mut sum, mut n) = (0.0, 0);
        while let Some(i) = idx
            && n < self.cycles
        {
            if let Some(v) = self.buf.get(i).filter(|v| v.is_finite()) {
                sum += v;
                n += 1;
            }
            idx = i.checked_sub(self.season);
        }
        (n > 0).then(|| sum / n as f64)
    }

    /// The point forecast `h` steps ahead (h ≥ 1).
    fn point(&self, h: usize, last_finite: f64) -> f64 {
        // The target is at index len − 1 + h; the value `lag` before it.
        let idx = (self.buf.len() - 1 + h).checked_sub(self.lag(h));
        self.seasonal_mean(idx).unwrap_or(last_finite)
    }

    pub(crate) fn predict_point(&self, horizon: usize, out: &mut Vec<f64>) -> Result<()> {
        out.clear();
        if !self.fitted {
            return Err(Error::NotFitted { model: self.kind });
        }
        let Some(last) = self.last_finite() else {
            return Err(Error::InsufficientHistory { model: self.kind, need: 1, have: 0 });
        };
        out.extend((1..=horizon).map(|h| self.point(h, last)));
        if out.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(Error::NonFinite { model: self.kind }) }
    }

    /// The errors `y_t − y_{t−lag}` (or of the mean over `cycles` seasons
    /// from there) over the last `error_window` positions.
    fn lag_errors(&self, lag: usize, out: &mut Vec<f64>) {
        out.clear();
        let len = self.buf.len();
        let first = len.saturating_sub(self.config.error_window).max(lag);
        for t in first..len {
            let a = self.buf[t];
            if !a.is_finite() {
                continue;
            }
            let b = if self.cycles == 1 {
                // One season: the value itself, not an earlier one in its
                // place (a gap is not an error of the model).
                Some(self.buf[t - lag]).filter(|v| v.is_finite())
            } else {
                self.seasonal_mean(Some(t - lag))
            };
            if let Some(b) = b {
                out.push(a - b);
            }
        }
    }

    /// The mean absolute one-season error over the error window (`None`
    /// without an error): how well the core would have done recently.
    pub(crate) fn mean_abs_error(&self) -> Option<f64> {
        let mut errors = Vec::with_capacity(self.config.error_window);
        self.lag_errors(self.season, &mut errors);
        (!errors.is_empty()).then(|| errors.iter().map(|e| e.abs()).sum::<f64>() / errors.len() as f64)
    }

    /// Interval offsets for lag `lag`, falling back to the base lag scaled by
    /// √(lag / season) (a random walk of seasons) when the lag has too few
    /// errors, as happens for horizons beyond the kept history.
    fn offsets(&self, lag: usize, level: f64, scratch: &mut Vec<f64>) -> Option<(f64, f64)> {
        self.lag_errors(lag, scratch);
        let enough = scratch.len() >= min_errors_for(level);
        if (enough || lag == self.season)
            && let Some(o) = error_offsets(scratch, level)
        {
            return Some(o);
        }
        self.lag_errors(self.season, scratch);
        let scale = ((lag / self.season) as f64).sqrt();
        error_offsets(scratch, level).map(|(lo, hi)| (lo * scale, hi * scale))
    }

    pub(crate) fn predict(&self, horizon: usize, level: f64) -> Result<Forecast> {
        check_level(level)?;
        let mut point = Vec::with_capacity(horizon);
        self.predict_point(horizon, &mut point)?;
        let mut lower = Vec::with_capacity(horizon);
        let mut upper = Vec::with_capacity(horizon);
        let mut scratch = Vec::with_capacity(self.config.error_window);
        // All horizons up to one season share one lag, so offsets are
        // recomputed only when the lag changes.
        let mut cached: Option<(usize, (f64, f64))> = None;
        for (i, p) in point.iter().enumerate() {
            let lag = self.lag(i + 1);
            let (lo, hi) = match cached {
                Some((l, o)) if l == lag => o,
                _ => {
                    let o = self.offsets(lag, level, &mut scratch).ok_or(Error::InsufficientHistory {
                        model: self.kind,
                        need: self.season + 1,
                        have: self.buf.len(),
                    })?;
                    cached = Some((lag, o));
                    o
                }
            };
            lower.push(p + lo);
            upper.push(p + hi);
        }
        Forecast { point, lower, upper, level }.checked(self.kind)
    }
}

/// The value one season earlier (a day or a week), with empirical intervals.
#[derive(Debug, Clone)]
pub struct SeasonalNaive {
    core: LagCore,
}

impl SeasonalNaive {
    /// The value one day earlier.
    pub fn day(seasons: &Seasons, config: NaiveConfig) -> SeasonalNaive {
        SeasonalNaive { core: LagCore::new(ModelKind::SeasonalNaiveDay, seasons.day, config) }
    }

    /// The value one week earlier.
    pub fn week(seasons: &Seasons, config: NaiveConfig) -> SeasonalNaive {
        SeasonalNaive { core: LagCore::new(ModelKind::SeasonalNaiveWeek, seasons.week, config) }
    }
}

impl Model for SeasonalNaive {
    fn kind(&self) -> ModelKind {
        self.core.kind()
    }
    fn fit(&mut self, history: &[f64]) -> Result<()> {
        self.core.fit(history)
    }
    fn update(&mut self, value: f64) {
        self.core.update(value);
    }
    fn predict(&self, horizon: usize, level: f64) -> Result<Forecast> {
        self.core.predict(horizon, level)
    }
    fn predict_point(&self, horizon: usize, out: &mut Vec<f64>) -> Result<()> {
        self.core.predict_point(horizon, out)
    }
    fn min_history(&self) -> usize {
        self.core.min_history()
    }
    fn is_fitted(&self) -> bool {
        self.core.is_fitted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::testing::{daily_sine, gaussian_noise, one_step_coverage};

    fn seasons() -> Seasons {
        Seasons::from_step(300).expect("valid step")
    }

    #[test]
    fn repeats_yesterday() {
        let s = seasons();
        let y = daily_sine(&s, 2 * s.day, 0.0);
        let mut m = SeasonalNaive::day(&s, NaiveConfig::for_seasons(&s));
        m.fit(&y).expect("two days");
        let f = m.predict(s.day + 5, 0.9).expect("fitted");
        let truth = daily_sine(&s, 3 * s.day + 5, 0.0);
        for (h, p) in f.point.iter().enumerate() {
            assert!((p - truth[2 * s.day + h]).abs() < 1e-9, "h={h}");
        }
    }

    #[test]
    fn needs_two_seasons() {
        let s = seasons();
        let mut m = SeasonalNaive::week(&s, NaiveConfig::for_seasons(&s));
        let err = m.fit(&vec![1.0; 2 * s.week - 1]).expect_err("too short");
        assert_eq!(
            err,
            Error::InsufficientHistory { model: ModelKind::SeasonalNaiveWeek, need: 2 * s.week, have: 2 * s.week - 1 }
        );
        assert!(m.predict(1, 0.9).is_err());
    }

    #[test]
    fn missing_lagged_value_uses_earlier_season() {
        let s = seasons();
        let mut y = daily_sine(&s, 3 * s.day, 0.0);
        let yesterday = 2 * s.day; // one day before the first forecast step
        y[yesterday] = f64::NAN;
        let mut m = SeasonalNaive::day(&s, NaiveConfig::for_seasons(&s));
        m.fit(&y).expect("three days");
        let f = m.predict(1, 0.9).expect("fitted");
        assert!((f.point[0] - y[s.day]).abs() < 1e-12);
    }

    #[test]
    fn empirical_interval_covers_noise() {
        let s = seasons();
        let noise = gaussian_noise(20 * s.day, 7);
        let mut m = SeasonalNaive::day(&s, NaiveConfig::for_seasons(&s));
        m.fit(&noise[..3 * s.day]).expect("three days");
        let rate = one_step_coverage(&mut m, &noise[3 * s.day..]);
        assert!((0.86..=0.94).contains(&rate), "coverage {rate}");
    }
}
