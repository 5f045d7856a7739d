//! The `PredictiveScaler` status the sink writes for a decision: pure
//! functions from (the previous status, the decision, what happened to the
//! target) to the new status, so the condition logic is tested without a
//! cluster.
//!
//! Conditions follow the `metav1.Condition` conventions: `status` is
//! `True`/`False`, `reason` is CamelCase, and `lastTransitionTime` changes
//! only when `status` does, so `kubectl wait` and alerting on transitions
//! behave.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use prescale_dataflows::decide::{Decision, FallbackReason, Reason};

use super::crd::{LastForecast, PredictiveScalerStatus, TargetKind};

/// The condition types, as the resource documents them.
pub const READY: &str = "Ready";
/// The forecast was used for the last decision.
pub const PREDICTION_READY: &str = "PredictionReady";
/// The last decision fell back to reactive scaling.
pub const FALLBACK: &str = "Fallback";
/// The last decision was bound by min, max, stabilisation or a rate limit.
pub const SCALING_LIMITED: &str = "ScalingLimited";

/// What the sink did to the target for one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetOutcome {
    /// The target's replicas were changed.
    Scaled {
        /// `spec.replicas` before.
        from: i32,
        /// `spec.replicas` after.
        to: i32,
    },
    /// The target already had the desired replicas.
    Unchanged {
        /// Its `spec.replicas`.
        replicas: i32,
    },
    /// The decision was not applied on purpose.
    NotApplied {
        /// The target's `spec.replicas`.
        replicas: i32,
        /// `ForecastOnly` (the resource's mode) or `DryRun` (the job's flag).
        why: &'static str,
    },
    /// The target does not exist.
    TargetMissing {
        /// The workload kind.
        kind: TargetKind,
        /// Its name.
        name: String,
    },
    /// The target changed between reading and patching it.
    Conflict {
        /// The apiserver's message.
        message: String,
    },
}

impl TargetOutcome {
    /// The target's replicas after this outcome, when known.
    pub fn replicas(&self) -> Option<i32> {
        match self {
            TargetOutcome::Scaled { to, .. } => Some(*to),
            TargetOutcome::Unchanged { replicas } | TargetOutcome::NotApplied { replicas, .. } => Some(*replicas),
            TargetOutcome::TargetMissing { .. } | TargetOutcome::Conflict { .. } => None,
        }
    }
}

/// Event time (ms) as a Kubernetes time; out-of-range times (which a
/// decision never carries) read as the epoch rather than failing a write.
pub fn time_of(ms: u64) -> Time {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    Time(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn camel(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Sets one condition in `list`, keeping `lastTransitionTime` when the
/// status did not change.
fn set(
    list: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let previous = list.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &list[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => list[i] = condition,
        None => list.push(condition),
    }
}

/// Whether a condition of this type is `True` in the list.
pub fn is_true(list: &[Condition], type_: &str) -> bool {
    list.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The reason of a condition of this type, if present.
pub fn reason_of<'a>(list: &'a [Condition], type_: &str) -> Option<&'a str> {
    list.iter().find(|c| c.type_ == type_).map(|c| c.reason.as_str())
}

/// The status after `decision` had `outcome`, from the `previous` one, for
/// the resource at `generation`, written at `now`.
pub fn next_status(
    previous: Option<&PredictiveScalerStatus>,
    decision: &Decision,
    outcome: &TargetOutcome,
    generation: Option<i64>,
    now: &Time,
) -> PredictiveScalerStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let desired = i32::try_from(decision.desired).unwrap_or(i32::MAX);
    status.observed_generation = generation;
    status.desired_replicas = Some(desired);
    if let Some(replicas) = outcome.replicas() {
        status.current_replicas = Some(replicas);
    }
    if let TargetOutcome::Scaled { .. } = outcome {
        status.last_scale_time = Some(now.clone());
    }
    status.reason = Some(decision.reason.to_string());
    status.model.clone_from(&decision.model);
    status.recent_error = decision.recent_error;
    if let Some(f) = &decision.forecast {
        status.last_forecast = Some(LastForecast {
            time: time_of(f.origin_ms),
            until: time_of(f.until_ms),
            point: f.point,
            upper: f.upper,
            level: f.level,
            step_seen: f.step_seen,
        });
    }

    let c = &mut status.conditions;
    let (ready, reason, message) = match outcome {
        TargetOutcome::Scaled { from, to } => (true, "Scaled", format!("scaled from {from} to {to} replicas")),
        TargetOutcome::Unchanged { replicas } => {
            (true, "Applied", format!("the target already has {replicas} replicas"))
        }
        TargetOutcome::NotApplied { replicas, why } => {
            (true, *why, format!("{desired} replicas decided, not applied ({why}); the target has {replicas}"))
        }
        TargetOutcome::TargetMissing { kind, name } => {
            (false, "TargetNotFound", format!("{} {name} does not exist in this namespace", kind.as_str()))
        }
        TargetOutcome::Conflict { message } => {
            (false, "Conflict", format!("the target changed while it was being scaled; retrying: {message}"))
        }
    };
    set(c, READY, ready, reason, message, generation, now);

    match decision.reason {
        Reason::Fallback(why) => {
            let detail = decision.detail.clone().unwrap_or_else(|| why.as_str().to_owned());
            let reason = camel(why.as_str());
            let message = match why {
                FallbackReason::ModelError => "the model's recent error is too high".to_owned(),
                _ => format!("the input is not trusted: {detail}"),
            };
            set(c, PREDICTION_READY, false, &reason, message, generation, now);
            set(c, FALLBACK, true, &reason, format!("scaling reactively: {detail}"), generation, now);
        }
        _ => {
            let (ok, reason, message) = match &decision.forecast {
                Some(f) => {
                    let bound = format!("sized for the {:.0}% upper bound {:.3}", f.level * 100.0, f.upper);
                    let message = if f.step_seen {
                        format!("{bound} (the step under way from its readings, later steps from the forecast)")
                    } else {
                        bound
                    };
                    (true, "ForecastUsed", message)
                }
                None => (false, "NoForecast", "no forecast yet".to_owned()),
            };
            set(c, PREDICTION_READY, ok, reason, message, generation, now);
            set(c, FALLBACK, false, "ForecastTrusted", "the forecast is trusted".into(), generation, now);
        }
    }

    let limited = match decision.reason {
        Reason::Min => Some(("TooFewReplicas", "minReplicas")),
        Reason::Max => Some(("TooManyReplicas", "maxReplicas")),
        Reason::Stabilised => Some(("Stabilised", "a stabilisation window")),
        Reason::RateLimited => Some(("RateLimited", "a scaling policy")),
        _ => None,
    };
    match limited {
        Some((reason, by)) => {
            set(c, SCALING_LIMITED, true, reason, format!("{desired} replicas, held by {by}"), generation, now)
        }
        None => set(
            c,
            SCALING_LIMITED,
            false,
            "DesiredWithinRange",
            "the desired count is not limited".into(),
            generation,
            now,
        ),
    }
    status
}

#[cfg(test)]
mod tests {
    use prescale_dataflows::decide::{Mode, UsedForecast};
    use prescale_dataflows::record::SeriesKey;

    use super::*;

    fn decision(reason: Reason, desired: u32) -> Decision {
        Decision {
            time_ms: 1_767_571_200_000,
            scaler: "web".into(),
            series: SeriesKey { namespace: "shop".into(), deployment: "web".into(), metric: "rps".into() },
            mode: Mode::Auto,
            current: 2,
            desired,
            reason,
            detail: None,
            load: Some(120.0),
            reactive: Some(3),
            forecast: Some(UsedForecast {
                origin_ms: 1_767_571_200_000,
                until_ms: 1_767_573_000_000,
                point: 150.0,
                upper: 180.0,
                level: 0.9,
                step_seen: false,
            }),
            model: Some("mstl".into()),
            recent_error: Some(0.8),
        }
    }

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(1_767_600_000 + s).unwrap())
    }

    fn condition<'a>(s: &'a PredictiveScalerStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_scale_fills_the_status_and_all_four_conditions() {
        let d = decision(Reason::Forecast, 4);
        let s = next_status(None, &d, &TargetOutcome::Scaled { from: 2, to: 4 }, Some(3), &at(0));
        assert_eq!((s.current_replicas, s.desired_replicas, s.observed_generation), (Some(4), Some(4), Some(3)));
        assert_eq!(s.reason.as_deref(), Some("forecast"));
        assert_eq!(s.model.as_deref(), Some("mstl"));
        assert_eq!(s.last_scale_time, Some(at(0)));
        assert_eq!(s.last_forecast.as_ref().map(|f| f.upper), Some(180.0));
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, PREDICTION_READY, FALLBACK, SCALING_LIMITED]);
        assert_eq!(condition(&s, READY).reason, "Scaled");
        assert!(is_true(&s.conditions, PREDICTION_READY));
        assert!(!is_true(&s.conditions, FALLBACK));
        assert!(!is_true(&s.conditions, SCALING_LIMITED));
    }

    #[test]
    fn a_step_sized_from_its_readings_says_so() {
        let mut d = decision(Reason::Forecast, 3);
        let unseen = next_status(None, &d, &TargetOutcome::Unchanged { replicas: 3 }, None, &at(0));
        assert_eq!(condition(&unseen, PREDICTION_READY).message, "sized for the 90% upper bound 180.000");
        if let Some(f) = d.forecast.as_mut() {
            f.step_seen = true;
        }
        let seen = next_status(Some(&unseen), &d, &TargetOutcome::Unchanged { replicas: 3 }, None, &at(15));
        assert_eq!(seen.last_forecast.as_ref().map(|f| f.step_seen), Some(true));
        let message = &condition(&seen, PREDICTION_READY).message;
        assert!(message.contains("the step under way from its readings"), "{message}");
    }

    #[test]
    fn transition_times_move_only_when_a_status_flips() {
        let first =
            next_status(None, &decision(Reason::Forecast, 4), &TargetOutcome::Unchanged { replicas: 4 }, None, &at(0));
        let mut fb = decision(Reason::Fallback(FallbackReason::OutOfRange), 4);
        fb.detail = Some("load -3 is negative".into());
        let second = next_status(Some(&first), &fb, &TargetOutcome::Unchanged { replicas: 4 }, None, &at(60));
        assert_eq!(condition(&second, READY).last_transition_time, at(0));
        assert_eq!(condition(&second, FALLBACK).last_transition_time, at(60));
        assert_eq!(condition(&second, FALLBACK).reason, "OutOfRange");
        assert!(condition(&second, FALLBACK).message.contains("load -3 is negative"));
        assert!(!is_true(&second.conditions, PREDICTION_READY));
        // A scale time is kept until the next scale.
        assert_eq!(second.last_scale_time, None);
    }

    #[test]
    fn missing_targets_and_limits_show_as_conditions() {
        let missing = TargetOutcome::TargetMissing { kind: TargetKind::StatefulSet, name: "db".into() };
        let s = next_status(None, &decision(Reason::Max, 10), &missing, None, &at(0));
        assert_eq!(condition(&s, READY).status, "False");
        assert_eq!(condition(&s, READY).reason, "TargetNotFound");
        assert!(condition(&s, READY).message.contains("StatefulSet db"));
        assert_eq!(s.current_replicas, None);
        assert_eq!(condition(&s, SCALING_LIMITED).reason, "TooManyReplicas");
        let dry = TargetOutcome::NotApplied { replicas: 2, why: "DryRun" };
        let s = next_status(Some(&s), &decision(Reason::Forecast, 5), &dry, None, &at(5));
        assert_eq!((condition(&s, READY).status.as_str(), condition(&s, READY).reason.as_str()), ("True", "DryRun"));
        assert_eq!(s.current_replicas, Some(2));
    }
}
