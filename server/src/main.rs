//! `sluice`: run a broker (`sluice` or `sluice serve`), or an admin
//! subcommand (`sluice groups`). See `sluice --help`.

use std::process::ExitCode;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sluice_server::broker::Broker;
use sluice_server::cli::{BrokerConfig, Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Groups(args)) => return sluice_server::admin::groups::run(args),
        None => cli.serve,
    };
    let config = match BrokerConfig::resolve(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Block the signals before any thread starts, so that only the signal
    // iterator receives them.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("sluice: cannot handle signals: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listen = config.listen;
    let cores = config.cores;
    let data_dir = config.data_dir.clone();
    let broker = match Broker::start(config) {
        Ok(broker) => broker,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%listen, cores, data_dir = %data_dir.display(), "sluice is serving");
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    broker.stop();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
