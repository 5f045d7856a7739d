//! Seasonal naive at a cycle found in the series itself: the values one to
//! a few cycles earlier, where the cycle (an hourly cron job, a batch that
//! runs every 70 minutes) is read off the series' recent autocorrelation.
//!
//! The other seasonal models know two periods, the day and the week. Many
//! VM loads repeat on a shorter clock of their own: a job that starts every
//! hour, or one that sleeps a fixed time after it ends. Their bursts are as
//! predictable as a daily peak, yet a day-seasonal model sees them as noise
//! and sizes for them all the time. Of the 100 VMs of the Azure V1 sample,
//! 24 show a cycle of under six hours in at least half of their two-day
//! windows (ten alternate every other step; others repeat hourly, every
//! 65–75 minutes or every four hours).
//!
//! **Finding the cycle.** At each fit the last [`CycleConfig::window`]
//! values (missing ones skipped) give the autocorrelation `r(l)` at lags
//! `1..=max_lag + 1`. A lag is a cycle when `r` peaks there
//! (`r(l) > r(l − 1)`, `r(l) ≥ r(l + 1)`), reaches
//! [`CycleConfig::min_correlation`], and has risen by at least
//! [`CycleConfig::min_rise`] above the lowest `r` at a shorter lag. The
//! rise is what tells a cycle from a smooth series, whose autocorrelation
//! is high at short lags only because it decays slowly. Of the peaks
//! within [`CycleConfig::harmonic_tolerance`] of the highest, the shortest
//! wins: a cycle of 12 steps also peaks at 24 and 36, and the shortest
//! uses the most recent values. A cycle that is not a whole number of
//! steps (13.7) peaks highest at the multiple closest to one (41 = 3 ×
//! 13.7), and that multiple is chosen when its peak is clearly higher.
//! The cycle must also show in each half of the window on its own
//! ([`CycleConfig::min_half_correlation`]): bursts that ran for a day
//! and stopped still peak over two days, and a cycle that comes and goes
//! (a lag of 12 steps one day, 36 the next, then none) cost more at
//! equal service than it saved on the days it held.
//!
//! **Forecasts and intervals** are those of the seasonal naive core
//! ([`super::seasonal_naive`]) with the cycle as its season, averaging the
//! values one to `k` cycles back, with empirical intervals from the errors
//! of that average over the last day. `k` (up to
//! [`CycleConfig::max_cycles`]) is the one with the lowest mean absolute
//! error over that day: one for crisp bursts whose phase drifts, more for
//! a cycle under noise. The cycle is found again at every refit, so one
//! that drifts or stops is followed within a refit period; when none is
//! found, the fit fails with [`Error::NotApplicable`] and the ensemble
//! chooses among the others.
//!
//! Data enters as the retained history (fit) and one value per step
//! (update) and leaves as a [`Forecast`], like every model here.

use super::seasonal_naive::{LagCore, NaiveConfig};
use super::{Error, Forecast, Model, ModelKind, Result, Seasons};

/// Settings of the cycle search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CycleConfig {
    /// Shortest lag (steps) taken for a cycle (default 2: a cycle of one
    /// step is the last value).
    pub min_lag: usize,
    /// Longest lag (steps) searched (default: a quarter of a day, so that
    /// the window holds at least eight cycles and the daily season stays
    /// with the daily models).
    pub max_lag: usize,
    /// Recent values the autocorrelation is taken over (default: two days).
    pub window: usize,
    /// Autocorrelation a peak needs to count as a cycle (default 0.45).
    pub min_correlation: f64,
    /// How far the peak must rise above the lowest autocorrelation at a
    /// shorter lag (default 0.1).
    pub min_rise: f64,
    /// Peaks this close to the highest count as equally good; the shortest
    /// of them is the cycle (default 0.05).
    pub harmonic_tolerance: f64,
    /// Autocorrelation at the cycle (or a step either side) that each half
    /// of the window must show on its own (default 0.25).
    pub min_half_correlation: f64,
    /// Most cycles averaged into a forecast (default 4); the number used
    /// is chosen at each fit, see the module docs.
    pub max_cycles: usize,
}

impl CycleConfig {
    /// The defaults for a series with these seasons.
    pub fn for_seasons(seasons: &Seasons) -> CycleConfig {
        CycleConfig {
            min_lag: 2,
            max_lag: (seasons.day / 4).max(2),
            window: 2 * seasons.day,
            min_correlation: 0.45,
            min_rise: 0.1,
            harmonic_tolerance: 0.05,
            min_half_correlation: 0.25,
            max_cycles: 4,
        }
    }
}

/// The autocorrelation of `x` at lags `0..=max_lag` (index = lag), over the
/// pairs where both values are finite, each lag normalised by its own
/// number of pairs. `None` when fewer than two values are finite or the
/// finite values do not vary.
pub fn autocorrelation(x: &[f64], max_lag: usize) -> Option<Vec<f64>> {
    let (n, sum) = x.iter().filter(|v| v.is_finite()).fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
    if n < 2 {
        return None;
    }
    let mean = sum / n as f64;
    let var = x.iter().filter(|v| v.is_finite()).map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    // Relative to the mean's size, so that a constant series of large
    // values (whose variance is rounding noise) is not taken for a cycle.
    if !var.is_finite() || var <= 1e-12 * mean.abs().max(1.0).powi(2) {
        return None;
    }
    let centred: Vec<f64> = x.iter().map(|v| v - mean).collect();
    let mut r = Vec::with_capacity(max_lag + 1);
    for lag in 0..=max_lag {
        let (mut s, mut pairs) = (0.0, 0usize);
        for (a, b) in centred.iter().skip(lag).zip(&centred) {
            // NaN minus the mean stays NaN: missing values drop out here.
            if a.is_finite() && b.is_finite() {
                s += a * b;
                pairs += 1;
            }
        }
        r.push(if pairs == 0 { 0.0 } else { s / pairs as f64 / var });
    }
    Some(r)
}

/// The cycle of `r` (an autocorrelation indexed by lag) as described in
/// the module docs, with its autocorrelation; `None` when no lag qualifies.
pub fn find_cycle(r: &[f64], config: &CycleConfig) -> Option<(usize, f64)> {
    let last = config.max_lag.min(r.len().saturating_sub(2));
    let mut lowest = f64::INFINITY;
    let mut peaks: Vec<(usize, f64)> = Vec::new();
    for lag in 1..=last {
        let (before, here, after) = (r[lag - 1], r[lag], r[lag + 1]);
        if lag >= config.min_lag
            && here > before
            && here >= after
            && here >= config.min_correlation
            && here - lowest >= config.min_rise
        {
            peaks.push((lag, here));
        }
        lowest = lowest.min(here);
    }
    let best = peaks.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    peaks.into_iter().find(|p| p.1 >= best - config.harmonic_tolerance)
}

/// The mean of the values one to a few detected cycles earlier, with
/// empirical intervals.
#[derive(Debug, Clone)]
pub struct Cycle {
    config: CycleConfig,
    naive: NaiveConfig,
    /// The fitted cycle's core; `None` before a fit or when none was found.
    core: Option<LagCore>,
    correlation: f64,
    step_secs: u64,
}

impl Cycle {
    /// A cycle model for a series with these seasons.
    pub fn new(seasons: &Seasons, config: CycleConfig, naive: NaiveConfig) -> Cycle {
        Cycle { config, naive, core: None, correlation: 0.0, step_secs: seasons.step_secs }
    }

    /// The cycle in steps, once fitted.
    pub fn period(&self) -> Option<usize> {
        self.core.as_ref().map(LagCore::season)
    }

    /// How many cycles the forecast averages, once fitted.
    pub fn cycles(&self) -> Option<usize> {
        self.core.as_ref().map(LagCore::cycles)
    }

    /// Which half of `recent` (`"first"` or `"second"`) does not show the
    /// cycle on its own, if one does not: a burst pattern that ran for a
    /// day and stopped still peaks over two days, and forecast by, it
    /// would be carried into a day without it.
    fn missing_half(&self, recent: &[f64], period: usize) -> Option<&'static str> {
        let mid = recent.len() / 2;
        [("first", &recent[..mid]), ("second", &recent[mid..])].into_iter().find_map(|(name, half)| {
            // A half that does not vary has no cycle either.
            let Some(r) = autocorrelation(half, period + 1) else { return Some(name) };
            // One step either side: a cycle that is not a whole number of
            // steps peaks a step off in a window this short.
            let best = r[period - 1..=period + 1].iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (best < self.config.min_half_correlation).then_some(name)
        })
    }

    fn fitted_core(&self) -> Result<&LagCore> {
        self.core.as_ref().ok_or(Error::NotFitted { model: ModelKind::Cycle })
    }
}

impl Model for Cycle {
    fn kind(&self) -> ModelKind {
        ModelKind::Cycle
    }

    fn fit(&mut self, history: &[f64]) -> Result<()> {
        self.core = None;
        let need = self.min_history();
        if history.len() < need {
            return Err(Error::InsufficientHistory { model: ModelKind::Cycle, need, have: history.len() });
        }
        let recent = &history[history.len().saturating_sub(self.config.window)..];
        let found = autocorrelation(recent, self.config.max_lag + 1).and_then(|r| find_cycle(&r, &self.config));
        let Some((period, correlation)) = found else {
            return Err(Error::NotApplicable {
                model: ModelKind::Cycle,
                reason: format!(
                    "no cycle of {} to {} steps in the last {} steps",
                    self.config.min_lag,
                    self.config.max_lag,
                    recent.len()
                ),
            });
        };
        if let Some(day) = self.missing_half(recent, period) {
            return Err(Error::NotApplicable {
                model: ModelKind::Cycle,
                reason: format!(
                    "the cycle of {period} steps is not in the {day} half of the last {} steps",
                    recent.len()
                ),
            });
        }
        // The number of cycles averaged is the one that would have
        // forecast the window best: one for crisp bursts that drift in
        // phase, more for a cycle under noise.
        let mut best: Option<(f64, LagCore)> = None;
        for cycles in 1..=self.config.max_cycles.max(1) {
            let mut core = LagCore::new(ModelKind::Cycle, period, self.naive).averaging(cycles);
            core.fit(history)?;
            let error = core.mean_abs_error().unwrap_or(f64::INFINITY);
            if best.as_ref().is_none_or(|(b, _)| error < *b) {
                best = Some((error, core));
            }
        }
        // The loop ran at least once and each pass fitted its core or
        // returned the error.
        let Some((_, core)) = best else { return Err(Error::NotFitted { model: ModelKind::Cycle }) };
        self.core = Some(core);
        self.correlation = correlation;
        Ok(())
    }

    fn update(&mut self, value: f64) {
        if let Some(core) = &mut self.core {
            core.update(value);
        }
    }

    fn predict(&self, horizon: usize, level: f64) -> Result<Forecast> {
        self.fitted_core()?.predict(horizon, level)
    }

    fn predict_point(&self, horizon: usize, out: &mut Vec<f64>) -> Result<()> {
        self.fitted_core()?.predict_point(horizon, out)
    }

    /// Enough history for four cycles of the longest lag searched.
    fn min_history(&self) -> usize {
        4 * self.config.max_lag.max(self.config.min_lag)
    }

    fn note(&self) -> Option<String> {
        let core = self.core.as_ref()?;
        Some(format!(
            "cycle of {} steps ({:.0} min, autocorrelation {:.2}), mean of {}",
            core.season(),
            core.season() as f64 * self.step_secs as f64 / 60.0,
            self.correlation,
            core.cycles()
        ))
    }

    fn is_fitted(&self) -> bool {
        self.core.as_ref().is_some_and(LagCore::is_fitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::testing::{bursts, daily_sine, gaussian_noise, one_step_coverage};

    fn seasons() -> Seasons {
        Seasons::from_step(300).expect("valid step")
    }

    fn model() -> Cycle {
        let s = seasons();
        Cycle::new(&s, CycleConfig::for_seasons(&s), NaiveConfig::for_seasons(&s))
    }

    #[test]
    fn finds_an_hourly_job_and_forecasts_its_next_burst() {
        let s = seasons();
        let y = bursts(3 * s.day, 12.0, 3);
        let mut m = model();
        m.fit(&y).expect("three days with an hourly burst");
        assert_eq!(m.period(), Some(12));
        let f = m.predict(12, 0.9).expect("fitted");
        // The bursts start at 5 + 12k; the history ends at 3 days = 864
        // steps = 72 cycles, so the next bursts are at leads 6 and 7.
        let burst_leads: Vec<usize> = (1..=12).filter(|h| f.point[h - 1] > 25.0).collect();
        assert_eq!(burst_leads, vec![6, 7], "{:?}", f.point);
        assert!(m.note().is_some_and(|n| n.contains("60 min")));
    }

    #[test]
    fn a_noisy_cycle_is_averaged_and_a_rising_one_is_not() {
        let s = seasons();
        let mut m = model();
        // Exact hourly bursts under noise: averaging cycles damps the noise.
        let y = bursts(3 * s.day, 12.0, 17);
        m.fit(&y).expect("hourly bursts");
        assert_eq!((m.period(), m.cycles()), (Some(12), Some(4)));
        let f = m.predict(1, 0.9).expect("fitted");
        let back: f64 = (1..=4).map(|k| y[y.len() - 12 * k]).sum::<f64>() / 4.0;
        assert!((f.point[0] - back).abs() < 1e-9, "{} vs {back}", f.point[0]);
        assert!(m.note().is_some_and(|n| n.contains("mean of 4")));
        // The same bursts on a steadily rising level, without noise: older
        // cycles lag the level, so only the last one is repeated.
        let rising: Vec<f64> = bursts(3 * s.day, 12.0, 17)
            .iter()
            .zip(gaussian_noise(3 * s.day, 17))
            .enumerate()
            .map(|(t, (v, n))| v - n + 0.05 * t as f64)
            .collect();
        m.fit(&rising).expect("rising hourly bursts");
        assert_eq!((m.period(), m.cycles()), (Some(12), Some(1)));
    }

    #[test]
    fn a_cycle_that_stopped_a_day_ago_is_not_forecast() {
        let s = seasons();
        let mut y = bursts(2 * s.day, 12.0, 23);
        let quiet = gaussian_noise(s.day, 29);
        for (v, n) in y[s.day..].iter_mut().zip(quiet) {
            *v = 10.0 + n;
        }
        let mut m = model();
        let err = m.fit(&y).expect_err("bursts in the first day only");
        assert!(err.to_string().contains("not in the second half"), "{err}");
        // Over the two days together the first day's bursts still peak.
        let r = autocorrelation(&y, 13).expect("varies");
        assert!(r[12] > 0.45, "{}", r[12]);
    }

    #[test]
    fn a_fractional_cycle_is_taken_at_the_multiple_that_fits() {
        // A burst every 13.7 steps: every third burst is 41 steps on.
        let s = seasons();
        let y = bursts(2 * s.day, 41.0 / 3.0, 5);
        let r = autocorrelation(&y, 73).expect("varies");
        let (period, _) = find_cycle(&r, &CycleConfig::for_seasons(&s)).expect("a cycle");
        assert!([14, 41].contains(&period), "period {period}");
        assert!(r[41] > r[14], "the exact multiple correlates best: {} vs {}", r[41], r[14]);
    }

    #[test]
    fn noise_and_a_smooth_daily_curve_have_no_cycle() {
        let s = seasons();
        let mut m = model();
        let err = m.fit(&gaussian_noise(2 * s.day, 11)).expect_err("white noise");
        assert!(matches!(err, Error::NotApplicable { model: ModelKind::Cycle, .. }), "{err}");
        // A daily sine correlates highly at short lags, but only because
        // it is smooth: the correlation never falls and rises again.
        let err = m.fit(&daily_sine(&s, 2 * s.day, 0.0)).expect_err("smooth");
        assert!(matches!(err, Error::NotApplicable { .. }), "{err}");
        assert!(!m.is_fitted());
        assert!(m.predict(1, 0.9).is_err());
    }

    #[test]
    fn constant_and_missing_history_are_refused_not_panicked() {
        let s = seasons();
        let mut m = model();
        assert!(m.fit(&vec![7.0; 2 * s.day]).is_err());
        assert!(m.fit(&vec![f64::NAN; 2 * s.day]).is_err());
        assert!(matches!(m.fit(&[1.0, 2.0]), Err(Error::InsufficientHistory { .. })));
        // Gaps inside a cycling series: the cycle is still found.
        let mut y = bursts(3 * s.day, 12.0, 9);
        for v in y.iter_mut().skip(100).step_by(7) {
            *v = f64::NAN;
        }
        m.fit(&y).expect("gaps are skipped");
        assert_eq!(m.period(), Some(12));
    }

    #[test]
    fn the_interval_covers_the_bursts_it_misses() {
        // Bursts every 12 steps, but one in four is skipped: the forecast
        // one cycle back is then wrong, and the interval must say so.
        let s = seasons();
        let mut y = bursts(6 * s.day, 12.0, 13);
        for k in (0..y.len() / 48).map(|k| 5 + 48 * k) {
            for v in y.iter_mut().skip(k).take(2) {
                *v -= 30.0;
            }
        }
        let mut m = model();
        m.fit(&y[..3 * s.day]).expect("three days");
        let rate = one_step_coverage(&mut m, &y[3 * s.day..]);
        assert!((0.85..=0.97).contains(&rate), "coverage {rate}");
    }
}
