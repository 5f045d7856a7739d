//! Sources: where records come from, and how they are fed to a worker.
//!
//! Every source is a set of partitions, each read in its own order and
//! judged by its own [`PartitionClock`](prescale_dataflows::event_time::PartitionClock);
//! a worker reads a fixed share of them, so the result does not depend on
//! the number of workers. [`Feed`] is the worker's side of the loop: push
//! samples, advance the frontier, and step the dataflow so that the source
//! never runs far ahead of what has been processed (bounded memory).

pub mod generator;
pub mod replay;

use std::time::{Duration, Instant};

use prescale_dataflows::ingest::Ingest;
use prescale_dataflows::time::{Millis, format_datetime};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

/// The longest a worker waiting on others parks before looking again.
/// Timely wakes a parked worker when data or progress arrives; the bound
/// only guards against a missed wake-up. Spinning instead would starve the
/// other workers whenever there are more workers than cores.
pub const PARK: Duration = Duration::from_millis(1);

/// A worker, its ingest and the probe of its dataflow.
pub struct Feed<'a> {
    /// The timely worker.
    pub worker: &'a mut Worker,
    /// The dataflow's entry.
    pub ingest: &'a mut Ingest,
    /// Progress of the dataflow's outputs.
    pub probe: &'a ProbeHandle<Millis>,
    /// How far (in event time) inputs may run ahead of processed outputs.
    pub slack: Millis,
    last_progress: Instant,
    /// Called with the ingest frontier each time it advances, and with
    /// `None` when the source ends, for inputs that travel alongside the
    /// records (the PredictiveScaler specs).
    on_advance: Option<&'a mut dyn FnMut(Option<Millis>)>,
}

impl<'a> Feed<'a> {
    /// Wraps a worker's parts.
    pub fn new(worker: &'a mut Worker, ingest: &'a mut Ingest, probe: &'a ProbeHandle<Millis>, slack: Millis) -> Self {
        Feed { worker, ingest, probe, slack, last_progress: Instant::now(), on_advance: None }
    }

    /// Calls `hook` with the ingest frontier whenever it advances, before
    /// the dataflow is stepped, and with `None` when the source ends: an
    /// input kept at that frontier and closed with the source never holds
    /// the dataflow back.
    pub fn on_advance(mut self, hook: &'a mut dyn FnMut(Option<Millis>)) -> Self {
        self.on_advance = Some(hook);
        self
    }

    /// Ends the input: closes the ingest and the inputs that travel with
    /// it. Waiting for the outputs afterwards cannot deadlock on them.
    pub fn finish(&mut self) {
        if let Some(hook) = &mut self.on_advance {
            hook(None);
        }
        self.ingest.close();
    }

    /// Advances the ingest frontier to `time` and steps the dataflow until
    /// it has caught up to within the slack.
    pub fn advance_to(&mut self, time: Millis) {
        self.ingest.advance_to(time);
        if let Some(hook) = &mut self.on_advance {
            hook(Some(self.ingest.frontier()));
        }
        let target = self.ingest.frontier().saturating_sub(self.slack);
        while self.probe.less_than(&target) {
            self.worker.step_or_park(Some(PARK));
        }
        if self.worker.index() == 0 && self.last_progress.elapsed() > Duration::from_secs(5) {
            self.last_progress = Instant::now();
            let s = self.ingest.stats();
            eprintln!(
                "progress: event time {}  used {}  rejected {}",
                format_datetime(time),
                s.used,
                s.rejected_total()
            );
        }
    }

    /// Steps the dataflow until `deadline`, for paced replays.
    pub fn wait_until(&mut self, deadline: Instant) {
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.worker.step_or_park(Some(left.min(Duration::from_millis(10))));
        }
    }
}
