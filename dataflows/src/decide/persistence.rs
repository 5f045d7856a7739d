//! How much of a surprise lasts: the share of the step under way's miss
//! that the steps after it will miss too.
//!
//! Between forecasts the decide stage re-reads the last forecast at each
//! short-window reading ([`super::policy`]). Once the readings show that
//! the step under way is off its forecast, the later steps of that
//! forecast are likely off as well, by an amount that depends on the
//! series: a random walk keeps the whole surprise, noise around a steady
//! level none of it, and a burst that dies down little of its rise but all
//! of its fall. Sizing the next steps from a forecast the readings have
//! already proved wrong held replicas for a burst that was over (a tweet
//! burst on the NAB trace kept its count for ten minutes after the load
//! had fallen by a third), while moving the whole forecast by every surprise scaled
//! up and down with the noise of steady CPU series.
//!
//! [`Persistence`] learns the share per scaler from its forecasts' own
//! errors. For each forecast the error of its first step `e1` and of its
//! second `e2` become known as the next two forecasts bring their loads;
//! the share is the least-squares slope of `e2` on `e1` over exponentially
//! weighted recent pairs, kept apart for surprises up and down, clamped to
//! [0, 1]: `E[e2 | e1] = share · e1` is then the best linear correction of
//! the second step from the first one's miss.
//!
//! [`StepLoad`] averages the readings of the step under way: the estimate
//! of its load that the surprise is measured with. [`StepSpread`] learns
//! how far the load strays within a step over a look-ahead: what is
//! still unknown of the step under way once some of its readings are in.

use std::collections::VecDeque;

use crate::forecast::stage::ForecastRow;
use crate::time::{Millis, SECOND};

/// Weight of each new pair of errors: the share follows the last few
/// hours of 5-minute forecasts.
const WEIGHT: f64 = 0.02;
/// Pairs on one side before its share is trusted (an hour of 5-minute
/// forecasts); until then surprises carry nothing.
const MIN_PAIRS: u32 = 12;

/// Weighted second moments of the `(e1, e2)` pairs on one side.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    /// Weighted mean of `e1 · e2`.
    cross: f64,
    /// Weighted mean of `e1²`.
    square: f64,
    pairs: u32,
}

impl Moments {
    fn add(&mut self, e1: f64, e2: f64) {
        self.cross += WEIGHT * (e1 * e2 - self.cross);
        self.square += WEIGHT * (e1 * e1 - self.square);
        self.pairs = self.pairs.saturating_add(1);
    }

    fn slope(&self) -> f64 {
        if self.pairs < MIN_PAIRS || self.square <= 0.0 {
            return 0.0;
        }
        let slope = self.cross / self.square;
        if slope.is_finite() { slope.clamp(0.0, 1.0) } else { 0.0 }
    }
}

/// A forecast waiting for the loads of its first two steps.
#[derive(Clone, Copy, Debug)]
struct Pending {
    origin: Millis,
    step: Millis,
    first: f64,
    second: f64,
    first_error: Option<f64>,
}

impl Pending {
    /// When the load of the second step arrives (with the forecast two
    /// steps later).
    fn second_due(&self) -> Millis {
        self.origin.saturating_add(self.step.saturating_mul(2))
    }
}

/// The share of a surprise that lasts, learnt from one scaler's forecasts.
#[derive(Clone, Debug, Default)]
pub struct Persistence {
    pending: VecDeque<Pending>,
    up: Moments,
    down: Moments,
}

impl Persistence {
    /// Takes a forecast whose load is believed (the policy skips loads out
    /// of range and jumps down): its load resolves the first step of the
    /// forecast one step earlier and the second step of the one two steps
    /// earlier; its own first two steps wait for later loads.
    pub fn observe(&mut self, row: &ForecastRow) {
        let origin = row.origin_ms;
        let load = row.actual;
        if load.is_finite() {
            for p in self.pending.iter_mut() {
                if p.origin.saturating_add(p.step) == origin {
                    p.first_error = Some(load - p.first);
                } else if p.second_due() == origin
                    && let Some(e1) = p.first_error
                {
                    let e2 = load - p.second;
                    // A first step forecast exactly says nothing of the slope.
                    if e1.is_finite() && e2.is_finite() && e1 != 0.0 {
                        let side = if e1 > 0.0 { &mut self.up } else { &mut self.down };
                        side.add(e1, e2);
                    }
                }
            }
        }
        // A forecast whose second step has passed is resolved or lost.
        self.pending.retain(|p| p.second_due() > origin);
        if let (Some(&first), Some(&second)) = (row.point.first(), row.point.get(1))
            && first.is_finite()
            && second.is_finite()
        {
            let step = row.step_s.max(1) * SECOND;
            self.pending.push_back(Pending { origin, step, first, second, first_error: None });
        }
    }

    /// The part of `surprise` (the step under way's load minus its
    /// forecast) expected to last into the next steps.
    pub fn carried(&self, surprise: f64) -> f64 {
        let side = if surprise > 0.0 { &self.up } else { &self.down };
        let carried = surprise * side.slope();
        if carried.is_finite() { carried } else { 0.0 }
    }
}

/// The step of `plan` a reading ending at `end` falls in: its point
/// forecast and start. A reading covers the time just before its end, so
/// one ending at a step's start belongs to the step before; `None` past
/// the plan's end.
fn step_of(plan: &ForecastRow, end: Millis) -> Option<(f64, Millis)> {
    let step = plan.step_s.max(1) * SECOND;
    let k = end.saturating_sub(1).saturating_sub(plan.origin_ms) / step;
    let expected = *plan.point.get(usize::try_from(k).ok()?)?;
    Some((expected, plan.origin_ms + k * step))
}

/// The mean of the readings of the step under way.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepLoad {
    /// Start of the step the sum belongs to, the sum and the count.
    seen: Option<(Millis, f64, u32)>,
}

impl StepLoad {
    /// Adds a reading ending at `end` to the step of `plan` it falls in;
    /// returns the step's mean load so far and the plan's point forecast
    /// for that step (`None` past the plan's end).
    ///
    /// The reading that closed at the plan's origin opens the first
    /// step's mean: it is the load the forecast starts from, so a model
    /// that forecast a move away from it is pulled back as far as its
    /// surprises last, and one early reading of the step does not move
    /// the plan alone (on NAB's `Twitter_volume_AAPL`, 1.12× HPA's
    /// replica-hours at equal service against 1.18× with the step's own
    /// readings only).
    pub fn record(&mut self, plan: &ForecastRow, end: Millis, load: f64) -> Option<(f64, f64)> {
        // One ending at the origin (or, late, before it) counts for the
        // first step.
        let (expected, start) = step_of(plan, end)?;
        let (sum, n) = match self.seen {
            Some((s, sum, n)) if s == start => (sum + load, n + 1),
            _ => (load, 1),
        };
        self.seen = Some((start, sum, n));
        let mean = sum / f64::from(n);
        (mean.is_finite() && expected.is_finite()).then_some((mean, expected))
    }
}

/// Weight of each new reading's deviation in the spread within steps: a
/// few hours of 15-second readings.
const SPREAD_WEIGHT: f64 = 0.002;
/// Pairs of readings before the spread is trusted (an hour or so of
/// 5-minute steps read every 15 s); until then the step under way is
/// sized from its forecast.
const MIN_DEVIATIONS: u32 = 120;

/// What the readings of a step have shown of it so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnderWay {
    /// When the step started.
    pub start: Millis,
    /// The mean of its readings.
    pub mean: f64,
    /// How far the load strays from the step's mean over a look-ahead
    /// (a root mean square).
    pub spread: f64,
}

/// How far the load strays, over a look-ahead, from the readings of its
/// step so far: the uncertainty left in the step under way once readings
/// of it are in.
///
/// A forecast's interval for a step is its uncertainty before any of the
/// step is seen. Partway through a step the readings have shown its
/// level, and what is left is how far the load can move from it before
/// pods asked for now are ready, which is what this learns: the root of
/// an exponentially weighted mean of `(reading - mean of the step's
/// readings a look-ahead earlier)²`, over pairs of readings within one
/// step. Only readings inside a step count, not the one that closed at
/// its start.
#[derive(Clone, Debug, Default)]
pub struct StepSpread {
    /// Start of the step under way.
    start: Option<Millis>,
    /// Sum and count of its readings so far.
    sum: f64,
    count: u32,
    /// End of each of its readings and the step's mean as it stood then,
    /// from the latest one a look-ahead before the last reading on.
    means: VecDeque<(Millis, f64)>,
    square: f64,
    deviations: u32,
}

impl StepSpread {
    /// Adds a reading ending at `end` to the step of `plan` it falls in;
    /// returns that step's start, the mean of its readings so far and the
    /// spread of the load `lead` later, once enough pairs of readings have
    /// shown it. `None` for the reading that closed at the plan's origin,
    /// past the plan's end, or before the spread is known.
    pub fn record(&mut self, plan: &ForecastRow, end: Millis, load: f64, lead: Millis) -> Option<UnderWay> {
        if end <= plan.origin_ms || !load.is_finite() {
            return None;
        }
        let (_, start) = step_of(plan, end)?;
        if self.start != Some(start) {
            // Cleared, not replaced: a scaler starts a step every few
            // minutes, and the deque keeps its allocation.
            self.start = Some(start);
            self.sum = 0.0;
            self.count = 0;
            self.means.clear();
        }
        // Keep, of the means a look-ahead or more before this reading, the
        // latest: later readings are further from it.
        let old_enough = |t: Millis| t.saturating_add(lead) <= end;
        while self.means.get(1).is_some_and(|&(t, _)| old_enough(t)) {
            self.means.pop_front();
        }
        if let Some(&(t, then)) = self.means.front()
            && old_enough(t)
        {
            let deviation = load - then;
            self.deviations = self.deviations.saturating_add(1);
            // A plain mean until the weight takes over: a weighted one
            // started at zero would read low for its first few hundred.
            let weight = SPREAD_WEIGHT.max(1.0 / f64::from(self.deviations));
            self.square += weight * (deviation * deviation - self.square);
        }
        self.sum += load;
        self.count += 1;
        let mean = self.sum / f64::from(self.count);
        self.means.push_back((end, mean));
        let spread = self.square.sqrt();
        (self.deviations >= MIN_DEVIATIONS && spread.is_finite() && mean.is_finite()).then_some(UnderWay {
            start,
            mean,
            spread,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::testing::SplitMix;
    use crate::record::SeriesKey;
    use crate::time::MINUTE;

    /// A last-value forecast at step `i` (5-minute steps) of load `actual`.
    fn row(i: u64, actual: f64, point: f64) -> ForecastRow {
        ForecastRow {
            series: SeriesKey { namespace: "shop".into(), deployment: "web".into(), metric: "rps".into() },
            origin_ms: i * 5 * MINUTE,
            step_s: 300,
            model: "last-value".into(),
            recent_error: Some(1.0),
            level: 0.9,
            actual,
            point: vec![point; 4],
            lower: vec![point; 4],
            upper: vec![point; 4],
            note: None,
        }
    }

    fn learnt(loads: &[f64], point: impl Fn(f64) -> f64) -> Persistence {
        let mut p = Persistence::default();
        for (i, &y) in loads.iter().enumerate() {
            p.observe(&row(i as u64, y, point(y)));
        }
        p
    }

    #[test]
    fn a_random_walk_keeps_its_surprises() {
        let mut rng = SplitMix::new(7);
        let mut y = 1000.0;
        let loads: Vec<f64> = (0..2000)
            .map(|_| {
                y += 10.0 * rng.normal();
                y
            })
            .collect();
        let p = learnt(&loads, |y| y);
        assert!(p.carried(10.0) > 5.0, "{}", p.carried(10.0));
        assert!(p.carried(-10.0) < -5.0, "{}", p.carried(-10.0));
    }

    #[test]
    fn noise_around_a_level_keeps_none() {
        let mut rng = SplitMix::new(8);
        let loads: Vec<f64> = (0..2000).map(|_| 100.0 + 10.0 * rng.normal()).collect();
        let p = learnt(&loads, |_| 100.0);
        assert!(p.carried(10.0).abs() < 3.0, "{}", p.carried(10.0));
        assert!(p.carried(-10.0).abs() < 3.0, "{}", p.carried(-10.0));
    }

    #[test]
    fn a_burst_that_dies_down_keeps_its_fall_not_its_rise() {
        // One-step bursts from 10 to 100 every 6 steps, forecast by the
        // last value: the rise is gone a step later, the fall back stays.
        let loads: Vec<f64> = (0..600).map(|i| if i % 6 == 3 { 100.0 } else { 10.0 }).collect();
        let p = learnt(&loads, |y| y);
        assert_eq!(p.carried(90.0), 0.0);
        assert_eq!(p.carried(-90.0), -90.0);
    }

    #[test]
    fn nothing_carries_before_an_hour_of_pairs() {
        let loads: Vec<f64> = (0..12).map(|i| 100.0 + 10.0 * i as f64).collect();
        let p = learnt(&loads, |y| y);
        // Ten pairs resolved, all the same surprise: not enough yet.
        assert_eq!(p.carried(10.0), 0.0);
        let loads: Vec<f64> = (0..20).map(|i| 100.0 + 10.0 * i as f64).collect();
        assert_eq!(learnt(&loads, |y| y).carried(10.0), 10.0);
    }

    /// A look-ahead of 2 min 15 s: readings 10 to 20 of a step pair with
    /// an earlier one.
    const LEAD: Millis = 135 * SECOND;

    /// Readings every 15 s over `steps` 5-minute steps of a plan made at
    /// minute 5, from `load(step, reading)`: the last answer of the spread.
    fn spread_after(steps: u64, load: impl Fn(u64, u64) -> f64) -> Option<(f64, f64)> {
        let plan = ForecastRow { point: vec![50.0; steps as usize], ..row(1, 50.0, 50.0) };
        let mut spread = StepSpread::default();
        let mut last = None;
        for k in 0..steps {
            // The reading ending at a step's start covers the step before.
            for i in 1..=20 {
                let end = plan.origin_ms + k * 5 * MINUTE + i * 15 * SECOND;
                last = spread.record(&plan, end, load(k, i), LEAD).map(|u| (u.mean, u.spread));
            }
        }
        last
    }

    #[test]
    fn steady_steps_have_no_spread_once_enough_readings_show_it() {
        // 11 pairs a step: ten steps are not enough, eleven are.
        assert_eq!(spread_after(10, |k, _| 10.0 * k as f64), None);
        // Each step at its own level: the jumps between steps are not
        // spread within them.
        assert_eq!(spread_after(11, |k, _| 10.0 * k as f64), Some((100.0, 0.0)));
    }

    #[test]
    fn noisy_readings_spread_about_as_much_as_their_noise() {
        let mut rng = SplitMix::new(9);
        let noise: Vec<f64> = (0..=200 * 21).map(|_| 10.0 * rng.normal()).collect();
        let (mean, spread) = spread_after(200, |k, i| 100.0 + noise[(k * 21 + i) as usize]).expect("learnt");
        assert!((mean - 100.0).abs() < 10.0, "{mean}");
        // A reading strays from the mean of a few before it by a little
        // more than the noise itself.
        assert!((9.0..14.0).contains(&spread), "{spread}");
    }

    #[test]
    fn step_load_averages_the_readings_of_the_step_under_way() {
        let plan = ForecastRow { point: vec![50.0, 80.0], ..row(1, 50.0, 50.0) };
        let at = |m: u64, s: u64| m * MINUTE + s * SECOND;
        let mut l = StepLoad::default();
        assert_eq!(l.record(&plan, at(5, 15), 40.0), Some((40.0, 50.0)));
        assert_eq!(l.record(&plan, at(10, 0), 60.0), Some((50.0, 50.0)));
        // The next step starts a new mean against its own forecast.
        assert_eq!(l.record(&plan, at(10, 15), 90.0), Some((90.0, 80.0)));
        assert_eq!(l.record(&plan, at(15, 15), 90.0), None, "past the plan");
        // The reading that closed at the origin opens the first step.
        let mut l = StepLoad::default();
        assert_eq!(l.record(&plan, at(5, 0), 20.0), Some((20.0, 50.0)));
        assert_eq!(l.record(&plan, at(5, 15), 40.0), Some((30.0, 50.0)));
    }
}
