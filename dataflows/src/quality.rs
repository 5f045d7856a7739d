//! The data-quality gate: what bad input says about a deployment, before
//! any model sees it.
//!
//! A predictive scaler that trusts garbage scales production to its
//! minimum: a producer switching its timestamps from seconds to
//! milliseconds, or from UTC to local time, makes every later record look
//! hours or centuries away, and a model fed on that misreads the seasons.
//! The gate works in two places:
//!
//! - each source partition's clock ([`crate::event_time::PartitionClock`])
//!   asks [`classify`] about a record far from the partition's event time;
//!   such a record is rejected (`bad-timestamp`, or `late` when it is far
//!   behind) and never moves the watermark, and its rejection carries a
//!   [`Flag`] naming the series and the [`Issue`];
//! - [`flags`] turns the flags of rejected records into a stream the decide
//!   stage takes in by series: a flagged series is held in reactive
//!   fallback (`fallback:timestamp-unit`, …), never scaled down on that
//!   evidence, until its data has been healthy again for the scaler's
//!   `recover_after`.
//!
//! The other symptoms the gate covers are judged where their evidence is:
//! a stream that stops (`fallback:stale`) and a sudden gap
//! (`fallback:gap`) by the decide stage's clock, loads that jump by orders
//! of magnitude (`fallback:jump`) against the scaler's slow level, and a
//! deployment whose pods vanish from the metrics while it has replicas
//! (`fallback:pods-missing`) against the replicas the scaler set.

use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;

use crate::record::{Rejected, SeriesKey};
use crate::time::{MINUTE, Millis};

/// What is wrong with a series' data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Issue {
    /// Timestamps a thousand times too large or too small: a switch between
    /// seconds and milliseconds.
    TimestampUnit,
    /// Timestamps off by a whole number of half-hours: a switch between UTC
    /// and local time, or a clock set to the wrong zone.
    TimestampShift,
    /// Timestamps far ahead of the partition's event time for no reason
    /// the gate can name.
    TimestampJump,
}

impl Issue {
    /// Every issue, in a fixed order for reports and metrics.
    pub const ALL: [Issue; 3] = [Issue::TimestampUnit, Issue::TimestampShift, Issue::TimestampJump];

    /// The kebab-case name used in fallback reasons and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Issue::TimestampUnit => "timestamp-unit",
            Issue::TimestampShift => "timestamp-shift",
            Issue::TimestampJump => "timestamp-jump",
        }
    }

    /// A sentence for decision details and status messages.
    pub fn describe(self) -> &'static str {
        match self {
            Issue::TimestampUnit => "timestamps switched unit (seconds vs milliseconds)",
            Issue::TimestampShift => "timestamps shifted by whole half-hours (a time zone change)",
            Issue::TimestampJump => "timestamps jumped far ahead of the stream",
        }
    }
}

/// What a rejected record says about its series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// The series the record was for.
    pub series: SeriesKey,
    /// What is wrong.
    pub issue: Issue,
    /// The partition's latest trusted event time when the record came: the
    /// "now" the problem was seen at.
    pub at_ms: Millis,
}

/// The latest plausible event time, 2200-01-01: a larger timestamp is a
/// unit mistake (milliseconds read as seconds) or garbage.
pub const LATEST_PLAUSIBLE: Millis = 7_258_118_400_000;

/// How close to a whole number of half-hours an offset must be to count as
/// a zone shift: records of one moment arrive over about a scrape interval.
const SHIFT_TOLERANCE: Millis = 5 * MINUTE;

/// Judges a record at event time `t` that is more than `max_jump` away from
/// `seen`, the largest event time its partition has trusted: a unit
/// switch, a zone shift, or (ahead only) an unexplained jump. `None` for a
/// record behind that is merely late.
pub fn classify(t: Millis, seen: Millis, max_jump: Millis) -> Option<Issue> {
    let near = |x: Millis| x.abs_diff(seen) <= max_jump;
    if near(t / 1000) || near(t.saturating_mul(1000)) {
        return Some(Issue::TimestampUnit);
    }
    let offset = t.abs_diff(seen);
    let half_hours = (offset + 15 * MINUTE) / (30 * MINUTE);
    if (1..=2 * 26).contains(&half_hours) && offset.abs_diff(half_hours * 30 * MINUTE) <= SHIFT_TOLERANCE {
        return Some(Issue::TimestampShift);
    }
    (t > seen).then_some(Issue::TimestampJump)
}

/// Whether `t` cannot be a real event time at all.
pub fn implausible(t: Millis) -> bool {
    t > LATEST_PLAUSIBLE
}

/// The flags of rejected records, for [`crate::decide::decisions`]. Runs
/// on the worker that rejected them; the decide stage routes them to the
/// worker owning the series.
pub fn flags<'scope>(rejected: StreamVec<'scope, Millis, Rejected>) -> StreamVec<'scope, Millis, Flag> {
    rejected.flat_map(|r| r.flag.map(|f| *f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{DAY, HOUR, SECOND};

    const NOW: Millis = 1_700_000_000_000;

    #[test]
    fn milliseconds_read_as_seconds_and_back_are_unit_switches() {
        // A CSV switching to milliseconds: the decoder reads ms as seconds.
        assert_eq!(classify(NOW * 1000, NOW, HOUR), Some(Issue::TimestampUnit));
        assert_eq!(classify((NOW + 5 * SECOND) * 1000, NOW, HOUR), Some(Issue::TimestampUnit));
        // A millisecond source switching to seconds.
        assert_eq!(classify(NOW / 1000, NOW, HOUR), Some(Issue::TimestampUnit));
        // Traces whose clock starts at zero: three days in, then ms.
        assert_eq!(classify(3 * DAY * 1000, 3 * DAY, HOUR), Some(Issue::TimestampUnit));
    }

    #[test]
    fn whole_hour_offsets_are_zone_shifts_and_others_jumps() {
        assert_eq!(classify(NOW + 2 * HOUR + 20 * SECOND, NOW, HOUR), Some(Issue::TimestampShift));
        assert_eq!(classify(NOW - 5 * HOUR - 30 * MINUTE, NOW, HOUR), Some(Issue::TimestampShift));
        assert_eq!(classify(NOW + 2 * HOUR + 15 * MINUTE, NOW, HOUR), Some(Issue::TimestampJump));
        assert_eq!(classify(NOW + 40 * DAY, NOW, HOUR), Some(Issue::TimestampJump));
        // Far behind and not a whole number of half-hours: just late.
        assert_eq!(classify(NOW - 3 * HOUR - 13 * MINUTE, NOW, HOUR), None);
        assert!(implausible(NOW * 1000) && !implausible(NOW));
    }
}
