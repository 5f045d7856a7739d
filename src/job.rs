//! A prescale job: the timely cluster, the dataflow on each worker, the
//! source that feeds it, the writers, and the summary.
//!
//! Data leaves the dataflow through one writer: rows bound for a file or a
//! Kafka topic are serialized on the worker that computed them and
//! exchanged to worker 0, which alone writes, so a multi-process job still
//! produces one file. The writer pushes what it wrote to the OS (files) or
//! to the broker (Kafka, flushed) before the dataflow's frontier may pass
//! it, so the probe's frontier is a bound on what has been written: the
//! Kafka source commits offsets against it, and a job resuming from those
//! commits suppresses the rows below it rather than writing them twice
//! (see [`crate::kafka::offsets`]).

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
use prescale_dataflows::quality;
use prescale_dataflows::time::{MINUTE, Millis};
use timely::CommunicationConfig;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::{Exchange, Inspect, Probe};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{InputHandle, ProbeHandle, StreamVec};
use timely::worker::Worker;

use crate::config::{ClusterSettings, Settings, SinkSettings, SourceSettings};
use crate::error::{Error, Result};
use crate::kafka::sink::KafkaSink;
use crate::kafka::{self, source::Plan};
use crate::kube::KubeIo;
use crate::kube::sink::DecisionSender;
use crate::metrics::{self, WorkerMetrics, health};
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
pub fn run(mut settings: Settings) -> Result<Option<Summary>> {
    let started = Instant::now();
    // The embedded cluster lives until the job ends.
    let embedded = match &settings.source {
        SourceSettings::KafkaEmbedded(g) => {
            let embedded = kafka::embedded::start(g)?;
            settings.source = SourceSettings::Kafka(embedded.source.clone());
            Some(embedded)
        }
        _ => None,
    };
    let settings = Arc::new(settings);
    let config = timely_config(&settings.cluster);
    let observed = metrics::global();
    observed.health.start(settings.cluster.workers, settings.metrics.stall_timeout);
    observed.closes.start(settings.cluster.workers);
    tracing::info!(
        source = %source_name(&settings.source),
        workers = settings.cluster.workers,
        process = settings.cluster.process,
        processes = settings.cluster.processes(),
        "job starting"
    );
    let shared = Arc::clone(&settings);
    // The Kubernetes sink and watcher live in the process of worker 0,
    // which alone writes decisions.
    let mut kube = match &settings.sink {
        SinkSettings::Kubernetes(k) if settings.cluster.process == 0 => {
            Some(KubeIo::start(k).inspect_err(|_| observed.health.finished(false))?)
        }
        _ => None,
    };
    let feed =
        kube.as_mut().map(|k| KubeFeed { decisions: k.sender(), specs: std::sync::Mutex::new(k.take_updates()) });
    let guards = timely::execute(config, move |worker| run_worker(worker, &shared, started, feed.as_ref()))
        .map_err(Error::Runtime)
        .inspect_err(|_| observed.health.finished(false))?;
    let mut summary = None;
    for result in guards.join() {
        let failed = match result {
            Ok(Ok(Some(s))) => {
                summary = Some(s);
                None
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some(e),
            Err(panic) => Some(Error::Runtime(panic)),
        };
        if let Some(e) = failed {
            observed.health.finished(false);
            return Err(e);
        }
    }
    observed.health.finished(true);
    tracing::info!(elapsed_seconds = started.elapsed().as_secs_f64(), "job finished");
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
    if let Some(embedded) = embedded {
        embedded.finish()?;
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

    /// Hands what is buffered to the OS, so that it survives the process.
    fn push(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(e);
        }
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

/// Something at worker 0 that takes each line of a stream.
type LineTaker = Box<dyn Fn(&str)>;

/// Where one stream's rows go: files and a Kafka topic, held by worker 0.
struct Writers<D> {
    files: Vec<SharedFile>,
    kafka: Option<Rc<KafkaSink>>,
    /// The Kafka key of a row, on every worker when a topic is written.
    key: Option<fn(&D) -> String>,
    /// Rows at timely times below this were written by an earlier run.
    suppress_below: Millis,
    /// Other takers of each line at worker 0: the end-of-run comparison,
    /// the Kubernetes sink.
    others: Vec<LineTaker>,
}

/// Writes a stream as JSON lines, once: when `enabled`, every worker
/// serializes its part (with its Kafka key) and sends it to worker 0, which
/// alone holds the files and the producer. After each batch of work the
/// writer pushes files to the OS and flushes the producer, before the
/// frontier can pass the rows it wrote.
fn write_lines<'scope, D: serde::Serialize + 'static>(
    stream: StreamVec<'scope, Millis, D>,
    enabled: bool,
    writers: Writers<D>,
    probe: &ProbeHandle<Millis>,
) {
    if !enabled {
        stream.probe_with(probe);
        return;
    }
    let Writers { files, kafka, key, suppress_below, others } = writers;
    stream
        .unary::<CapacityContainerBuilder<Vec<(String, String)>>, _, _, _>(Pipeline, "Serialize", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    if *cap.time() < suppress_below {
                        return;
                    }
                    let mut session = output.session(&cap);
                    for batch in data {
                        for row in batch.drain(..) {
                            if let Ok(json) = serde_json::to_string(&row) {
                                session.give((key.map(|k| k(&row)).unwrap_or_default(), json));
                            }
                        }
                    }
                });
            }
        })
        .exchange(|_| 0)
        .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Write", move |_, _| {
            move |input, _output| {
                let mut wrote = false;
                input.for_each_stamp(|_, data| {
                    for batch in data {
                        for (key, line) in batch.drain(..) {
                            for f in &files {
                                f.borrow_mut().write_line(&line);
                            }
                            if let Some(sink) = &kafka {
                                sink.send(key.as_bytes(), line.as_bytes());
                            }
                            for other in &others {
                                other(&line);
                            }
                            wrote = true;
                        }
                    }
                });
                if wrote {
                    for f in &files {
                        f.borrow_mut().push();
                    }
                    if let Some(sink) = &kafka {
                        flush_or_exit(sink);
                    }
                }
            }
        })
        .probe_with(probe);
}

/// Flushes a Kafka sink before the frontier may pass what it was given. A
/// row the broker refused after librdkafka's retries cannot be written
/// later, and letting the frontier pass it would let the source commit
/// offsets beyond a lost row: the process ends instead (exit 1), so a
/// restart resumes before it.
fn flush_or_exit(sink: &KafkaSink) {
    let result = sink.flush().and_then(|()| match sink.failed() {
        0 => Ok(()),
        n => Err(Error::KafkaSetup(format!("{n} records were not delivered"))),
    });
    if let Err(e) = result {
        tracing::error!(error = %e, "kafka sink: stopping before any offset is committed past an undelivered row");
        std::process::exit(1);
    }
}

/// Kafka key of a dead letter: where it came from.
fn rejected_key(row: &prescale_dataflows::Rejected) -> String {
    format!("{}/{}", row.origin.source, row.origin.partition)
}

/// Kafka key of a decision: its target, so one target's decisions stay in
/// order in one partition.
fn decision_key(row: &Decision) -> String {
    row.target_key()
}

/// Per-worker counts of what passes through the dataflow, updated per
/// batch or row (records enter as partials, one per series and pane), read
/// when the worker publishes its metrics.
#[derive(Default)]
struct RowCounts {
    used: Cell<u64>,
    rejected: RefCell<Vec<u64>>,
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

    fn reject(&self, reason: prescale_dataflows::record::RejectReason) {
        let mut rejected = self.rejected.borrow_mut();
        if rejected.len() <= reason.index() {
            rejected.resize(reason.index() + 1, 0);
        }
        rejected[reason.index()] += 1;
    }

    /// The counts as seen in the dataflow, for the metrics. (The summary
    /// takes `used` and `rejected` from the ingest instead: the two must
    /// agree once the dataflow is complete.)
    fn observed(&self, counters: &WindowCounters) -> WorkerStats {
        WorkerStats {
            used: self.used.get(),
            rejected: self.rejected.borrow().clone(),
            tumbling_windows: self.tumbling.get(),
            sliding_windows: self.sliding.get(),
            corrections: self.corrections.get(),
            lag_rows: self.lags.get(),
            corrected_records: counters.corrected_records.get(),
            forecasts: self.forecasts.get(),
            decisions: self.decisions.get(),
        }
    }
}

/// The name of a source in the summary and the metrics' `source` label.
fn source_name(source: &SourceSettings) -> String {
    match source {
        SourceSettings::Generator(_) => "generator".to_owned(),
        SourceSettings::Replay { path, .. } => format!("replay:{}", path.display()),
        SourceSettings::Kafka(k) => k.topic.uri(),
        SourceSettings::KafkaEmbedded(_) => "kafka-embedded".to_owned(),
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
        SinkSettings::Stdout | SinkSettings::Kafka(_) | SinkSettings::Kubernetes(_) => None,
    };
    let props = &settings.kafka_properties;
    let sink_topic = match &settings.sink {
        SinkSettings::Kafka(t) => Some(t),
        _ => None,
    };
    let producer = |topic: Option<&kafka::KafkaTopic>| -> Result<Option<Rc<KafkaSink>>> {
        match topic {
            Some(t) if is_writer => Ok(Some(Rc::new(KafkaSink::create(t, props)?))),
            _ => Ok(None),
        }
    };
    let decision_kafka = producer(sink_topic)?;
    let dead_letter_kafka = producer(settings.dead_letter_kafka.as_ref())?;
    let plan: Option<Plan> = match &settings.source {
        SourceSettings::Kafka(k) => Some(kafka::source::plan(k, props)?),
        _ => None,
    };
    let suppress_below = plan.as_ref().map_or(0, |p| p.suppress_below);
    let feature_files: Vec<SharedFile> = open(settings.features_path.as_ref())?.into_iter().collect();
    let forecast_files: Vec<SharedFile> = open(settings.forecasts_path.as_ref())?.into_iter().collect();
    let decision_files: Vec<SharedFile> = open(sink_path)?.into_iter().collect();
    let dead_letter: Vec<SharedFile> = open(settings.dead_letter_path.as_ref())?.into_iter().collect();
    // Worker 0 keeps the default scaler's decisions to compare them with
    // HPA and the oracle on the simulated cluster at the end, and hands
    // every decision to the Kubernetes sink when there is one.
    let compared: Rc<RefCell<Vec<Decision>>> = Rc::default();
    // Only for a source that ends: a stream would grow the list forever.
    let finite = matches!(settings.source, SourceSettings::Generator(_) | SourceSettings::Replay { .. });
    let compare = settings.decide.default.is_some() && finite;
    let mut others: Vec<LineTaker> = Vec::new();
    if compare && is_writer {
        let all = Rc::clone(&compared);
        others.push(Box::new(move |line| {
            // The line was serialized from a Decision a moment ago.
            if let Ok(d) = serde_json::from_str(line) {
                all.borrow_mut().push(d);
            }
        }));
    }
    if let Some(k) = kube.filter(|_| is_writer) {
        let sink = k.decisions.clone();
        others.push(Box::new(move |line| {
            // As above; a closed sink has already reported why.
            if let Ok(d) = serde_json::from_str(line) {
                sink.send(d);
            }
        }));
    }
    let write_features = settings.features_path.is_some();
    let write_forecasts = settings.forecasts_path.is_some();
    let write_decisions = sink_path.is_some() || sink_topic.is_some() || compare || kube.is_some();
    let write_rejected = settings.dead_letter_path.is_some() || settings.dead_letter_kafka.is_some();
    let writers_of_features = Writers { files: feature_files, kafka: None, key: None, suppress_below, others: vec![] };
    let writers_of_forecasts =
        Writers { files: forecast_files, kafka: None, key: None, suppress_below, others: vec![] };
    let writers_of_decisions = Writers {
        files: decision_files,
        kafka: decision_kafka.clone(),
        key: sink_topic.map(|_| decision_key as fn(&Decision) -> String),
        suppress_below,
        others,
    };
    let writers_of_rejected = Writers {
        files: dead_letter,
        kafka: dead_letter_kafka.clone(),
        key: settings.dead_letter_kafka.as_ref().map(|_| rejected_key as fn(&prescale_dataflows::Rejected) -> String),
        // Dead letters are at least once: a restart may repeat some.
        suppress_below: 0,
        others: vec![],
    };

    let counters = WindowCounters::default();
    let row_counts = Rc::new(RowCounts::default());
    let refits = stage::RefitCounters::default();
    let observed = metrics::global();
    let local = worker.index() % settings.cluster.workers.max(1);
    // Built on every worker at the same point, as timely requires.
    let heartbeat = health::heartbeat(worker, &observed.health, local);
    let probe = ProbeHandle::new();
    let mut specs = InputHandle::<Millis, CapacityContainerBuilder<Vec<SpecUpdate>>>::new();
    let inputs = worker.dataflow::<Millis, _, _>(|scope| {
        let (inputs, partials, rejected) = ingest::inputs(&scope);
        let counts = Rc::clone(&row_counts);
        let partials = partials.inspect(move |p| counts.used.set(counts.used.get() + p.agg.count));
        let counts = Rc::clone(&row_counts);
        let rejected = rejected.inspect(move |r| counts.reject(r.reason));
        let counts = Rc::clone(&row_counts);
        let rows =
            features::features(partials, &settings.features, counters.clone()).inspect(move |row| counts.count(row));
        let counts = Rc::clone(&row_counts);
        let forecasts =
            stage::forecasts_counted(rows.clone(), &settings.forecast, refits.clone()).inspect(move |row| {
                counts.forecasts.set(counts.forecasts.get() + 1);
                observed.forecast(row);
            });
        let counts = Rc::clone(&row_counts);
        let readings = decide::readings(rows.clone(), settings.decide.reactive_width, settings.forecast.signal);
        let flags = quality::flags(rejected.clone());
        let decisions = decide::decisions(forecasts.clone(), readings, specs.to_stream(scope), flags, &settings.decide)
            .inspect(move |d| {
                counts.decisions.set(counts.decisions.get() + 1);
                observed.decision(d, Instant::now());
            });
        write_lines(rows, write_features, writers_of_features, &probe);
        write_lines(forecasts, write_forecasts, writers_of_forecasts, &probe);
        write_lines(decisions, write_decisions, writers_of_decisions, &probe);
        write_lines(rejected, write_rejected, writers_of_rejected, &probe);
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
    let mut spec_input = |frontier: Option<Millis>| match frontier {
        Some(frontier) => {
            if let Some((rx, input)) = &mut live_specs {
                for mut update in rx.try_iter() {
                    update.time_ms = *input.time();
                    input.send(update);
                }
                if frontier > *input.time() {
                    input.advance_to(frontier);
                }
            }
        }
        // The source has ended: no later spec can change a decision.
        None => {
            if let Some((_, input)) = live_specs.take() {
                input.close();
            }
        }
    };
    spec_input(Some(0));
    let mut ingest = Ingest::new(inputs, settings.features.pane());
    let source = source_name(&settings.source);
    let mut publisher = WorkerMetrics::new(observed, &source, worker.index(), local);
    observed.health.worker_ready(local);
    // Each advance of the input frontier times the windows it closes, and
    // now and then publishes the worker's counts: never per record.
    let mut on_advance = |frontier: Option<Millis>| {
        spec_input(frontier);
        // The end of the input closes every window still open.
        publisher.input_advanced(frontier.unwrap_or(Millis::MAX));
        if frontier.is_some() && publisher.due(Instant::now()) {
            publisher.publish(&row_counts.observed(&counters), probe.with_frontier(|f| f.first().copied()));
            publisher.publish_refits(&refits);
        }
    };

    let mut feed = Feed::new(worker, &mut ingest, &probe, 2 * MINUTE).on_advance(&mut on_advance);
    match &settings.source {
        SourceSettings::Generator(g) => generator::drive(&mut feed, g, &settings.decode, settings.event_time),
        SourceSettings::Replay { path, format, speedup } => {
            replay::drive(&mut feed, path, *format, *speedup, &settings.decode, settings.event_time)?
        }
        SourceSettings::Kafka(k) => {
            let plan = plan.unwrap_or_default();
            let horizon = offsets_horizon(settings);
            kafka::source::drive(&mut feed, k, props, &plan, &settings.decode, settings.event_time, horizon)?
        }
        SourceSettings::KafkaEmbedded(_) => {
            return Err(Error::KafkaSetup("the embedded cluster was not started".into()));
        }
    }
    // A source that waits for its outputs (Kafka) has finished already;
    // finishing again changes nothing.
    feed.finish();
    while !probe.done() {
        worker.step_or_park(Some(PARK));
    }
    publisher.publish(&row_counts.observed(&counters), None);
    publisher.publish_refits(&refits);
    heartbeat.stop();
    for f in &files {
        f.borrow_mut().finish()?;
    }
    for sink in [&decision_kafka, &dead_letter_kafka].into_iter().flatten() {
        sink.finish()?;
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
    let workers = worker.peers();
    let totals = totals.borrow();
    let mut summary = Summary::new(source, workers, &totals, started.elapsed().as_secs_f64());
    if let Some(spec) = settings.decide.default.as_ref().filter(|_| finite) {
        summary.comparison = crate::backtest::compare_run(
            &compared.borrow(),
            settings.forecast.step,
            spec.target_per_replica,
            COMPARED_UTILIZATION,
            settings.event_time.lateness,
            spec.max_replicas,
        );
    }
    Ok(Some(summary))
}

/// The target utilisation the default scaler's `target_per_replica` is
/// taken to stand for in the end-of-run comparison: HPA's usual 70%.
const COMPARED_UTILIZATION: f64 = 0.7;
/// How far past a record's event time the output frontier must be before
/// a restart no longer needs the record: the widest window (its windows
/// are final), plus the longest lag (a later window's lag row reads its
/// window's mean), plus a tick.
fn offsets_horizon(settings: &Settings) -> Millis {
    let f = &settings.features;
    let widest = f.tumbling.iter().copied().chain(f.sliding.iter().map(|s| s.width)).max().unwrap_or(0);
    widest + f.lags.iter().copied().max().unwrap_or(0) + settings.event_time.tick
}
