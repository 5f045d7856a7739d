//! A real Kafka broker for the tests: the one `KAFKA_BOOTSTRAP` names (as
//! `.ci/run` starts it), or one started with `tests/harness/kafka.sh` for
//! the test process and stopped when dropped. No broker is a failure with
//! the harness' reason, never a skip.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A broker for this test: the one in `KAFKA_BOOTSTRAP`, or one the
/// harness started here (stopped on drop).
pub struct Broker {
    /// `HOST:PORT` of the broker.
    pub bootstrap: String,
    started: Option<tempfile::TempDir>,
}

/// The Kafka harness script.
pub fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness/kafka.sh")
}

impl Broker {
    /// The broker of `KAFKA_BOOTSTRAP`, or a new one.
    pub fn get() -> Broker {
        if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP")
            && !bootstrap.is_empty()
        {
            return Broker { bootstrap, started: None };
        }
        Broker::private()
    }

    /// A broker of this test's own, whatever `KAFKA_BOOTSTRAP` says: one it
    /// may stop and start again ([`Broker::stop_broker`]) without disturbing
    /// other tests. Stopped, and its state removed, on drop.
    pub fn private() -> Broker {
        let state = tempfile::tempdir().unwrap();
        let out = harness_command("start", state.path())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run the Kafka harness {}: {e}", harness().display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let bootstrap = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export KAFKA_BOOTSTRAP="))
            .map(|b| b.trim().trim_matches('\'').trim_matches('"').to_owned());
        match (out.status.success(), bootstrap) {
            (true, Some(bootstrap)) => Broker { bootstrap, started: Some(state) },
            _ => panic!(
                "no Kafka broker: KAFKA_BOOTSTRAP is not set and `tests/harness/kafka.sh start` failed ({}); \
                 these tests need a real broker (Java 17 and Maven Central, or a cached download)",
                out.status
            ),
        }
    }

    /// Stops the broker's JVM, keeping its data, topics and port: an
    /// outage. Only for a [`Broker::private`] one.
    pub fn stop_broker(&self) {
        self.harness("stop-broker");
    }

    /// Starts a broker stopped by [`Broker::stop_broker`] again, on the same
    /// data and port; returns once it answers metadata requests.
    pub fn start_broker(&self) {
        self.harness("start-broker");
    }

    fn harness(&self, command: &str) {
        let state = self.started.as_ref().expect("only a broker this test started can be stopped and started");
        let out = harness_command(command, state.path()).output().unwrap();
        assert!(
            out.status.success(),
            "kafka.sh {command} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client config for it.
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// Creates a topic with a name no other test run uses.
    /// A new topic named after `name`, once its partitions have leaders.
    pub fn topic(&self, name: &str, partitions: i32) -> String {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let topic = format!("{name}-{}-{nanos}", std::process::id());
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
        let results = block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        // Wait until the topic's partitions have leaders.
        let consumer: BaseConsumer = self.config().create().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5)).is_ok_and(|m| {
                m.topics().iter().any(|t| {
                    t.name() == topic
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            });
            if ready {
                return topic;
            }
            assert!(Instant::now() < deadline, "topic {topic} has no leaders after 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kafka://HOST:PORT/TOPIC`.
    pub fn uri(&self, topic: &str) -> String {
        format!("kafka://{}/{topic}", self.bootstrap)
    }

    /// Every message of a topic: (partition, offset, key, payload).
    pub fn read_all(&self, topic: &str, expected: usize) -> Vec<(i32, i64, String, Vec<u8>)> {
        let consumer: BaseConsumer = self.config().set("group.id", "prescale-test-reader").create().unwrap();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..metadata.topics()[0].partitions().len() as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                got.push((m.partition(), m.offset(), key, m.payload().unwrap_or_default().to_vec()));
            }
        }
        // Anything beyond what was expected would show up here.
        while let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            got.push((m.partition(), m.offset(), String::new(), m.payload().unwrap_or_default().to_vec()));
        }
        got
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(state) = &self.started {
            let _ = harness_command("stop", state.path()).stderr(Stdio::null()).status();
            // The harness' lock beside the state dir.
            let _ = std::fs::remove_file(format!("{}.lock", state.path().display()));
        }
    }
}

/// `kafka.sh COMMAND` on the broker whose state is in `state`.
fn harness_command(command: &str, state: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg(harness()).arg(command).env("KAFKA_HARNESS_DIR", state).env_remove("KAFKA_HARNESS_PORT");
    c.env_remove("KAFKA_HARNESS_CONTROLLER_PORT");
    c
}

/// Polls a future to completion; rdkafka's admin futures are completed by
/// the client's own thread, so no executor is needed.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
