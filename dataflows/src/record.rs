//! The record model: metric samples, the series they belong to, and
//! rejected records with the reason they were not used.
//!
//! A [`Sample`] is one observation: (event time, namespace, deployment, pod,
//! metric name, value). Names are interned ([`Interner`]) so that a sample
//! is a few words and cloning one never copies a string; each interned name
//! carries a stable hash, computed once, that routes it to a worker.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHasher};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::Millis;

/// A stable 64-bit hash: the same on every worker, process and run, so it
/// may decide which worker owns a key.
pub fn stable_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = FxHasher::default();
    value.hash(&mut h);
    // Fx leaves the low bits weak for short keys; mix before `% peers`.
    let x = h.finish();
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// The identity of one time series: what features are computed for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    /// Kubernetes namespace of the deployment.
    pub namespace: String,
    /// Deployment (or StatefulSet) name.
    pub deployment: String,
    /// Metric name, e.g. `container_cpu_usage_seconds_total`.
    pub metric: String,
}

#[derive(Debug)]
struct SeriesInner {
    hash: u64,
    key: SeriesKey,
}

/// An interned [`SeriesKey`] with its stable hash; cheap to clone.
#[derive(Clone, Debug)]
pub struct Series(Arc<SeriesInner>);

impl Series {
    /// Interns nothing: wraps a key, computing its hash.
    pub fn new(key: SeriesKey) -> Self {
        let hash = stable_hash(&(&key.namespace, &key.deployment, &key.metric));
        Series(Arc::new(SeriesInner { hash, key }))
    }

    /// The key's stable hash, which decides the worker that owns it.
    pub fn route(&self) -> u64 {
        self.0.hash
    }

    /// The key.
    pub fn key(&self) -> &SeriesKey {
        &self.0.key
    }
}

impl PartialEq for Series {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || (self.0.hash == other.0.hash && self.0.key == other.0.key)
    }
}
impl Eq for Series {}
impl Hash for Series {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}
impl PartialOrd for Series {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Series {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // By hash first: a cheap, stable order (sorting and arrangements
        // need some total order, not an alphabetical one).
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.hash.cmp(&other.0.hash).then_with(|| self.0.key.cmp(&other.0.key))
    }
}
impl Serialize for Series {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.key.serialize(s)
    }
}
impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SeriesKey::deserialize(d).map(Series::new)
    }
}
impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.0.key;
        write!(f, "{}/{}/{}", k.namespace, k.deployment, k.metric)
    }
}

/// One metric observation, after decoding and validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Event time from the data.
    pub time: Millis,
    /// Namespace, deployment and metric.
    pub series: Series,
    /// Stable hash of the pod name: all the windows need of a pod is to
    /// count distinct pods.
    pub pod: u64,
    /// The value: finite, non-negative and within the configured range.
    pub value: f64,
}

/// Why a record was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// Not parseable in the declared format, or required fields missing.
    Malformed,
    /// A timestamp that cannot be parsed or placed in time.
    BadTimestamp,
    /// NaN or infinite value.
    NonFinite,
    /// A negative value where load cannot be negative.
    Negative,
    /// A value above the configured maximum.
    OutOfRange,
    /// Behind its partition's watermark: its windows may already be final.
    Late,
    /// The same series, pod and event time as a sample already used.
    Duplicate,
    /// A deployment outside the job's `decode.deployments`.
    UnknownDeployment,
}

impl RejectReason {
    /// Every reason, in a fixed order for reports.
    pub const ALL: [RejectReason; 8] = [
        RejectReason::Malformed,
        RejectReason::BadTimestamp,
        RejectReason::NonFinite,
        RejectReason::Negative,
        RejectReason::OutOfRange,
        RejectReason::Late,
        RejectReason::Duplicate,
        RejectReason::UnknownDeployment,
    ];

    /// The reason as it appears in reports and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::BadTimestamp => "bad-timestamp",
            RejectReason::NonFinite => "non-finite",
            RejectReason::Negative => "negative",
            RejectReason::OutOfRange => "out-of-range",
            RejectReason::Late => "late",
            RejectReason::Duplicate => "duplicate",
            RejectReason::UnknownDeployment => "unknown-deployment",
        }
    }

    /// Index into [`RejectReason::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a record came from: the source, a partition of it, and the
/// position in that partition (line number of a file, Kafka offset).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Source name, e.g. `replay:/path/series.csv` or `generator`.
    pub source: Arc<str>,
    /// Partition within the source.
    pub partition: u32,
    /// Position within the partition.
    pub offset: u64,
}

/// A record that was not used, with the reason; the dead-letter output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    /// Why it was rejected.
    pub reason: RejectReason,
    /// A human-readable detail (which field, what value).
    pub detail: String,
    /// Where it came from.
    pub origin: Origin,
    /// The start of the raw record, at most [`Rejected::RAW_LIMIT`] bytes.
    pub raw: String,
    /// What the record says about its series' data, when the data-quality
    /// gate rejected it ([`crate::quality`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<Box<crate::quality::Flag>>,
}

impl Rejected {
    /// How much of a rejected record's raw text is kept.
    pub const RAW_LIMIT: usize = 512;

    /// Builds a rejection, keeping a bounded prefix of the raw text.
    pub fn new(reason: RejectReason, detail: impl Into<String>, origin: Origin, raw: &str) -> Self {
        let mut end = raw.len().min(Self::RAW_LIMIT);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        Rejected { reason, detail: detail.into(), origin, raw: raw[..end].to_owned(), flag: None }
    }
}

/// Interns series keys so that equal keys share one allocation.
///
/// Lookups borrow the names (no allocation for a key seen before). The
/// table is cleared when it grows past its bound, so an endless stream with
/// churning names keeps bounded memory; series already handed out stay
/// valid, and equality never depends on sharing an allocation.
pub struct Interner {
    series: FxHashMap<u64, Vec<Series>>,
    len: usize,
    bound: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner::with_bound(1 << 20)
    }
}

impl Interner {
    /// An interner that forgets everything after `bound` distinct keys.
    pub fn with_bound(bound: usize) -> Self {
        Interner { series: FxHashMap::default(), len: 0, bound }
    }

    /// The shared [`Series`] for these names.
    pub fn series(&mut self, namespace: &str, deployment: &str, metric: &str) -> Series {
        let hash = stable_hash(&(namespace, deployment, metric));
        if let Some(found) = self.series.get(&hash).and_then(|bucket| {
            bucket.iter().find(|s| {
                let k = s.key();
                k.namespace == namespace && k.deployment == deployment && k.metric == metric
            })
        }) {
            return found.clone();
        }
        if self.len >= self.bound {
            self.series.clear();
            self.len = 0;
        }
        let series = Series::new(SeriesKey {
            namespace: namespace.to_owned(),
            deployment: deployment.to_owned(),
            metric: metric.to_owned(),
        });
        self.series.entry(hash).or_default().push(series.clone());
        self.len += 1;
        series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_series_share_and_compare_by_value() {
        let mut interner = Interner::with_bound(2);
        let a = interner.series("shop", "checkout", "cpu");
        let b = interner.series("shop", "checkout", "cpu");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        interner.series("shop", "cart", "cpu");
        // Past the bound the table restarts; equality still holds.
        let c = interner.series("shop", "search", "cpu");
        let d = interner.series("shop", "checkout", "cpu");
        assert_eq!(a, d);
        assert_ne!(a, c);
        assert_eq!(a.route(), d.route());
        assert_eq!(a.route(), Series::new(a.key().clone()).route());
    }

    #[test]
    fn raw_text_is_cut_on_a_char_boundary() {
        let origin = Origin { source: "t".into(), partition: 0, offset: 0 };
        let raw = "é".repeat(400);
        let r = Rejected::new(RejectReason::Malformed, "x", origin, &raw);
        assert!(r.raw.len() <= Rejected::RAW_LIMIT);
        assert!(r.raw.chars().all(|c| c == 'é'));
    }
}
