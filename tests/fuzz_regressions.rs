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
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path, bytes));
        }
    }
    assert!(out.len() >= 2, "fuzz/seeds/{target} should hold at least two seeds, found {}", out.len());
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
        for (_, seed) in inputs(target) {
            let mut decoder = Decoder::new(format, DecodeOptions::default(), "seed");
            let records: Vec<&[u8]> =
                if format == Format::Bincode { vec![&seed] } else { seed.split(|&b| b == b'\n').collect() };
            for record in records {
                decoder.decode_bytes(record, 0, 0, &mut |r| samples += usize::from(r.is_ok()));
            }
        }
        assert!(samples >= 2, "{target}: the seeds gave {samples} samples");
    }
    for (path, seed) in inputs("job_config") {
        let text = String::from_utf8_lossy(&seed);
        let config =
            prescale::config::JobConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = prescale::config::Settings::from_config(&config) {
            panic!("{}: {e}", path.display());
        }
    }
    for (path, seed) in inputs("scaler_spec") {
        let spec: prescale::kube::crd::PredictiveScalerSpec =
            serde_json::from_slice(&seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = prescale::kube::convert::scaler_spec(&spec, 0.9) {
            panic!("{}: {e}", path.display());
        }
    }
}
