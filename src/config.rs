//! The job definition: a TOML file whose every field is optional, and the
//! validated [`Settings`] the job runs with.
//!
//! Parsing is in two stages, as in ripgrep: [`JobConfig`] mirrors the file
//! (unknown fields are errors, so a typo never silently falls back to a
//! default), CLI flags override it, and [`Settings::from_config`] checks
//! every value once, with errors that name the field.
//!
//! ```toml
//! [source]
//! uri = "replay:../shared/traces/nab/series.csv"  # or "generator"
//!
//! [event_time]
//! lateness = "30s"
//!
//! [features]
//! tumbling = ["15s", "5m"]
//! sliding = [{ width = "30m", slide = "1m" }]
//! lags = ["1h", "24h", "7d"]
//! lagged = ["5m"]
//!
//! [sink]
//! uri = "jsonl:decisions.jsonl"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use prescale_dataflows::decide::{
    Behavior, DEFAULT_LEVEL, DecideSettings, FallbackSpec, Mode, PolicyKind, ScalerSpec, ScalingPolicy, ScalingRules,
    SelectPolicy,
};
use prescale_dataflows::decode::{DecodeOptions, Format};
use prescale_dataflows::event_time::EventTimeSettings;
use prescale_dataflows::features::{FeatureSettings, SlidingSpec};
use prescale_dataflows::forecast::stage::{ForecastSettings, Signal};
use prescale_dataflows::time::{MINUTE, Millis, parse_datetime, parse_duration};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::kafka::{KafkaSourceSettings, KafkaTopic, Properties, StartFrom};
use crate::kube::sink::SinkOptions;
use crate::source::generator::{GeneratorFormat, GeneratorSettings};

/// The job config file, as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobConfig {
    /// Where records come from.
    pub source: SourceConfig,
    /// The built-in workload generator (used when `source.uri = "generator"`).
    pub generator: GeneratorConfig,
    /// How records are decoded.
    pub decode: DecodeConfig,
    /// Watermarks and lateness.
    pub event_time: EventTimeConfig,
    /// Which features are computed.
    pub features: FeaturesConfig,
    /// The forecast stage.
    pub forecast: ForecastConfig,
    /// The decide stage.
    pub decide: DecideConfig,
    /// Where outputs go.
    pub sink: SinkConfig,
    /// The timely cluster.
    pub cluster: ClusterConfig,
    /// The Kubernetes cluster of the `kubernetes` sink.
    pub kubernetes: KubernetesConfig,
    /// Settings of every Kafka client.
    pub kafka: KafkaConfig,
    /// The metrics and health endpoint.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the HTTP endpoint serving Prometheus metrics, `/healthz`
/// and `/readyz`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `HOST:PORT` to listen on (default `127.0.0.1:9464`; port 0 picks a
    /// free one and logs it), or `off`.
    pub addr: Option<String>,
    /// Keep serving this long after the job ends, so that a last scrape
    /// sees the final counts (default `0s`).
    pub linger: Option<String>,
    /// `/healthz` fails when a worker has not stepped its dataflows for
    /// this long (default `60s`).
    pub stall_timeout: Option<String>,
}

/// `[kafka]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// librdkafka properties passed to every consumer and producer (TLS,
    /// SASL, fetch sizes…), e.g. `{ "security.protocol" = "SSL" }`; they
    /// override prescale's own defaults. Default: none.
    pub properties: Properties,
}

/// `[source]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `generator` (default), `replay:PATH` (a CSV or JSON-lines trace),
    /// `kafka://HOST:PORT/TOPIC` or `kafka-embedded` (the generator through
    /// an in-process mock Kafka cluster).
    pub uri: Option<String>,
    /// Format of a replayed file or of Kafka messages: `csv`,
    /// `adapter-json`, `blog-json` or `bincode`. Default: for a file, told
    /// from its name and first record; for Kafka, `adapter-json`.
    pub format: Option<Format>,
    /// Kafka: where to start, `beginning`, `committed` (default: where the
    /// group's last commit says, else the beginning) or `latest`.
    pub from: Option<String>,
    /// Kafka: the consumer group offsets are committed under (default
    /// `prescale`).
    pub group: Option<String>,
    /// Kafka: a partition silent this long stops holding the frontier back
    /// (default `10s`, wall time).
    pub idle_timeout: Option<String>,
    /// Kafka: end the job once no record arrived for this long, after
    /// flushing every window (default: never; run until stopped).
    pub exit_when_idle: Option<String>,
    /// Kafka: how often progress is committed (default `1s`).
    pub commit_interval: Option<String>,
    /// Replay speed-up over event time (e.g. 60 replays an hour a minute);
    /// default 0: as fast as possible.
    pub speedup: Option<f64>,
}

/// `[generator]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Deployments (default 20).
    pub deployments: Option<usize>,
    /// Pods per deployment (default 5).
    pub pods: Option<usize>,
    /// Time between two samples of a pod (default `15s`, Prometheus' default).
    pub scrape_interval: Option<String>,
    /// Simulated time to generate (default `7d`).
    pub duration: Option<String>,
    /// First event time (default `2026-01-05T00:00:00Z`, a Monday).
    pub start: Option<String>,
    /// Seed of every random choice (default 42).
    pub seed: Option<u64>,
    /// Share of samples delivered late but within the lateness (default 0.005).
    pub out_of_order: Option<f64>,
    /// Share of samples delivered too late to be used (default 0.0005).
    pub late: Option<f64>,
    /// `samples` (default) hands samples over directly; `adapter-json`
    /// renders prometheus-kafka-adapter lines and decodes them.
    pub format: Option<GeneratorFormat>,
}

/// `[decode]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Namespace of records that carry none (default `default`).
    pub namespace: Option<String>,
    /// Metric name of CSV records (default `value`).
    pub csv_metric: Option<String>,
    /// Largest accepted value (default 1e15); above is `out-of-range`.
    pub max_value: Option<f64>,
    /// The deployments scaled, as `namespace/deployment` patterns where
    /// either part may be `*` (default: all); others are rejected as
    /// `unknown-deployment`.
    pub deployments: Option<Vec<String>>,
}

/// `[event_time]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventTimeConfig {
    /// Allowed lateness behind the largest event time seen (default `30s`).
    pub lateness: Option<String>,
    /// Granularity of timely timestamps (default `1s`).
    pub tick: Option<String>,
    /// How far ahead of a partition's event time a record may be before the
    /// data-quality gate judges it (default `1h`).
    pub max_jump: Option<String>,
    /// How much event time records beyond a jump must span, agreeing, to be
    /// accepted as the stream's new time (default `10m`).
    pub confirm_jump: Option<String>,
}

/// `[features]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesConfig {
    /// Tumbling window widths (default `["15s", "5m"]`). The
    /// shortest one below `forecast.step` is the reading the reactive
    /// floor acts on between forecasts: 15 s is the HPA's sync period and
    /// Prometheus' default scrape interval.
    pub tumbling: Option<Vec<String>>,
    /// Sliding windows (default `[{ width = "30m", slide = "1m" }]`).
    pub sliding: Option<Vec<SlidingConfig>>,
    /// Lags of the tumbling means (default `["1h", "24h", "7d"]`).
    pub lags: Option<Vec<String>>,
    /// The tumbling widths that get lags (default: those of at least one
    /// minute). A week of lags on 15-second windows would hold 40 320
    /// means per series in the lag join, for rows no stage reads.
    pub lagged: Option<Vec<String>>,
}

/// `[forecast]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Width of the tumbling windows forecast, one of `features.tumbling`
    /// (default `5m`).
    pub step: Option<String>,
    /// How far ahead (default `30m`).
    pub horizon: Option<String>,
    /// Prediction interval level (default 0.9).
    pub level: Option<f64>,
    /// Event time between model refits (default `1h`).
    pub refit_every: Option<String>,
    /// `total` (default: window mean × pods, the deployment's load) or
    /// `avg` (the per-pod mean).
    pub signal: Option<Signal>,
}

/// `[decide]`: the default scaler, which decides for every deployment no
/// `PredictiveScaler` targets. Its fields mirror the resource's spec.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// Whether the default scaler runs (default true; a job beside a
    /// cluster sets it false so that only PredictiveScalers decide).
    pub default_scaler: Option<bool>,
    /// Fewest replicas (default 1).
    pub min_replicas: Option<u32>,
    /// Most replicas (default 100).
    pub max_replicas: Option<u32>,
    /// The load one replica should carry, in the unit of the forecast
    /// signal (default 1.0: one CPU core per replica for CPU metrics).
    pub target_per_replica: Option<f64>,
    /// Look-ahead past the next decision (default `5m`, one step).
    pub horizon: Option<String>,
    /// Pod start-up lead time (default `120s`).
    pub startup: Option<String>,
    /// The level of the central interval whose upper bound replicas are
    /// sized for, 0 (the point forecast) to below 1 (default 0.6, about
    /// the forecast's 80th percentile; see the README's Decisions). The
    /// forecast stage ranks its models by how well they would have sized
    /// at this level.
    pub level: Option<f64>,
    /// `Auto` (default) or `ForecastOnly`.
    pub mode: Option<Mode>,
    /// Scale-up rules (default: HPA's, no stabilisation, +100% or +4 pods
    /// per 15 s, whichever is more).
    pub scale_up: Option<RulesConfig>,
    /// Scale-down rules (default: HPA's, 300 s stabilisation, -100% per 15 s).
    pub scale_down: Option<RulesConfig>,
    /// When to fall back to reactive scaling.
    pub fallback: FallbackConfig,
}

/// `[decide.scale_up]` / `[decide.scale_down]`, shaped like HPA's `behavior`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Stabilisation window.
    pub stabilization: Option<String>,
    /// `Max`, `Min` or `Disabled`.
    pub select: Option<SelectPolicy>,
    /// Rate limits; an empty list means none.
    pub policies: Option<Vec<PolicyConfig>>,
}

/// One rate-limiting policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `Pods` or `Percent`.
    pub kind: PolicyKind,
    /// How many pods, or what percent.
    pub value: u32,
    /// Per how long.
    pub period: String,
}

/// `[decide.fallback]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// No data for this long is stale (default `15m`).
    pub stale_after: Option<String>,
    /// Data resuming after a gap longer than this is suspect (default `15m`).
    pub max_gap: Option<String>,
    /// Loads above this are out of range (default: no limit).
    pub max_load: Option<f64>,
    /// A load changing by more than this factor at once is a jump (default 100).
    pub max_change_factor: Option<f64>,
    /// Go reactive while the model's recent MASE is above this (default 10).
    pub max_error: Option<f64>,
    /// Healthy input needed to leave fallback (default `15m`).
    pub recover_after: Option<String>,
    /// Pods missing: fewer pods reporting metrics than this share of the
    /// replicas, where more did before (default 0.5; 0 turns it off).
    pub min_reporting: Option<f64>,
}

/// One sliding window.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlidingConfig {
    /// Window length.
    pub width: String,
    /// Distance between window ends.
    pub slide: String,
}

/// `[sink]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `stdout` (default: a summary) or `jsonl:PATH` (the last stage's rows).
    pub uri: Option<String>,
    /// Write every feature row as a JSON line to this file.
    pub features: Option<PathBuf>,
    /// Write every forecast as a JSON line to this file.
    pub forecasts: Option<PathBuf>,
    /// Write every rejected record as a JSON line to this file.
    pub dead_letter: Option<PathBuf>,
    /// Write the job summary as one JSON object to this file.
    pub summary_json: Option<PathBuf>,
}

/// `[cluster]`: the timely workers and processes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Worker threads per process (default 1).
    pub workers: Option<usize>,
    /// Processes in the job (default 1).
    pub processes: Option<usize>,
    /// This process' index (default 0).
    pub process: Option<usize>,
    /// File with one `host:port` per process (needed with processes > 1).
    pub hosts: Option<PathBuf>,
}

/// `[kubernetes]`: the cluster the `kubernetes` sink scales in and whose
/// PredictiveScalers configure the job.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Kubeconfig file (default: `KUBECONFIG`, else `~/.kube/config`, else
    /// the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// Watch PredictiveScalers in this namespace only (default: all).
    pub namespace: Option<String>,
    /// Write status and Events, never scale (default false).
    pub dry_run: Option<bool>,
    /// Least time between two writes to one target (default `10s`).
    pub min_interval: Option<String>,
    /// Field manager of prescale's writes (default `prescale`).
    pub field_manager: Option<String>,
}

impl JobConfig {
    /// Reads and parses a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::ConfigFile { path: path.to_owned(), message: e.to_string() })?;
        Self::from_toml(&text).map_err(|message| Error::ConfigFile { path: path.to_owned(), message })
    }

    /// Parses a config from TOML text.
    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Where records come from, validated.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSettings {
    /// The built-in generator.
    Generator(GeneratorSettings),
    /// A recorded trace.
    Replay {
        /// The file.
        path: PathBuf,
        /// Its format, if given; else guessed.
        format: Option<Format>,
        /// Speed-up over event time; 0 is as fast as possible.
        speedup: f64,
    },
    /// A Kafka topic.
    Kafka(KafkaSourceSettings),
    /// The generator, produced into an in-process mock cluster and read
    /// back through the Kafka source.
    KafkaEmbedded(GeneratorSettings),
}

/// Where the last stage's rows go.
#[derive(Clone, Debug, PartialEq)]
pub enum SinkSettings {
    /// A human summary on stdout.
    Stdout,
    /// JSON lines in a file.
    Jsonl(PathBuf),
    /// JSON messages to a Kafka topic, keyed by `namespace/deployment`.
    Kafka(KafkaTopic),
    /// Scale the targets of PredictiveScalers in a Kubernetes cluster.
    Kubernetes(KubeSettings),
}

/// The `kubernetes` sink and PredictiveScaler watcher, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeSettings {
    /// How the sink writes (kubeconfig, dry run, rate limit, backoff).
    pub sink: SinkOptions,
    /// The one namespace watched, if not all.
    pub namespace: Option<String>,
}

/// The timely cluster, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSettings {
    /// Worker threads per process.
    pub workers: usize,
    /// This process' index.
    pub process: usize,
    /// Addresses of all processes; empty for a single process.
    pub addresses: Vec<String>,
}

impl ClusterSettings {
    /// Processes in the job.
    pub fn processes(&self) -> usize {
        self.addresses.len().max(1)
    }
}

/// Everything a job runs with, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The source.
    pub source: SourceSettings,
    /// Decoding options.
    pub decode: DecodeOptions,
    /// Event time.
    pub event_time: EventTimeSettings,
    /// Features.
    pub features: FeatureSettings,
    /// Forecasts.
    pub forecast: ForecastSettings,
    /// Decisions.
    pub decide: DecideSettings,
    /// The sink of the last stage.
    pub sink: SinkSettings,
    /// Feature rows file.
    pub features_path: Option<PathBuf>,
    /// Forecasts file.
    pub forecasts_path: Option<PathBuf>,
    /// Dead-letter file.
    pub dead_letter_path: Option<PathBuf>,
    /// Dead-letter topic (`sink.dead_letter = "kafka://HOST:PORT/TOPIC"`).
    pub dead_letter_kafka: Option<KafkaTopic>,
    /// librdkafka properties of every Kafka client.
    pub kafka_properties: Properties,
    /// Summary JSON file.
    pub summary_json: Option<PathBuf>,
    /// The cluster.
    pub cluster: ClusterSettings,
    /// The metrics endpoint.
    pub metrics: MetricsSettings,
}

/// The metrics endpoint, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSettings {
    /// Where to listen; `None` when off.
    pub addr: Option<std::net::SocketAddr>,
    /// How long to keep serving after the job ends.
    pub linger: Duration,
    /// Heartbeat age at which a worker counts as stalled.
    pub stall_timeout: Duration,
}

/// The default address of the metrics endpoint (9464 is the port
/// registered for Prometheus exporters of this kind).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

fn metrics_settings(c: &MetricsConfig) -> Result<MetricsSettings> {
    let text = c.addr.as_deref().unwrap_or(DEFAULT_METRICS_ADDR).trim();
    let addr = if text == "off" {
        None
    } else {
        let parsed = std::net::ToSocketAddrs::to_socket_addrs(text).ok().and_then(|mut a| a.next());
        Some(parsed.ok_or_else(|| Error::invalid("metrics.addr", format!("{text:?} is not HOST:PORT or `off`")))?)
    };
    Ok(MetricsSettings {
        addr,
        linger: Duration::from_millis(duration("metrics.linger", c.linger.as_deref(), "0s")?),
        stall_timeout: wall_duration("metrics.stall_timeout", c.stall_timeout.as_deref(), "60s")?,
    })
}

/// The longest duration a job config may set: a century, far beyond any
/// sensible setting, so that event times (at most year 9999) plus any sum
/// of settings stay far below `u64::MAX` ms. (A `stale_after` near
/// `u64::MAX` passed validation and overflowed the decide stage's
/// arithmetic: `tests/fuzz_regressions.rs`.)
const MAX_DURATION: Millis = 36_500 * prescale_dataflows::time::DAY;

fn duration(field: &str, text: Option<&str>, default: &str) -> Result<Millis> {
    let text = text.unwrap_or(default);
    let ms = parse_duration(text)
        .ok_or_else(|| Error::invalid(field, format!("{text:?} is not a duration like 30s, 5m, 24h or 7d")))?;
    if ms > MAX_DURATION {
        return Err(Error::invalid(field, format!("{text:?} is longer than a century (36500d)")));
    }
    Ok(ms)
}

fn durations(field: &str, texts: Option<&[String]>, default: &[&str]) -> Result<Vec<Millis>> {
    match texts {
        Some(list) => list.iter().map(|t| duration(field, Some(t), "")).collect(),
        None => default.iter().map(|t| duration(field, Some(t), "")).collect(),
    }
}

fn share(field: &str, value: Option<f64>, default: f64) -> Result<f64> {
    let v = value.unwrap_or(default);
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(Error::invalid(field, format!("{v} is not a share between 0 and 1")))
    }
}

impl Settings {
    /// Validates a config (with CLI overrides already applied).
    pub fn from_config(config: &JobConfig) -> Result<Self> {
        let event_time = EventTimeSettings {
            lateness: duration("event_time.lateness", config.event_time.lateness.as_deref(), "30s")?,
            tick: duration("event_time.tick", config.event_time.tick.as_deref(), "1s")?,
            max_jump: duration("event_time.max_jump", config.event_time.max_jump.as_deref(), "1h")?,
            confirm_jump: duration("event_time.confirm_jump", config.event_time.confirm_jump.as_deref(), "10m")?,
        }
        .validate()?;

        let f = &config.features;
        let sliding = match &f.sliding {
            Some(list) => list
                .iter()
                .map(|s| {
                    Ok(SlidingSpec {
                        width: duration("features.sliding.width", Some(&s.width), "")?,
                        slide: duration("features.sliding.slide", Some(&s.slide), "")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            None => FeatureSettings::default().sliding,
        };
        let tumbling = durations("features.tumbling", f.tumbling.as_deref(), &["15s", "5m"])?;
        let lagged = match &f.lagged {
            Some(list) => durations("features.lagged", Some(list), &[])?,
            None => tumbling.iter().copied().filter(|&w| w >= MINUTE).collect(),
        };
        let features = FeatureSettings {
            tumbling,
            sliding,
            lags: durations("features.lags", f.lags.as_deref(), &["1h", "24h", "7d"])?,
            lagged,
            lateness: event_time.lateness,
        }
        .validate()?;

        let fc = &config.forecast;
        let step = duration("forecast.step", fc.step.as_deref(), "5m")?;
        let startup = duration("decide.startup", config.decide.startup.as_deref(), "120s")?;
        let forecast = ForecastSettings {
            step,
            horizon: duration("forecast.horizon", fc.horizon.as_deref(), "30m")?,
            level: fc.level.unwrap_or(0.9),
            refit_every: duration("forecast.refit_every", fc.refit_every.as_deref(), "1h")?,
            signal: fc.signal.unwrap_or(Signal::Total),
            // Forecasts are ranked for the default scaler's sizing level,
            // over the leads its decisions read.
            selection_level: config.decide.level.unwrap_or(DEFAULT_LEVEL),
            sizing_leads: ForecastSettings::sizing_leads_for(step, startup),
        }
        .validate(&features.tumbling)?;

        let mut decide = decide_settings(&config.decide)?;
        decide.reactive_width = features.tumbling.iter().copied().filter(|w| *w < forecast.step).min();

        let d = &config.decode;
        let max_value = d.max_value.unwrap_or(1e15);
        if !(max_value.is_finite() && max_value > 0.0 && max_value <= 1e18) {
            return Err(Error::invalid("decode.max_value", format!("{max_value} must be in (0, 1e18]")));
        }
        let decode = DecodeOptions {
            namespace: d.namespace.clone().unwrap_or_else(|| "default".into()),
            csv_metric: d.csv_metric.clone().unwrap_or_else(|| "value".into()),
            max_value,
            deployments: d.deployments.clone().unwrap_or_default(),
        };
        if let Some(bad) = decode.deployments.iter().find(|p| p.is_empty() || p.matches('/').count() > 1) {
            return Err(Error::invalid("decode.deployments", format!("{bad:?} is not NAMESPACE/DEPLOYMENT")));
        }

        let uri = config.source.uri.as_deref().unwrap_or("generator");
        let source = if uri == "generator" {
            SourceSettings::Generator(generator_settings(&config.generator)?)
        } else if let Some(path) = uri.strip_prefix("replay:") {
            if path.is_empty() {
                return Err(Error::invalid("source.uri", "replay: needs a path, e.g. replay:trace.csv"));
            }
            let speedup = config.source.speedup.unwrap_or(0.0);
            if !(speedup.is_finite() && speedup >= 0.0) {
                return Err(Error::invalid("source.speedup", format!("{speedup} must be 0 or more")));
            }
            SourceSettings::Replay { path: PathBuf::from(path), format: config.source.format, speedup }
        } else if uri == "kafka-embedded" {
            SourceSettings::KafkaEmbedded(generator_settings(&config.generator)?)
        } else if uri.starts_with("kafka://") {
            SourceSettings::Kafka(kafka_source(uri, &config.source)?)
        } else {
            return Err(Error::invalid(
                "source.uri",
                format!("{uri:?}: expected `generator`, `replay:PATH`, `kafka://HOST:PORT/TOPIC` or `kafka-embedded`"),
            ));
        };

        let sink_uri = config.sink.uri.as_deref().unwrap_or("stdout");
        let sink = if sink_uri == "stdout" {
            SinkSettings::Stdout
        } else if let Some(path) = sink_uri.strip_prefix("jsonl:").filter(|p| !p.is_empty()) {
            SinkSettings::Jsonl(PathBuf::from(path))
        } else if sink_uri.starts_with("kafka://") {
            SinkSettings::Kafka(KafkaTopic::parse("sink.uri", sink_uri)?)
        } else if sink_uri == "kubernetes" {
            SinkSettings::Kubernetes(kube_settings(&config.kubernetes)?)
        } else {
            return Err(Error::invalid(
                "sink.uri",
                format!("{sink_uri:?}: expected `stdout`, `jsonl:PATH`, `kafka://HOST:PORT/TOPIC` or `kubernetes`"),
            ));
        };
        let (dead_letter_path, dead_letter_kafka) = match &config.sink.dead_letter {
            Some(p) if p.to_string_lossy().starts_with("kafka://") => {
                (None, Some(KafkaTopic::parse("sink.dead_letter", &p.to_string_lossy())?))
            }
            other => (other.clone(), None),
        };

        Ok(Settings {
            source,
            decode,
            event_time,
            features,
            forecast,
            decide,
            sink,
            features_path: config.sink.features.clone(),
            forecasts_path: config.sink.forecasts.clone(),
            dead_letter_path,
            dead_letter_kafka,
            kafka_properties: config.kafka.properties.clone(),
            summary_json: config.sink.summary_json.clone(),
            cluster: cluster_settings(&config.cluster)?,
            metrics: metrics_settings(&config.metrics)?,
        })
    }
}

fn rules(field: &'static str, c: Option<&RulesConfig>, default: ScalingRules) -> Result<ScalingRules> {
    let Some(c) = c else { return Ok(default) };
    let policies = match &c.policies {
        Some(list) => list
            .iter()
            .map(|p| {
                let period = duration(field, Some(&p.period), "")?;
                if p.value == 0 || period == 0 {
                    return Err(Error::invalid(field, "a policy needs a positive value and period"));
                }
                Ok(ScalingPolicy { kind: p.kind, value: p.value, period })
            })
            .collect::<Result<Vec<_>>>()?,
        None => default.policies,
    };
    Ok(ScalingRules {
        stabilization: match &c.stabilization {
            Some(text) => duration(field, Some(text), "")?,
            None => default.stabilization,
        },
        select: c.select.unwrap_or(default.select),
        policies,
    })
}

fn decide_settings(c: &DecideConfig) -> Result<DecideSettings> {
    let defaults = Behavior::default();
    let f = &c.fallback;
    let fallback = FallbackSpec {
        stale_after: duration("decide.fallback.stale_after", f.stale_after.as_deref(), "15m")?,
        max_gap: duration("decide.fallback.max_gap", f.max_gap.as_deref(), "15m")?,
        max_load: f.max_load,
        max_change_factor: f.max_change_factor.unwrap_or(100.0),
        max_error: f.max_error.unwrap_or(10.0),
        recover_after: duration("decide.fallback.recover_after", f.recover_after.as_deref(), "15m")?,
        min_reporting: share("decide.fallback.min_reporting", f.min_reporting, 0.5)?,
    };
    let spec = ScalerSpec {
        min_replicas: c.min_replicas.unwrap_or(1),
        max_replicas: c.max_replicas.unwrap_or(100),
        target_per_replica: c.target_per_replica.unwrap_or(1.0),
        horizon: duration("decide.horizon", c.horizon.as_deref(), "5m")?,
        startup: duration("decide.startup", c.startup.as_deref(), "120s")?,
        level: Some(c.level.unwrap_or(DEFAULT_LEVEL)),
        mode: c.mode.unwrap_or(Mode::Auto),
        behavior: Behavior {
            scale_up: rules("decide.scale_up", c.scale_up.as_ref(), defaults.scale_up)?,
            scale_down: rules("decide.scale_down", c.scale_down.as_ref(), defaults.scale_down)?,
        },
        fallback,
    }
    .validate("decide")?;
    Ok(DecideSettings { default: c.default_scaler.unwrap_or(true).then_some(spec), reactive_width: None })
}

fn wall_duration(field: &str, text: Option<&str>, default: &str) -> Result<Duration> {
    let ms = duration(field, text, default)?;
    if ms == 0 {
        return Err(Error::invalid(field, "must be more than 0"));
    }
    Ok(Duration::from_millis(ms))
}

fn kafka_source(uri: &str, s: &SourceConfig) -> Result<KafkaSourceSettings> {
    let group = s.group.clone().unwrap_or_else(|| "prescale".to_owned());
    if group.is_empty() {
        return Err(Error::invalid("source.group", "must not be empty"));
    }
    Ok(KafkaSourceSettings {
        topic: KafkaTopic::parse("source.uri", uri)?,
        format: s.format.unwrap_or(Format::AdapterJson),
        from: StartFrom::parse("source.from", s.from.as_deref().unwrap_or("committed"))?,
        group,
        idle_timeout: wall_duration("source.idle_timeout", s.idle_timeout.as_deref(), "10s")?,
        exit_when_idle: match &s.exit_when_idle {
            Some(text) => Some(wall_duration("source.exit_when_idle", Some(text), "")?),
            None => None,
        },
        commit_interval: wall_duration("source.commit_interval", s.commit_interval.as_deref(), "1s")?,
    })
}

fn generator_settings(g: &GeneratorConfig) -> Result<GeneratorSettings> {
    let deployments = g.deployments.unwrap_or(20);
    let pods = g.pods.unwrap_or(5);
    if deployments == 0 || deployments > 1_000_000 {
        return Err(Error::invalid("generator.deployments", "must be between 1 and 1000000"));
    }
    if pods == 0 || pods > 10_000 {
        return Err(Error::invalid("generator.pods", "must be between 1 and 10000"));
    }
    let scrape_interval = duration("generator.scrape_interval", g.scrape_interval.as_deref(), "15s")?;
    if scrape_interval < 100 {
        return Err(Error::invalid("generator.scrape_interval", "must be at least 100ms"));
    }
    let start_text = g.start.as_deref().unwrap_or("2026-01-05T00:00:00Z");
    let start = parse_datetime(start_text)
        .ok_or_else(|| Error::invalid("generator.start", format!("{start_text:?} is not an RFC 3339 time")))?;
    Ok(GeneratorSettings {
        deployments,
        pods,
        scrape_interval,
        duration: duration("generator.duration", g.duration.as_deref(), "7d")?,
        start,
        seed: g.seed.unwrap_or(42),
        out_of_order: share("generator.out_of_order", g.out_of_order, 0.005)?,
        late: share("generator.late", g.late, 0.0005)?,
        format: g.format.unwrap_or(GeneratorFormat::Samples),
    })
}

fn kube_settings(k: &KubernetesConfig) -> Result<KubeSettings> {
    let min_interval = duration("kubernetes.min_interval", k.min_interval.as_deref(), "10s")?;
    let field_manager = k.field_manager.clone().unwrap_or_else(|| "prescale".into());
    if field_manager.is_empty() || field_manager.len() > 128 {
        return Err(Error::invalid("kubernetes.field_manager", "must be 1 to 128 characters"));
    }
    if k.namespace.as_deref().is_some_and(str::is_empty) {
        return Err(Error::invalid("kubernetes.namespace", "must not be empty (leave it out to watch all)"));
    }
    Ok(KubeSettings {
        sink: SinkOptions {
            kubeconfig: k.kubeconfig.clone(),
            dry_run: k.dry_run.unwrap_or(false),
            min_interval: std::time::Duration::from_millis(min_interval),
            field_manager,
            ..SinkOptions::default()
        },
        namespace: k.namespace.clone(),
    })
}

fn cluster_settings(c: &ClusterConfig) -> Result<ClusterSettings> {
    let workers = c.workers.unwrap_or(1);
    if workers == 0 || workers > 1024 {
        return Err(Error::invalid("cluster.workers", "must be between 1 and 1024"));
    }
    let processes = c.processes.unwrap_or(1);
    let process = c.process.unwrap_or(0);
    if processes == 0 {
        return Err(Error::invalid("cluster.processes", "must be at least 1"));
    }
    if process >= processes {
        return Err(Error::invalid("cluster.process", format!("{process} must be below processes ({processes})")));
    }
    let addresses = if processes > 1 {
        let Some(path) = &c.hosts else {
            return Err(Error::invalid("cluster.hosts", "a hosts file is needed with more than one process"));
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "reading hosts file",
            path: path.clone(),
            source,
        })?;
        let hosts: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
        if hosts.len() < processes {
            return Err(Error::invalid(
                "cluster.hosts",
                format!("{} lists {} hosts for {processes} processes", path.display(), hosts.len()),
            ));
        }
        hosts.into_iter().take(processes).collect()
    } else {
        Vec::new()
    };
    Ok(ClusterSettings { workers, process, addresses })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Result<Settings> {
        let config = JobConfig::from_toml(toml).map_err(|m| Error::invalid("toml", m))?;
        Settings::from_config(&config)
    }

    #[test]
    fn empty_config_gives_the_documented_defaults() {
        let s = settings("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.event_time.lateness, 30_000);
        assert_eq!(s.features, FeatureSettings::default());
        assert_eq!(s.sink, SinkSettings::Stdout);
        let SourceSettings::Generator(g) = s.source else { panic!("generator by default") };
        assert_eq!((g.deployments, g.pods, g.scrape_interval, g.duration), (20, 5, 15_000, 7 * 86_400_000));
    }

    #[test]
    fn lags_go_to_the_tumbling_windows_of_a_minute_or_more_unless_told() {
        let s = settings("[features]\ntumbling = [\"30s\", \"10m\"]\nlags = [\"1h\"]\n[forecast]\nstep = \"10m\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.features.lagged, [10 * 60_000]);
        assert_eq!(s.decide.reactive_width, Some(30_000));
        let s = settings("[features]\ntumbling = [\"30s\", \"5m\"]\nlagged = [\"30s\", \"5m\"]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.features.lagged, [30_000, 5 * 60_000]);
        let e = settings("[features]\nlagged = [\"2m\"]").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("features.lagged"), "{e}");
    }

    #[test]
    fn forecasts_are_ranked_for_the_default_scalers_sizing_level() {
        let s = settings("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.forecast.selection_level, DEFAULT_LEVEL);
        let s = settings("[decide]\nlevel = 0.9").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.forecast.selection_level, 0.9);
        let s = settings("[decide]\nlevel = 0.0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.forecast.selection_level, 0.0);
        // 5-minute steps and a 2-minute start-up: the decision's step and the next.
        assert_eq!(s.forecast.sizing_leads, 2);
        let s = settings(
            "[features]\ntumbling = [\"15s\", \"1m\"]\n[forecast]\nstep = \"1m\"\n[decide]\nstartup = \"150s\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.forecast.sizing_leads, 4);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let e = settings("[features]\ntumbeling = [\"1m\"]").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("tumbeling"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        for (toml, field) in [
            ("[event_time]\nlateness = \"soon\"", "event_time.lateness"),
            ("[features]\nlags = [\"90s\"]", "features.lags"),
            ("[source]\nuri = \"kafka\"", "source.uri"),
            ("[sink]\nuri = \"jsonl:\"", "sink.uri"),
            ("[generator]\nlate = 2.0", "generator.late"),
            ("[cluster]\nprocesses = 2", "cluster.hosts"),
            ("[decode]\nmax_value = -1.0", "decode.max_value"),
            ("[sink]\nuri = \"kubernetes\"\n[kubernetes]\nmin_interval = \"often\"", "kubernetes.min_interval"),
            ("[sink]\nuri = \"kubernetes\"\n[kubernetes]\nfield_manager = \"\"", "kubernetes.field_manager"),
            ("[source]\nuri = \"kafka://h:1/t\"\nfrom = \"now\"", "source.from"),
            ("[source]\nuri = \"kafka://h:1/t\"\nidle_timeout = \"0s\"", "source.idle_timeout"),
            ("[source]\nuri = \"kafka://nohost/t\"", "source.uri"),
            ("[sink]\nuri = \"kafka://h:1/\"", "sink.uri"),
            ("[sink]\ndead_letter = \"kafka://h:1\"", "sink.dead_letter"),
            ("[metrics]\naddr = \"localhost\"", "metrics.addr"),
            ("[metrics]\nlinger = \"a while\"", "metrics.linger"),
            ("[metrics]\nstall_timeout = \"0s\"", "metrics.stall_timeout"),
        ] {
            let e = settings(toml).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(field), "{toml}: {e}");
        }
    }

    #[test]
    fn a_full_config_parses() {
        let s = settings(
            r#"
            [source]
            uri = "replay:trace.csv"
            format = "csv"
            speedup = 60.0
            [event_time]
            lateness = "1m"
            [features]
            tumbling = ["5m"]
            sliding = [{ width = "1h", slide = "5m" }]
            lags = ["1d"]
            [sink]
            uri = "jsonl:out.jsonl"
            features = "features.jsonl"
            [cluster]
            workers = 2
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.features.pane(), 5 * 60_000);
        assert_eq!(s.sink, SinkSettings::Jsonl("out.jsonl".into()));
        assert_eq!(s.cluster.workers, 2);
        assert!(matches!(s.source, SourceSettings::Replay { speedup: 60.0, .. }));
    }

    #[test]
    fn a_kafka_config_parses() {
        let s = settings(
            r#"
            [source]
            uri = "kafka://127.0.0.1:9092/metrics"
            format = "bincode"
            from = "beginning"
            group = "g"
            exit_when_idle = "5s"
            [sink]
            uri = "kafka://127.0.0.1:9092/forecasts"
            dead_letter = "kafka://127.0.0.1:9092/dead"
            [kafka]
            properties = { "security.protocol" = "plaintext" }
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let SourceSettings::Kafka(k) = &s.source else { panic!("a kafka source: {:?}", s.source) };
        assert_eq!((k.format, k.from, k.group.as_str()), (Format::Bincode, StartFrom::Beginning, "g"));
        assert_eq!((k.idle_timeout, k.exit_when_idle), (Duration::from_secs(10), Some(Duration::from_secs(5))));
        assert!(matches!(&s.sink, SinkSettings::Kafka(t) if t.topic == "forecasts"));
        assert_eq!(s.dead_letter_kafka.as_ref().map(|t| t.topic.as_str()), Some("dead"));
        assert_eq!(s.dead_letter_path, None);
        assert_eq!(s.kafka_properties.get("security.protocol").map(String::as_str), Some("plaintext"));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// `deploy/job.toml` documents every field with its default: it must
    /// parse, and give the same settings as an empty file.
    #[test]
    fn the_example_job_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/job.toml");
        let example = Settings::from_config(&JobConfig::from_file(&path).unwrap()).unwrap();
        let empty = Settings::from_config(&JobConfig::default()).unwrap();
        assert_eq!(example, empty);
    }
}
