//! The `prescale` binary: parses the command line and maps errors to exit
//! codes (1: the job failed; 2: bad usage or configuration; 70: a bug, a
//! panic anywhere in the process).

use std::process::ExitCode;

use clap::Parser;
use prescale::cli::{Cli, Command};
use prescale::config::{MetricsSettings, Settings, SinkSettings};
use prescale::forecast_eval::{self, EvalSettings};
use prescale::metrics::server::Endpoint;
use prescale::{Error, backtest, job};

fn main() -> ExitCode {
    // A panicking timely worker leaves its peers, in this process and in
    // the others of a cluster, waiting forever for its progress. A panic is
    // a bug: report it and end the process, so that the peers' connections
    // drop and they end too, instead of the whole job hanging.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(70);
    }));
    let cli = Cli::parse();
    if let Err(e) = prescale::logging::init(cli.log_format) {
        eprintln!("prescale: {e}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prescale: {e:#}");
            let usage = matches!(
                e.downcast_ref::<Error>(),
                Some(Error::InvalidSetting { .. } | Error::ConfigFile { .. } | Error::Stage(_))
            );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Starts the metrics endpoint. A job that cannot bind it still runs: it
/// scales without being observed, and says so (two processes of a cluster
/// on one host must be given different addresses).
fn serve_metrics(settings: &MetricsSettings) -> Option<Endpoint> {
    let addr = settings.addr?;
    match Endpoint::start(addr, prescale::metrics::global()) {
        Ok(endpoint) => {
            tracing::info!(addr = %endpoint.addr(), "metrics endpoint listening");
            Some(endpoint)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics endpoint not started; the job runs without it");
            None
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let settings = Settings::from_config(&args.job_config()?)?;
            let to_stdout = settings.sink == SinkSettings::Stdout;
            let endpoint = serve_metrics(&settings.metrics);
            let linger = settings.metrics.linger;
            if let Some(summary) = job::run(settings)? {
                if to_stdout {
                    println!("{summary}");
                } else {
                    eprintln!("{summary}");
                }
            }
            if let Some(endpoint) = endpoint.filter(|_| !linger.is_zero()) {
                tracing::info!(addr = %endpoint.addr(), linger_seconds = linger.as_secs_f64(), "metrics endpoint lingering");
                std::thread::sleep(linger);
            }
            Ok(())
        }
        Command::Backtest(args) => {
            let settings = args.settings()?;
            let result = backtest::run(&settings)?;
            if let Some(dir) = &args.report {
                let path = backtest::report::html(&result, dir)?;
                eprintln!("backtest: report written to {}", path.display());
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&backtest::report::json(&result))?);
            } else {
                print!("{}", backtest::report::table(&result));
            }
            Ok(())
        }
        Command::Produce(args) => {
            let settings = prescale::produce::ProduceSettings::from_args(&args)?;
            let count = prescale::produce::run(&settings)?;
            println!("{count}");
            Ok(())
        }
        Command::ForecastEval(args) => {
            let settings = EvalSettings::new(args.trace, args.series, &args.step, &args.horizon, args.origins)?;
            let rows = forecast_eval::run(&settings)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", forecast_eval::table(&rows, (settings.horizon / 60_000) as f64));
            }
            Ok(())
        }
        Command::Crd => {
            print!("{}", prescale::kube::crd::crd_yaml());
            Ok(())
        }
    }
}
