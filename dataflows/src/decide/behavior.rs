//! Scale-up and scale-down rules in the shape of the HorizontalPodAutoscaler's
//! `behavior` field: a stabilisation window and rate-limiting policies per
//! direction.
//!
//! The arithmetic follows the HPA controller as the Kubernetes docs describe
//! it, so that the decide stage and the simulated HPA baseline (in the host's
//! backtest) obey the same rules:
//!
//! - **Stabilisation**: the recommendation kept is, for a scale-down, the
//!   highest recommendation made within the scale-down window, and for a
//!   scale-up the lowest one made within the scale-up window (recommendations
//!   strictly after `now - window` count, the new one included).
//! - **Rate limits**: each policy allows, per `period`, a change of `value`
//!   pods or `value` percent of the replicas at the start of the period
//!   (the current count minus what was added, or plus what was removed,
//!   within the period). `selectPolicy: Max` takes the policy that allows the
//!   largest change, `Min` the smallest, `Disabled` allows none. Percent
//!   scale-ups round the limit up; percent scale-downs truncate the replica
//!   count, which rounds the number of pods removed up (the docs' 72 × 10%
//!   = 7.2 → 8 pods).
//! - **Decisions further apart than a period** (the decide stage decides
//!   once per reading, a minute by default, against HPA's 15 s periods):
//!   each policy applies once per whole period since the previous
//!   decision, compounded, so a count moves as far as an HPA syncing every
//!   period would have moved it in that time, no slower.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::time::{Millis, SECOND};

/// Whether a policy counts pods or percent of the current replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    /// `value` pods per period.
    Pods,
    /// `value` percent of the replicas at the start of the period.
    Percent,
}

/// One rate-limiting policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    /// Pods or percent.
    pub kind: PolicyKind,
    /// How many pods, or what percent.
    pub value: u32,
    /// The period the change is allowed in (ms).
    pub period: Millis,
}

/// Which policy wins when several apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectPolicy {
    /// The policy allowing the largest change (Kubernetes' default).
    #[default]
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// The rules for one direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingRules {
    /// Stabilisation window (ms).
    pub stabilization: Millis,
    /// How policies combine.
    pub select: SelectPolicy,
    /// Rate limits; none means no limit.
    pub policies: Vec<ScalingPolicy>,
}

/// Scale-up and scale-down rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behavior {
    /// Rules when the recommendation is above the current count.
    pub scale_up: ScalingRules,
    /// Rules when it is below.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// The HPA's documented defaults: scale up without stabilisation by at
    /// most 100% or 4 pods (whichever is more) per 15 s; scale down after a
    /// 300 s stabilisation window by at most 100% per 15 s.
    fn default() -> Self {
        let period = 15 * SECOND;
        Behavior {
            scale_up: ScalingRules {
                stabilization: 0,
                select: SelectPolicy::Max,
                policies: vec![
                    ScalingPolicy { kind: PolicyKind::Percent, value: 100, period },
                    ScalingPolicy { kind: PolicyKind::Pods, value: 4, period },
                ],
            },
            scale_down: ScalingRules {
                stabilization: 300 * SECOND,
                select: SelectPolicy::Max,
                policies: vec![ScalingPolicy { kind: PolicyKind::Percent, value: 100, period }],
            },
        }
    }
}

impl Behavior {
    /// The longest window or period, beyond which history is not needed.
    fn memory(&self) -> Millis {
        let rules = [&self.scale_up, &self.scale_down];
        let windows = rules.iter().map(|r| r.stabilization);
        let periods = rules.iter().flat_map(|r| r.policies.iter().map(|p| p.period));
        windows.chain(periods).max().unwrap_or(0)
    }
}

/// What bound the replica count when the behaviour changed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// A stabilisation window held it.
    Stabilised,
    /// A rate-limiting policy capped it.
    RateLimited,
    /// `minReplicas`.
    Min,
    /// `maxReplicas`.
    Max,
}

/// One target's scaling history: recent recommendations and scale events.
#[derive(Clone, Debug, Default)]
pub struct History {
    recommendations: VecDeque<(Millis, u32)>,
    /// (time, signed change in replicas).
    events: VecDeque<(Millis, i64)>,
    /// Time of the previous decision (kept past `memory`).
    last: Option<Millis>,
}

impl History {
    /// Applies stabilisation and rate limits to `desired` (already within
    /// `[min, max]`) given `current` replicas at `now`, records the
    /// recommendation and, when the count changes, the scale event. Returns
    /// the replicas to set and what bound them, if anything did.
    pub fn normalize(
        &mut self,
        behavior: &Behavior,
        now: Millis,
        current: u32,
        desired: u32,
        min: u32,
        max: u32,
    ) -> (u32, Option<Bound>) {
        self.forget(now.saturating_sub(behavior.memory()));
        let stabilised = self.stabilise(behavior, now, current, desired);
        let (limited, rate_bound) = self.rate_limit(behavior, now, current, stabilised, min, max);
        self.last = Some(now);
        let bound = if rate_bound.is_some() {
            rate_bound
        } else if stabilised != desired {
            Some(Bound::Stabilised)
        } else {
            None
        };
        if limited != current {
            self.events.push_back((now, i64::from(limited) - i64::from(current)));
        }
        (limited, bound)
    }

    fn forget(&mut self, before: Millis) {
        while self.recommendations.front().is_some_and(|(t, _)| *t < before) {
            self.recommendations.pop_front();
        }
        while self.events.front().is_some_and(|(t, _)| *t < before) {
            self.events.pop_front();
        }
    }

    fn stabilise(&mut self, behavior: &Behavior, now: Millis, current: u32, desired: u32) -> u32 {
        // `t > now - window`, without underflow near time zero.
        let after = |window: Millis| move |t: Millis| t + window > now;
        let (in_up, in_down) = (after(behavior.scale_up.stabilization), after(behavior.scale_down.stabilization));
        let mut up = desired;
        let mut down = desired;
        for &(t, r) in &self.recommendations {
            if in_up(t) {
                up = up.min(r);
            }
            if in_down(t) {
                down = down.max(r);
            }
        }
        self.recommendations.push_back((now, desired));
        current.max(up).min(down)
    }

    fn rate_limit(
        &self,
        behavior: &Behavior,
        now: Millis,
        current: u32,
        desired: u32,
        min: u32,
        max: u32,
    ) -> (u32, Option<Bound>) {
        let current_i = i64::from(current);
        // Decisions may come less often than a policy's period (a reading
        // a minute against HPA's 15 s); each policy then allows its change
        // once per period since the previous decision, as an HPA syncing
        // every period would have made it by now.
        let since = self.last.map(|t| now.saturating_sub(t));
        if desired > current {
            let limit =
                self.limit(&behavior.scale_up, now, since, current_i, i64::from(desired), true).min(i64::from(max));
            if i64::from(desired) > limit {
                let limit = u32::try_from(limit.max(current_i)).unwrap_or(current);
                let bound = if limit == max { Bound::Max } else { Bound::RateLimited };
                return (limit, Some(bound));
            }
        } else if desired < current {
            let limit =
                self.limit(&behavior.scale_down, now, since, current_i, i64::from(desired), false).max(i64::from(min));
            if i64::from(desired) < limit {
                let limit = u32::try_from(limit.min(current_i)).unwrap_or(current);
                let bound = if limit == min { Bound::Min } else { Bound::RateLimited };
                return (limit, Some(bound));
            }
        }
        (desired, None)
    }

    /// Replicas changed in one direction within `period` before `now`.
    fn changed_within(&self, now: Millis, period: Millis, up: bool) -> i64 {
        self.events
            .iter()
            .filter(|(t, change)| *t + period > now && (*change > 0) == up)
            .map(|(_, change)| change.abs())
            .sum()
    }

    /// The furthest count the rules allow from `current` toward `desired`
    /// (up or down): each policy's limit from the count at the start of
    /// its period, applied once per period since the previous decision.
    fn limit(
        &self,
        rules: &ScalingRules,
        now: Millis,
        since: Option<Millis>,
        current: i64,
        desired: i64,
        up: bool,
    ) -> i64 {
        if rules.policies.is_empty() {
            return if up { i64::MAX } else { i64::MIN };
        }
        let reached = |limit: i64| if up { limit >= desired } else { limit <= desired };
        let proposals = rules.policies.iter().map(|p| {
            let changed = self.changed_within(now, p.period, up);
            let mut limit = if up { current - changed } else { current + changed };
            let n = periods(since, p.period);
            let value = i64::from(p.value);
            match p.kind {
                PolicyKind::Pods if up => limit.saturating_add(value.saturating_mul(n)),
                PolicyKind::Pods => limit.saturating_sub(value.saturating_mul(n)),
                PolicyKind::Percent => {
                    for _ in 0..n.min(MAX_COMPOUNDED) {
                        limit = if up {
                            ceil_percent(limit, 100 + value)
                        } else {
                            // Truncates the count, rounding the pods removed up.
                            limit * (100 - value.min(100)) / 100
                        };
                        if reached(limit) {
                            break;
                        }
                    }
                    limit
                }
            }
        });
        // `Max` takes the policy allowing the most change: the highest
        // limit up, the lowest down.
        let (most, least) = proposals.fold((None, None), |(hi, lo): (Option<i64>, Option<i64>), l| {
            (Some(hi.map_or(l, |h| h.max(l))), Some(lo.map_or(l, |m| m.min(l))))
        });
        let (most, least) = if up { (most, least) } else { (least, most) };
        match rules.select {
            SelectPolicy::Max => most.unwrap_or(current),
            SelectPolicy::Min => least.unwrap_or(current),
            SelectPolicy::Disabled => current,
        }
    }
}

/// Times a policy of this period applies to a decision made `since` after
/// the previous one: once per whole period elapsed, at least once (the
/// first decision, and a decision within a period, apply it once, less
/// what the period already changed).
fn periods(since: Option<Millis>, period: Millis) -> i64 {
    since.map_or(1, |s| i64::try_from(s / period.max(1)).unwrap_or(i64::MAX).max(1))
}

/// Most times a percent policy is compounded in one decision (an hour of
/// 15 s periods, 2^240 at the default 100%): after a longer silence the
/// rest is allowed at the next decision.
const MAX_COMPOUNDED: i64 = 240;

/// `ceil(count × percent / 100)` in integers.
fn ceil_percent(count: i64, percent: i64) -> i64 {
    (count * percent + 99).div_euclid(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down_rules(policies: Vec<ScalingPolicy>, select: SelectPolicy) -> Behavior {
        Behavior {
            scale_up: Behavior::default().scale_up,
            scale_down: ScalingRules { stabilization: 0, select, policies },
        }
    }

    /// The docs' scale-down policies: 4 pods and 10% per 60 s.
    fn docs_down_rules(select: SelectPolicy) -> Behavior {
        let minute = 60 * SECOND;
        down_rules(
            vec![
                ScalingPolicy { kind: PolicyKind::Pods, value: 4, period: minute },
                ScalingPolicy { kind: PolicyKind::Percent, value: 10, period: minute },
            ],
            select,
        )
    }

    /// The Kubernetes docs' example: scale-down policies of 4 pods and 10%
    /// per 60 s with the default selectPolicy (Max), from 80 replicas toward
    /// 10: 8 pods go first (10% of 80), then 8 again (10% of 72 = 7.2,
    /// rounded up), and once below 40 replicas the 4-pod policy allows more.
    #[test]
    fn docs_example_scale_down_pods_and_percent() {
        let minute = 60 * SECOND;
        let b = docs_down_rules(SelectPolicy::Max);
        let mut h = History::default();
        let (r1, bound) = h.normalize(&b, 0, 80, 10, 1, 100);
        assert_eq!((r1, bound), (72, Some(Bound::RateLimited)));
        // Within the same period nothing more may go.
        assert_eq!(h.normalize(&b, 30 * SECOND, 72, 10, 1, 100).0, 72);
        let (r2, _) = h.normalize(&b, minute + 1, 72, 10, 1, 100);
        assert_eq!(r2, 64);
        // At 38 replicas, 10% is 3.8 → 4 pods (34 left): both policies
        // allow 4; at 30, 10% is 3 and the 4-pod policy wins (26 left).
        let (r3, _) = History::default().normalize(&b, 0, 38, 10, 1, 100);
        assert_eq!(r3, 34);
        let (r4, _) = History::default().normalize(&b, 0, 30, 10, 1, 100);
        assert_eq!(r4, 26);
    }

    #[test]
    fn select_min_takes_the_smallest_change() {
        let b = docs_down_rules(SelectPolicy::Min);
        assert_eq!(History::default().normalize(&b, 0, 80, 10, 1, 100).0, 76);
    }

    /// Default scale-up: 100% or 4 pods per 15 s, whichever is more.
    #[test]
    fn default_scale_up_doubles_or_adds_four_per_period() {
        let b = Behavior::default();
        let mut h = History::default();
        assert_eq!(h.normalize(&b, 0, 1, 50, 1, 100), (5, Some(Bound::RateLimited)));
        // Still inside the 15 s period: the period started at 1 replica.
        assert_eq!(h.normalize(&b, 10 * SECOND, 5, 50, 1, 100), (5, Some(Bound::RateLimited)));
        assert_eq!(h.normalize(&b, 16 * SECOND, 5, 50, 1, 100), (10, Some(Bound::RateLimited)));
        assert_eq!(h.normalize(&b, 32 * SECOND, 10, 50, 1, 100), (20, Some(Bound::RateLimited)));
        assert_eq!(h.normalize(&b, 48 * SECOND, 20, 30, 1, 100), (30, None));
    }

    /// Regression: decisions a minute apart (one per reading) could only
    /// double the count per minute, four times slower than an HPA syncing
    /// every 15 s under the same policies; a 10x burst took three minutes
    /// of decisions longer to reach.
    #[test]
    fn decisions_a_minute_apart_scale_as_fast_as_an_hpa_syncing_every_period() {
        let b = Behavior::default();
        let mut h = History::default();
        assert_eq!(h.normalize(&b, 0, 5, 5, 1, 1000), (5, None));
        // Four 15 s periods since the last decision: 5 → 10 → 20 → 40 → 80.
        assert_eq!(h.normalize(&b, 60 * SECOND, 5, 100, 1, 1000), (80, Some(Bound::RateLimited)));
        // Compounding stops at the count wanted.
        let mut h = History::default();
        h.normalize(&b, 0, 5, 5, 1, 1000);
        assert_eq!(h.normalize(&b, 60 * SECOND, 5, 30, 1, 1000), (30, None));
        // The docs' scale-down example, two minutes after the last
        // decision: 80 → 72 → 64 in one step.
        let minute = 60 * SECOND;
        let down = docs_down_rules(SelectPolicy::Max);
        let mut h = History::default();
        h.normalize(&down, 0, 80, 80, 1, 100);
        assert_eq!(h.normalize(&down, 2 * minute, 80, 10, 1, 100), (64, Some(Bound::RateLimited)));
        // A pods policy after an hour of silence (past the history kept):
        // 4 pods per minute, 60 times.
        let up = Behavior {
            scale_up: ScalingRules {
                stabilization: 0,
                select: SelectPolicy::Max,
                policies: vec![ScalingPolicy { kind: PolicyKind::Pods, value: 4, period: minute }],
            },
            ..Behavior::default()
        };
        let mut h = History::default();
        h.normalize(&up, 0, 1, 1, 1, 1000);
        assert_eq!(h.normalize(&up, 60 * minute, 1, 1000, 1, 1000), (241, Some(Bound::RateLimited)));
    }

    /// Default scale-down: the highest recommendation of the last 300 s.
    #[test]
    fn scale_down_stabilisation_holds_the_highest_recent_recommendation() {
        let b = Behavior::default();
        let mut h = History::default();
        assert_eq!(h.normalize(&b, 0, 10, 10, 1, 100), (10, None));
        assert_eq!(h.normalize(&b, 60 * SECOND, 10, 4, 1, 100), (10, Some(Bound::Stabilised)));
        assert_eq!(h.normalize(&b, 200 * SECOND, 10, 6, 1, 100), (10, Some(Bound::Stabilised)));
        // 300 s after the recommendation of 10 it leaves the window; 6 is
        // still in it.
        assert_eq!(h.normalize(&b, 300 * SECOND, 10, 3, 1, 100), (6, Some(Bound::Stabilised)));
        assert_eq!(h.normalize(&b, 501 * SECOND, 6, 3, 1, 100), (3, None));
    }

    #[test]
    fn scale_up_stabilisation_takes_the_lowest_recent_recommendation() {
        let mut b = Behavior::default();
        b.scale_up.stabilization = 60 * SECOND;
        let mut h = History::default();
        assert_eq!(h.normalize(&b, 0, 4, 4, 1, 100), (4, None));
        assert_eq!(h.normalize(&b, 30 * SECOND, 4, 8, 1, 100), (4, Some(Bound::Stabilised)));
        assert_eq!(h.normalize(&b, 61 * SECOND, 4, 9, 1, 100), (8, Some(Bound::Stabilised)));
    }

    #[test]
    fn disabled_direction_never_moves_and_limits_respect_min_max() {
        let mut b = Behavior::default();
        b.scale_down.select = SelectPolicy::Disabled;
        b.scale_down.stabilization = 0;
        assert_eq!(History::default().normalize(&b, 0, 10, 2, 1, 100), (10, Some(Bound::RateLimited)));
        // The rate limit would allow 20, max is 12.
        assert_eq!(History::default().normalize(&Behavior::default(), 0, 10, 15, 1, 12), (12, Some(Bound::Max)));
        let mut b = Behavior::default();
        b.scale_down.stabilization = 0;
        b.scale_down.policies = vec![ScalingPolicy { kind: PolicyKind::Pods, value: 8, period: 60 * SECOND }];
        assert_eq!(History::default().normalize(&b, 0, 10, 1, 3, 100), (3, Some(Bound::Min)));
    }
}
