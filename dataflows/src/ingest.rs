//! The entry into the dataflow: samples in, per-pane partials out.
//!
//! The host's sources judge each sample with their partition's clock
//! ([`crate::event_time`]) and push it here with the timely timestamp it
//! travels at. [`Ingest`] combines samples of the same series, pane and
//! timestamp into one [`Partial`] before anything is exchanged between
//! workers, so the exchange carries one partial per series and pane
//! instead of every sample: the per-sample work is one hash lookup and an
//! exact add. Rejected records enter on a second input, at the current
//! frontier, to reach the dead-letter output.

use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::operators::core::unordered_input::{UnorderedHandle, UnorderedInput};
use timely::dataflow::{Scope, StreamVec};

use crate::features::{PaneAgg, Partial};
use crate::record::{RejectReason, Rejected, Sample};
use crate::time::Millis;

type Handle<D> = UnorderedHandle<Millis, CapacityContainerBuilder<Vec<D>>>;

/// The two inputs of a dataflow, created inside `worker.dataflow`.
pub struct IngestInputs {
    partials: (Handle<Partial>, ActivateCapability<Millis>),
    rejected: (Handle<Rejected>, ActivateCapability<Millis>),
}

/// Creates the inputs; returns them with the partials and rejected streams.
pub fn inputs<'scope>(
    scope: &Scope<'scope, Millis>,
) -> (IngestInputs, StreamVec<'scope, Millis, Partial>, StreamVec<'scope, Millis, Rejected>) {
    let (partials, partial_stream) = scope.new_unordered_input::<CapacityContainerBuilder<Vec<Partial>>>();
    let (rejected, rejected_stream) = scope.new_unordered_input::<CapacityContainerBuilder<Vec<Rejected>>>();
    (IngestInputs { partials, rejected }, partial_stream, rejected_stream)
}

/// Counts of what one worker's ingest took in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Samples accepted into the dataflow.
    pub used: u64,
    /// Rejected records by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::ALL.len()],
}

impl IngestStats {
    /// Records rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

/// Feeds one worker's samples into the dataflow.
pub struct Ingest {
    inputs: Option<IngestInputs>,
    pane: Millis,
    frontier: Millis,
    /// (timestamp, pane start, series hash) → the partial being built.
    pending: FxHashMap<(Millis, Millis, u64), Partial>,
    /// Partials whose series hash collided with another series'.
    overflow: Vec<(Millis, Partial)>,
    rejected: Vec<Rejected>,
    stats: IngestStats,
}

impl Ingest {
    /// Wraps the inputs; `pane` is [`crate::features::FeatureSettings::pane`].
    pub fn new(inputs: IngestInputs, pane: Millis) -> Self {
        Ingest {
            inputs: Some(inputs),
            pane: pane.max(1),
            frontier: 0,
            pending: FxHashMap::default(),
            overflow: Vec::new(),
            rejected: Vec::new(),
            stats: IngestStats::default(),
        }
    }

    /// The smallest timestamp a sample may still be pushed at.
    pub fn frontier(&self) -> Millis {
        self.frontier
    }

    /// What this worker has taken in so far.
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Pushes a sample that travels at timestamp `at` (its partition's
    /// watermark tick, at most its event time). A timestamp behind the
    /// frontier means the caller's clock disagrees with what it already
    /// promised; the sample is then rejected as late rather than corrupting
    /// a window that may be final.
    pub fn push(&mut self, at: Millis, sample: Sample) {
        if at < self.frontier || at > sample.time {
            let detail = format!("timestamp {at} behind ingest frontier {}", self.frontier);
            self.stats.rejected[RejectReason::Late.index()] += 1;
            self.rejected.push(Rejected::new(
                RejectReason::Late,
                detail,
                crate::Origin { source: "ingest".into(), partition: 0, offset: 0 },
                &format!("{} {} {}", sample.series, sample.time, sample.value),
            ));
            return;
        }
        self.stats.used += 1;
        let pane_start = sample.time - sample.time % self.pane;
        let key = (at, pane_start, sample.series.route());
        match self.pending.get_mut(&key) {
            Some(p) if p.series == sample.series => p.agg.add(sample.value, sample.pod),
            Some(_) => {
                let found = self
                    .overflow
                    .iter_mut()
                    .find(|(t, p)| *t == at && p.pane_start == pane_start && p.series == sample.series);
                match found {
                    Some((_, p)) => p.agg.add(sample.value, sample.pod),
                    None => self.overflow.push((
                        at,
                        Partial { series: sample.series, pane_start, agg: PaneAgg::of(sample.value, sample.pod) },
                    )),
                }
            }
            None => {
                self.pending.insert(
                    key,
                    Partial { series: sample.series, pane_start, agg: PaneAgg::of(sample.value, sample.pod) },
                );
            }
        }
    }

    /// Records a rejected record; it enters the rejected output at the
    /// current frontier.
    pub fn reject(&mut self, rejected: Rejected) {
        self.stats.rejected[rejected.reason.index()] += 1;
        self.rejected.push(rejected);
    }

    /// Sends a rejection, if there is one ([`crate::event_time::Arrival::rejection`]).
    pub fn reject_if_any(&mut self, rejected: Option<Rejected>) {
        if let Some(r) = rejected {
            self.reject(r);
        }
    }

    /// Sends everything pushed so far into the dataflow.
    pub fn flush(&mut self) {
        let Some(inputs) = &mut self.inputs else { return };
        let (handle, cap) = &mut inputs.partials;
        let mut batch: Vec<(Millis, Partial)> =
            self.pending.drain().map(|((at, _, _), p)| (at, p)).chain(self.overflow.drain(..)).collect();
        batch.sort_unstable_by_key(|(at, _)| *at);
        let mut batch = batch.into_iter().peekable();
        while let Some(&(at, _)) = batch.peek() {
            let at_cap = cap.delayed(&at);
            let mut activated = handle.activate();
            let mut session = activated.session(&at_cap);
            while let Some((_, partial)) = batch.next_if(|(t, _)| *t == at) {
                session.give(partial);
            }
        }
        if !self.rejected.is_empty() {
            let (handle, cap) = &mut inputs.rejected;
            handle.activate().session(&*cap).give_iterator(self.rejected.drain(..));
        }
    }

    /// Flushes, then promises that nothing earlier than `time` will be
    /// pushed: the frontier moves and windows before it can close.
    pub fn advance_to(&mut self, time: Millis) {
        self.flush();
        if time <= self.frontier {
            return;
        }
        self.frontier = time;
        if let Some(inputs) = &mut self.inputs {
            inputs.partials.1.downgrade(&time);
            inputs.rejected.1.downgrade(&time);
        }
    }

    /// Flushes and closes the inputs: every window can now be finalised.
    pub fn close(&mut self) {
        self.flush();
        self.inputs = None;
    }
}
