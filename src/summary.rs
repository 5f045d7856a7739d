//! What a job did: counts gathered from every worker, reported once.
//!
//! Each worker counts what passed through it; at the end the counts travel
//! through a small dataflow to worker 0, which reports the totals. The
//! invariant `records_in = records_used + Σ rejected` holds by
//! construction: every record that reaches a worker is either pushed into
//! the dataflow or rejected with a reason.

use std::collections::BTreeMap;
use std::fmt;

use prescale_dataflows::ingest::IngestStats;
use prescale_dataflows::record::RejectReason;
use serde::{Deserialize, Serialize};

use crate::backtest::PolicyTotals;

/// One worker's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Samples used.
    pub used: u64,
    /// Rejected records by [`RejectReason::index`].
    pub rejected: Vec<u64>,
    /// Tumbling rows emitted, first revisions only.
    pub tumbling_windows: u64,
    /// Sliding rows emitted, first revisions only.
    pub sliding_windows: u64,
    /// Rows that corrected an earlier revision.
    pub corrections: u64,
    /// Lag rows emitted.
    pub lag_rows: u64,
    /// Records that arrived after a window they belong to was emitted.
    pub corrected_records: u64,
    /// Forecasts emitted.
    pub forecasts: u64,
    /// Decisions emitted.
    pub decisions: u64,
}

impl WorkerStats {
    /// Starts from an ingest's counts.
    pub fn from_ingest(stats: &IngestStats) -> Self {
        WorkerStats { used: stats.used, rejected: stats.rejected.to_vec(), ..WorkerStats::default() }
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, other: &WorkerStats) {
        self.used += other.used;
        if self.rejected.len() < other.rejected.len() {
            self.rejected.resize(other.rejected.len(), 0);
        }
        for (a, b) in self.rejected.iter_mut().zip(&other.rejected) {
            *a += b;
        }
        self.tumbling_windows += other.tumbling_windows;
        self.sliding_windows += other.sliding_windows;
        self.corrections += other.corrections;
        self.lag_rows += other.lag_rows;
        self.corrected_records += other.corrected_records;
        self.forecasts += other.forecasts;
        self.decisions += other.decisions;
    }
}

/// The job summary (`--summary-json` writes it as one JSON object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Where the records came from.
    pub source: String,
    /// Timely workers in all processes.
    pub workers: usize,
    /// Records that entered: used plus rejected.
    pub records_in: u64,
    /// Records used in features.
    pub records_used: u64,
    /// Rejected records by reason (every reason listed, zeros included).
    pub rejected: BTreeMap<String, u64>,
    /// Windows emitted (tumbling and sliding, first revisions).
    pub windows_emitted: u64,
    /// Of which tumbling.
    pub tumbling_windows: u64,
    /// Of which sliding.
    pub sliding_windows: u64,
    /// Rows re-emitted because late records within the lateness changed them.
    pub corrections: u64,
    /// Records that arrived after a window they belong to was emitted.
    pub corrected_records: u64,
    /// Lag rows emitted.
    pub lag_rows: u64,
    /// Forecasts emitted (one per series each time a window of the forecast
    /// step closes).
    pub forecasts: u64,
    /// Replica decisions emitted (one per scaler and forecast, plus one per
    /// stale series).
    pub decisions: u64,
    /// The default scaler's decisions against HPA (at the same 70% target),
    /// the oracle and a static peak on the simulated cluster; empty when
    /// the default scaler is off or the source is a stream (Kafka), whose
    /// decisions are not kept.
    pub comparison: Vec<PolicyTotals>,
    /// Wall-clock time of the job.
    pub elapsed_seconds: f64,
    /// records_in / elapsed_seconds.
    pub records_per_second: f64,
}

impl Summary {
    /// Builds the summary from the totals of all workers.
    pub fn new(source: String, workers: usize, totals: &WorkerStats, elapsed_seconds: f64) -> Self {
        let rejected: BTreeMap<String, u64> = RejectReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), totals.rejected.get(r.index()).copied().unwrap_or(0)))
            .collect();
        let records_in = totals.used + rejected.values().sum::<u64>();
        Summary {
            source,
            workers,
            records_in,
            records_used: totals.used,
            rejected,
            windows_emitted: totals.tumbling_windows + totals.sliding_windows,
            tumbling_windows: totals.tumbling_windows,
            sliding_windows: totals.sliding_windows,
            corrections: totals.corrections,
            corrected_records: totals.corrected_records,
            lag_rows: totals.lag_rows,
            forecasts: totals.forecasts,
            decisions: totals.decisions,
            comparison: Vec::new(),
            elapsed_seconds,
            records_per_second: if elapsed_seconds > 0.0 { records_in as f64 / elapsed_seconds } else { 0.0 },
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "prescale run: {} on {} worker(s)", self.source, self.workers)?;
        writeln!(f, "  records in        {:>14}", self.records_in)?;
        writeln!(f, "  records used      {:>14}", self.records_used)?;
        for (reason, n) in &self.rejected {
            writeln!(f, "  rejected {reason:<13}{n:>10}")?;
        }
        writeln!(
            f,
            "  windows emitted   {:>14}   ({} tumbling, {} sliding)",
            self.windows_emitted, self.tumbling_windows, self.sliding_windows
        )?;
        writeln!(
            f,
            "  corrections       {:>14}   (from {} records within the lateness)",
            self.corrections, self.corrected_records
        )?;
        writeln!(f, "  lag rows          {:>14}", self.lag_rows)?;
        writeln!(f, "  forecasts         {:>14}", self.forecasts)?;
        writeln!(f, "  decisions         {:>14}", self.decisions)?;
        if !self.comparison.is_empty() {
            writeln!(f, "  simulated cluster, every deployment, prescale's decisions vs HPA at the same 70% target:")?;
            writeln!(
                f,
                "    {:<12} {:>13} {:>16} {:>8} {:>15}",
                "policy", "replica-hours", "under-prov. min", "scales", "worst p99 (ms)"
            )?;
            for p in &self.comparison {
                writeln!(
                    f,
                    "    {:<12} {:>13.1} {:>16.1} {:>8} {:>15.0}",
                    p.policy, p.replica_hours, p.underprovisioned_minutes, p.scale_events, p.worst_p99_ms
                )?;
            }
        }
        writeln!(f, "  elapsed           {:>13.2}s", self.elapsed_seconds)?;
        write!(f, "  records/second    {:>14.0}", self.records_per_second)
    }
}
