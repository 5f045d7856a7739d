//! What the job exports for Prometheus: a registry of counters, gauges and
//! histograms ([`Metrics`]), the HTTP endpoint that serves it with the
//! health checks ([`server`]), the state those checks read ([`health`]) and
//! the clock that times decisions from window close ([`latency`]).
//!
//! Data enters in three ways, none of them per record: each timely worker
//! publishes its running counts ([`WorkerStats`]) and frontiers through a
//! [`WorkerMetrics`] every [`PUBLISH_EVERY`] and once at its end, adding the
//! difference since its last publication; the decide stage's output is
//! counted per decision and per forecast (a few per series and window, not
//! per record); the Kafka and Kubernetes clients count their errors and
//! writes where they happen. Data leaves through [`Metrics::encode`], in the
//! Prometheus text format, when the endpoint is scraped.
//!
//! The registry is process-wide ([`global`]): counters are monotonic since
//! the process started, as Prometheus expects, and the clients deep in the
//! Kafka and Kubernetes modules reach it without extra plumbing.

pub mod health;
pub mod latency;
pub mod server;

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prescale_dataflows::decide::{Decision, FallbackReason, Reason};
use prescale_dataflows::forecast::stage::{ForecastRow, RefitCounters};
use prescale_dataflows::record::RejectReason;
use prescale_dataflows::time::Millis;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::summary::WorkerStats;

/// One label set: `(name, value)` pairs, names in snake_case.
type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// How often a worker publishes its counts while it runs.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The process' registry and the handles to every metric in it.
pub struct Metrics {
    registry: Registry,
    records_in: Counters,
    records_used: Counters,
    records_corrected: Counters,
    records_rejected: Counters,
    watermark_lag: Gauges,
    worker_frontier: Gauges,
    windows_emitted: Counters,
    forecasts: Counter,
    forecast_error: Histograms,
    fallbacks: Counters,
    decisions: Counters,
    scale_writes: Counters,
    kubernetes_errors: Counters,
    kafka_errors: Counters,
    decision_latency: Histogram,
    refits: Counters,
    refits_waiting: Gauges,
    /// Readiness and liveness, read by `/readyz` and `/healthz`.
    pub health: health::Health,
    /// When each local worker's input frontier passed each time.
    pub closes: latency::CloseClock,
}

/// Buckets of the decision latency: 0.1 ms to about 13 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_1, 2.0, 18)
}

/// Buckets of the forecast error (MASE, unitless): 1/8 to 64.
fn error_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.125, 2.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut counters = |name: &str, help: &str| {
            let family = Counters::default();
            // Counters are encoded with the `_total` suffix appended.
            registry.register(name, help, family.clone());
            family
        };
        let records_in = counters("prescale_records_in", "Records that reached a worker: used plus rejected");
        let records_used = counters("prescale_records_used", "Records used in features");
        let records_corrected = counters(
            "prescale_records_corrected",
            "Records that arrived after a window they belong to was emitted, within the lateness (the window was re-emitted)",
        );
        let records_rejected = counters("prescale_records_rejected", "Records rejected and dead-lettered, by reason");
        let windows_emitted =
            counters("prescale_windows_emitted", "Feature rows emitted, by kind (tumbling, sliding, correction, lag)");
        let fallbacks = counters("prescale_fallbacks", "Decisions that fell back to reactive scaling, by why");
        let decisions = counters("prescale_decisions", "Replica decisions, by what bound them");
        let scale_writes = counters("prescale_scale_writes", "What the Kubernetes sink did with decisions, by outcome");
        let kubernetes_errors = counters("prescale_kubernetes_errors", "Failed Kubernetes API calls, by kind");
        let kafka_errors = counters("prescale_kafka_errors", "Kafka client errors, by kind");
        let refits = counters(
            "prescale_refits",
            "Forecast model refits, by how they ran: idle (one per activation between window closes) or forced (still due when the series' next window closed: the worker was behind)",
        );
        for how in ["idle", "forced"] {
            refits.get_or_create_owned(&vec![("how", how.to_owned())]);
        }
        let forecasts = Counter::default();
        // Series created at zero, so that a scrape lists every family from
        // the start (an absent series and a zero are not the same to an
        // alert). Counting itself goes by the label's string form, so a
        // reason or kind not listed here still appears when it happens.
        for reason in DECISION_REASONS {
            decisions.get_or_create_owned(&vec![("reason", reason.to_string())]);
        }
        for why in FallbackReason::ALL {
            fallbacks.get_or_create_owned(&vec![("reason", why.as_str().to_owned())]);
        }
        for outcome in SCALE_OUTCOMES {
            scale_writes.get_or_create_owned(&vec![("outcome", outcome.to_owned())]);
        }
        for kind in KUBERNETES_ERRORS {
            kubernetes_errors.get_or_create_owned(&vec![("kind", kind.to_owned())]);
        }
        for kind in KAFKA_ERRORS {
            kafka_errors.get_or_create_owned(&vec![("kind", kind.to_owned())]);
        }
        registry.register("prescale_forecasts", "Forecasts made (one per series and forecast step)", forecasts.clone());
        let watermark_lag = Gauges::default();
        registry.register(
            "prescale_watermark_lag_seconds",
            "Wall-clock time minus the source's watermark (least input frontier of this process' workers); \
             for the generator and replays, the age of the event time being replayed",
            watermark_lag.clone(),
        );
        let worker_frontier = Gauges::default();
        registry.register(
            "prescale_worker_frontier_seconds",
            "Output frontier of each worker's dataflow, as Unix time in event time: everything before it is written",
            worker_frontier.clone(),
        );
        let forecast_error = Histograms::new_with_constructor(error_histogram);
        registry.register(
            "prescale_forecast_error_mase",
            "Recent out-of-sample MASE of the model that made each forecast, by model",
            forecast_error.clone(),
        );
        let refits_waiting = Gauges::default();
        registry.register(
            "prescale_refits_waiting",
            "Series of each worker with a forecast refit due and not yet run",
            refits_waiting.clone(),
        );
        let decision_latency = Histogram::new(latency_buckets());
        registry.register(
            "prescale_decision_latency_seconds",
            "Wall time from a decision's window closing (the input frontier of this process passing the window's end: \
             the window is final) to the decision leaving the decide stage",
            decision_latency.clone(),
        );
        Metrics {
            registry,
            refits,
            refits_waiting,
            records_in,
            records_used,
            records_corrected,
            records_rejected,
            watermark_lag,
            worker_frontier,
            windows_emitted,
            forecasts,
            forecast_error,
            fallbacks,
            decisions,
            scale_writes,
            kubernetes_errors,
            kafka_errors,
            decision_latency,
            health: health::Health::default(),
            closes: latency::CloseClock::default(),
        }
    }

    /// Creates the series of a source at zero (every reject reason, so a
    /// scrape lists them before the first rejection) and of the window kinds.
    pub fn register_source(&self, source: &str) {
        let src = || vec![("source", source.to_owned())];
        self.records_in.get_or_create_owned(&src());
        self.records_used.get_or_create_owned(&src());
        self.records_corrected.get_or_create_owned(&src());
        for reason in RejectReason::ALL {
            self.records_rejected.get_or_create_owned(&reject_labels(source, reason.as_str()));
        }
        for kind in WINDOW_KINDS {
            self.windows_emitted.get_or_create_owned(&vec![("kind", kind.to_owned())]);
        }
    }

    /// The registry in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a forecast and its model's recent error.
    pub fn forecast(&self, row: &ForecastRow) {
        self.forecasts.inc();
        if let Some(e) = row.recent_error.filter(|e| e.is_finite()) {
            self.forecast_error.get_or_create(&vec![("model", row.model.clone())]).observe(e);
        }
    }

    /// Counts a decision by its reason, and a fallback by why, and times it
    /// from the close of its window.
    pub fn decision(&self, decision: &Decision, now: Instant) {
        self.decisions.get_or_create(&vec![("reason", decision.reason.to_string())]).inc();
        if let Reason::Fallback(why) = decision.reason {
            self.fallbacks.get_or_create(&vec![("reason", why.as_str().to_owned())]).inc();
        }
        if let Some(closed) = self.closes.closed_at(decision.time_ms) {
            self.decision_latency.observe(now.saturating_duration_since(closed).as_secs_f64());
        }
    }

    /// Counts what the Kubernetes sink did with a decision.
    pub fn scale_write(&self, outcome: &'static str) {
        self.scale_writes.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }

    /// Counts a failed Kubernetes API call.
    pub fn kubernetes_error(&self, kind: &'static str) {
        self.kubernetes_errors.get_or_create(&vec![("kind", kind.to_owned())]).inc();
    }

    /// Counts a Kafka client error.
    pub fn kafka_error(&self, kind: &'static str) {
        self.kafka_errors.get_or_create(&vec![("kind", kind.to_owned())]).inc();
    }
}

/// The `kind` label values of `prescale_windows_emitted_total`.
const WINDOW_KINDS: [&str; 4] = ["tumbling", "sliding", "correction", "lag"];

/// Decision reasons listed at zero.
const DECISION_REASONS: [Reason; 6] =
    [Reason::Forecast, Reason::ReactiveFloor, Reason::Min, Reason::Max, Reason::Stabilised, Reason::RateLimited];

/// The `kind` label values of `prescale_kubernetes_errors_total`: a scale
/// or status write, an Event, the PredictiveScaler watch, the status that
/// reports a refused spec.
pub const KUBERNETES_ERRORS: [&str; 4] = ["write", "event", "watch", "status"];

/// The `kind` label values of `prescale_kafka_errors_total`: a consumer
/// poll, a produce call refused, a delivery the broker did not confirm.
pub const KAFKA_ERRORS: [&str; 3] = ["consume", "produce", "delivery"];

/// The `outcome` label values of `prescale_scale_writes_total`, as the
/// Kubernetes sink counts them.
pub const SCALE_OUTCOMES: [&str; 9] = [
    "received",
    "coalesced",
    "status-written",
    "scaled",
    "unmanaged",
    "missing-target",
    "conflict",
    "retried",
    "dropped",
];

fn reject_labels(source: &str, reason: &str) -> Labels {
    vec![("source", source.to_owned()), ("reason", reason.to_owned())]
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process' metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Event time in milliseconds as Unix seconds.
fn unix_seconds(t: Millis) -> f64 {
    t as f64 / 1000.0
}

/// One worker's side of the registry: it publishes the difference between
/// its running counts and what it published last, so that any number of
/// workers add up into the same counters.
pub struct WorkerMetrics {
    metrics: &'static Metrics,
    source: String,
    worker: String,
    local: usize,
    published: WorkerStats,
    /// Refits run idle and forced, as last published.
    published_refits: (u64, u64),
    last: Option<Instant>,
}

impl WorkerMetrics {
    /// The publisher of worker `index` (timely's index over all processes),
    /// the `local`-th of its process, reading `source`.
    pub fn new(metrics: &'static Metrics, source: &str, index: usize, local: usize) -> Self {
        metrics.register_source(source);
        metrics.worker_frontier.get_or_create_owned(&vec![("worker", index.to_string())]);
        metrics.refits_waiting.get_or_create_owned(&vec![("worker", index.to_string())]);
        WorkerMetrics {
            metrics,
            source: source.to_owned(),
            worker: index.to_string(),
            local,
            published: WorkerStats::default(),
            published_refits: (0, 0),
            last: None,
        }
    }

    /// Tells the close clock that this worker's input frontier advanced;
    /// called on every advance, so a window's close is timed exactly.
    pub fn input_advanced(&self, frontier: Millis) {
        self.metrics.closes.advanced(self.local, frontier);
    }

    /// Whether [`PUBLISH_EVERY`] has passed since the last publication.
    pub fn due(&self, now: Instant) -> bool {
        self.last.is_none_or(|t| now.duration_since(t) >= PUBLISH_EVERY)
    }

    /// Publishes how the worker's forecast stage ran its refits so far.
    pub fn publish_refits(&mut self, refits: &RefitCounters) {
        let (idle, forced) = (refits.idle.get(), refits.forced.get());
        let (idle_before, forced_before) = self.published_refits;
        let m = self.metrics;
        for (how, now, before) in [("idle", idle, idle_before), ("forced", forced, forced_before)] {
            if now > before {
                m.refits.get_or_create(&vec![("how", how.to_owned())]).inc_by(now - before);
            }
        }
        self.published_refits = (idle, forced);
        m.refits_waiting.get_or_create(&vec![("worker", self.worker.clone())]).set(refits.waiting.get() as f64);
    }

    /// Publishes the worker's counts, the process' watermark (from the
    /// close clock) and its dataflow's output frontier (`None` once the
    /// dataflow is complete).
    pub fn publish(&mut self, stats: &WorkerStats, output: Option<Millis>) {
        let m = self.metrics;
        let src = vec![("source", self.source.clone())];
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        let rejected = |s: &WorkerStats| s.rejected.iter().sum::<u64>();
        m.records_in
            .get_or_create(&src)
            .inc_by(delta(stats.used + rejected(stats), self.published.used + rejected(&self.published)));
        m.records_used.get_or_create(&src).inc_by(delta(stats.used, self.published.used));
        m.records_corrected
            .get_or_create(&src)
            .inc_by(delta(stats.corrected_records, self.published.corrected_records));
        for (i, &n) in stats.rejected.iter().enumerate() {
            let before = self.published.rejected.get(i).copied().unwrap_or(0);
            if n > before {
                // A reason index without a known name cannot happen while
                // the dataflow and this crate agree on `RejectReason::ALL`.
                let name = RejectReason::ALL.get(i).map_or("unknown", |r| r.as_str());
                m.records_rejected.get_or_create(&reject_labels(&self.source, name)).inc_by(n - before);
            }
        }
        for (kind, now, before) in [
            ("tumbling", stats.tumbling_windows, self.published.tumbling_windows),
            ("sliding", stats.sliding_windows, self.published.sliding_windows),
            ("correction", stats.corrections, self.published.corrections),
            ("lag", stats.lag_rows, self.published.lag_rows),
        ] {
            if now > before {
                m.windows_emitted.get_or_create(&vec![("kind", kind.to_owned())]).inc_by(now - before);
            }
        }
        self.published = stats.clone();
        if let Some(output) = output {
            m.worker_frontier.get_or_create(&vec![("worker", self.worker.clone())]).set(unix_seconds(output));
        }
        if let Some(watermark) = m.closes.frontier() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            m.watermark_lag.get_or_create(&src).set(now - unix_seconds(watermark));
        }
        self.last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn workers_add_their_differences() {
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let mut a = WorkerMetrics::new(m, "generator", 0, 0);
        let mut b = WorkerMetrics::new(m, "generator", 1, 1);
        let mut s = WorkerStats { used: 10, rejected: vec![0; RejectReason::ALL.len()], ..WorkerStats::default() };
        s.rejected[RejectReason::Late.index()] = 2;
        a.publish(&s, Some(60_000));
        s.used = 15;
        a.publish(&s, None);
        b.publish(&WorkerStats { used: 1, tumbling_windows: 3, ..WorkerStats::default() }, None);
        let text = m.encode();
        assert_eq!(value(&text, "prescale_records_used_total{source=\"generator\"}"), Some(16.0), "{text}");
        assert_eq!(value(&text, "prescale_records_in_total{source=\"generator\"}"), Some(18.0), "{text}");
        assert_eq!(
            value(&text, "prescale_records_rejected_total{source=\"generator\",reason=\"late\"}"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(value(&text, "prescale_windows_emitted_total{kind=\"tumbling\"}"), Some(3.0), "{text}");
        assert_eq!(value(&text, "prescale_worker_frontier_seconds{worker=\"0\"}"), Some(60.0), "{text}");
        // Every reason is listed before any record is rejected for it.
        for r in RejectReason::ALL {
            let series = format!("prescale_records_rejected_total{{source=\"generator\",reason=\"{r}\"}}");
            assert!(value(&text, &series).is_some(), "{series} missing:\n{text}");
        }
    }
}
