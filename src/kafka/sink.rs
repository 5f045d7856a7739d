//! Kafka sinks: output rows (today the forecasts; the decisions once they
//! land) to a topic as JSON, keyed by `namespace/deployment` so that one
//! deployment's rows stay in one partition, in order; and rejected records
//! to a dead-letter topic, keyed by their source partition, each with its
//! reason, detail and origin (topic, partition, offset).
//!
//! A [`KafkaSink`] lives on worker 0, the job's one writer. The writer
//! operator hands it every row that reaches worker 0 and then [`flushes`]
//! it before returning, so by the time the dataflow's frontier passes a
//! time, every row at that time has been acknowledged by the broker: the
//! offsets the source commits (see [`super::offsets`]) never run ahead of
//! what was written. The producer is idempotent (`enable.idempotence`):
//! librdkafka's retries neither duplicate nor reorder a partition's rows.
//! A row the broker refused after every retry fails the job when it ends
//! ([`KafkaSink::finish`]) rather than being lost silently.
//!
//! [`flushes`]: KafkaSink::flush

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};

use super::{KafkaTopic, Properties, kafka_error};
use crate::error::{Error, Result};

/// How long a flush may wait for the broker: until librdkafka has
/// delivered every queued record or given up on it, after its own
/// `message.timeout.ms` (default 300 s; `[kafka] properties` may change
/// it, 0 for never). A shorter wait here would fail the job during a
/// broker outage that librdkafka would still ride out, with rows in flight.
const FLUSH_TIMEOUT: rdkafka::util::Timeout = rdkafka::util::Timeout::Never;

/// Counts deliveries the broker refused.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            crate::metrics::global().kafka_error("delivery");
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A producer writing to one topic, with delivery accounting.
pub struct KafkaSink {
    producer: BaseProducer<Deliveries>,
    topic: KafkaTopic,
    sent: AtomicU64,
}

impl KafkaSink {
    /// Connects a producer for `topic` (it is checked to exist).
    pub fn create(topic: &KafkaTopic, properties: &Properties) -> Result<Self> {
        let defaults = [("enable.idempotence", "true"), ("linger.ms", "5"), ("client.id", "prescale-sink")];
        let producer: BaseProducer<Deliveries> = super::client_config(&topic.brokers, &defaults, properties)
            .create_with_context(Deliveries::default())
            .map_err(kafka_error(format!("creating a producer for {}", topic.uri())))?;
        let metadata = producer
            .client()
            .fetch_metadata(Some(&topic.topic), Duration::from_secs(15))
            .map_err(kafka_error(format!("reading metadata of {}", topic.uri())))?;
        let exists = metadata.topics().iter().any(|t| t.name() == topic.topic && t.error().is_none());
        if !exists {
            return Err(Error::KafkaSetup(format!("topic {} does not exist", topic.uri())));
        }
        Ok(KafkaSink { producer, topic: topic.clone(), sent: AtomicU64::new(0) })
    }

    /// Queues one record, waiting for room when the local queue is full.
    pub fn send(&self, key: &[u8], payload: &[u8]) {
        self.send_to(key, payload, None);
    }

    /// Queues one record to a given partition (`None`: by key).
    pub fn send_to(&self, key: &[u8], payload: &[u8], partition: Option<i32>) {
        let mut record = BaseRecord::to(&self.topic.topic).key(key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    // Refused before queueing (e.g. a record above
                    // message.max.bytes): counted like a failed delivery.
                    let context = self.producer.context();
                    context.failed.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::global().kafka_error("produce");
                    if let Ok(mut first) = context.first_error.lock() {
                        first.get_or_insert_with(|| e.to_string());
                    }
                    return;
                }
            }
        }
    }

    /// Serves delivery reports without waiting.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every queued record is acknowledged (or failed).
    pub fn flush(&self) -> Result<()> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(kafka_error(format!("flushing to {}", self.topic.uri())))
    }

    /// Deliveries the broker refused so far.
    pub fn failed(&self) -> u64 {
        self.producer.context().failed.load(Ordering::Relaxed)
    }

    /// Records handed to the producer so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Flushes, and fails if any record could not be delivered.
    pub fn finish(&self) -> Result<()> {
        self.flush()?;
        let context = self.producer.context();
        let failed = context.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = context.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
            return Err(Error::KafkaSetup(format!(
                "{failed} of {} records to {} were not delivered (first error: {first})",
                self.sent(),
                self.topic.uri()
            )));
        }
        Ok(())
    }
}
