//! Kafka in and out: the source that feeds each timely worker its share of
//! a topic's partitions ([`source`]), the offsets it commits
//! ([`offsets`]), the sinks that write output rows and dead letters to
//! topics ([`sink`]), and the in-process mock cluster behind
//! `--source kafka-embedded` ([`embedded`]).
//!
//! Everything here uses librdkafka through `rdkafka`'s synchronous clients
//! (`BaseConsumer`, `BaseProducer`): a timely worker polls its consumer
//! between steps of the dataflow, so no async runtime is involved.
//! Addresses are written `kafka://HOST:PORT[,HOST:PORT…]/TOPIC`; any
//! librdkafka property (TLS, SASL, fetch sizes…) can be passed through the
//! job config's `[kafka] properties` table, which applies to every client
//! the job creates.

pub mod embedded;
pub mod offsets;
pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::time::Duration;

use prescale_dataflows::decode::Format;
use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A topic on a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaTopic {
    /// The bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic.
    pub topic: String,
}

impl KafkaTopic {
    /// Parses `kafka://HOST:PORT[,HOST:PORT…]/TOPIC`; `field` names the
    /// setting in errors.
    pub fn parse(field: &str, uri: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(field, format!("{uri:?}: {why}; expected kafka://HOST:PORT/TOPIC"));
        let rest = uri.strip_prefix("kafka://").ok_or_else(|| bad("not a kafka:// address"))?;
        let (brokers, topic) = rest.split_once('/').ok_or_else(|| bad("no topic"))?;
        if brokers.is_empty() || brokers.split(',').any(|b| !b.contains(':') || b.starts_with(':')) {
            return Err(bad("brokers must be HOST:PORT"));
        }
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
            return Err(bad("a topic name is 1 to 249 of [a-zA-Z0-9._-]"));
        }
        Ok(KafkaTopic { brokers: brokers.to_owned(), topic: topic.to_owned() })
    }

    /// The address, as parsed.
    pub fn uri(&self) -> String {
        format!("kafka://{}/{}", self.brokers, self.topic)
    }
}

/// Where a job starts reading a partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    /// The oldest record the broker still holds.
    Beginning,
    /// Where the consumer group's last commit says (see [`offsets`]); the
    /// beginning for a partition the group never committed.
    #[default]
    Committed,
    /// Only records produced after the job started.
    Latest,
}

impl StartFrom {
    /// Parses `beginning`, `committed` or `latest`.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        match text {
            "beginning" => Ok(StartFrom::Beginning),
            "committed" => Ok(StartFrom::Committed),
            "latest" => Ok(StartFrom::Latest),
            _ => Err(Error::invalid(field, format!("{text:?}: expected beginning, committed or latest"))),
        }
    }
}

/// The Kafka source, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSourceSettings {
    /// The topic read.
    pub topic: KafkaTopic,
    /// Message format.
    pub format: Format,
    /// Where to start.
    pub from: StartFrom,
    /// Consumer group the offsets are committed under.
    pub group: String,
    /// A partition that delivered nothing for this long (wall time) stops
    /// holding the worker's frontier back until it delivers again.
    pub idle_timeout: Duration,
    /// End the job once no record arrived for this long (and every window
    /// is flushed); `None`: run until stopped.
    pub exit_when_idle: Option<Duration>,
    /// How often progress is committed (wall time).
    pub commit_interval: Duration,
}

/// librdkafka properties given in the job config, applied to every client.
pub type Properties = BTreeMap<String, String>;

/// A client config for `brokers` with the job's pass-through properties
/// applied last, so they override prescale's defaults.
pub fn client_config(brokers: &str, defaults: &[(&str, &str)], properties: &Properties) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in properties {
        config.set(k, v);
    }
    config
}

/// Wraps an rdkafka error with what was being done.
pub(crate) fn kafka_error(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
    let what = what.into();
    move |source| Error::Kafka { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_name_the_field() {
        let t = KafkaTopic::parse("source.uri", "kafka://127.0.0.1:9092,other:9093/metrics.raw").unwrap_or_else(|e| {
            panic!("{e}");
        });
        assert_eq!((t.brokers.as_str(), t.topic.as_str()), ("127.0.0.1:9092,other:9093", "metrics.raw"));
        assert_eq!(t.uri(), "kafka://127.0.0.1:9092,other:9093/metrics.raw");
        for bad in ["kafka://host/t", "kafka://:9092/t", "kafka://h:1/", "kafka://h:1/a b", "kafka:h:1/t", "h:1/t"] {
            let e = KafkaTopic::parse("sink.uri", bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("sink.uri"), "{bad}: {e}");
        }
        assert_eq!(StartFrom::parse("f", "latest").ok(), Some(StartFrom::Latest));
        assert!(StartFrom::parse("f", "now").is_err());
    }
}
