//! A simulated cluster for backtests: one deployment, its pods, its load,
//! and a scaling policy deciding every tick.
//!
//! Load enters as a [`Load`] (a trace's values per step, held constant
//! within a step); a [`Policy`] is asked for a replica count every tick
//! (15 s by default, the HPA's sync period); pods asked for become ready
//! after the start-up delay, and pods removed go at once, the not-yet-ready
//! ones first (as a ReplicaSet picks them). What leaves is an [`Outcome`]:
//! replica-hours (every pod costs from the moment it is asked for),
//! minutes under-provisioned (load above ready capacity × the SLO
//! utilisation), scale events, and the p99 response time under the
//! [`latency`] model.
//!
//! The policies: [`Schedule`] replays prescale's decisions, [`hpa::Hpa`]
//! is the Kubernetes HPA algorithm, [`oracle::Oracle`] has perfect
//! foresight, [`oracle::Static`] holds the peak count.

pub mod hpa;
pub mod latency;
pub mod oracle;

use prescale_dataflows::time::{Millis, SECOND};

pub use latency::{LatencyAccumulator, LatencyModel};

/// How the simulated cluster behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterModel {
    /// The load one replica serves at 100% utilisation.
    pub capacity: f64,
    /// Time from asking for a pod to its being ready (default 120 s).
    pub startup: Millis,
    /// How old the load reactive policies see is (default 60 s: what
    /// metrics-server's window and the HPA's sync loop add). prescale's
    /// decisions are applied with the same delay.
    pub metric_delay: Millis,
    /// Utilisation above which a step counts as under-provisioned (default
    /// 0.85: above it, queueing latency climbs steeply).
    pub slo_utilization: f64,
    /// Simulation tick (default 15 s).
    pub tick: Millis,
    /// Latency model.
    pub latency: LatencyModel,
}

impl ClusterModel {
    /// The model with its defaults and this capacity.
    pub fn with_capacity(capacity: f64) -> Self {
        ClusterModel {
            capacity,
            startup: 120 * SECOND,
            metric_delay: 60 * SECOND,
            slo_utilization: 0.85,
            tick: 15 * SECOND,
            latency: LatencyModel::default(),
        }
    }

    /// Replicas that keep `load` at the SLO utilisation (at least 1).
    pub fn needed(&self, load: f64) -> u32 {
        prescale_dataflows::decide::policy::replicas_for(load, self.capacity * self.slo_utilization).max(1)
    }
}

/// A load trace: one value per step from `start`, held within the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    /// Time of the first step (ms).
    pub start: Millis,
    /// Step width (ms).
    pub step: Millis,
    /// Values; gaps already filled.
    pub values: Vec<f64>,
}

impl Load {
    /// A load from values with gaps (NaN): each gap takes the last value
    /// seen (the first values, the first one seen). `None` when no value is
    /// known.
    pub fn filled(start: Millis, step: Millis, raw: &[f64]) -> Option<Load> {
        let first = raw.iter().copied().find(|v| v.is_finite())?;
        let mut last = first.max(0.0);
        let values = raw
            .iter()
            .map(|v| {
                if v.is_finite() {
                    last = v.max(0.0);
                }
                last
            })
            .collect();
        Some(Load { start, step, values })
    }

    /// End of the last step.
    pub fn end(&self) -> Millis {
        self.start + self.step * self.values.len() as Millis
    }

    /// The load at `t` (clamped to the trace).
    pub fn at(&self, t: Millis) -> f64 {
        let i = (t.saturating_sub(self.start) / self.step.max(1)) as usize;
        self.values.get(i.min(self.values.len().saturating_sub(1))).copied().unwrap_or(0.0)
    }

    /// The highest value.
    pub fn peak(&self) -> f64 {
        self.values.iter().copied().fold(0.0, f64::max)
    }
}

/// Pods by the time they are (or become) ready, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Pods {
    ready_at: Vec<Millis>,
}

impl Pods {
    /// Pods asked for.
    pub fn count(&self) -> u32 {
        u32::try_from(self.ready_at.len()).unwrap_or(u32::MAX)
    }

    /// Pods ready at `t`.
    pub fn ready(&self, t: Millis) -> u32 {
        u32::try_from(self.ready_at.partition_point(|r| *r <= t)).unwrap_or(u32::MAX)
    }

    fn scale_to(&mut self, n: u32, ready_at: Millis) {
        // The newest pods are the least ready: removing from the end takes
        // the not-yet-ready ones first.
        self.ready_at.resize(n as usize, ready_at);
    }
}

/// What a policy sees at a tick.
pub struct View<'a> {
    /// Now.
    pub now: Millis,
    /// The cluster model.
    pub model: &'a ClusterModel,
    /// The load trace (a reactive policy must only read the past).
    pub load: &'a Load,
    /// The pods.
    pub pods: &'a Pods,
    ready_history: &'a [u32],
    first_tick: Millis,
}

impl View<'_> {
    /// Pods that were ready at an earlier tick `t` (clamped to the start).
    pub fn ready_at(&self, t: Millis) -> u32 {
        let i = (t.saturating_sub(self.first_tick) / self.model.tick.max(1)) as usize;
        match self.ready_history.get(i) {
            Some(r) => *r,
            None => self.pods.ready(self.now),
        }
    }
}

/// A scaling policy: asked every tick, answers a replica count or nothing.
pub trait Policy {
    /// The replicas wanted now, or `None` to leave them.
    fn decide(&mut self, view: &View<'_>) -> Option<u32>;
}

/// prescale's decisions, each applied once its effective time is reached.
#[derive(Clone, Debug)]
pub struct Schedule {
    steps: Vec<(Millis, u32)>,
    next: usize,
}

impl Schedule {
    /// `(effective time, replicas)` pairs, in any order.
    pub fn new(mut steps: Vec<(Millis, u32)>) -> Self {
        steps.sort_by_key(|s| s.0);
        Schedule { steps, next: 0 }
    }
}

impl Policy for Schedule {
    fn decide(&mut self, view: &View<'_>) -> Option<u32> {
        let mut wanted = None;
        while let Some(&(t, n)) = self.steps.get(self.next)
            && t <= view.now
        {
            wanted = Some(n);
            self.next += 1;
        }
        wanted
    }
}

/// What a policy did over a trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Pod-hours asked for.
    pub replica_hours: f64,
    /// Minutes with load above ready capacity × the SLO utilisation.
    pub underprovisioned_minutes: f64,
    /// Minutes simulated.
    pub minutes: f64,
    /// Changes of the replica count.
    pub scale_events: u32,
    /// p99 response time over all requests (ms), when computed.
    pub p99_ms: Option<f64>,
    /// `(time, pods asked for, pods ready)` at the start of every load step.
    pub timeline: Vec<(Millis, u32, u32)>,
}

impl Outcome {
    /// Share of minutes under-provisioned.
    pub fn underprovisioned_fraction(&self) -> f64 {
        if self.minutes > 0.0 { self.underprovisioned_minutes / self.minutes } else { 0.0 }
    }
}

/// Runs `policy` over `load` from `initial` ready pods.
pub fn simulate(model: &ClusterModel, load: &Load, policy: &mut dyn Policy, initial: u32, latency: bool) -> Outcome {
    let tick = model.tick.max(1);
    let mut pods = Pods { ready_at: vec![0; initial as usize] };
    let mut history: Vec<u32> = Vec::with_capacity(((load.end() - load.start) / tick) as usize + 1);
    let mut acc = LatencyAccumulator::default();
    let mut out = Outcome::default();
    let (mut pod_ms, mut under_ms) = (0u128, 0u64);
    let mut t = load.start;
    while t < load.end() {
        let view = View { now: t, model, load, pods: &pods, ready_history: &history, first_tick: load.start };
        if let Some(n) = policy.decide(&view)
            && n != pods.count()
        {
            pods.scale_to(n, t + model.startup);
            out.scale_events += 1;
        }
        let ready = pods.ready(t);
        let l = load.at(t);
        if (t - load.start).is_multiple_of(load.step) {
            out.timeline.push((t, pods.count(), ready));
        }
        pod_ms += u128::from(pods.count()) * u128::from(tick);
        if l > f64::from(ready) * model.capacity * model.slo_utilization {
            under_ms += tick;
        }
        if latency {
            acc.add(ready, l / model.capacity, l * tick as f64);
        }
        history.push(ready);
        t += tick;
    }
    out.replica_hours = pod_ms as f64 / 3_600_000.0;
    out.underprovisioned_minutes = under_ms as f64 / 60_000.0;
    out.minutes = (load.end() - load.start) as f64 / 60_000.0;
    out.p99_ms = latency.then(|| acc.quantile(&model.latency, 0.99));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prescale_dataflows::time::MINUTE;

    fn step_load() -> Load {
        // 10 for an hour, then 30 for an hour, 5-minute steps.
        let mut values = vec![10.0; 12];
        values.extend(vec![30.0; 12]);
        Load { start: 0, step: 5 * MINUTE, values }
    }

    #[test]
    fn pods_cost_from_the_ask_and_serve_after_startup() {
        let model = ClusterModel { slo_utilization: 1.0, ..ClusterModel::with_capacity(1.0) };
        let load = step_load();
        // Ask for 30 pods exactly when the load steps up: 2 minutes short.
        let mut late = Schedule::new(vec![(60 * MINUTE, 30)]);
        let out = simulate(&model, &load, &mut late, 10, false);
        assert!((out.underprovisioned_minutes - 2.0).abs() < 1e-9, "{}", out.underprovisioned_minutes);
        assert!((out.replica_hours - 40.0).abs() < 1e-9, "{}", out.replica_hours);
        assert_eq!(out.scale_events, 1);
        // Asking 2 minutes earlier covers it, for 2 × 20 pod-minutes more.
        let mut early = Schedule::new(vec![(58 * MINUTE, 30)]);
        let out = simulate(&model, &load, &mut early, 10, false);
        assert_eq!(out.underprovisioned_minutes, 0.0);
        assert!((out.replica_hours - (40.0 + 40.0 / 60.0)).abs() < 1e-9);
        assert_eq!(out.timeline.len(), 24);
        assert_eq!(out.timeline[12], (60 * MINUTE, 30, 30));
    }

    #[test]
    fn scale_down_removes_unready_pods_first() {
        let mut pods = Pods { ready_at: vec![0; 3] };
        pods.scale_to(6, 100);
        assert_eq!((pods.count(), pods.ready(50), pods.ready(100)), (6, 3, 6));
        pods.scale_to(4, 0);
        assert_eq!((pods.count(), pods.ready(50)), (4, 3));
    }

    #[test]
    fn gaps_in_the_load_take_the_last_value() {
        let load = Load::filled(0, 1, &[f64::NAN, 2.0, f64::NAN, -1.0, 4.0]).unwrap_or_else(|| panic!("values"));
        assert_eq!(load.values, vec![2.0, 2.0, 2.0, 0.0, 4.0]);
        assert!(Load::filled(0, 1, &[f64::NAN]).is_none());
        assert_eq!((load.at(100), load.end(), load.peak()), (4.0, 5, 4.0));
    }
}
