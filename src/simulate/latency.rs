//! The latency model: each ready replica is one server of an M/M/c queue.
//!
//! Why M/M/c: requests to a web service arrive close to a Poisson process
//! at the time scale of a scrape interval, replicas behind a load balancer
//! share one queue in effect, and M/M/c is the simplest model whose
//! latency climbs steeply as utilisation nears 1 — the effect that makes
//! under-provisioning expensive. It is an estimate for comparing policies
//! on the same load, not a prediction of a real service's latency.
//!
//! With `c` servers, offered load `a = λ/μ` (in replicas: load ÷ capacity)
//! and service time `1/μ`, the wait is 0 with probability `1 − C(c, a)`
//! (Erlang C), else exponential with rate `cμ − λ`; the response time adds
//! an exponential service time. When `a ≥ c` the queue grows without bound
//! and every request counts as timing out.

/// Service-time and timeout of the modelled service.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyModel {
    /// Mean service time of one request (ms).
    pub service_ms: f64,
    /// Latency reported for requests in an overloaded step (ms).
    pub timeout_ms: f64,
}

impl Default for LatencyModel {
    /// 50 ms mean service time, 10 s timeout.
    fn default() -> Self {
        LatencyModel { service_ms: 50.0, timeout_ms: 10_000.0 }
    }
}

/// One queue state: servers and offered load (in servers).
#[derive(Clone, Copy, Debug)]
struct Queue {
    servers: f64,
    offered: f64,
    /// Probability of waiting (Erlang C).
    wait: f64,
}

impl Queue {
    fn new(servers: u32, offered: f64) -> Option<Queue> {
        let c = f64::from(servers);
        if servers == 0 || offered >= c {
            return None;
        }
        // Erlang B by its stable recurrence, then Erlang C from it.
        let mut b = 1.0;
        for k in 1..=servers {
            b = offered * b / (f64::from(k) + offered * b);
        }
        let wait = (c * b / (c - offered * (1.0 - b))).clamp(0.0, 1.0);
        Some(Queue { servers: c, offered, wait })
    }

    /// P(response time > t), t in units of the mean service time.
    fn exceeds(&self, t: f64) -> f64 {
        let mu = 1.0;
        let theta = self.servers * mu - self.offered * mu;
        let service = (-mu * t).exp();
        let queued = if (theta - mu).abs() < 1e-9 {
            (1.0 + mu * t) * service
        } else {
            (theta * service - mu * (-theta * t).exp()) / (theta - mu)
        };
        (1.0 - self.wait) * service + self.wait * queued
    }
}

/// Accumulates steps and answers the p99 of response time over all
/// requests (each step weighted by its load and duration).
#[derive(Clone, Debug, Default)]
pub struct LatencyAccumulator {
    steps: Vec<(Option<Queue>, f64)>,
}

impl LatencyAccumulator {
    /// Adds a step of `weight` (load × duration) with `ready` replicas and
    /// `offered` load in replicas.
    pub fn add(&mut self, ready: u32, offered: f64, weight: f64) {
        if !(weight > 0.0 && offered.is_finite()) {
            return;
        }
        // Ticks within one step of the load repeat the same queue: merge them.
        if let Some((Some(q), w)) = self.steps.last_mut()
            && q.servers == f64::from(ready)
            && q.offered == offered
        {
            *w += weight;
            return;
        }
        self.steps.push((Queue::new(ready, offered), weight));
    }

    /// The `q` quantile of response time (ms) under `model`.
    pub fn quantile(&self, model: &LatencyModel, q: f64) -> f64 {
        let total: f64 = self.steps.iter().map(|s| s.1).sum();
        if total <= 0.0 {
            return 0.0;
        }
        let timeout = model.timeout_ms / model.service_ms;
        let tail = |t: f64| {
            self.steps
                .iter()
                .map(|(queue, w)| w * queue.map_or(if t < timeout { 1.0 } else { 0.0 }, |q| q.exceeds(t)))
                .sum::<f64>()
                / total
        };
        let target = 1.0 - q;
        if tail(timeout) > target {
            return model.timeout_ms;
        }
        let (mut lo, mut hi) = (0.0, timeout);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if tail(mid) > target { lo = mid } else { hi = mid }
        }
        hi * model.service_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_idle_server_is_the_service_time_distribution() {
        // M/M/1 with a tiny load: p99 of Exp(1) is ln(100) ≈ 4.6 service times.
        let mut acc = LatencyAccumulator::default();
        acc.add(1, 1e-9, 1.0);
        let p99 = acc.quantile(&LatencyModel::default(), 0.99);
        assert!((p99 - 50.0 * 100f64.ln()).abs() < 0.5, "{p99}");
    }

    #[test]
    fn mm1_response_time_is_exponential_with_rate_mu_minus_lambda() {
        // M/M/1 at ρ = 0.5: T ~ Exp(μ − λ) = Exp(0.5/service): p99 = 2 ln 100.
        let mut acc = LatencyAccumulator::default();
        acc.add(1, 0.5, 1.0);
        let p99 = acc.quantile(&LatencyModel::default(), 0.99);
        assert!((p99 - 100.0 * 100f64.ln()).abs() < 0.5, "{p99}");
    }

    #[test]
    fn latency_climbs_steeply_near_saturation_and_overload_times_out() {
        let model = LatencyModel::default();
        let p99 = |ready, offered| {
            let mut acc = LatencyAccumulator::default();
            acc.add(ready, offered, 1.0);
            acc.quantile(&model, 0.99)
        };
        let (at_50, at_85, at_98) = (p99(20, 10.0), p99(20, 17.0), p99(20, 19.6));
        assert!(at_50 < at_85 && at_85 < at_98, "{at_50} {at_85} {at_98}");
        assert!(at_98 > 2.0 * at_85, "{at_85} {at_98}");
        assert_eq!(p99(20, 21.0), model.timeout_ms);
        // 2% of requests in an overloaded step push the p99 to the timeout.
        let mut acc = LatencyAccumulator::default();
        acc.add(20, 10.0, 98.0);
        acc.add(20, 25.0, 2.0);
        assert_eq!(acc.quantile(&model, 0.99), model.timeout_ms);
    }
}
