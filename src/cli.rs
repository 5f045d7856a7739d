//! Command-line flags, the first of two parsing stages: raw flags here,
//! applied over the job config and validated in [`crate::config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::JobConfig;
use crate::error::{Error, Result};

/// prescale: scale Kubernetes workloads before load arrives.
#[derive(Debug, Parser)]
#[command(name = "prescale", version, about)]
pub struct Cli {
    /// How log lines on stderr are written: `text` or `json` (one object
    /// per line).
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the pipeline. With no arguments: the built-in generator for one
    /// simulated week, then a summary.
    Run(RunArgs),
    /// Replay a trace through features → forecast → decide and compare
    /// prescale with HPA, an oracle and a static peak on a simulated
    /// cluster, at a common target and at equal service.
    Backtest(BacktestArgs),
    /// Write a trace or the generator's stream to a Kafka topic, keyed by
    /// deployment, for users and benchmarks.
    Produce(ProduceArgs),
    /// Rolling-origin forecast accuracy of every model and of the selection
    /// on a trace: MASE, sMAPE and 90% interval coverage.
    ForecastEval(ForecastEvalArgs),
    /// Print the PredictiveScaler CustomResourceDefinition as YAML
    /// (what `deploy/crd.yaml` holds).
    Crd,
}

/// Flags of `prescale forecast-eval`.
#[derive(Debug, Args)]
pub struct ForecastEvalArgs {
    /// The trace (CSV or JSON lines).
    #[arg(long, value_name = "PATH")]
    pub trace: PathBuf,
    /// Only this series.
    #[arg(long)]
    pub series: Option<String>,
    /// Grid step the series is evaluated at.
    #[arg(long, default_value = "5m")]
    pub step: String,
    /// Decision horizon: reported besides 1 step, 30 min and 1 h, and the
    /// horizon models are ranked on.
    #[arg(long, default_value = "30m")]
    pub horizon: String,
    /// Forecast origins per series, over its second half.
    #[arg(long, default_value_t = 100)]
    pub origins: usize,
    /// Print one JSON array of rows instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `prescale backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The trace (CSV `timestamp,series,value` or JSON lines).
    #[arg(long, value_name = "PATH")]
    pub trace: PathBuf,
    /// Only this series; repeat the flag for several (a quick look at a
    /// few series of a large trace).
    #[arg(long, value_name = "NAME")]
    pub series: Vec<String>,
    /// Load one replica serves at 100% (default: per series, so that its
    /// 99th-percentile load needs 20 replicas at the SLO utilisation).
    #[arg(long)]
    pub capacity: Option<f64>,
    /// The common target utilisation of HPA and prescale (default 0.7).
    #[arg(long, conflicts_with = "target_per_replica")]
    pub target_utilization: Option<f64>,
    /// The common target as load per replica (needs --capacity).
    #[arg(long, requires = "capacity")]
    pub target_per_replica: Option<f64>,
    /// Pod start-up delay.
    #[arg(long, default_value = "120s")]
    pub startup: String,
    /// Age of the metrics reactive policies see, and delay of prescale's
    /// decisions.
    #[arg(long, default_value = "60s")]
    pub metric_delay: String,
    /// Utilisation above which a minute counts as under-provisioned.
    #[arg(long, default_value_t = 0.85)]
    pub slo_utilization: f64,
    /// Share of minutes allowed under-provisioned at equal service.
    #[arg(long, default_value_t = 0.005)]
    pub budget: f64,
    /// The interval level whose upper bound prescale sizes for (0 = the
    /// point forecast; default 0.6, about the forecast's 80th percentile).
    #[arg(long)]
    pub level: Option<f64>,
    /// Target utilisations swept for equal service: FROM:TO:STEP.
    #[arg(long, default_value = "0.1:1.2:0.02")]
    pub sweep: String,
    /// Scale-down stabilisation windows swept with each target, for HPA
    /// and prescale alike (Kubernetes' 300 s is always added).
    #[arg(long, value_delimiter = ',', default_value = "0s,30s,60s,120s,300s")]
    pub sweep_windows: Vec<String>,
    /// Start of scoring (at most half the trace).
    #[arg(long, default_value = "7d")]
    pub warmup: String,
    /// The step prescale forecasts and decides in, a multiple of the
    /// trace's (default: the trace's; a series at a multiple of it keeps
    /// its own), so that the load varies within it.
    #[arg(long)]
    pub forecast_step: Option<String>,
    /// Timely worker threads.
    #[arg(long, short = 'w', default_value_t = 1)]
    pub workers: usize,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write an HTML report with plots to DIR/index.html.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

impl BacktestArgs {
    /// Validated backtest settings.
    pub fn settings(&self) -> Result<crate::backtest::BacktestSettings> {
        let mut s = crate::backtest::BacktestSettings::new(self.trace.clone());
        let duration = |flag: &'static str, text: &str| {
            prescale_dataflows::time::parse_duration(text)
                .ok_or_else(|| Error::invalid(flag, format!("{text:?} is not a duration like 30s, 5m, 24h or 7d")))
        };
        s.series.clone_from(&self.series);
        s.capacity = self.capacity;
        if let Some(u) = self.target_utilization {
            s.target_utilization = u;
        }
        if let (Some(x), Some(c)) = (self.target_per_replica, self.capacity) {
            s.target_utilization = x / c;
        }
        s.startup = duration("--startup", &self.startup)?;
        s.metric_delay = duration("--metric-delay", &self.metric_delay)?;
        s.slo_utilization = self.slo_utilization;
        s.budget = self.budget;
        s.level = self.level;
        s.warmup = duration("--warmup", &self.warmup)?;
        s.forecast_step = self.forecast_step.as_deref().map(|t| duration("--forecast-step", t)).transpose()?;
        s.workers = self.workers;
        let parts: Vec<f64> = self.sweep.split(':').filter_map(|p| p.trim().parse().ok()).collect();
        let [from, to, step] = parts[..] else {
            return Err(Error::invalid("--sweep", format!("{:?} is not FROM:TO:STEP", self.sweep)));
        };
        if !(from > 0.0 && to >= from && step > 0.0 && (to - from) / step <= 200.0) {
            return Err(Error::invalid("--sweep", "needs 0 < FROM <= TO and at most 200 steps"));
        }
        let n = ((to - from) / step + 1e-9).floor() as usize;
        s.sweep = (0..=n).map(|i| ((from + i as f64 * step) * 1e6).round() / 1e6).collect();
        s.windows = self.sweep_windows.iter().map(|w| duration("--sweep-windows", w.trim())).collect::<Result<_>>()?;
        s.validate()
    }
}

/// Flags of `prescale produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Bootstrap servers, `HOST:PORT[,HOST:PORT…]`.
    #[arg(long)]
    pub brokers: String,
    /// The topic (it must exist).
    #[arg(long)]
    pub topic: String,
    /// A trace to produce (CSV or JSON lines).
    #[arg(long, value_name = "PATH", conflicts_with = "generator", required_unless_present = "generator")]
    pub trace: Option<PathBuf>,
    /// Produce the built-in generator's stream (see `[generator]` in the
    /// job config, e.g. `--config`, `--duration`, `--deployments`).
    #[arg(long)]
    pub generator: bool,
    /// Message format: `adapter-json`, `blog-json`, `bincode`, or `as-is`
    /// (a trace's lines unchanged; the default for a trace; `bincode` is
    /// the generator's default).
    #[arg(long)]
    pub format: Option<String>,
    /// At most N records per second (default: as fast as possible).
    #[arg(long, value_name = "N/s")]
    pub rate: Option<String>,
    /// Pace by event time at this speed-up (e.g. 60: an hour a minute).
    #[arg(long)]
    pub speedup: Option<f64>,
    /// Stop after N records.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Job config for `[generator]`, `[decode]` and `[kafka]` settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Generator: simulated time (default 7d).
    #[arg(long)]
    pub duration: Option<String>,
    /// Generator: deployments (default 20).
    #[arg(long)]
    pub deployments: Option<usize>,
    /// Generator: pods per deployment (default 5).
    #[arg(long)]
    pub pods: Option<usize>,
}

/// Flags of `prescale run`; each overrides the same field of `--config`.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// TOML job definition; every field optional (see README).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `generator`, `replay:PATH` (CSV or JSON lines),
    /// `kafka://HOST:PORT/TOPIC` or `kafka-embedded`.
    #[arg(long)]
    pub source: Option<String>,
    /// Format of a replayed file or of Kafka messages: `csv`,
    /// `adapter-json`, `blog-json` or `bincode`.
    #[arg(long)]
    pub format: Option<String>,
    /// Kafka: start from the `beginning`, the group's `committed` offsets
    /// (default) or the `latest` records.
    #[arg(long)]
    pub from: Option<String>,
    /// Kafka: consumer group of the committed offsets (default `prescale`).
    #[arg(long)]
    pub group: Option<String>,
    /// Kafka: end once no record arrived for this long (e.g. `5s`).
    #[arg(long, value_name = "DURATION")]
    pub exit_when_idle: Option<String>,
    /// Kafka: a partition silent this long stops holding the frontier
    /// back (default `10s`).
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Where decisions go: `stdout` (a summary), `jsonl:PATH`,
    /// `kafka://HOST:PORT/TOPIC`, or `kubernetes` (scale the targets of the
    /// cluster's PredictiveScalers).
    #[arg(long)]
    pub sink: Option<String>,
    /// With `--sink kubernetes`: write status and Events, never scale.
    #[arg(long)]
    pub dry_run: bool,
    /// With `--sink kubernetes`: watch PredictiveScalers in this namespace
    /// only.
    #[arg(long)]
    pub namespace: Option<String>,
    /// With `--sink kubernetes`: the kubeconfig file (default: KUBECONFIG,
    /// ~/.kube/config, or in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Write every feature row as a JSON line to PATH.
    #[arg(long, value_name = "PATH")]
    pub features: Option<PathBuf>,
    /// Write every forecast as a JSON line to PATH.
    #[arg(long, value_name = "PATH")]
    pub forecasts: Option<PathBuf>,
    /// Write every rejected record as a JSON line to PATH, or to the
    /// topic of `kafka://HOST:PORT/TOPIC`.
    #[arg(long, value_name = "PATH")]
    pub dead_letter: Option<PathBuf>,
    /// Write the summary as one JSON object to PATH.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
    /// Simulated time the generator covers (default 7d).
    #[arg(long)]
    pub duration: Option<String>,
    /// Generator deployments (default 20).
    #[arg(long)]
    pub deployments: Option<usize>,
    /// Generator pods per deployment (default 5).
    #[arg(long)]
    pub pods: Option<usize>,
    /// Replay speed-up over event time; 0 (default) is as fast as possible.
    #[arg(long)]
    pub speedup: Option<f64>,
    /// Timely worker threads per process.
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,
    /// Timely processes in the job.
    #[arg(long, short = 'n')]
    pub processes: Option<usize>,
    /// This process' index.
    #[arg(long, short = 'p')]
    pub process: Option<usize>,
    /// File with one host:port per process.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on HOST:PORT (default
    /// 127.0.0.1:9464; port 0 picks a free port), or `off`.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Keep the metrics endpoint up this long after the job ends, for a
    /// last scrape (default 0s).
    #[arg(long, value_name = "DURATION")]
    pub metrics_linger: Option<String>,
}

impl RunArgs {
    /// The job config: the file if given, with these flags applied over it.
    pub fn job_config(&self) -> Result<JobConfig> {
        let mut c = match &self.config {
            Some(path) => JobConfig::from_file(path)?,
            None => JobConfig::default(),
        };
        let set = |slot: &mut Option<String>, v: &Option<String>| {
            if v.is_some() {
                slot.clone_from(v);
            }
        };
        set(&mut c.source.uri, &self.source);
        set(&mut c.sink.uri, &self.sink);
        set(&mut c.generator.duration, &self.duration);
        set(&mut c.source.from, &self.from);
        set(&mut c.source.group, &self.group);
        set(&mut c.source.exit_when_idle, &self.exit_when_idle);
        set(&mut c.source.idle_timeout, &self.idle_timeout);
        set(&mut c.metrics.addr, &self.metrics_addr);
        set(&mut c.metrics.linger, &self.metrics_linger);
        if let Some(f) = &self.format {
            c.source.format = Some(parse_format("--format", f)?);
        }
        if self.features.is_some() {
            c.sink.features.clone_from(&self.features);
        }
        if self.forecasts.is_some() {
            c.sink.forecasts.clone_from(&self.forecasts);
        }
        if self.dead_letter.is_some() {
            c.sink.dead_letter.clone_from(&self.dead_letter);
        }
        if self.summary_json.is_some() {
            c.sink.summary_json.clone_from(&self.summary_json);
        }
        if self.hosts.is_some() {
            c.cluster.hosts.clone_from(&self.hosts);
        }
        if self.dry_run {
            c.kubernetes.dry_run = Some(true);
        }
        if self.namespace.is_some() {
            c.kubernetes.namespace.clone_from(&self.namespace);
        }
        if self.kubeconfig.is_some() {
            c.kubernetes.kubeconfig.clone_from(&self.kubeconfig);
        }
        c.generator.deployments = self.deployments.or(c.generator.deployments);
        c.generator.pods = self.pods.or(c.generator.pods);
        c.source.speedup = self.speedup.or(c.source.speedup);
        c.cluster.workers = self.workers.or(c.cluster.workers);
        c.cluster.processes = self.processes.or(c.cluster.processes);
        c.cluster.process = self.process.or(c.cluster.process);
        if self.speedup.is_some() && c.source.uri.as_deref().is_some_and(|u| !u.starts_with("replay:")) {
            return Err(Error::invalid("--speedup", "only a replay source can be paced"));
        }
        Ok(c)
    }
}

/// Parses a format name as the config spells it.
pub fn parse_format(field: &str, text: &str) -> Result<prescale_dataflows::decode::Format> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| Error::invalid(field, format!("{text:?}: expected csv, adapter-json, blog-json or bincode")))
}
