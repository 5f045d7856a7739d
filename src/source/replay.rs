//! Replay of a recorded trace: CSV (`timestamp,series,value`) or JSON lines
//! (prometheus-kafka-adapter or blog format).
//!
//! The partitions of a file are its series: each series is read in file
//! order and judged by its own watermark, which is what a trace sorted by
//! series (as the shared traces are) or a log of adapter messages needs.
//! Every worker reads the file and keeps the series it owns (by the
//! series' stable hash) and the rejected lines it owns (by line number), so
//! each record is counted exactly once in the job. The file is read whole:
//! replay is for traces and backtests; streams come through Kafka.
//! Accepted samples are then fed in timestamp order, as fast as possible or
//! paced at a speed-up over event time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prescale_dataflows::decode::{DecodeOptions, Decoder, Format};
use prescale_dataflows::event_time::{Arrival, EventTimeSettings, PartitionClock};
use prescale_dataflows::record::{Origin, RejectReason, Rejected, Sample, Series};
use prescale_dataflows::time::{HOUR, Millis};
use rustc_hash::FxHashMap;

use super::Feed;
use crate::error::{Error, Result};

/// Replays `path` into this worker's share of the dataflow.
pub fn drive(
    feed: &mut Feed<'_>,
    path: &Path,
    format: Option<Format>,
    speedup: f64,
    decode: &DecodeOptions,
    event_time: EventTimeSettings,
) -> Result<()> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { what: "reading trace", path: path.to_owned(), source })?;
    let index = feed.worker.index() as u64;
    let peers = feed.worker.peers() as u64;
    let name = format!("replay:{}", path.display());
    let source: Arc<str> = name.as_str().into();
    let first = bytes
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l).trim().to_owned())
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let format = format.unwrap_or_else(|| Format::guess(&path.to_string_lossy(), &first));
    let mut decoder = Decoder::new(format, decode.clone(), &name);

    let mut clocks: FxHashMap<Series, PartitionClock> = FxHashMap::default();
    let mut accepted: Vec<(Millis, Sample)> = Vec::new();
    // The latest event time used in the whole file, which every worker sees.
    let mut last_time: Millis = 0;
    for (number, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let offset = number as u64 + 1;
        let owns_line = offset % peers == index;
        let Ok(line) = std::str::from_utf8(line) else {
            if owns_line {
                let text = String::from_utf8_lossy(line);
                let origin = Origin { source: Arc::clone(&source), partition: 0, offset };
                feed.ingest.reject(Rejected::new(RejectReason::Malformed, "not UTF-8", origin, &text));
            }
            continue;
        };
        let ingest = &mut *feed.ingest;
        decoder.decode(line, 0, offset, &mut |result| match result {
            Ok(sample) => {
                // Every worker judges every series, so that all agree on
                // the latest time the file really reaches (records the
                // data-quality gate refuses do not count).
                let clock = clocks.entry(sample.series.clone()).or_insert_with(|| PartitionClock::new(event_time));
                let arrival = clock.admit(&sample);
                if let Arrival::OnTime(_) = arrival {
                    last_time = last_time.max(sample.time);
                }
                if sample.series.route() % peers != index {
                    return;
                }
                match arrival {
                    Arrival::OnTime(at) => accepted.push((at, sample)),
                    other => {
                        let origin = Origin { source: Arc::clone(&source), partition: 0, offset };
                        ingest.reject_if_any(other.rejection(&sample, origin, line));
                    }
                }
            }
            Err(mut rejected) => {
                // Every worker places a flag, as every worker judges every
                // series; the line's owner sends it.
                if let Some(flag) = &rejected.flag
                    && let Some(clock) = clocks.get_mut(&Series::new(flag.series.clone()))
                {
                    clock.place(&mut rejected);
                } else {
                    rejected.flag = None;
                }
                if owns_line {
                    ingest.reject(rejected);
                }
            }
        });
    }
    drop(bytes);

    // Stable: samples of one timestamp keep their file order.
    accepted.sort_by_key(|(at, _)| *at);
    let started = Instant::now();
    let first_at = accepted.first().map_or(0, |(at, _)| *at);
    // Unpaced, the frontier moves in big steps: how often it moves changes
    // no row, only how much work each step of the dataflow batches up.
    let (batch_records, batch_time) = if speedup > 0.0 { (1, 0) } else { (50_000, HOUR) };
    let mut last_advance = first_at;
    let mut since_advance = 0usize;
    for (at, sample) in accepted {
        if at > feed.ingest.frontier() {
            if speedup > 0.0 {
                let offset = Duration::from_secs_f64((at - first_at) as f64 / 1000.0 / speedup);
                feed.ingest.flush();
                feed.wait_until(started + offset);
            }
            if since_advance >= batch_records || at >= last_advance + batch_time {
                feed.advance_to(at);
                last_advance = at;
                since_advance = 0;
            }
        }
        since_advance += 1;
        feed.ingest.push(at, sample);
    }
    // Every worker ends at the watermark of the file's latest event time,
    // so that what happens at the end of the input (staleness checks due
    // before it) does not depend on the cluster's shape.
    if let Arrival::OnTime(end) = PartitionClock::new(event_time).observe(last_time) {
        feed.advance_to(end);
    }
    Ok(())
}
