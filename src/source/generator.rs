//! The built-in workload generator: N deployments × M pods with daily and
//! weekly cycles, noise and occasional flash-sale spikes, seeded and
//! deterministic, needing no files.
//!
//! Each deployment is one source partition with its own random stream
//! (seeded from the job seed and the deployment's index), so what a
//! deployment emits does not depend on which worker generates it. A small
//! share of samples is delivered late, within the lateness (they correct
//! windows) or beyond it (they are rejected as `late`), so the demo
//! exercises every path of the event-time logic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::f64::consts::TAU;

use prescale_dataflows::record::{Interner, Sample, Series, stable_hash};
use prescale_dataflows::time::{DAY, HOUR, MINUTE, Millis, SECOND, format_datetime};
use serde::{Deserialize, Serialize};

/// What the generator hands to the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorFormat {
    /// Decoded samples (measures the dataflow alone).
    Samples,
    /// prometheus-kafka-adapter JSON lines, decoded by the real decoder.
    AdapterJson,
}

/// Generator settings, validated (see `[generator]` in the job config).
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorSettings {
    /// Deployments.
    pub deployments: usize,
    /// Pods per deployment.
    pub pods: usize,
    /// Time between two samples of a pod.
    pub scrape_interval: Millis,
    /// Simulated time to generate.
    pub duration: Millis,
    /// First event time.
    pub start: Millis,
    /// Seed.
    pub seed: u64,
    /// Share of samples delayed within the lateness.
    pub out_of_order: f64,
    /// Share of samples delayed beyond it.
    pub late: f64,
    /// Samples or JSON lines.
    pub format: GeneratorFormat,
}

impl GeneratorSettings {
    /// The end of generated event time.
    pub fn end(&self) -> Millis {
        self.start + self.duration
    }
}

/// SplitMix64: small, fast, and good enough for synthetic load.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Roughly standard normal (Irwin–Hall with four uniforms).
    fn normal(&mut self) -> f64 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 3f64.sqrt()
    }
}

const NAMESPACES: [&str; 4] = ["shop", "payments", "search", "media"];
const NAMES: [&str; 12] = [
    "checkout",
    "cart",
    "catalog",
    "api-gateway",
    "search",
    "recommender",
    "payments",
    "auth",
    "images",
    "orders",
    "inventory",
    "notifications",
];
const HASH_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(rng: &mut Rng, len: usize) -> String {
    (0..len).map(|_| HASH_ALPHABET[(rng.next_u64() % HASH_ALPHABET.len() as u64) as usize] as char).collect()
}

/// A flash sale: load multiplied by `factor` from `start` for `length`,
/// with a ramp up and a decay.
#[derive(Clone, Debug)]
struct Spike {
    start: Millis,
    length: Millis,
    factor: f64,
}

impl Spike {
    fn multiplier(&self, t: Millis) -> f64 {
        const RAMP: Millis = 5 * MINUTE;
        const DECAY: Millis = 15 * MINUTE;
        if t < self.start || t >= self.start + self.length + DECAY {
            return 1.0;
        }
        let extra = self.factor - 1.0;
        let into = t - self.start;
        if into < RAMP {
            1.0 + extra * into as f64 / RAMP as f64
        } else if into < self.length {
            self.factor
        } else {
            1.0 + extra * (1.0 - (into - self.length) as f64 / DECAY as f64)
        }
    }
}

/// One deployment: a partition of the generator.
pub struct Deployment {
    /// Namespace.
    pub namespace: String,
    /// Deployment name.
    pub name: String,
    /// Pod names.
    pub pods: Vec<String>,
    pod_ids: Vec<u64>,
    series: Series,
    base: f64,
    daily_amplitude: f64,
    peak_hour: f64,
    weekend: f64,
    spikes: Vec<Spike>,
    rng: Rng,
    next_scrape: Millis,
    /// Samples held back: (arrival, sequence, sample).
    delayed: BinaryHeap<Reverse<(Millis, u64, OrdSample)>>,
    sequence: u64,
}

/// A sample ordered by its position in the heap only (the heap's key is
/// the arrival and a sequence number, which are unique).
#[derive(Clone, Debug, PartialEq)]
struct OrdSample(Sample);
impl Eq for OrdSample {}
impl PartialOrd for OrdSample {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdSample {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// The metric the generator reports: CPU cores used per pod.
pub const METRIC: &str = "cpu_usage";

impl Deployment {
    /// Deployment `index` of a generator with these settings.
    pub fn new(settings: &GeneratorSettings, index: usize, interner: &mut Interner) -> Self {
        let mut rng = Rng(settings.seed ^ stable_hash(&(index as u64)));
        let namespace = NAMESPACES[index % NAMESPACES.len()].to_owned();
        let round = index / NAMES.len();
        let name = if round == 0 {
            NAMES[index % NAMES.len()].to_owned()
        } else {
            format!("{}-{round}", NAMES[index % NAMES.len()])
        };
        let template = generated_name(&mut rng, 9);
        let pods: Vec<String> =
            (0..settings.pods).map(|_| format!("{name}-{template}-{}", generated_name(&mut rng, 5))).collect();
        let pod_ids = pods.iter().map(|p| stable_hash(p.as_str())).collect();
        let series = interner.series(&namespace, &name, METRIC);
        let days = settings.duration.div_ceil(DAY);
        let mut spikes = Vec::new();
        for day in 0..days {
            if rng.unit() < 0.3 {
                let hour = rng.range(9.0, 21.0);
                spikes.push(Spike {
                    start: settings.start + day * DAY + (hour * HOUR as f64) as Millis,
                    length: (rng.range(20.0, 90.0) * MINUTE as f64) as Millis,
                    factor: rng.range(2.0, 5.0),
                });
            }
        }
        Deployment {
            namespace,
            name,
            pods,
            pod_ids,
            series,
            base: rng.range(0.5, 8.0),
            daily_amplitude: rng.range(0.3, 0.8),
            peak_hour: rng.range(12.0, 20.0),
            weekend: rng.range(0.5, 0.9),
            spikes,
            rng,
            next_scrape: settings.start,
            delayed: BinaryHeap::new(),
            sequence: 0,
        }
    }

    /// The deployment's total load at `t`, before noise.
    pub fn load(&self, t: Millis) -> f64 {
        let hour = (t % DAY) as f64 / HOUR as f64;
        let daily = 1.0 + self.daily_amplitude * (TAU * (hour - self.peak_hour) / 24.0).cos();
        let weekday = prescale_dataflows::time::day_of_week(t);
        let weekly = if weekday >= 6 { self.weekend } else { 1.0 };
        let spike: f64 = self.spikes.iter().map(|s| s.multiplier(t)).product();
        self.base * daily * weekly * spike
    }

    /// Generates every scrape before `until`, handing samples over in
    /// arrival order: `emit(sample, pod_index)`.
    pub fn generate(&mut self, settings: &GeneratorSettings, until: Millis, emit: &mut impl FnMut(Sample, usize)) {
        let lateness_within = 39 * SECOND;
        let beyond = (2 * MINUTE, 4 * MINUTE);
        while self.next_scrape < until {
            let t = self.next_scrape;
            while let Some(Reverse((arrival, _, _))) = self.delayed.peek()
                && *arrival <= t
            {
                if let Some(Reverse((_, _, OrdSample(sample)))) = self.delayed.pop() {
                    let pod = self.pod_ids.iter().position(|&p| p == sample.pod).unwrap_or(0);
                    emit(sample, pod);
                }
            }
            let per_pod = self.load(t) / self.pods.len() as f64;
            for pod in 0..self.pods.len() {
                let value = (per_pod * (1.0 + 0.08 * self.rng.normal())).max(0.0);
                let sample = Sample { time: t, series: self.series.clone(), pod: self.pod_ids[pod], value };
                let roll = self.rng.unit();
                let delay = if roll < settings.late {
                    Some(beyond.0 + (self.rng.unit() * (beyond.1 - beyond.0) as f64) as Millis)
                } else if roll < settings.late + settings.out_of_order {
                    Some(SECOND + (self.rng.unit() * lateness_within as f64) as Millis)
                } else {
                    None
                };
                match delay {
                    Some(d) => {
                        self.sequence += 1;
                        self.delayed.push(Reverse((t + d, self.sequence, OrdSample(sample))));
                    }
                    None => emit(sample, pod),
                }
            }
            self.next_scrape += settings.scrape_interval;
        }
    }

    /// Hands over every delayed sample still held (at the end of the run).
    pub fn drain(&mut self, emit: &mut impl FnMut(Sample, usize)) {
        while let Some(Reverse((_, _, OrdSample(sample)))) = self.delayed.pop() {
            let pod = self.pod_ids.iter().position(|&p| p == sample.pod).unwrap_or(0);
            emit(sample, pod);
        }
    }

    /// Renders a sample as a prometheus-kafka-adapter JSON line.
    pub fn adapter_json(&self, sample: &Sample, pod: usize, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        // Names are generated from fixed alphabets: no JSON escaping needed.
        let _ = write!(
            out,
            r#"{{"timestamp":"{}","value":"{}","name":"{METRIC}","labels":{{"__name__":"{METRIC}","namespace":"{}","pod":"{}","container":"app"}}}}"#,
            format_datetime(sample.time),
            sample.value,
            self.namespace,
            self.pods.get(pod).map_or("", String::as_str),
        );
    }
}

/// Generates this worker's deployments into the dataflow.
pub fn drive(
    feed: &mut super::Feed<'_>,
    settings: &GeneratorSettings,
    decode: &prescale_dataflows::decode::DecodeOptions,
    event_time: prescale_dataflows::event_time::EventTimeSettings,
) {
    use prescale_dataflows::decode::{Decoder, Format};
    use prescale_dataflows::event_time::{Arrival, PartitionClock};
    use prescale_dataflows::record::Origin;
    use std::sync::Arc;

    let index = feed.worker.index();
    let peers = feed.worker.peers();
    let mut interner = Interner::default();
    let mut owned: Vec<(u32, Deployment, PartitionClock, u64)> = (index..settings.deployments)
        .step_by(peers)
        .map(|i| (i as u32, Deployment::new(settings, i, &mut interner), PartitionClock::new(event_time), 0))
        .collect();
    let source: Arc<str> = "generator".into();
    let mut decoder = Decoder::new(Format::AdapterJson, decode.clone(), "generator");
    let mut line = String::new();
    let mut batch: Vec<(Sample, usize)> = Vec::new();
    let tick_floor = |t: Millis| t - t % event_time.tick;
    let not_started = tick_floor(settings.start.saturating_sub(event_time.lateness));

    let mut feed_one = |feed: &mut super::Feed<'_>,
                        partition: u32,
                        deployment: &Deployment,
                        clock: &mut PartitionClock,
                        offset: u64,
                        sample: Sample,
                        pod: usize| {
        let sample = match settings.format {
            GeneratorFormat::Samples => sample,
            GeneratorFormat::AdapterJson => {
                deployment.adapter_json(&sample, pod, &mut line);
                let mut decoded = None;
                decoder.decode(&line, partition, offset, &mut |r| decoded = Some(r));
                match decoded {
                    Some(Ok(sample)) => sample,
                    Some(Err(rejected)) => return feed.ingest.reject(rejected),
                    None => return,
                }
            }
        };
        match clock.admit(&sample) {
            Arrival::OnTime(at) => feed.ingest.push(at, sample),
            other => {
                let origin = Origin { source: Arc::clone(&source), partition, offset };
                let raw = format!("{} {} {}", sample.series, format_datetime(sample.time), sample.value);
                feed.ingest.reject_if_any(other.rejection(&sample, origin, &raw));
            }
        }
    };

    // Event time per step: about 20,000 samples, between 1 and 60 minutes,
    // so that each step of the dataflow has enough work to amortise it.
    let per_minute = (owned.len() * settings.pods) as u64 * MINUTE / settings.scrape_interval;
    let step = MINUTE * (20_000 / per_minute.max(1)).clamp(1, 60);
    let end = settings.end();
    let mut t = settings.start;
    while t < end {
        let until = (t + step).min(end);
        for (partition, deployment, clock, offset) in &mut owned {
            deployment.generate(settings, until, &mut |s, p| batch.push((s, p)));
            for (sample, pod) in batch.drain(..) {
                *offset += 1;
                feed_one(feed, *partition, deployment, clock, *offset, sample, pod);
            }
        }
        let frontier = owned
            .iter()
            .map(|(_, _, clock, _)| clock.tick().unwrap_or(not_started))
            .min()
            .unwrap_or_else(|| tick_floor(until.saturating_sub(event_time.lateness)));
        feed.advance_to(frontier);
        t = until;
    }
    // Samples still held back arrive after the end of generated time.
    for (partition, deployment, clock, offset) in &mut owned {
        deployment.drain(&mut |s, p| batch.push((s, p)));
        for (sample, pod) in batch.drain(..) {
            *offset += 1;
            feed_one(feed, *partition, deployment, clock, *offset, sample, pod);
        }
    }
    // Every worker ends at the same event time, whatever partitions it
    // owns, so that what happens at the end of the input (staleness checks
    // due before it) does not depend on the cluster's shape.
    feed.advance_to(tick_floor(end.saturating_sub(event_time.lateness)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GeneratorSettings {
        GeneratorSettings {
            deployments: 3,
            pods: 4,
            scrape_interval: 15 * SECOND,
            duration: DAY,
            start: 1_767_571_200_000,
            seed: 7,
            out_of_order: 0.05,
            late: 0.01,
            format: GeneratorFormat::Samples,
        }
    }

    fn collect(index: usize) -> Vec<(Millis, u64, u64)> {
        let s = settings();
        let mut d = Deployment::new(&s, index, &mut Interner::default());
        let mut out = Vec::new();
        let mut emit = |x: Sample, _| out.push((x.time, x.pod, x.value.to_bits()));
        // Generation in pieces gives the same stream as in one go.
        d.generate(&s, s.start + HOUR, &mut emit);
        d.generate(&s, s.end(), &mut emit);
        d.drain(&mut emit);
        out
    }

    #[test]
    fn deterministic_per_deployment_and_complete() {
        let a = collect(1);
        assert_eq!(a, collect(1));
        assert_ne!(a, collect(2));
        // Every scrape of every pod is emitted exactly once.
        assert_eq!(a.len(), 4 * (DAY / (15 * SECOND)) as usize);
        // Some arrive out of order.
        assert!(a.windows(2).any(|w| w[1].0 < w[0].0));
    }

    #[test]
    fn pod_names_map_back_to_the_deployment() {
        let d = Deployment::new(&settings(), 13, &mut Interner::default());
        assert_eq!(d.name, "cart-1");
        for pod in &d.pods {
            assert_eq!(prescale_dataflows::decode::deployment::from_pod_name(pod), d.name);
        }
    }

    #[test]
    fn daily_cycle_and_spikes_shape_the_load() {
        let s = settings();
        let d = Deployment::new(&s, 0, &mut Interner::default());
        let loads: Vec<f64> = (0..24).map(|h| d.load(s.start + h * HOUR + 30 * MINUTE)).collect();
        let max = loads.iter().cloned().fold(f64::MIN, f64::max);
        let min = loads.iter().cloned().fold(f64::MAX, f64::min);
        assert!(max > 1.5 * min, "daily cycle: {loads:?}");
    }
}
