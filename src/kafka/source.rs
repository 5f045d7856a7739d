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
//! for that long; it closes its input (every window is flushed), waits
//! until the outputs are complete and commits the offsets after the last
//! record consumed.

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
    let mut errors_reported = 0u32;
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
                Some(Err(e)) => {
                    // Transient client errors (a broker restarting) are
                    // retried by librdkafka; report the first few.
                    crate::metrics::global().kafka_error("consume");
                    if errors_reported < 5 {
                        errors_reported += 1;
                        tracing::warn!(topic = %settings.topic.uri(), error = %e, "kafka source: consume error");
                    }
                    break;
                }
            };
            got += 1;
            let Some(&i) = slot.get(&message.partition()) else { continue };
            let part = &mut owned[i];
            part.last_record = polled_at;
            part.at_end = false;
            let offset = message.offset();
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
                Ok(sample) => match clock.observe(sample.time) {
                    Arrival::OnTime(at) => {
                        latest = Some(latest.map_or(sample.time, |l: Millis| l.max(sample.time)));
                        ingest.push(at, sample);
                    }
                    Arrival::Late { watermark } => {
                        let origin = Origin { source: Arc::clone(&source), partition, offset: offset as u64 };
                        let detail = format!("event time {} behind watermark {watermark}", sample.time);
                        let raw = format!("{} {} {}", sample.series, sample.time, sample.value);
                        ingest.reject(Rejected::new(RejectReason::Late, detail, origin, &raw));
                    }
                },
                Err(rejected) => ingest.reject(rejected),
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
        // for the whole duration (not merely slow to start).
        if settings.exit_when_idle.is_some_and(|d| now.duration_since(last_any) >= d) && owned.iter().all(|p| p.at_end)
        {
            break;
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
