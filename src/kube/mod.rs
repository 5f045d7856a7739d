//! The Kubernetes control plane of prescale.
//!
//! - [`crd`]: the `PredictiveScaler` resource, from which the CRD YAML is
//!   generated;
//! - [`convert`]: a resource's spec as the decide stage's `ScalerSpec`;
//! - [`watcher`]: resources in the cluster → `SpecUpdate`s on a channel,
//!   which the job feeds into the dataflow;
//! - [`sink`]: decisions from the dataflow, on a channel → scale patches,
//!   status and Events;
//! - [`status`]: the status and conditions written for a decision.
//!
//! All Kubernetes I/O runs on Tokio runtimes owned by the watcher's and the
//! sink's threads, so the timely workers never block on the network and a
//! job without Kubernetes never needs a cluster.

pub mod convert;
pub mod crd;
pub mod sink;
pub mod status;
pub mod watcher;

use std::path::{Path, PathBuf};

use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};

/// What can go wrong talking to Kubernetes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable cluster configuration.
    #[error("kubernetes config{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Config {
        /// The kubeconfig file, when one was given.
        path: Option<PathBuf>,
        /// What was wrong with it.
        message: String,
    },
    /// A request to the apiserver failed.
    #[error("kubernetes API: {0}")]
    Api(#[from] ::kube::Error),
    /// A thread or Tokio runtime could not be started.
    #[error("kubernetes I/O thread: {0}")]
    Runtime(String),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client for the cluster `kubeconfig` names, or, without one, the
/// cluster `KUBECONFIG`, `~/.kube/config` or the in-cluster service account
/// names. Must run inside a Tokio runtime.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client> {
    let config_error = |message: String| Error::Config { path: kubeconfig.map(Path::to_owned), message };
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| config_error(e.to_string()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| config_error(e.to_string()))?
        }
        None => Config::infer().await.map_err(|e| config_error(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| config_error(e.to_string()))
}

/// What a job with the `kubernetes` sink runs beside its dataflow: the
/// sink's writer and the PredictiveScaler watcher, both started in the
/// process that hosts worker 0.
pub struct KubeIo {
    sink: sink::KubeSink,
    watcher: watcher::SpecWatcher,
    updates: Option<std::sync::mpsc::Receiver<prescale_dataflows::decide::SpecUpdate>>,
}

impl KubeIo {
    /// Starts the watcher (returning once the scalers are listed) and the
    /// sink.
    pub fn start(settings: &crate::config::KubeSettings) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let options = watcher::WatchOptions {
            kubeconfig: settings.sink.kubeconfig.clone(),
            namespace: settings.namespace.clone(),
            field_manager: settings.sink.field_manager.clone(),
            ..watcher::WatchOptions::default()
        };
        let watcher = watcher::SpecWatcher::start(options, tx)?;
        let sink = sink::KubeSink::start(settings.sink.clone())?;
        Ok(KubeIo { sink, watcher, updates: Some(rx) })
    }

    /// The watcher's spec updates: those of the scalers listed at the start
    /// are already waiting; later ones arrive as the cluster changes. Taken
    /// once, by the worker that feeds them to the dataflow.
    pub fn take_updates(&mut self) -> Option<std::sync::mpsc::Receiver<prescale_dataflows::decide::SpecUpdate>> {
        self.updates.take()
    }

    /// A handle for the dataflow's writer to send decisions on.
    pub fn sender(&self) -> sink::DecisionSender {
        self.sink.sender()
    }

    /// Stops watching, writes the pending decisions and returns the sink's
    /// counts.
    pub fn finish(self) -> Result<sink::SinkReport> {
        self.watcher.stop();
        self.sink.finish()
    }
}
