//! Deterministic synthetic series for the unit tests.

use super::{Model, Seasons};

/// SplitMix64: a tiny, seedable generator so tests are reproducible.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal by the Box–Muller transform.
    pub(crate) fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `n` standard normal values.
pub(crate) fn gaussian_noise(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

/// `100 + 20 sin(2π t / day)` plus normal noise of standard deviation `sd`.
pub(crate) fn daily_sine(seasons: &Seasons, n: usize, sd: f64) -> Vec<f64> {
    let mut rng = SplitMix::new(42);
    (0..n)
        .map(|t| {
            let phase = std::f64::consts::TAU * t as f64 / seasons.day as f64;
            100.0 + 20.0 * phase.sin() + sd * rng.normal()
        })
        .collect()
}

/// A base load of 10 with a burst of 30 more lasting two steps every
/// `every` steps (which may be fractional: a burst starts at the step the
/// job's clock falls in), plus standard normal noise.
pub(crate) fn bursts(n: usize, every: f64, seed: u64) -> Vec<f64> {
    let noise = gaussian_noise(n, seed);
    let mut next: f64 = 5.0;
    let mut y = Vec::with_capacity(n);
    for (t, e) in noise.iter().enumerate() {
        let t = t as f64;
        let burst = t >= next.floor() && t < next.floor() + 2.0;
        if t >= next.floor() + 1.0 {
            next += every;
        }
        y.push(10.0 + e + if burst { 30.0 } else { 0.0 });
    }
    y
}

/// The share of `values` inside the one-step 90% interval of `model`,
/// forecasting each value and then updating the model with it.
pub(crate) fn one_step_coverage(model: &mut dyn Model, values: &[f64]) -> f64 {
    let mut inside = 0usize;
    for &v in values {
        let f = model.predict(1, 0.9).expect("the model is fitted");
        inside += usize::from(f.lower[0] <= v && v <= f.upper[0]);
        model.update(v);
    }
    inside as f64 / values.len().max(1) as f64
}
