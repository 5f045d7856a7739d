//! MSTL decomposition (daily and weekly seasons) with an AutoETS trend, from
//! `augurs`, refitted on a schedule and rolled forward between refits.
//!
//! **Fit** ([`Model::fit`], called by the ensemble every `refit_every`
//! steps) takes the last [`MstlConfig::fit_window`] steps (four weeks by
//! default), with missing values filled by linear interpolation (neither
//! `augurs` 0.10 nor `stlrs` accepts `NaN`; `MSTLModel::impute` is stored
//! but not applied in 0.10.3), and works in two stages:
//!
//! 1. *Weekly season on hourly blocks.* The window is cut into blocks of
//!    [`MstlConfig::weekly_block_secs`] (one hour), the block means are
//!    decomposed by MSTL (`augurs::mstl::stlrs`) with the daily and weekly
//!    periods in blocks (24 and 168), and the weekly component, linearly
//!    interpolated back to the fine steps, is subtracted from the series.
//! 2. *Daily season and trend at full resolution.* The rest is fitted by
//!    `augurs::mstl::MSTLModel` with the daily period alone and a
//!    non-seasonal `augurs::ets::AutoETS` trend
//!    (`AutoETS::new(1, "AZN").into_trend_model()`), given the last
//!    [`MstlConfig::trend_window`] steps (two days) of the deseasonalised
//!    series.
//!
//! The forecast is `augurs`' forecast of stage 2 (trend forecast plus the
//! last daily period, repeated) plus the last week of the weekly component,
//! repeated.
//!
//! *Why two stages.* At 5-minute steps the weekly season has 2016 slots,
//! each estimated from only the two to four weeks of history: on noisy VM
//! load it is mostly noise, and forecasting it adds that noise back. On
//! hourly blocks each slot averages 12 points per week, and the weekly
//! season of load (weekday against weekend, office hours) is smooth at
//! that scale anyway. The daily shape keeps full resolution. Measured on
//! six shared traces (rolling origin, MASE at 30 minutes relative to the
//! daily seasonal naive; one-stage is both seasons at 5-minute resolution
//! in one `MSTLModel`):
//!
//! | series | one-stage | two-stage |
//! |---|---|---|
//! | azure VM 1023683 | 1.76 | 1.39 |
//! | azure VM 611375 | 1.32 | 1.07 |
//! | azure VM 817395 | 1.00 | 0.83 |
//! | Azure 2019 region CPU | 0.37 | 0.36 |
//! | Taylor electricity (30 min) | 0.15 | 0.08 |
//! | Twitter FB volume | 0.64 | 0.60 |
//!
//! (The Taylor gain is mostly from two STL inner loops instead of one.)
//!
//! **Seasons and history** (the two-seasons rule): the weekly season is used
//! only with at least two weeks in the window, the daily one with at least
//! two days. With less than two weeks the model fits the daily season alone
//! and says so through [`Model::note`]; with less than two days `fit` fails
//! with [`Error::InsufficientHistory`].
//!
//! **Between refits** ([`Model::update`], O(1) amortised): the forecast path
//! from the last fit is kept, and a level correction `c` on the
//! deseasonalised scale follows the new values by simple exponential
//! smoothing, `c ← c + α (y − path_k − c)`. `augurs` does not expose the
//! fitted AutoETS parameters, so `α` is fitted at refit time by a small grid
//! search of one-step error on the same deseasonalised tail that AutoETS saw.
//! A forecast `k` steps after the fit is `path[k + h] + c`.
//!
//! **Intervals** come from `augurs`' prediction (the AutoETS trend
//! intervals shifted by the seasonal terms). `k` steps after the fit the
//! `h`-step interval keeps the *width* of `augurs`' `h`-step interval, not its
//! `(k + h)`-step one: the correction has absorbed the first `k` errors.
//! These intervals are too narrow out of sample (the decomposition is fitted
//! to the same data, so its remainder understates the error: 47–77% coverage
//! of nominal 90% on the traces); the ensemble recalibrates them
//! ([`super::intervals::Calibrator`]).
//!
//! **Speed.** With `augurs`' defaults (one `MSTLModel` with both periods,
//! two MSTL iterations, two STL inner loops, AutoETS `ZZN` on the whole
//! series) a fit of 4 weeks of 5-minute data (8064 points) takes ~128 ms on
//! the reference machine, ~95% of it in AutoETS, whose Nelder–Mead cost
//! grows with the series and which tries multiplicative errors too. The
//! defaults here take ~6 ms: AutoETS sees only the last two days (the trend
//! model only has to place the level and slope at the end of the series,
//! which the last days determine; a one-week window was no more accurate)
//! and additive errors only (~3.5 ms); the weekly stage works on 672 block
//! means (~0.3 ms); the daily stage is one STL of 8064 points (~2 ms).
//! `iterations` only matters for stage 1, `inner_loops` for both.

use std::borrow::Cow;

use augurs::ets::AutoETS;
use augurs::ets::trend::AutoETSTrendModel;
use augurs::mstl::stlrs::{MstlParams, StlParams};
use augurs::mstl::{FittedMSTLModel, FittedTrendModel, MSTLModel, TrendModel};
use augurs::{Fit, Predict};

use super::{Error, Forecast, Model, ModelKind, Result, Seasons, check_level, clean};

/// Settings of the MSTL model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MstlConfig {
    /// Use the weekly season when the window holds two weeks.
    pub weekly: bool,
    /// Estimate the weekly season on blocks of this many seconds (block
    /// means), then remove it before the fine daily decomposition; 0
    /// estimates both seasons at full resolution in one MSTL.
    pub weekly_block_secs: u64,
    /// Most recent steps of the history decomposed by `fit`.
    pub fit_window: usize,
    /// Most recent steps of the deseasonalised series given to AutoETS.
    pub trend_window: usize,
    /// MSTL iterations over the seasons (`augurs` default 2).
    pub iterations: usize,
    /// STL inner loops per decomposition (`stlrs` default 2).
    pub inner_loops: usize,
    /// AutoETS search specification for the trend (`"ZZN"` is `augurs`'
    /// `non_seasonal()`; `"AZN"` skips multiplicative errors).
    pub trend_spec: String,
    /// Restrict the AutoETS search to damped (`Some(true)`) or undamped
    /// (`Some(false)`) trends; `None` tries both.
    pub trend_damped: Option<bool>,
}

impl MstlConfig {
    /// The defaults (see the module docs): four-week window, weekly season on
    /// hourly blocks, two-day trend window, additive-error AutoETS.
    pub fn for_seasons(seasons: &Seasons) -> MstlConfig {
        MstlConfig {
            weekly: true,
            weekly_block_secs: 3600,
            fit_window: 4 * seasons.week,
            trend_window: 2 * seasons.day,
            iterations: 2,
            inner_loops: 2,
            trend_spec: "AZN".to_string(),
            trend_damped: None,
        }
    }

    /// `augurs`' own defaults, for comparison: whole-window AutoETS `ZZN`,
    /// two iterations, two inner loops.
    pub fn augurs_defaults(seasons: &Seasons) -> MstlConfig {
        MstlConfig {
            weekly: true,
            weekly_block_secs: 0,
            fit_window: 4 * seasons.week,
            trend_window: usize::MAX,
            iterations: 2,
            inner_loops: 2,
            trend_spec: "ZZN".to_string(),
            trend_damped: None,
        }
    }
}

/// An AutoETS trend model that only looks at the end of the deseasonalised
/// series. In-sample predictions of the wrapped model cover that tail only;
/// this module never asks for them.
#[derive(Debug)]
struct TailTrend {
    inner: AutoETSTrendModel,
    window: usize,
}

impl TrendModel for TailTrend {
    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("AutoETS (tail)")
    }

    fn fit(
        &self,
        y: &[f64],
    ) -> std::result::Result<Box<dyn FittedTrendModel + Sync + Send>, Box<dyn std::error::Error + Send + Sync + 'static>>
    {
        let start = y.len().saturating_sub(self.window);
        self.inner.fit(&y[start..])
    }
}

/// The weekly component estimated on coarse blocks, continued periodically.
#[derive(Debug)]
struct Weekly {
    /// The last week of the coarse weekly component (one value per block).
    pattern: Vec<f64>,
    /// Fine steps per block.
    block: usize,
    /// Position, in blocks from the start of `pattern`, of the first
    /// forecast step.
    origin: f64,
}

impl Weekly {
    /// The weekly term `h` steps after the fit origin (h ≥ 1), linearly
    /// interpolated between block centres, periodic over the week.
    fn ahead(&self, h: usize) -> f64 {
        let len = self.pattern.len();
        let pos = (self.origin + (h - 1) as f64 / self.block as f64).rem_euclid(len as f64);
        // `pos` is in [0, len), so both indices are in range.
        let i = (pos.floor() as usize).min(len - 1);
        let frac = pos - i as f64;
        let j = (i + 1) % len;
        self.pattern[i] + frac * (self.pattern[j] - self.pattern[i])
    }
}

/// Block means of `y` (whose length is a multiple of `block`).
fn block_means(y: &[f64], block: usize) -> Vec<f32> {
    y.chunks_exact(block).map(|c| (c.iter().sum::<f64>() / block as f64) as f32).collect()
}

/// The coarse component `coarse` (one value per block of `block` fine
/// steps, periodic with `period` blocks) linearly interpolated at every fine
/// step between block centres. Before the first and after the last centre
/// it continues periodically rather than flat: a flat end would leave a
/// small ramp in the deseasonalised series, which the trend model then
/// extrapolates over the whole horizon.
fn upsample(coarse: &[f64], block: usize, period: usize, n: usize) -> Vec<f64> {
    let k = coarse.len();
    let centre = (block as f64 - 1.0) / 2.0;
    let at = |j: isize| -> f64 {
        // Indices one block outside the series map one period inwards.
        let p = period.min(k) as isize;
        let j = if j < 0 {
            j + p
        } else if j >= k as isize {
            j - p
        } else {
            j
        };
        coarse[j.clamp(0, k as isize - 1) as usize]
    };
    (0..n)
        .map(|t| {
            let pos = (t as f64 - centre) / block as f64;
            let i = pos.floor();
            let frac = pos - i;
            let i = i as isize;
            at(i) + frac * (at(i + 1) - at(i))
        })
        .collect()
}

struct Fitted {
    model: FittedMSTLModel,
    weekly: Option<Weekly>,
    /// `augurs`' point forecast from the fit origin; `path[i]` is `i + 1`
    /// steps ahead. Extended on demand.
    path: Vec<f64>,
    /// Values seen since the fit.
    steps: usize,
    correction: f64,
    alpha: f64,
}

impl std::fmt::Debug for Fitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fitted")
            .field("steps", &self.steps)
            .field("correction", &self.correction)
            .field("alpha", &self.alpha)
            .finish_non_exhaustive()
    }
}

/// MSTL + AutoETS trend, with cheap updates between refits.
#[derive(Debug)]
pub struct Mstl {
    seasons: Seasons,
    config: MstlConfig,
    fitted: Option<Fitted>,
    note: Option<String>,
}

fn fit_error(reason: impl ToString) -> Error {
    Error::Fit { model: ModelKind::Mstl, reason: reason.to_string() }
}

/// Fills missing values by linear interpolation between finite neighbours,
/// and by the nearest finite value at the ends. `None` if nothing is finite.
pub(crate) fn interpolate_missing(y: &mut [f64]) -> Option<()> {
    let first = y.iter().position(|v| v.is_finite())?;
    let first_value = y[first];
    y[..first].iter_mut().for_each(|v| *v = first_value);
    let mut last = first;
    for i in first + 1..y.len() {
        if y[i].is_finite() {
            let gap = i - last;
            if gap > 1 {
                let (a, b) = (y[last], y[i]);
                for j in 1..gap {
                    y[last + j] = a + (b - a) * j as f64 / gap as f64;
                }
            }
            last = i;
        }
    }
    let last_value = y[last];
    y[last + 1..].iter_mut().for_each(|v| *v = last_value);
    Some(())
}

/// The smoothing weight in a fixed grid with the least one-step squared
/// error of simple exponential smoothing on `d`.
fn ses_alpha(d: &[f64]) -> f64 {
    let Some(&first) = d.first() else {
        return 0.5;
    };
    let mut best = (f64::INFINITY, 0.5);
    for i in 1..=20 {
        let alpha = i as f64 * 0.05;
        let mut level = first;
        let mut sse = 0.0;
        for &v in &d[1..] {
            let e = v - level;
            sse += e * e;
            level += alpha * e;
        }
        if sse < best.0 {
            best = (sse, alpha);
        }
    }
    best.1
}

impl Mstl {
    /// An unfitted model.
    pub fn new(seasons: &Seasons, config: MstlConfig) -> Mstl {
        Mstl { seasons: *seasons, config, fitted: None, note: None }
    }

    fn ensure_path(&mut self, len: usize) -> Result<()> {
        let Some(f) = self.fitted.as_mut() else {
            return Err(Error::NotFitted { model: ModelKind::Mstl });
        };
        if f.path.len() < len {
            let want = len.max(2 * f.path.len()).max(64);
            f.path = f.model.predict(want, None).map_err(fit_error)?.point;
            if let Some(w) = &f.weekly {
                for (i, p) in f.path.iter_mut().enumerate() {
                    *p += w.ahead(i + 1);
                }
            }
        }
        Ok(())
    }

    /// Fine steps per weekly block, when the two-stage weekly estimate
    /// applies (the block divides the day into at least two blocks).
    fn weekly_block(&self) -> Option<usize> {
        let secs = self.config.weekly_block_secs;
        let step = self.seasons.step_secs;
        if secs == 0 || !secs.is_multiple_of(step) {
            return None;
        }
        let block = usize::try_from(secs / step).ok()?;
        (block >= 1 && self.seasons.day.is_multiple_of(block) && self.seasons.day / block >= 2).then_some(block)
    }

    /// Estimates the weekly component on block means of the window and
    /// removes it from `y`, which is trimmed to whole blocks. The daily
    /// pattern at full resolution is left for the fine decomposition.
    fn remove_weekly(&self, y: &mut Vec<f64>, block: usize, params: &MstlParams) -> Result<Weekly> {
        let (day, week) = (self.seasons.day / block, self.seasons.week / block);
        y.drain(..y.len() % block);
        let coarse = block_means(y, block);
        let decomposition = params.fit(&coarse, &[day, week]).map_err(fit_error)?;
        let weekly: Vec<f64> = decomposition
            .seasonal()
            .get(1)
            .ok_or_else(|| fit_error("no weekly component"))?
            .iter()
            .map(|v| f64::from(*v))
            .collect();
        let fine = upsample(&weekly, block, week, y.len());
        for (v, w) in y.iter_mut().zip(fine) {
            *v -= w;
        }
        let k = weekly.len();
        let pattern = weekly[k - week..].to_vec();
        // The first forecast step is fine index y.len(), whose centre-based
        // block position is (y.len() − centre) / block, i.e. k − 0.5 +
        // 1 / (2·block) blocks; relative to the start of the pattern:
        let origin = (week as f64) - 0.5 + 0.5 / block as f64;
        Ok(Weekly { pattern, block, origin })
    }
}

impl Model for Mstl {
    fn kind(&self) -> ModelKind {
        ModelKind::Mstl
    }

    fn fit(&mut self, history: &[f64]) -> Result<()> {
        self.fitted = None;
        self.note = None;
        let (day, week) = (self.seasons.day, self.seasons.week);
        let window = self.config.fit_window.max(2 * day);
        let mut y: Vec<f64> = history[history.len().saturating_sub(window)..].iter().copied().map(clean).collect();
        let n = y.len();
        if n < 2 * day {
            return Err(Error::InsufficientHistory { model: ModelKind::Mstl, need: 2 * day, have: n });
        }
        let finite = y.iter().filter(|v| v.is_finite()).count();
        // Interpolating more than half of the window would decompose mostly
        // made-up data.
        if finite < n / 2 {
            return Err(Error::InsufficientHistory { model: ModelKind::Mstl, need: n / 2, have: finite });
        }
        interpolate_missing(&mut y).ok_or_else(|| fit_error("no finite value"))?;

        let mut periods = vec![day];
        let mut use_weekly = false;
        if self.config.weekly {
            if n >= 2 * week {
                use_weekly = true;
            } else {
                self.note = Some(format!(
                    "mstl uses the daily season only: the weekly one needs {} steps \
                     ({:.0} days) of history, it has {} ({:.1} days)",
                    2 * week,
                    self.seasons.minutes_for_steps(2 * week) / 1440.0,
                    n,
                    self.seasons.minutes_for_steps(n) / 1440.0,
                ));
            }
        }

        let mut stl = StlParams::new();
        stl.inner_loops(self.config.inner_loops.max(1));
        let mut mstl_params = MstlParams::new();
        mstl_params.iterations(self.config.iterations.max(1)).stl_params(stl);
        let mut weekly = None;
        if use_weekly {
            match self.weekly_block() {
                Some(block) => weekly = Some(self.remove_weekly(&mut y, block, &mstl_params)?),
                None => periods.push(week),
            }
        }
        let n = y.len();
        let mut ets = AutoETS::new(1, self.config.trend_spec.as_str()).map_err(fit_error)?;
        if let Some(damped) = self.config.trend_damped {
            ets = ets.damped(damped).map_err(fit_error)?;
        }
        let trend = TailTrend { inner: ets.into_trend_model(), window: self.config.trend_window.max(16) };
        let model = MSTLModel::new(periods, trend).mstl_params(mstl_params).fit(&y).map_err(fit_error)?;

        let decomposition = model.fit();
        let tail = n.saturating_sub(self.config.trend_window.max(16));
        let deseasonalised: Vec<f64> = decomposition.trend()[tail..]
            .iter()
            .zip(&decomposition.remainder()[tail..])
            .map(|(t, r)| f64::from(*t) + f64::from(*r))
            .collect();
        let alpha = ses_alpha(&deseasonalised);
        self.fitted = Some(Fitted { model, weekly, path: Vec::new(), steps: 0, correction: 0.0, alpha });
        if let Err(e) = self.ensure_path(64) {
            self.fitted = None;
            return Err(e);
        }
        Ok(())
    }

    fn update(&mut self, value: f64) {
        let Some(steps) = self.fitted.as_ref().map(|f| f.steps + 1) else {
            return;
        };
        if self.ensure_path(steps).is_err() {
            // Without the path there is nothing to roll forward; wait for
            // the next refit.
            self.fitted = None;
            return;
        }
        let Some(f) = self.fitted.as_mut() else {
            return;
        };
        f.steps = steps;
        let value = clean(value);
        if value.is_finite() {
            let expected = f.path[steps - 1] + f.correction;
            let next = f.correction + f.alpha * (value - expected);
            if next.is_finite() {
                f.correction = next;
            }
        }
    }

    fn predict(&self, horizon: usize, level: f64) -> Result<Forecast> {
        check_level(level)?;
        let Some(f) = self.fitted.as_ref() else {
            return Err(Error::NotFitted { model: ModelKind::Mstl });
        };
        if horizon == 0 {
            return Ok(Forecast::empty(level));
        }
        let aug = f.model.predict(f.steps + horizon, level).map_err(fit_error)?;
        let Some(intervals) = aug.intervals.as_ref() else {
            return Err(fit_error("augurs returned no intervals"));
        };
        let mut out = Forecast {
            point: Vec::with_capacity(horizon),
            lower: Vec::with_capacity(horizon),
            upper: Vec::with_capacity(horizon),
            level,
        };
        for h in 0..horizon {
            let weekly = f.weekly.as_ref().map_or(0.0, |w| w.ahead(f.steps + h + 1));
            let p = aug.point[f.steps + h] + weekly + f.correction;
            let below = aug.point[h] - intervals.lower[h];
            let above = intervals.upper[h] - aug.point[h];
            out.point.push(p);
            out.lower.push(p - below);
            out.upper.push(p + above);
        }
        out.checked(ModelKind::Mstl)
    }

    fn predict_point(&self, horizon: usize, out: &mut Vec<f64>) -> Result<()> {
        out.clear();
        let Some(f) = self.fitted.as_ref() else {
            return Err(Error::NotFitted { model: ModelKind::Mstl });
        };
        let end = f.steps + horizon;
        if end <= f.path.len() {
            out.extend(f.path[f.steps..end].iter().map(|p| p + f.correction));
        } else {
            let aug = f.model.predict(end, None).map_err(fit_error)?;
            out.extend(aug.point[f.steps..end].iter().enumerate().map(|(i, p)| {
                let weekly = f.weekly.as_ref().map_or(0.0, |w| w.ahead(f.steps + i + 1));
                p + weekly + f.correction
            }));
        }
        if out.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(Error::NonFinite { model: ModelKind::Mstl }) }
    }

    fn min_history(&self) -> usize {
        2 * self.seasons.day
    }

    fn note(&self) -> Option<String> {
        self.note.clone()
    }

    fn is_fitted(&self) -> bool {
        self.fitted.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::testing::{daily_sine, gaussian_noise};

    fn seasons() -> Seasons {
        Seasons::from_step(300).expect("valid step")
    }

    fn model() -> Mstl {
        let s = seasons();
        Mstl::new(&s, MstlConfig::for_seasons(&s))
    }

    #[test]
    fn pure_daily_sine_after_two_days() {
        let s = seasons();
        let y = daily_sine(&s, 3 * s.day, 0.0);
        let mut m = model();
        m.fit(&y[..2 * s.day]).expect("two days");
        assert!(m.note().is_some_and(|n| n.contains("daily season only")));
        let f = m.predict(s.day, 0.9).expect("fitted");
        for (h, p) in f.point.iter().enumerate() {
            let err = (p - y[2 * s.day + h]).abs();
            // MSTL works in f32 and STL smooths the seasonal shape a little.
            assert!(err < 0.02 * 20.0, "h={h} err={err}");
        }
    }

    #[test]
    fn update_rolls_forward_and_tracks_level() {
        let s = seasons();
        let y = daily_sine(&s, 3 * s.day, 0.0);
        let mut m = model();
        m.fit(&y[..2 * s.day]).expect("two days");
        // Continue the sine 10 units higher: the correction should follow.
        for &v in &y[2 * s.day..2 * s.day + 24] {
            m.update(v + 10.0);
        }
        let f = m.predict(1, 0.9).expect("fitted");
        let truth = y[2 * s.day + 24] + 10.0;
        assert!((f.point[0] - truth).abs() < 1.0, "{} vs {truth}", f.point[0]);
    }

    #[test]
    fn too_short_history_is_reported() {
        let s = seasons();
        let mut m = model();
        let err = m.fit(&vec![1.0; 2 * s.day - 1]).expect_err("too short");
        assert!(matches!(err, Error::InsufficientHistory { need, .. } if need == 2 * s.day));
        assert!(!m.is_fitted());
    }

    #[test]
    fn gaps_and_infinities_are_tolerated() {
        let s = seasons();
        let mut y = daily_sine(&s, 3 * s.day, 1.0);
        for v in y.iter_mut().skip(3).step_by(11) {
            *v = f64::NAN;
        }
        y[0] = f64::INFINITY;
        if let Some(last) = y.last_mut() {
            *last = f64::NAN;
        }
        let mut m = model();
        m.fit(&y).expect("mostly finite");
        m.update(f64::NEG_INFINITY);
        m.update(f64::NAN);
        let f = m.predict(12, 0.9).expect("fitted");
        assert!(f.point.iter().all(|v| v.is_finite()));
        assert!(m.fit(&vec![f64::NAN; 3 * s.day]).is_err());
    }

    #[test]
    fn intervals_are_ordered_and_widen() {
        let s = seasons();
        let noise = gaussian_noise(4 * s.day, 5);
        let y: Vec<f64> = daily_sine(&s, 4 * s.day, 0.0).iter().zip(&noise).map(|(a, b)| a + 2.0 * b).collect();
        let mut m = model();
        m.fit(&y).expect("four days");
        let f = m.predict(12, 0.9).expect("fitted");
        for h in 0..12 {
            assert!(f.lower[h] < f.point[h] && f.point[h] < f.upper[h]);
        }
        assert!(f.upper[11] - f.lower[11] >= f.upper[0] - f.lower[0]);
    }

    #[test]
    fn daily_and_weekly_seasons_after_three_weeks() {
        let s = seasons();
        let n = 3 * s.week + s.day;
        let y: Vec<f64> = daily_sine(&s, n, 0.0)
            .iter()
            .enumerate()
            .map(|(t, v)| v + 10.0 * (std::f64::consts::TAU * t as f64 / s.week as f64).sin())
            .collect();
        let mut m = model();
        m.fit(&y[..3 * s.week]).expect("three weeks");
        assert_eq!(m.note(), None, "both seasons in use");
        let f = m.predict(s.day, 0.9).expect("fitted");
        let worst = f.point.iter().zip(&y[3 * s.week..]).map(|(p, v)| (p - v).abs()).fold(0.0, f64::max);
        // Amplitudes 20 + 10; a day-ahead error below 3% of them.
        assert!(worst < 0.9, "worst error {worst}");
        // A model without the weekly season misses the weekly swing.
        let mut daily_only = Mstl::new(&s, MstlConfig { weekly: false, ..MstlConfig::for_seasons(&s) });
        daily_only.fit(&y[..3 * s.week]).expect("three weeks");
        let g = daily_only.predict(s.day, 0.9).expect("fitted");
        let worst_daily = g.point.iter().zip(&y[3 * s.week..]).map(|(p, v)| (p - v).abs()).fold(0.0, f64::max);
        assert!(worst_daily > 2.0 * worst, "{worst_daily} vs {worst}");
    }

    #[test]
    fn upsampling_interpolates_between_block_centres() {
        let fine = upsample(&[0.0, 4.0], 4, 2, 8);
        // Centres at 1.5 and 5.5; periodic outside (the value before the
        // first centre is the last one of the previous period).
        assert_eq!(fine, vec![1.5, 0.5, 0.5, 1.5, 2.5, 3.5, 3.5, 2.5]);
        let w = Weekly { pattern: vec![0.0, 4.0], block: 4, origin: 2.0 - 0.5 + 0.5 / 4.0 };
        // One step after the last fine index continues past the last
        // centre towards the first value of the next week.
        assert!((w.ahead(1) - (4.0 - 4.0 * 0.625)).abs() < 1e-12);
    }

    #[test]
    fn interpolation_fills_inner_and_outer_gaps() {
        let mut y = [f64::NAN, 1.0, f64::NAN, f64::NAN, 4.0, f64::NAN];
        interpolate_missing(&mut y).expect("has finite values");
        assert_eq!(y, [1.0, 1.0, 2.0, 3.0, 4.0, 4.0]);
        assert!(interpolate_missing(&mut [f64::NAN]).is_none());
    }
}
