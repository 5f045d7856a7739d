//! `--source kafka-embedded`: the demo path that runs the real Kafka code
//! without a broker. librdkafka's in-process mock cluster serves a topic;
//! the built-in generator's stream is produced into it as bincode records
//! (each deployment keyed and pinned to one partition, in arrival order),
//! and the job then consumes it through the ordinary Kafka source, from
//! the beginning, ending once the topic has been read.
//!
//! The mock cluster is for the demo and unit-level checks only; the tests
//! of the Kafka path run against a real broker (`tests/kafka.rs`).

use std::time::{Duration, Instant};

use prescale_dataflows::decode::Format;
use prescale_dataflows::decode::bincode::BinarySample;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::sink::KafkaSink;
use super::{KafkaSourceSettings, KafkaTopic, Properties, StartFrom, kafka_error};
use crate::error::Result;
use crate::source::generator::{GeneratorSettings, METRIC};

/// Partitions of the embedded topic.
pub const PARTITIONS: i32 = 4;
const TOPIC: &str = "prescale-embedded";

/// A running mock cluster holding the generator's stream.
pub struct Embedded {
    // Dropping it stops the cluster: held for the job's lifetime.
    _cluster: MockCluster<'static, DefaultProducerContext>,
    /// Source settings that read the embedded topic.
    pub source: KafkaSourceSettings,
    /// Records produced.
    pub produced: u64,
}

/// Starts the mock cluster and produces the generator's stream into it.
pub fn start(generator: &GeneratorSettings) -> Result<Embedded> {
    let cluster = MockCluster::new(1).map_err(kafka_error("starting the mock cluster"))?;
    cluster.create_topic(TOPIC, PARTITIONS, 1).map_err(kafka_error("creating the embedded topic"))?;
    let topic = KafkaTopic { brokers: cluster.bootstrap_servers(), topic: TOPIC.to_owned() };
    let started = Instant::now();
    let produced = produce_generator(&topic, generator)?;
    eprintln!(
        "kafka-embedded: produced {produced} records into the mock cluster in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let source = KafkaSourceSettings {
        topic,
        format: Format::Bincode,
        from: StartFrom::Beginning,
        group: "prescale-embedded".to_owned(),
        idle_timeout: Duration::from_secs(1),
        exit_when_idle: Some(Duration::from_secs(1)),
        commit_interval: Duration::from_secs(1),
    };
    Ok(Embedded { _cluster: cluster, source, produced })
}

/// Produces the generator's stream as bincode records keyed by
/// deployment; returns the count.
pub fn produce_generator(topic: &KafkaTopic, settings: &GeneratorSettings) -> Result<u64> {
    let sink = KafkaSink::create(topic, &Properties::new())?;
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
        }
        true
    });
    sink.finish()?;
    Ok(count)
}
