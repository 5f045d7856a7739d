//! Event time and watermarks, per source partition.
//!
//! A source is a set of partitions (Kafka partitions, generator
//! deployments, the series of a replayed file), each an ordered sequence of
//! records. Each partition has a [`PartitionClock`]: its watermark is the
//! largest event time it has seen minus the allowed lateness. A record
//! behind the watermark is *late*: the windows it belongs to may already be
//! final, so it is rejected with reason `late` rather than silently
//! dropped. Any other record travels through the dataflow at a timely
//! timestamp equal to the partition's watermark, rounded down to a tick;
//! the source's capability is the smallest of its partitions' watermarks,
//! and timely's frontier carries it downstream.
//!
//! A record far from the partition's event time (more than `max_jump`
//! ahead, or a unit or zone switch either way) is judged by the
//! data-quality gate ([`crate::quality`]): it is rejected with a flag for
//! its series and does not move the watermark, so one bad producer cannot
//! make every later record late. A forward jump that the records keep
//! agreeing on for `confirm_jump` of their own event time is accepted as
//! the stream's new time (a producer back after an outage), unless it is a
//! unit switch, which is never right. Exact duplicates (same series, pod
//! and event time as a record still within the lateness) are rejected as
//! `duplicate`; the first one wins.
//!
//! Because lateness is judged within a partition, in the partition's own
//! order, which records are late does not depend on how partitions are
//! spread over workers: the same input gives the same result with any
//! number of workers and processes.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use crate::error::{Error, Result};
use crate::quality::{self, Flag, Issue};
use crate::record::{Origin, RejectReason, Rejected, Sample};
use crate::time::{HOUR, MINUTE, Millis, SECOND, format_duration};

/// How event time advances; part of the job config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTimeSettings {
    /// How far behind the largest event time seen a record may be and still
    /// be used (default 30 s).
    pub lateness: Millis,
    /// Granularity of timely timestamps (default 1 s): watermarks are
    /// rounded down to it, so one tick's records share one timestamp.
    pub tick: Millis,
    /// How far ahead of the largest event time seen a record may be before
    /// the data-quality gate judges it (default 1 h).
    pub max_jump: Millis,
    /// How much of their own event time records beyond a jump must span,
    /// agreeing with each other, before the jump is accepted as the
    /// stream's new time (default 10 min).
    pub confirm_jump: Millis,
}

impl Default for EventTimeSettings {
    fn default() -> Self {
        EventTimeSettings { lateness: 30 * SECOND, tick: SECOND, max_jump: HOUR, confirm_jump: 10 * MINUTE }
    }
}

impl EventTimeSettings {
    /// Checks the settings.
    pub fn validate(self) -> Result<Self> {
        if self.tick == 0 {
            return Err(Error::InvalidSetting { field: "event_time.tick", reason: "must be at least 1ms".into() });
        }
        if self.max_jump <= self.lateness {
            return Err(Error::InvalidSetting {
                field: "event_time.max_jump",
                reason: format!("must exceed the lateness ({})", format_duration(self.lateness)),
            });
        }
        Ok(self)
    }
}

/// The verdict on one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Use it; it travels at this timely timestamp (≤ its event time).
    OnTime(Millis),
    /// Behind the watermark, which is given.
    Late {
        /// The partition's watermark when the record arrived.
        watermark: Millis,
    },
    /// The same series, pod and event time as a record already used.
    Duplicate,
    /// Rejected by the data-quality gate: a timestamp that cannot be this
    /// partition's time.
    Flagged {
        /// What is wrong.
        issue: Issue,
        /// Whether it is behind the watermark (rejected as `late`) rather
        /// than ahead (`bad-timestamp`).
        behind: bool,
        /// The largest event time the partition trusted.
        seen: Millis,
    },
    /// Beyond any plausible date (after 2200): garbage or a unit mistake
    /// on the very first record.
    Implausible,
}

impl Arrival {
    /// The rejection for a sample that is not used, `None` for one that
    /// is. `raw` is the record's text (or a rendering of a binary one).
    pub fn rejection(&self, sample: &Sample, origin: Origin, raw: &str) -> Option<Rejected> {
        let t = sample.time;
        let (reason, detail, flag) = match *self {
            Arrival::OnTime(_) => return None,
            Arrival::Late { watermark } => {
                (RejectReason::Late, format!("event time {t} behind watermark {watermark} of {}", sample.series), None)
            }
            Arrival::Duplicate => (
                RejectReason::Duplicate,
                format!("a second sample of {} for pod {:x} at {t}", sample.series, sample.pod),
                None,
            ),
            Arrival::Implausible => {
                (RejectReason::BadTimestamp, format!("event time {t} is after 2200: not a time in milliseconds"), None)
            }
            Arrival::Flagged { issue, behind, seen } => {
                let flag = Flag { series: sample.series.key().clone(), issue, at_ms: seen };
                let reason = if behind { RejectReason::Late } else { RejectReason::BadTimestamp };
                (
                    reason,
                    format!("event time {t} against {seen} of {}: {}", sample.series, issue.describe()),
                    Some(flag),
                )
            }
        };
        let mut rejected = Rejected::new(reason, detail, origin, raw);
        rejected.flag = flag.map(Box::new);
        Some(rejected)
    }
}

/// Records seen recently, by event time, to tell exact duplicates.
#[derive(Clone, Debug, Default)]
struct Recent {
    by_time: BTreeMap<Millis, FxHashSet<(u64, u64)>>,
}

impl Recent {
    /// Whether (series, pod) was already seen at `t`; remembers it if not.
    fn repeated(&mut self, t: Millis, series: u64, pod: u64) -> bool {
        !self.by_time.entry(t).or_default().insert((series, pod))
    }

    /// Forgets the times below the watermark: records there are late.
    fn forget_before(&mut self, watermark: Millis) {
        if self.by_time.first_key_value().is_some_and(|(t, _)| *t < watermark) {
            self.by_time = self.by_time.split_off(&watermark);
        }
    }
}

/// The watermark of one partition.
#[derive(Clone, Debug)]
pub struct PartitionClock {
    settings: EventTimeSettings,
    max_seen: Option<Millis>,
    /// Records beyond a forward jump, agreeing with each other: the first
    /// and latest event time of the run.
    jump: Option<(Millis, Millis, Issue)>,
    /// After a unit switch: the latest event time of the switched records,
    /// converted back to this partition's unit.
    unit: Option<Millis>,
    recent: Recent,
}

impl PartitionClock {
    /// A clock that has seen nothing yet.
    pub fn new(settings: EventTimeSettings) -> Self {
        PartitionClock { settings, max_seen: None, jump: None, unit: None, recent: Recent::default() }
    }

    /// Max event time seen minus lateness; `None` before the first record.
    pub fn watermark(&self) -> Option<Millis> {
        self.max_seen.map(|m| m.saturating_sub(self.settings.lateness))
    }

    /// The watermark rounded down to a tick: the smallest timely timestamp
    /// this partition can still send at.
    pub fn tick(&self) -> Option<Millis> {
        self.watermark().map(|w| w - w % self.settings.tick)
    }

    /// Judges one sample: the data-quality gate on its timestamp, then
    /// duplicates, then lateness. Advances the clock when it is used.
    pub fn admit(&mut self, sample: &Sample) -> Arrival {
        let t = sample.time;
        let max_jump = self.settings.max_jump;
        // Records in the other unit keep being recognised as the stream
        // goes on, though the watermark they are compared with stands still.
        if let Some(unit) = self.unit
            && [t / 1000, t.saturating_mul(1000)].iter().any(|c| c.abs_diff(unit) <= max_jump)
        {
            self.unit = Some(unit.max(if t > unit { t / 1000 } else { t.saturating_mul(1000) }));
            let seen = self.max_seen.unwrap_or(0);
            return Arrival::Flagged { issue: Issue::TimestampUnit, behind: t < seen, seen };
        }
        let Some(seen) = self.max_seen else {
            return if quality::implausible(t) { Arrival::Implausible } else { self.accept(sample) };
        };
        if t <= seen + max_jump && t + max_jump >= seen {
            return self.accept(sample);
        }
        let ahead = t > seen;
        match quality::classify(t, seen, max_jump) {
            Some(Issue::TimestampUnit) => {
                self.unit = Some(if ahead { t / 1000 } else { t.saturating_mul(1000) });
                Arrival::Flagged { issue: Issue::TimestampUnit, behind: !ahead, seen }
            }
            // A run of records agreeing on a new time ahead, for long
            // enough, is the stream's time now; the run keeps the issue its
            // first record was judged to have.
            Some(issue) if ahead && !quality::implausible(t) => {
                let (first, last, issue) = match self.jump {
                    Some((first, last, issue)) if t.abs_diff(last) <= max_jump => (first, last.max(t), issue),
                    _ => (t, t, issue),
                };
                if last - first < self.settings.confirm_jump {
                    self.jump = Some((first, last, issue));
                    return Arrival::Flagged { issue, behind: false, seen };
                }
                self.jump = None;
                self.max_seen = Some(last);
                self.accept(sample)
            }
            Some(issue) => Arrival::Flagged { issue, behind: !ahead, seen },
            None if quality::implausible(t) => Arrival::Implausible,
            None => self.accept(sample),
        }
    }

    /// Places a decoder's unit-switch flag in this partition's time: a
    /// record whose timestamp only makes sense in another unit carries that
    /// reading in `at_ms`; the flag stays (at the partition's time) when
    /// the reading is near the partition's time, and is dropped otherwise
    /// (then it is just a bad timestamp).
    pub fn place(&mut self, rejected: &mut Rejected) {
        let Some(flag) = rejected.flag.as_deref_mut() else { return };
        let max_jump = self.settings.max_jump;
        let reading = flag.at_ms;
        let near = |t: Option<Millis>| t.is_some_and(|t| t.abs_diff(reading) <= max_jump);
        match self.max_seen {
            Some(seen) if near(Some(seen)) || near(self.unit) => {
                flag.at_ms = seen;
                self.unit = Some(self.unit.map_or(reading, |u| u.max(reading)));
            }
            _ => rejected.flag = None,
        }
    }

    /// Lateness, then duplicates, for a record whose time is plausible.
    fn accept(&mut self, sample: &Sample) -> Arrival {
        let t = sample.time;
        if let Some(watermark) = self.watermark()
            && t < watermark
        {
            return Arrival::Late { watermark };
        }
        if self.recent.repeated(t, sample.series.route(), sample.pod) {
            return Arrival::Duplicate;
        }
        let arrival = self.observe(t);
        // A record in the stream's time breaks any run beyond a jump.
        if t <= self.max_seen.unwrap_or(t) && self.jump.is_some_and(|(first, _, _)| t < first) {
            self.jump = None;
        }
        if let Some(watermark) = self.watermark() {
            self.recent.forget_before(watermark);
        }
        arrival
    }

    /// Judges one record with event time `t` by lateness alone and
    /// advances the clock (used to restore a clock, and by [`Self::admit`]).
    pub fn observe(&mut self, t: Millis) -> Arrival {
        if let Some(watermark) = self.watermark()
            && t < watermark
        {
            return Arrival::Late { watermark };
        }
        self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
        // Unwrap-free: max_seen was just set.
        let tick = self.tick().unwrap_or(0);
        Arrival::OnTime(tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_behind_the_watermark_are_late() {
        let mut c =
            PartitionClock::new(EventTimeSettings { lateness: 30_000, tick: 1_000, ..EventTimeSettings::default() });
        assert_eq!(c.tick(), None);
        assert_eq!(c.observe(100_500), Arrival::OnTime(70_000));
        // Out of order but within lateness: on time, at the current tick.
        assert_eq!(c.observe(80_000), Arrival::OnTime(70_000));
        assert_eq!(c.observe(70_500), Arrival::OnTime(70_000));
        assert_eq!(c.observe(70_499), Arrival::Late { watermark: 70_500 });
        assert_eq!(c.observe(200_000), Arrival::OnTime(170_000));
        assert_eq!(c.observe(100_000), Arrival::Late { watermark: 170_000 });
        // Early times never underflow.
        let mut c = PartitionClock::new(EventTimeSettings::default());
        assert_eq!(c.observe(5), Arrival::OnTime(0));
        assert_eq!(c.observe(0), Arrival::OnTime(0));
    }

    fn sample(time: Millis, pod: u64) -> Sample {
        let series = crate::record::Series::new(crate::record::SeriesKey {
            namespace: "ns".into(),
            deployment: "web".into(),
            metric: "rps".into(),
        });
        Sample { time, series, pod, value: 1.0 }
    }

    #[test]
    fn a_switch_to_milliseconds_is_flagged_and_never_moves_the_watermark() {
        let mut c = PartitionClock::new(EventTimeSettings::default());
        let t = 1_700_000_000_000;
        assert_eq!(c.admit(&sample(t, 1)), Arrival::OnTime(t - 30_000));
        for k in 1..1000 {
            // Seconds written as milliseconds, read as seconds by the decoder.
            let bad = (t + k * 15_000) * 1000;
            let a = c.admit(&sample(bad, 1));
            assert!(matches!(a, Arrival::Flagged { issue: Issue::TimestampUnit, behind: false, .. }), "{a:?}");
        }
        assert_eq!(c.watermark(), Some(t - 30_000));
        let r = c.admit(&sample(t * 1000, 2)).rejection(&sample(t * 1000, 2), origin(), "raw");
        let r = r.expect("rejected");
        assert_eq!(
            (r.reason, r.flag.map(|f| (f.issue, f.at_ms))),
            (RejectReason::BadTimestamp, Some((Issue::TimestampUnit, t)))
        );
        // A first record beyond 2200 cannot set the clock.
        let mut c = PartitionClock::new(EventTimeSettings::default());
        assert_eq!(c.admit(&sample(t * 1000, 1)), Arrival::Implausible);
        assert_eq!(c.watermark(), None);
    }

    #[test]
    fn a_jump_ahead_is_accepted_only_once_records_agree_on_it_for_long_enough() {
        let s = EventTimeSettings::default();
        let mut c = PartitionClock::new(s);
        let t = 1_700_000_000_000;
        c.admit(&sample(t, 1));
        // Two hours ahead: a zone shift, flagged until ten minutes of
        // records agree on it.
        let shifted = t + 2 * HOUR;
        let mut accepted_at = None;
        for k in 0..100 {
            let a = c.admit(&sample(shifted + k * 15_000, 1));
            match a {
                Arrival::Flagged { issue: Issue::TimestampShift, .. } => assert!(accepted_at.is_none()),
                Arrival::OnTime(_) => {
                    accepted_at.get_or_insert(k * 15_000);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(accepted_at, Some(s.confirm_jump));
        // Interleaved with records in the stream's time, a jump never wins.
        let mut c = PartitionClock::new(s);
        c.admit(&sample(t, 1));
        for k in 0..100 {
            assert!(matches!(c.admit(&sample(t + 3 * HOUR + 7 * MINUTE + k * 15_000, 1)), Arrival::Flagged { .. }));
            assert!(matches!(c.admit(&sample(t + k * 15_000 + 1, 2)), Arrival::OnTime(_)));
        }
    }

    #[test]
    fn exact_duplicates_are_rejected_and_the_first_wins() {
        let mut c = PartitionClock::new(EventTimeSettings::default());
        assert!(matches!(c.admit(&sample(100_000, 1)), Arrival::OnTime(_)));
        assert_eq!(c.admit(&sample(100_000, 1)), Arrival::Duplicate);
        assert!(matches!(c.admit(&sample(100_000, 2)), Arrival::OnTime(_)));
        assert!(matches!(c.admit(&sample(90_000, 1)), Arrival::OnTime(_)));
        assert_eq!(c.admit(&sample(90_000, 1)), Arrival::Duplicate);
        // Behind the watermark it is late, whatever it repeats.
        c.admit(&sample(200_000, 1));
        assert!(matches!(c.admit(&sample(100_000, 1)), Arrival::Late { .. }));
    }

    fn origin() -> Origin {
        Origin { source: "test".into(), partition: 0, offset: 1 }
    }

    #[test]
    fn zero_tick_is_refused() {
        let s = EventTimeSettings { lateness: 0, tick: 0, ..EventTimeSettings::default() };
        assert!(s.validate().is_err());
    }
}
