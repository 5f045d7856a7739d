//! Which offset of a partition may be committed, and what the commit
//! carries so that a restarted job takes up exactly where this one's
//! outputs stopped.
//!
//! A record at event time `t` can change no output once the dataflow's
//! output frontier (its probe) has passed `t + horizon`, where the horizon
//! is the widest window plus one tick: by then every window holding the
//! record has closed, its corrections are over (the watermark passed the
//! window's end) and its forecast has left. [`PartitionProgress`] tracks,
//! per partition, the first offset whose record is not yet done in that
//! sense: that is the committed offset, the point a restart resumes from.
//! Every window still open at the commit holds only records at or after
//! it, so a restarted job rebuilds those windows completely.
//!
//! The commit's metadata ([`CommitMark`]) carries two more numbers: the
//! partition's clock (the largest event time seen before the committed
//! offset), so the restarted job judges lateness exactly as this one did,
//! and the output frontier when it was committed, below which every output
//! row has already been written: the restarted job suppresses those rows
//! instead of writing them twice.

use std::collections::VecDeque;

use prescale_dataflows::time::Millis;

/// The state a commit leaves in a partition's offset metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitMark {
    /// Largest event time seen before the committed offset, if any.
    pub max_seen: Option<Millis>,
    /// Output frontier at the commit: every output row at a timely time
    /// below it was written. 0 means nothing is known to be written.
    pub emitted_below: Millis,
}

impl CommitMark {
    const PREFIX: &'static str = "prescale1";

    /// The metadata string: `prescale1;seen=T;emitted=F` (`seen=-` when
    /// nothing was seen).
    pub fn encode(&self) -> String {
        let seen = self.max_seen.map_or_else(|| "-".to_owned(), |t| t.to_string());
        format!("{};seen={seen};emitted={}", Self::PREFIX, self.emitted_below)
    }

    /// Parses metadata written by [`CommitMark::encode`]; `None` for
    /// anything else (another consumer's commit, or none).
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(';');
        if parts.next()? != Self::PREFIX {
            return None;
        }
        let seen = parts.next()?.strip_prefix("seen=")?;
        let emitted = parts.next()?.strip_prefix("emitted=")?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        let max_seen = if seen == "-" { None } else { Some(seen.parse().ok()?) };
        Some(CommitMark { max_seen, emitted_below: emitted })
    }
}

/// A record that raised the partition's "done at" bound.
#[derive(Clone, Copy, Debug)]
struct Pending {
    offset: i64,
    done_at: Millis,
    seen_before: Option<Millis>,
}

/// One partition's consumed records that may still change an output.
///
/// Only records that raise the running maximum of "done at" are kept: the
/// first record not done is always one of them (every record before it is
/// done, so its bound exceeds theirs), which keeps the queue at about one
/// entry per tick of event time however many records arrive.
#[derive(Clone, Debug)]
pub struct PartitionProgress {
    pending: VecDeque<Pending>,
    /// The offset after the last record consumed.
    next: i64,
    /// Largest event time seen so far.
    max_seen: Option<Millis>,
    running_max: Millis,
}

impl PartitionProgress {
    /// Starts at `offset`, with the clock a commit restored (if any).
    pub fn new(offset: i64, max_seen: Option<Millis>) -> Self {
        PartitionProgress { pending: VecDeque::new(), next: offset, max_seen, running_max: 0 }
    }

    /// Notes the record at `offset` with event time `time` (`None` for a
    /// record that carried no usable time: done at once), whose outputs are
    /// final once the output frontier passes `done_at`.
    pub fn consumed(&mut self, offset: i64, time: Option<Millis>, done_at: Millis) {
        if time.is_some() && done_at > self.running_max {
            self.running_max = done_at;
            self.pending.push_back(Pending { offset, done_at, seen_before: self.max_seen });
        }
        if let Some(t) = time {
            self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
        }
        self.next = offset + 1;
    }

    /// The offset to commit and its mark, given the output frontier
    /// (`None` once the outputs are complete).
    pub fn commit_point(&mut self, frontier: Option<Millis>) -> (i64, CommitMark) {
        while let Some(p) = self.pending.front() {
            if frontier.is_some_and(|f| p.done_at >= f) {
                break;
            }
            self.pending.pop_front();
        }
        let emitted_below = frontier.unwrap_or(Millis::MAX);
        match self.pending.front() {
            Some(p) => (p.offset, CommitMark { max_seen: p.seen_before, emitted_below }),
            None => (self.next, CommitMark { max_seen: self.max_seen, emitted_below }),
        }
    }

    /// The offset after the last record consumed.
    pub fn next_offset(&self) -> i64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_foreign_metadata_is_ignored() {
        for mark in [
            CommitMark { max_seen: None, emitted_below: 0 },
            CommitMark { max_seen: Some(1_767_225_600_000), emitted_below: 1_767_225_000_000 },
        ] {
            assert_eq!(CommitMark::decode(&mark.encode()), Some(mark));
        }
        for foreign in ["", "x", "prescale1;seen=1", "prescale1;seen=a;emitted=2", "prescale1;seen=1;emitted=2;z"] {
            assert_eq!(CommitMark::decode(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn the_commit_point_is_the_first_record_not_done() {
        let mut p = PartitionProgress::new(100, Some(5));
        assert_eq!(p.commit_point(Some(0)), (100, CommitMark { max_seen: Some(5), emitted_below: 0 }));
        // Records at times 10, 30, 20 (out of order), 40; done at t + 10.
        p.consumed(100, Some(10), 20);
        p.consumed(101, Some(30), 40);
        p.consumed(102, Some(20), 30);
        p.consumed(103, None, 0);
        p.consumed(104, Some(40), 50);
        assert_eq!(p.commit_point(Some(15)), (100, CommitMark { max_seen: Some(5), emitted_below: 15 }));
        // Record 100 is done; 101 is not, and 102 (done at 30) waits behind it.
        assert_eq!(p.commit_point(Some(35)), (101, CommitMark { max_seen: Some(10), emitted_below: 35 }));
        assert_eq!(p.commit_point(Some(45)), (104, CommitMark { max_seen: Some(30), emitted_below: 45 }));
        assert_eq!(p.commit_point(None), (105, CommitMark { max_seen: Some(40), emitted_below: Millis::MAX }));
        assert_eq!(p.next_offset(), 105);
    }
}
