//! Empirical prediction intervals from recent forecast errors.
//!
//! For models without an error model of their own (last value, seasonal
//! naive), the interval at horizon `h` comes from the distribution of that
//! model's recent `h`-step errors `e = actual − forecast`:
//!
//! `[point + q((1 − level) / 2), point + q((1 + level) / 2)]`
//!
//! where `q` is the empirical quantile (type 7, linear interpolation between
//! order statistics) of the errors in the window.
//!
//! **Two tails, not symmetric.** Load errors are skewed: spikes overshoot
//! upward far more than load drops below a forecast. A symmetric interval from
//! `|e|` would be too wide below and too narrow above; the decide stage scales
//! to the *upper* bound, so the upper tail is the one that must be right.
//!
//! **Few errors.** A tail quantile from `n` errors is biased inwards when
//! `n (1 − level) / 2` is small. Below [`min_errors_for`] errors the interval
//! is the symmetric `±max |e|` instead: conservative until the window fills.
//!
//! Data enters as a slice of errors (built by the caller from its history, or
//! kept in an [`ErrorWindow`]) and leaves as a pair of offsets to add to the
//! point forecast.
//!
//! # Calibrating model intervals
//!
//! Analytic intervals assume the model is right. MSTL's come from the
//! residuals of a decomposition fitted to the same data, which are smaller
//! than real forecast errors; Holt–Winters' assume normal errors, and load
//! is skewed and heavy-tailed. The [`Calibrator`] corrects any model's
//! interval with that model's own *out-of-sample* errors, as resolved by the
//! ensemble: each error is normalised by the interval half-width the model
//! gave on that side,
//!
//! `u = (y − ŷ) / (upper − ŷ)` if `y ≥ ŷ`, else `(y − ŷ) / (ŷ − lower)`,
//!
//! and a calibrated bound at level `L` is the model's half-width times the
//! empirical quantile of `u` at `(1 ± L) / 2`, on each side. A calibrated
//! model has `u` quantiles of ±1 at its reference level, and the correction
//! does nothing; otherwise it keeps the model's shape (growth with the
//! horizon, asymmetry, reaction to recent volatility) and fixes its scale
//! and skew. It is split conformal prediction with a scaled score.

use std::collections::VecDeque;

/// The type-7 empirical quantile of the finite values in `values` at
/// probability `p` in [0, 1]. Reorders `values`. `None` when there is no
/// finite value.
pub fn quantile(values: &mut Vec<f64>, p: f64) -> Option<f64> {
    values.retain(|v| v.is_finite());
    quantile_finite(values, p)
}

/// As [`quantile`] for a slice known to hold only finite values.
fn quantile_finite(values: &mut [f64], p: f64) -> Option<f64> {
    let n = values.len();
    if n == 0 || !(0.0..=1.0).contains(&p) {
        return None;
    }
    let pos = p * (n - 1) as f64;
    // `pos` is in [0, n - 1], so the floor is a valid index.
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, lo_value, upper_part) = values.select_nth_unstable_by(lo, f64::total_cmp);
    let lo_value = *lo_value;
    if frac == 0.0 || upper_part.is_empty() {
        return Some(lo_value);
    }
    // The next order statistic is the smallest value above position `lo`.
    let hi_value = upper_part.iter().copied().min_by(f64::total_cmp).unwrap_or(lo_value);
    Some(lo_value + frac * (hi_value - lo_value))
}

/// Number of errors below which a tail quantile at `level` is not trusted:
/// enough for two errors in each tail, and at least 10.
pub fn min_errors_for(level: f64) -> usize {
    let tail = ((1.0 - level) / 2.0).max(1e-9);
    ((2.0 / tail).ceil() as usize).clamp(10, 100_000)
}

/// Offsets `(lower, upper)` to add to a point forecast for a central interval
/// at `level`, from the errors `actual − forecast` in `errors` (non-finite
/// entries ignored; the slice is reordered). `None` without any finite error.
pub fn error_offsets(errors: &mut Vec<f64>, level: f64) -> Option<(f64, f64)> {
    errors.retain(|v| v.is_finite());
    if errors.is_empty() {
        return None;
    }
    if errors.len() < min_errors_for(level) {
        let widest = errors.iter().fold(0.0_f64, |m, e| m.max(e.abs()));
        return Some((-widest, widest));
    }
    let lo = quantile_finite(errors, (1.0 - level) / 2.0)?;
    let hi = quantile_finite(errors, (1.0 + level) / 2.0)?;
    // A point forecast outside its own interval would confuse the decide
    // stage; with biased errors the interval may sit to one side, so only
    // the bound on the wrong side of zero is clamped.
    Some((lo.min(0.0), hi.max(0.0)))
}

/// A bounded window of the most recent errors of one horizon.
#[derive(Debug, Clone)]
pub struct ErrorWindow {
    errors: VecDeque<f64>,
    capacity: usize,
}

impl ErrorWindow {
    /// A window keeping the last `capacity` (at least one) errors.
    pub fn new(capacity: usize) -> ErrorWindow {
        let capacity = capacity.max(1);
        ErrorWindow { errors: VecDeque::with_capacity(capacity), capacity }
    }

    /// Adds an error; non-finite errors are dropped.
    pub fn push(&mut self, error: f64) {
        if !error.is_finite() {
            return;
        }
        if self.errors.len() == self.capacity {
            self.errors.pop_front();
        }
        self.errors.push_back(error);
    }

    /// Number of errors held.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Whether no error is held.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Interval offsets at `level`; `scratch` avoids an allocation per call.
    pub fn offsets(&self, level: f64, scratch: &mut Vec<f64>) -> Option<(f64, f64)> {
        scratch.clear();
        scratch.extend(self.errors.iter().copied());
        error_offsets(scratch, level)
    }
}

/// Rescales a model's intervals with its recent normalised out-of-sample
/// errors (see the module docs).
#[derive(Debug, Clone)]
pub struct Calibrator {
    scores: VecDeque<f64>,
    capacity: usize,
}

impl Calibrator {
    /// A calibrator remembering the last `capacity` (at least one) errors.
    pub fn new(capacity: usize) -> Calibrator {
        let capacity = capacity.max(1);
        Calibrator { scores: VecDeque::with_capacity(capacity.min(4096)), capacity }
    }

    /// Records an actual against the forecast `point` and the interval the
    /// model gave for it. Zero-width sides can only record an exact hit: a
    /// miss has no finite ratio, and a zero width cannot be rescaled anyway.
    pub fn record(&mut self, actual: f64, point: f64, lower: f64, upper: f64) {
        let diff = actual - point;
        let width = if diff >= 0.0 { upper - point } else { point - lower };
        let u = if diff == 0.0 {
            0.0
        } else if width > 0.0 {
            diff / width
        } else {
            return;
        };
        if !u.is_finite() {
            return;
        }
        if self.scores.len() == self.capacity {
            self.scores.pop_front();
        }
        self.scores.push_back(u);
    }

    /// Normalised errors held.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The interval multipliers `(lower, upper)` for level `level`: negative
    /// and positive multiples of the model's lower and upper half-widths.
    /// `None` with fewer than [`min_errors_for`] errors.
    pub fn multipliers(&self, level: f64, scratch: &mut Vec<f64>) -> Option<(f64, f64)> {
        if self.scores.len() < min_errors_for(level) {
            return None;
        }
        scratch.clear();
        scratch.extend(self.scores.iter().copied());
        let lo = quantile_finite(scratch, (1.0 - level) / 2.0)?;
        let hi = quantile_finite(scratch, (1.0 + level) / 2.0)?;
        Some((lo.min(0.0), hi.max(0.0)))
    }

    /// Replaces the bounds of `forecast` (the model's forecast at the
    /// reference level it was calibrated at) by calibrated bounds at
    /// `level`. Returns `false`, leaving `forecast` unchanged, without
    /// enough errors yet.
    pub fn apply(&self, forecast: &mut super::Forecast, level: f64, scratch: &mut Vec<f64>) -> bool {
        let Some((lo, hi)) = self.multipliers(level, scratch) else {
            return false;
        };
        for ((p, l), u) in forecast.point.iter().zip(forecast.lower.iter_mut()).zip(forecast.upper.iter_mut()) {
            *l = p + lo * (p - *l);
            *u = p + hi * (*u - p);
        }
        forecast.level = level;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::Forecast;
    use crate::forecast::testing::SplitMix;

    #[test]
    fn calibrator_widens_too_narrow_intervals() {
        // The model claims ±1 at 90%, but errors are N(0, 2²): the true 90%
        // half-width is 2 · 1.645 ≈ 3.29, so the multiplier should be ≈ 3.29.
        let mut rng = SplitMix::new(3);
        let mut c = Calibrator::new(4000);
        for _ in 0..4000 {
            c.record(2.0 * rng.normal(), 0.0, -1.0, 1.0);
        }
        let mut f = Forecast { point: vec![10.0], lower: vec![9.0], upper: vec![11.0], level: 0.9 };
        assert!(c.apply(&mut f, 0.9, &mut Vec::new()));
        assert!((f.upper[0] - 10.0 - 3.29).abs() < 0.2, "{:?}", f);
        assert!((10.0 - f.lower[0] - 3.29).abs() < 0.2, "{:?}", f);
    }

    #[test]
    fn calibrator_needs_enough_errors_and_skips_zero_width() {
        let mut c = Calibrator::new(100);
        c.record(1.0, 0.0, 0.0, 0.0);
        assert!(c.is_empty());
        c.record(0.0, 0.0, 0.0, 0.0);
        assert_eq!(c.len(), 1);
        assert!(c.multipliers(0.9, &mut Vec::new()).is_none());
    }

    #[test]
    fn quantile_type7() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0, f64::NAN, 5.0];
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut v, 1.0), Some(5.0));
        assert_eq!(quantile(&mut v, 0.5), Some(3.0));
        assert_eq!(quantile(&mut v, 0.1), Some(1.4));
        assert_eq!(quantile(&mut Vec::new(), 0.5), None);
    }

    #[test]
    fn few_errors_give_symmetric_widest() {
        let mut e = vec![1.0, -3.0, 2.0];
        assert_eq!(error_offsets(&mut e, 0.9), Some((-3.0, 3.0)));
        assert_eq!(error_offsets(&mut vec![f64::NAN], 0.9), None);
    }

    #[test]
    fn skewed_errors_give_asymmetric_interval() {
        // 1..=100 shifted down: mostly positive errors, a long upper tail.
        let mut e: Vec<f64> = (1..=100).map(|i| i as f64 - 20.0).collect();
        let (lo, hi) = error_offsets(&mut e, 0.9).expect("enough errors");
        assert!((lo - (-14.05)).abs() < 1e-9, "{lo}");
        assert!((hi - 75.05).abs() < 1e-9, "{hi}");
    }

    #[test]
    fn window_is_bounded() {
        let mut w = ErrorWindow::new(3);
        for e in [1.0, f64::INFINITY, 2.0, 3.0, 4.0] {
            w.push(e);
        }
        assert_eq!(w.len(), 3);
        let mut scratch = Vec::new();
        assert_eq!(w.offsets(0.5, &mut scratch), Some((-4.0, 4.0)));
    }
}
