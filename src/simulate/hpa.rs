//! The HorizontalPodAutoscaler baseline: the Kubernetes algorithm for a
//! resource-utilisation target, as its documentation describes it.
//!
//! Every sync period (15 s) the controller reads per-pod utilisation as
//! metrics-server reports it (the load `metric_delay` ago, shared by the
//! pods ready then), computes `desired = ceil(pods with metrics × usage
//! ratio)` and skips any change while the ratio is within the tolerance
//! (0.1) of 1. Pods still starting are not ready; on a scale-up they count
//! as using nothing, and pods ready but without metrics yet count as using
//! nothing on a scale-up and 100% on a scale-down, after which the change
//! is dropped if the ratio crosses 1 or falls within the tolerance. The
//! result goes through the same `behavior` rules the decide stage uses
//! (default: no scale-up stabilisation, +100% or +4 pods per 15 s;
//! 300 s scale-down stabilisation, −100% per 15 s).

use prescale_dataflows::decide::Behavior;
use prescale_dataflows::decide::behavior::History;
use prescale_dataflows::time::{Millis, SECOND};

use super::{Policy, View};

/// Pods by what the controller knows about them at a sync.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodMetrics {
    /// Ready pods with a utilisation sample.
    pub with_metrics: u32,
    /// Their mean utilisation (share of the request, 1.0 = 100%).
    pub utilization: f64,
    /// Ready pods without a sample yet.
    pub missing: u32,
    /// Pods not ready yet.
    pub unready: u32,
}

/// The replica calculator: the desired count for `current` replicas at a
/// target utilisation, before `behavior` and the min/max clamp.
pub fn desired_replicas(current: u32, pods: PodMetrics, target: f64, tolerance: f64) -> u32 {
    if pods.with_metrics == 0 {
        return current;
    }
    let ratio = pods.utilization / target;
    let scale_up_with_unready = pods.unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && pods.missing == 0 {
        if (ratio - 1.0).abs() <= tolerance {
            return current;
        }
        return ceil_u32(ratio * f64::from(pods.with_metrics));
    }
    let mut used = pods.utilization * f64::from(pods.with_metrics);
    let mut counted = pods.with_metrics;
    if pods.missing > 0 {
        if ratio < 1.0 {
            // On a scale-down, pods without metrics are taken as fully busy.
            used += f64::from(pods.missing);
        }
        counted += pods.missing;
    }
    if scale_up_with_unready {
        counted += pods.unready;
    }
    let new_ratio = used / (f64::from(counted) * target);
    if (new_ratio - 1.0).abs() <= tolerance || (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0) {
        return current;
    }
    let replicas = ceil_u32(new_ratio * f64::from(counted));
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return current;
    }
    replicas
}

fn ceil_u32(x: f64) -> u32 {
    prescale_dataflows::decide::policy::replicas_for(x, 1.0)
}

/// The HPA as a simulated policy.
#[derive(Clone, Debug)]
pub struct Hpa {
    /// Target utilisation (0.7 = 70% of a replica's capacity).
    pub target: f64,
    /// Tolerance around a ratio of 1 (default 0.1).
    pub tolerance: f64,
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Sync period (default 15 s).
    pub sync: Millis,
    /// Scaling rules (default: Kubernetes' defaults).
    pub behavior: Behavior,
    history: History,
    next_sync: Millis,
}

impl Hpa {
    /// An HPA with Kubernetes' defaults at `target` utilisation.
    pub fn new(target: f64, min: u32, max: u32) -> Self {
        Hpa {
            target,
            tolerance: 0.1,
            min,
            max,
            sync: 15 * SECOND,
            behavior: Behavior::default(),
            history: History::default(),
            next_sync: 0,
        }
    }
}

impl Policy for Hpa {
    fn decide(&mut self, view: &View<'_>) -> Option<u32> {
        if view.now < self.next_sync {
            return None;
        }
        self.next_sync = view.now + self.sync;
        let model = view.model;
        let current = view.pods.count();
        let ready_now = view.pods.ready(view.now);
        let seen = view.now.saturating_sub(model.metric_delay).max(view.load.start);
        let ready_then = view.ready_at(seen);
        if ready_then == 0 {
            return None;
        }
        let utilization = view.load.at(seen) / (f64::from(ready_then) * model.capacity);
        let with_metrics = ready_then.min(ready_now);
        let pods =
            PodMetrics { with_metrics, utilization, missing: ready_now - with_metrics, unready: current - ready_now };
        let desired = desired_replicas(current, pods, self.target, self.tolerance).clamp(self.min, self.max);
        let (replicas, _) = self.history.normalize(&self.behavior, view.now, current, desired, self.min, self.max);
        Some(replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::{ClusterModel, Load, simulate};
    use prescale_dataflows::time::MINUTE;

    fn ready(n: u32, utilization: f64) -> PodMetrics {
        PodMetrics { with_metrics: n, utilization, missing: 0, unready: 0 }
    }

    /// The docs: a metric of 200m against a target of 100m doubles the
    /// replicas; 50m halves them; a ratio within 0.1 of 1 changes nothing.
    #[test]
    fn docs_examples_double_halve_and_tolerate() {
        assert_eq!(desired_replicas(3, ready(3, 0.2), 0.1, 0.1), 6);
        assert_eq!(desired_replicas(4, ready(4, 0.05), 0.1, 0.1), 2);
        assert_eq!(desired_replicas(4, ready(4, 0.105), 0.1, 0.1), 4);
        assert_eq!(desired_replicas(4, ready(4, 0.095), 0.1, 0.1), 4);
        // ceil: 3 pods at 150% of target want 4.5 → 5.
        assert_eq!(desired_replicas(3, ready(3, 0.75), 0.5, 0.1), 5);
    }

    /// The docs: pods not yet ready count as using nothing on a scale-up,
    /// which dampens it; here 2 busy pods at twice the target with 2 more
    /// starting would want 4, but with the starting ones at 0% the ratio
    /// is 1 and nothing changes.
    #[test]
    fn unready_pods_dampen_a_scale_up() {
        assert_eq!(desired_replicas(2, ready(2, 1.0), 0.5, 0.1), 4);
        let starting = PodMetrics { with_metrics: 2, utilization: 1.0, missing: 0, unready: 2 };
        assert_eq!(desired_replicas(4, starting, 0.5, 0.1), 4);
        let starting = PodMetrics { with_metrics: 2, utilization: 1.5, missing: 0, unready: 1 };
        // (2 × 1.5) / (3 × 0.5) = 2 → 6 pods.
        assert_eq!(desired_replicas(3, starting, 0.5, 0.1), 6);
    }

    /// The docs: on a scale-down, pods missing metrics count as 100% busy.
    #[test]
    fn missing_metrics_dampen_a_scale_down() {
        assert_eq!(desired_replicas(4, ready(4, 0.2), 0.5, 0.1), 2);
        let missing = PodMetrics { with_metrics: 4, utilization: 0.2, missing: 1, unready: 0 };
        // (4 × 0.2 + 1 × 1.0) / (5 × 0.5) = 0.72 → ceil(3.6) = 4.
        assert_eq!(desired_replicas(5, missing, 0.5, 0.1), 4);
    }

    #[test]
    fn the_simulated_hpa_reacts_after_the_metric_delay_and_startup() {
        let model = ClusterModel::with_capacity(1.0);
        // 7 for 30 min, then 14: at a 70% target, 10 then 20 replicas.
        let mut values = vec![7.0; 6];
        values.extend(vec![14.0; 6]);
        let load = Load { start: 0, step: 5 * MINUTE, values };
        let mut hpa = Hpa::new(0.7, 1, 100);
        let out = simulate(&model, &load, &mut hpa, 10, false);
        // The step at 30 min is seen at 31 min; 20 pods are ready at 33.
        let at = |m: u64| out.timeline.iter().find(|t| t.0 == m * MINUTE).copied();
        assert_eq!(at(30), Some((30 * MINUTE, 10, 10)));
        assert_eq!(at(35), Some((35 * MINUTE, 20, 20)));
        // Load above 10 × 0.85 from 30 to 33 min: 3 minutes under.
        assert!((out.underprovisioned_minutes - 3.0).abs() < 1e-9, "{}", out.underprovisioned_minutes);
    }
}
