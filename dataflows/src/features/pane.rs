//! Pane aggregates: the exact, order-independent partial aggregate of the
//! samples of one series in one pane (the finest time slice every window is
//! a union of).
//!
//! Merging is exact and commutative: counts and min/max are, and sums are
//! kept in fixed point (nanounits in an `i128`) so that adding the same
//! samples in any order, split over any number of workers, gives the same
//! bits. That is what makes feature output byte-identical with 1, 4 or
//! 2×2 workers.

use serde::{Deserialize, Serialize};

use crate::record::Series;
use crate::time::Millis;

/// Fixed-point scale of sums: 1e-9 of a unit. Values are at most `1e15`
/// (the decoders' default `max_value`), so one is at most 1e24 here and
/// an `i128` holds the sum of more than 1e14 of them.
const SCALE: f64 = 1e9;

/// The exact aggregate of some samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaneAgg {
    /// Number of samples.
    pub count: u64,
    /// Sum in fixed point (see [`PaneAgg::sum`]).
    sum_fixed: i128,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sorted, distinct pod hashes.
    pub pods: Vec<u64>,
}

impl PaneAgg {
    /// The aggregate of one sample.
    pub fn of(value: f64, pod: u64) -> Self {
        PaneAgg { count: 1, sum_fixed: to_fixed(value), min: value, max: value, pods: vec![pod] }
    }

    /// Adds one sample.
    pub fn add(&mut self, value: f64, pod: u64) {
        self.count += 1;
        self.sum_fixed += to_fixed(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if let Err(at) = self.pods.binary_search(&pod) {
            self.pods.insert(at, pod);
        }
    }

    /// Folds another aggregate into this one.
    pub fn merge(&mut self, other: &PaneAgg) {
        self.count += other.count;
        self.sum_fixed += other.sum_fixed;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.pods.iter().any(|p| self.pods.binary_search(p).is_err()) {
            self.pods.extend_from_slice(&other.pods);
            self.pods.sort_unstable();
            self.pods.dedup();
        }
    }

    /// The sum of the values.
    pub fn sum(&self) -> f64 {
        self.sum_fixed as f64 / SCALE
    }

    /// The mean of the values (`count` is never 0 for a built aggregate).
    pub fn mean(&self) -> f64 {
        self.sum_fixed as f64 / SCALE / self.count.max(1) as f64
    }
}

/// Sums pane aggregates into a window's aggregate without allocating per
/// window: the pod list is a reused buffer, sorted once at the end.
#[derive(Debug, Default)]
pub struct Accumulator {
    /// Samples so far.
    pub count: u64,
    sum_fixed: i128,
    /// Smallest value so far.
    pub min: f64,
    /// Largest value so far.
    pub max: f64,
    pods: Vec<u64>,
}

impl Accumulator {
    /// Starts over.
    pub fn clear(&mut self) {
        self.count = 0;
        self.sum_fixed = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
        self.pods.clear();
    }

    /// Adds a pane's count, sum, min and max.
    pub fn add(&mut self, pane: &PaneAgg) {
        self.count += pane.count;
        self.sum_fixed += pane.sum_fixed;
        self.min = self.min.min(pane.min);
        self.max = self.max.max(pane.max);
    }

    /// Adds a pane, pods included.
    pub fn add_with_pods(&mut self, pane: &PaneAgg) {
        self.add(pane);
        self.pods.extend_from_slice(&pane.pods);
    }

    /// Distinct pods added with [`Accumulator::add_with_pods`].
    pub fn distinct_pods(&mut self) -> usize {
        self.pods.sort_unstable();
        self.pods.dedup();
        self.pods.len()
    }

    /// The sum of the values.
    pub fn sum(&self) -> f64 {
        self.sum_fixed as f64 / SCALE
    }

    /// The mean of the values (0 when empty).
    pub fn mean(&self) -> f64 {
        self.sum_fixed as f64 / SCALE / self.count.max(1) as f64
    }
}

fn to_fixed(value: f64) -> i128 {
    (value * SCALE).round() as i128
}

/// The partial aggregate of one series in one pane, as the ingest stage
/// sends it to the worker that owns the series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// The series.
    pub series: Series,
    /// Start of the pane.
    pub pane_start: Millis,
    /// Its samples' aggregate.
    pub agg: PaneAgg,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_order_does_not_change_a_bit() {
        let values = [0.1, 0.2, 0.3, 1e-9, 12345.678, 0.7, 1e12];
        let mut forward = PaneAgg::of(values[0], 1);
        for (i, v) in values.iter().enumerate().skip(1) {
            forward.add(*v, i as u64 % 3);
        }
        let mut halves = PaneAgg::of(values[6], 0);
        let mut other = PaneAgg::of(values[0], 1);
        for (i, v) in values.iter().enumerate().skip(1).take(5).rev() {
            if i % 2 == 0 {
                halves.add(*v, i as u64 % 3);
            } else {
                other.add(*v, i as u64 % 3);
            }
        }
        halves.merge(&other);
        assert_eq!(forward, halves);
        assert_eq!(forward.sum().to_bits(), halves.sum().to_bits());
        assert_eq!(forward.pods, vec![0, 1, 2]);
        assert_eq!(forward.count, 7);
        assert_eq!(forward.max, 1e12);
        assert_eq!(forward.min, 1e-9);
    }
}
