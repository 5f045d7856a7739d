//! A `PredictiveScaler` as the decide stage reads it: the resource's spec
//! (Kubernetes units: minutes, seconds, percent, HPA field names) mapped to
//! a validated [`ScalerSpec`] (milliseconds, the stage's enums), and the
//! series it scales on.
//!
//! Pure: the watcher calls it for every resource it sees, and the tests
//! call it without a cluster. A spec the job cannot honour (a metric name
//! longer than the decoder admits, or one the schema would have refused
//! under an older CRD) is an error naming the field,
//! which the watcher reports in the resource's `Ready` condition.

use prescale_dataflows::decide::{
    Behavior, DEFAULT_LEVEL, FallbackSpec, Mode, PolicyKind, ScalerSpec, ScalingPolicy, ScalingRules, SelectPolicy,
    SpecUpdate,
};
use prescale_dataflows::decode::MAX_METRIC;
use prescale_dataflows::record::SeriesKey;
use prescale_dataflows::time::{MINUTE, SECOND};

use super::crd::{
    FallbackPolicy, PolicyType, PredictiveScaler, PredictiveScalerSpec, ScalerMode, ScalingRulesSpec, SelectPolicyName,
};

/// Why a spec cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("spec.{field}: {reason}")]
pub struct SpecError {
    /// The field, as the resource spells it.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn err<T>(field: &'static str, reason: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError { field, reason: reason.into() })
}

fn rules(spec: Option<&ScalingRulesSpec>, default: ScalingRules) -> ScalingRules {
    let Some(spec) = spec else { return default };
    ScalingRules {
        stabilization: spec.stabilization_window_seconds.map_or(default.stabilization, |s| u64::from(s) * SECOND),
        select: match spec.select_policy {
            Some(SelectPolicyName::Max) => SelectPolicy::Max,
            Some(SelectPolicyName::Min) => SelectPolicy::Min,
            Some(SelectPolicyName::Disabled) => SelectPolicy::Disabled,
            None => default.select,
        },
        policies: match &spec.policies {
            Some(list) => list
                .iter()
                .map(|p| ScalingPolicy {
                    kind: match p.type_ {
                        PolicyType::Pods => PolicyKind::Pods,
                        PolicyType::Percent => PolicyKind::Percent,
                    },
                    value: p.value,
                    period: u64::from(p.period_seconds) * SECOND,
                })
                .collect(),
            None => default.policies,
        },
    }
}

fn fallback(spec: Option<&FallbackPolicy>) -> FallbackSpec {
    let d = FallbackSpec::default();
    let Some(f) = spec else { return d };
    let secs = |v: Option<u32>, default: u64| v.map_or(default, |s| u64::from(s) * SECOND);
    FallbackSpec {
        stale_after: secs(f.stale_after_seconds, d.stale_after),
        max_gap: secs(f.max_gap_seconds, d.max_gap),
        max_load: f.max_load.or(d.max_load),
        max_change_factor: f.max_change_factor.unwrap_or(d.max_change_factor),
        max_error: f.max_error.unwrap_or(d.max_error),
        recover_after: secs(f.recover_after_seconds, d.recover_after),
        min_reporting: d.min_reporting,
    }
}

/// The decide stage's spec for a resource's spec.
pub fn scaler_spec(spec: &PredictiveScalerSpec) -> Result<ScalerSpec, SpecError> {
    let target_per_replica = match (spec.target_per_replica, spec.target_utilization) {
        (Some(t), None) => t,
        (None, Some(pct)) => f64::from(pct) / 100.0,
        _ => return err("targetPerReplica", "set exactly one of targetPerReplica and targetUtilization"),
    };
    if spec.forecast_horizon_minutes < 5 {
        return err("forecastHorizonMinutes", format!("{} is below the minimum of 5", spec.forecast_horizon_minutes));
    }
    if spec.metric_name.len() > MAX_METRIC {
        return err(
            "metricName",
            format!(
                "{} bytes: the job refuses samples whose metric is longer than {MAX_METRIC}, so it would never match",
                spec.metric_name.len()
            ),
        );
    }
    if let Some(q) = spec.quantile
        && !(0.0..1.0).contains(&q)
    {
        return err("quantile", format!("{q} is not at least 0 and below 1"));
    }
    let defaults = Behavior::default();
    let behavior = spec.behavior.as_ref();
    let scaler = ScalerSpec {
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        target_per_replica,
        horizon: u64::from(spec.forecast_horizon_minutes) * MINUTE,
        startup: u64::from(spec.startup_seconds.unwrap_or(120)) * SECOND,
        level: Some(spec.quantile.unwrap_or(DEFAULT_LEVEL)),
        mode: match spec.mode {
            ScalerMode::Auto => Mode::Auto,
            ScalerMode::ForecastOnly => Mode::ForecastOnly,
        },
        behavior: Behavior {
            scale_up: rules(behavior.and_then(|b| b.scale_up.as_ref()), defaults.scale_up),
            scale_down: rules(behavior.and_then(|b| b.scale_down.as_ref()), defaults.scale_down),
        },
        fallback: fallback(spec.fallback.as_ref()),
    };
    // The stage's own checks, for what the schema cannot express or an
    // older CRD did not enforce.
    scaler.validate("spec").map_err(|e| SpecError { field: "spec", reason: e.to_string() })
}

/// The series a resource scales on: its namespace, its target's name and
/// its metric. `None` for an object without a namespace (never served for a
/// namespaced resource).
pub fn series_of(ps: &PredictiveScaler) -> Option<SeriesKey> {
    Some(SeriesKey {
        namespace: ps.metadata.namespace.clone()?,
        deployment: ps.spec.target_ref.name.clone(),
        metric: ps.spec.metric_name.clone(),
    })
}

/// The update that tells the dataflow a resource now has this spec. Its
/// time is set by the job when the update enters the dataflow.
pub fn spec_update(scaler: &str, series: SeriesKey, spec: Option<ScalerSpec>) -> SpecUpdate {
    SpecUpdate { time_ms: 0, scaler: scaler.to_owned(), series, spec }
}

#[cfg(test)]
mod tests {
    use super::super::crd::{BehaviorSpec, ScalingPolicySpec};
    use super::*;

    fn spec(json: serde_json::Value) -> PredictiveScalerSpec {
        let mut base = serde_json::json!({
            "targetRef": {"kind": "Deployment", "name": "web"},
            "metricName": "rps",
            "forecastHorizonMinutes": 30,
            "minReplicas": 2,
            "maxReplicas": 20,
            "targetPerReplica": 50.0,
        });
        if let (Some(b), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    b.remove(k);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn units_and_defaults_map_onto_the_stage() {
        let s = scaler_spec(&spec(serde_json::json!({}))).unwrap();
        assert_eq!((s.min_replicas, s.max_replicas, s.target_per_replica), (2, 20, 50.0));
        assert_eq!((s.horizon, s.startup, s.mode), (30 * MINUTE, 120 * SECOND, Mode::Auto));
        assert_eq!(s.behavior, Behavior::default());
        assert_eq!(s.fallback, FallbackSpec::default());

        let s = scaler_spec(&spec(serde_json::json!({
            "targetPerReplica": null, "targetUtilization": 70, "startupSeconds": 45,
            "mode": "ForecastOnly", "quantile": 0.9,
            "fallback": {"maxError": 2.5, "staleAfterSeconds": 60},
        })))
        .unwrap();
        assert!((s.target_per_replica - 0.7).abs() < 1e-12);
        assert_eq!((s.startup, s.mode), (45 * SECOND, Mode::ForecastOnly));
        assert_eq!((s.fallback.max_error, s.fallback.stale_after), (2.5, 60 * SECOND));
        assert_eq!(s.fallback.max_gap, FallbackSpec::default().max_gap);
    }

    #[test]
    fn behavior_overrides_one_field_of_one_direction() {
        let mut p = spec(serde_json::json!({}));
        p.behavior = Some(BehaviorSpec {
            scale_up: None,
            scale_down: Some(ScalingRulesSpec {
                stabilization_window_seconds: Some(60),
                select_policy: None,
                policies: Some(vec![ScalingPolicySpec { type_: PolicyType::Pods, value: 1, period_seconds: 30 }]),
            }),
        });
        let s = scaler_spec(&p).unwrap();
        let d = Behavior::default();
        assert_eq!(s.behavior.scale_up, d.scale_up);
        assert_eq!(s.behavior.scale_down.stabilization, 60 * SECOND);
        assert_eq!(s.behavior.scale_down.select, d.scale_down.select);
        assert_eq!(
            s.behavior.scale_down.policies,
            [ScalingPolicy { kind: PolicyKind::Pods, value: 1, period: 30 * SECOND }]
        );
    }

    #[test]
    fn specs_the_job_cannot_honour_are_errors_naming_the_field() {
        let e = scaler_spec(&spec(serde_json::json!({"quantile": 1.5}))).unwrap_err();
        assert_eq!(e.field, "quantile");
        assert!(e.to_string().contains("1.5"), "{e}");
        assert_eq!(scaler_spec(&spec(serde_json::json!({"quantile": 0.6}))).unwrap().level, Some(0.6));
        let e = scaler_spec(&spec(serde_json::json!({"metricName": "m".repeat(MAX_METRIC + 1)}))).unwrap_err();
        assert_eq!(e.field, "metricName");
        let e = scaler_spec(&spec(serde_json::json!({"targetUtilization": 50}))).unwrap_err();
        assert_eq!(e.field, "targetPerReplica");
        let e = scaler_spec(&spec(serde_json::json!({"minReplicas": 30}))).unwrap_err();
        assert!(e.to_string().contains("below min_replicas"), "{e}");
    }
}
