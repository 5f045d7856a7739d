//! `prescale forecast-eval`: rolling-origin accuracy of every forecasting
//! model and of the per-series selection, on a recorded trace.
//!
//! The trace is decoded like a replay, each series is put on a regular
//! grid of `--step` (the mean of the samples in a step; a step without
//! samples is missing), and [`prescale_dataflows::forecast::eval`] walks
//! each series once, forecasting from at least 50 origins spread over its
//! second half. Series are spread over the machine's cores.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use prescale_dataflows::decode::{DecodeOptions, Decoder, Format};
use prescale_dataflows::forecast::eval::{EvalConfig, EvalRow, evaluate};
use prescale_dataflows::forecast::{EnsembleConfig, ModelKind, Seasons};
use prescale_dataflows::time::{MINUTE, Millis, SECOND, parse_duration};

use crate::error::{Error, Result};

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalSettings {
    /// The trace.
    pub trace: PathBuf,
    /// Only this series, if given.
    pub series: Option<String>,
    /// Grid step.
    pub step: Millis,
    /// The decision horizon: reported, and the horizon models are ranked on.
    pub horizon: Millis,
    /// Forecast origins per series.
    pub origins: usize,
}

impl EvalSettings {
    /// Validates the flags.
    pub fn new(trace: PathBuf, series: Option<String>, step: &str, horizon: &str, origins: usize) -> Result<Self> {
        let step = parse_duration(step)
            .filter(|s| *s >= SECOND && s % SECOND == 0)
            .ok_or_else(|| Error::invalid("--step", format!("{step:?} is not a whole number of seconds like 5m")))?;
        Seasons::from_step(step / SECOND).map_err(|e| Error::invalid("--step", e.to_string()))?;
        let horizon = parse_duration(horizon).filter(|h| *h >= step).ok_or_else(|| {
            Error::invalid("--horizon", format!("{horizon:?} must be a duration of at least one step"))
        })?;
        if origins < 50 {
            return Err(Error::invalid("--origins", "at least 50 origins are needed for a fair comparison"));
        }
        Ok(EvalSettings { trace, series, step, horizon, origins })
    }
}

/// Every series of a trace on a regular grid (missing steps are NaN).
pub fn load_series(path: &Path, step: Millis, decode: &DecodeOptions) -> Result<BTreeMap<String, Vec<f64>>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "reading trace",
        path: path.to_owned(),
        source,
    })?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let format = Format::guess(&path.to_string_lossy(), first);
    let mut decoder = Decoder::new(format, decode.clone(), &path.to_string_lossy());
    let mut points: BTreeMap<String, Vec<(Millis, f64)>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        decoder.decode(line, 0, i as u64 + 1, &mut |r| {
            if let Ok(sample) = r {
                let key = sample.series.key();
                let name = if format == Format::Csv { key.deployment.clone() } else { sample.series.to_string() };
                points.entry(name).or_default().push((sample.time, sample.value));
            }
        });
    }
    Ok(points
        .into_iter()
        .filter_map(|(name, mut pts)| {
            pts.sort_by_key(|p| p.0);
            let t0 = pts.first()?.0 / step * step;
            let len = usize::try_from((pts.last()?.0 - t0) / step + 1).ok()?;
            let mut sums = vec![(0.0, 0u32); len];
            for (t, v) in pts {
                let slot = &mut sums[((t - t0) / step) as usize];
                slot.0 += v;
                slot.1 += 1;
            }
            let grid = sums.into_iter().map(|(s, n)| if n == 0 { f64::NAN } else { s / f64::from(n) }).collect();
            Some((name, grid))
        })
        .collect())
}

/// Evaluates every series of the trace (or the one asked for).
pub fn run(settings: &EvalSettings) -> Result<Vec<EvalRow>> {
    let series = load_series(&settings.trace, settings.step, &DecodeOptions::default())?;
    let series: Vec<(String, Vec<f64>)> =
        series.into_iter().filter(|(name, _)| settings.series.as_ref().is_none_or(|s| s == name)).collect();
    if series.is_empty() {
        return Err(Error::invalid("--series", format!("no such series in {}", settings.trace.display())));
    }
    let seasons = Seasons::from_step(settings.step / SECOND).map_err(|e| Error::invalid("--step", e.to_string()))?;
    let mut ensemble = EnsembleConfig::for_seasons(&seasons);
    ensemble.score_horizon = seasons.steps_for_minutes(settings.horizon / MINUTE);
    let mut config = EvalConfig::for_ensemble(ensemble);
    config.horizons.push(ensemble_steps(settings.horizon, settings.step));
    config.horizons.sort_unstable();
    config.horizons.dedup();
    config.origins = settings.origins;

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Vec<EvalRow>)>> = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(series.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, values)) = series.get(i) else { break };
                    match evaluate(name, values, &config) {
                        Ok(report) => {
                            if let Ok(mut r) = results.lock() {
                                r.push((i, report.rows));
                            }
                        }
                        Err(e) => eprintln!("forecast-eval: skipping {name}: {e}"),
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().flat_map(|(_, rows)| rows).collect())
}

fn ensemble_steps(horizon: Millis, step: Millis) -> usize {
    usize::try_from(horizon.div_ceil(step)).unwrap_or(usize::MAX)
}

/// The table for people: per series and horizon, each model's MASE (and
/// that of the selection by point error alone) and the selection's coverage; then how often the selection beats seasonal
/// naive (one day) at the decision horizon.
pub fn table(rows: &[EvalRow], horizon_minutes: f64) -> String {
    let mut out = String::new();
    let models: Vec<String> = ModelKind::ALL
        .iter()
        .map(|m| m.to_string())
        .chain(["ensemble".to_owned(), "ensemble-by-error".to_owned()])
        .collect();
    let _ = write!(out, "{:<44} {:>7}", "series", "h(min)");
    for m in &models {
        let _ = write!(out, " {:>19}", m);
    }
    let _ = writeln!(out, " {:>10}", "cover90");
    let mut by_key: BTreeMap<(&str, u64), Vec<&EvalRow>> = BTreeMap::new();
    for r in rows {
        by_key.entry((r.series.as_str(), r.horizon_minutes as u64)).or_default().push(r);
    }
    let mut wins = (0, 0);
    let mut coverage = Vec::new();
    for ((series, h), group) in &by_key {
        let _ = write!(out, "{:<44} {:>7}", truncate(series, 44), h);
        for m in &models {
            match group.iter().find(|r| &r.model == m) {
                Some(r) => {
                    let _ = write!(out, " {:>19.3}", r.mase);
                }
                None => {
                    let _ = write!(out, " {:>19}", "-");
                }
            }
        }
        let ens = group.iter().find(|r| r.model == "ensemble");
        let _ = writeln!(out, " {:>10.3}", ens.map_or(f64::NAN, |r| r.coverage90));
        if *h as f64 == horizon_minutes {
            let naive = group.iter().find(|r| r.model == ModelKind::SeasonalNaiveDay.to_string());
            if let (Some(e), Some(n)) = (ens, naive) {
                wins.1 += 1;
                if e.mase < n.mase {
                    wins.0 += 1;
                }
                coverage.push(e.coverage90);
            }
        }
    }
    let mean_cov = coverage.iter().sum::<f64>() / coverage.len().max(1) as f64;
    let _ = writeln!(
        out,
        "\nat {horizon_minutes} min: the selection beats seasonal-naive-day on {} of {} series; mean 90% coverage {:.3}",
        wins.0, wins.1, mean_cov
    );
    out
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
