//! The PredictiveScaler watcher: resources in the cluster become the
//! dataflow's scaler configuration.
//!
//! A thread with its own Tokio runtime watches PredictiveScalers (in all
//! namespaces, or one) and sends a [`SpecUpdate`] on a channel whenever the
//! spec the dataflow should use for a (scaler, series) changes: created,
//! edited, deleted, or retargeted (an edit of `targetRef` or `metricName`
//! retracts the old series and adds the new one). Status writes, which also
//! reach the watch, change nothing and send nothing. After a reconnect the
//! watch lists everything again; scalers missing from that list were
//! deleted meanwhile and are retracted. The job drains the channel into the
//! dataflow's spec input.
//!
//! A spec the job cannot honour ([`convert::scaler_spec`] refuses it) gets no
//! decisions: it is retracted if it had a spec before, and its `Ready`
//! condition says why.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Duration;

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::runtime::{WatchStreamExt, watcher};
use ::kube::{Client, ResourceExt};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use prescale_dataflows::decide::{ScalerSpec, SpecUpdate};
use prescale_dataflows::record::SeriesKey;
use tokio::sync::oneshot;

use super::convert::{self, SpecError};
use super::crd::PredictiveScaler;
use super::status::READY;
use super::{Error, Result, connect};

/// What to watch.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchOptions {
    /// Kubeconfig file; `None` infers it as the sink does.
    pub kubeconfig: Option<PathBuf>,
    /// Only this namespace; `None` watches all.
    pub namespace: Option<String>,
    /// Field manager of the status writes for refused specs.
    pub field_manager: String,
    /// How long [`SpecWatcher::start`] waits for the first full list.
    pub initial_list_timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            kubeconfig: None,
            namespace: None,
            field_manager: "prescale".into(),
            initial_list_timeout: Duration::from_secs(30),
        }
    }
}

/// The running watcher.
pub struct SpecWatcher {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SpecWatcher {
    /// Connects, lists the PredictiveScalers, sends their updates on `out`,
    /// and returns once that first list is sent, so a job started after it
    /// knows every scaler from its first decision. Keeps watching until
    /// [`SpecWatcher::stop`] or `out` is closed.
    pub fn start(options: WatchOptions, out: Sender<SpecUpdate>) -> Result<Self> {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
        let timeout = options.initial_list_timeout;
        let thread = std::thread::Builder::new()
            .name("prescale-kube-watcher".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Runtime(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let client = match connect(options.kubeconfig.as_deref()).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    tokio::select! {
                        () = watch(client, options, out, ready_tx) => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .map_err(|e| Error::Runtime(e.to_string()))?;
        let mut watcher = SpecWatcher { stop: Some(stop_tx), thread: Some(thread) };
        match ready_rx.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(watcher),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                watcher.shutdown();
                Err(Error::Config {
                    path: None,
                    message: format!("could not list PredictiveScalers within {timeout:?}; is the CRD installed?"),
                })
            }
        }
    }

    /// Stops watching.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SpecWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the dataflow currently holds per resource (namespace, name).
type Known = HashMap<(String, String), (SeriesKey, ScalerSpec)>;

struct State {
    known: Known,
    out: Sender<SpecUpdate>,
    /// Resources seen during a relist, to retract the ones that are gone.
    relisted: Option<HashSet<(String, String)>>,
}

impl State {
    fn send(&self, update: SpecUpdate) -> bool {
        self.out.send(update).is_ok()
    }

    /// Applies what the resource now says; returns the error for a refused
    /// spec, and `false` in the second place when `out` is closed.
    fn apply(&mut self, ps: &PredictiveScaler) -> (Option<SpecError>, bool) {
        let (Some(ns), name) = (ps.namespace(), ps.name_any()) else { return (None, true) };
        let key = (ns, name);
        if let Some(seen) = &mut self.relisted {
            seen.insert(key.clone());
        }
        let Some(series) = convert::series_of(ps) else { return (None, true) };
        match convert::scaler_spec(&ps.spec) {
            Ok(spec) => {
                let mut open = true;
                match self.known.get(&key) {
                    Some((s, old)) if *s == series && *old == spec => return (None, true),
                    Some((s, _)) if *s != series => {
                        open &= self.send(convert::spec_update(&key.1, s.clone(), None));
                    }
                    _ => {}
                }
                open &= self.send(convert::spec_update(&key.1, series.clone(), Some(spec.clone())));
                self.known.insert(key, (series, spec));
                (None, open)
            }
            Err(e) => {
                let open = self.retract(&key);
                (Some(e), open)
            }
        }
    }

    fn retract(&mut self, key: &(String, String)) -> bool {
        match self.known.remove(key) {
            Some((series, _)) => self.send(convert::spec_update(&key.1, series, None)),
            None => true,
        }
    }
}

async fn watch(
    client: Client,
    options: WatchOptions,
    out: Sender<SpecUpdate>,
    ready: std::sync::mpsc::SyncSender<Result<()>>,
) {
    let api: Api<PredictiveScaler> = match &options.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut state = State { known: Known::new(), out, relisted: None };
    let mut ready = Some(ready);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let open = match event {
            Ok(watcher::Event::Init) => {
                state.relisted = Some(HashSet::new());
                true
            }
            Ok(watcher::Event::InitApply(ps) | watcher::Event::Apply(ps)) => {
                let (refused, open) = state.apply(&ps);
                if let Some(e) = refused {
                    report_refused(&client, &ps, &e, &options.field_manager).await;
                }
                open
            }
            Ok(watcher::Event::InitDone) => {
                let seen = state.relisted.take().unwrap_or_default();
                let gone: Vec<_> = state.known.keys().filter(|k| !seen.contains(*k)).cloned().collect();
                let mut open = true;
                for key in gone {
                    open &= state.retract(&key);
                }
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                open
            }
            Ok(watcher::Event::Delete(ps)) => match ps.namespace() {
                Some(ns) => state.retract(&(ns, ps.name_any())),
                None => true,
            },
            Err(e) => {
                // The stream backs off and reconnects by itself.
                crate::metrics::global().kubernetes_error("watch");
                tracing::warn!(error = %e, "PredictiveScaler watch failed; reconnecting");
                true
            }
        };
        if !open {
            return;
        }
    }
}

/// Writes `Ready=False, InvalidSpec` for a refused spec, once per
/// generation (the write itself comes back through the watch).
async fn report_refused(client: &Client, ps: &PredictiveScaler, error: &SpecError, field_manager: &str) {
    let Some(ns) = ps.namespace() else { return };
    let generation = ps.metadata.generation;
    let status = ps.status.clone().unwrap_or_default();
    let message = error.to_string();
    let already = status.observed_generation == generation
        && status.conditions.iter().any(|c| c.type_ == READY && c.reason == "InvalidSpec" && c.message == message);
    if already {
        return;
    }
    let mut conditions: Vec<Condition> = status.conditions.into_iter().filter(|c| c.type_ != READY).collect();
    conditions.insert(
        0,
        Condition {
            type_: READY.into(),
            status: "False".into(),
            reason: "InvalidSpec".into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(Timestamp::now()),
        },
    );
    let patch = serde_json::json!({ "status": { "observedGeneration": generation, "conditions": conditions } });
    let params = PatchParams { field_manager: Some(field_manager.to_owned()), ..PatchParams::default() };
    let api: Api<PredictiveScaler> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.patch_status(&ps.name_any(), &params, &Patch::Merge(patch)).await {
        crate::metrics::global().kubernetes_error("status");
        tracing::warn!(namespace = %ns, scaler = %ps.name_any(), error = %e, "cannot report a refused PredictiveScaler spec");
    }
}
