//! Deterministic synthetic series for the unit tests.

use super::Seasons;

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
