//! The Kafka source: each timely worker consumes its own share of a
//! topic's partitions and feeds them into its dataflow.
//!
//! Partition `p` belongs to global worker `p mod (processes × workers)`;
//! each worker `assign()`s exactly its partitions to its own consumer, so a
//! multi-process job reads each partition once, with no consumer-group
//! rebalancing inside the job (the group only holds committed offsets).
//! A worker that owns no partition closes its input at once, so it never
//! holds the job's frontier back.
//!
//! Messages are decoded ([`Decoder::decode_bytes`]: adapter JSON, blog
//! JSON, CSV lines or bincode) and judged by their partition's own
//! [`PartitionClock`]. The worker's frontier is the minimum over its
//! partitions' watermark ticks, except partitions that delivered nothing
//! for the idle timeout: they stop holding the frontier back until they
//! deliver again (a record that then falls behind the frontier is rejected
//! as `late`). Until every live partition has delivered a record or been
//! read to its end while empty, the frontier waits. Undecodable messages become rejections carrying the
//! topic, partition and offset.
//!
//! The worker polls without blocking between steps of its dataflow and
//! parks briefly when there is nothing to read. Every commit interval it
//! commits, per partition, the offset from which a restart must read again
//! ([`super::offsets`]). With `exit_when_idle`, the worker stops once it
//! has read each of its partitions to the end and no record has reached it
//! for that long, and the broker confirms it (the partitions' high
//! watermarks are where the worker is); it closes its input (every window
//! is flushed), waits until the outputs are complete and commits the
//! offsets after the last record consumed.
//!
//! A broker outage is neither the end of the stream nor fatal: librdkafka
//! reconnects by itself (with its own backoff), the worker keeps polling
//! (parked between polls, not spinning) and reports the outage once, then
//! at most every [`REPORT_EVERY`], and once more when records flow again.
//! While the broker cannot confirm the end, the job does not end, and once
//! it answers again the job waits the whole `exit_when_idle` afresh for
//! records produced meanwhile. No record arrives during an outage, so
//! event time and every output stand still (no decision is made on the
//! absence of data). Silence during an outage is not idleness: when
//! records flow again, every partition gets the whole idle timeout afresh,
//! so a partition that comes back a moment after another is not left
//! behind the frontier and its records are not judged late.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prescale_dataflows::decode::{DecodeOptions, Decoder};
use prescale_dataflows::event_time::{Arrival, EventTimeSettings, PartitionClock};
use prescale_dataflows::record::{Origin, RejectReason, Rejected};
use prescale_dataflows::time::Millis;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rustc_hash::FxHashMap;

use super::offsets::{CommitMark, PartitionProgress};
use super::{KafkaSourceSettings, Properties, StartFrom, kafka_error};
use crate::error::{Error, Result};
use crate::source::{Feed, PARK};

/// Messages consumed by every Kafka source of this process (the embedded
/// producer paces itself by it).
pub static CONSUMED: AtomicU64 = AtomicU64::new(0);

/// How long a worker with nothing to read waits for a message before it
/// steps its dataflow again.
const POLL_WAIT: Duration = Duration::from_millis(5);

/// How long metadata and offset queries may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the broker may take to confirm the end of a partition before
/// the worker goes back to polling (and asks again later).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// The least time between two confirmations the broker could not give.
const CONFIRM_RETRY: Duration = Duration::from_secs(1);

/// How long a partition's high watermark must stay above the worker's
/// position, with nothing delivered, before the gap is taken to hold no
/// records (see [`confirm_end`]).
const GAP_SETTLED: Duration = Duration::from_secs(10);

/// The least time between two reports of one outage.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);

/// What every worker learns about the topic before the job starts.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Partitions of the topic.
    pub partitions: i32,
    /// Per partition, the committed offset and its mark (only with
    /// `from = committed`, for partitions the group committed).
    pub resume: FxHashMap<i32, (i64, CommitMark)>,
    /// Output rows at timely times below this were written by an earlier
    /// run: they are suppressed, not written again.
    pub suppress_below: Millis,
}

fn consumer(settings: &KafkaSourceSettings, properties: &Properties) -> Result<BaseConsumer> {
    let defaults = [
        ("group.id", settings.group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("enable.partition.eof", "true"),
        ("auto.offset.reset", "earliest"),
        ("client.id", "prescale"),
        // librdkafka pauses a partition's fetching for this long once its
        // local queue is full (default 1 s): the worker drains the queue
        // far sooner, so fetch again almost at once.
        ("fetch.queue.backoff.ms", "10"),
    ];
    super::client_config(&settings.topic.brokers, &defaults, properties)
        .create()
        .map_err(kafka_error(format!("creating a consumer for {}", settings.topic.uri())))
}

/// Reads the topic's partition count and, with `from = committed`, the
/// group's commits.
pub fn plan(settings: &KafkaSourceSettings, properties: &Properties) -> Result<Plan> {
    let consumer = consumer(settings, properties)?;
    let topic = &settings.topic.topic;
    let metadata = consumer
        .fetch_metadata(Some(topic), QUERY_TIMEOUT)
        .map_err(kafka_error(format!("reading metadata of {}", settings.topic.uri())))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none())
        .map_or(0, |t| t.partitions().len() as i32);
    if partitions == 0 {
        return Err(Error::KafkaSetup(format!("topic {} does not exist or has no partitions", settings.topic.uri())));
    }
    let mut plan = Plan { partitions, ..Plan::default() };
    if settings.from != StartFrom::Committed {
        return Ok(plan);
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, QUERY_TIMEOUT)
        .map_err(kafka_error(format!("reading committed offsets of group {}", settings.group)))?;
    for e in committed.elements_for_topic(topic) {
        if let Offset::Offset(offset) = e.offset() {
            let mark = CommitMark::decode(e.metadata()).unwrap_or_default();
            plan.suppress_below = plan.suppress_below.max(mark.emitted_below);
            plan.resume.insert(e.partition(), (offset, mark));
        }
    }
    Ok(plan)
}

/// One partition this worker owns.
struct Owned {
    partition: i32,
    clock: PartitionClock,
    progress: PartitionProgress,
    last_record: Instant,
    /// Read to its end, and no record since.
    at_end: bool,
    /// The offset after the last record consumed, or the offset reading
    /// started from; `None` before the first record of a partition read
    /// from its beginning or end.
    next: Option<i64>,
    /// The high watermark the broker gave when it was above `next`, and
    /// when it first did, if nothing has been delivered since (see
    /// [`confirm_end`]).
    gap: Option<(i64, Instant)>,
}

/// Client errors since records last flowed: reported when they start, at
/// most every [`REPORT_EVERY`] while they last, and when they end.
struct Outage {
    since: Instant,
    errors: u64,
    reported: Instant,
    unreported: u64,
}

impl Outage {
    fn new(now: Instant) -> Self {
        Outage { since: now, errors: 0, reported: now, unreported: 0 }
    }

    /// Counts an error; reports the first one and then at most every
    /// [`REPORT_EVERY`].
    fn error(&mut self, uri: &str, error: &dyn std::fmt::Display, now: Instant) {
        self.errors += 1;
        if self.errors == 1 || now.duration_since(self.reported) >= REPORT_EVERY {
            let down_for = format!("{:.0?}", now.duration_since(self.since));
            match self.unreported {
                0 if self.errors == 1 => {
                    tracing::warn!(topic = %uri, %error, "kafka source: broker unreachable; retrying")
                }
                n => tracing::warn!(
                    topic = %uri, %error, errors_since_last_report = n, %down_for,
                    "kafka source: broker still unreachable; retrying"
                ),
            }
            self.reported = now;
            self.unreported = 0;
        } else {
            self.unreported += 1;
        }
    }

    /// Reports the end of the outage. The silence was the outage's, not the
    /// partitions': each gets the whole idle timeout again to deliver.
    fn end(self, uri: &str, what: &str, owned: &mut [Owned], now: Instant) {
        let after = format!("{:.1?}", now.duration_since(self.since));
        tracing::info!(topic = %uri, %after, client_errors = self.errors, "kafka source: {what} again");
        for part in owned {
            part.last_record = part.last_record.max(now);
        }
    }
}

/// Consumes this worker's partitions into the dataflow until idle (with
/// `exit_when_idle`) or forever.
#[allow(clippy::too_many_arguments)]
pub fn drive(
    feed: &mut Feed<'_>,
    settings: &KafkaSourceSettings,
    properties: &Properties,
    plan: &Plan,
    decode: &DecodeOptions,
    event_time: EventTimeSettings,
    horizon: Millis,
) -> Result<()> {
    let index = feed.worker.index() as i32;
    let peers = feed.worker.peers() as i32;
    let topic = settings.topic.topic.as_str();
    let started = Instant::now();
    let mut owned: Vec<Owned> = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for partition in (0..plan.partitions).filter(|p| p % peers == index) {
        let resumed = plan.resume.get(&partition);
        let offset = match (settings.from, resumed) {
            (StartFrom::Latest, _) => Offset::End,
            (StartFrom::Committed, Some(&(offset, _))) => Offset::Offset(offset),
            _ => Offset::Beginning,
        };
        let max_seen = resumed.and_then(|(_, mark)| mark.max_seen);
        let mut clock = PartitionClock::new(event_time);
        if let Some(t) = max_seen {
            // Restores the watermark the earlier run had at this offset.
            clock.observe(t);
        }
        let start = match offset {
            Offset::Offset(o) => o,
            _ => -1,
        };
        assignment
            .add_partition_offset(topic, partition, offset)
            .map_err(kafka_error(format!("assigning partition {partition}")))?;
        owned.push(Owned {
            partition,
            clock,
            progress: PartitionProgress::new(start, max_seen),
            last_record: started,
            at_end: false,
            next: (start >= 0).then_some(start),
            gap: None,
        });
    }
    if owned.is_empty() {
        return Ok(());
    }
    let consumer = consumer(settings, properties)?;
    consumer.assign(&assignment).map_err(kafka_error(format!("assigning partitions of {}", settings.topic.uri())))?;
    let slot: FxHashMap<i32, usize> = owned.iter().enumerate().map(|(i, o)| (o.partition, i)).collect();

    let name = format!("kafka:{topic}");
    let source: Arc<str> = name.as_str().into();
    let mut decoder = Decoder::new(settings.format, decode.clone(), &name);
    let mut last_any = started;
    let mut last_commit = started;
    let mut committed: Vec<(i64, CommitMark)> = Vec::new();
    let mut outage: Option<Outage> = None;
    let mut confirm_after = started;
    let mut empty_round = false;
    const BATCH: usize = 20_000;
    loop {
        let mut got = 0;
        let polled_at = Instant::now();
        while got < BATCH {
            // After an empty round, wait for the next message (librdkafka
            // wakes the poll as soon as one arrives) instead of spinning.
            let wait = if got == 0 && empty_round { POLL_WAIT } else { Duration::ZERO };
            let message = match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(&i) = slot.get(&p) {
                        owned[i].at_end = true;
                    }
                    continue;
                }
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    // The consumer is unusable (librdkafka gives up on it).
                    return Err(Error::Kafka {
                        what: format!("consuming {}", settings.topic.uri()),
                        source: KafkaError::MessageConsumptionFatal(code),
                    });
                }
                Some(Err(e)) => {
                    // Transient client errors (a broker down or restarting)
                    // are retried by librdkafka, which reconnects with its
                    // own backoff.
                    crate::metrics::global().kafka_error("consume");
                    outage.get_or_insert_with(|| Outage::new(polled_at)).error(&settings.topic.uri(), &e, polled_at);
                    break;
                }
            };
            got += 1;
            if let Some(o) = outage.take() {
                o.end(&settings.topic.uri(), "records flow", &mut owned, polled_at);
            }
            let Some(&i) = slot.get(&message.partition()) else { continue };
            let part = &mut owned[i];
            part.last_record = polled_at;
            part.at_end = false;
            let offset = message.offset();
            part.next = Some(offset.saturating_add(1));
            part.gap = None;
            let partition = part.partition as u32;
            let ingest = &mut *feed.ingest;
            let clock = &mut part.clock;
            let mut latest: Option<Millis> = None;
            let payload = message.payload().unwrap_or_default();
            if payload.is_empty() {
                let origin = Origin { source: Arc::clone(&source), partition, offset: offset as u64 };
                ingest.reject(Rejected::new(RejectReason::Malformed, "empty message", origin, ""));
            }
            decoder.decode_bytes(payload, partition, offset as u64, &mut |result| match result {
                Ok(sample) => match clock.admit(&sample) {
                    Arrival::OnTime(at) => {
                        latest = Some(latest.map_or(sample.time, |l: Millis| l.max(sample.time)));
                        ingest.push(at, sample);
                    }
                    other => {
                        let origin = Origin { source: Arc::clone(&source), partition, offset: offset as u64 };
                        let raw = format!("{} {} {}", sample.series, sample.time, sample.value);
                        ingest.reject_if_any(other.rejection(&sample, origin, &raw));
                    }
                },
                Err(mut rejected) => {
                    clock.place(&mut rejected);
                    ingest.reject(rejected)
                }
            });
            part.progress.consumed(offset, latest, latest.map_or(0, |t| t.saturating_add(horizon)));
        }
        let now = Instant::now();
        if got > 0 {
            last_any = now;
            CONSUMED.fetch_add(got as u64, Ordering::Relaxed);
        }
        // The frontier: the least watermark of the partitions not idle.
        let mut least: Option<Millis> = None;
        let mut waiting = false;
        for part in &owned {
            if now.duration_since(part.last_record) > settings.idle_timeout {
                continue;
            }
            match part.clock.tick() {
                Some(t) => least = Some(least.map_or(t, |l| l.min(t))),
                // An empty partition read to its end holds nothing back.
                None if part.at_end => {}
                None => waiting = true,
            }
        }
        if let (false, Some(t)) = (waiting, least) {
            feed.advance_to(t);
        } else {
            feed.ingest.flush();
        }
        empty_round = got == 0;
        if empty_round {
            feed.worker.step();
        }
        if now.duration_since(last_commit) >= settings.commit_interval {
            last_commit = now;
            commit(&consumer, topic, &mut owned, frontier(feed), None, &mut committed, CommitMode::Async)?;
        }
        // Idle means read to the end of every partition, then nothing new
        // for the whole duration (not merely slow to start), and the broker
        // confirms that there is nothing more (not merely unreachable).
        if settings.exit_when_idle.is_some_and(|d| now.duration_since(last_any) >= d)
            && owned.iter().all(|p| p.at_end)
            && now >= confirm_after
        {
            match confirm_end(&consumer, topic, &mut owned, settings.from == StartFrom::Latest) {
                Ok(_) if outage.is_some() => {
                    // The broker is back. The outage was no idle time: wait
                    // the whole duration again for records produced
                    // meanwhile, before ending.
                    let now = Instant::now();
                    if let Some(o) = outage.take() {
                        o.end(&settings.topic.uri(), "the broker answers", &mut owned, now);
                    }
                    last_any = now;
                }
                Ok(true) => break,
                Ok(false) => confirm_after = Instant::now() + CONFIRM_RETRY,
                Err(e) => {
                    let now = Instant::now();
                    outage.get_or_insert_with(|| Outage::new(now)).error(&settings.topic.uri(), &e, now);
                    confirm_after = now + CONFIRM_RETRY;
                }
            }
        }
    }
    // Idle: flush every window, wait for the outputs, then commit the
    // offsets after the last record read.
    let flushed_from = feed.ingest.frontier();
    feed.finish();
    while !feed.probe.done() {
        feed.worker.step_or_park(Some(PARK));
    }
    commit(&consumer, topic, &mut owned, None, Some(flushed_from), &mut committed, CommitMode::Sync)
}

/// Asks the broker whether every partition was read to its end: its high
/// watermark is where the worker is. An error means the broker could not
/// say, e.g. during an outage (the end-of-partition events seen before it
/// may be stale: they are not sent again for the same end).
///
/// A high watermark above the worker's position is not the end: librdkafka
/// fetches what lies between. Unless the broker still gives the same
/// watermark [`GAP_SETTLED`] later with nothing delivered meanwhile: then
/// the gap holds nothing to deliver (transaction markers), and the
/// partition is read.
fn confirm_end(
    consumer: &BaseConsumer,
    topic: &str,
    owned: &mut [Owned],
    from_latest: bool,
) -> std::result::Result<bool, KafkaError> {
    let mut all = true;
    for part in owned {
        let (low, high) = consumer.fetch_watermarks(topic, part.partition, CONFIRM_TIMEOUT)?;
        // Nothing read yet: from the beginning, the partition must be
        // empty; from the end, the end-of-partition event said where it is.
        let read = match part.next {
            Some(next) => next >= high,
            None => high <= low || from_latest,
        };
        if !read {
            match part.gap {
                Some((h, since)) if h == high && since.elapsed() >= GAP_SETTLED => {}
                Some((h, _)) if h == high => all = false,
                _ => {
                    part.gap = Some((high, Instant::now()));
                    all = false;
                }
            }
        }
    }
    Ok(all)
}

/// The output frontier: `None` once every output is complete.
fn frontier(feed: &Feed<'_>) -> Option<Millis> {
    feed.probe.with_frontier(|f| f.first().copied())
}

/// Commits each partition's commit point if it moved. After the final
/// flush (`flushed_from` set), every window was closed early, so the mark
/// says outputs are complete only below the frontier the flush started
/// from: rows of later records of a later run are not suppressed.
fn commit(
    consumer: &BaseConsumer,
    topic: &str,
    owned: &mut [Owned],
    frontier: Option<Millis>,
    flushed_from: Option<Millis>,
    committed: &mut Vec<(i64, CommitMark)>,
    mode: CommitMode,
) -> Result<()> {
    let points: Vec<(i64, CommitMark)> = owned
        .iter_mut()
        .map(|p| {
            let (offset, mut mark) = p.progress.commit_point(frontier);
            if let Some(f) = flushed_from {
                mark.emitted_below = f;
            }
            (offset, mark)
        })
        .collect();
    if *committed == points {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (part, (offset, mark)) in owned.iter().zip(&points) {
        if *offset < 0 {
            continue;
        }
        tpl.add_partition_offset(topic, part.partition, Offset::Offset(*offset))
            .map_err(kafka_error(format!("committing partition {}", part.partition)))?;
        if let Some(mut e) = tpl.find_partition(topic, part.partition) {
            e.set_metadata(mark.encode());
        }
    }
    if tpl.count() > 0 {
        consumer.commit(&tpl, mode).map_err(kafka_error(format!("committing offsets of {topic}")))?;
    }
    *committed = points;
    Ok(())
}
