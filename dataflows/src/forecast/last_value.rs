//! The reactive baseline: the last finite value, repeated over the horizon.
//!
//! This is what a reactive autoscaler implicitly assumes, and the model every
//! other one must beat. It is the seasonal naive core
//! ([`super::seasonal_naive`]) with a season of one step, so it shares its
//! handling of missing values (the last *finite* value is used) and its
//! empirical intervals: the `h`-step interval comes from the recent changes
//! `y_t − y_{t−h}`, which widen with `h` as the series wanders.
//!
//! It needs two values of history (two "seasons" of one step) and is the end
//! of every fallback chain.

use super::seasonal_naive::{LagCore, NaiveConfig};
use super::{Forecast, Model, ModelKind, Result, Seasons};

/// The last finite value, with empirical intervals from recent changes.
#[derive(Debug, Clone)]
pub struct LastValue {
    core: LagCore,
}

impl LastValue {
    /// A last-value model with explicit windows.
    pub fn new(config: NaiveConfig) -> LastValue {
        LastValue { core: LagCore::new(ModelKind::LastValue, 1, config) }
    }

    /// With the default windows for `seasons`.
    pub fn for_seasons(seasons: &Seasons) -> LastValue {
        LastValue::new(NaiveConfig::for_seasons(seasons))
    }
}

impl Model for LastValue {
    fn kind(&self) -> ModelKind {
        ModelKind::LastValue
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

    fn model() -> LastValue {
        LastValue::for_seasons(&Seasons::from_step(300).expect("valid step"))
    }

    #[test]
    fn follows_a_step_change_at_once() {
        let mut m = model();
        let mut y = vec![10.0; 100];
        m.fit(&y).expect("enough history");
        m.update(50.0);
        y.push(50.0);
        let f = m.predict(3, 0.9).expect("fitted");
        assert_eq!(f.point, vec![50.0; 3]);
        // One jump among 99 flat changes is outside the 5–95% quantiles.
        assert!(f.lower[0] <= 50.0 && f.upper[0] >= 50.0);
    }

    #[test]
    fn skips_missing_and_infinite_values() {
        let mut m = model();
        m.fit(&[1.0, 2.0, f64::NAN]).expect("two finite values");
        m.update(f64::INFINITY);
        m.update(f64::NEG_INFINITY);
        let f = m.predict(2, 0.9).expect("fitted");
        assert_eq!(f.point, vec![2.0, 2.0]);
        assert!(f.lower.iter().chain(&f.upper).all(|v| v.is_finite()));
    }

    #[test]
    fn too_short_or_all_missing_history_is_an_error() {
        let mut m = model();
        assert!(m.fit(&[1.0]).is_err());
        assert!(m.fit(&[f64::NAN, f64::NAN, 3.0]).is_err());
        assert!(m.predict(1, 0.9).is_err());
    }
}
