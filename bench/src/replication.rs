//! `sluice-bench replication`: the cost and the failover time of partition
//! replication on a local 3-broker cluster (docs/benchmarks.md
//! "Replication").
//!
//! Starts three `sluice` brokers (the cluster code of [`crate::cluster`]:
//! free loopback ports, data under one directory, each broker in its own
//! process group, stopped and removed at the end, on an error and on
//! Ctrl-C) with a short broker session timeout, then:
//!
//! 1. ingest: `--rounds` rounds of an RF 3 run (min.insync.replicas
//!    `--min-insync-replicas`) then an RF 1 run (min.insync.replicas 1), each
//!    a max-rate acks=all workload of the run engine ([`crate::run`]) on a
//!    fresh topic of `--partitions` partitions, no consumer; MB/s of each
//!    and the ratio RF3/RF1 of the medians (and of each round);
//! 2. latency: in the same rounds, the same workload at the fixed
//!    `--latency-rate`, RF 3 then RF 1: publish latency from each record's
//!    due time (no coordinated omission);
//! 3. failover (`--failovers` rounds): a one-partition RF 3 topic; a steady
//!    writer starts one acks=all write of one record every
//!    `--failover-write-interval-ms` (each on a fresh connection to the
//!    leader Metadata names, asked of a live broker) for
//!    `--failover-steady-ms`, waits for the writes in flight, SIGKILLs the
//!    partition's leader and keeps starting writes on the same schedule.
//!    The figure is the time from the kill to the first acknowledged write
//!    started after it. The killed broker is then restarted and the round
//!    ends when the partition's ISR holds all three brokers again.
//!    Afterwards the partition's log end must cover every acknowledged
//!    write.
//!
//! Broker CPU time is read from /proc around every load run (setup and
//! drain included). Everything runs on the calling thread except the run
//! engine's client threads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{MetadataRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

use crate::cluster::{self, Cluster, ClusterSpec, Link, Versions, stop_if_interrupted};
use crate::kafka::records::BatchWriter;
use crate::kafka::{self, Client};
use crate::run::{self, RunOptions, RunOutcome};
use crate::workload::{Rate, Workload, WorkloadArgs};
use crate::{measure, provenance, report, stats};

/// The cluster: three brokers, all controller voters.
const BROKERS: u32 = 3;
/// Replication factor of the replicated topics (every broker).
const REPLICATION_FACTOR: i16 = 3;
/// How long a restarted broker may take to be back in the ISR.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(120);
/// A failover write that has no answer after this long counts as failed
/// (the leader it was sent to is probably dead).
const WRITE_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// Targets (docs/benchmarks.md); reported, not enforced.
const RATIO_TARGET_MIN: f64 = 0.3;
const LATENCY_P99_TARGET_US: u64 = 2000;
const FAILOVER_TARGET_BEYOND_SESSION_MS: u64 = 1000;
/// Free disk kept beyond a load run's estimated need (others build on
/// the same disk).
const DISK_MARGIN_BYTES: u64 = 1 << 30;
/// How long a load run waits for that much free disk.
const DISK_WAIT: Duration = Duration::from_secs(120);
const FILLER: &[u8] = b"sluice-bench failover write: 0123456789abcdefghijklmnopqrstuvwxyz";

/// Flags of `sluice-bench replication`.
#[derive(Args, Clone, Debug)]
pub struct ReplicationArgs {
    /// Partitions of the ingest and latency topics.
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Producers per load run (the run engine's `--producers`).
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Measured seconds of each load run, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds of each load run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Rounds of (ingest RF 3, ingest RF 1, latency RF 3, latency RF 1); 0
    /// runs the failover phase only.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Fixed rate of the latency runs: `50MB/s` or records/s.
    #[arg(long, default_value = "50MB/s", value_parser = Rate::parse)]
    pub latency_rate: Rate,
    /// min.insync.replicas of the RF 3 topics.
    #[arg(long, default_value_t = 2)]
    pub min_insync_replicas: i32,
    /// Rounds of killing a partition leader; 0 skips the failover phase.
    #[arg(long, default_value_t = 5)]
    pub failovers: u32,
    /// The failover writer starts one write this often.
    #[arg(long, default_value_t = 10)]
    pub failover_write_interval_ms: u64,
    /// Steady writing before each kill.
    #[arg(long, default_value_t = 1000)]
    pub failover_steady_ms: u64,
    /// The brokers' --broker-session-timeout-ms (how long the controller
    /// waits before fencing a silent broker).
    #[arg(long, default_value_t = 1500)]
    pub broker_session_timeout_ms: u64,
    /// The brokers' --broker-heartbeat-interval-ms.
    #[arg(long, default_value_t = 250)]
    pub broker_heartbeat_interval_ms: u64,
    /// The brokers' --replica-lag-time-max-ms.
    #[arg(long, default_value_t = 10_000)]
    pub replica_lag_time_max_ms: u64,
    /// segment.bytes of the load topics: small, so that retention can
    /// delete segments during a run.
    #[arg(long, default_value_t = 8 << 20)]
    pub segment_bytes: u64,
    /// retention.bytes of the load topics: a run writes GBs (three times
    /// over at RF 3); retention bounds what each replica keeps, so runs fit
    /// a small disk.
    #[arg(long, default_value_t = 16 << 20)]
    pub retention_bytes: u64,
    /// The brokers' --log-cleaner-interval-ms (how often retention runs).
    #[arg(long, default_value_t = 500)]
    pub log_cleaner_interval_ms: u64,
    /// Shards (`--cores`) of each broker.
    #[arg(long, default_value_t = 1)]
    pub broker_cores: usize,
    /// The sluice binary [default: `sluice` next to sluice-bench].
    #[arg(long)]
    pub sluice_bin: Option<PathBuf>,
    /// Directory holding the brokers' data directories (must be on a real
    /// disk) [default: bench-data/replication-<pid> next to sluice-bench].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the brokers' data directories.
    #[arg(long)]
    pub keep_data: bool,
    /// Directory for the JSON summary, .hgrm files and broker logs.
    #[arg(long, default_value = "target/bench-results")]
    pub out: PathBuf,
    /// Give up on a request (or a wait) after this many ms.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl ReplicationArgs {
    /// The argument checks clap cannot make.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.rounds == 0 && self.failovers == 0 {
            bail!("--rounds 0 and --failovers 0 leave nothing to measure");
        }
        if self.min_insync_replicas < 1 || self.min_insync_replicas > i32::from(REPLICATION_FACTOR)
        {
            bail!("--min-insync-replicas must be 1 to {REPLICATION_FACTOR}");
        }
        if self.failover_write_interval_ms == 0 {
            bail!("--failover-write-interval-ms must be at least 1");
        }
        if self.broker_session_timeout_ms == 0 || self.broker_heartbeat_interval_ms == 0 {
            bail!(
                "--broker-session-timeout-ms and --broker-heartbeat-interval-ms must be positive"
            );
        }
        if self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms {
            bail!(
                "--broker-heartbeat-interval-ms ({}) must be below --broker-session-timeout-ms \
                 ({}): every broker would be fenced between two heartbeats",
                self.broker_heartbeat_interval_ms,
                self.broker_session_timeout_ms
            );
        }
        if self.segment_bytes < 1 << 20 || self.retention_bytes < self.segment_bytes {
            bail!("--segment-bytes must be at least 1 MiB and --retention-bytes at least that");
        }
        if self.log_cleaner_interval_ms == 0 {
            bail!("--log-cleaner-interval-ms must be positive");
        }
        if self.replica_lag_time_max_ms == 0 {
            bail!("--replica-lag-time-max-ms must be positive");
        }
        if self.broker_cores == 0 {
            bail!("--broker-cores must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            bail!("--request-timeout-ms must be at least 1");
        }
        // The workload checks (partitions, record size, durations).
        self.workload(REPLICATION_FACTOR, Rate::Max)?;
        Ok(())
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The flags every broker gets beyond the cluster's own.
    fn broker_flags(&self) -> Vec<String> {
        vec![
            "--broker-session-timeout-ms".into(),
            self.broker_session_timeout_ms.to_string(),
            "--broker-heartbeat-interval-ms".into(),
            self.broker_heartbeat_interval_ms.to_string(),
            "--replica-lag-time-max-ms".into(),
            self.replica_lag_time_max_ms.to_string(),
            "--log-cleaner-interval-ms".into(),
            self.log_cleaner_interval_ms.to_string(),
        ]
    }

    /// min.insync.replicas of a topic of `replication_factor`.
    fn min_insync(&self, replication_factor: i16) -> i32 {
        if replication_factor == REPLICATION_FACTOR {
            self.min_insync_replicas
        } else {
            1
        }
    }

    /// The load run's workload: acks=all, no consumer.
    fn workload(&self, replication_factor: i16, rate: Rate) -> anyhow::Result<Workload> {
        WorkloadArgs {
            partitions: Some(self.partitions),
            record_size: Some(self.record_size),
            producers: Some(self.producers),
            consumers: Some(0),
            rate: Some(rate),
            duration: Some(self.duration),
            warmup: Some(self.warmup),
            acks: Some(-1),
            replication_factor: Some(replication_factor),
            topic_configs: vec![
                (
                    "min.insync.replicas".into(),
                    self.min_insync(replication_factor).to_string(),
                ),
                ("segment.bytes".into(), self.segment_bytes.to_string()),
                ("retention.bytes".into(), self.retention_bytes.to_string()),
            ],
            ..WorkloadArgs::default()
        }
        .resolve()
    }

    /// Disk a load run may need: every replica of every partition holds
    /// up to retention.bytes plus the active segment plus what arrives
    /// between two retention passes (a segment, generously).
    fn disk_bytes_needed(&self) -> u64 {
        u64::from(self.partitions)
            * REPLICATION_FACTOR as u64
            * (self.retention_bytes + 2 * self.segment_bytes)
    }

    /// The failover target: the session timeout plus one second.
    fn failover_target_ms(&self) -> u64 {
        self.broker_session_timeout_ms + FAILOVER_TARGET_BEYOND_SESSION_MS
    }
}

/// Which load a run applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    /// As fast as acks=all answers.
    Ingest,
    /// `--latency-rate`.
    Latency,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Ingest => "ingest",
            Load::Latency => "latency",
        }
    }
}

/// One load run's figures.
struct LoadRun {
    load: Load,
    replication_factor: i16,
    round: u32,
    outcome: RunOutcome,
    /// CPU seconds of each broker over the whole run (setup included).
    broker_cpu_secs: Vec<Option<f64>>,
    wall: Duration,
}

impl LoadRun {
    fn mb_per_sec(&self) -> f64 {
        self.outcome.produce_mb_per_sec()
    }

    /// The log grew by less than producers saw acknowledged.
    fn lost_records(&self) -> Option<u64> {
        let acknowledged = self.outcome.produced_total.records;
        self.outcome
            .log_records_added
            .and_then(|added| acknowledged.checked_sub(added))
            .filter(|lost| *lost > 0)
    }

    fn broker_cpu_percent(&self) -> Vec<Option<f64>> {
        self.broker_cpu_secs
            .iter()
            .map(|secs| secs.map(|secs| secs / self.wall.as_secs_f64().max(1e-9) * 100.0))
            .collect()
    }

    fn label(&self) -> String {
        format!(
            "{} RF{} r{}",
            self.load.name(),
            self.replication_factor,
            self.round
        )
    }

    fn to_json(&self) -> Value {
        let outcome = &self.outcome;
        json!({
            "load": self.load.name(),
            "replication_factor": self.replication_factor,
            "round": self.round,
            "mb_per_sec": measure::round(self.mb_per_sec(), 2),
            "records_per_sec": measure::round(outcome.produce_records_per_sec(), 1),
            "publish_latency": stats::Percentiles::of(&outcome.publish).to_json(),
            "acknowledged_records": outcome.produced_total.records,
            "log_records_added": outcome.log_records_added,
            "lost_records": self.lost_records(),
            "failure": outcome.failure,
            "first_errors": outcome.first_errors,
            "broker_cpu_percent": self.broker_cpu_percent().iter()
                .map(|percent| percent.map(|percent| measure::round(percent, 1)))
                .collect::<Vec<_>>(),
            "bench_cpu": outcome.bench_cpu.to_json(),
            "wall_secs": measure::round(self.wall.as_secs_f64(), 3),
        })
    }
}

/// One failover round's figures.
#[derive(Clone, Debug, PartialEq)]
struct Failover {
    killed_node: i32,
    /// The killed broker was the active controller too: a controller
    /// election precedes the partition's.
    killed_controller: bool,
    new_leader: i32,
    kill_to_ack: Duration,
    /// Writes acknowledged in the steady phase before the kill.
    steady_acknowledged: u32,
    /// Writes started after the kill, the acknowledged one included.
    attempts: u32,
    /// Why the writes after the kill failed, with counts.
    errors: BTreeMap<String, u32>,
    /// From the restart to a full ISR.
    rejoin: Duration,
}

/// What the failover phase measured.
#[derive(Clone, Debug, Default, PartialEq)]
struct FailoverOutcome {
    rounds: Vec<Failover>,
    acknowledged_writes: u64,
    /// The partition's log end after the last round (None: not asked).
    log_end: Option<i64>,
}

impl FailoverOutcome {
    fn kill_to_ack_ms(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|round| round.kill_to_ack.as_secs_f64() * 1000.0)
            .collect()
    }

    fn max_ms(&self) -> Option<f64> {
        self.kill_to_ack_ms().into_iter().reduce(f64::max)
    }

    /// Acknowledged writes missing from the log.
    fn lost_writes(&self) -> Option<u64> {
        let end = u64::try_from(self.log_end?).ok()?;
        self.acknowledged_writes
            .checked_sub(end)
            .filter(|lost| *lost > 0)
    }
}

/// Everything a run measured.
struct Outcome {
    loads: Vec<LoadRun>,
    failover: FailoverOutcome,
    /// Why the run stopped early, if it did.
    stopped: Option<String>,
}

impl Outcome {
    fn runs(&self, load: Load, replication_factor: i16) -> impl Iterator<Item = &LoadRun> {
        self.loads
            .iter()
            .filter(move |run| run.load == load && run.replication_factor == replication_factor)
    }

    fn median_mb_per_sec(&self, load: Load, replication_factor: i16) -> Option<f64> {
        median(
            &self
                .runs(load, replication_factor)
                .map(LoadRun::mb_per_sec)
                .collect::<Vec<_>>(),
        )
    }

    /// RF3 over RF1 ingest, of the medians.
    fn ingest_ratio(&self) -> Option<f64> {
        let replicated = self.median_mb_per_sec(Load::Ingest, REPLICATION_FACTOR)?;
        let single = self.median_mb_per_sec(Load::Ingest, 1)?;
        (single > 0.0).then(|| replicated / single)
    }

    /// RF3 over RF1 ingest of each round that ran both.
    fn round_ratios(&self) -> Vec<(u32, f64)> {
        self.runs(Load::Ingest, REPLICATION_FACTOR)
            .filter_map(|replicated| {
                let single = self
                    .runs(Load::Ingest, 1)
                    .find(|single| single.round == replicated.round)?;
                (single.mb_per_sec() > 0.0).then(|| {
                    (
                        replicated.round,
                        replicated.mb_per_sec() / single.mb_per_sec(),
                    )
                })
            })
            .collect()
    }

    /// Publish latency of every latency run of `replication_factor`.
    fn latency(&self, replication_factor: i16) -> Histogram<u64> {
        let mut merged = measure::latency_histogram();
        for run in self.runs(Load::Latency, replication_factor) {
            // Same bounds everywhere: adding cannot fail.
            let _ = merged.add(&run.outcome.publish);
        }
        merged
    }

    fn failures(&self) -> Vec<String> {
        let mut failures: Vec<String> = self
            .loads
            .iter()
            .filter_map(|run| {
                run.outcome
                    .failure
                    .as_ref()
                    .map(|failure| format!("{}: {failure}", run.label()))
            })
            .collect();
        for run in &self.loads {
            if let Some(lost) = run.lost_records() {
                failures.push(format!(
                    "{}: {lost} acknowledged records missing from the log",
                    run.label()
                ));
            }
        }
        if let Some(lost) = self.failover.lost_writes() {
            failures.push(format!(
                "failover: {lost} acknowledged writes missing from the log"
            ));
        }
        failures.extend(self.stopped.clone());
        failures
    }
}

/// `sluice-bench replication`.
pub fn run(args: &ReplicationArgs, interrupted: &AtomicBool) -> anyhow::Result<ExitCode> {
    args.check()?;
    let started_at = SystemTime::now();
    eprintln!(
        "starting a {BROKERS}-broker cluster ({} shard(s) each, session timeout {} ms, \
         heartbeat {} ms)...",
        args.broker_cores, args.broker_session_timeout_ms, args.broker_heartbeat_interval_ms
    );
    let mut cluster = Cluster::launch(&ClusterSpec {
        brokers: BROKERS,
        voters: BROKERS,
        cores: args.broker_cores,
        sluice_bin: args.sluice_bin.as_deref(),
        data_dir: args.data_dir.as_deref(),
        keep_data: args.keep_data,
        out: &args.out,
        name: "replication",
        extra_flags: args.broker_flags(),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let addresses: Vec<String> = cluster
        .brokers
        .iter()
        .map(|broker| broker.kafka.clone())
        .collect();
    let versions = runtime.block_on(async {
        let versions = cluster::negotiate(&mut cluster, &addresses[0], interrupted).await?;
        cluster::wait_until_serving(&mut cluster, &addresses, versions, None, interrupted).await?;
        anyhow::Ok(versions)
    });
    let versions = match versions {
        Ok(versions) => versions,
        Err(error) => {
            let _ = cluster.check_alive();
            return Err(error);
        }
    };
    if !args.quiet {
        eprintln!("cluster serving on {}", addresses.join(", "));
    }
    let mut outcome = Outcome {
        loads: Vec::new(),
        failover: FailoverOutcome::default(),
        stopped: None,
    };
    if let Err(error) = measure_loads(args, &mut cluster, &addresses, interrupted, &mut outcome) {
        outcome.stopped = Some(format!("load runs: {error:#}"));
    }
    if outcome.stopped.is_none() && args.failovers > 0 && !interrupted.load(Ordering::Relaxed) {
        let result = runtime.block_on(measure_failovers(
            args,
            &mut cluster,
            &addresses,
            versions,
            interrupted,
            &mut outcome.failover,
        ));
        if let Err(error) = result {
            outcome.stopped = Some(format!("failover: {error:#}"));
        }
    }
    if outcome.stopped.is_some() {
        // Say which broker died, if one did, before the logs are left behind.
        if let Err(error) = cluster.check_alive() {
            outcome.stopped = outcome
                .stopped
                .map(|stopped| format!("{stopped}; {error:#}"));
        }
    }
    cluster.stop()?;
    print!("{}", render(args, &outcome));
    let summary = summary_json(args, &outcome, started_at);
    let json_path = args.out.join("replication.json");
    report::write(&json_path, &serde_json::to_string_pretty(&summary)?)?;
    let mut written = vec![json_path.display().to_string()];
    for replication_factor in [REPLICATION_FACTOR, 1] {
        let latency = outcome.latency(replication_factor);
        if !latency.is_empty() {
            let path = args
                .out
                .join(format!("replication-latency-rf{replication_factor}.hgrm"));
            report::write(&path, &report::hgrm(&latency))?;
            written.push(path.display().to_string());
        }
    }
    println!("wrote {}", written.join(", "));
    if interrupted.load(Ordering::Relaxed) {
        return Ok(ExitCode::from(130));
    }
    let failures = outcome.failures();
    if !failures.is_empty() {
        bail!("the run failed:\n  {}", failures.join("\n  "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Phases 1 and 2, in rounds of ingest RF3, ingest RF1, latency RF3,
/// latency RF1.
fn measure_loads(
    args: &ReplicationArgs,
    cluster: &mut Cluster,
    addresses: &[String],
    interrupted: &AtomicBool,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let plan = [
        (Load::Ingest, REPLICATION_FACTOR),
        (Load::Ingest, 1),
        (Load::Latency, REPLICATION_FACTOR),
        (Load::Latency, 1),
    ];
    for round in 1..=args.rounds {
        for (load, replication_factor) in plan {
            stop_if_interrupted(interrupted)?;
            cluster.check_alive()?;
            let rate = match load {
                Load::Ingest => Rate::Max,
                Load::Latency => args.latency_rate,
            };
            let workload = args.workload(replication_factor, rate)?;
            let label = format!("{} RF{replication_factor} r{round}", load.name());
            // Others share the disk: wait for room (their builds come and
            // go), never fill it.
            wait_for_disk(args, cluster, &label, interrupted)?;
            let options = RunOptions {
                bootstrap: addresses[0].clone(),
                connect_timeout: Duration::from_secs(5),
                request_timeout: args.request_timeout(),
                topic_prefix: format!("replication-{}-rf{replication_factor}", load.name()),
                keep_topics: false,
                quiet: args.quiet,
                broker_pid: None,
                label: label.clone(),
            };
            if !args.quiet {
                eprintln!("{label}: {}", workload.describe());
            }
            let cpu_before = broker_cpu(cluster);
            let started = Instant::now();
            let result = run::run(&workload, &options, interrupted)
                .with_context(|| format!("{label} could not run"))?;
            let wall = started.elapsed();
            let broker_cpu_secs = broker_cpu(cluster)
                .into_iter()
                .zip(cpu_before)
                .map(|(after, before)| Some(after? - before?))
                .collect();
            let run = LoadRun {
                load,
                replication_factor,
                round,
                outcome: result,
                broker_cpu_secs,
                wall,
            };
            if !args.quiet {
                let publish = stats::Percentiles::of(&run.outcome.publish);
                eprintln!(
                    "{label}: {:.1} MB/s, publish p50 {} p99 {} p99.9 {}",
                    run.mb_per_sec(),
                    measure::milliseconds(publish.value_us("p50").unwrap_or(0)),
                    measure::milliseconds(publish.value_us("p99").unwrap_or(0)),
                    measure::milliseconds(publish.value_us("p99.9").unwrap_or(0)),
                );
            }
            let stop = run.outcome.interrupted || run.outcome.failure.is_some();
            outcome.loads.push(run);
            if stop {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Wait up to [`DISK_WAIT`] until the data disk has room for a load run.
fn wait_for_disk(
    args: &ReplicationArgs,
    cluster: &Cluster,
    label: &str,
    interrupted: &AtomicBool,
) -> anyhow::Result<()> {
    let needed = args.disk_bytes_needed() + DISK_MARGIN_BYTES;
    let deadline = Instant::now() + DISK_WAIT;
    let mut said = false;
    loop {
        stop_if_interrupted(interrupted)?;
        let Some(available) = available_bytes(cluster.root()) else {
            return Ok(());
        };
        if available >= needed {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{label}: {} has {:.2} GB free, a run may need {:.2} GB (lower --retention-bytes \
                 or --segment-bytes)",
                cluster.root().display(),
                available as f64 / 1e9,
                needed as f64 / 1e9
            );
        }
        if !said {
            eprintln!(
                "{label}: waiting for {:.2} GB of free disk ({:.2} GB now)",
                needed as f64 / 1e9,
                available as f64 / 1e9
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The median of `values`: the middle one, or the mean of the two middle
/// ones (with two rounds, the median is their mean, not the smaller).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        count if count % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// Bytes an unprivileged process may still write on `path`'s file system.
fn available_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` points to
    // writable memory of the right type; statvfs only writes to it.
    let result = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// User + system CPU seconds of every running broker.
fn broker_cpu(cluster: &Cluster) -> Vec<Option<f64>> {
    (0..cluster.brokers.len())
        .map(|index| cluster.pid(index).and_then(run::process_cpu_secs))
        .collect()
}

/// A partition as Metadata describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PartitionView {
    /// node id -> "host:port" of every listed broker.
    brokers: BTreeMap<i32, String>,
    error_code: i16,
    leader: i32,
    isr: Vec<i32>,
    controller_id: i32,
}

impl PartitionView {
    /// The leader's address, when it is listed and is not `dead`.
    fn live_leader(&self, dead: Option<i32>) -> Option<&String> {
        if self.error_code != 0 || Some(self.leader) == dead {
            return None;
        }
        self.brokers.get(&self.leader)
    }

    /// Every replica is in sync.
    fn isr_full(&self) -> bool {
        self.error_code == 0 && self.isr.len() == REPLICATION_FACTOR as usize
    }
}

/// Metadata of partition 0 of `topic`, asked of `address`.
async fn partition_view(
    address: &str,
    topic: &str,
    versions: Versions,
    timeout: Duration,
) -> anyhow::Result<PartitionView> {
    let mut link = Link::connect(address, timeout).await?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_owned())),
        ))]))
        .with_allow_auto_topic_creation(false);
    let response = link.call(&request, versions.metadata, timeout).await?;
    let listed = response
        .topics
        .iter()
        .find(|listed| listed.name.as_ref().map(|name| name.0.as_str()) == Some(topic))
        .ok_or_else(|| anyhow!("{address} does not list {topic}"))?;
    if listed.error_code != 0 {
        bail!(
            "{address} lists {topic} with {}",
            kafka::error_name(listed.error_code)
        );
    }
    let partition = listed
        .partitions
        .iter()
        .find(|partition| partition.partition_index == 0)
        .ok_or_else(|| anyhow!("{address} lists no partition 0 of {topic}"))?;
    Ok(PartitionView {
        brokers: response
            .brokers
            .iter()
            .map(|broker| {
                (
                    broker.node_id.0,
                    format!("{}:{}", broker.host.as_str(), broker.port),
                )
            })
            .collect(),
        error_code: partition.error_code,
        leader: partition.leader_id.0,
        isr: partition.isr_nodes.iter().map(|node| node.0).collect(),
        controller_id: response.controller_id.0,
    })
}

/// One acks=all write of one record to partition 0 of `topic` at
/// `leader`, on a fresh connection: Ok(Ok(())) when acknowledged,
/// Ok(Err(code)) when refused.
async fn write_once(
    leader: &str,
    topic: &str,
    record_size: usize,
    versions: Versions,
    timeout: Duration,
) -> anyhow::Result<Result<(), i16>> {
    let mut link = Link::connect(leader, timeout).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut batch = BatchWriter::new(record_size + 128);
    batch.push(
        None,
        u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
        record_size,
        FILLER,
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX),
    );
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch.finish())),
                ]),
        ]);
    let response = link.call(&request, versions.produce, timeout).await?;
    let code = response
        .responses
        .iter()
        .flat_map(|topic| topic.partition_responses.iter())
        .find(|partition| partition.index == 0)
        .map(|partition| partition.error_code)
        .ok_or_else(|| anyhow!("{leader} answered a Produce without partition 0"))?;
    Ok(if code == 0 { Ok(()) } else { Err(code) })
}

/// Phase 3.
async fn measure_failovers(
    args: &ReplicationArgs,
    cluster: &mut Cluster,
    addresses: &[String],
    versions: Versions,
    interrupted: &AtomicBool,
    outcome: &mut FailoverOutcome,
) -> anyhow::Result<()> {
    let timeout = args.request_timeout();
    let topic = format!("replication-failover-{}", std::process::id());
    let mut admin = Client::connect(&addresses[0], timeout).await?;
    admin.set_timeout(timeout);
    admin
        .create_topic(
            &topic,
            1,
            REPLICATION_FACTOR,
            &[(
                "min.insync.replicas".into(),
                args.min_insync_replicas.to_string(),
            )],
        )
        .await
        .with_context(|| format!("creating {topic}"))?;
    drop(admin);
    wait_for_full_isr(cluster, addresses, &topic, versions, interrupted).await?;
    for round in 1..=args.failovers {
        stop_if_interrupted(interrupted)?;
        cluster.check_alive()?;
        let failover = failover_round(args, cluster, addresses, &topic, versions, interrupted)
            .await
            .with_context(|| format!("failover round {round}"))?;
        outcome.acknowledged_writes += u64::from(failover.steady_acknowledged) + 1;
        if !args.quiet {
            eprintln!(
                "failover {round}: killed leader {}{}, next acknowledged write (by {}) after \
                 {:.3} ms ({} attempts); full ISR again {:.3} s after the restart",
                failover.killed_node,
                if failover.killed_controller {
                    " (the active controller)"
                } else {
                    ""
                },
                failover.new_leader,
                failover.kill_to_ack.as_secs_f64() * 1000.0,
                failover.attempts,
                failover.rejoin.as_secs_f64()
            );
        }
        outcome.rounds.push(failover);
    }
    // Every acknowledged write must be in the log.
    let deadline = Instant::now() + timeout;
    loop {
        stop_if_interrupted(interrupted)?;
        let view = partition_view(&addresses[0], &topic, versions, timeout).await?;
        let answer = match view.live_leader(None) {
            Some(leader) => async {
                let mut client = Client::connect(leader, timeout).await?;
                client.list_offsets(&topic, &[0], -1).await
            }
            .await
            .ok()
            .and_then(|offsets| offsets.get(&0).copied()),
            None => None,
        };
        if let Some(end) = answer {
            outcome.log_end = Some(end);
            break;
        }
        if Instant::now() > deadline {
            bail!("no log end of {topic}-0 within {timeout:?} after the last failover");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Wait until every broker is listed and `topic`-0's ISR holds all three.
async fn wait_for_full_isr(
    cluster: &mut Cluster,
    addresses: &[String],
    topic: &str,
    versions: Versions,
    interrupted: &AtomicBool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + REJOIN_TIMEOUT;
    let probe_timeout = Duration::from_millis(1000);
    let mut last = None;
    loop {
        stop_if_interrupted(interrupted)?;
        cluster.check_alive()?;
        let mut full = true;
        for address in addresses {
            match partition_view(address, topic, versions, probe_timeout).await {
                Ok(view) if view.isr_full() && view.brokers.len() == addresses.len() => {}
                Ok(view) => {
                    full = false;
                    last = Some(format!("{address}: {view:?}"));
                }
                Err(error) => {
                    full = false;
                    last = Some(format!("{address}: {error:#}"));
                }
            }
        }
        if full {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{topic}-0 did not get back a full ISR within {REJOIN_TIMEOUT:?} (last: {})",
                last.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn failover_round(
    args: &ReplicationArgs,
    cluster: &mut Cluster,
    addresses: &[String],
    topic: &str,
    versions: Versions,
    interrupted: &AtomicBool,
) -> anyhow::Result<Failover> {
    let timeout = args.request_timeout();
    let write_timeout = timeout.min(WRITE_TIMEOUT_MAX);
    let interval = Duration::from_millis(args.failover_write_interval_ms);
    let view = partition_view(&addresses[0], topic, versions, timeout).await?;
    let leader = view.leader;
    let index = usize::try_from(leader - 1)
        .ok()
        .filter(|index| *index < cluster.brokers.len())
        .ok_or_else(|| anyhow!("{topic}-0 has leader {leader}, not a broker here"))?;
    let survivors: Vec<&String> = addresses
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .map(|(_, address)| address)
        .collect();

    // One write: find the leader (not `dead`) through `via`, write to it.
    let attempt = |via: String, dead: Option<i32>| async move {
        let view = partition_view(&via, topic, versions, write_timeout).await?;
        let Some(leader) = view.live_leader(dead) else {
            bail!("no live leader listed (leader {})", view.leader);
        };
        let leader = leader.clone();
        let answer = write_once(&leader, topic, args.record_size, versions, write_timeout).await?;
        Ok::<_, anyhow::Error>((answer, view.leader, Instant::now()))
    };

    // Steady writing before the kill; every write must be acknowledged.
    let steady_until = Instant::now() + Duration::from_millis(args.failover_steady_ms);
    let mut steady_acknowledged = 0_u32;
    let mut in_flight = FuturesUnordered::new();
    let mut next_write = Instant::now();
    while Instant::now() < steady_until || !in_flight.is_empty() {
        stop_if_interrupted(interrupted)?;
        if Instant::now() >= next_write && Instant::now() < steady_until {
            let via = addresses[steady_acknowledged as usize % addresses.len()].clone();
            in_flight.push(attempt(via, None));
            next_write += interval;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_write.into()) => {}
            Some(result) = in_flight.next() => match result {
                Ok((Ok(()), _, _)) => steady_acknowledged += 1,
                Ok((Err(code), _, _)) => {
                    bail!("a write before the kill was refused: {}", kafka::error_name(code))
                }
                Err(error) => return Err(error.context("a write before the kill failed")),
            },
        }
    }
    drop(in_flight);

    cluster.kill(index)?;
    let killed = Instant::now();
    let deadline = killed + timeout;
    let mut attempts = 0_u32;
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    let mut in_flight = FuturesUnordered::new();
    let mut next_write = killed;
    let (kill_to_ack, new_leader) = loop {
        stop_if_interrupted(interrupted)?;
        if Instant::now() > deadline {
            bail!(
                "no write was acknowledged within {timeout:?} of killing leader {leader} \
                 (errors: {errors:?})"
            );
        }
        if Instant::now() >= next_write {
            let via = survivors[attempts as usize % survivors.len()].clone();
            in_flight.push(attempt(via, Some(leader)));
            attempts += 1;
            next_write += interval;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_write.into()) => {}
            Some(result) = in_flight.next() => match result {
                Ok((Ok(()), new_leader, acknowledged)) => {
                    break (acknowledged - killed, new_leader);
                }
                Ok((Err(code), _, _)) => {
                    *errors.entry(kafka::error_name(code)).or_default() += 1;
                }
                Err(error) => *errors.entry(error_kind(&error)).or_default() += 1,
            },
        }
    };
    drop(in_flight);

    let restarted = Instant::now();
    cluster.spawn(index)?;
    wait_for_full_isr(cluster, addresses, topic, versions, interrupted).await?;
    Ok(Failover {
        killed_node: leader,
        killed_controller: view.controller_id == leader,
        new_leader,
        kill_to_ack,
        steady_acknowledged,
        attempts,
        errors,
        rejoin: restarted.elapsed(),
    })
}

/// An error's text without the addresses and numbers that make every one
/// of them distinct (so failed writes group by kind).
fn error_kind(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    text.split(|character: char| character.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("N")
}

fn milliseconds(value: Option<f64>) -> String {
    figure(value, 3)
}

/// `value` with `decimals` decimals, or "-".
fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.decimals$}"))
}

fn render(args: &ReplicationArgs, outcome: &Outcome) -> String {
    let mut out = format!(
        "replication: {BROKERS} brokers ({} shard(s) each), {} partitions, {} B records, \
         acks=all, RF {REPLICATION_FACTOR} (min.insync.replicas {}) vs RF 1\n",
        args.broker_cores, args.partitions, args.record_size, args.min_insync_replicas
    );
    let rounds: Vec<u32> = (1..=args.rounds).collect();
    if outcome.loads.iter().any(|run| run.load == Load::Ingest) {
        out.push_str(&format!("{:<22}", "ingest MB/s (max)"));
        for round in &rounds {
            out.push_str(&format!(" {:>9}", format!("round {round}")));
        }
        out.push_str(&format!(" {:>9}\n", "median"));
        for replication_factor in [REPLICATION_FACTOR, 1] {
            out.push_str(&format!("{:<22}", format!("  RF {replication_factor}")));
            for round in &rounds {
                let value = outcome
                    .runs(Load::Ingest, replication_factor)
                    .find(|run| run.round == *round)
                    .map(LoadRun::mb_per_sec);
                out.push_str(&format!(
                    " {:>9}",
                    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.1}"))
                ));
            }
            out.push_str(&format!(
                " {:>9.1}\n",
                outcome
                    .median_mb_per_sec(Load::Ingest, replication_factor)
                    .unwrap_or(0.0)
            ));
        }
        out.push_str(&format!("{:<22}", "  RF3/RF1"));
        let ratios = outcome.round_ratios();
        for round in &rounds {
            let ratio = ratios
                .iter()
                .find(|(ratio_round, _)| ratio_round == round)
                .map(|(_, ratio)| *ratio);
            out.push_str(&format!(
                " {:>9}",
                ratio.map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.3}"))
            ));
        }
        out.push_str(&format!(
            " {:>9} (target >= {RATIO_TARGET_MIN})\n",
            outcome
                .ingest_ratio()
                .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.3}"))
        ));
    }
    if outcome.loads.iter().any(|run| run.load == Load::Latency) {
        out.push_str(&format!(
            "publish latency at {} (from the due time), all rounds; achieved MB/s: RF 3 {}, \
             RF 1 {} (target p99 <= {} ms at RF 3)\n",
            args.latency_rate.describe(),
            figure(
                outcome.median_mb_per_sec(Load::Latency, REPLICATION_FACTOR),
                1
            ),
            figure(outcome.median_mb_per_sec(Load::Latency, 1), 1),
            LATENCY_P99_TARGET_US / 1000
        ));
        let replicated = outcome.latency(REPLICATION_FACTOR);
        let single = outcome.latency(1);
        out.push_str(&report::table(&[("RF 3", &replicated), ("RF 1", &single)]));
    }
    if !outcome.loads.is_empty() {
        out.push_str("broker CPU % over each run (setup included), bench CPU % of a core:\n");
        for run in &outcome.loads {
            let brokers = run
                .broker_cpu_percent()
                .iter()
                .map(|percent| percent.map_or_else(|| "-".to_owned(), |p| format!("{p:.0}")))
                .collect::<Vec<_>>()
                .join("/");
            out.push_str(&format!(
                "  {:<18} brokers {brokers:<14} bench {:.0}\n",
                run.label(),
                run.outcome.bench_cpu.process_percent()
            ));
        }
    }
    if !outcome.failover.rounds.is_empty() {
        out.push_str(&format!(
            "failover (session timeout {} ms, heartbeat {} ms, a write every {} ms): kill -9 of \
             the leader -> next acknowledged acks=all write\n",
            args.broker_session_timeout_ms,
            args.broker_heartbeat_interval_ms,
            args.failover_write_interval_ms
        ));
        for (round, failover) in outcome.failover.rounds.iter().enumerate() {
            out.push_str(&format!(
                "  round {}: killed {}{}, new leader {}, {:.3} ms ({} attempts{}), full ISR {:.3} \
                 s after the restart\n",
                round + 1,
                failover.killed_node,
                if failover.killed_controller {
                    " (the active controller)"
                } else {
                    ""
                },
                failover.new_leader,
                failover.kill_to_ack.as_secs_f64() * 1000.0,
                failover.attempts,
                if failover.errors.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; failed: {}",
                        failover
                            .errors
                            .iter()
                            .map(|(error, count)| format!("{count} x {error}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                failover.rejoin.as_secs_f64()
            ));
        }
        out.push_str(&format!(
            "  median {} ms, max {} ms (target <= {} ms); acknowledged writes {}, log end {}\n",
            milliseconds(median(&outcome.failover.kill_to_ack_ms())),
            milliseconds(outcome.failover.max_ms()),
            args.failover_target_ms(),
            outcome.failover.acknowledged_writes,
            outcome
                .failover
                .log_end
                .map_or_else(|| "-".to_owned(), |end| end.to_string())
        ));
    }
    for failure in outcome.failures() {
        out.push_str(&format!("FAILED: {failure}\n"));
    }
    out
}

fn summary_json(args: &ReplicationArgs, outcome: &Outcome, started_at: SystemTime) -> Value {
    let round2 = |value: Option<f64>| value.map(|value| measure::round(value, 2));
    let round3 = |value: Option<f64>| value.map(|value| measure::round(value, 3));
    let latency = |replication_factor| {
        json!({
            "median_mb_per_sec": round2(outcome.median_mb_per_sec(Load::Latency, replication_factor)),
            "publish_latency": stats::Percentiles::of(&outcome.latency(replication_factor)).to_json(),
        })
    };
    let failover = &outcome.failover;
    let mut summary = json!({
        "mode": "replication",
        "brokers": BROKERS,
        "broker_cores": args.broker_cores,
        "partitions": args.partitions,
        "record_size_bytes": args.record_size,
        "producers": args.producers,
        "acks": "all",
        "replication_factor": REPLICATION_FACTOR,
        "min_insync_replicas": args.min_insync_replicas,
        "rounds": args.rounds,
        "warmup_secs": args.warmup,
        "duration_secs": args.duration,
        "broker_session_timeout_ms": args.broker_session_timeout_ms,
        "broker_heartbeat_interval_ms": args.broker_heartbeat_interval_ms,
        "replica_lag_time_max_ms": args.replica_lag_time_max_ms,
        "segment_bytes": args.segment_bytes,
        "retention_bytes": args.retention_bytes,
        "log_cleaner_interval_ms": args.log_cleaner_interval_ms,
        "ingest": {
            "median_mb_per_sec": {
                "rf3": round2(outcome.median_mb_per_sec(Load::Ingest, REPLICATION_FACTOR)),
                "rf1": round2(outcome.median_mb_per_sec(Load::Ingest, 1)),
            },
            "ratio_rf3_over_rf1": round3(outcome.ingest_ratio()),
            "round_ratios": outcome.round_ratios().iter()
                .map(|(round, ratio)| json!({"round": round, "ratio": measure::round(*ratio, 3)}))
                .collect::<Vec<_>>(),
            "ratio_target_min": RATIO_TARGET_MIN,
        },
        "latency": {
            "rate": args.latency_rate.describe(),
            "rf3": latency(REPLICATION_FACTOR),
            "rf1": latency(1),
            "p99_target_us": LATENCY_P99_TARGET_US,
        },
        "runs": outcome.loads.iter().map(LoadRun::to_json).collect::<Vec<_>>(),
        "failover": {
            "write_interval_ms": args.failover_write_interval_ms,
            "rounds": failover.rounds.iter().map(|round| json!({
                "killed_node": round.killed_node,
                "killed_controller": round.killed_controller,
                "new_leader": round.new_leader,
                "kill_to_ack_ms": measure::round(round.kill_to_ack.as_secs_f64() * 1000.0, 3),
                "steady_acknowledged": round.steady_acknowledged,
                "attempts": round.attempts,
                "errors": round.errors,
                "rejoin_secs": measure::round(round.rejoin.as_secs_f64(), 3),
            })).collect::<Vec<_>>(),
            "median_ms": round3(median(&failover.kill_to_ack_ms())),
            "max_ms": round3(failover.max_ms()),
            "target_ms": args.failover_target_ms(),
            "acknowledged_writes": failover.acknowledged_writes,
            "log_end": failover.log_end,
        },
        "failures": outcome.failures(),
    });
    if let (Value::Object(summary), Value::Object(provenance)) =
        (&mut summary, provenance::to_json(started_at))
    {
        summary.extend(provenance);
    }
    summary
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ReplicationArgs,
    }

    fn parse(flags: &[&str]) -> ReplicationArgs {
        let mut argv = vec!["replication"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    #[test]
    fn the_defaults_are_the_replication_benchmark() {
        let args = parse(&[]);
        args.check().expect("defaults are valid");
        assert_eq!((args.partitions, args.record_size), (16, 1024));
        assert_eq!(args.latency_rate, Rate::MegabytesPerSec(50.0));
        assert_eq!(args.failovers, 5);
        assert!(args.broker_session_timeout_ms <= 2000);
        assert_eq!(
            args.failover_target_ms(),
            args.broker_session_timeout_ms + 1000
        );
        let replicated = args.workload(3, Rate::Max).expect("valid");
        assert_eq!((replicated.acks, replicated.consumers_per_topic), (-1, 0));
        assert_eq!(
            replicated.topic_configs[0],
            ("min.insync.replicas".to_owned(), "2".to_owned())
        );
        assert!(
            replicated
                .topic_configs
                .contains(&("retention.bytes".to_owned(), (16 << 20).to_string()))
        );
        assert!(args.disk_bytes_needed() < 2 << 30, "fits a small disk");
        let single = args.workload(1, Rate::Max).expect("valid");
        assert_eq!(
            single.topic_configs[0],
            ("min.insync.replicas".to_owned(), "1".to_owned())
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        for flags in [
            &["--rounds", "0", "--failovers", "0"][..],
            &["--min-insync-replicas", "0"],
            &["--min-insync-replicas", "4"],
            &["--failover-write-interval-ms", "0"],
            &["--broker-session-timeout-ms", "0"],
            &[
                "--broker-heartbeat-interval-ms",
                "2000",
                "--broker-session-timeout-ms",
                "1500",
            ],
            &["--replica-lag-time-max-ms", "0"],
            &["--segment-bytes", "1000"],
            &["--retention-bytes", "1048576", "--segment-bytes", "2097152"],
            &["--log-cleaner-interval-ms", "0"],
            &["--broker-cores", "0"],
            &["--request-timeout-ms", "0"],
            &["--partitions", "0"],
            &["--record-size", "4"],
            &["--duration", "0"],
        ] {
            assert!(parse(flags).check().is_err(), "{flags:?} accepted");
        }
        parse(&["--rounds", "0"])
            .check()
            .expect("failover alone is valid");
        parse(&["--failovers", "0"])
            .check()
            .expect("loads alone are valid");
    }

    #[test]
    fn the_broker_flags_carry_the_timeouts() {
        let flags = parse(&["--broker-session-timeout-ms", "1000"]).broker_flags();
        let position = flags
            .iter()
            .position(|flag| flag == "--broker-session-timeout-ms")
            .expect("present");
        assert_eq!(flags[position + 1], "1000");
        assert!(flags.contains(&"--broker-heartbeat-interval-ms".to_owned()));
        assert!(flags.contains(&"--replica-lag-time-max-ms".to_owned()));
    }

    #[test]
    fn a_partition_view_names_a_live_leader_only() {
        let view = PartitionView {
            brokers: [(1, "a".to_owned()), (2, "b".to_owned())].into(),
            error_code: 0,
            leader: 2,
            isr: vec![1, 2],
            controller_id: 1,
        };
        assert_eq!(view.live_leader(None).map(String::as_str), Some("b"));
        assert_eq!(view.live_leader(Some(2)), None, "the killed leader");
        assert!(!view.isr_full());
        let unlisted = PartitionView {
            leader: 3,
            ..view.clone()
        };
        assert_eq!(unlisted.live_leader(None), None);
        let full = PartitionView {
            isr: vec![1, 2, 3],
            ..view
        };
        assert!(full.isr_full());
    }

    #[test]
    fn error_kinds_group_errors_that_differ_in_numbers() {
        let first = anyhow!("cannot connect to broker 127.0.0.1:40123: refused");
        let second = anyhow!("cannot connect to broker 127.0.0.1:40999: refused");
        assert_eq!(error_kind(&first), error_kind(&second));
    }

    #[test]
    fn failover_figures_and_lost_writes() {
        let round = |ms: u64| Failover {
            killed_node: 1,
            killed_controller: false,
            new_leader: 2,
            kill_to_ack: Duration::from_millis(ms),
            steady_acknowledged: 10,
            attempts: 3,
            errors: BTreeMap::new(),
            rejoin: Duration::from_secs(1),
        };
        let mut outcome = FailoverOutcome {
            rounds: vec![round(1800), round(1600), round(2100)],
            acknowledged_writes: 33,
            log_end: Some(40),
        };
        assert_eq!(median(&outcome.kill_to_ack_ms()), Some(1800.0));
        assert_eq!(outcome.max_ms(), Some(2100.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[175.5, 184.3]), Some(179.9));
        assert_eq!(
            outcome.lost_writes(),
            None,
            "more in the log than acknowledged is fine"
        );
        outcome.log_end = Some(30);
        assert_eq!(outcome.lost_writes(), Some(3));
    }

    #[test]
    fn the_summary_has_every_section_even_when_nothing_ran() {
        let args = parse(&["--rounds", "0"]);
        let outcome = Outcome {
            loads: Vec::new(),
            failover: FailoverOutcome::default(),
            stopped: Some("failover: interrupted".to_owned()),
        };
        let summary = summary_json(&args, &outcome, SystemTime::now());
        assert_eq!(summary["mode"], "replication");
        assert!(summary["ingest"]["ratio_rf3_over_rf1"].is_null());
        assert_eq!(summary["latency"]["rf3"]["publish_latency"]["count"], 0);
        assert_eq!(summary["failover"]["target_ms"], 2500);
        assert_eq!(summary["failures"][0], "failover: interrupted");
        assert!(render(&args, &outcome).contains("FAILED: failover: interrupted"));
    }
}
