//! Features per (namespace, deployment, metric): tumbling windows, sliding
//! windows, lagged window means and calendar fields.
//!
//! Data enters as [`Partial`]s from the ingest stage (per-pane aggregates at
//! their partition's watermark) and leaves as [`FeatureRow`]s.
//!
//! Which engine computes what, and why:
//! - **plain timely** for the windows ([`windows`]): every sample lands
//!   here, so this is the hot path. Windows are unions of panes (the
//!   greatest common divisor of all widths and slides), pane aggregates are
//!   exact and order-independent, and corrections from late records are
//!   explicit revisions. Differential's `reduce` would re-derive each
//!   window from its full input on every change, which is far slower at
//!   millions of samples per second for the same result.
//! - **differential dataflow** for the lags ([`lags`]): a join of the
//!   window-means collection with itself, shifted by each lag, where a
//!   correction of a past window must revise the lag rows that used it.
//!   That is exactly incremental join maintenance, on a collection of one
//!   entry per window rather than per sample.
//! - calendar fields (hour of day, day of week, UTC) are computed on the
//!   tumbling rows from the window start.

pub mod lags;
pub mod pane;
pub mod rows;
pub mod windows;

pub use pane::{PaneAgg, Partial};
pub use rows::{FeatureRow, LagRow, SlidingRow, TumblingRow};
pub use windows::{WindowCounters, WindowOutput};

use timely::dataflow::StreamVec;
use timely::dataflow::operators::core::{Concat, OkErr};

use crate::error::{Error, Result};
use crate::time::{DAY, HOUR, MINUTE, Millis, SECOND, format_duration};

/// A sliding window: `width` long, one every `slide`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingSpec {
    /// Window length.
    pub width: Millis,
    /// Distance between consecutive window ends.
    pub slide: Millis,
}

/// Validated feature settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureSettings {
    /// Tumbling window widths (default 15 s and 5 min: the reactive
    /// floor's reading and the forecast's step).
    pub tumbling: Vec<Millis>,
    /// Sliding windows (default 30 min every 1 min).
    pub sliding: Vec<SlidingSpec>,
    /// Lags of the tumbling window means (default 1 h, 24 h, 7 d).
    pub lags: Vec<Millis>,
    /// The tumbling widths that get lag rows (default 5 min).
    /// Short windows that feed the reactive floor would add as many
    /// entries to the lag join as there are samples, for lag rows no
    /// stage reads.
    pub lagged: Vec<Millis>,
    /// Allowed lateness, the same as the event-time setting.
    pub lateness: Millis,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        FeatureSettings {
            tumbling: vec![15 * SECOND, 5 * MINUTE],
            sliding: vec![SlidingSpec { width: 30 * MINUTE, slide: MINUTE }],
            lags: vec![HOUR, DAY, 7 * DAY],
            lagged: vec![5 * MINUTE],
            lateness: 30 * SECOND,
        }
    }
}

fn gcd(a: Millis, b: Millis) -> Millis {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl FeatureSettings {
    /// Checks the settings, naming the field at fault.
    pub fn validate(self) -> Result<Self> {
        let invalid = |field, reason: String| Err(Error::InvalidSetting { field, reason });
        if self.tumbling.is_empty() && self.sliding.is_empty() {
            return invalid("features.tumbling", "at least one tumbling or sliding window is needed".into());
        }
        for &w in &self.tumbling {
            if w == 0 || w % SECOND != 0 {
                return invalid("features.tumbling", format!("width {w}ms must be a positive whole number of seconds"));
            }
        }
        for s in &self.sliding {
            if s.slide == 0 || s.slide % SECOND != 0 || s.width == 0 || s.width % s.slide != 0 {
                return invalid(
                    "features.sliding",
                    format!(
                        "width {} must be a positive multiple of slide {}, itself whole seconds",
                        format_duration(s.width),
                        format_duration(s.slide)
                    ),
                );
            }
            if s.width / s.slide > 10_000 {
                return invalid("features.sliding", "more than 10000 slides per window".into());
            }
        }
        if let Some(w) = self.lagged.iter().find(|w| !self.tumbling.contains(w)) {
            return invalid("features.lagged", format!("{} is not one of the tumbling widths", format_duration(*w)));
        }
        for &lag in &self.lags {
            if lag == 0 {
                return invalid("features.lags", "a lag must be positive".into());
            }
            if let Some(w) = self.lagged.iter().find(|&&w| lag % w != 0) {
                return invalid(
                    "features.lags",
                    format!(
                        "lag {} is not a multiple of the lagged tumbling width {}",
                        format_duration(lag),
                        format_duration(*w)
                    ),
                );
            }
        }
        if !self.lags.is_empty() && self.lagged.is_empty() {
            return invalid("features.lags", "lags need at least one lagged tumbling window".into());
        }
        Ok(self)
    }

    /// The pane: the largest duration every width and slide is a multiple
    /// of. Every sample updates exactly one pane.
    pub fn pane(&self) -> Millis {
        let all = self.tumbling.iter().copied().chain(self.sliding.iter().flat_map(|s| [s.width, s.slide]));
        all.fold(0, gcd).max(1)
    }

    /// How long a window mean stays in the lag collection after its end:
    /// long enough for the largest lag to find it even from a window that
    /// is still being corrected.
    pub fn mean_retention(&self) -> Millis {
        let max_lag = self.lags.iter().copied().max().unwrap_or(0);
        let max_width = self.lagged.iter().copied().max().unwrap_or(0);
        max_lag + max_width + self.lateness + self.pane()
    }
}

/// Builds the feature stage: partials in, feature rows out.
pub fn features<'scope>(
    partials: StreamVec<'scope, Millis, Partial>,
    settings: &FeatureSettings,
    counters: WindowCounters,
) -> StreamVec<'scope, Millis, FeatureRow> {
    let outputs = windows::windows(partials, settings, counters);
    let (rows, means) = outputs.ok_err(|o| match o {
        WindowOutput::Row(row) => Ok(row),
        WindowOutput::Mean(update) => Err(update),
    });
    if settings.lags.is_empty() {
        return rows;
    }
    rows.concat(lags::lags(means, settings.lags.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_use_fifteen_second_panes() {
        let s = FeatureSettings::default().validate();
        assert!(s.is_ok());
        assert_eq!(FeatureSettings::default().pane(), 15 * SECOND);
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let s = FeatureSettings { lags: vec![90 * SECOND], ..FeatureSettings::default() };
        assert!(matches!(s.validate(), Err(Error::InvalidSetting { field: "features.lags", .. })));
        let s = FeatureSettings {
            sliding: vec![SlidingSpec { width: 25 * MINUTE, slide: 10 * MINUTE }],
            ..FeatureSettings::default()
        };
        assert!(matches!(s.validate(), Err(Error::InvalidSetting { field: "features.sliding", .. })));
        let s = FeatureSettings { tumbling: vec![1500], ..FeatureSettings::default() };
        assert!(matches!(s.validate(), Err(Error::InvalidSetting { field: "features.tumbling", .. })));
        let s = FeatureSettings { lagged: vec![30 * SECOND], ..FeatureSettings::default() };
        assert!(matches!(s.validate(), Err(Error::InvalidSetting { field: "features.lagged", .. })));
        // A lag need only be a multiple of the lagged widths.
        let s = FeatureSettings { lags: vec![90 * SECOND], lagged: vec![15 * SECOND], ..FeatureSettings::default() };
        assert!(s.validate().is_ok());
        let s =
            FeatureSettings { tumbling: vec![MINUTE, 5 * MINUTE], lagged: vec![MINUTE], ..FeatureSettings::default() };
        assert!(s.validate().is_ok());
    }
}
