//! A prescale job: the timely cluster, the dataflow on each worker, the
//! source that feeds it, the writers, and the summary.
//!
//! Data leaves the dataflow through one writer: rows bound for a file are
//! serialized on the worker that computed them and exchanged to worker 0,
//! which alone writes, so a multi-process job still produces one file.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use prescale_dataflows::decide::{self, Decision, SpecUpdate};
use prescale_dataflows::features::{self, FeatureRow, WindowCounters};
use prescale_dataflows::forecast::stage;
use prescale_dataflows::ingest::{self, Ingest};
use prescale_dataflows::time::{MINUTE, Millis};
use timely::CommunicationConfig;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::{Exchange, Inspect, Probe};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};
use timely::worker::Worker;

use crate::config::{ClusterSettings, Settings, SinkSettings, SourceSettings};
use crate::error::{Error, Result};
use crate::kube::KubeIo;
use crate::kube::sink::DecisionSender;
use crate::source::{Feed, PARK, generator, replay};
use crate::summary::{Summary, WorkerStats};

/// The timely configuration for these cluster settings.
pub fn timely_config(cluster: &ClusterSettings) -> timely::Config {
    let communication = if cluster.addresses.len() > 1 {
        CommunicationConfig::Cluster {
            threads: cluster.workers,
            process: cluster.process,
            addresses: cluster.addresses.clone(),
            report: false,
            zerocopy: false,
        }
    } else if cluster.workers > 1 {
        CommunicationConfig::Process(cluster.workers)
    } else {
        CommunicationConfig::Thread
    };
    timely::Config { communication, worker: timely::WorkerConfig::default() }
}

/// Runs a job to its end. Returns the summary in the process that hosts
/// worker 0, `None` in the others.
pub fn run(settings: Settings) -> Result<Option<Summary>> {
    let started = Instant::now();
    let settings = Arc::new(settings);
    let config = timely_config(&settings.cluster);
    let shared = Arc::clone(&settings);
    // The Kubernetes sink and watcher live in the process of worker 0,
    // which alone writes decisions.
    let mut kube = match &settings.sink {
        SinkSettings::Kubernetes(k) if settings.cluster.process == 0 => {
            Some(KubeIo::start(k, settings.forecast.level)?)
        }
        _ => None,
    };
    let feed =
        kube.as_mut().map(|k| KubeFeed { decisions: k.sender(), specs: std::sync::Mutex::new(k.take_updates()) });
    let guards = timely::execute(config, move |worker| run_worker(worker, &shared, started, feed.as_ref()))
        .map_err(Error::Runtime)?;
    let mut summary = None;
    for result in guards.join() {
        match result {
            Ok(Ok(Some(s))) => summary = Some(s),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(e),
            Err(panic) => return Err(Error::Runtime(panic)),
        }
    }
    if let Some(kube) = kube {
        let r = kube.finish()?;
        eprintln!(
            "kubernetes sink: {} decisions, {} written, {} scaled, {} coalesced, {} unmanaged, {} missing targets, \
             {} conflicts, {} retries, {} dropped",
            r.received,
            r.written,
            r.scaled,
            r.coalesced,
            r.unmanaged,
            r.missing_targets,
            r.conflicts,
            r.retries,
            r.dropped
        );
    }
    if let (Some(summary), Some(path)) = (&summary, &settings.summary_json) {
        let json = serde_json::to_string_pretty(summary).unwrap_or_default();
        std::fs::write(path, json + "\n").map_err(|source| Error::Io {
            what: "writing summary",
            path: path.clone(),
            source,
        })?;
    }
    Ok(summary)
}

/// What worker 0 exchanges with the Kubernetes side: decisions out, the
/// PredictiveScalers' specs in.
struct KubeFeed {
    decisions: DecisionSender,
    /// Taken by worker 0, which alone feeds the spec input.
    specs: std::sync::Mutex<Option<std::sync::mpsc::Receiver<SpecUpdate>>>,
}

/// A JSON-lines file written by worker 0.
struct LineFile {
    path: PathBuf,
    out: BufWriter<File>,
    error: Option<std::io::Error>,
}

type SharedFile = Rc<RefCell<LineFile>>;

impl LineFile {
    fn create(path: &Path) -> Result<SharedFile> {
        let file = File::create(path).map_err(|source| Error::Io {
            what: "creating output",
            path: path.to_owned(),
            source,
        })?;
        Ok(Rc::new(RefCell::new(LineFile {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            error: None,
        })))
    }

    fn write_line(&mut self, line: &str) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(line.as_bytes()).and_then(|_| self.out.write_all(b"\n"))
        {
            self.error = Some(e);
        }
    }

    fn finish(&mut self) -> Result<()> {
        let result = match self.error.take() {
            Some(e) => Err(e),
            None => self.out.flush(),
        };
        result.map_err(|source| Error::Io { what: "writing output", path: self.path.clone(), source })
    }
}

/// Where worker 0 puts a line: a file, or memory for the end-of-run
/// comparison.
enum LineTarget {
    File(SharedFile),
    Decisions(Rc<RefCell<Vec<Decision>>>),
    Kube(DecisionSender),
}

impl LineTarget {
    fn take(&self, line: &str) {
        match self {
            LineTarget::File(f) => f.borrow_mut().write_line(line),
            LineTarget::Decisions(all) => {
                // The line was serialized from a Decision a moment ago.
                if let Ok(d) = serde_json::from_str(line) {
                    all.borrow_mut().push(d);
                }
            }
            LineTarget::Kube(sink) => {
                // As above; a closed sink has already reported why.
                if let Ok(d) = serde_json::from_str(line) {
                    sink.send(d);
                }
            }
        }
    }
}

/// Writes a stream as JSON lines, once: when `enabled`, every worker
/// serializes its part and sends it to worker 0, which alone holds the
/// targets. Rows travel as JSON because some use serde features (flatten)
/// that timely's binary encoding between processes does not support.
fn write_lines<'scope, D: serde::Serialize + 'static>(
    stream: StreamVec<'scope, Millis, D>,
    enabled: bool,
    targets: Vec<LineTarget>,
    probe: &ProbeHandle<Millis>,
) {
    if !enabled {
        stream.probe_with(probe);
        return;
    }
    stream
        .flat_map(|row| serde_json::to_string(&row).ok())
        .exchange(|_| 0)
        .inspect(move |line: &String| {
            for t in &targets {
                t.take(line);
            }
        })
        .probe_with(probe);
}

fn line_files(list: impl IntoIterator<Item = Option<SharedFile>>) -> Vec<LineTarget> {
    list.into_iter().flatten().map(LineTarget::File).collect()
}

/// Per-worker counts of rows, updated as rows pass.
#[derive(Default)]
struct RowCounts {
    forecasts: Cell<u64>,
    decisions: Cell<u64>,
    tumbling: Cell<u64>,
    sliding: Cell<u64>,
    corrections: Cell<u64>,
    lags: Cell<u64>,
}

impl RowCounts {
    fn count(&self, row: &FeatureRow) {
        let bump = |c: &Cell<u64>| c.set(c.get() + 1);
        match row {
            FeatureRow::Tumbling(r) if r.revision == 0 => bump(&self.tumbling),
            FeatureRow::Sliding(r) if r.revision == 0 => bump(&self.sliding),
            FeatureRow::Tumbling(_) | FeatureRow::Sliding(_) => bump(&self.corrections),
            FeatureRow::Lag(_) => bump(&self.lags),
        }
    }
}

fn run_worker(
    worker: &mut Worker,
    settings: &Settings,
    started: Instant,
    kube: Option<&KubeFeed>,
) -> Result<Option<Summary>> {
    let is_writer = worker.index() == 0;
    let mut files: Vec<SharedFile> = Vec::new();
    let mut open = |path: Option<&PathBuf>| -> Result<Option<SharedFile>> {
        match path {
            Some(p) if is_writer => {
                let f = LineFile::create(p)?;
                files.push(Rc::clone(&f));
                Ok(Some(f))
            }
            _ => Ok(None),
        }
    };
    let sink_path = match &settings.sink {
        SinkSettings::Jsonl(p) => Some(p),
        SinkSettings::Stdout | SinkSettings::Kubernetes(_) => None,
    };
    let feature_files = line_files([open(settings.features_path.as_ref())?]);
    let forecast_files = line_files([open(settings.forecasts_path.as_ref())?]);
    let mut decision_targets = line_files([open(sink_path)?]);
    let dead_letter = line_files([open(settings.dead_letter_path.as_ref())?]);
    // Worker 0 keeps the default scaler's decisions to compare them with
    // HPA and the oracle on the simulated cluster at the end.
    let compared = Rc::new(RefCell::new(Vec::new()));
    let compare = settings.decide.default.is_some();
    if compare && is_writer {
        decision_targets.push(LineTarget::Decisions(Rc::clone(&compared)));
    }
    let write_features = settings.features_path.is_some();
    let write_forecasts = settings.forecasts_path.is_some();
    if let Some(k) = kube.filter(|_| is_writer) {
        decision_targets.push(LineTarget::Kube(k.decisions.clone()));
    }
    let write_decisions = sink_path.is_some() || compare || kube.is_some();
    let write_rejected = settings.dead_letter_path.is_some();

    let counters = WindowCounters::default();
    let row_counts = Rc::new(RowCounts::default());
    let probe = ProbeHandle::new();
    let mut specs = InputHandle::<Millis, CapacityContainerBuilder<Vec<SpecUpdate>>>::new();
    let inputs = worker.dataflow::<Millis, _, _>(|scope| {
        let (inputs, partials, rejected) = ingest::inputs(&scope);
        let counts = Rc::clone(&row_counts);
        let rows =
            features::features(partials, &settings.features, counters.clone()).inspect(move |row| counts.count(row));
        let counts = Rc::clone(&row_counts);
        let forecasts = stage::forecasts(rows.clone(), &settings.forecast)
            .inspect(move |_| counts.forecasts.set(counts.forecasts.get() + 1));
        let counts = Rc::clone(&row_counts);
        let readings = decide::readings(rows.clone(), settings.decide.reactive_width, settings.forecast.signal);
        let decisions = decide::decisions(forecasts.clone(), readings, specs.to_stream(scope), &settings.decide)
            .inspect(move |_| counts.decisions.set(counts.decisions.get() + 1));
        write_lines(rows, write_features, feature_files, &probe);
        write_lines(forecasts, write_forecasts, forecast_files, &probe);
        write_lines(decisions, write_decisions, decision_targets, &probe);
        write_lines(rejected, write_rejected, dead_letter, &probe);
        inputs
    });
    // Worker 0 feeds the PredictiveScalers' specs: the ones listed when the
    // job started at time 0, so they configure it from its first forecast,
    // and each later change at the ingest frontier when it arrives, so
    // creating, editing or deleting a scaler changes decisions during the
    // run. Without the kubernetes sink only the default scaler decides, and
    // the input closes at once.
    let updates = match kube.filter(|_| is_writer) {
        Some(k) => k.specs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take(),
        None => None,
    };
    let mut live_specs = match updates {
        Some(rx) => Some((rx, specs)),
        None => {
            specs.close();
            None
        }
    };
    let mut spec_input = |frontier: Millis| {
        if let Some((rx, input)) = &mut live_specs {
            for mut update in rx.try_iter() {
                update.time_ms = *input.time();
                input.send(update);
            }
            if frontier > *input.time() {
                input.advance_to(frontier);
            }
        }
    };
    spec_input(0);
    let mut ingest = Ingest::new(inputs, settings.features.pane());

    let mut feed = Feed::new(worker, &mut ingest, &probe, 2 * MINUTE).on_advance(&mut spec_input);
    match &settings.source {
        SourceSettings::Generator(g) => generator::drive(&mut feed, g, &settings.decode, settings.event_time),
        SourceSettings::Replay { path, format, speedup } => {
            replay::drive(&mut feed, path, *format, *speedup, &settings.decode, settings.event_time)?
        }
    }
    // The source has ended: no later spec can change a decision.
    if let Some((_, input)) = live_specs.take() {
        input.close();
    }
    ingest.close();
    while !probe.done() {
        worker.step_or_park(Some(PARK));
    }
    for f in &files {
        f.borrow_mut().finish()?;
    }

    // Gather every worker's counts at worker 0.
    let mut stats = WorkerStats::from_ingest(ingest.stats());
    stats.tumbling_windows = row_counts.tumbling.get();
    stats.sliding_windows = row_counts.sliding.get();
    stats.corrections = row_counts.corrections.get();
    stats.lag_rows = row_counts.lags.get();
    stats.forecasts = row_counts.forecasts.get();
    stats.decisions = row_counts.decisions.get();
    stats.corrected_records = counters.corrected_records.get();
    let totals = Rc::new(RefCell::new(WorkerStats::default()));
    let mut stats_input = InputHandle::<u64, CapacityContainerBuilder<Vec<WorkerStats>>>::new();
    let stats_probe = worker.dataflow::<u64, _, _>(|scope| {
        let sink = Rc::clone(&totals);
        let (probe, _) = stats_input
            .to_stream(scope)
            .exchange(|_| 0)
            .inspect(move |s: &WorkerStats| sink.borrow_mut().add(s))
            .probe();
        probe
    });
    stats_input.send(stats);
    stats_input.close();
    while !stats_probe.done() {
        worker.step_or_park(Some(PARK));
    }
    if !is_writer {
        return Ok(None);
    }
    let source = match &settings.source {
        SourceSettings::Generator(_) => "generator".to_owned(),
        SourceSettings::Replay { path, .. } => format!("replay:{}", path.display()),
    };
    let workers = worker.peers();
    let totals = totals.borrow();
    let mut summary = Summary::new(source, workers, &totals, started.elapsed().as_secs_f64());
    if let Some(spec) = &settings.decide.default {
        summary.comparison = crate::backtest::compare_run(
            &compared.borrow(),
            settings.forecast.step,
            spec.target_per_replica,
            COMPARED_UTILIZATION,
            settings.event_time.lateness,
        );
    }
    Ok(Some(summary))
}

/// The target utilisation the default scaler's `target_per_replica` is
/// taken to stand for in the end-of-run comparison: HPA's usual 70%.
const COMPARED_UTILIZATION: f64 = 0.7;
