//! The embedded default: `prescale run` with no arguments runs the
//! generator for one simulated week and prints the summary.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

#[test]
fn run_with_no_arguments_prints_the_summary() {
    let out = common::run_ok(&["run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for field in ["records in", "records used", "rejected late", "windows emitted", "elapsed", "records/second"] {
        assert!(stdout.contains(field), "summary lacks {field:?}:\n{stdout}");
    }
    // 20 deployments x 5 pods, one sample each every 15 s for 7 days.
    assert!(stdout.contains(&format!("{}", 20 * 5 * 4 * 60 * 24 * 7)), "{stdout}");
}

#[test]
fn summary_json_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    common::run_ok(&["run", "--duration", "6h", "--summary-json", &path.to_string_lossy()]);
    let s = common::summary(&path);
    for field in ["records_in", "records_used", "rejected", "windows_emitted", "elapsed_seconds", "records_per_second"]
    {
        assert!(s.get(field).is_some(), "{field} missing from {s}");
    }
    let rejected: u64 = s["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(s["records_in"].as_u64().unwrap(), s["records_used"].as_u64().unwrap() + rejected);
}
