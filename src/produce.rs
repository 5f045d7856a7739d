//! `prescale produce`: writes a recorded trace or the built-in generator's
//! stream to a Kafka topic, for users trying prescale and for benchmarks.
//!
//! Records are keyed by deployment, so the default partitioner keeps each
//! deployment's records in one partition, in order. A trace is produced in
//! event-time order (stable, so a series keeps its file order), either as
//! it is (`as-is`: each line one message, bad lines
//! included, so the consumer accounts for them) or decoded and re-encoded
//! (`adapter-json`, `blog-json`, `bincode`; lines that do not decode are
//! skipped and counted). The generator's samples are encoded the same way.
//! Optional pacing: at most `--rate` records per second, or event time at
//! `--speedup` over real time. A progress line goes to stderr every two
//! seconds, and the final count at the end; delivery is confirmed (the
//! producer is flushed) before the command reports success.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prescale_dataflows::decode::bincode::BinarySample;
use prescale_dataflows::decode::{DecodeOptions, Decoder, Format};
use prescale_dataflows::record::{Interner, Sample};
use prescale_dataflows::time::{Millis, format_datetime};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::kafka::sink::KafkaSink;
use crate::kafka::{KafkaTopic, Properties};
use crate::source::generator::{Deployment, GeneratorSettings};

/// How records are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    /// A trace's lines, unchanged.
    AsIs,
    /// prometheus-kafka-adapter JSON.
    AdapterJson,
    /// The blog's flat JSON; the value travels as `cpu_usage`.
    BlogJson,
    /// prescale's binary record.
    Bincode,
}

impl OutFormat {
    /// Parses a `--format` value.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "as-is" => Ok(OutFormat::AsIs),
            "adapter-json" => Ok(OutFormat::AdapterJson),
            "blog-json" => Ok(OutFormat::BlogJson),
            "bincode" => Ok(OutFormat::Bincode),
            _ => {
                Err(Error::invalid("--format", format!("{text:?}: expected as-is, adapter-json, blog-json or bincode")))
            }
        }
    }
}

/// What is produced.
#[derive(Clone, Debug)]
pub enum Input {
    /// A trace file.
    Trace(PathBuf),
    /// The generator.
    Generator(GeneratorSettings),
}

/// `prescale produce`, validated.
#[derive(Clone, Debug)]
pub struct ProduceSettings {
    /// Destination.
    pub topic: KafkaTopic,
    /// Source of records.
    pub input: Input,
    /// Encoding.
    pub format: OutFormat,
    /// Records per second at most.
    pub rate: Option<f64>,
    /// Event-time pacing; 0: none.
    pub speedup: f64,
    /// Records at most.
    pub limit: Option<u64>,
    /// How a trace is decoded.
    pub decode: DecodeOptions,
    /// librdkafka properties.
    pub properties: Properties,
}

/// Parses `--rate`: `N` or `N/s`.
pub fn parse_rate(text: &str) -> Result<f64> {
    let n = text.strip_suffix("/s").unwrap_or(text);
    match n.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(Error::invalid("--rate", format!("{text:?}: expected records per second, e.g. 50000/s"))),
    }
}

/// Pacing, limit and progress around a sink.
struct Writer<'a> {
    sink: &'a KafkaSink,
    settings: &'a ProduceSettings,
    started: Instant,
    first_time: Option<Millis>,
    count: u64,
    last_report: Instant,
}

impl Writer<'_> {
    /// Sends one record; `false` once the limit is reached.
    fn send(&mut self, key: &str, payload: &[u8], time: Option<Millis>) -> bool {
        if self.settings.limit.is_some_and(|l| self.count >= l) {
            return false;
        }
        let mut due = None;
        if let Some(rate) = self.settings.rate {
            due = Some(Duration::from_secs_f64(self.count as f64 / rate));
        }
        if let (true, Some(t)) = (self.settings.speedup > 0.0, time) {
            let first = *self.first_time.get_or_insert(t);
            let at = Duration::from_secs_f64(t.saturating_sub(first) as f64 / 1000.0 / self.settings.speedup);
            due = Some(due.map_or(at, |d| d.max(at)));
        }
        if let Some(due) = due {
            while let Some(wait) = (self.started + due).checked_duration_since(Instant::now()) {
                self.sink.poll();
                std::thread::sleep(wait.min(Duration::from_millis(50)));
            }
        }
        self.sink.send(key.as_bytes(), payload);
        self.count += 1;
        if self.count.is_multiple_of(1024) {
            self.sink.poll();
            if self.last_report.elapsed() >= Duration::from_secs(2) {
                self.last_report = Instant::now();
                let secs = self.started.elapsed().as_secs_f64();
                eprintln!("produce: {} records, {:.0}/s", self.count, self.count as f64 / secs);
            }
        }
        true
    }
}

#[derive(Serialize)]
struct AdapterLabels<'a> {
    namespace: &'a str,
    deployment: &'a str,
    pod: &'a str,
}

#[derive(Serialize)]
struct AdapterLine<'a> {
    timestamp: String,
    value: String,
    name: &'a str,
    labels: AdapterLabels<'a>,
}

#[derive(Serialize)]
struct BlogLine<'a> {
    timestamp: String,
    pod_name: &'a str,
    cpu_usage: f64,
}

/// Encodes one sample; `pod` is its pod's name.
fn encode(format: OutFormat, sample: &Sample, pod: &str, out: &mut Vec<u8>) {
    out.clear();
    let key = sample.series.key();
    match format {
        OutFormat::AsIs | OutFormat::Bincode => BinarySample {
            time: sample.time,
            namespace: key.namespace.as_str().into(),
            deployment: key.deployment.as_str().into(),
            pod: pod.into(),
            metric: key.metric.as_str().into(),
            value: sample.value,
        }
        .encode_into(out),
        OutFormat::AdapterJson => {
            let line = AdapterLine {
                timestamp: format_datetime(sample.time),
                value: sample.value.to_string(),
                name: &key.metric,
                labels: AdapterLabels { namespace: &key.namespace, deployment: &key.deployment, pod },
            };
            // Serializing plain strings and numbers to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &line);
        }
        OutFormat::BlogJson => {
            let line = BlogLine { timestamp: format_datetime(sample.time), pod_name: pod, cpu_usage: sample.value };
            let _ = serde_json::to_writer(&mut *out, &line);
        }
    }
}

/// Runs the producer; returns the records written.
pub fn run(settings: &ProduceSettings) -> Result<u64> {
    let sink = KafkaSink::create(&settings.topic, &settings.properties)?;
    let now = Instant::now();
    let mut writer = Writer { sink: &sink, settings, started: now, first_time: None, count: 0, last_report: now };
    let mut skipped = 0u64;
    match &settings.input {
        Input::Trace(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                what: "reading trace",
                path: path.clone(),
                source,
            })?;
            let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
            let format = Format::guess(&path.to_string_lossy(), first);
            let mut decoder = Decoder::new(format, settings.decode.clone(), "produce");
            let mut buffer = Vec::with_capacity(256);
            // Decode everything first, then produce in event-time order
            // (stable): a trace file sorted by series becomes the stream
            // an adapter would write, where series sharing a partition
            // interleave in time. A line that does not decode keeps the
            // time of the line before it.
            let mut records: Vec<(Millis, &str, Vec<Sample>)> = Vec::new();
            let mut previous: Millis = 0;
            for (number, line) in text.lines().enumerate() {
                if line.trim().is_empty() || (format == Format::Csv && line.starts_with("timestamp,")) {
                    continue;
                }
                let mut samples = Vec::new();
                decoder.decode(line, 0, number as u64 + 1, &mut |r| {
                    if let Ok(s) = r {
                        samples.push(s);
                    }
                });
                previous = samples.first().map_or(previous, |s| s.time);
                records.push((previous, line, samples));
            }
            records.sort_by_key(|(t, _, _)| *t);
            for (time, line, samples) in records {
                let more = if settings.format == OutFormat::AsIs {
                    let key = samples.first().map_or("", |s| s.series.key().deployment.as_str());
                    writer.send(key, line.as_bytes(), Some(time))
                } else if samples.is_empty() {
                    skipped += 1;
                    true
                } else {
                    let mut more = true;
                    for s in &samples {
                        // A CSV series is its own only pod; other formats
                        // keep only the pod's hash, which names it.
                        let pod = if format == Format::Csv {
                            s.series.key().deployment.clone()
                        } else {
                            format!("pod-{:016x}", s.pod)
                        };
                        encode(settings.format, s, &pod, &mut buffer);
                        more &= writer.send(&s.series.key().deployment, &buffer, Some(s.time));
                    }
                    more
                };
                if !more {
                    break;
                }
            }
        }
        Input::Generator(g) => {
            let format = if settings.format == OutFormat::AsIs { OutFormat::Bincode } else { settings.format };
            let mut buffer = Vec::with_capacity(256);
            generate(g, &mut |deployment, sample, pod| {
                let pod = deployment.pods.get(pod).map_or("", String::as_str);
                encode(format, &sample, pod, &mut buffer);
                writer.send(&deployment.name, &buffer, Some(sample.time))
            });
        }
    }
    sink.finish()?;
    let secs = writer.started.elapsed().as_secs_f64();
    eprintln!(
        "produce: {} records to {} in {secs:.2}s ({:.0}/s){}",
        writer.count,
        settings.topic.uri(),
        writer.count as f64 / secs.max(1e-9),
        if skipped > 0 { format!("; {skipped} undecodable lines skipped") } else { String::new() }
    );
    let _ = std::io::stderr().flush();
    Ok(writer.count)
}

/// Runs the generator over all its deployments, handing each sample to
/// `emit(deployment, sample, pod index)` until it returns `false`. The
/// deployments advance together one scrape at a time, so that deployments
/// sharing a Kafka partition interleave in event time there as they would
/// from a real adapter (a partition's watermark judges them together).
pub fn generate(settings: &GeneratorSettings, emit: &mut dyn FnMut(&Deployment, Sample, usize) -> bool) {
    let mut interner = Interner::default();
    let mut deployments: Vec<Deployment> =
        (0..settings.deployments).map(|i| Deployment::new(settings, i, &mut interner)).collect();
    let mut batch = Vec::new();
    let mut t = settings.start;
    let end = settings.end();
    while t < end {
        let until = (t + settings.scrape_interval).min(end);
        for deployment in &mut deployments {
            deployment.generate(settings, until, &mut |s, p| batch.push((s, p)));
            for (sample, pod) in batch.drain(..) {
                if !emit(deployment, sample, pod) {
                    return;
                }
            }
        }
        t = until;
    }
    for deployment in &mut deployments {
        deployment.drain(&mut |s, p| batch.push((s, p)));
        for (sample, pod) in batch.drain(..) {
            if !emit(deployment, sample, pod) {
                return;
            }
        }
    }
}

impl ProduceSettings {
    /// Validates `prescale produce`'s flags (over `--config`'s
    /// `[generator]`, `[decode]` and `[kafka]` sections).
    pub fn from_args(args: &crate::cli::ProduceArgs) -> Result<Self> {
        let mut config = match &args.config {
            Some(path) => crate::config::JobConfig::from_file(path)?,
            None => crate::config::JobConfig::default(),
        };
        if args.duration.is_some() {
            config.generator.duration.clone_from(&args.duration);
        }
        config.generator.deployments = args.deployments.or(config.generator.deployments);
        config.generator.pods = args.pods.or(config.generator.pods);
        config.source.uri = Some("generator".to_owned());
        let job = crate::config::Settings::from_config(&config)?;
        let input = match (&args.trace, job.source) {
            (Some(path), _) => Input::Trace(path.clone()),
            (None, crate::config::SourceSettings::Generator(g)) if args.generator => Input::Generator(g),
            _ => return Err(Error::invalid("--trace", "give --trace PATH or --generator")),
        };
        let format = match &args.format {
            Some(f) => OutFormat::parse(f)?,
            None if args.trace.is_some() => OutFormat::AsIs,
            None => OutFormat::Bincode,
        };
        let speedup = args.speedup.unwrap_or(0.0);
        if !(speedup.is_finite() && speedup >= 0.0) {
            return Err(Error::invalid("--speedup", format!("{speedup} must be 0 or more")));
        }
        let topic = crate::kafka::KafkaTopic::parse("--topic", &format!("kafka://{}/{}", args.brokers, args.topic))?;
        Ok(ProduceSettings {
            topic,
            input,
            format,
            rate: args.rate.as_deref().map(parse_rate).transpose()?,
            speedup,
            limit: args.limit,
            decode: job.decode,
            properties: job.kafka_properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prescale_dataflows::record::Interner;

    #[test]
    fn flags_parse_or_name_the_flag() {
        assert_eq!(parse_rate("50000/s").ok(), Some(50_000.0));
        assert_eq!(parse_rate("2.5").ok(), Some(2.5));
        for bad in ["0", "-1/s", "fast", "NaN"] {
            let e = parse_rate(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("--rate"), "{bad}: {e}");
        }
        assert_eq!(OutFormat::parse("bincode").ok(), Some(OutFormat::Bincode));
        assert!(OutFormat::parse("avro").is_err());
    }

    /// Every encoding decodes back to the sample it was made from (the
    /// pod by its hash, which is all a sample keeps of it).
    #[test]
    fn encodings_decode_to_the_same_sample() {
        let mut interner = Interner::default();
        let sample = Sample {
            time: 1_767_225_615_250,
            series: interner.series("shop", "checkout", "cpu_usage"),
            pod: prescale_dataflows::record::stable_hash("checkout-7d9f8-abcde"),
            value: 0.1 + 0.2,
        };
        for (out, format) in [
            (OutFormat::Bincode, Format::Bincode),
            (OutFormat::AdapterJson, Format::AdapterJson),
            (OutFormat::BlogJson, Format::BlogJson),
        ] {
            let mut bytes = Vec::new();
            encode(out, &sample, "checkout-7d9f8-abcde", &mut bytes);
            let options = DecodeOptions { namespace: "shop".into(), ..DecodeOptions::default() };
            let mut decoder = Decoder::new(format, options, "test");
            let mut got = Vec::new();
            decoder.decode_bytes(&bytes, 0, 0, &mut |r| got.push(r.map_err(|e| e.detail)));
            assert_eq!(got, vec![Ok(sample.clone())], "{out:?}: {}", String::from_utf8_lossy(&bytes));
        }
    }
}
