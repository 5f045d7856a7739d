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
//! Because lateness is judged within a partition, in the partition's own
//! order, which records are late does not depend on how partitions are
//! spread over workers: the same input gives the same result with any
//! number of workers and processes.

use crate::error::{Error, Result};
use crate::time::{Millis, SECOND};

/// How event time advances; part of the job config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTimeSettings {
    /// How far behind the largest event time seen a record may be and still
    /// be used (default 30 s).
    pub lateness: Millis,
    /// Granularity of timely timestamps (default 1 s): watermarks are
    /// rounded down to it, so one tick's records share one timestamp.
    pub tick: Millis,
}

impl Default for EventTimeSettings {
    fn default() -> Self {
        EventTimeSettings { lateness: 30 * SECOND, tick: SECOND }
    }
}

impl EventTimeSettings {
    /// Checks the settings.
    pub fn validate(self) -> Result<Self> {
        if self.tick == 0 {
            return Err(Error::InvalidSetting { field: "event_time.tick", reason: "must be at least 1ms".into() });
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
}

/// The watermark of one partition.
#[derive(Clone, Debug)]
pub struct PartitionClock {
    settings: EventTimeSettings,
    max_seen: Option<Millis>,
}

impl PartitionClock {
    /// A clock that has seen nothing yet.
    pub fn new(settings: EventTimeSettings) -> Self {
        PartitionClock { settings, max_seen: None }
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

    /// Judges one record with event time `t` and advances the clock.
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
        let mut c = PartitionClock::new(EventTimeSettings { lateness: 30_000, tick: 1_000 });
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

    #[test]
    fn zero_tick_is_refused() {
        let s = EventTimeSettings { lateness: 0, tick: 0 };
        assert!(s.validate().is_err());
    }
}
