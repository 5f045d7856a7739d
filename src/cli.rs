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
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline. With no arguments: the built-in generator for one
    /// simulated week, then a summary.
    Run(RunArgs),
    /// Write a trace or the generator's stream to a Kafka topic, keyed by
    /// deployment, for users and benchmarks.
    Produce(ProduceArgs),
    /// Rolling-origin forecast accuracy of every model and of the selection
    /// on a trace: MASE, sMAPE and 90% interval coverage.
    ForecastEval(ForecastEvalArgs),
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
    /// `stdout` (a summary), `jsonl:PATH` or `kafka://HOST:PORT/TOPIC`.
    #[arg(long)]
    pub sink: Option<String>,
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
