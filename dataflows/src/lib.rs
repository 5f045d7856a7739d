//! prescale's pure computations on timely and differential dataflow.
//!
//! Raw metric records enter as text (CSV lines, prometheus-kafka-adapter JSON,
//! the blog pipeline's flat JSON) and leave as per-deployment feature rows.
//! The stages, in the order data flows through them:
//!
//! 1. [`decode`]: text → [`Sample`] or [`Rejected`] with a reason;
//! 2. [`event_time`]: per source partition, a watermark (max event time seen
//!    minus the allowed lateness) that decides which samples are late, and
//!    the timely timestamp each accepted sample travels at;
//! 3. [`ingest`]: the entry into the dataflow, which pre-aggregates samples
//!    into per-pane partials before they are exchanged between workers;
//! 4. [`features`]: tumbling and sliding windows, lagged values and calendar
//!    features per (namespace, deployment, metric);
//! 5. [`forecast`]: online forecasting models, their prediction intervals,
//!    per-series model selection and rolling-origin evaluation;
//! 6. [`decide`]: replica decisions from forecasts, with guardrails and
//!    reactive fallback.
//!
//! Nothing here does I/O: no tokio, kube or rdkafka. The host crate
//! (`prescale`) reads sources, drives the timely workers and writes sinks.
//! Every stage is deterministic: the same input gives the same output with
//! any number of workers and processes.

pub mod decide;
pub mod decode;
pub mod error;
pub mod event_time;
pub mod features;
pub mod forecast;
pub mod ingest;
pub mod quality;
pub mod record;
pub mod time;

pub use error::{Error, Result};
pub use record::{Origin, RejectReason, Rejected, Sample, Series, SeriesKey};
