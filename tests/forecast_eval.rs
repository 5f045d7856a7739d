//! `prescale forecast-eval` on a real trace: every model and the
//! selection, at 1 step, 30 min and 1 h, from at least 50 origins.

#![allow(clippy::unwrap_used)] // Tests fail loudly on any unexpected error.

mod common;

use common::{run_ok, trace};

#[test]
fn evaluates_every_model_and_the_selection_on_a_real_series() {
    let path = trace("dc_aggregates");
    let out = run_ok(&[
        "forecast-eval",
        "--trace",
        &path.to_string_lossy(),
        "--series",
        "google2019_avg_instance_cpu",
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let models = [
        "last-value",
        "ses",
        "seasonal-naive-day",
        "seasonal-naive-week",
        "holt-winters",
        "mstl",
        "ensemble",
        "ensemble-by-error",
    ];
    for model in models {
        for h in [5.0, 30.0, 60.0] {
            let row = rows
                .iter()
                .find(|r| r["model"] == model && r["horizon_minutes"].as_f64() == Some(h))
                .unwrap_or_else(|| panic!("no row for {model} at {h} min"));
            assert_eq!(row["series"], "google2019_avg_instance_cpu");
            assert!(row["origins"].as_u64().unwrap() >= 50, "{row}");
            for field in ["mase", "smape", "coverage90"] {
                assert!(row[field].as_f64().is_some_and(f64::is_finite), "{field} in {row}");
            }
        }
    }
    // The selection is never worse than the worst candidate, and its 90%
    // interval covers a sensible share of what happened.
    let at30 = |m: &str| rows.iter().find(|r| r["model"] == m && r["horizon_minutes"] == 30.0).unwrap();
    let worst = models[..6].iter().map(|m| at30(m)["mase"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(at30("ensemble")["mase"].as_f64().unwrap() < worst);
    let coverage = at30("ensemble")["coverage90"].as_f64().unwrap();
    assert!((0.7..=1.0).contains(&coverage), "coverage {coverage}");
}

#[test]
fn a_bad_step_is_refused_with_the_flag_name() {
    let out = common::prescale().args(["forecast-eval", "--trace", "x.csv", "--step", "7m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--step"));
}
