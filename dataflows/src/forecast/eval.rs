//! Rolling-origin evaluation of every candidate and of the ensemble.
//!
//! The series is walked once, value by value, through an [`Ensemble`],
//! exactly as in production (same updates, same refit schedule). At each
//! *origin* — evenly spread over the second half of the series, so every
//! model has had the first half to warm up — every candidate and the
//! ensemble's selection (and its selection by point error alone, reported
//! as `ensemble-by-error`) forecast the longest horizon; the value `h` steps
//! later scores the forecast at each requested horizon `h`. Nothing is
//! refitted per origin, so the cost is one pass plus one prediction per
//! model and origin.
//!
//! Out comes one [`EvalRow`] per model and horizon: MASE (scaled by the mean
//! absolute one-step change over the *first half* of the series, the
//! in-sample part), sMAPE and the coverage of the 90% interval, over the
//! origins where the model could forecast and the target was not missing.
//! A model that never could forecast (for instance the weekly seasonal naive
//! on a series of less than four weeks) gets no row.

use serde::Serialize;

use super::metrics::{Coverage, Mase, Smape, naive_scale};
use super::selection::{Ensemble, EnsembleConfig};
use super::{Error, Forecast, ModelKind, Result, check_level};

/// Settings of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// The ensemble (and so the models) to evaluate.
    pub ensemble: EnsembleConfig,
    /// Horizons in steps.
    pub horizons: Vec<usize>,
    /// Number of forecast origins (at least 50 unless the series is too
    /// short to have that many).
    pub origins: usize,
    /// Interval level whose coverage is reported.
    pub level: f64,
}

impl EvalConfig {
    /// Horizons of one step, 30 minutes and one hour (deduplicated when the
    /// step is 30 minutes or longer), 100 origins, 90% intervals.
    pub fn for_ensemble(ensemble: EnsembleConfig) -> EvalConfig {
        let s = ensemble.seasons;
        let mut horizons = vec![1, s.steps_for_minutes(30), s.steps_for_minutes(60)];
        horizons.sort_unstable();
        horizons.dedup();
        EvalConfig { ensemble, horizons, origins: 100, level: 0.9 }
    }
}

/// Accuracy of one model at one horizon on one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    /// Series name.
    pub series: String,
    /// Model name (a [`ModelKind`] name, `ensemble` for the selection, or
    /// `ensemble-by-error` for the selection ranked by point error).
    pub model: String,
    /// Horizon in minutes.
    pub horizon_minutes: f64,
    /// Mean absolute scaled error.
    pub mase: f64,
    /// Symmetric MAPE, percent.
    pub smape: f64,
    /// Share of actuals inside the interval (named for the default level).
    pub coverage90: f64,
    /// Origins that contributed.
    pub origins: usize,
}

/// The rows, and how often the ensemble chose each model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// One row per model and horizon.
    pub rows: Vec<EvalRow>,
    /// Origins at which the ensemble selected each model.
    pub selected: Vec<(ModelKind, usize)>,
    /// Origins evaluated.
    pub origins: usize,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    mase: Mase,
    smape: Smape,
    coverage: Coverage,
}

/// Origin indices: `count` points spread evenly over `[first, last]`.
fn spread(first: usize, last: usize, count: usize) -> Vec<usize> {
    if count == 0 || last < first {
        return Vec::new();
    }
    let span = last - first;
    let count = count.min(span + 1);
    if count == 1 {
        return vec![last];
    }
    let mut out: Vec<usize> = (0..count).map(|i| first + (i * span + (count - 1) / 2) / (count - 1)).collect();
    out.dedup();
    out
}

/// Evaluates every candidate and the ensemble on `values` (one value per
/// step, missing = `NaN`).
///
/// # Errors
/// [`Error::InvalidConfig`] without horizons or with an invalid ensemble;
/// [`Error::InvalidLevel`]; [`Error::InsufficientHistory`] when the second
/// half of the series is shorter than the longest horizon.
pub fn evaluate(series: &str, values: &[f64], config: &EvalConfig) -> Result<EvalReport> {
    check_level(config.level)?;
    let Some(&max_h) = config.horizons.iter().max() else {
        return Err(Error::InvalidConfig { field: "horizons", reason: "must name at least one horizon".into() });
    };
    if config.horizons.contains(&0) {
        return Err(Error::InvalidConfig { field: "horizons", reason: "horizons are at least one step".into() });
    }
    let n = values.len();
    let first = n / 2;
    let last = n.checked_sub(max_h + 1).filter(|&l| l >= first).ok_or(Error::InsufficientHistory {
        model: ModelKind::LastValue,
        need: 2 * (max_h + 1),
        have: n,
    })?;
    let origins = spread(first, last, config.origins);
    let scale = naive_scale(&values[..first]).unwrap_or(f64::NAN);

    let mut ensemble = Ensemble::new(config.ensemble.clone())?;
    let kinds: Vec<ModelKind> = ensemble.candidates().iter().map(|c| c.kind).collect();
    // Slot `kinds.len()` is the ensemble's selection, the next one its
    // selection by point error when that differs.
    let by_error = config.ensemble.selection_level.is_some();
    let mut acc = vec![vec![Acc::default(); config.horizons.len()]; kinds.len() + 1 + usize::from(by_error)];
    let mut selected = vec![0usize; kinds.len()];

    let record = |acc: &mut Vec<Acc>, f: &Forecast, origin: usize| {
        for (slot, &h) in acc.iter_mut().zip(&config.horizons) {
            let actual = values[origin + h];
            if !actual.is_finite() {
                continue;
            }
            let (p, lo, hi) = (f.point[h - 1], f.lower[h - 1], f.upper[h - 1]);
            slot.mase.add(actual, p);
            slot.smape.add(actual, p);
            slot.coverage.add(actual, lo, hi);
        }
    };

    let mut next = origins.iter().peekable();
    for (t, &v) in values.iter().enumerate() {
        ensemble.push(v);
        if next.peek() != Some(&&t) {
            continue;
        }
        next.next();
        for (i, kind) in kinds.iter().enumerate() {
            if let Ok(f) = ensemble.candidate_forecast(*kind, max_h, config.level) {
                record(&mut acc[i], &f, t);
            }
        }
        if let Ok(sel) = ensemble.forecast(max_h, config.level) {
            if let Some(i) = kinds.iter().position(|k| *k == sel.model) {
                selected[i] += 1;
            }
            record(&mut acc[kinds.len()], &sel.forecast, t);
        }
        if by_error && let Ok(sel) = ensemble.forecast_by_error(max_h, config.level) {
            record(&mut acc[kinds.len() + 1], &sel.forecast, t);
        }
    }

    let seasons = config.ensemble.seasons;
    let mut rows = Vec::new();
    for (i, per_h) in acc.iter().enumerate() {
        let model = match kinds.get(i) {
            Some(k) => k.to_string(),
            None if i == kinds.len() => "ensemble".to_string(),
            None => "ensemble-by-error".to_string(),
        };
        for (a, &h) in per_h.iter().zip(&config.horizons) {
            if a.mase.count() == 0 {
                continue;
            }
            rows.push(EvalRow {
                series: series.to_string(),
                model: model.clone(),
                horizon_minutes: seasons.minutes_for_steps(h),
                mase: a.mase.value(scale),
                smape: a.smape.value(),
                coverage90: a.coverage.value(),
                origins: a.mase.count(),
            });
        }
    }
    Ok(EvalReport { rows, selected: kinds.into_iter().zip(selected).collect(), origins: origins.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::Seasons;
    use crate::forecast::testing::daily_sine;

    #[test]
    fn origins_are_spread_and_bounded() {
        let o = spread(100, 199, 50);
        assert_eq!(o.len(), 50);
        assert_eq!((o[0], o[49]), (100, 199));
        assert!(o.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(spread(10, 12, 50), vec![10, 11, 12]);
        assert!(spread(5, 4, 10).is_empty());
    }

    #[test]
    fn seasonal_models_beat_last_value_on_a_sine() {
        let s = Seasons::from_step(300).expect("valid step");
        let y = daily_sine(&s, 6 * s.day, 0.5);
        let mut ens = EnsembleConfig::for_seasons(&s);
        ens.candidates = vec![ModelKind::LastValue, ModelKind::SeasonalNaiveDay, ModelKind::HoltWinters];
        let config = EvalConfig::for_ensemble(ens);
        let report = evaluate("sine", &y, &config).expect("long enough");
        assert_eq!(report.origins, 100);
        let mase = |model: &str, minutes: f64| {
            report
                .rows
                .iter()
                .find(|r| r.model == model && r.horizon_minutes == minutes)
                .map(|r| r.mase)
                .expect("row present")
        };
        assert!(mase("seasonal-naive-day", 60.0) < mase("last-value", 60.0));
        assert!(mase("ensemble", 60.0) < mase("last-value", 60.0));
        assert!(mase("ensemble-by-error", 60.0) < mase("last-value", 60.0));
        let cov = report
            .rows
            .iter()
            .find(|r| r.model == "holt-winters" && r.horizon_minutes == 5.0)
            .map(|r| r.coverage90)
            .expect("row present");
        assert!((0.75..=1.0).contains(&cov), "{cov}");
        // 3 models + the two selections, 3 horizons each.
        assert_eq!(report.rows.len(), 15);
    }

    #[test]
    fn too_short_series_is_an_error() {
        let s = Seasons::from_step(300).expect("valid step");
        let config = EvalConfig::for_ensemble(EnsembleConfig::for_seasons(&s));
        assert!(evaluate("short", &[1.0; 20], &config).is_err());
    }
}
