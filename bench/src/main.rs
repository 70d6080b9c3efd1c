//! `sluice-bench`: load harness for Sluice and any Kafka-compatible broker
//! (see docs/benchmarks.md).
//!
//! Commands:
//! - (default) / `run`: one workload against `--bootstrap host:port` or an
//!   `--embedded` sluice ([`run`], [`workload`], [`kafka`] = the native
//!   client, [`rdkafka_engine`] = librdkafka, [`report`] = outputs).
//! - `compare --a host:port --b host:port`: the same workload against two
//!   brokers alternately, ratios per figure ([`compare`]).
//! - `baseline`: the machine's limits ([`limits`], [`baseline`]).
//! - `presets`: the named workloads.
//! - `engine`: the storage engine alone on one shard ([`engine`]).
//! - `cluster-metadata`: a local 3-broker cluster's control plane: topic
//!   creation, metadata propagation, controller failover ([`cluster`]).
//! - `replication`: the same cluster's data plane: RF 3 against RF 1
//!   ingest, publish latency at a fixed rate, partition leader failover
//!   ([`replication`]).
//! - `transactions`: a transactional producer committing every 100 ms
//!   against an idempotent one, same settings: throughput ratio, commit
//!   latency ([`transactions`]).
//!
//! A benchmark exits non-zero only when it could not run or a client
//! failed; missed targets are reported, not enforced. Ctrl-C stops a run
//! and prints what was measured so far (exit status 130).

mod baseline;
mod cluster;
mod compare;
mod embedded;
mod engine;
mod kafka;
mod limits;
mod measure;
mod provenance;
mod rdkafka_engine;
mod replication;
mod report;
mod run;
mod stats;
mod transactions;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::embedded::{EmbeddedArgs, EmbeddedBroker};
use crate::limits::Limits;
use crate::run::{RunOptions, RunOutcome};
use crate::workload::WorkloadArgs;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-bench",
    version,
    about = "Load harness for Sluice and other Kafka-compatible brokers",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one workload (the default command).
    Run(RunArgs),
    /// The same workload against two brokers alternately (A B A B), with
    /// the ratio B/A of every figure.
    Compare(CompareArgs),
    /// The machine's limits: O_DIRECT write and read bandwidth, fdatasync
    /// latency, loopback TCP bandwidth.
    Baseline(limits::BaselineArgs),
    /// List the named workloads.
    Presets,
    /// Storage-engine throughput and group-commit latency against the raw
    /// disk (O_DIRECT bandwidth, fdatasync latency) in the same directory.
    Engine(engine::EngineArgs),
    /// Start a local cluster and time topic creation, metadata propagation
    /// to every broker and controller failover (kill -9).
    ClusterMetadata(cluster::ClusterArgs),
    /// Start a local 3-broker cluster and measure replication: RF 3 vs RF 1
    /// ingest, publish latency at a fixed rate, partition leader failover
    /// (kill -9).
    Replication(replication::ReplicationArgs),
    /// A transactional producer (commit every --commit-interval-ms)
    /// against an idempotent one with the same settings, A B A B: the
    /// throughput ratio and commit_transaction latency.
    Transactions(transactions::TransactionsArgs),
}

/// Flags every broker run shares.
#[derive(Args, Clone, Debug)]
struct CommonArgs {
    /// Directory for the JSON summary, .hgrm files and plot.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// Give up connecting to a broker after this many ms.
    #[arg(long, default_value_t = 5000)]
    connect_timeout_ms: u64,
    /// Give up on a request after this many ms.
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Prefix of the topics the bench creates (and deletes afterwards).
    #[arg(long, default_value = "sluice-bench")]
    topic_prefix: String,
    /// Do not delete the bench's topics at the end.
    #[arg(long)]
    keep_topics: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Measure the machine's limits first (see `sluice-bench baseline`) and
    /// print the results as ratios of them.
    #[arg(long)]
    baseline: bool,
    /// Directory for --baseline (the broker's data disk) [default: the
    /// embedded broker's data directory].
    #[arg(long)]
    baseline_dir: Option<PathBuf>,
    /// Seconds per --baseline measurement.
    #[arg(long, default_value_t = 5)]
    baseline_secs: u64,
}

#[derive(Args, Clone, Debug)]
struct RunArgs {
    /// Broker to run against (host:port).
    #[arg(long, default_value = "127.0.0.1:9092", conflicts_with = "embedded")]
    bootstrap: String,
    #[command(flatten)]
    embedded: EmbeddedArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Clone, Debug)]
struct CompareArgs {
    /// First broker (host:port).
    #[arg(long)]
    a: String,
    /// Second broker (host:port).
    #[arg(long)]
    b: String,
    /// Rounds of A then B.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => run_command(&cli.run),
        Some(Command::Run(args)) => run_command(args),
        Some(Command::Compare(args)) => compare_command(args),
        Some(Command::Baseline(args)) => limits::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::Presets) => {
            for preset in workload::PRESETS {
                println!("{:<10} {}", preset.name, preset.description);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Engine(args)) => engine::run(args).map(|()| ExitCode::SUCCESS),
        Some(Command::ClusterMetadata(args)) => {
            interrupt_flag().and_then(|interrupted| cluster::run(args, &interrupted))
        }
        Some(Command::Replication(args)) => {
            interrupt_flag().and_then(|interrupted| replication::run(args, &interrupted))
        }
        Some(Command::Transactions(args)) => {
            interrupt_flag().and_then(|interrupted| transactions::run(args, &interrupted))
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C sets the returned flag (a run then stops and reports); a second
/// Ctrl-C exits at once.
fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        Arc::clone(&interrupted),
    )
    .context("installing the Ctrl-C handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted))
        .context("installing the Ctrl-C handler")?;
    Ok(interrupted)
}

impl CommonArgs {
    fn options(&self, bootstrap: &str, broker_pid: Option<u32>, label: &str) -> RunOptions {
        RunOptions {
            bootstrap: bootstrap.to_owned(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            topic_prefix: self.topic_prefix.clone(),
            keep_topics: self.keep_topics,
            quiet: self.quiet,
            broker_pid,
            label: label.to_owned(),
        }
    }

    fn limits(&self, embedded_dir: Option<&std::path::Path>) -> anyhow::Result<Option<Limits>> {
        if !self.baseline {
            return Ok(None);
        }
        let (dir, flag) = match (&self.baseline_dir, embedded_dir) {
            (Some(dir), _) => (dir.clone(), "--baseline-dir"),
            (None, Some(dir)) => (dir.join("baseline"), "--data-dir"),
            (None, None) => bail!(
                "--baseline needs --baseline-dir (a directory on the broker's data disk) when \
                 the broker is not --embedded"
            ),
        };
        let limits = limits::measure_limits(&dir, flag, self.baseline_secs)?;
        let _ = std::fs::remove_dir(&dir);
        Ok(Some(limits))
    }
}

/// Figures of a run divided by the machine's limits: the read ratio only
/// for catch-up reads (a tailing consumer reads what was just written, from
/// memory), the latency ratio only at a fixed rate (at max rate latency is
/// queueing in the producer's buffer by design).
fn ratios(outcome: &RunOutcome, limits: &Limits) -> Value {
    let publish = stats::Percentiles::of(&outcome.publish);
    let fdatasync_p99_us = measure::LatencySummary::of(&limits.raw.sync_latency.sync).p99_us;
    let ratio = |numerator: f64, denominator: f64| {
        (denominator > 0.0).then(|| measure::round(numerator / denominator, 3))
    };
    let workload = &outcome.workload;
    let catch_up = workload.backlog_bytes.is_some();
    let fixed_rate = workload.rate != workload::Rate::Max;
    json!({
        "produce_over_direct_write": ratio(outcome.produce_mb_per_sec(), limits.write_mb_per_sec()),
        "consume_over_direct_read": catch_up
            .then(|| ratio(outcome.consume_mb_per_sec(), limits.read.mb_per_sec()))
            .flatten(),
        "produce_over_loopback_tcp": ratio(outcome.produce_mb_per_sec(), limits.loopback_mb_per_sec),
        "publish_p99_over_fdatasync_p99": fixed_rate
            .then(|| ratio(
                publish.value_us("p99").unwrap_or(0) as f64,
                fdatasync_p99_us as f64,
            ))
            .flatten(),
    })
}

fn render_ratios(ratios: &Value) -> String {
    let mut out = String::from("ratios to the machine's limits (same run):\n");
    if let Value::Object(map) = ratios {
        for (name, value) in map {
            if let Some(value) = value.as_f64() {
                out.push_str(&format!("  {name:<32} {value:.3}\n"));
            }
        }
    }
    out
}

fn file_stem(workload: &workload::Workload) -> String {
    format!(
        "{}-{}",
        workload.preset.as_deref().unwrap_or("custom"),
        workload.client.name()
    )
}

fn run_command(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let workload = args.workload.resolve()?;
    let interrupted = interrupt_flag()?;
    let common = &args.common;
    let mut broker = None;
    let bootstrap = if args.embedded.embedded {
        eprintln!("starting an embedded sluice...");
        let started = EmbeddedBroker::start(&args.embedded, &common.out)?;
        eprintln!(
            "embedded sluice on {} (data {}, metrics http://{}/metrics)",
            started.bootstrap,
            started.data_dir.display(),
            started.admin_address
        );
        let bootstrap = started.bootstrap.clone();
        broker = Some(started);
        bootstrap
    } else {
        run::check_broker(
            &args.bootstrap,
            Duration::from_millis(common.connect_timeout_ms),
        )?;
        args.bootstrap.clone()
    };
    let limits = common.limits(broker.as_ref().map(|broker| broker.data_dir.as_path()))?;
    if let Some(limits) = &limits {
        print!("{}", limits.render());
    }
    let options = common.options(
        &bootstrap,
        broker.as_ref().and_then(EmbeddedBroker::pid),
        "",
    );
    eprintln!("workload: {}", workload.describe());
    let outcome = run::run(&workload, &options, &interrupted)?;
    print!("{}", report::render(&outcome));
    let mut extra = serde_json::Map::new();
    extra.insert(
        "embedded".into(),
        json!(broker.as_ref().map(|broker| broker.bootstrap.clone())),
    );
    if let Some(limits) = &limits {
        let ratios = ratios(&outcome, limits);
        print!("{}", render_ratios(&ratios));
        extra.insert("baseline".into(), limits.to_json());
        extra.insert("ratios".into(), ratios);
    }
    let files = report::write_files(
        &common.out,
        &file_stem(&workload),
        &outcome,
        Value::Object(extra),
    )?;
    println!(
        "wrote {}, {}{}, {}",
        files.json.display(),
        files.publish_hgrm.display(),
        files
            .end_to_end_hgrm
            .map(|path| format!(", {}", path.display()))
            .unwrap_or_default(),
        files.plot.display()
    );
    if let Some(mut broker) = broker {
        broker.stop()?;
    }
    if let Some(failure) = &outcome.failure {
        bail!("the run failed: {failure}");
    }
    Ok(if outcome.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn compare_command(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let workload = args.workload.resolve()?;
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let interrupted = interrupt_flag()?;
    let common = &args.common;
    let timeout = Duration::from_millis(common.connect_timeout_ms);
    for bootstrap in [&args.a, &args.b] {
        run::check_broker(bootstrap, timeout)?;
    }
    eprintln!("workload: {}", workload.describe());
    let mut outcomes: Vec<(String, RunOutcome)> = Vec::new();
    'rounds: for round in 1..=args.rounds {
        for (name, bootstrap) in [("A", &args.a), ("B", &args.b)] {
            let label = format!("{name}{round}");
            let outcome = run::run(
                &workload,
                &common.options(bootstrap, None, &label),
                &interrupted,
            )?;
            eprintln!("{label} = {bootstrap}:");
            eprint!("{}", report::render(&outcome));
            let stem = format!("compare-{}-{label}", file_stem(&workload));
            report::write_files(
                &common.out,
                &stem,
                &outcome,
                json!({ "compare_label": label }),
            )?;
            let stop = outcome.interrupted || outcome.failure.is_some();
            outcomes.push((label, outcome));
            if stop {
                break 'rounds;
            }
        }
    }
    let comparison = compare::compare(&outcomes);
    print!("{}", compare::render(&comparison, &args.a, &args.b));
    let stem = format!("compare-{}", file_stem(&workload));
    // Outcomes alternate A, B, A, B, ...
    let runs: Vec<report::PlotRun> = outcomes
        .iter()
        .enumerate()
        .map(|(index, (_, outcome))| report::PlotRun {
            label: format!(
                "{} round {}",
                if index % 2 == 0 { "A" } else { "B" },
                index / 2 + 1
            ),
            broker: index % 2,
            round: index / 2,
            outcome,
        })
        .collect();
    let started_at = outcomes
        .first()
        .map_or_else(std::time::SystemTime::now, |(_, outcome)| {
            outcome.started_at
        });
    let title = format!(
        "sluice-bench compare {}: A = {}, B = {}, {}",
        workload.preset.as_deref().unwrap_or("custom workload"),
        args.a,
        args.b,
        provenance::minute_utc(started_at)
    );
    report::write(
        &common.out.join(format!("{stem}.svg")),
        &report::svg(&title, &runs),
    )?;
    let mut summary = json!({
        "a": args.a,
        "b": args.b,
        "workload": workload.to_json(),
        "figures": compare::to_json(&comparison),
        "runs": outcomes.iter().map(|(label, outcome)| {
            let mut run = report::summary_json(outcome);
            if let Value::Object(map) = &mut run {
                map.insert("label".into(), json!(label));
            }
            run
        }).collect::<Vec<_>>(),
    });
    if let (Value::Object(summary), Value::Object(provenance)) =
        (&mut summary, provenance::to_json(started_at))
    {
        summary.extend(provenance);
    }
    let path = common.out.join(format!("{stem}.json"));
    report::write(&path, &serde_json::to_string_pretty(&summary)?)?;
    println!(
        "wrote {} and {}",
        path.display(),
        common.out.join(format!("{stem}.svg")).display()
    );
    if let Some(failure) = outcomes
        .iter()
        .find_map(|(_, outcome)| outcome.failure.clone())
    {
        bail!("a run failed: {failure}");
    }
    Ok(if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}
