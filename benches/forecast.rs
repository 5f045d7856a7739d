//! `cargo bench --bench forecast`: the cost of forecasting.
//!
//! - `fit/<model>` and `predict/<model>`: one model on four weeks of
//!   5-minute data (8064 points: the Azure 2019 region-wide CPU series of
//!   `../shared/traces/dc_aggregates`), predicting 30 minutes ahead with a
//!   90% interval. Throughput is in points fitted per second. The cycle
//!   model runs on an Azure VM with a cycle of its own (27.8 days).
//! - `refit-round`: the scheduled refit of every model of 200 series
//!   with four weeks of history, on 2 threads, as the forecast stage does
//!   it once per series and hour of event time. Throughput is in series
//!   refitted per second; 10,000 series refitted each hour need
//!   10,000 / that rate seconds of CPU per hour.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prescale::forecast_eval::load_series;
use prescale_dataflows::decode::DecodeOptions;
use prescale_dataflows::forecast::seasonal_naive::NaiveConfig;
use prescale_dataflows::forecast::{
    Cycle, CycleConfig, Ensemble, EnsembleConfig, HoltWinters, HoltWintersConfig, LastValue, Model, Mstl, MstlConfig,
    SeasonalNaive, Seasons, Ses, SesConfig,
};
use prescale_dataflows::time::MINUTE;

const POINTS: usize = 8064;
const SERIES: usize = 200;

fn history(trace: &str, name: &str) -> Vec<f64> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/traces/{trace}/series.csv"));
    assert!(path.exists(), "{} is missing: this bench uses the shared traces", path.display());
    let series = load_series(&path, 5 * MINUTE, &DecodeOptions::default()).expect("trace loads");
    let values = series.get(name).unwrap_or_else(|| panic!("{trace} has no series {name}"));
    values.iter().copied().take(POINTS).collect()
}

fn models(seasons: &Seasons) -> Vec<Box<dyn Model>> {
    let naive = NaiveConfig::for_seasons(seasons);
    vec![
        Box::new(LastValue::for_seasons(seasons)),
        Box::new(Ses::new(SesConfig::for_seasons(seasons))),
        Box::new(SeasonalNaive::day(seasons, naive)),
        Box::new(SeasonalNaive::week(seasons, naive)),
        Box::new(HoltWinters::new(seasons, HoltWintersConfig::for_seasons(seasons))),
        Box::new(Mstl::new(seasons, MstlConfig::for_seasons(seasons))),
    ]
}

fn bench(c: &mut Criterion) {
    let seasons = Seasons::from_step(300).expect("5-minute steps divide a day");
    let y = history("dc_aggregates", "azure_v2_total_vm_cpu_usage");
    let horizon = seasons.steps_for_minutes(30);

    let mut group = c.benchmark_group("forecast");
    group.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(y.len() as u64));
    for mut model in models(&seasons) {
        let name = model.kind().to_string();
        group.bench_function(BenchmarkId::new("fit", &name), |b| b.iter(|| model.fit(&y).expect("fits")));
        group.bench_function(BenchmarkId::new("predict", &name), |b| {
            b.iter(|| model.predict(horizon, 0.9).expect("predicts"))
        });
    }

    // The region total has no cycle shorter than a day; this VM has one
    // of 13.7 steps (its fit includes the search for it).
    let vm = history("azure_vm_v1_sample", "azv1_vm_1114910_avgcpu");
    let mut cycle = Cycle::new(&seasons, CycleConfig::for_seasons(&seasons), NaiveConfig::for_seasons(&seasons));
    group.throughput(Throughput::Elements(vm.len() as u64));
    group.bench_function(BenchmarkId::new("fit", "cycle"), |b| b.iter(|| cycle.fit(&vm).expect("fits")));
    group.bench_function(BenchmarkId::new("predict", "cycle"), |b| {
        b.iter(|| cycle.predict(horizon, 0.9).expect("predicts"))
    });

    // Ensembles filled without refits (refit_every past the history), then
    // the timed part: one scheduled refit of every model of every series.
    let mut filled: Vec<Ensemble> = (0..SERIES)
        .map(|i| {
            let mut config = EnsembleConfig::for_seasons(&seasons);
            config.refit_every = usize::MAX;
            let mut e = Ensemble::new(config).expect("valid config");
            // Each series its own level, so no two are the same.
            let scale = 1.0 + i as f64 / SERIES as f64;
            for v in &y {
                e.push(v * scale);
            }
            e
        })
        .collect();
    group.throughput(Throughput::Elements(SERIES as u64));
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("refit-round/200-series-2-threads", |b| {
        b.iter(|| {
            // A refit depends only on the retained history: repeating it is
            // the same work each time.
            let (a, b) = filled.split_at_mut(SERIES / 2);
            std::thread::scope(|s| {
                s.spawn(|| a.iter_mut().for_each(Ensemble::refit_all));
                s.spawn(|| b.iter_mut().for_each(Ensemble::refit_all));
            });
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
