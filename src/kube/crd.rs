//! The `PredictiveScaler` custom resource (`prescale.dev/v1alpha1`), defined
//! once here; the CRD YAML (`prescale crd`, `deploy/crd.yaml`) is generated
//! from these types, so the schema the apiserver enforces and the fields the
//! watcher and sink read cannot drift apart.
//!
//! What the apiserver refuses is decided here too: minimums and maximums
//! become OpenAPI bounds, and the rules across fields (`minReplicas <=
//! maxReplicas`, exactly one of `targetPerReplica` and `targetUtilization`)
//! become CEL rules (`x-kubernetes-validations`), so a bad resource is
//! refused at `kubectl apply` with a message naming the rule instead of
//! being accepted and ignored.
//!
//! The types do not deny unknown fields: the apiserver prunes fields the
//! schema does not know before prescale ever reads an object, and a newer
//! CRD must not make an older prescale fail to read the ones it knows.

use ::kube::{CustomResource, CustomResourceExt, KubeSchema};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a `PredictiveScaler` asks for: which workload to scale, on which
/// metric, within which bounds and how fast.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "prescale.dev",
    version = "v1alpha1",
    kind = "PredictiveScaler",
    plural = "predictivescalers",
    shortname = "ps",
    namespaced,
    status = "PredictiveScalerStatus",
    doc = "Scales a Deployment or StatefulSet ahead of its forecast load",
    printcolumn = r#"{"name": "Target", "type": "string", "jsonPath": ".spec.targetRef.name"}"#,
    printcolumn = r#"{"name": "Mode", "type": "string", "jsonPath": ".spec.mode"}"#,
    printcolumn = r#"{"name": "Current", "type": "integer", "jsonPath": ".status.currentReplicas"}"#,
    printcolumn = r#"{"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"}"#,
    printcolumn = r#"{"name": "Model", "type": "string", "jsonPath": ".status.model"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("has(self.targetPerReplica) != has(self.targetUtilization)").message("set exactly one of targetPerReplica and targetUtilization"))]
#[serde(rename_all = "camelCase")]
pub struct PredictiveScalerSpec {
    /// The workload to scale, in the resource's own namespace.
    pub target_ref: TargetRef,
    /// The metric the forecast is made on, as the source names it (e.g.
    /// `container_cpu_usage_seconds_total`).
    #[schemars(length(min = 1))]
    pub metric_name: String,
    /// How far ahead the replica count must hold, in minutes (5 to 1440).
    #[schemars(range(min = 5, max = 1440))]
    pub forecast_horizon_minutes: u32,
    /// Fewest replicas (at least 1; default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_replicas: u32,
    /// Most replicas (at least 1, and at least `minReplicas`).
    #[schemars(range(min = 1))]
    pub max_replicas: u32,
    /// The load one replica should carry, in the metric's unit. Exactly one
    /// of this and `targetUtilization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("targetPerReplica must be positive"))]
    pub target_per_replica: Option<f64>,
    /// Target utilisation in percent (1 to 100) of a metric that is a
    /// utilisation where 1.0 is one replica's full capacity (e.g. CPU used
    /// over CPU requested): the same as `targetPerReplica: pct/100`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub target_utilization: Option<u32>,
    /// Pod start-up lead time in seconds (0 to 3600; default 120): a
    /// scale-up must be decided this long before the load arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 3600))]
    pub startup_seconds: Option<u32>,
    /// The level of the central prediction interval whose upper bound
    /// replicas are sized for (0 to 0.999; 0 is the point forecast; default
    /// 0.9, the 95th percentile). It is read off the interval the job
    /// forecasts (`forecast.level`) as if its shape were normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 0.999))]
    pub quantile: Option<f64>,
    /// `Auto` scales the target; `ForecastOnly` only reports in the status.
    #[serde(default)]
    pub mode: ScalerMode,
    /// Scale-up and scale-down stabilisation and rate limits, shaped like
    /// the HorizontalPodAutoscaler's `behavior`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<BehaviorSpec>,
    /// When the prediction is not trusted and scaling falls back to
    /// reactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackPolicy>,
}

fn one() -> u32 {
    1
}

/// The workload a scaler scales.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.apiVersion == 'apps/v1'").message("targetRef.apiVersion must be apps/v1"))]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `apps/v1` (the default).
    #[serde(default = "apps_v1")]
    pub api_version: String,
    /// `Deployment` or `StatefulSet`.
    pub kind: TargetKind,
    /// The workload's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn apps_v1() -> String {
    "apps/v1".into()
}

/// The kinds of workload that can be scaled.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl TargetKind {
    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Deployment => "Deployment",
            TargetKind::StatefulSet => "StatefulSet",
        }
    }
}

/// Whether decisions are applied.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScalerMode {
    /// Scale the target (the default).
    #[default]
    Auto,
    /// Write the status and Events, never scale.
    ForecastOnly,
}

/// HPA-shaped `behavior`: rules per direction. A direction left out takes
/// the HPA's defaults for that direction.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorSpec {
    /// Rules for scaling up (default: no stabilisation; at most +100% or +4
    /// pods per 15 s, whichever is more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRulesSpec>,
    /// Rules for scaling down (default: 300 s stabilisation; at most -100%
    /// per 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRulesSpec>,
}

/// The rules for one direction; a field left out takes that direction's
/// default.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRulesSpec {
    /// Stabilisation window in seconds (0 to 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 3600))]
    pub stabilization_window_seconds: Option<u32>,
    /// `Max` (default), `Min` or `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicyName>,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<ScalingPolicySpec>>,
}

/// Which policy applies when several do.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectPolicyName {
    /// The one allowing the largest change.
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One rate limit: `value` pods or percent per `periodSeconds`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicySpec {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub type_: PolicyType,
    /// How many pods, or what percent (at least 1).
    #[schemars(range(min = 1))]
    pub value: u32,
    /// The period in seconds (1 to 1800).
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: u32,
}

/// The unit of a policy's value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyType {
    /// A number of pods.
    Pods,
    /// A percentage of the current replicas.
    Percent,
}

/// When to stop trusting the forecast and scale reactively. Every field is
/// optional; the defaults are the decide stage's.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FallbackPolicy {
    /// No data for this long means it is stale (seconds, default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub stale_after_seconds: Option<u32>,
    /// Data resuming after a gap longer than this is not trusted at once
    /// (seconds, default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_gap_seconds: Option<u32>,
    /// A load above this is out of range (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("fallback.maxLoad must be positive"))]
    pub max_load: Option<f64>,
    /// A load more than this factor above or below the previous one is a
    /// jump, not load (default 100; above 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 1.0").message("fallback.maxChangeFactor must exceed 1"))]
    pub max_change_factor: Option<f64>,
    /// Fall back while the model's recent error (MASE) is above this
    /// (default 4; positive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("fallback.maxError must be positive"))]
    pub max_error: Option<f64>,
    /// How long the input must stay healthy before the forecast is trusted
    /// again (seconds, default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_after_seconds: Option<u32>,
}

/// What prescale last decided and did for this scaler.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PredictiveScalerStatus {
    /// The `metadata.generation` of the spec this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The target's `spec.replicas` as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// The replicas last decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// The forecast the last decision used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_forecast: Option<LastForecast>,
    /// The model that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// That model's recent error (MASE: below 1 beats a naive forecast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_error: Option<f64>,
    /// When prescale last changed the target's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// What bound the last decision: `forecast`, `reactive-floor`, `min`,
    /// `max`, `stabilised`, `rate-limited` or `fallback:<why>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `Ready`, `PredictionReady`, `Fallback` and `ScalingLimited`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The forecast behind a decision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastForecast {
    /// The forecast's origin (event time).
    pub time: Time,
    /// The end of the look-ahead it covered.
    pub until: Time,
    /// Highest point forecast over the look-ahead.
    pub point: f64,
    /// Highest upper bound over the look-ahead: what replicas are sized for.
    pub upper: f64,
    /// The interval level of that bound.
    pub level: f64,
    /// Whether the step under way had been seen, so that its readings (their
    /// mean and spread within a step), not its forecast's interval, sized
    /// it; later steps are sized from the forecast.
    #[serde(default)]
    pub step_seen: bool,
}

/// The CRD as YAML: what `prescale crd` prints and `deploy/crd.yaml` holds.
pub fn crd_yaml() -> String {
    let crd = PredictiveScaler::crd();
    // Serialising a CRD (strings, numbers, maps) cannot fail; the fallback
    // keeps this total without an unwrap.
    let body = serde_saphyr::to_string(&crd).unwrap_or_else(|e| format!("# cannot render the CRD: {e}\n"));
    format!("# Generated by `prescale crd` from src/kube/crd.rs; do not edit.\n---\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_crd_yaml_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crd.yaml");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == crd_yaml(),
            "deploy/crd.yaml is stale: run `cargo run --release -- crd > deploy/crd.yaml`"
        );
    }

    #[test]
    fn the_crd_carries_the_names_columns_and_rules() {
        let crd = serde_json::to_value(PredictiveScaler::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "predictivescalers.prescale.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "ps");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> =
            version["additionalPrinterColumns"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(columns, ["Target", "Mode", "Current", "Desired", "Model", "Reason", "Age"]);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let rules = spec["x-kubernetes-validations"].to_string();
        assert!(rules.contains("self.minReplicas <= self.maxReplicas"), "{rules}");
        assert_eq!(spec["properties"]["forecastHorizonMinutes"]["minimum"], 5.0);
        assert_eq!(spec["properties"]["minReplicas"]["minimum"], 1.0);
    }

    #[test]
    fn a_minimal_spec_reads_with_defaults() {
        let spec: PredictiveScalerSpec = serde_json::from_value(serde_json::json!({
            "targetRef": {"kind": "Deployment", "name": "web"},
            "metricName": "rps",
            "forecastHorizonMinutes": 30,
            "maxReplicas": 10,
            "targetPerReplica": 50.0,
        }))
        .unwrap();
        assert_eq!(spec.min_replicas, 1);
        assert_eq!(spec.mode, ScalerMode::Auto);
        assert_eq!(spec.target_ref.api_version, "apps/v1");
    }
}
