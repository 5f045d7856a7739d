//! Readiness and liveness of the job in this process, for `/readyz` and
//! `/healthz`.
//!
//! The job reports into [`Health`]: that it started with so many workers,
//! that each worker built its dataflow and connected its source (with the
//! Kubernetes sink, the PredictiveScaler watcher has listed the scalers
//! before any worker starts), and that it ended. Each worker also runs a
//! [`heartbeat`] operator that timely schedules about every
//! [`BEAT`] while the worker keeps stepping its dataflows; a worker that
//! stops stepping (blocked, or spinning outside timely) goes stale.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::scheduling::Activator;
use timely::worker::Worker;

/// How often a worker's heartbeat operator asks to be scheduled.
pub const BEAT: Duration = Duration::from_secs(1);

/// Where the job is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// No job has started in this process yet.
    #[default]
    Starting,
    /// Workers are running.
    Running,
    /// The job ended; the endpoint may linger for a last scrape.
    Finished,
    /// The job failed.
    Failed,
}

#[derive(Debug, Default)]
struct State {
    phase: Phase,
    stall_timeout: Duration,
    /// Per local worker: ready, and its last heartbeat.
    ready: Vec<bool>,
    beats: Vec<Option<Instant>>,
}

/// The job's health as the endpoint reports it.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

impl Health {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A job with `workers` workers in this process starts; a worker whose
    /// heartbeat is older than `stall_timeout` is stalled.
    pub fn start(&self, workers: usize, stall_timeout: Duration) {
        self.with(|s| {
            *s = State {
                phase: Phase::Running,
                stall_timeout,
                ready: vec![false; workers],
                beats: vec![Some(Instant::now()); workers],
            }
        });
    }

    /// Worker `local` built its dataflow and connected its source.
    pub fn worker_ready(&self, local: usize) {
        self.with(|s| {
            if let Some(r) = s.ready.get_mut(local) {
                *r = true;
            }
        });
    }

    /// Worker `local` is stepping its dataflows.
    pub fn beat(&self, local: usize) {
        self.with(|s| {
            if let Some(b) = s.beats.get_mut(local) {
                *b = Some(Instant::now());
            }
        });
    }

    /// The job ended, well or not.
    pub fn finished(&self, ok: bool) {
        self.with(|s| s.phase = if ok { Phase::Finished } else { Phase::Failed });
    }

    /// `Ok` with a short text when the job takes traffic (every worker is
    /// ready), else why not.
    pub fn readiness(&self) -> Result<String, String> {
        self.with(|s| match s.phase {
            Phase::Running => {
                let waiting = s.ready.iter().filter(|r| !**r).count();
                if waiting == 0 {
                    Ok(format!("ready: {} workers running", s.ready.len()))
                } else {
                    Err(format!("starting: {waiting} of {} workers not ready", s.ready.len()))
                }
            }
            Phase::Starting => Err("starting".into()),
            Phase::Finished => Err("finished".into()),
            Phase::Failed => Err("failed".into()),
        })
    }

    /// `Ok` while the workers are alive and stepping (and after a job that
    /// ended well), else why not.
    pub fn liveness(&self) -> Result<String, String> {
        self.with(|s| match s.phase {
            Phase::Failed => Err("the job failed".into()),
            Phase::Finished => Ok("finished".into()),
            Phase::Starting => Ok("starting".into()),
            Phase::Running => {
                let now = Instant::now();
                let stalled: Vec<String> = s
                    .beats
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.is_some_and(|b| now.duration_since(b) > s.stall_timeout))
                    .map(|(i, _)| i.to_string())
                    .collect();
                if stalled.is_empty() {
                    Ok(format!("alive: {} workers stepping", s.beats.len()))
                } else {
                    Err(format!("stalled workers: {} (no step for {:?})", stalled.join(", "), s.stall_timeout))
                }
            }
        })
    }
}

/// A worker's heartbeat operator; stopping it (or dropping this) lets its
/// dataflow complete, so that the worker can end.
pub struct Heartbeat {
    stop: Rc<Cell<bool>>,
    activator: Activator,
}

impl Heartbeat {
    /// Stops the heartbeat: its operator completes the next time the
    /// worker steps.
    pub fn stop(&self) {
        self.stop.set(true);
        self.activator.activate();
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a dataflow on `worker` whose one operator records a beat for
/// worker `local` every time timely schedules it, and asks to be scheduled
/// again after [`BEAT`]. It has no inputs or outputs: it never holds back
/// another dataflow's frontier.
pub fn heartbeat(worker: &mut Worker, health: &'static Health, local: usize) -> Heartbeat {
    let stop = Rc::new(Cell::new(false));
    let stopped = Rc::clone(&stop);
    let activator = worker.dataflow::<u64, _, _>(move |scope| {
        let builder = OperatorBuilder::new("Heartbeat".into(), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let again = activator.clone();
        builder.build_reschedule(move |_capabilities| {
            move |_frontiers| {
                if stopped.get() {
                    return false;
                }
                health.beat(local);
                again.activate_after(BEAT);
                true
            }
        });
        activator
    });
    activator.activate();
    Heartbeat { stop, activator }
}
