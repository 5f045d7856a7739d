//! `cargo bench --bench kafka`: records per second through a real Kafka
//! broker.
//!
//! The broker is `KAFKA_BOOTSTRAP` when set, else one started here with
//! `tests/harness/kafka.sh` (and stopped at the end). Before measuring, the
//! generator's stream (250 deployments × 5 pods, 4 hours of event time:
//! 1.2 million records) is produced once per format, bincode and
//! prometheus-kafka-adapter JSON, to a topic of 4 partitions. Then:
//! - `consume/FORMAT`: one consumer alone reads the whole topic and decodes
//!   every message (librdkafka fetch + decode, no dataflow);
//! - `job/FORMAT/Nw`: a whole `prescale run` job with N workers reads the
//!   topic from the beginning through the Kafka source into the feature
//!   dataflow and the forecast stage, and ends 300 ms after the last record
//!   (`exit_when_idle`; the wait and the job's start-up count against it).
//!
//! Throughput is in records per second for the whole job; divide by the
//! workers for the per-worker figure.

#![allow(clippy::unwrap_used)] // A benchmark fails loudly on any error.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prescale::config::{JobConfig, Settings};
use prescale::kafka::KafkaTopic;
use prescale::produce::{self, Input, OutFormat, ProduceSettings};
use prescale_dataflows::decode::{DecodeOptions, Decoder, Format};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

/// The broker, and the harness state dir when it was started here.
struct Broker {
    bootstrap: String,
    started: Option<tempfile::TempDir>,
}

fn harness() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/kafka.sh")
}

impl Broker {
    fn get() -> Broker {
        if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP")
            && !b.is_empty()
        {
            return Broker { bootstrap: b, started: None };
        }
        let state = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(harness())
            .arg("start")
            .env("KAFKA_HARNESS_DIR", state.path())
            // Full JIT for the broker while measuring.
            .env("KAFKA_HARNESS_JVM_OPTS", "")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let bootstrap = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export KAFKA_BOOTSTRAP="))
            .map(|b| b.trim().trim_matches('\'').trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("no broker: the harness failed: {}", String::from_utf8_lossy(&out.stderr)));
        Broker { bootstrap, started: Some(state) }
    }

    fn topic(&self, name: &str) -> String {
        let topic = format!("bench-{name}-{}", std::process::id());
        let status = Command::new("bash")
            .arg(harness())
            .args(["topic", &topic, &PARTITIONS.to_string()])
            .env("KAFKA_BOOTSTRAP", &self.bootstrap)
            .status()
            .unwrap();
        assert!(status.success(), "creating {topic}");
        topic
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(state) = &self.started {
            let _ = Command::new("bash").arg(harness()).arg("stop").env("KAFKA_HARNESS_DIR", state.path()).status();
        }
    }
}

fn generator_config() -> JobConfig {
    let mut c = JobConfig::default();
    c.generator.deployments = Some(250);
    c.generator.pods = Some(5);
    c.generator.duration = Some("4h".to_owned());
    c
}

/// Produces the workload in `format`; returns the record count.
fn fill(broker: &Broker, topic: &str, format: OutFormat) -> u64 {
    let settings = Settings::from_config(&generator_config()).unwrap();
    let prescale::config::SourceSettings::Generator(g) = settings.source else { unreachable!("generator config") };
    let settings = ProduceSettings {
        topic: KafkaTopic { brokers: broker.bootstrap.clone(), topic: topic.to_owned() },
        input: Input::Generator(g),
        format,
        rate: None,
        speedup: 0.0,
        limit: None,
        decode: DecodeOptions::default(),
        properties: Default::default(),
    };
    produce::run(&settings).unwrap()
}

/// Reads and decodes the whole topic with one consumer.
fn consume(broker: &Broker, topic: &str, format: Format, records: u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "prescale-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut decoder = Decoder::new(format, DecodeOptions::default(), "bench");
    let mut seen = 0u64;
    let mut used = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < records {
        assert!(Instant::now() < deadline, "read {seen} of {records}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
            decoder.decode_bytes(m.payload().unwrap_or_default(), m.partition() as u32, m.offset() as u64, &mut |r| {
                used += u64::from(r.is_ok())
            });
        }
    }
    assert!(used > 0);
}

/// One whole job over the topic.
fn job(broker: &Broker, topic: &str, format: &str, workers: usize, records: u64) {
    let mut c = generator_config();
    c.source.uri = Some(format!("kafka://{}/{topic}", broker.bootstrap));
    c.source.format = Some(prescale::cli::parse_format("format", format).unwrap());
    c.source.from = Some("beginning".to_owned());
    c.source.exit_when_idle = Some("300ms".to_owned());
    c.source.idle_timeout = Some("60s".to_owned());
    c.cluster.workers = Some(workers);
    let summary = prescale::job::run(Settings::from_config(&c).unwrap()).unwrap().unwrap();
    assert_eq!(summary.records_in, records);
}

fn bench(c: &mut Criterion) {
    let broker = Broker::get();
    let mut group = c.benchmark_group("kafka");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
    for (name, out, format) in [
        ("bincode", OutFormat::Bincode, Format::Bincode),
        ("adapter-json", OutFormat::AdapterJson, Format::AdapterJson),
    ] {
        let topic = broker.topic(name);
        let records = fill(&broker, &topic, out);
        group.throughput(Throughput::Elements(records));
        group.bench_function(BenchmarkId::new("consume", name), |b| {
            b.iter(|| consume(&broker, &topic, format, records))
        });
        for workers in [1, 2] {
            group.bench_function(BenchmarkId::new(format!("job/{name}"), format!("{workers}w")), |b| {
                b.iter(|| job(&broker, &topic, name, workers, records))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
