//! The Kubernetes sink: applies decisions to the cluster.
//!
//! Decisions enter through [`KubeSink::sender`], a channel the dataflow's
//! writer sends on without blocking; they leave as writes to the apiserver
//! made by one thread that owns a Tokio runtime. For each decision the sink
//! reads the `PredictiveScaler` (a decision for a series no resource names
//! is not ours to apply), reads the target's `scale` subresource, patches
//! `spec.replicas` only when it differs from the desired count (merge patch
//! carrying the `resourceVersion` it read, under the field manager
//! `prescale`, so a concurrent change is a conflict, not a lost update),
//! writes the resource's status, and records Events for scale actions,
//! fallbacks and missing targets. `mode: ForecastOnly` and `--dry-run` write
//! the status and never scale. Every attempt reads the resource and the
//! scale again, so a decision that waited (the rate limit, retries through
//! an apiserver outage) is written from the cluster as it is then: from the
//! current count, under the current mode, and held to the current
//! `minReplicas`/`maxReplicas` (`within_bounds`).
//!
//! Per target (namespace/workload), at most one write is in flight: a task
//! per busy target takes the latest pending decision of each scaler, so a
//! fast replay coalesces into the newest decision instead of queueing
//! stale ones, and consecutive writes to a target are at least
//! `min_interval` apart. Errors the apiserver may recover from (unreachable,
//! 5xx, 429, conflicts) are retried with exponential backoff and full
//! jitter, taking a newer decision when one arrived meanwhile; after
//! `max_attempts` the decision is dropped and counted. A missing target or a
//! conflict becomes a status condition; nothing here panics or ends the job.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::runtime::events::{Event, EventType, Recorder, Reporter};
use ::kube::{Client, Resource};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use prescale_dataflows::decide::{Decision, Mode, Reason};
use serde::Serialize;
use tokio::sync::mpsc;

use super::crd::{PredictiveScaler, ScalerMode, TargetKind};
use super::status::{self, TargetOutcome};
use super::{Error, Result, connect};

/// How the sink writes.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkOptions {
    /// Kubeconfig file; `None` infers (`KUBECONFIG`, `~/.kube/config`, or
    /// the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// Write status and Events, never scale.
    pub dry_run: bool,
    /// Least time between two writes to one target (default 10 s: the
    /// HPA's sync period is 15 s, and decisions come every forecast step).
    pub min_interval: Duration,
    /// First retry delay (default 200 ms), doubled per attempt...
    pub backoff_base: Duration,
    /// ...up to this (default 30 s).
    pub backoff_max: Duration,
    /// Attempts per decision before it is dropped (default 8, about a
    /// minute of backoff in all).
    pub max_attempts: u32,
    /// Field manager of every write (default `prescale`).
    pub field_manager: String,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            kubeconfig: None,
            dry_run: false,
            min_interval: Duration::from_secs(10),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            max_attempts: 8,
            field_manager: "prescale".into(),
        }
    }
}

/// What the sink did, counted over its life.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    /// Decisions received.
    pub received: u64,
    /// Decisions replaced by a newer one for the same scaler before being
    /// written.
    pub coalesced: u64,
    /// Decisions whose status was written.
    pub written: u64,
    /// Scale patches made.
    pub scaled: u64,
    /// Decisions for a series no `PredictiveScaler` names (skipped).
    pub unmanaged: u64,
    /// Decisions whose target did not exist.
    pub missing_targets: u64,
    /// Conflicts on the scale subresource.
    pub conflicts: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Decisions dropped: retries exhausted, or refused by the apiserver.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    coalesced: AtomicU64,
    written: AtomicU64,
    scaled: AtomicU64,
    unmanaged: AtomicU64,
    missing_targets: AtomicU64,
    conflicts: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn report(&self) -> SinkReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkReport {
            received: get(&self.received),
            coalesced: get(&self.coalesced),
            written: get(&self.written),
            scaled: get(&self.scaled),
            unmanaged: get(&self.unmanaged),
            missing_targets: get(&self.missing_targets),
            conflicts: get(&self.conflicts),
            retries: get(&self.retries),
            dropped: get(&self.dropped),
        }
    }
}

/// Counts for the report at the end and, by `outcome`, for the metrics
/// endpoint (`prescale_scale_writes_total`).
fn bump(c: &AtomicU64, outcome: &'static str) {
    c.fetch_add(1, Ordering::Relaxed);
    crate::metrics::global().scale_write(outcome);
}

/// A clonable handle that sends decisions to the sink; sending never
/// blocks, and fails only once the sink has stopped.
#[derive(Clone, Debug)]
pub struct DecisionSender(mpsc::UnboundedSender<Decision>);

impl DecisionSender {
    /// Queues a decision; `false` when the sink has stopped.
    pub fn send(&self, decision: Decision) -> bool {
        self.0.send(decision).is_ok()
    }
}

/// The running sink: a thread with its own runtime.
pub struct KubeSink {
    sender: Option<DecisionSender>,
    thread: Option<std::thread::JoinHandle<SinkReport>>,
}

impl KubeSink {
    /// Connects (failing here on a bad kubeconfig, not later) and starts
    /// the writer thread.
    pub fn start(options: SinkOptions) -> Result<Self> {
        Self::start_with(options, None)
    }

    /// Starts the writer thread with the client `make` builds inside its
    /// runtime (a client over a mock service, in tests) instead of one
    /// from the kubeconfig.
    pub fn start_with_client(options: SinkOptions, make: impl FnOnce() -> Client + Send + 'static) -> Result<Self> {
        Self::start_with(options, Some(Box::new(make)))
    }

    fn start_with(options: SinkOptions, make: Option<Box<dyn FnOnce() -> Client + Send>>) -> Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("prescale-kube-sink".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Runtime(e.to_string())));
                        return SinkReport::default();
                    }
                };
                runtime.block_on(async move {
                    let connected = match make {
                        Some(make) => Ok(make()),
                        None => connect(options.kubeconfig.as_deref()).await,
                    };
                    let client = match connected {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return SinkReport::default();
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    run(client, options, rx).await
                })
            })
            .map_err(|e| Error::Runtime(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(KubeSink { sender: Some(DecisionSender(tx)), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Runtime("the sink thread ended before connecting".into()))
            }
        }
    }

    /// A handle to send decisions with.
    pub fn sender(&self) -> DecisionSender {
        // Set in `start` and taken only by `finish`, which consumes self.
        #[allow(clippy::unwrap_used)]
        self.sender.clone().unwrap()
    }

    /// Stops taking decisions, writes the pending ones (each target's
    /// latest, retried as configured) and returns the counts. Senders still
    /// held elsewhere keep the sink open until they are dropped.
    pub fn finish(mut self) -> Result<SinkReport> {
        self.sender = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(report)) => Ok(report),
            Some(Err(_)) => Err(Error::Runtime("the sink thread panicked".into())),
            None => Ok(SinkReport::default()),
        }
    }
}

impl Drop for KubeSink {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One target's queue: the latest decision per scaler, whether a task is
/// writing, and when it last wrote.
#[derive(Default)]
struct Slot {
    pending: BTreeMap<String, Decision>,
    busy: bool,
    last_write: Option<Instant>,
}

type Slots = Arc<Mutex<HashMap<String, Slot>>>;

struct Ctx {
    client: Client,
    options: SinkOptions,
    recorder: Recorder,
    counters: Counters,
    slots: Slots,
}

async fn run(client: Client, options: SinkOptions, mut rx: mpsc::UnboundedReceiver<Decision>) -> SinkReport {
    let reporter = Reporter { controller: options.field_manager.clone(), instance: None };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        options,
        counters: Counters::default(),
        slots: Arc::default(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(decision) = rx.recv().await {
        bump(&ctx.counters.received, "received");
        let key = decision.target_key();
        let start = {
            let mut slots = lock(&ctx.slots);
            let slot = slots.entry(key.clone()).or_default();
            if slot.pending.insert(decision.scaler.clone(), decision).is_some() {
                bump(&ctx.counters.coalesced, "coalesced");
            }
            !std::mem::replace(&mut slot.busy, true)
        };
        if start {
            tasks.spawn(target_loop(Arc::clone(&ctx), key));
        }
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    ctx.counters.report()
}

fn lock(slots: &Slots) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
    // A poisoned lock means a task panicked mid-update of a map of plain
    // values; the map is still consistent, so keep using it.
    slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a target's pending decisions until none are left, one at a time.
async fn target_loop(ctx: Arc<Ctx>, key: String) {
    loop {
        let wait = {
            let mut slots = lock(&ctx.slots);
            let Some(slot) = slots.get_mut(&key) else { return };
            if slot.pending.is_empty() {
                slot.busy = false;
                return;
            }
            slot.last_write.map(|t| ctx.options.min_interval.saturating_sub(t.elapsed()))
        };
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            // Wait out the rate limit; decisions arriving meanwhile replace
            // the pending ones, so the newest is written.
            tokio::time::sleep(wait).await;
        }
        let batch = match lock(&ctx.slots).get_mut(&key) {
            Some(slot) => std::mem::take(&mut slot.pending),
            None => return,
        };
        for decision in batch.into_values() {
            write_with_retry(&ctx, &key, decision).await;
        }
        if let Some(slot) = lock(&ctx.slots).get_mut(&key) {
            slot.last_write = Some(Instant::now());
        }
    }
}

/// Whether a failed write may succeed later.
fn transient(e: &::kube::Error) -> bool {
    match e {
        ::kube::Error::Api(status) => status.code == 409 || status.code == 429 || status.code >= 500,
        // Transport, TLS, timeouts: the apiserver may come back.
        _ => true,
    }
}

/// Full jitter: a uniform delay in [0, min(max, base·2^attempt)), so many
/// targets failing together do not retry together. The randomness comes
/// from the std hasher's per-process random keys; it needs no quality.
fn backoff(options: &SinkOptions, attempt: u32, key: &str) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let cap = options.backoff_base.saturating_mul(1u32 << attempt.min(20)).min(options.backoff_max);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(key.as_bytes());
    h.write_u32(attempt);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    cap.mul_f64(unit)
}

async fn write_with_retry(ctx: &Ctx, key: &str, mut decision: Decision) {
    let mut attempt = 0;
    loop {
        match write(ctx, &decision).await {
            Ok(()) => return,
            Err(e) if transient(&e) && attempt + 1 < ctx.options.max_attempts => {
                bump(&ctx.counters.retries, "retried");
                let delay = backoff(&ctx.options, attempt, key);
                attempt += 1;
                crate::metrics::global().kubernetes_error("write");
                tracing::warn!(target_key = %key, error = %e, attempt, delay_ms = delay.as_millis() as u64, "kubernetes sink: write failed, retrying");
                tokio::time::sleep(delay).await;
                // A newer decision for this scaler supersedes the failed one.
                if let Some(slot) = lock(&ctx.slots).get_mut(key)
                    && let Some(newer) = slot.pending.remove(&decision.scaler)
                {
                    bump(&ctx.counters.coalesced, "coalesced");
                    decision = newer;
                }
            }
            Err(e) => {
                bump(&ctx.counters.dropped, "dropped");
                crate::metrics::global().kubernetes_error("write");
                tracing::error!(target_key = %key, scaler = %decision.scaler, error = %e, "kubernetes sink: dropping a decision");
                return;
            }
        }
    }
}

/// The decision held to the resource's bounds as they are now, when they
/// no longer allow it (`None` when they do). A decision waits before it is
/// written (the rate limit, retries through an apiserver outage) and the
/// resource may be edited meanwhile: the dataflow learns of the edit from
/// the watcher, but only its later decisions follow it. Applying the older
/// count would scale on a stale view, past a `maxReplicas` just lowered.
fn within_bounds(d: &Decision, spec: &super::crd::PredictiveScalerSpec) -> Option<Decision> {
    let (min, max) = (spec.min_replicas, spec.max_replicas.max(spec.min_replicas));
    let (desired, reason, bound) = match d.desired {
        n if n > max => (max, Reason::Max, "maxReplicas"),
        n if n < min => (min, Reason::Min, "minReplicas"),
        _ => return None,
    };
    let mut bounded = d.clone();
    bounded.desired = desired;
    bounded.reason = reason;
    bounded.detail = Some(format!("decided {} ({}), held to {bound} {desired} as edited since", d.desired, d.reason));
    Some(bounded)
}

fn is_not_found(e: &::kube::Error) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == 404)
}

/// Reads a target's scale subresource; `None` when the target is missing.
async fn get_scale(client: &Client, ns: &str, kind: TargetKind, name: &str) -> Result<Option<Scale>, ::kube::Error> {
    let result = match kind {
        TargetKind::Deployment => Api::<Deployment>::namespaced(client.clone(), ns).get_scale(name).await,
        TargetKind::StatefulSet => Api::<StatefulSet>::namespaced(client.clone(), ns).get_scale(name).await,
    };
    match result {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn patch_scale(
    client: &Client,
    ns: &str,
    kind: TargetKind,
    name: &str,
    params: &PatchParams,
    patch: &Patch<serde_json::Value>,
) -> Result<Scale, ::kube::Error> {
    match kind {
        TargetKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), ns).patch_scale(name, params, patch).await
        }
        TargetKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), ns).patch_scale(name, params, patch).await
        }
    }
}

/// Applies one decision: reads the resource and the target, scales when
/// allowed and needed, writes the status and Events.
async fn write(ctx: &Ctx, d: &Decision) -> Result<(), ::kube::Error> {
    let ns = d.series.namespace.as_str();
    let scalers: Api<PredictiveScaler> = Api::namespaced(ctx.client.clone(), ns);
    let Some(ps) = scalers.get_opt(&d.scaler).await? else {
        bump(&ctx.counters.unmanaged, "unmanaged");
        return Ok(());
    };
    let target = &ps.spec.target_ref;
    if target.name != d.series.deployment || ps.spec.metric_name != d.series.metric {
        // Made under a spec that has since been edited; the watcher has
        // already told the dataflow, and a decision for the new target
        // follows.
        bump(&ctx.counters.unmanaged, "unmanaged");
        return Ok(());
    }
    let bounded = within_bounds(d, &ps.spec);
    let d = bounded.as_ref().unwrap_or(d);
    let params = PatchParams { field_manager: Some(ctx.options.field_manager.clone()), ..PatchParams::default() };
    let desired = i32::try_from(d.desired).unwrap_or(i32::MAX);
    let mut conflict = None;
    let outcome = match get_scale(&ctx.client, ns, target.kind, &target.name).await? {
        None => {
            bump(&ctx.counters.missing_targets, "missing-target");
            TargetOutcome::TargetMissing { kind: target.kind, name: target.name.clone() }
        }
        Some(scale) => {
            let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
            let hold = if ctx.options.dry_run {
                Some("DryRun")
            } else if ps.spec.mode == ScalerMode::ForecastOnly || d.mode == Mode::ForecastOnly {
                Some("ForecastOnly")
            } else {
                None
            };
            match hold {
                Some(why) => TargetOutcome::NotApplied { replicas: current, why },
                None if current == desired => TargetOutcome::Unchanged { replicas: current },
                None => {
                    // The resourceVersion read makes the patch conditional:
                    // if someone changed the count since, this is a 409.
                    let patch = Patch::Merge(serde_json::json!({
                        "metadata": { "resourceVersion": scale.metadata.resource_version },
                        "spec": { "replicas": desired },
                    }));
                    match patch_scale(&ctx.client, ns, target.kind, &target.name, &params, &patch).await {
                        Ok(_) => {
                            bump(&ctx.counters.scaled, "scaled");
                            TargetOutcome::Scaled { from: current, to: desired }
                        }
                        Err(::kube::Error::Api(status)) if status.code == 409 => {
                            bump(&ctx.counters.conflicts, "conflict");
                            let message = status.message.clone();
                            // Reported in the status now, retried after.
                            conflict = Some(::kube::Error::Api(status));
                            TargetOutcome::Conflict { message }
                        }
                        Err(e) if is_not_found(&e) => {
                            bump(&ctx.counters.missing_targets, "missing-target");
                            TargetOutcome::TargetMissing { kind: target.kind, name: target.name.clone() }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    };

    let previous = ps.status.as_ref();
    let was_falling_back = previous.is_some_and(|s| status::is_true(&s.conditions, status::FALLBACK));
    let was_missing = previous.and_then(|s| status::reason_of(&s.conditions, status::READY)) == Some("TargetNotFound");
    let now = Time(Timestamp::now());
    let next = status::next_status(previous, d, &outcome, ps.metadata.generation, &now);
    scalers.patch_status(&d.scaler, &params, &Patch::Merge(serde_json::json!({ "status": next }))).await?;
    bump(&ctx.counters.written, "status-written");

    // Events are best effort: a failure is reported, never retried, and
    // never undoes the scale or the status.
    let reference = ps.object_ref(&());
    let event = match (&outcome, d.reason) {
        (TargetOutcome::Scaled { from, to }, reason) => Some(Event {
            type_: EventType::Normal,
            reason: "Scaled".into(),
            note: Some(format!("{} {}: {from} -> {to} replicas ({reason})", target.kind.as_str(), target.name)),
            action: "Scale".into(),
            secondary: None,
        }),
        (TargetOutcome::TargetMissing { kind, name }, _) if !was_missing => Some(Event {
            type_: EventType::Warning,
            reason: "TargetNotFound".into(),
            note: Some(format!("{} {name} does not exist", kind.as_str())),
            action: "Scale".into(),
            secondary: None,
        }),
        (_, Reason::Fallback(why)) if !was_falling_back => Some(Event {
            type_: EventType::Warning,
            reason: "Fallback".into(),
            note: Some(format!(
                "scaling reactively ({}): {}",
                why.as_str(),
                d.detail.as_deref().unwrap_or("the forecast is not trusted")
            )),
            action: "Decide".into(),
            secondary: None,
        }),
        _ => None,
    };
    if let Some(event) = event
        && let Err(e) = ctx.recorder.publish(&event, &reference).await
    {
        crate::metrics::global().kubernetes_error("event");
        tracing::warn!(namespace = %ns, scaler = %d.scaler, error = %e, "kubernetes sink: recording an Event failed");
    }
    match conflict {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use ::kube::client::Body;
    use http::{Method, Request, Response, StatusCode};
    use prescale_dataflows::decide::UsedForecast;
    use prescale_dataflows::record::SeriesKey;

    use super::*;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn scaler_json() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "prescale.dev/v1alpha1", "kind": "PredictiveScaler",
            "metadata": {"name": "web", "namespace": "shop", "generation": 1, "uid": "u1", "resourceVersion": "5"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "web"}, "metricName": "rps",
                     "forecastHorizonMinutes": 30, "maxReplicas": 10, "targetPerReplica": 50.0},
        })
    }

    fn scale_json(replicas: i32, version: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": version},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas},
        })
    }

    fn failure(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                           "message": format!("mock {reason}"), "reason": reason, "code": code})
    }

    fn decision(desired: u32) -> Decision {
        Decision {
            time_ms: 1_767_571_200_000,
            scaler: "web".into(),
            series: SeriesKey { namespace: "shop".into(), deployment: "web".into(), metric: "rps".into() },
            mode: Mode::Auto,
            current: 2,
            desired,
            reason: Reason::Forecast,
            detail: None,
            load: Some(100.0),
            reactive: Some(2),
            forecast: Some(UsedForecast {
                origin_ms: 0,
                until_ms: 1_800_000,
                point: 200.0,
                upper: 240.0,
                level: 0.9,
                step_seen: false,
            }),
            model: Some("mstl".into()),
            recent_error: Some(0.5),
        }
    }

    /// Serves the sink's requests in order: each step checks the method and
    /// path, sees the body, and answers with a status and JSON.
    type Answer = Box<dyn FnOnce(&str) -> (StatusCode, serde_json::Value) + Send>;
    type Step = (Method, &'static str, Answer);

    fn serve(mut handle: Handle, steps: Vec<Step>) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                for (method, path, answer) in steps {
                    let (request, send) = handle.next_request().await.expect("the sink's next request");
                    assert_eq!((request.method(), request.uri().path()), (&method, path));
                    let body = request.into_body().collect_bytes().await.unwrap();
                    let (status, json) = answer(&String::from_utf8_lossy(&body));
                    let response =
                        Response::builder().status(status).body(Body::from(serde_json::to_vec(&json).unwrap()));
                    send.send_response(response.unwrap());
                }
            });
        })
    }

    const PS: &str = "/apis/prescale.dev/v1alpha1/namespaces/shop/predictivescalers/web";
    const PS_STATUS: &str = "/apis/prescale.dev/v1alpha1/namespaces/shop/predictivescalers/web/status";
    const SCALE: &str = "/apis/apps/v1/namespaces/shop/deployments/web/scale";
    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";

    fn run_sink(steps: Vec<Step>, decisions: Vec<Decision>) -> SinkReport {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = serve(handle, steps);
        let options = SinkOptions {
            min_interval: Duration::ZERO,
            backoff_base: Duration::from_millis(1),
            ..SinkOptions::default()
        };
        let sink = KubeSink::start_with_client(options, move || Client::new(service, "default")).unwrap();
        let tx = sink.sender();
        for d in decisions {
            assert!(tx.send(d));
        }
        drop(tx);
        let report = sink.finish().unwrap();
        server.join().unwrap();
        report
    }

    fn ok(json: serde_json::Value) -> Answer {
        Box::new(move |_| (StatusCode::OK, json))
    }

    #[test]
    fn a_conflict_is_a_condition_then_a_retry_that_scales() {
        let steps: Vec<Step> = vec![
            (Method::GET, PS, ok(scaler_json())),
            (Method::GET, SCALE, ok(scale_json(2, "7"))),
            (
                Method::PATCH,
                SCALE,
                Box::new(|body| {
                    // The patch is conditional on the version read.
                    assert!(body.contains(r#""resourceVersion":"7""#) && body.contains(r#""replicas":5"#), "{body}");
                    (StatusCode::CONFLICT, failure(409, "Conflict"))
                }),
            ),
            (
                Method::PATCH,
                PS_STATUS,
                Box::new(|body| {
                    assert!(body.contains(r#""reason":"Conflict""#) && body.contains(r#""status":"False""#), "{body}");
                    (StatusCode::OK, scaler_json())
                }),
            ),
            (Method::GET, PS, ok(scaler_json())),
            (Method::GET, SCALE, ok(scale_json(3, "8"))),
            (Method::PATCH, SCALE, ok(scale_json(5, "9"))),
            (
                Method::PATCH,
                PS_STATUS,
                Box::new(|body| {
                    assert!(body.contains(r#""reason":"Scaled""#) && body.contains("from 3 to 5"), "{body}");
                    (StatusCode::OK, scaler_json())
                }),
            ),
            (
                Method::POST,
                EVENTS,
                Box::new(|body| {
                    assert!(body.contains("3 -> 5 replicas"), "{body}");
                    (StatusCode::CREATED, serde_json::from_str(body).unwrap())
                }),
            ),
        ];
        let report = run_sink(steps, vec![decision(5)]);
        assert_eq!((report.conflicts, report.retries, report.scaled, report.dropped), (1, 1, 1, 0), "{report:?}");
    }

    #[test]
    fn a_refusal_is_not_retried_and_a_missing_scaler_is_skipped() {
        let steps: Vec<Step> = vec![
            (Method::GET, PS, ok(scaler_json())),
            (Method::GET, SCALE, Box::new(|_| (StatusCode::FORBIDDEN, failure(403, "Forbidden")))),
        ];
        let report = run_sink(steps, vec![decision(5)]);
        assert_eq!((report.retries, report.dropped, report.written), (0, 1, 0), "{report:?}");

        let steps: Vec<Step> = vec![(Method::GET, PS, Box::new(|_| (StatusCode::NOT_FOUND, failure(404, "NotFound"))))];
        let report = run_sink(steps, vec![decision(5)]);
        assert_eq!((report.unmanaged, report.dropped, report.written), (1, 0, 0), "{report:?}");
    }

    #[test]
    fn server_errors_are_retried_until_the_attempts_run_out() {
        let mut steps: Vec<Step> = Vec::new();
        for _ in 0..SinkOptions::default().max_attempts {
            steps.push((
                Method::GET,
                PS,
                Box::new(|_| (StatusCode::SERVICE_UNAVAILABLE, failure(503, "ServiceUnavailable"))),
            ));
        }
        let report = run_sink(steps, vec![decision(5)]);
        let attempts = u64::from(SinkOptions::default().max_attempts);
        assert_eq!((report.retries, report.dropped), (attempts - 1, 1), "{report:?}");
    }

    #[test]
    fn backoff_grows_to_the_cap_and_jitters_below_it() {
        let o = SinkOptions::default();
        for attempt in 0..12 {
            let cap = o.backoff_base.saturating_mul(1 << attempt).min(o.backoff_max);
            let d = backoff(&o, attempt, "shop/web");
            assert!(d < cap || cap.is_zero(), "attempt {attempt}: {d:?} >= {cap:?}");
        }
        let samples: Vec<Duration> = (0..20).map(|_| backoff(&o, 10, "shop/web")).collect();
        assert!(samples.iter().any(|d| *d != samples[0]), "no jitter: {samples:?}");
        assert!(samples.iter().all(|d| *d < o.backoff_max));
    }

    #[test]
    fn a_decision_is_held_to_the_bounds_the_resource_has_when_it_is_written() {
        let mut ps: PredictiveScaler = serde_json::from_value(scaler_json()).unwrap();
        assert!(within_bounds(&decision(5), &ps.spec).is_none());
        let held = within_bounds(&decision(12), &ps.spec).unwrap();
        assert_eq!((held.desired, held.reason), (10, Reason::Max));
        assert!(held.detail.unwrap().contains("decided 12 (forecast)"));
        ps.spec.min_replicas = 6;
        let held = within_bounds(&decision(5), &ps.spec).unwrap();
        assert_eq!((held.desired, held.reason), (6, Reason::Min));
    }

    #[test]
    fn only_recoverable_errors_are_retried() {
        let api =
            |code: u16| ::kube::Error::Api(Box::new(::kube::core::Status { code, ..::kube::core::Status::default() }));
        assert!(transient(&api(409)) && transient(&api(429)) && transient(&api(503)));
        assert!(!transient(&api(403)) && !transient(&api(404)) && !transient(&api(422)));
    }
}
