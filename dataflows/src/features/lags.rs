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
//! plain timely would have to track by hand. Each lag row leaves at the
//! time of its update, not at the earlier stamp of the batch differential
//! carries it in, so a row's timely time is when it became final (a Kafka
//! job resuming from its commits suppresses rows by that time). The
//! collection holds one small entry per window, far fewer than samples, so
//! this is not on the per-sample hot path.

use std::collections::BTreeMap;

use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

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
        .unary::<CapacityContainerBuilder<Vec<FeatureRow>>, _, _, _>(Pipeline, "LagRows", |_, _| {
            let mut by_time: BTreeMap<Millis, Vec<FeatureRow>> = BTreeMap::new();
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        for (((end, width, lag, series), mean), time, diff) in batch.drain(..) {
                            // A retraction is either expiry or the first half of a
                            // correction whose new value arrives as an insertion.
                            if diff > 0 {
                                by_time.entry(time).or_default().push(FeatureRow::Lag(LagRow {
                                    series,
                                    width_s: width / 1000,
                                    end_ms: end,
                                    lag_s: lag / 1000,
                                    value: f64::from_bits(mean),
                                }));
                            }
                        }
                    }
                    // Each row travels at its own time (never before the
                    // batch's stamp, which is a lower bound of its times).
                    for (time, rows) in std::mem::take(&mut by_time) {
                        output.session(&cap.delayed(&time, 0)).give_iterator(rows.into_iter());
                    }
                });
            }
        })
}
