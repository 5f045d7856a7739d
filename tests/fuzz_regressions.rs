//! The fuzz targets' properties, on stable, in CI.
//!
//! Test strategy: the fuzz targets (`fuzz/`, nightly and libFuzzer) check
//! their properties in `fuzz/src/lib.rs`; this test includes that same file
//! and runs it on every committed input: the seeds (`fuzz/seeds/TARGET/`),
//! every crash the fuzzers found (`fuzz/regressions/TARGET/`, each also
//! named by a test below after what broke), and a deterministic set of
//! mutations of the seeds (every truncation, and byte flips, inserts and
//! deletions from a fixed xorshift sequence), so that the properties are
//! checked on malformed input even where no fuzzer runs.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

use prescale_dataflows::decode::Format;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The committed inputs of a target: its seeds, then its regressions.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    committed_inputs(target, &["seeds", "regressions"])
}

fn committed_inputs(target: &str, kinds: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in kinds {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path, bytes));
        }
    }
    assert!(out.len() >= 2, "fuzz/{kinds:?}/{target} should hold at least two inputs, found {}", out.len());
    out
}

/// Deterministic mutations of `seed`: every truncation, then `rounds`
/// inputs with one to four bytes flipped, inserted or deleted.
fn mutations(seed: &[u8], rounds: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..seed.len()).map(|n| seed[..n].to_vec()).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed.len() as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Bytes that matter to the formats, and some that do not.
    let interesting = b"{}[]:,\"\\ \n\r-+.0159eEnN\x00\xff\xfd\xfb";
    for _ in 0..rounds {
        let mut bytes = seed.to_vec();
        for _ in 0..=(next() % 4) {
            let at = (next() as usize) % (bytes.len() + 1);
            let b = if next() % 2 == 0 { interesting[(next() as usize) % interesting.len()] } else { next() as u8 };
            match next() % 3 {
                0 if at < bytes.len() => bytes[at] = b,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, b),
            }
        }
        out.push(bytes);
    }
    out
}

fn replay(target: &str, rounds: usize, check: impl Fn(&[u8])) {
    let mut count = 0;
    for (path, seed) in inputs(target) {
        let name = path.display().to_string();
        check(&seed);
        for mutated in mutations(&seed, rounds) {
            // Name the input a failure came from.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&mutated)));
            if let Err(panic) = result {
                eprintln!("a mutation of {name} failed: {mutated:?}");
                std::panic::resume_unwind(panic);
            }
            count += 1;
        }
    }
    assert!(count > 0);
}

#[test]
fn csv_decoder_properties_hold_on_seeds_and_mutations() {
    replay("decode_csv", 2_000, |b| checks::decoder(Format::Csv, b));
}

#[test]
fn adapter_json_decoder_properties_hold_on_seeds_and_mutations() {
    replay("decode_adapter_json", 2_000, |b| checks::decoder(Format::AdapterJson, b));
}

#[test]
fn blog_json_decoder_properties_hold_on_seeds_and_mutations() {
    replay("decode_blog_json", 2_000, |b| checks::decoder(Format::BlogJson, b));
}

#[test]
fn bincode_decoder_properties_hold_on_seeds_and_mutations() {
    replay("decode_bincode", 2_000, |b| checks::decoder(Format::Bincode, b));
}

#[test]
fn job_config_properties_hold_on_seeds_and_mutations() {
    replay("job_config", 300, checks::job_config);
}

#[test]
fn scaler_spec_properties_hold_on_seeds_and_mutations() {
    replay("scaler_spec", 1_000, checks::scaler_spec);
}

#[test]
fn text_parser_properties_hold_on_seeds_and_mutations() {
    replay("text_parsers", 1_000, checks::text_parsers);
}

/// The properties are about accepted records and valid settings too, so
/// the seeds must reach them: each decoder's seeds give samples, and the
/// config and spec seeds are valid.
#[test]
fn seeds_reach_the_accepting_paths() {
    use prescale_dataflows::decode::{DecodeOptions, Decoder};
    for (target, format) in [
        ("decode_csv", Format::Csv),
        ("decode_adapter_json", Format::AdapterJson),
        ("decode_blog_json", Format::BlogJson),
        ("decode_bincode", Format::Bincode),
    ] {
        let mut samples = 0;
        for (_, seed) in committed_inputs(target, &["seeds"]) {
            let mut decoder = Decoder::new(format, DecodeOptions::default(), "seed");
            let records: Vec<&[u8]> =
                if format == Format::Bincode { vec![&seed] } else { seed.split(|&b| b == b'\n').collect() };
            for record in records {
                decoder.decode_bytes(record, 0, 0, &mut |r| samples += usize::from(r.is_ok()));
            }
        }
        assert!(samples >= 2, "{target}: the seeds gave {samples} samples");
    }
    for (path, seed) in committed_inputs("job_config", &["seeds"]) {
        let text = String::from_utf8_lossy(&seed);
        let config =
            prescale::config::JobConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = prescale::config::Settings::from_config(&config) {
            panic!("{}: {e}", path.display());
        }
    }
    for (path, seed) in committed_inputs("scaler_spec", &["seeds"]) {
        let spec: prescale::kube::crd::PredictiveScalerSpec =
            serde_json::from_slice(&seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = prescale::kube::convert::scaler_spec(&spec) {
            panic!("{}: {e}", path.display());
        }
    }
}

/// What a regression input gives once validated.
fn validate_regression(name: &str) -> Result<prescale::config::Settings, prescale::Error> {
    let path = fuzz_dir().join("regressions/job_config").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config = prescale::config::JobConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    prescale::config::Settings::from_config(&config)
}

fn assert_refused_by_name(name: &str, field: &str) {
    match validate_regression(name) {
        Ok(_) => panic!("{name}: a duration of 584 million years was accepted"),
        Err(e) => assert!(e.to_string().contains(field), "{name}: {e}"),
    }
}

/// Caught by the `job_config` target's run of the default scaler (the
/// input written by hand; the fuzzer's own 4-minute run did not reach it):
/// a `stale_after` near `u64::MAX` ms passed validation and overflowed the
/// scaler's stale deadline (`last origin + stale_after`); in a release
/// build it wrapped, and the scaler would call fresh data stale at once.
#[test]
fn stale_after_overflows_the_stale_deadline() {
    assert_refused_by_name("stale_after_overflows_the_stale_deadline.toml", "decide.fallback.stale_after");
}

/// The same for a scale-down stabilisation window: `t + window > now`
/// overflowed, and wrapped it would forget every recommendation.
#[test]
fn stabilization_overflows_the_scale_down_window() {
    assert_refused_by_name("stabilization_overflows_the_scale_down_window.toml", "decide.scale_down");
}

/// The same for the start-up lead: `now + next decision + startup`, the
/// end of the forecast steps a decision covers, overflowed.
#[test]
fn startup_overflows_the_look_ahead() {
    assert_refused_by_name("startup_overflows_the_look_ahead.toml", "decide.startup");
}

/// The limit leaves every sensible duration alone: a century is accepted.
#[test]
fn durations_up_to_a_century_are_accepted() {
    let config = prescale::config::JobConfig::from_toml(
        "[decide]\nstartup = \"36500d\"\n[decide.fallback]\nstale_after = \"5200w\"\n[generator]\nduration = \"365d\"",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let settings = prescale::config::Settings::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
    let spec = settings.decide.default.unwrap_or_else(|| panic!("the default scaler runs"));
    assert_eq!(spec.startup, 36_500 * prescale_dataflows::time::DAY);
}

/// Decodes one record with the default options, giving times or reasons.
fn decode_one(format: Format, record: &[u8]) -> Vec<Result<u64, prescale_dataflows::record::RejectReason>> {
    let mut decoder =
        prescale_dataflows::decode::Decoder::new(format, prescale_dataflows::decode::DecodeOptions::default(), "t");
    let mut got = Vec::new();
    decoder.decode_bytes(record, 0, 0, &mut |r| got.push(r.map(|s| s.time).map_err(|e| e.reason)));
    got
}

fn committed(path: &str) -> Vec<u8> {
    let path = fuzz_dir().join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Caught by the decoders' time property (added after reading the CSV
/// parser): CSV took any unix seconds that fit in `u64` milliseconds (up
/// to year 584 million), times no other format can write and windows
/// cannot end.
#[test]
fn csv_timestamp_after_year_9999() {
    use prescale_dataflows::record::RejectReason::BadTimestamp;
    let input = committed("regressions/decode_csv/timestamp_after_year_9999.csv");
    for line in input.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert_eq!(decode_one(Format::Csv, line), vec![Err(BadTimestamp)], "{}", String::from_utf8_lossy(line));
    }
    // The last representable second is still a time.
    assert_eq!(decode_one(Format::Csv, b"253402300799.999,s,1"), vec![Ok(prescale_dataflows::time::MAX_TIME)]);
}

/// The same in the binary format, whose time is any `u64`.
#[test]
fn bincode_time_after_year_9999() {
    use prescale_dataflows::record::RejectReason::BadTimestamp;
    let input = committed("regressions/decode_bincode/time_after_year_9999.bin");
    assert_eq!(decode_one(Format::Bincode, &input), vec![Err(BadTimestamp)]);
}

/// Caught by the `text_parsers` round trip (the input written by hand; a
/// 4-minute run did not reach it): a time on the last day of year 9999
/// with a negative offset is in year 10000 UTC, which `format_datetime`
/// writes with five digits and cannot read back.
#[test]
fn datetime_offset_past_year_9999() {
    use prescale_dataflows::time::{MAX_TIME, format_datetime, parse_datetime};
    let input = committed("regressions/text_parsers/offset_past_year_9999");
    assert_eq!(parse_datetime(&String::from_utf8_lossy(&input)), None);
    assert_eq!(parse_datetime("9999-12-31T23:59:59.999Z"), Some(MAX_TIME));
    assert_eq!(parse_datetime(&format_datetime(MAX_TIME)), Some(MAX_TIME));
}
