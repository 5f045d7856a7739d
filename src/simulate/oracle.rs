//! The two reference policies: perfect foresight, and the peak all the time.
//!
//! The oracle knows the whole load trace. At every tick it asks for the
//! most replicas any moment of the next start-up period needs at the SLO
//! utilisation, so every pod needed at `t` was asked for by
//! `t − startup` and kept until then, and no pod is asked for earlier or
//! kept longer than that. It is the least cost at which the trace is never
//! under-provisioned: the limit no policy can beat.

use std::collections::VecDeque;

use prescale_dataflows::time::Millis;

use super::{ClusterModel, Load, Policy, View};

/// Perfect foresight.
#[derive(Clone, Debug)]
pub struct Oracle {
    /// `(tick time, replicas needed then)` for the ticks of the look-ahead.
    window: VecDeque<(Millis, u32)>,
    next: Millis,
}

impl Oracle {
    /// The oracle for this model and load.
    pub fn new(load: &Load) -> Self {
        Oracle { window: VecDeque::new(), next: load.start }
    }

    /// Replicas asked for at the first tick: what the start needs.
    pub fn initial(model: &ClusterModel, load: &Load) -> u32 {
        let mut o = Oracle::new(load);
        o.wanted(model, load, load.start)
    }

    fn wanted(&mut self, model: &ClusterModel, load: &Load, now: Millis) -> u32 {
        let horizon = now + model.startup;
        while self.next <= horizon {
            let t = self.next;
            let need = model.needed(load.at(t));
            // Keep the window's needs decreasing: an older, smaller need
            // can never be the maximum again.
            while self.window.back().is_some_and(|&(_, n)| n <= need) {
                self.window.pop_back();
            }
            self.window.push_back((t, need));
            self.next += model.tick.max(1);
        }
        while self.window.front().is_some_and(|&(t, _)| t < now) {
            self.window.pop_front();
        }
        self.window.front().map_or(1, |&(_, n)| n)
    }
}

impl Policy for Oracle {
    fn decide(&mut self, view: &View<'_>) -> Option<u32> {
        Some(self.wanted(view.model, view.load, view.now))
    }
}

/// The replicas the trace's peak needs, all the time.
#[derive(Clone, Copy, Debug)]
pub struct Static(pub u32);

impl Static {
    /// Sized for the peak at the SLO utilisation.
    pub fn for_peak(model: &ClusterModel, load: &Load) -> Self {
        Static(model.needed(load.peak()))
    }
}

impl Policy for Static {
    fn decide(&mut self, _: &View<'_>) -> Option<u32> {
        Some(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::simulate;
    use prescale_dataflows::time::MINUTE;

    fn spiky() -> Load {
        // Quiet, a 10-minute spike at 30 min, quiet again.
        let mut values = vec![5.0; 6];
        values.extend([40.0, 40.0]);
        values.extend(vec![5.0; 6]);
        Load { start: 0, step: 5 * MINUTE, values }
    }

    #[test]
    fn the_oracle_is_never_under_and_starts_pods_exactly_startup_early() {
        let model = ClusterModel { slo_utilization: 1.0, ..ClusterModel::with_capacity(1.0) };
        let load = spiky();
        let mut oracle = Oracle::new(&load);
        let initial = Oracle::initial(&model, &load);
        let out = simulate(&model, &load, &mut oracle, initial, false);
        assert_eq!(out.underprovisioned_minutes, 0.0);
        // 5 pods for 70 min, 35 more from 28 to 40 min.
        let expected = (5.0 * 70.0 + 35.0 * 12.0) / 60.0;
        assert!((out.replica_hours - expected).abs() < 1e-9, "{} vs {expected}", out.replica_hours);
        assert_eq!(out.scale_events, 2);
    }

    #[test]
    fn static_peak_holds_the_peak_count() {
        let model = ClusterModel { slo_utilization: 1.0, ..ClusterModel::with_capacity(1.0) };
        let load = spiky();
        let mut s = Static::for_peak(&model, &load);
        let peak = s.0;
        let out = simulate(&model, &load, &mut s, peak, false);
        assert_eq!((peak, out.scale_events, out.underprovisioned_minutes), (40, 0, 0.0));
        assert!((out.replica_hours - 40.0 * 70.0 / 60.0).abs() < 1e-9);
    }
}
