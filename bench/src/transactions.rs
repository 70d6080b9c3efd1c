//! `sluice-bench transactions`: what exactly-once writing costs
//! (docs/benchmarks.md "Transactions").
//!
//! Against `--embedded` (one local broker) or `--bootstrap`, `--rounds`
//! rounds of two max-rate runs with the same librdkafka producer settings
//! (acks=all, idempotence on, `--linger-ms`, `--batch-size`), each on a
//! fresh topic of `--partitions` partitions, records of `--record-size`
//! bytes sent round-robin over the partitions:
//!
//! - A, idempotent: no transactional id; a record counts when its delivery
//!   report arrives inside the measured window;
//! - B, transactional: `init_transactions`, then `begin_transaction`,
//!   records for `--commit-interval-ms`, `commit_transaction`, again; a
//!   record counts when the `commit_transaction` of its transaction
//!   returns inside the measured window. Each commit is timed: the commit
//!   latency is what one `commit_transaction` call does (flush the
//!   transaction's queued records, EndTxn, the coordinator's markers), made
//!   of an explicit `flush` then `commit_transaction`; the end-txn latency
//!   is the second part alone. At max rate the flush dominates: it drains
//!   what the producer queued during the interval (up to
//!   `--buffer-kbytes`).
//!
//! Figures: MB/s and records/s of each run, the ratio B/A of the medians
//! (and of each round), commit latency percentiles over all rounds. The
//! producer runs on the calling thread (a `BaseProducer`, polled between
//! sends); librdkafka sends on its own threads.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde_json::{Value, json};

use crate::embedded::{EmbeddedArgs, EmbeddedBroker};
use crate::kafka::Client;
use crate::{provenance, report, run};

/// Target of the transactional over idempotent throughput ratio
/// (docs/benchmarks.md); reported, not enforced.
const RATIO_TARGET_MIN: f64 = 0.8;
/// transaction.timeout.ms of the transactional producer: far above any
/// commit interval the bench allows.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `--commit-interval-ms`: a transaction must commit well within
/// its timeout.
const COMMIT_INTERVAL_MS_MAX: u64 = 30_000;
/// segment.bytes and retention.bytes of the bench topics: a max-rate run
/// writes GBs, retention bounds what each partition keeps.
const SEGMENT_BYTES: u64 = 8 << 20;
const RETENTION_BYTES: u64 = 32 << 20;
/// Largest commit latency the histogram records, in microseconds.
const COMMIT_LATENCY_US_MAX: u64 = 60_000_000;

/// Flags of `sluice-bench transactions`.
#[derive(Args, Clone, Debug)]
pub struct TransactionsArgs {
    /// Broker to run against (host:port).
    #[arg(long, default_value = "127.0.0.1:9092", conflicts_with = "embedded")]
    pub bootstrap: String,
    #[command(flatten)]
    pub embedded: EmbeddedArgs,
    /// Partitions of each run's topic.
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// The transactional producer commits this often.
    #[arg(long, default_value_t = 100)]
    pub commit_interval_ms: u64,
    /// Measured seconds of each run, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds of each run.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Rounds of (idempotent, transactional).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// linger.ms of both producers.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// batch.size of both producers, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_size: u32,
    /// queue.buffering.max.kbytes of both producers.
    #[arg(long, default_value_t = 64 << 10)]
    pub buffer_kbytes: u32,
    /// Prefix of the topics the bench creates (and deletes after each run).
    #[arg(long, default_value = "sluice-bench-txn")]
    pub topic_prefix: String,
    /// Do not delete the bench's topics.
    #[arg(long)]
    pub keep_topics: bool,
    /// Directory for the JSON summary and the embedded broker's log.
    #[arg(long, default_value = "target/bench-results")]
    pub out: PathBuf,
    /// Give up connecting to the broker after this many ms.
    #[arg(long, default_value_t = 5000)]
    pub connect_timeout_ms: u64,
    /// Give up on a request (topic creation, init, commit, flush) after
    /// this many ms.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

impl TransactionsArgs {
    /// The argument checks clap cannot make.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.partitions == 0 || i32::try_from(self.partitions).is_err() {
            bail!("--partitions must be 1 to {}", i32::MAX);
        }
        if self.record_size == 0 {
            bail!("--record-size must be at least 1");
        }
        if self.commit_interval_ms == 0 || self.commit_interval_ms > COMMIT_INTERVAL_MS_MAX {
            bail!(
                "--commit-interval-ms must be 1 to {COMMIT_INTERVAL_MS_MAX} (transactions time \
                 out after {TRANSACTION_TIMEOUT:?})"
            );
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            bail!("--warmup must be zero or a positive number of seconds");
        }
        if self.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if self.batch_size == 0 || self.buffer_kbytes == 0 {
            bail!("--batch-size and --buffer-kbytes must be positive");
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            bail!("--connect-timeout-ms and --request-timeout-ms must be positive");
        }
        Ok(())
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// The two producers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idempotent,
    Transactional,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Idempotent => "idempotent",
            Mode::Transactional => "transactional",
        }
    }
}

/// One measured run.
#[derive(Debug)]
struct RunResult {
    mode: Mode,
    round: u32,
    /// Records counted in the measured window.
    records: u64,
    bytes: u64,
    measured: Duration,
    /// Transactions committed in the window (transactional only).
    commits: u64,
    /// Commit times in the window (flush of the transaction's records +
    /// commit_transaction), microseconds.
    commit_latency: Histogram<u64>,
    /// The commit_transaction part alone, after the flush (EndTxn and the
    /// markers), microseconds.
    end_txn_latency: Histogram<u64>,
}

impl RunResult {
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.measured.as_secs_f64().max(1e-9)
    }

    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.measured.as_secs_f64().max(1e-9)
    }
}

/// Delivery reports of the idempotent run: acknowledged records inside the
/// window, and the first failure.
struct Deliveries {
    window: Mutex<Option<(Instant, Instant)>>,
    acknowledged: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                let now = Instant::now();
                let inside = self
                    .window
                    .lock()
                    .map(|window| window.is_some_and(|(start, end)| now >= start && now < end))
                    .unwrap_or(false);
                if inside {
                    self.acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_failure.lock()
                    && first.is_none()
                {
                    *first = Some(error.to_string());
                }
            }
        }
    }
}

/// Run `sluice-bench transactions`.
pub fn run(args: &TransactionsArgs, interrupted: &AtomicBool) -> anyhow::Result<ExitCode> {
    args.check()?;
    let started_at = SystemTime::now();
    let mut broker = None;
    let bootstrap = if args.embedded.embedded {
        eprintln!("starting an embedded sluice...");
        let started = EmbeddedBroker::start(&args.embedded, &args.out)?;
        eprintln!(
            "embedded sluice on {} (data {})",
            started.bootstrap,
            started.data_dir.display()
        );
        let bootstrap = started.bootstrap.clone();
        broker = Some(started);
        bootstrap
    } else {
        run::check_broker(
            &args.bootstrap,
            Duration::from_millis(args.connect_timeout_ms),
        )?;
        args.bootstrap.clone()
    };
    let mut results = Vec::new();
    'rounds: for round in 1..=args.rounds {
        for mode in [Mode::Idempotent, Mode::Transactional] {
            if interrupted.load(Ordering::Relaxed) {
                break 'rounds;
            }
            if !args.quiet {
                eprintln!("round {round}: {} run...", mode.name());
            }
            let result = measure(args, &bootstrap, mode, round, interrupted)
                .with_context(|| format!("round {round}, {} run", mode.name()))?;
            if !args.quiet {
                eprintln!(
                    "round {round}: {} {:.1} MB/s",
                    mode.name(),
                    result.mb_per_sec()
                );
            }
            results.push(result);
        }
    }
    print!("{}", render(args, &bootstrap, &results));
    let mut summary = summary_json(args, &bootstrap, &results);
    if let (Value::Object(summary), Value::Object(provenance)) =
        (&mut summary, provenance::to_json(started_at))
    {
        summary.extend(provenance);
    }
    let path = args.out.join("transactions.json");
    report::write(&path, &serde_json::to_string_pretty(&summary)?)?;
    println!("wrote {}", path.display());
    if let Some(mut broker) = broker {
        broker.stop()?;
    }
    Ok(if interrupted.load(Ordering::Relaxed) {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn admin_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")
}

/// The producer settings both runs share.
fn producer_config(args: &TransactionsArgs, bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "sluice-bench-transactions")
        .set("log_level", "3")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "none")
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("queue.buffering.max.kbytes", args.buffer_kbytes.to_string())
        .set("queue.buffering.max.messages", "10000000")
        .set("message.timeout.ms", "60000");
    config
}

/// One run of `mode` on a fresh topic.
fn measure(
    args: &TransactionsArgs,
    bootstrap: &str,
    mode: Mode,
    round: u32,
    interrupted: &AtomicBool,
) -> anyhow::Result<RunResult> {
    let runtime = admin_runtime()?;
    let mut admin = runtime.block_on(Client::connect(
        bootstrap,
        Duration::from_millis(args.connect_timeout_ms),
    ))?;
    admin.set_timeout(args.request_timeout());
    let stamp = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let topic = format!(
        "{}-{}-{stamp}-{}-{round}",
        args.topic_prefix,
        mode.name(),
        std::process::id()
    );
    let partitions = i32::try_from(args.partitions).context("--partitions")?;
    runtime.block_on(admin.create_topic(
        &topic,
        partitions,
        1,
        &[
            ("segment.bytes".to_owned(), SEGMENT_BYTES.to_string()),
            ("retention.bytes".to_owned(), RETENTION_BYTES.to_string()),
        ],
    ))?;
    let result = match mode {
        Mode::Idempotent => produce_idempotent(args, bootstrap, &topic, round, interrupted),
        Mode::Transactional => produce_transactional(args, bootstrap, &topic, round, interrupted),
    };
    if !args.keep_topics {
        let deleted = runtime.block_on(admin.delete_topics(std::slice::from_ref(&topic)));
        if let Err(error) = deleted {
            eprintln!("sluice-bench: deleting topic {topic}: {error:#}");
        }
    }
    result
}

/// The warm-up and measured window of a run starting now.
fn window(args: &TransactionsArgs) -> (Instant, Instant) {
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    (start, start + Duration::from_secs_f64(args.duration))
}

/// Send one record to `partition`, polling while librdkafka's queue is
/// full.
fn send<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    topic: &str,
    partition: i32,
    value: &[u8],
) -> anyhow::Result<()> {
    loop {
        let record = BaseRecord::<(), [u8]>::to(topic)
            .partition(partition)
            .payload(value);
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => bail!("send to {topic}/{partition}: {error}"),
        }
    }
}

/// Wait until every queued record is acknowledged (its delivery report
/// served), polling every millisecond. Not `Producer::flush`: the rdkafka
/// crate's `BaseProducer::poll` always waits out its timeout, so its
/// flush finishes only at a multiple of 100 ms, which would be timed as
/// commit latency and idle the producer.
fn flush<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            bail!(
                "{} records still unacknowledged after {timeout:?}",
                producer.in_flight_count()
            );
        }
        producer.poll(FLUSH_POLL);
    }
    Ok(())
}

/// Poll step of [`flush`].
const FLUSH_POLL: Duration = Duration::from_millis(1);

/// Sends between two polls of the delivery queue.
const SENDS_PER_POLL: u64 = 256;

fn produce_idempotent(
    args: &TransactionsArgs,
    bootstrap: &str,
    topic: &str,
    round: u32,
    interrupted: &AtomicBool,
) -> anyhow::Result<RunResult> {
    let deliveries = Deliveries {
        window: Mutex::new(None),
        acknowledged: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_failure: Mutex::new(None),
    };
    let producer: BaseProducer<Deliveries> = producer_config(args, bootstrap)
        .create_with_context(deliveries)
        .context("creating the idempotent producer")?;
    let value = vec![b'r'; args.record_size];
    let (start, end) = window(args);
    if let Ok(mut window) = producer.context().window.lock() {
        *window = Some((start, end));
    }
    let partitions = i32::try_from(args.partitions).context("--partitions")?;
    let mut sent: u64 = 0;
    while Instant::now() < end && !interrupted.load(Ordering::Relaxed) {
        let partition = i32::try_from(sent % u64::from(args.partitions)).unwrap_or(0);
        debug_assert!(partition < partitions);
        send(&producer, topic, partition, &value)?;
        sent += 1;
        if sent.is_multiple_of(SENDS_PER_POLL) {
            producer.poll(Duration::ZERO);
        }
    }
    flush(&producer, args.request_timeout()).context("flushing the idempotent producer")?;
    let context = producer.context();
    if context.failed.load(Ordering::Relaxed) > 0 {
        bail!(
            "{} records failed, first: {}",
            context.failed.load(Ordering::Relaxed),
            context
                .first_failure
                .lock()
                .ok()
                .and_then(|first| first.clone())
                .unwrap_or_default()
        );
    }
    let records = context.acknowledged.load(Ordering::Relaxed);
    Ok(RunResult {
        mode: Mode::Idempotent,
        round,
        records,
        bytes: records * args.record_size as u64,
        measured: measured(start, end),
        commits: 0,
        commit_latency: latency_histogram()?,
        end_txn_latency: latency_histogram()?,
    })
}

/// The measured window's length: up to now when interrupted early.
fn measured(start: Instant, end: Instant) -> Duration {
    Instant::now().min(end).saturating_duration_since(start)
}

fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, COMMIT_LATENCY_US_MAX, 3).context("a latency histogram")
}

fn produce_transactional(
    args: &TransactionsArgs,
    bootstrap: &str,
    topic: &str,
    round: u32,
    interrupted: &AtomicBool,
) -> anyhow::Result<RunResult> {
    let mut config = producer_config(args, bootstrap);
    config
        .set("transactional.id", format!("{topic}-producer"))
        .set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        );
    let producer: BaseProducer = config
        .create()
        .context("creating the transactional producer")?;
    producer
        .init_transactions(args.request_timeout())
        .context("init_transactions")?;
    let value = vec![b'r'; args.record_size];
    let interval = Duration::from_millis(args.commit_interval_ms);
    let (start, end) = window(args);
    let mut commit_latency = latency_histogram()?;
    let mut end_txn_latency = latency_histogram()?;
    let mut records: u64 = 0;
    let mut commits: u64 = 0;
    let mut sent: u64 = 0;
    while Instant::now() < end && !interrupted.load(Ordering::Relaxed) {
        producer.begin_transaction().context("begin_transaction")?;
        let began = Instant::now();
        let mut in_transaction: u64 = 0;
        while began.elapsed() < interval {
            let partition = i32::try_from(sent % u64::from(args.partitions)).unwrap_or(0);
            send(&producer, topic, partition, &value)?;
            sent += 1;
            in_transaction += 1;
            if sent.is_multiple_of(SENDS_PER_POLL) {
                producer.poll(Duration::ZERO);
            }
        }
        // commit_transaction flushes the transaction's queued records, then
        // ends it (EndTxn, markers). The flush is made explicit so that the
        // two parts are timed apart; together they are what one
        // commit_transaction call does.
        let committing = Instant::now();
        flush(&producer, args.request_timeout()).context("flushing the transaction")?;
        let flushed = Instant::now();
        producer
            .commit_transaction(args.request_timeout())
            .context("commit_transaction")?;
        let committed = Instant::now();
        if committed >= start && committed < end {
            commit_latency
                .record(micros(committed.duration_since(committing)))
                .context("recording")?;
            end_txn_latency
                .record(micros(committed.duration_since(flushed)))
                .context("recording")?;
            records += in_transaction;
            commits += 1;
        }
    }
    Ok(RunResult {
        mode: Mode::Transactional,
        round,
        records,
        bytes: records * args.record_size as u64,
        measured: measured(start, end),
        commits,
        commit_latency,
        end_txn_latency,
    })
}

/// `duration` in microseconds, within the histogram's bounds.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, COMMIT_LATENCY_US_MAX)
}

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

fn median_mb_per_sec(results: &[RunResult], mode: Mode) -> Option<f64> {
    median(
        &results
            .iter()
            .filter(|result| result.mode == mode)
            .map(RunResult::mb_per_sec)
            .collect::<Vec<_>>(),
    )
}

/// Transactional over idempotent MB/s, of the medians.
fn ratio(results: &[RunResult]) -> Option<f64> {
    let idempotent = median_mb_per_sec(results, Mode::Idempotent)?;
    let transactional = median_mb_per_sec(results, Mode::Transactional)?;
    (idempotent > 0.0).then(|| transactional / idempotent)
}

/// A latency of every transactional run together.
fn merged_latency(
    results: &[RunResult],
    latency: impl Fn(&RunResult) -> &Histogram<u64>,
) -> anyhow::Result<Histogram<u64>> {
    let mut merged = latency_histogram()?;
    for result in results
        .iter()
        .filter(|result| result.mode == Mode::Transactional)
    {
        merged
            .add(latency(result))
            .context("merging commit latencies")?;
    }
    Ok(merged)
}

fn merged_commit_latency(results: &[RunResult]) -> anyhow::Result<Histogram<u64>> {
    merged_latency(results, |result| &result.commit_latency)
}

fn merged_end_txn_latency(results: &[RunResult]) -> anyhow::Result<Histogram<u64>> {
    merged_latency(results, |result| &result.end_txn_latency)
}

fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> Option<f64> {
    (!histogram.is_empty()).then(|| histogram.value_at_quantile(quantile) as f64 / 1000.0)
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn render(args: &TransactionsArgs, bootstrap: &str, results: &[RunResult]) -> String {
    let mut out = format!(
        "transactions: {bootstrap}, {} partitions, {} B records, commit every {} ms, \
         {} s measured after {} s warm-up, librdkafka acks=all idempotent\n",
        args.partitions, args.record_size, args.commit_interval_ms, args.duration, args.warmup
    );
    out.push_str(&format!(
        "{:<6} {:<14} {:>10} {:>12} {:>8} {:>12} {:>12} {:>12} {:>12}\n",
        "round",
        "producer",
        "MB/s",
        "records/s",
        "commits",
        "commit p50",
        "commit p99",
        "end-txn p50",
        "end-txn p99"
    ));
    for result in results {
        let latency = |histogram: &Histogram<u64>, quantile| {
            quantile_ms(histogram, quantile)
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.2} ms"))
        };
        out.push_str(&format!(
            "{:<6} {:<14} {:>10.1} {:>12.0} {:>8} {:>12} {:>12} {:>12} {:>12}\n",
            result.round,
            result.mode.name(),
            result.mb_per_sec(),
            result.records_per_sec(),
            result.commits,
            latency(&result.commit_latency, 0.5),
            latency(&result.commit_latency, 0.99),
            latency(&result.end_txn_latency, 0.5),
            latency(&result.end_txn_latency, 0.99),
        ));
    }
    let figure = |value: Option<f64>| value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    out.push_str(&format!(
        "median MB/s: idempotent {}, transactional {}\n",
        figure(median_mb_per_sec(results, Mode::Idempotent)),
        figure(median_mb_per_sec(results, Mode::Transactional))
    ));
    match ratio(results) {
        Some(ratio) => out.push_str(&format!(
            "transactional / idempotent: {ratio:.3} (target >= {RATIO_TARGET_MIN}: {})\n",
            if ratio >= RATIO_TARGET_MIN {
                "met"
            } else {
                "MISSED"
            }
        )),
        None => out.push_str("transactional / idempotent: -\n"),
    }
    for (name, merged) in [
        (
            "commit latency (flush + commit_transaction)",
            merged_commit_latency(results),
        ),
        (
            "end-txn latency (commit_transaction after the flush)",
            merged_end_txn_latency(results),
        ),
    ] {
        if let Ok(merged) = merged
            && !merged.is_empty()
        {
            out.push_str(&format!(
                "{name}, all rounds ({} commits): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
                merged.len(),
                merged.value_at_quantile(0.5) as f64 / 1000.0,
                merged.value_at_quantile(0.99) as f64 / 1000.0,
                merged.max() as f64 / 1000.0
            ));
        }
    }
    out
}

/// p50, p99, max and count of `histogram`, in ms, for the JSON summary.
fn latency_json(histogram: Option<&Histogram<u64>>) -> Value {
    let histogram = histogram.filter(|histogram| !histogram.is_empty());
    json!({
        "count": histogram.map(Histogram::len),
        "p50": histogram.and_then(|histogram| quantile_ms(histogram, 0.5)).map(round3),
        "p99": histogram.and_then(|histogram| quantile_ms(histogram, 0.99)).map(round3),
        "max": histogram.map(|histogram| round3(histogram.max() as f64 / 1000.0)),
    })
}

fn summary_json(args: &TransactionsArgs, bootstrap: &str, results: &[RunResult]) -> Value {
    let commit = merged_commit_latency(results).ok();
    let end_txn = merged_end_txn_latency(results).ok();
    json!({
        "bench": "transactions",
        "bootstrap": bootstrap,
        "embedded": args.embedded.embedded,
        "settings": {
            "partitions": args.partitions,
            "record_size_bytes": args.record_size,
            "commit_interval_ms": args.commit_interval_ms,
            "duration_secs": args.duration,
            "warmup_secs": args.warmup,
            "rounds": args.rounds,
            "linger_ms": args.linger_ms,
            "batch_size_bytes": args.batch_size,
            "buffer_kbytes": args.buffer_kbytes,
            "acks": "all",
            "client": "rdkafka",
        },
        "runs": results.iter().map(|result| json!({
            "round": result.round,
            "producer": result.mode.name(),
            "records": result.records,
            "bytes": result.bytes,
            "measured_secs": round3(result.measured.as_secs_f64()),
            "mb_per_sec": round3(result.mb_per_sec()),
            "records_per_sec": round3(result.records_per_sec()),
            "commits": result.commits,
            "commit_p50_ms": quantile_ms(&result.commit_latency, 0.5).map(round3),
            "commit_p99_ms": quantile_ms(&result.commit_latency, 0.99).map(round3),
            "end_txn_p50_ms": quantile_ms(&result.end_txn_latency, 0.5).map(round3),
            "end_txn_p99_ms": quantile_ms(&result.end_txn_latency, 0.99).map(round3),
        })).collect::<Vec<_>>(),
        "median_mb_per_sec": {
            "idempotent": median_mb_per_sec(results, Mode::Idempotent).map(round3),
            "transactional": median_mb_per_sec(results, Mode::Transactional).map(round3),
        },
        "ratio_transactional_over_idempotent": ratio(results).map(round3),
        "ratio_target_min": RATIO_TARGET_MIN,
        "commit_latency_ms": latency_json(commit.as_ref()),
        "end_txn_latency_ms": latency_json(end_txn.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: TransactionsArgs,
    }

    fn parse(extra: &[&str]) -> Result<TransactionsArgs, String> {
        let mut argv = vec!["sluice-bench-transactions"];
        argv.extend_from_slice(extra);
        let harness = Harness::try_parse_from(argv).map_err(|error| error.to_string())?;
        harness.args.check().map_err(|error| error.to_string())?;
        Ok(harness.args)
    }

    #[test]
    fn defaults_are_the_documented_workload() {
        let args = parse(&[]).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(args.partitions, 16);
        assert_eq!(args.record_size, 1024);
        assert_eq!(args.commit_interval_ms, 100);
        assert_eq!(args.rounds, 2);
        assert!(!args.embedded.embedded);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_flag_named() {
        for (flags, needle) in [
            (&["--partitions", "0"][..], "--partitions"),
            (&["--record-size", "0"][..], "--record-size"),
            (&["--commit-interval-ms", "0"][..], "--commit-interval-ms"),
            (
                &["--commit-interval-ms", "60000"][..],
                "--commit-interval-ms",
            ),
            (&["--duration", "0"][..], "--duration"),
            (&["--duration", "NaN"][..], "--duration"),
            (&["--warmup=-1"][..], "--warmup"),
            (&["--rounds", "0"][..], "--rounds"),
            (&["--embedded", "--bootstrap", "h:1"][..], "--bootstrap"),
        ] {
            let error = match parse(flags) {
                Ok(_) => panic!("{flags:?} was accepted"),
                Err(error) => error,
            };
            assert!(error.contains(needle), "{flags:?}: {error}");
        }
    }

    #[test]
    fn the_ratio_is_of_the_medians() {
        let run = |mode, megabytes: u64| RunResult {
            mode,
            round: 1,
            records: 0,
            bytes: megabytes * 1_000_000,
            measured: Duration::from_secs(1),
            commits: 0,
            commit_latency: latency_histogram().unwrap_or_else(|error| panic!("{error}")),
            end_txn_latency: latency_histogram().unwrap_or_else(|error| panic!("{error}")),
        };
        let results = [
            run(Mode::Idempotent, 100),
            run(Mode::Transactional, 90),
            run(Mode::Idempotent, 200),
            run(Mode::Transactional, 120),
        ];
        let ratio = ratio(&results).unwrap_or(0.0);
        assert!((ratio - 105.0 / 150.0).abs() < 1e-9, "{ratio}");
        assert_eq!(ratio_of_nothing(), None);
    }

    fn ratio_of_nothing() -> Option<f64> {
        ratio(&[])
    }
}
