//! Lagged values: the mean of the same window one hour, one day, one week
//! earlier, as a differential dataflow join.
//!
//! The window operator maintains a collection of window means keyed by
//! (end, width, series). A correction of a window retracts its old mean and
//! inserts the new one, and a mean leaves the collection once no window can
//! still ask for it (its end plus the largest lag, width and lateness). The
//! lag of a window is then a join of that collection with itself shifted
//! by the lag: when a late record corrects a past window, differential
//! dataflow revises exactly the lag rows that used it, which is the case
//! plain timely would have to track by hand. The collection holds one
//! small entry per window, far fewer than samples, so this is not on the
//! per-sample hot path.

use differential_dataflow::AsCollection;
use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;

use super::rows::{FeatureRow, LagRow};
use super::windows::MeanUpdate;
use crate::time::Millis;

/// Lag rows for every tumbling window whose lagged window exists.
pub fn lags<'scope>(
    means: StreamVec<'scope, Millis, MeanUpdate>,
    lags: Vec<Millis>,
) -> StreamVec<'scope, Millis, FeatureRow> {
    let means = means.as_collection();
    let current = means.clone().map(|(key, _mean)| (key, ()));
    let shifted = means.flat_map(move |((end, width, series), mean)| {
        lags.iter()
            .filter(move |&&lag| lag % width == 0)
            .map(move |&lag| ((end + lag, width, series.clone()), (lag, mean)))
            .collect::<Vec<_>>()
    });
    current
        .join_map(shifted, |(end, width, series), (), &(lag, mean)| ((*end, *width, lag, series.clone()), mean))
        .consolidate()
        .inner
        .flat_map(|(((end, width, lag, series), mean), _time, diff)| {
            // A retraction is either expiry or the first half of a
            // correction whose new value arrives as an insertion.
            (diff > 0).then(|| {
                FeatureRow::Lag(LagRow {
                    series,
                    width_s: width / 1000,
                    end_ms: end,
                    lag_s: lag / 1000,
                    value: f64::from_bits(mean),
                })
            })
        })
}
