//! prescale, the host: everything that does I/O around the pure dataflows
//! of [`prescale_dataflows`].
//!
//! - [`cli`] and [`config`]: flags and the TOML job definition, validated
//!   once into [`config::Settings`];
//! - [`source`]: the built-in workload generator and trace replay, which
//!   feed each timely worker its share of the partitions;
//! - [`kafka`]: the Kafka source, its offsets, the Kafka sinks and the
//!   embedded mock cluster; [`produce`]: the `prescale produce` command;
//! - [`job`]: the timely cluster, the dataflow on every worker, the writers
//!   and the [`summary`];
//! - [`backtest`]: prescale against HPA, the oracle and a static peak on a
//!   trace, at a common target and at equal service;
//! - [`simulate`]: the simulated cluster, the HPA baseline and the oracle
//!   that backtests compare prescale's decisions with;
//! - [`forecast_eval`]: rolling-origin accuracy of the forecasting models
//!   on a recorded trace;
//! - [`kube`]: the `PredictiveScaler` resource, its watcher and the
//!   Kubernetes sink;
//! - [`metrics`]: the Prometheus registry, the `/metrics`, `/healthz` and
//!   `/readyz` endpoint and the decision latency clock; [`logging`]: the
//!   structured log subscriber.

pub mod backtest;
pub mod cli;
pub mod config;
pub mod error;
pub mod forecast_eval;
pub mod job;
pub mod kafka;
pub mod kube;
pub mod logging;
pub mod metrics;
pub mod produce;
pub mod simulate;
pub mod source;
pub mod summary;

pub use error::{Error, Result};
