//! Feature rows: what the feature stage emits, one JSON object each.
//!
//! Every window row carries a `revision`: 0 when the window is first
//! emitted (its end passed by the watermark plus the lateness, i.e. the
//! stream reached its end), 1, 2, … when late records within the lateness
//! corrected it. The last revision of a window is its final value.

use serde::{Deserialize, Serialize};

use crate::record::Series;
use crate::time::Millis;

/// One feature row.
///
/// Its serde form is for JSON output (an internally tagged enum with
/// flattened series fields), which bincode cannot read back: rows must not
/// be exchanged between timely processes as they are. They stay on the
/// worker that owns their series, and leave as JSON text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FeatureRow {
    /// A tumbling window.
    Tumbling(TumblingRow),
    /// A sliding window.
    Sliding(SlidingRow),
    /// A lagged value of a tumbling window's mean.
    Lag(LagRow),
}

impl FeatureRow {
    /// The series the row describes.
    pub fn series(&self) -> &Series {
        match self {
            FeatureRow::Tumbling(r) => &r.series,
            FeatureRow::Sliding(r) => &r.series,
            FeatureRow::Lag(r) => &r.series,
        }
    }
}

/// Avg, max, min, sum and distinct pods of a tumbling window, with the
/// calendar features of its start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TumblingRow {
    /// Namespace, deployment, metric.
    #[serde(flatten, with = "series_fields")]
    pub series: Series,
    /// Window width in seconds.
    pub width_s: u64,
    /// Window start, event time (ms).
    pub start_ms: Millis,
    /// Window end (exclusive), event time (ms).
    pub end_ms: Millis,
    /// 0 for the first emission, then one more per correction.
    pub revision: u32,
    /// Samples in the window.
    pub count: u64,
    /// Mean of the samples.
    pub avg: f64,
    /// Largest sample.
    pub max: f64,
    /// Smallest sample.
    pub min: f64,
    /// Sum of the samples.
    pub sum: f64,
    /// Distinct pods that reported.
    pub pods: u32,
    /// Hour of day of the start, 0–23, UTC.
    pub hour_of_day: u8,
    /// ISO day of week of the start, 1 (Monday)–7, UTC.
    pub day_of_week: u8,
}

/// Mean, standard deviation and slope over a sliding window.
///
/// `mean` is over every sample in the window. `stddev` and `slope_per_min`
/// describe the load curve: they are taken over the means of the window's
/// slide-sized steps (for 30 min every 1 min: the thirty 1-min means), so
/// pods that differ from each other do not read as volatility.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlidingRow {
    /// Namespace, deployment, metric.
    #[serde(flatten, with = "series_fields")]
    pub series: Series,
    /// Window width in seconds.
    pub width_s: u64,
    /// Slide in seconds.
    pub slide_s: u64,
    /// Window start, event time (ms).
    pub start_ms: Millis,
    /// Window end (exclusive), event time (ms).
    pub end_ms: Millis,
    /// 0 for the first emission, then one more per correction.
    pub revision: u32,
    /// Samples in the window.
    pub count: u64,
    /// Steps (slide-sized sub-windows) with at least one sample.
    pub steps: u32,
    /// Mean of all samples.
    pub mean: f64,
    /// Sample standard deviation of the step means (0 with fewer than 2).
    pub stddev: f64,
    /// Least-squares slope of the step means, units per minute.
    pub slope_per_min: f64,
}

/// The mean of the same-width window `lag_s` seconds before this one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LagRow {
    /// Namespace, deployment, metric.
    #[serde(flatten, with = "series_fields")]
    pub series: Series,
    /// Width of both windows in seconds.
    pub width_s: u64,
    /// End of the window this row belongs to (ms).
    pub end_ms: Millis,
    /// The lag in seconds.
    pub lag_s: u64,
    /// The mean of the window ending at `end_ms - lag_s * 1000`.
    pub value: f64,
}

/// Serializes a [`Series`] as flat `namespace`, `deployment`, `metric`
/// fields of the row.
mod series_fields {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::record::{Series, SeriesKey};

    pub fn serialize<S: Serializer>(series: &Series, s: S) -> Result<S::Ok, S::Error> {
        series.key().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Series, D::Error> {
        SeriesKey::deserialize(d).map(Series::new)
    }
}
