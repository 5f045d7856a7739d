//! `--source kafka-embedded`: the demo path that runs the real Kafka code
//! without a broker. librdkafka's in-process mock cluster serves a topic;
//! a thread produces the built-in generator's stream into it as bincode
//! records keyed by deployment, while the job consumes it through the
//! ordinary Kafka source, from the beginning, ending once the topic has
//! been read. The mock keeps only the last 100,000 messages or so of a
//! partition, so the producer stays at most [`AHEAD`] records ahead of
//! what the job has consumed.
//!
//! The mock cluster is for the demo and unit-level checks only; the tests
//! of the Kafka path run against a real broker (`tests/kafka.rs`).

use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prescale_dataflows::decode::Format;
use prescale_dataflows::decode::bincode::BinarySample;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::sink::KafkaSink;
use super::{KafkaSourceSettings, KafkaTopic, Properties, StartFrom, kafka_error};
use crate::error::{Error, Result};
use crate::source::generator::{GeneratorSettings, METRIC};

/// Partitions of the embedded topic.
pub const PARTITIONS: i32 = 4;
/// How far the producer may run ahead of the job's consumers.
pub const AHEAD: u64 = 50_000;
const TOPIC: &str = "prescale-embedded";

/// A running mock cluster and the thread producing into it.
pub struct Embedded {
    // Dropping it stops the cluster: held for the job's lifetime.
    _cluster: MockCluster<'static, DefaultProducerContext>,
    /// Source settings that read the embedded topic.
    pub source: KafkaSourceSettings,
    producer: JoinHandle<Result<u64>>,
}

impl Embedded {
    /// Waits for the producer; returns how many records it wrote.
    pub fn finish(self) -> Result<u64> {
        self.producer.join().map_err(|_| Error::KafkaSetup("the embedded producer panicked".into()))?
    }
}

/// Starts the mock cluster and a thread producing the generator's stream.
pub fn start(generator: &GeneratorSettings) -> Result<Embedded> {
    let cluster = MockCluster::new(1).map_err(kafka_error("starting the mock cluster"))?;
    cluster.create_topic(TOPIC, PARTITIONS, 1).map_err(kafka_error("creating the embedded topic"))?;
    let topic = KafkaTopic { brokers: cluster.bootstrap_servers(), topic: TOPIC.to_owned() };
    let sink = KafkaSink::create(&topic, &Properties::new())?;
    let settings = generator.clone();
    let producer = std::thread::Builder::new()
        .name("embedded-producer".into())
        .spawn(move || {
            let started = Instant::now();
            let produced = produce_generator(&sink, &settings)?;
            tracing::info!(
                records = produced,
                elapsed_seconds = started.elapsed().as_secs_f64(),
                "kafka-embedded: produced the generator's records into the mock cluster"
            );
            Ok(produced)
        })
        .map_err(|e| Error::KafkaSetup(format!("starting the embedded producer: {e}")))?;
    let source = KafkaSourceSettings {
        topic,
        format: Format::Bincode,
        from: StartFrom::Beginning,
        group: "prescale-embedded".to_owned(),
        idle_timeout: Duration::from_secs(1),
        exit_when_idle: Some(Duration::from_secs(2)),
        commit_interval: Duration::from_secs(1),
    };
    Ok(Embedded { _cluster: cluster, source, producer })
}

/// Produces the generator's stream as bincode records keyed by
/// deployment, never far ahead of the consumers; returns the count.
fn produce_generator(sink: &KafkaSink, settings: &GeneratorSettings) -> Result<u64> {
    let mut buffer = Vec::with_capacity(128);
    let mut count = 0u64;
    crate::produce::generate(settings, &mut |deployment, sample, pod| {
        buffer.clear();
        BinarySample {
            time: sample.time,
            namespace: deployment.namespace.as_str().into(),
            deployment: deployment.name.as_str().into(),
            pod: deployment.pods.get(pod).map_or("", String::as_str).into(),
            metric: METRIC.into(),
            value: sample.value,
        }
        .encode_into(&mut buffer);
        sink.send(deployment.name.as_bytes(), &buffer);
        count += 1;
        if count.is_multiple_of(4096) {
            sink.poll();
            while count > super::source::CONSUMED.load(Ordering::Relaxed) + AHEAD {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        true
    });
    sink.finish()?;
    Ok(count)
}
