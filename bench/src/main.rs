//! `sluice-bench`: load harness for Sluice (see docs/benchmarks.md).
//!
//! Subcommands:
//! - `engine`: the storage engine alone on one shard, against the raw disk
//!   ([`engine`], with the raw-disk baselines in [`baseline`]).
//!
//! A benchmark exits non-zero only when it could not run; missed targets are
//! reported, not enforced.

mod baseline;
mod engine;
mod measure;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "sluice-bench", version, about = "Load harness for Sluice")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Storage-engine throughput and group-commit latency against the raw
    /// disk (O_DIRECT bandwidth, fdatasync latency) in the same directory.
    Engine(engine::EngineArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Engine(args) => engine::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
