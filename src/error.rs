//! Errors of the host: configuration, I/O and the timely runtime.

use std::path::PathBuf;

/// What can stop a prescale job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job config file could not be read or parsed.
    #[error("config file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong, from the TOML parser or the file system.
        message: String,
    },
    /// A setting is invalid; `field` names it as the config spells it.
    #[error("invalid setting `{field}`: {reason}")]
    InvalidSetting {
        /// The config field or CLI flag.
        field: String,
        /// Why the value is refused.
        reason: String,
    },
    /// A stage refused its settings.
    #[error(transparent)]
    Stage(#[from] prescale_dataflows::Error),
    /// Reading an input or writing an output failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done, e.g. "reading trace".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A Kafka client failed (brokers unreachable, topic missing, a
    /// delivery that could not be completed).
    #[error("kafka: {what}: {source}")]
    Kafka {
        /// What was being done, with the topic.
        what: String,
        /// The client's error.
        source: rdkafka::error::KafkaError,
    },
    /// A Kafka topic or cluster is not as the job needs it.
    #[error("kafka: {0}")]
    KafkaSetup(String),
    /// The metrics endpoint could not listen on its address.
    #[error("metrics endpoint {addr}: {source}")]
    Endpoint {
        /// The address, as configured.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The timely runtime failed (a worker panicked or could not connect).
    #[error("timely runtime: {0}")]
    Runtime(String),
    /// Talking to Kubernetes failed (the `kubernetes` sink or the
    /// PredictiveScaler watcher).
    #[error(transparent)]
    Kubernetes(#[from] crate::kube::Error),
}

impl Error {
    /// Shorthand for [`Error::InvalidSetting`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidSetting { field: field.into(), reason: reason.into() }
    }
}

/// Result alias for the host.
pub type Result<T, E = Error> = std::result::Result<T, E>;
