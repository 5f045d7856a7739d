//! Decoding: text records → [`Sample`]s, or [`Rejected`] with a reason.
//!
//! Three formats enter here, one module each:
//! - [`csv`]: the `timestamp,series,value` traces (unix seconds);
//! - [`adapter`]: the JSON lines prometheus-kafka-adapter writes;
//! - [`blog`]: the flat JSON of the original blog pipeline, one line
//!   carrying a CPU and a memory sample;
//! - [`bincode`]: prescale's compact binary record, one sample per message.
//!
//! [`deployment`] derives a deployment from labels or a pod name. Every
//! decoder takes any bytes without panicking: what it cannot use becomes a
//! rejection naming the field. Values are validated here once for all
//! formats (`validate`): finite, non-negative, at most
//! `max_value`.

pub mod adapter;
pub mod bincode;
pub mod blog;
pub mod csv;
pub mod deployment;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{Interner, Origin, RejectReason, Rejected, Sample, SeriesKey, stable_hash};

/// The formats prescale decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `timestamp,series,value` with unix seconds, as in the shared traces.
    Csv,
    /// prometheus-kafka-adapter JSON lines.
    AdapterJson,
    /// The blog pipeline's flat JSON lines.
    BlogJson,
    /// prescale's binary record ([`bincode`]), for Kafka messages.
    Bincode,
}

impl Format {
    /// Guesses the format of a file from its name: `.csv` is CSV, anything
    /// else is JSON lines, whose flavour is told by the first record.
    pub fn guess(path: &str, first_record: &str) -> Format {
        if path.ends_with(".csv") || path.ends_with(".csv.txt") {
            Format::Csv
        } else if first_record.contains("\"pod_name\"") {
            Format::BlogJson
        } else {
            Format::AdapterJson
        }
    }
}

/// How names and values are interpreted; part of the job config.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeOptions {
    /// Namespace for records that carry none (CSV, blog JSON).
    pub namespace: String,
    /// Metric name for CSV records, whose series is the deployment.
    pub csv_metric: String,
    /// Largest accepted value; anything above is `out-of-range`.
    pub max_value: f64,
    /// The deployments the job scales, as `namespace/deployment` patterns
    /// where either part may be `*`; records of any other deployment are
    /// rejected as `unknown-deployment`. Empty (the default) takes all.
    pub deployments: Vec<String>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            namespace: "default".to_owned(),
            csv_metric: "value".to_owned(),
            max_value: 1e15,
            deployments: Vec::new(),
        }
    }
}

/// A decoder for one source: options, the interner, and the origin of the
/// record in hand.
pub struct Decoder {
    format: Format,
    options: DecodeOptions,
    interner: Interner,
    source: Arc<str>,
}

impl Decoder {
    /// A decoder for `format`, labelling rejections with `source`.
    pub fn new(format: Format, options: DecodeOptions, source: &str) -> Self {
        Decoder { format, options, interner: Interner::default(), source: source.into() }
    }

    /// The format this decoder reads.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Decodes one record (a line without its newline). Each sample or
    /// rejection it yields is passed to `out`; a header or blank line
    /// yields nothing.
    pub fn decode(&mut self, line: &str, partition: u32, offset: u64, out: &mut impl FnMut(Result<Sample, Rejected>)) {
        let ctx = Ctx { line, partition, offset, source: &self.source };
        let known = &self.options.deployments;
        let out = &mut |r: Result<Sample, Rejected>| out(r.and_then(|s| admit_names(s, known, &ctx)));
        match self.format {
            Format::Csv => csv::decode(line, &self.options, &mut self.interner, &ctx, out),
            Format::AdapterJson => adapter::decode(line, &self.options, &mut self.interner, &ctx, out),
            Format::BlogJson => blog::decode(line, &self.options, &mut self.interner, &ctx, out),
            Format::Bincode => bincode::decode(line.as_bytes(), &self.options, &mut self.interner, &ctx, out),
        }
    }

    /// Decodes one message of raw bytes (a Kafka payload): binary records
    /// as they are, text formats when the bytes are UTF-8 (else the message
    /// is `malformed`).
    pub fn decode_bytes(
        &mut self,
        bytes: &[u8],
        partition: u32,
        offset: u64,
        out: &mut impl FnMut(Result<Sample, Rejected>),
    ) {
        if self.format == Format::Bincode {
            let ctx = Ctx { line: "", partition, offset, source: &self.source };
            let known = &self.options.deployments;
            bincode::decode(bytes, &self.options, &mut self.interner, &ctx, &mut |r| {
                let r = r.and_then(|s| admit_names(s, known, &ctx));
                // The raw field of a binary rejection is its bytes in hex.
                out(r.map_err(|mut e| {
                    e.raw = hex_prefix(bytes);
                    e
                }))
            });
            return;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => self.decode(text, partition, offset, out),
            Err(_) => {
                let text = String::from_utf8_lossy(bytes);
                let ctx = Ctx { line: &text, partition, offset, source: &self.source };
                out(Err(ctx.reject(RejectReason::Malformed, "not UTF-8")));
            }
        }
    }
}

/// The longest namespace or deployment name accepted: a Kubernetes object
/// name is at most 253 bytes, so anything longer is not one.
pub const MAX_NAME: usize = 253;

/// The longest metric name accepted.
pub const MAX_METRIC: usize = 512;

/// Checks a decoded sample's names: Kubernetes-sized, and among the
/// job's `decode.deployments` when it lists any.
fn admit_names(sample: Sample, known: &[String], ctx: &Ctx<'_>) -> Result<Sample, Rejected> {
    let key = sample.series.key();
    if key.namespace.len() > MAX_NAME || key.deployment.len() > MAX_NAME || key.metric.len() > MAX_METRIC {
        let longest = key.namespace.len().max(key.deployment.len()).max(key.metric.len());
        return Err(ctx.reject(RejectReason::Malformed, format!("a name of {longest} bytes is too long")));
    }
    if !known.is_empty() && !known.iter().any(|p| matches_pattern(p, key)) {
        let detail = format!("{} is not in decode.deployments", sample.series);
        return Err(ctx.reject(RejectReason::UnknownDeployment, detail));
    }
    Ok(sample)
}

/// Whether `namespace/deployment` matches a `source.deployments` pattern.
pub fn matches_pattern(pattern: &str, key: &SeriesKey) -> bool {
    let (ns, name) = pattern.split_once('/').unwrap_or(("*", pattern));
    (ns == "*" || ns == key.namespace) && (name == "*" || name == key.deployment)
}

/// The start of a binary record as hex, for a rejection's `raw` field.
fn hex_prefix(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(Rejected::RAW_LIMIT);
    for b in bytes.iter().take(Rejected::RAW_LIMIT / 2) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The record being decoded, for building rejections.
pub(crate) struct Ctx<'a> {
    pub line: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub source: &'a Arc<str>,
}

impl Ctx<'_> {
    pub fn reject(&self, reason: RejectReason, detail: impl Into<String>) -> Rejected {
        Rejected::new(
            reason,
            detail,
            Origin { source: Arc::clone(self.source), partition: self.partition, offset: self.offset },
            self.line,
        )
    }
}

/// Checks a value against the rules every format shares.
pub(crate) fn validate(value: f64, options: &DecodeOptions, ctx: &Ctx<'_>) -> Result<f64, Rejected> {
    if !value.is_finite() {
        Err(ctx.reject(RejectReason::NonFinite, format!("value {value}")))
    } else if value < 0.0 {
        Err(ctx.reject(RejectReason::Negative, format!("value {value}")))
    } else if value > options.max_value {
        Err(ctx.reject(RejectReason::OutOfRange, format!("value {value} above max_value {}", options.max_value)))
    } else {
        // -0.0 and 0.0 must aggregate identically.
        Ok(value + 0.0)
    }
}

/// Parses a value written as text, as the adapter does (`"0.42"`, `"NaN"`,
/// `"+Inf"`); Rust's float parser accepts those spellings.
pub(crate) fn parse_value_text(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok()
}

/// The stable hash that stands for a pod name.
pub(crate) fn pod_id(pod: &str) -> u64 {
    stable_hash(pod)
}
