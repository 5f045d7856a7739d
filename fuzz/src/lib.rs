//! The properties prescale's fuzz targets check, one function per target.
//!
//! Each function takes any bytes and panics only when a property fails, so
//! the same code serves the libFuzzer targets (`fuzz_targets/*.rs`, nightly)
//! and the stable regression test `tests/fuzz_regressions.rs`, which
//! includes this file and replays every committed seed and crash input
//! through it. It names crates only by their paths (`prescale`,
//! `prescale_dataflows`, `serde_json`), never `crate::`, so that it works as
//! a module of either.
//!
//! What is checked, beyond "never panics":
//! - decoders ([`decoder`]): a sample's value is finite, non-negative, not
//!   `-0.0` and at most `max_value`, its time before year 10000 (what RFC
//!   3339 can write), its names are not empty; a rejection
//!   keeps at most [`Rejected::RAW_LIMIT`] bytes of the record, a prefix of
//!   it (hex for binary records), names where it came from and why, and
//!   is never `late` (lateness is judged after decoding); one record gives
//!   at most one result (two for the blog format's CPU and memory);
//!   decoding is deterministic, and a text record gives the same through
//!   `decode` and `decode_bytes`; a binary record re-encodes to itself;
//! - the job config ([`job_config`]): TOML either fails to parse or gives
//!   settings or an error naming the field at fault; settings that pass
//!   validation keep the invariants the stages rely on, and the default
//!   scaler they define runs through a day of forecasts without an
//!   overflow, its decisions within `[min, max]`;
//! - the `PredictiveScaler` spec ([`scaler_spec`]): JSON that deserializes
//!   converts to a spec the decide stage accepts (and that runs like the
//!   default scaler's), or to an error naming a field;
//! - the small text parsers ([`text_parsers`]): durations, RFC 3339 times,
//!   Kafka addresses and commit metadata parse back to what they print.

use prescale::config::{JobConfig, Settings};
use prescale::kafka::offsets::CommitMark;
use prescale::kafka::{KafkaTopic, StartFrom};
use prescale::kube::convert::scaler_spec as convert_scaler_spec;
use prescale::kube::crd::PredictiveScalerSpec;
use prescale_dataflows::decide::{Decision, LoadReading, Scaler, ScalerSpec};
use prescale_dataflows::decode::bincode::{BinarySample, parse as parse_binary};
use prescale_dataflows::decode::{DecodeOptions, Decoder, Format};
use prescale_dataflows::forecast::stage::ForecastRow;
use prescale_dataflows::record::{RejectReason, Rejected, Sample, SeriesKey};
use prescale_dataflows::time::{MAX_TIME, Millis, format_datetime, format_duration, parse_datetime, parse_duration};

const SOURCE: &str = "fuzz";
const PARTITION: u32 = 3;
const OFFSET: u64 = 17;

/// The option sets every decoder input is decoded under: the defaults, and
/// a tight range with other names, so that `out-of-range` is reachable.
fn option_sets() -> [DecodeOptions; 2] {
    [
        DecodeOptions::default(),
        DecodeOptions {
            namespace: "ns".to_owned(),
            csv_metric: "load".to_owned(),
            max_value: 1.0,
            deployments: Vec::new(),
        },
    ]
}

/// Most results one record may give.
fn max_results(format: Format) -> usize {
    if format == Format::BlogJson { 2 } else { 1 }
}

fn decode_record(
    format: Format,
    options: &DecodeOptions,
    record: &[u8],
    as_text: bool,
) -> Vec<Result<Sample, Rejected>> {
    let mut decoder = Decoder::new(format, options.clone(), SOURCE);
    let mut got = Vec::new();
    match std::str::from_utf8(record) {
        Ok(text) if as_text => decoder.decode(text, PARTITION, OFFSET, &mut |r| got.push(r)),
        _ => decoder.decode_bytes(record, PARTITION, OFFSET, &mut |r| got.push(r)),
    }
    got
}

fn check_sample(format: Format, options: &DecodeOptions, s: &Sample, record: &[u8]) {
    let v = s.value;
    assert!(v.is_finite() && v >= 0.0 && !v.is_sign_negative(), "value {v:?} from {record:?}");
    assert!(v <= options.max_value, "value {v} above max_value {} from {record:?}", options.max_value);
    assert!(s.time <= MAX_TIME, "time {} after year 9999 from {record:?}", s.time);
    let key = s.series.key();
    assert!(!key.namespace.is_empty() && !key.deployment.is_empty() && !key.metric.is_empty(), "{key:?}");
    match format {
        Format::Csv => {
            assert_eq!(key.namespace, options.namespace);
            assert_eq!(key.metric, options.csv_metric);
        }
        Format::BlogJson => {
            assert_eq!(key.namespace, options.namespace);
            assert!(key.metric == "cpu_usage" || key.metric == "memory_usage", "{key:?}");
        }
        Format::AdapterJson | Format::Bincode => {}
    }
}

fn check_rejection(r: &Rejected, record: &[u8], binary: bool) {
    assert!(r.raw.len() <= Rejected::RAW_LIMIT, "raw of {} bytes", r.raw.len());
    assert_ne!(r.reason, RejectReason::Late, "a decoder judged lateness: {r:?}");
    assert!(!r.detail.is_empty(), "a rejection without a detail: {r:?}");
    assert_eq!((&*r.origin.source, r.origin.partition, r.origin.offset), (SOURCE, PARTITION, OFFSET));
    if binary {
        let hex: String = record.iter().take(Rejected::RAW_LIMIT / 2).map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.raw, hex, "a binary rejection's raw is the record's start in hex");
    } else if std::str::from_utf8(record).is_ok() {
        assert!(record.starts_with(r.raw.as_bytes()), "raw {:?} is not a prefix of the record", r.raw);
    }
}

/// Decodes `record` every way the job can and checks every result.
fn check_record(format: Format, record: &[u8]) {
    for options in option_sets() {
        let as_bytes = decode_record(format, &options, record, false);
        assert!(as_bytes.len() <= max_results(format), "{} results from one record", as_bytes.len());
        for result in &as_bytes {
            match result {
                Ok(s) => check_sample(format, &options, s, record),
                Err(r) => check_rejection(r, record, format == Format::Bincode),
            }
        }
        // Deterministic: a fresh decoder gives the same.
        assert_eq!(as_bytes, decode_record(format, &options, record, false));
        // A text record gives the same as a line and as a message.
        if format != Format::Bincode && std::str::from_utf8(record).is_ok() {
            assert_eq!(as_bytes, decode_record(format, &options, record, true), "decode vs decode_bytes");
        }
    }
    if format == Format::Bincode
        && let Ok(parsed) = parse_binary(record)
    {
        // Compared as bytes: a NaN value is not equal to itself.
        let encoded = BinarySample::to_bytes(&parsed);
        let again = parse_binary(&encoded).map(|r| r.to_bytes());
        assert_eq!(again.as_ref(), Ok(&encoded), "a binary record re-encodes to itself");
    }
}

/// Decoder properties for one fuzz input: the whole input as one message
/// (a Kafka payload), then each of its lines as a replayed file's record.
pub fn decoder(format: Format, data: &[u8]) {
    check_record(format, data);
    if format != Format::Bincode && data.contains(&b'\n') {
        for line in data.split(|&b| b == b'\n') {
            check_record(format, line);
        }
    }
}

/// Job config properties: TOML text → [`JobConfig`] → [`Settings`].
pub fn job_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut config = match JobConfig::from_toml(text) {
        Ok(c) => c,
        Err(message) => {
            assert!(!message.is_empty(), "a TOML error without a message");
            return;
        }
    };
    // `cluster.hosts` is a file the validation reads; the fuzzer must not
    // make it read /dev/zero.
    config.cluster.hosts = None;
    let settings = Settings::from_config(&config);
    match &settings {
        Ok(s) => check_settings(s),
        Err(e) => {
            let field = match e {
                prescale::Error::InvalidSetting { field, .. } => field.clone(),
                prescale::Error::Stage(prescale_dataflows::Error::InvalidSetting { field, .. }) => (*field).to_owned(),
                other => panic!("validation failed with an error that names no field: {other}"),
            };
            assert!(!field.is_empty(), "{e}");
            assert!(e.to_string().contains(&field), "the message of {e:?} does not name its field");
        }
    }
    // Validation is a pure function of the config.
    let again = Settings::from_config(&config);
    assert_eq!(settings.as_ref().ok(), again.as_ref().ok());
}

fn check_settings(s: &Settings) {
    assert!(s.event_time.tick > 0);
    let f = &s.features;
    assert!(!(f.tumbling.is_empty() && f.sliding.is_empty()));
    assert!(f.tumbling.iter().all(|&w| w > 0));
    assert!(f.sliding.iter().all(|w| w.slide > 0 && w.width > 0 && w.width % w.slide == 0));
    let pane = f.pane();
    assert!(pane > 0 && f.tumbling.iter().all(|w| w % pane == 0), "pane {pane} of {f:?}");
    // The retention the lag stage keeps must be computable (no overflow).
    assert!(f.mean_retention() >= f.lateness);
    assert!(f.tumbling.contains(&s.forecast.step));
    assert!(s.forecast.level > 0.0 && s.forecast.level < 1.0);
    assert!(s.forecast.horizon >= s.forecast.step);
    assert!(s.decode.max_value.is_finite() && s.decode.max_value > 0.0);
    if let Some(spec) = &s.decide.default {
        assert_eq!(spec.clone().validate("decide").as_ref(), Ok(spec), "a validated spec validates again");
        drive_scaler(spec, s.forecast.step);
    }
    assert!(s.cluster.workers > 0 && s.cluster.process < s.cluster.processes());
}

/// Runs a scaler with a validated spec through a fixed, varied day of
/// forecasts, short-window loads and a silence: whatever the spec, no
/// arithmetic overflows and every decision stays within its bounds.
fn drive_scaler(spec: &ScalerSpec, step: Millis) {
    let series = SeriesKey { namespace: "ns".into(), deployment: "d".into(), metric: "m".into() };
    let mut scaler = Scaler::new(spec.clone()).with_cadence(Some(prescale_dataflows::time::MINUTE));
    let start: Millis = 1_767_225_600_000;
    let loads = [1.0, 3.5, 120.0, 0.0, 1e9, 2.0, f64::NAN, 40.0, 1e-300, 7.0, 7.5, 6.0];
    let check = |d: &Decision| {
        assert!(
            d.desired >= spec.min_replicas.min(d.current) && d.desired <= spec.max_replicas.max(d.current),
            "{d:?} outside [{}, {}]",
            spec.min_replicas,
            spec.max_replicas
        );
    };
    let mut last = start;
    for (i, &load) in loads.iter().cycle().take(48).enumerate() {
        let origin = start + step * i as Millis + if i > 40 { prescale_dataflows::time::HOUR } else { 0 };
        // Built through serde, so that fields added to the row later
        // (optional ones) need no change here.
        // Built through serde from a template, so that fields added to the
        // row later (optional ones) need no change here; a row that no
        // longer deserializes is a failure, not a skipped check.
        let mut row: ForecastRow = serde_json::from_value(serde_json::json!({
            "namespace": "ns", "deployment": "d", "metric": "m",
            "origin_ms": 0, "step_s": 0, "model": "fuzz", "recent_error": null,
            "level": 0.9, "actual": 0.0, "point": [], "lower": [], "upper": [], "note": null,
        }))
        .unwrap_or_else(|e| panic!("the forecast row template no longer deserializes: {e}"));
        row.origin_ms = origin;
        row.step_s = step / 1000;
        row.recent_error = (i % 5 != 0).then_some(i as f64 / 2.0);
        row.actual = load;
        row.point = vec![load, load * 2.0];
        row.lower = vec![0.0, 0.0];
        row.upper = vec![load * 1.5, load * 3.0];
        check(&scaler.on_forecast("s", &row));
        for k in 1..=2 {
            let reading =
                LoadReading { series: series.clone(), end_ms: origin + k * step / 3, load: load * 0.9, pods: 0 };
            if let Some(d) = scaler.on_load("s", &reading) {
                check(&d);
            }
        }
        last = origin;
    }
    let _ = scaler.stale_deadline();
    for now in [last + 1, last.saturating_add(spec.fallback.stale_after), Millis::MAX / 2] {
        if let Some(d) = scaler.on_stale("s", &series, now) {
            check(&d);
        }
    }
}

/// `PredictiveScaler` spec properties: JSON → [`PredictiveScalerSpec`] →
/// the decide stage's spec, which then decides on arbitrary forecasts.
pub fn scaler_spec(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<PredictiveScalerSpec>(data) else { return };
    match convert_scaler_spec(&spec) {
        Ok(s) => {
            assert!(s.min_replicas >= 1 && s.min_replicas <= s.max_replicas, "{s:?}");
            assert!(s.target_per_replica.is_finite() && s.target_per_replica > 0.0, "{s:?}");
            assert!(s.horizon >= 5 * prescale_dataflows::time::MINUTE, "{s:?}");
            assert!(s.level.is_none_or(|l| (0.0..1.0).contains(&l)), "{s:?}");
            assert_eq!(s.clone().validate("spec").as_ref(), Ok(&s), "a converted spec validates again");
            drive_scaler(&s, 5 * prescale_dataflows::time::MINUTE);
        }
        Err(e) => {
            assert!(!e.field.is_empty());
            assert!(e.to_string().contains(e.field), "{e:?}");
        }
    }
}

/// The small text parsers: what they accept prints back to itself.
pub fn text_parsers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(ms) = parse_duration(text) {
        let printed = format_duration(ms);
        assert_eq!(parse_duration(&printed), Some(ms), "{text:?} → {ms} ms → {printed:?}");
    }
    if let Some(t) = parse_datetime(text) {
        let printed = format_datetime(t);
        assert_eq!(parse_datetime(&printed), Some(t), "{text:?} → {t} → {printed:?}");
    }
    if let Ok(topic) = KafkaTopic::parse("field", text) {
        assert_eq!(topic.uri(), text);
        assert!(!topic.topic.is_empty() && !topic.brokers.is_empty());
    }
    if let Ok(from) = StartFrom::parse("field", text) {
        assert!(matches!(text, "beginning" | "committed" | "latest"), "{text:?} → {from:?}");
    }
    if let Some(mark) = CommitMark::decode(text) {
        assert_eq!(CommitMark::decode(&mark.encode()), Some(mark), "{text:?}");
    }
    let _ = prescale::cli::parse_format("field", text);
}
