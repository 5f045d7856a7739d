//! Logs: structured events through `tracing`, written to stderr as text
//! lines or as one JSON object per line (`--log-format json`), for a log
//! pipeline to parse.
//!
//! Events are emitted where something happens once or rarely (the job
//! starts or ends, a client error, a retry), never per record. The level
//! is `info` unless `PRESCALE_LOG` names another (`error`, `warn`,
//! `debug`, `trace`, `off`).

use std::str::FromStr;

use tracing_subscriber::filter::LevelFilter;

use crate::error::{Error, Result};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields.
    Json,
}

/// The variable that sets the level.
pub const LEVEL_VARIABLE: &str = "PRESCALE_LOG";

/// Installs the process' subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) -> Result<()> {
    let level = match std::env::var(LEVEL_VARIABLE) {
        Ok(text) => LevelFilter::from_str(text.trim()).map_err(|_| {
            Error::invalid(LEVEL_VARIABLE, format!("{text:?} is not off, error, warn, info, debug or trace"))
        })?,
        Err(_) => LevelFilter::INFO,
    };
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).with_target(true);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    // A subscriber set already (a second call in tests) is kept.
    let _ = installed;
    Ok(())
}
