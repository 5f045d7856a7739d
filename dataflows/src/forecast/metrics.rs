//! Forecast accuracy measures: MASE, sMAPE and interval coverage.
//!
//! Each measure is an accumulator: pairs of (actual, forecast) are added one
//! at a time as they resolve, and the value is read at the end, so the
//! rolling evaluation ([`super::eval`]) and the ensemble's scoring
//! ([`super::selection`]) need no buffers. Pairs with a non-finite actual or
//! forecast are skipped (a missing actual cannot be scored).
//!
//! * **MASE** — mean absolute error divided by a scale: the in-sample mean
//!   absolute *one-step naive* error `mean |y_t − y_{t−1}|` ([`naive_scale`]).
//!   The one-step scale (rather than the seasonal naive one) exists from two
//!   values on, so every series gets a score from its first minutes; it is
//!   the same for all models of one series, so it never changes a ranking.
//!   MASE 1 means "as far off as the last step moved, on average".
//! * **sMAPE** — `mean 200 |y − ŷ| / (|y| + |ŷ|)` in percent (0 to 200), with
//!   0/0 counted as 0: a perfect forecast of an idle series is not an error.
//! * **Coverage** — the share of actuals inside `[lower, upper]`.

/// Mean absolute one-step change over the finite neighbours in `y`; `None`
/// with fewer than two consecutive finite values or a zero mean (a constant
/// series has no scale).
pub fn naive_scale(y: &[f64]) -> Option<f64> {
    let (sum, n) = y
        .windows(2)
        .filter(|w| w[0].is_finite() && w[1].is_finite())
        .fold((0.0, 0usize), |(s, n), w| (s + (w[1] - w[0]).abs(), n + 1));
    let scale = sum / n.max(1) as f64;
    (n > 0 && scale > 0.0 && scale.is_finite()).then_some(scale)
}

/// Accumulates absolute errors for MASE (and MAE).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mase {
    sum_abs: f64,
    count: usize,
}

impl Mase {
    /// Adds one resolved pair.
    pub fn add(&mut self, actual: f64, forecast: f64) {
        let e = (actual - forecast).abs();
        if e.is_finite() {
            self.sum_abs += e;
            self.count += 1;
        }
    }

    /// Number of pairs scored.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Mean absolute error; `NaN` without pairs.
    pub fn mae(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.sum_abs / self.count as f64 }
    }

    /// MAE divided by `scale`; `NaN` without pairs or without a scale.
    pub fn value(&self, scale: f64) -> f64 {
        if scale > 0.0 && scale.is_finite() { self.mae() / scale } else { f64::NAN }
    }
}

/// Accumulates symmetric absolute percentage errors.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Smape {
    sum: f64,
    count: usize,
}

impl Smape {
    /// Adds one resolved pair.
    pub fn add(&mut self, actual: f64, forecast: f64) {
        if !(actual.is_finite() && forecast.is_finite()) {
            return;
        }
        let denom = actual.abs() + forecast.abs();
        let term = if denom > 0.0 { 200.0 * (actual - forecast).abs() / denom } else { 0.0 };
        if term.is_finite() {
            self.sum += term;
            self.count += 1;
        }
    }

    /// sMAPE in percent; `NaN` without pairs.
    pub fn value(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.sum / self.count as f64 }
    }
}

/// Accumulates interval hits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Coverage {
    inside: usize,
    count: usize,
}

impl Coverage {
    /// Adds one resolved actual with its interval.
    pub fn add(&mut self, actual: f64, lower: f64, upper: f64) {
        if !(actual.is_finite() && lower.is_finite() && upper.is_finite()) {
            return;
        }
        self.count += 1;
        if lower <= actual && actual <= upper {
            self.inside += 1;
        }
    }

    /// Share of actuals inside their interval; `NaN` without pairs.
    pub fn value(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.inside as f64 / self.count as f64 }
    }
}

/// MASE of `forecast` against `actual`, scaled by [`naive_scale`] of
/// `in_sample`.
pub fn mase(actual: &[f64], forecast: &[f64], in_sample: &[f64]) -> f64 {
    let mut m = Mase::default();
    actual.iter().zip(forecast).for_each(|(a, f)| m.add(*a, *f));
    naive_scale(in_sample).map_or(f64::NAN, |s| m.value(s))
}

/// sMAPE (percent) of `forecast` against `actual`.
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    let mut m = Smape::default();
    actual.iter().zip(forecast).for_each(|(a, f)| m.add(*a, *f));
    m.value()
}

/// Share of `actual` inside `[lower, upper]`.
pub fn coverage(actual: &[f64], lower: &[f64], upper: &[f64]) -> f64 {
    let mut c = Coverage::default();
    for ((a, l), u) in actual.iter().zip(lower).zip(upper) {
        c.add(*a, *l, *u);
    }
    c.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mase_against_naive_is_one() {
        let y = [1.0, 3.0, 2.0, 5.0, 4.0];
        // The naive forecast of each next value is the previous one.
        let actual = &y[1..];
        let naive = &y[..4];
        assert!((mase(actual, naive, &y) - 1.0).abs() < 1e-12);
        assert!(mase(&[1.0], &[1.0], &[2.0, 2.0]).is_nan(), "constant: no scale");
    }

    #[test]
    fn smape_bounds_and_zeros() {
        assert_eq!(smape(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
        assert_eq!(smape(&[1.0], &[0.0]), 200.0);
        assert!((smape(&[100.0], &[110.0]) - 200.0 * 10.0 / 210.0).abs() < 1e-12);
        assert!(smape(&[f64::NAN], &[1.0]).is_nan());
    }

    #[test]
    fn coverage_counts_bounds_inclusively() {
        let c = coverage(&[1.0, 2.0, 3.0, f64::NAN], &[1.0, 2.5, 0.0, 0.0], &[1.0, 3.0, 2.0, 9.0]);
        assert!((c - 1.0 / 3.0).abs() < 1e-12);
    }
}
