//! `sluice-bench engine`: the storage engine under producer-like load, judged
//! against the raw disk it runs on.
//!
//! One compio runtime thread (one shard) runs one [`Committer`] and one load
//! task per partition. Each task appends the same prebuilt record batches
//! (uncompressed v2) to its own [`Log`], keeping at most
//! `--inflight-per-partition` appends unacknowledged; in fixed-rate runs a
//! per-partition token bucket paces the appends. An append is acknowledged
//! when its completion resolves, i.e. after the fdatasync covering it.
//!
//! Sequence of a default run: raw-disk baselines (see [`crate::baseline`]),
//! a max-rate run, then a run at `--load-fraction` of the measured max rate.
//! Each run warms up, then measures for `--duration-secs`: acknowledged
//! bytes and batches, committer counters (rounds, fdatasyncs), group-commit
//! latency (append call to completion, HDR histogram), CPU time.
//!
//! Targets (from the storage-engine issue) are printed as PASS or MISS; a
//! miss never fails the process: benchmarks report, tests assert.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use compio::runtime::{JoinHandle, ResumeUnwind};
use futures_util::future::{Either, join_all, select};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sluice_engine::batch::simple_batch;
use sluice_engine::constants::MAX_MESSAGE_BYTES_DEFAULT;
use sluice_engine::io::uring::UringIo;
use sluice_engine::{
    AppendCompletion, AppendError, CommitStats, Committer, LeaderEpoch, Log, LogConfig, SyncMode,
    TimestampMs,
};

use crate::baseline::{self, BandwidthConfig, DataDir, RawDisk};
use crate::measure::{self, CpuTime, CpuUsage, DiskCounters, LatencySummary, Machine, round};

/// Options of `sluice-bench engine`.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Data directory on the disk under test (not tmpfs: segments use
    /// O_DIRECT). The benchmark works in a fresh subdirectory of it.
    #[arg(long, default_value = "./bench-data")]
    pub dir: PathBuf,

    /// Partitions (logs), each driven by its own task on the one shard.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub partitions: u32,

    /// Target record-batch size: as many --record-bytes records as fit.
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(128..=1_048_576))]
    pub batch_bytes: u32,

    /// Value size of each record in a batch.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub record_bytes: u32,

    /// Measured time of each engine run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration_secs: u64,

    /// Unmeasured load before each engine run's measurement.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub warmup_secs: u64,

    /// Appends a partition may have unacknowledged at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub inflight_per_partition: u32,

    /// Run only at this fixed total rate (decimal MB/s, all partitions
    /// together) instead of measuring the max rate first.
    #[arg(long, value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate_mb_per_sec: Option<f64>,

    /// Fraction of the measured max rate for the fixed-rate run.
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction, allow_negative_numbers = true)]
    pub load_fraction: f64,

    /// Duration of each raw-disk baseline (write bandwidth, fdatasync latency).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub baseline_secs: u64,

    /// Size of each write of the O_DIRECT bandwidth baseline (multiple of 4096).
    #[arg(long, default_value_t = 1 << 20, value_parser = parse_write_size)]
    pub baseline_write_bytes: u32,

    /// Also write a JSON summary to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Keep the benchmark's files instead of removing them at the end.
    #[arg(long)]
    pub keep: bool,

    /// How flushes make writes durable: `file` (an fdatasync per written
    /// file), `filesystem` (one syncfs per round for all partitions) or
    /// `write-through` (each write durable by itself, RWF_DSYNC).
    #[arg(long, value_enum, default_value_t = SyncArg::File)]
    pub sync: SyncArg,
}

/// `--sync` of the engine benchmark and the broker.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncArg {
    File,
    Filesystem,
    WriteThrough,
}

impl From<SyncArg> for SyncMode {
    fn from(arg: SyncArg) -> SyncMode {
        match arg {
            SyncArg::File => SyncMode::PerFile,
            SyncArg::Filesystem => SyncMode::Filesystem,
            SyncArg::WriteThrough => SyncMode::WriteThrough,
        }
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|error| format!("{error}"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("{value} is not a positive rate"));
    }
    Ok(value)
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|error| format!("{error}"))?;
    if !(value > 0.0 && value <= 1.0) {
        return Err(format!("{value} is not in (0, 1]"));
    }
    Ok(value)
}

fn parse_write_size(text: &str) -> Result<u32, String> {
    let value: u32 = text.parse().map_err(|error| format!("{error}"))?;
    if value == 0 || !value.is_multiple_of(4096) || value > 64 << 20 {
        return Err(format!(
            "{value} is not a multiple of 4096 between 4096 and 64 MiB"
        ));
    }
    Ok(value)
}

/// Distinct batches appended in turn (they differ in timestamp and CRC).
const BATCH_VARIANTS_COUNT: usize = 4;

/// How long the load tasks may take to see their last appends acknowledged
/// after the load stops before the run is declared stuck.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Throughput target: engine MB/s at max rate over raw O_DIRECT MB/s.
const THROUGHPUT_RATIO_MIN: f64 = 0.80;

/// Latency target: group-commit p99 at the reduced load over raw fdatasync p99.
const LATENCY_RATIO_MAX: f64 = 3.0;

/// Run the whole benchmark and print its report; `Err` only when it could
/// not run (bad directory, I/O error, engine error), never for a missed target.
pub fn run(args: &EngineArgs) -> anyhow::Result<()> {
    let batches = BatchSet::build(args.batch_bytes as usize, args.record_bytes as usize)?;
    if let Some(path) = &args.json {
        // Fail before a long run, not after it.
        std::fs::File::create(path)
            .with_context(|| format!("cannot write the JSON summary to {}", path.display()))?;
    }
    let runtime = compio::runtime::Runtime::new()
        .context("cannot start the compio runtime (io_uring unavailable?)")?;
    let data_dir = baseline::prepare_data_dir(&args.dir, "--dir")?;
    let data_dir_shown = std::fs::canonicalize(&data_dir.path).unwrap_or_else(|_| args.dir.clone());
    let machine = Machine::describe(&data_dir.path);
    let run_dir = data_dir
        .path
        .join(format!("sluice-bench-{}", std::process::id()));
    std::fs::create_dir(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let device = machine.filesystem.as_ref().and_then(measure::device_name);
    let outcome = runtime.block_on(run_on_shard(args, &batches, &run_dir, device.as_deref()));
    drop(runtime);

    let cleanup = if args.keep {
        eprintln!("keeping the benchmark files in {}", run_dir.display());
        Ok(())
    } else {
        clean_up(&data_dir, &run_dir)
    };
    let measurements = outcome?;
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        data_dir: data_dir_shown,
        args: args.clone(),
        batches,
        measurements,
    };
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json())
            .context("cannot encode the JSON summary")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the JSON summary to {}", path.display()))?;
    }
    cleanup
}

fn clean_up(data_dir: &DataDir, run_dir: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(run_dir)
        .with_context(|| format!("cannot remove {}", run_dir.display()))?;
    if data_dir.created {
        // Only if empty: someone else may have put files there meanwhile.
        let _ = std::fs::remove_dir(&data_dir.path);
    }
    Ok(())
}

/// What the shard thread measured.
struct Measurements {
    /// Raw-disk baselines before and after the engine runs: the device of a
    /// shared VM drifts, and the two show by how much.
    raw_before: RawDisk,
    raw_after: RawDisk,
    runs: Vec<EngineRun>,
}

impl Measurements {
    /// Raw bandwidth over both baselines together (total bytes over total
    /// time): the reference for the throughput target.
    fn raw_mb_per_sec(&self) -> f64 {
        let before = &self.raw_before.bandwidth;
        let after = &self.raw_after.bandwidth;
        measure::mb_per_sec(
            before.bytes + after.bytes,
            before.elapsed() + after.elapsed(),
        )
    }

    /// fdatasync p99 over the samples of both baselines together: the
    /// reference for the latency target.
    fn raw_sync_p99_us(&self) -> u64 {
        let mut merged = self.raw_before.sync_latency.sync.clone();
        merged
            .add(&self.raw_after.sync_latency.sync)
            .expect("latency histograms share their bounds");
        merged.value_at_quantile(0.99)
    }
}

/// Baselines, engine runs, baselines again, on the shard thread.
async fn run_on_shard(
    args: &EngineArgs,
    batches: &BatchSet,
    run_dir: &Path,
    device: Option<&str>,
) -> anyhow::Result<Measurements> {
    if !UringIo::driver_is_io_uring() {
        bail!("the compio runtime is not driven by io_uring");
    }
    let partitions = args.partitions as usize;
    let in_flight_per_partition = args.inflight_per_partition as usize;
    // The raw writes get as many bytes in flight as the engine's appends can
    // have in total.
    let engine_in_flight_bytes = partitions * in_flight_per_partition * batches.batch_size_bytes;
    let write_size_bytes = args.baseline_write_bytes as usize;
    let bandwidth_config = BandwidthConfig {
        write_size_bytes,
        writes_in_flight: engine_in_flight_bytes.div_ceil(write_size_bytes).max(1),
        duration: Duration::from_secs(args.baseline_secs),
    };
    let raw_before =
        baseline::measure_raw_disk(run_dir, "before", bandwidth_config, device, args.keep).await?;

    let settings = RunSettings {
        device,
        partitions,
        in_flight_per_partition,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        sync_mode: args.sync.into(),
    };
    let mut runs = Vec::new();
    let first_load = match args.rate_mb_per_sec {
        Some(rate) => Load::Fixed {
            bytes_per_sec: rate * 1e6,
            label: format!("{rate} MB/s"),
        },
        None => Load::Max,
    };
    let dir = run_dir.join("engine-0");
    runs.push(run_engine(&settings, first_load, batches, &dir).await?);
    remove_dir_unless_kept(args, &dir)?;
    if args.rate_mb_per_sec.is_none() {
        let max_mb_per_sec = runs[0].mb_per_sec();
        let load = Load::Fixed {
            bytes_per_sec: max_mb_per_sec * args.load_fraction * 1e6,
            label: format!("{:.0}% of max", args.load_fraction * 100.0),
        };
        let dir = run_dir.join("engine-1");
        runs.push(run_engine(&settings, load, batches, &dir).await?);
        remove_dir_unless_kept(args, &dir)?;
    }

    let raw_after =
        baseline::measure_raw_disk(run_dir, "after", bandwidth_config, device, args.keep).await?;
    Ok(Measurements {
        raw_before,
        raw_after,
        runs,
    })
}

fn remove_dir_unless_kept(args: &EngineArgs, path: &Path) -> anyhow::Result<()> {
    if args.keep {
        return Ok(());
    }
    std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// The prebuilt batches every partition appends in turn.
#[derive(Clone, Debug)]
struct BatchSet {
    batches: Rc<[Bytes]>,
    records_per_batch: usize,
    record_bytes: usize,
    batch_size_bytes: usize,
}

impl BatchSet {
    /// As many `record_bytes` records as fit in `batch_bytes` (at least one).
    fn build(batch_bytes: usize, record_bytes: usize) -> anyhow::Result<BatchSet> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        let one = simple_batch(1, record_bytes, TimestampMs(now)).len();
        if one > batch_bytes {
            bail!(
                "--record-bytes {record_bytes} does not fit in --batch-bytes {batch_bytes}: \
                 a batch of one such record is {one} bytes"
            );
        }
        let per_record = simple_batch(2, record_bytes, TimestampMs(now)).len() - one;
        let mut records_per_batch = 1 + (batch_bytes - one) / per_record.max(1);
        // Offset deltas grow their varints past 63 records: step down until
        // the real size fits.
        while records_per_batch > 1
            && simple_batch(records_per_batch, record_bytes, TimestampMs(now)).len() > batch_bytes
        {
            records_per_batch -= 1;
        }
        let batches: Vec<Bytes> = (0..BATCH_VARIANTS_COUNT)
            .map(|variant| {
                simple_batch(
                    records_per_batch,
                    record_bytes,
                    TimestampMs(now + variant as i64),
                )
            })
            .collect();
        let batch_size_bytes = batches[0].len();
        assert!(batches.iter().all(|batch| batch.len() == batch_size_bytes));
        if batch_size_bytes > MAX_MESSAGE_BYTES_DEFAULT as usize {
            bail!(
                "batches of {batch_size_bytes} bytes exceed the engine's max.message.bytes \
                 ({MAX_MESSAGE_BYTES_DEFAULT})"
            );
        }
        Ok(BatchSet {
            batches: batches.into(),
            records_per_batch,
            record_bytes,
            batch_size_bytes,
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct RunSettings<'a> {
    /// The data directory's block device in /proc/diskstats, if known.
    device: Option<&'a str>,
    partitions: usize,
    in_flight_per_partition: usize,
    warmup: Duration,
    duration: Duration,
    sync_mode: SyncMode,
}

#[derive(Clone, Debug)]
enum Load {
    /// As fast as the in-flight bound allows.
    Max,
    /// Paced to a total rate over all partitions.
    Fixed { bytes_per_sec: f64, label: String },
}

impl Load {
    fn label(&self) -> String {
        match self {
            Load::Max => "max rate".to_owned(),
            Load::Fixed { label, .. } => label.clone(),
        }
    }

    fn target_bytes_per_sec(&self) -> Option<f64> {
        match self {
            Load::Max => None,
            Load::Fixed { bytes_per_sec, .. } => Some(*bytes_per_sec),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Warmup,
    Measure,
    Drain,
}

/// What the load tasks share with the controller (one thread: `Rc`/`Cell`).
struct Shared {
    phase: Cell<Phase>,
    failed: Cell<bool>,
    latency: RefCell<Histogram<u64>>,
    acknowledged_batches: Cell<u64>,
    acknowledged_bytes: Cell<u64>,
}

impl Shared {
    /// Account one acknowledgement (only while measuring).
    fn note(&self, acknowledgement: Acknowledgement) -> Result<(), AppendError> {
        acknowledgement.result?;
        if self.phase.get() == Phase::Measure {
            measure::record_latency(
                &mut self.latency.borrow_mut(),
                acknowledgement.acknowledged_at - acknowledgement.appended_at,
            );
            self.acknowledged_batches
                .set(self.acknowledged_batches.get() + 1);
            self.acknowledged_bytes
                .set(self.acknowledged_bytes.get() + acknowledgement.bytes as u64);
        }
        Ok(())
    }
}

/// The result of one engine run.
#[derive(Clone, Debug)]
struct EngineRun {
    label: String,
    target_bytes_per_sec: Option<f64>,
    elapsed: Duration,
    acknowledged_batches: u64,
    acknowledged_bytes: u64,
    commit: CommitStats,
    latency: Histogram<u64>,
    /// Acknowledged MB/s in each second of the measurement.
    per_second_mb_per_sec: Vec<f64>,
    cpu: CpuUsage,
    /// What reached the device during the measurement.
    disk: Option<DiskCounters>,
}

impl EngineRun {
    fn mb_per_sec(&self) -> f64 {
        measure::mb_per_sec(self.acknowledged_bytes, self.elapsed)
    }

    /// Syncs of any kind (fdatasync per file, syncfs per round, durable
    /// write).
    fn syncs(&self) -> u64 {
        self.commit.fsyncs + self.commit.filesystem_syncs + self.commit.durable_writes
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn batches_per_fsync(&self) -> f64 {
        self.acknowledged_batches as f64 / self.syncs().max(1) as f64
    }

    fn batches_per_round(&self) -> f64 {
        self.acknowledged_batches as f64 / self.commit.rounds.max(1) as f64
    }

    /// Bytes written to segment files per acknowledged byte (tail pages are
    /// rewritten in every flush that ends mid-page).
    fn write_amplification(&self) -> f64 {
        self.commit.bytes_written as f64 / self.acknowledged_bytes.max(1) as f64
    }

    /// Page faults per MB acknowledged: first touches of write-buffer memory.
    fn minor_faults_per_mb(&self) -> f64 {
        self.cpu.minor_faults as f64 / (self.acknowledged_bytes as f64 / 1e6).max(f64::MIN_POSITIVE)
    }

    fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "target_mb_per_sec": self.target_bytes_per_sec.map(|rate| round(rate / 1e6, 1)),
            "elapsed_secs": round(self.elapsed.as_secs_f64(), 3),
            "acknowledged_batches": self.acknowledged_batches,
            "acknowledged_bytes": self.acknowledged_bytes,
            "mb_per_sec": round(self.mb_per_sec(), 1),
            "batches_per_sec": round(self.per_second(self.acknowledged_batches), 1),
            "per_second_mb_per_sec": self.per_second_mb_per_sec.iter().map(|rate| round(*rate, 1)).collect::<Vec<_>>(),
            "committer": {
                "rounds": self.commit.rounds,
                "log_flushes": self.commit.log_flushes,
                "fsyncs": self.commit.fsyncs,
                "filesystem_syncs": self.commit.filesystem_syncs,
                "durable_writes": self.commit.durable_writes,
                "bytes_written": self.commit.bytes_written,
                "rounds_per_sec": round(self.per_second(self.commit.rounds), 1),
                "fsyncs_per_sec": round(self.per_second(self.commit.fsyncs), 1),
                "batches_per_fsync": round(self.batches_per_fsync(), 2),
                "batches_per_round": round(self.batches_per_round(), 2),
                "write_amplification": round(self.write_amplification(), 3),
            },
            "group_commit_latency": LatencySummary::of(&self.latency).to_json(),
            "cpu": self.cpu.to_json(),
            "minor_faults_per_mb": round(self.minor_faults_per_mb(), 1),
            "device": self.disk.map(|disk| disk.to_json(self.elapsed)),
        })
    }
}

fn delta(after: CommitStats, before: CommitStats) -> CommitStats {
    CommitStats {
        rounds: after.rounds - before.rounds,
        log_flushes: after.log_flushes - before.log_flushes,
        fsyncs: after.fsyncs - before.fsyncs,
        durable_writes: after.durable_writes - before.durable_writes,
        bytes_written: after.bytes_written - before.bytes_written,
        filesystem_syncs: after.filesystem_syncs - before.filesystem_syncs,
        sync_duration_buckets: std::array::from_fn(|index| {
            after.sync_duration_buckets[index] - before.sync_duration_buckets[index]
        }),
        sync_duration_nanos_sum: after.sync_duration_nanos_sum - before.sync_duration_nanos_sum,
        flush_bytes_buckets: std::array::from_fn(|index| {
            after.flush_bytes_buckets[index] - before.flush_bytes_buckets[index]
        }),
    }
}

/// One engine run: open the logs in `dir`, load them, measure, close them.
async fn run_engine(
    settings: &RunSettings<'_>,
    load: Load,
    batches: &BatchSet,
    dir: &Path,
) -> anyhow::Result<EngineRun> {
    eprintln!(
        "engine: {} ({} partitions x {} in flight), warmup {} s, measure {} s",
        load.label(),
        settings.partitions,
        settings.in_flight_per_partition,
        settings.warmup.as_secs(),
        settings.duration.as_secs()
    );
    let io = UringIo::new();
    let committer = Committer::with_sync_mode(io, settings.sync_mode);
    let mut logs = Vec::with_capacity(settings.partitions);
    for partition in 0..settings.partitions {
        let log_dir = dir.join(format!("bench-{partition}"));
        let log = Log::open(io, &log_dir, LogConfig::default(), &committer)
            .await
            .with_context(|| format!("cannot open the log in {}", log_dir.display()))?;
        logs.push(log);
    }
    let committer_task = compio::runtime::spawn({
        let committer = committer.clone();
        async move { committer.run().await }
    });

    let shared = Rc::new(Shared {
        phase: Cell::new(Phase::Warmup),
        failed: Cell::new(false),
        latency: RefCell::new(measure::latency_histogram()),
        acknowledged_batches: Cell::new(0),
        acknowledged_bytes: Cell::new(0),
    });
    let started = Instant::now();
    let tasks: Vec<JoinHandle<anyhow::Result<()>>> = logs
        .iter()
        .enumerate()
        .map(|(partition, log)| {
            let pacer = load.target_bytes_per_sec().map(|bytes_per_sec| {
                let per_partition = bytes_per_sec / settings.partitions as f64;
                let interval =
                    Duration::from_secs_f64(batches.batch_size_bytes as f64 / per_partition);
                // Stagger the partitions' first sends across one interval.
                let offset = interval.mul_f64(partition as f64 / settings.partitions as f64);
                Pacer::new(started + offset, interval, settings.in_flight_per_partition)
            });
            compio::runtime::spawn(drive_partition(
                log.clone(),
                Rc::clone(&batches.batches),
                partition,
                settings.in_flight_per_partition,
                pacer,
                Rc::clone(&shared),
            ))
        })
        .collect();

    // Warm up, then measure, sampling the acknowledged bytes every second.
    sleep_until_or_failed(started + settings.warmup, &shared).await;
    let stats_before = committer.stats();
    let cpu_before = CpuTime::now();
    let disk_before = settings.device.and_then(DiskCounters::read);
    let measure_started = Instant::now();
    shared.phase.set(Phase::Measure);
    let mut per_second_mb_per_sec = Vec::new();
    let mut sample_due = measure_started;
    let mut sampled_at = measure_started;
    let mut sampled_bytes = 0;
    let measure_end = measure_started + settings.duration;
    while sample_due < measure_end && !shared.failed.get() {
        sample_due = (sample_due + Duration::from_secs(1)).min(measure_end);
        sleep_until_or_failed(sample_due, &shared).await;
        let now = Instant::now();
        let bytes = shared.acknowledged_bytes.get();
        per_second_mb_per_sec.push(measure::mb_per_sec(bytes - sampled_bytes, now - sampled_at));
        sampled_bytes = bytes;
        sampled_at = now;
    }
    shared.phase.set(Phase::Drain);
    let elapsed = measure_started.elapsed();
    let commit = delta(committer.stats(), stats_before);
    let cpu = CpuTime::now().since(cpu_before, elapsed);
    let disk = baseline::counters_since(settings.device, disk_before);

    let Ok(results) = compio::time::timeout(DRAIN_TIMEOUT, join_all(tasks)).await else {
        bail!(
            "appends were still unacknowledged {} s after the load stopped: the engine \
             lost or stalled a completion",
            DRAIN_TIMEOUT.as_secs()
        );
    };
    for (partition, result) in results.into_iter().enumerate() {
        match result.resume_unwind() {
            Some(Ok(())) => {}
            Some(Err(error)) => return Err(error.context(format!("partition {partition}"))),
            None => bail!("the load task of partition {partition} was cancelled"),
        }
    }
    for log in &logs {
        log.close()
            .await
            .with_context(|| format!("cannot close the log in {}", log.dir().display()))?;
    }
    let _ = committer_task.cancel().await;

    let latency = shared.latency.borrow().clone();
    let run = EngineRun {
        label: load.label(),
        target_bytes_per_sec: load.target_bytes_per_sec(),
        elapsed,
        acknowledged_batches: shared.acknowledged_batches.get(),
        acknowledged_bytes: shared.acknowledged_bytes.get(),
        commit,
        latency,
        per_second_mb_per_sec,
        cpu,
        disk,
    };
    eprintln!(
        "  {:.1} MB/s, {:.2} batches per fdatasync, group commit {}",
        run.mb_per_sec(),
        run.batches_per_fsync(),
        LatencySummary::of(&run.latency).describe()
    );
    Ok(run)
}

/// Sleep until `deadline`, waking early if a load task failed.
async fn sleep_until_or_failed(deadline: Instant, shared: &Shared) {
    const POLL_INTERVAL: Duration = Duration::from_millis(50);
    loop {
        let now = Instant::now();
        if now >= deadline || shared.failed.get() {
            return;
        }
        compio::time::sleep((deadline - now).min(POLL_INTERVAL)).await;
    }
}

/// A token bucket for one partition: one batch per `interval`, with up to
/// `burst` unused sends banked (so timer lateness does not lower the rate).
struct Pacer {
    next_send_at: Instant,
    interval: Duration,
    burst: Duration,
}

impl Pacer {
    fn new(first_send_at: Instant, interval: Duration, burst_count: usize) -> Pacer {
        Pacer {
            next_send_at: first_send_at,
            interval,
            burst: interval * u32::try_from(burst_count).unwrap_or(u32::MAX),
        }
    }

    /// Take a token if one is available at `now`.
    fn try_take(&mut self, now: Instant) -> bool {
        if now < self.next_send_at {
            return false;
        }
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        self.next_send_at = self.next_send_at.max(earliest) + self.interval;
        true
    }
}

/// An append's completion, timed.
struct Acknowledgement {
    appended_at: Instant,
    acknowledged_at: Instant,
    bytes: usize,
    result: Result<(), AppendError>,
}

async fn acknowledged(
    completion: AppendCompletion,
    appended_at: Instant,
    bytes: usize,
) -> Acknowledgement {
    let result = completion.await;
    Acknowledgement {
        appended_at,
        acknowledged_at: Instant::now(),
        bytes,
        result,
    }
}

/// The load of one partition: append while fewer than `in_flight_max`
/// appends are unacknowledged (and, when paced, a token is available),
/// account acknowledgements; when the phase turns to `Drain`, wait for the
/// outstanding appends and stop.
async fn drive_partition(
    log: Log<UringIo>,
    batches: Rc<[Bytes]>,
    first_batch: usize,
    in_flight_max: usize,
    mut pacer: Option<Pacer>,
    shared: Rc<Shared>,
) -> anyhow::Result<()> {
    let result = drive_partition_inner(
        &log,
        &batches,
        first_batch,
        in_flight_max,
        &mut pacer,
        &shared,
    )
    .await;
    if result.is_err() {
        shared.failed.set(true);
    }
    result.with_context(|| format!("load on the log in {}", log.dir().display()))
}

async fn drive_partition_inner(
    log: &Log<UringIo>,
    batches: &[Bytes],
    first_batch: usize,
    in_flight_max: usize,
    pacer: &mut Option<Pacer>,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut in_flight = FuturesUnordered::new();
    let mut next_batch = first_batch;
    loop {
        if shared.phase.get() == Phase::Drain || shared.failed.get() {
            while let Some(acknowledgement) = in_flight.next().await {
                shared.note(acknowledgement)?;
            }
            return Ok(());
        }
        if in_flight.len() >= in_flight_max {
            if let Some(acknowledgement) = in_flight.next().await {
                shared.note(acknowledgement)?;
            }
            continue;
        }
        let may_send = pacer
            .as_mut()
            .is_none_or(|pacer| pacer.try_take(Instant::now()));
        if may_send {
            let batch = &batches[next_batch % batches.len()];
            next_batch += 1;
            let appended_at = Instant::now();
            let appended = log.append(batch, LeaderEpoch(0))?;
            in_flight.push(acknowledged(appended.completion, appended_at, batch.len()));
            continue;
        }
        // Paced and no token yet: wait for a token or an acknowledgement.
        let Some(send_at) = pacer.as_ref().map(|pacer| pacer.next_send_at) else {
            continue;
        };
        let sleep = pin!(compio::time::sleep_until(send_at));
        if in_flight.is_empty() {
            sleep.await;
            continue;
        }
        if let Either::Left((Some(acknowledgement), _)) = select(in_flight.next(), sleep).await {
            shared.note(acknowledgement)?;
        }
    }
}

/// Everything the report prints.
struct Report {
    command: String,
    machine: Machine,
    data_dir: PathBuf,
    args: EngineArgs,
    batches: BatchSet,
    measurements: Measurements,
}

/// A target of the issue, evaluated.
struct Target {
    name: String,
    ratio: f64,
    limit: f64,
    at_least: bool,
}

impl Target {
    fn met(&self) -> bool {
        if self.at_least {
            self.ratio >= self.limit
        } else {
            self.ratio <= self.limit
        }
    }

    fn verdict(&self) -> &'static str {
        if self.met() { "PASS" } else { "MISS" }
    }
}

impl Report {
    fn max_run(&self) -> Option<&EngineRun> {
        self.measurements
            .runs
            .iter()
            .find(|run| run.target_bytes_per_sec.is_none())
    }

    fn fixed_run(&self) -> Option<&EngineRun> {
        self.measurements
            .runs
            .iter()
            .find(|run| run.target_bytes_per_sec.is_some())
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if let Some(run) = self.max_run() {
            targets.push(Target {
                name: "max-rate throughput / raw O_DIRECT bandwidth".to_owned(),
                ratio: run.mb_per_sec() / self.measurements.raw_mb_per_sec().max(f64::MIN_POSITIVE),
                limit: THROUGHPUT_RATIO_MIN,
                at_least: true,
            });
        }
        if let Some(run) = self.fixed_run() {
            targets.push(Target {
                name: format!("group-commit p99 at {} / raw fdatasync p99", run.label),
                ratio: run.latency.value_at_quantile(0.99) as f64
                    / self.measurements.raw_sync_p99_us().max(1) as f64,
                limit: LATENCY_RATIO_MAX,
                at_least: false,
            });
        }
        targets
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let args = &self.args;
        let batches = &self.batches;
        let filesystem = self
            .machine
            .filesystem
            .as_ref()
            .map_or("unknown filesystem".to_owned(), |mount| {
                format!("{} on {}", mount.filesystem_type, mount.source)
            });
        let _ = writeln!(out, "sluice-bench engine");
        let _ = writeln!(out, "  command    {}", self.command);
        let _ = writeln!(out, "  machine    {}", self.machine.summary());
        let _ = writeln!(
            out,
            "  data dir   {} ({filesystem})",
            self.data_dir.display()
        );
        let _ = writeln!(
            out,
            "  load       {} partitions, {} appends in flight each, batches of {} records x {} B = {} B",
            args.partitions,
            args.inflight_per_partition,
            batches.records_per_batch,
            batches.record_bytes,
            batches.batch_size_bytes
        );
        let _ = writeln!(
            out,
            "  timing     warmup {} s, measure {} s per engine run; baselines {} s each",
            args.warmup_secs, args.duration_secs, args.baseline_secs
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Raw disk baselines (same directory, io_uring, O_DIRECT), before the engine runs"
        );
        out.push_str(&self.measurements.raw_before.render("  "));
        let _ = writeln!(out, "... and after them");
        out.push_str(&self.measurements.raw_after.render("  "));
        let _ = writeln!(
            out,
            "  reference (before and after together): {:.1} MB/s, fdatasync p99 {}",
            self.measurements.raw_mb_per_sec(),
            measure::milliseconds(self.measurements.raw_sync_p99_us())
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Engine runs (MB = 10^6 bytes; latency = append() call to completion resolved)"
        );
        let _ = writeln!(
            out,
            "  {:<12} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "run",
            "target",
            "MB/s",
            "batches/s",
            "syncs/s",
            "rounds/s",
            "b/sync",
            "b/round",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        for run in &self.measurements.runs {
            let latency = LatencySummary::of(&run.latency);
            let _ = writeln!(
                out,
                "  {:<12} {:>8} {:>8.1} {:>9.0} {:>8.0} {:>8.0} {:>8.2} {:>8.2} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                run.label,
                run.target_bytes_per_sec
                    .map_or("-".to_owned(), |rate| format!("{:.1}", rate / 1e6)),
                run.mb_per_sec(),
                run.per_second(run.acknowledged_batches),
                run.per_second(run.syncs()),
                run.per_second(run.commit.rounds),
                run.batches_per_fsync(),
                run.batches_per_round(),
                latency.p50_us as f64 / 1000.0,
                latency.p99_us as f64 / 1000.0,
                latency.p999_us as f64 / 1000.0,
                latency.max_us as f64 / 1000.0,
            );
        }
        for run in &self.measurements.runs {
            let mut sorted = run.per_second_mb_per_sec.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
            let _ = writeln!(out, "  {}:", run.label);
            let _ = writeln!(
                out,
                "    per-second MB/s min {:.1} median {:.1} max {:.1}; {:.1} log flushes per round; \
                 write amplification {:.3}",
                sorted.first().copied().unwrap_or(0.0),
                median,
                sorted.last().copied().unwrap_or(0.0),
                run.commit.log_flushes as f64 / run.commit.rounds.max(1) as f64,
                run.write_amplification(),
            );
            let _ = writeln!(
                out,
                "    CPU {} ({:.0} per MB)",
                run.cpu.describe(),
                run.minor_faults_per_mb()
            );
            if let Some(disk) = run.disk {
                let _ = writeln!(out, "    device {}", disk.describe(run.elapsed));
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Targets (reported, never enforced)");
        for target in self.targets() {
            let _ = writeln!(
                out,
                "  {:<58} {:>6.2}  target {} {:.2}  {}",
                target.name,
                target.ratio,
                if target.at_least { ">=" } else { "<=" },
                target.limit,
                target.verdict()
            );
        }
        out
    }

    fn to_json(&self) -> Value {
        let args = &self.args;
        json!({
            "benchmark": "sluice-bench engine",
            "command": self.command,
            "machine": self.machine.to_json(),
            "data_dir": self.data_dir.display().to_string(),
            "config": {
                "partitions": args.partitions,
                "inflight_per_partition": args.inflight_per_partition,
                "batch_bytes_requested": args.batch_bytes,
                "batch_size_bytes": self.batches.batch_size_bytes,
                "records_per_batch": self.batches.records_per_batch,
                "record_bytes": self.batches.record_bytes,
                "warmup_secs": args.warmup_secs,
                "duration_secs": args.duration_secs,
                "baseline_secs": args.baseline_secs,
                "rate_mb_per_sec": args.rate_mb_per_sec,
                "load_fraction": args.load_fraction,
            },
            "baseline": {
                "before": self.measurements.raw_before.to_json(),
                "after": self.measurements.raw_after.to_json(),
                "reference_mb_per_sec": round(self.measurements.raw_mb_per_sec(), 1),
                "reference_fdatasync_p99_us": self.measurements.raw_sync_p99_us(),
            },
            "runs": self.measurements.runs.iter().map(EngineRun::to_json).collect::<Vec<_>>(),
            "targets": self.targets().iter().map(|target| json!({
                "name": target.name,
                "ratio": round(target.ratio, 3),
                "limit": target.limit,
                "comparison": if target.at_least { ">=" } else { "<=" },
                "met": target.met(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_the_requested_size() {
        let set = BatchSet::build(65536, 1024).unwrap();
        assert!(set.batch_size_bytes <= 65536);
        assert!(set.batch_size_bytes > 65536 - 1100);
        assert_eq!(set.batches.len(), BATCH_VARIANTS_COUNT);
        let header =
            sluice_engine::batch::validate(&set.batches[0], MAX_MESSAGE_BYTES_DEFAULT as usize)
                .unwrap();
        assert_eq!(header.records_count() as usize, set.records_per_batch);
    }

    #[test]
    fn a_record_larger_than_the_batch_is_refused() {
        let error = BatchSet::build(4096, 8192).unwrap_err();
        assert!(error.to_string().contains("does not fit"), "{error}");
    }

    #[test]
    fn the_pacer_keeps_its_rate_and_banks_a_bounded_burst() {
        let start = Instant::now();
        let interval = Duration::from_millis(10);
        let mut pacer = Pacer::new(start, interval, 2);
        assert!(pacer.try_take(start));
        assert!(!pacer.try_take(start + Duration::from_millis(5)));
        assert!(pacer.try_take(start + Duration::from_millis(10)));
        // A long stall banks at most `burst` sends (2 intervals), then one.
        let late = start + Duration::from_secs(1);
        assert!(pacer.try_take(late));
        assert!(pacer.try_take(late));
        assert!(pacer.try_take(late));
        assert!(!pacer.try_take(late));
    }

    #[test]
    fn rates_and_fractions_are_checked() {
        assert!(parse_rate("100").is_ok());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("nan").is_err());
        assert!(parse_fraction("0.5").is_ok());
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("0").is_err());
        assert!(parse_write_size("1048576").is_ok());
        assert!(parse_write_size("1000").is_err());
    }
}
