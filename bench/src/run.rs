//! One workload against one broker: create the topics, start consumers
//! then producers, sample once per second (progress line), stop after the
//! warm-up and the measured duration (or on Ctrl-C, or when a client
//! fails), wait for consumers to catch up, check with ListOffsets that the
//! log grew by what was acknowledged, delete the topics.
//!
//! Threads: the calling thread runs the admin client and the sampling loop.
//! The native engine runs all producers on one tokio current-thread runtime
//! thread and all consumers on another, plus a ticker thread that wakes the
//! producers every [`TICK`] for pacing and linger (tokio's timer wheel has
//! 1 ms resolution, too coarse for sub-millisecond latencies). The rdkafka
//! engine runs one thread per producer and per consumer (plus librdkafka's
//! own).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;

use crate::kafka::consumer::{self, ConsumerSettings, Positions};
use crate::kafka::producer::{self, Control, ProducerSettings};
use crate::kafka::{Client, Metadata, Versions, topic_offsets};
use crate::measure::{CpuTime, CpuUsage};
use crate::rdkafka_engine;
use crate::stats::{Clock, Counts, Recorder, Sample};
use crate::workload::{ClientEngine, Keys, Workload};

/// Pacing tick of the native producers.
const TICK: Duration = Duration::from_micros(100);
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long consumers may take to catch up after producers stop.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long producers may take to get their last answers.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Shorter limits once the user pressed Ctrl-C.
const INTERRUPTED_TIMEOUT: Duration = Duration::from_secs(3);

/// Where and how to run a workload.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub bootstrap: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub topic_prefix: String,
    pub keep_topics: bool,
    pub quiet: bool,
    /// The broker's process, when the bench started it (CPU accounting).
    pub broker_pid: Option<u32>,
    /// Tag for progress lines ("A", "B" in comparisons).
    pub label: String,
}

/// Everything a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    pub workload: Workload,
    pub bootstrap: String,
    /// The bench started the broker (`--embedded`).
    pub embedded: bool,
    /// When the run started (wall clock), for the summary and plot title.
    pub started_at: SystemTime,
    pub topics: Vec<String>,
    pub samples: Vec<Sample>,
    /// Publish latency (send -> ack), measured window, microseconds.
    pub publish: Histogram<u64>,
    /// End-to-end latency (send -> consumer receive), microseconds; `None`
    /// in catch-up runs (records are old by design) and without consumers.
    pub end_to_end: Option<Histogram<u64>>,
    /// Acknowledged in the measured window.
    pub produced: Counts,
    /// Received in the measured window (the whole catch-up read for
    /// catch-up runs).
    pub consumed: Counts,
    pub produced_total: Counts,
    pub consumed_total: Counts,
    /// Length of the measured produce window.
    pub produce_window: Duration,
    /// Length of the measured consume window.
    pub consume_window: Duration,
    /// Records the topics' logs grew by (ListOffsets latest minus the
    /// offsets before the run).
    pub log_records_added: Option<u64>,
    pub interrupted: bool,
    /// Why the run ended early, if a client failed.
    pub failure: Option<String>,
    pub first_errors: Vec<String>,
    pub bench_cpu: CpuUsage,
    /// CPU seconds (user + system) the broker used in the measured produce
    /// window, when the bench knows its process.
    pub broker_cpu_secs: Option<f64>,
}

impl RunOutcome {
    pub fn produce_mb_per_sec(&self) -> f64 {
        self.produced.bytes as f64 / self.produce_window.as_secs_f64().max(1e-9) / 1e6
    }

    pub fn produce_records_per_sec(&self) -> f64 {
        self.produced.records as f64 / self.produce_window.as_secs_f64().max(1e-9)
    }

    pub fn consume_mb_per_sec(&self) -> f64 {
        self.consumed.bytes as f64 / self.consume_window.as_secs_f64().max(1e-9) / 1e6
    }

    pub fn consume_records_per_sec(&self) -> f64 {
        self.consumed.records as f64 / self.consume_window.as_secs_f64().max(1e-9)
    }
}

type ClientThread = JoinHandle<anyhow::Result<()>>;

struct Side {
    recorder: Arc<Recorder>,
    control: Arc<Control>,
    threads: Vec<ClientThread>,
}

impl Side {
    fn new() -> Side {
        Side {
            recorder: Arc::new(Recorder::new()),
            control: Arc::new(Control::default()),
            threads: Vec::new(),
        }
    }

    /// The first failure of a finished thread, if any finished.
    fn failure(&mut self) -> Option<String> {
        let (finished, running): (Vec<_>, Vec<_>) = self
            .threads
            .drain(..)
            .partition(|thread| thread.is_finished());
        self.threads = running;
        finished.into_iter().find_map(|thread| match thread.join() {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("{error:#}")),
            Err(_) => Some("a client thread panicked".to_owned()),
        })
    }

    /// Stop and wait for every thread; the first failure, if any.
    fn stop(&mut self) -> Option<String> {
        self.control.request_stop();
        let mut failure = None;
        for thread in self.threads.drain(..) {
            let result = match thread.join() {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("{error:#}")),
                Err(_) => Some("a client thread panicked".to_owned()),
            };
            failure = failure.or(result);
        }
        failure
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(control: Arc<Control>) -> anyhow::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bench-ticker".into())
            .spawn(move || {
                while !stop_seen.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    control.tick.notify_waiters();
                }
            })
            .context("spawning the ticker thread")?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn admin_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")
}

/// Connect to `bootstrap` and return its metadata: the fail-fast check
/// every command runs first.
pub fn check_broker(bootstrap: &str, timeout: Duration) -> anyhow::Result<()> {
    let runtime = admin_runtime()?;
    runtime.block_on(async {
        let mut client = Client::connect(bootstrap, timeout).await?;
        client.metadata(Some(&[])).await?;
        anyhow::Ok(())
    })
}

/// Run `workload` once against `options.bootstrap`.
pub fn run(
    workload: &Workload,
    options: &RunOptions,
    interrupted: &AtomicBool,
) -> anyhow::Result<RunOutcome> {
    let runtime = admin_runtime()?;
    let timeout = options.connect_timeout;
    let mut admin = runtime.block_on(Client::connect(&options.bootstrap, timeout))?;
    admin.set_timeout(options.request_timeout);
    let versions = admin.versions.clone();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let topics: Vec<String> = (0..workload.topics)
        .map(|index| {
            format!(
                "{}-{stamp}-{}-{index}",
                options.topic_prefix,
                std::process::id()
            )
        })
        .collect();
    let partitions = i32::try_from(workload.partitions).context("--partitions")?;
    for topic in &topics {
        runtime
            .block_on(admin.create_topic(
                topic,
                partitions,
                workload.replication_factor,
                &workload.topic_configs,
            ))
            .with_context(|| format!("setting up topic {topic} on {}", options.bootstrap))?;
    }
    let metadata = runtime.block_on(admin.metadata(Some(&topics)))?;
    let mut start_offsets = Vec::new();
    for topic in &topics {
        start_offsets.push(runtime.block_on(start_offsets_of(
            &metadata,
            topic,
            timeout,
            options.request_timeout,
        ))?);
    }
    let setup = Setup {
        workload,
        options,
        versions,
        metadata,
        topics: topics.clone(),
        start_offsets,
    };
    let result = setup.measure(&runtime, interrupted);
    if !options.keep_topics
        && let Err(error) = runtime.block_on(admin.delete_topics(&topics))
    {
        eprintln!("sluice-bench: warning: could not delete the bench topics: {error:#}");
    }
    result
}

/// The offsets of `topic` before the run. In a cluster a partition's
/// leader may learn of a new topic after the broker that answered Metadata
/// (UNKNOWN_TOPIC_OR_PARTITION for a moment), and a new leader answers
/// OFFSET_NOT_AVAILABLE until its high watermark reaches its epoch start:
/// ask again until `patience` has passed.
async fn start_offsets_of(
    metadata: &Metadata,
    topic: &str,
    timeout: Duration,
    patience: Duration,
) -> anyhow::Result<HashMap<i32, i64>> {
    let deadline = Instant::now() + patience;
    loop {
        match topic_offsets(metadata, topic, -1, timeout).await {
            Ok(offsets) => return Ok(offsets),
            Err(error) if Instant::now() < deadline => {
                let text = format!("{error:#}");
                if !(text.contains("UNKNOWN_TOPIC_OR_PARTITION")
                    || text.contains("OFFSET_NOT_AVAILABLE")
                    || text.contains("NOT_LEADER"))
                {
                    return Err(error);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

struct Setup<'a> {
    workload: &'a Workload,
    options: &'a RunOptions,
    versions: Versions,
    metadata: Metadata,
    topics: Vec<String>,
    start_offsets: Vec<HashMap<i32, i64>>,
}

impl Setup<'_> {
    fn leaders(&self, topic: &str) -> anyhow::Result<Vec<(i32, String)>> {
        (0..self.workload.partitions)
            .map(|partition| {
                let partition = i32::try_from(partition)?;
                let (_, address) = self.metadata.leader_address(topic, partition)?;
                Ok((partition, address))
            })
            .collect()
    }

    fn start_producers(&self, clock: Clock, side: &mut Side) -> anyhow::Result<()> {
        let workload = self.workload;
        let mut seed = 1_u64;
        match workload.client {
            ClientEngine::Native => {
                let keys = Arc::new(Keys::new(workload.keys, workload.key_count));
                let mut all = Vec::new();
                for topic in &self.topics {
                    let partitions = self.leaders(topic)?;
                    for _ in 0..workload.producers_per_topic {
                        seed += 1;
                        all.push(ProducerSettings {
                            topic: topic.clone(),
                            partitions: partitions.clone(),
                            value_size_bytes: workload.record_size_bytes,
                            keys: Arc::clone(&keys),
                            batch_size_bytes: workload.batch_size_bytes,
                            linger: workload.linger,
                            acks: workload.acks,
                            in_flight_max: usize::try_from(workload.in_flight_max)?,
                            buffer_bytes_max: workload.buffer_bytes_max,
                            rate: workload.rate_per_producer(),
                            request_timeout: self.options.request_timeout,
                            drain_timeout: DRAIN_TIMEOUT,
                            seed,
                        });
                    }
                }
                let versions = self.versions.clone();
                let recorder = Arc::clone(&side.recorder);
                let control = Arc::clone(&side.control);
                let connect_timeout = self.options.connect_timeout;
                side.threads
                    .push(spawn_runtime_thread("bench-producers", move || {
                        all.into_iter()
                            .map(|settings| {
                                producer::run(
                                    settings,
                                    versions.clone(),
                                    clock,
                                    Arc::clone(&recorder),
                                    Arc::clone(&control),
                                    connect_timeout,
                                )
                            })
                            .collect()
                    })?);
            }
            ClientEngine::Rdkafka => {
                for topic in &self.topics {
                    for _ in 0..workload.producers_per_topic {
                        seed += 1;
                        side.threads.push(rdkafka_engine::spawn_producer(
                            workload,
                            &self.options.bootstrap,
                            topic.clone(),
                            clock,
                            Arc::clone(&side.recorder),
                            Arc::clone(&side.control),
                            seed,
                        )?);
                    }
                }
            }
        }
        Ok(())
    }

    fn start_consumers(
        &self,
        clock: Clock,
        side: &mut Side,
        positions: &[Arc<Positions>],
    ) -> anyhow::Result<()> {
        let workload = self.workload;
        let consumers = workload.consumers_per_topic;
        match workload.client {
            ClientEngine::Native => {
                let mut all = Vec::new();
                for (topic, positions) in self.topics.iter().zip(positions) {
                    let leaders = self.leaders(topic)?;
                    for index in 0..consumers {
                        let assigned =
                            rdkafka_engine::assigned(workload.partitions, consumers, index);
                        all.push((
                            ConsumerSettings {
                                topic: topic.clone(),
                                partitions: leaders
                                    .iter()
                                    .filter(|(partition, _)| assigned.contains(partition))
                                    .cloned()
                                    .collect(),
                                max_wait: Duration::from_millis(100),
                                // The Java consumer's and librdkafka's
                                // defaults (fetch.max.bytes,
                                // max.partition.fetch.bytes).
                                fetch_bytes_max: 50 << 20,
                                partition_fetch_bytes_max: 1 << 20,
                                request_timeout: self.options.request_timeout,
                            },
                            Arc::clone(positions),
                        ));
                    }
                }
                let versions = self.versions.clone();
                let recorder = Arc::clone(&side.recorder);
                let control = Arc::clone(&side.control);
                let connect_timeout = self.options.connect_timeout;
                side.threads
                    .push(spawn_runtime_thread("bench-consumers", move || {
                        all.into_iter()
                            .map(|(settings, positions)| {
                                consumer::run(
                                    settings,
                                    versions.clone(),
                                    clock,
                                    Arc::clone(&recorder),
                                    positions,
                                    Arc::clone(&control),
                                    connect_timeout,
                                )
                            })
                            .collect()
                    })?);
            }
            ClientEngine::Rdkafka => {
                for (topic, positions) in self.topics.iter().zip(positions) {
                    for index in 0..consumers {
                        side.threads.push(rdkafka_engine::spawn_consumer(
                            &self.options.bootstrap,
                            topic.clone(),
                            rdkafka_engine::assigned(workload.partitions, consumers, index),
                            clock,
                            Arc::clone(&side.recorder),
                            Arc::clone(positions),
                            Arc::clone(&side.control),
                        )?);
                    }
                }
            }
        }
        Ok(())
    }

    fn end_offsets(
        &self,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Vec<HashMap<i32, i64>>> {
        self.topics
            .iter()
            .map(|topic| {
                runtime.block_on(topic_offsets(
                    &self.metadata,
                    topic,
                    -1,
                    self.options.connect_timeout,
                ))
            })
            .collect()
    }

    fn measure(
        &self,
        runtime: &tokio::runtime::Runtime,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<RunOutcome> {
        let workload = self.workload;
        let catch_up = workload.backlog_bytes;
        let warmup = if catch_up.is_some() {
            Duration::ZERO
        } else {
            workload.warmup
        };
        let started_at = SystemTime::now();
        let clock = Clock::start(warmup);
        let positions: Vec<Arc<Positions>> = self
            .start_offsets
            .iter()
            .map(|offsets| Arc::new(Positions::new(offsets)))
            .collect();
        let mut producers = Side::new();
        let mut consumers = Side::new();
        let mut sampler = Sampler::new(clock, self.options);
        let _ticker = Ticker::start(Arc::clone(&producers.control))?;
        let mut failure = None;

        if catch_up.is_none() && workload.consumers_per_topic > 0 {
            self.start_consumers(clock, &mut consumers, &positions)?;
        }
        self.start_producers(clock, &mut producers)?;

        // Produce: until warm-up + duration, the backlog is written, Ctrl-C,
        // or a client fails.
        let mut window_start = None;
        let produce_until = warmup + workload.duration;
        let window_end;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let elapsed = Duration::from_nanos(clock.now_ns());
            if window_start.is_none() && elapsed >= warmup {
                window_start = Some(WindowMark::now(&producers, &consumers, self.options));
            }
            sampler.maybe_sample(&producers, &consumers, "produce");
            failure = failure
                .or_else(|| producers.failure())
                .or_else(|| consumers.failure());
            let done = match catch_up {
                Some(bytes) => producers.recorder.snapshot().bytes >= bytes,
                None => elapsed >= produce_until,
            };
            if done || failure.is_some() || interrupted.load(Ordering::Relaxed) {
                window_end = WindowMark::now(&producers, &consumers, self.options);
                break;
            }
        }
        let window_start =
            window_start.unwrap_or_else(|| WindowMark::now(&producers, &consumers, self.options));
        let was_interrupted = || interrupted.load(Ordering::Relaxed);
        failure = failure.or_else(|| producers.stop());
        sampler.flush_line();

        let ends = self.end_offsets(runtime)?;
        let mut consume_start = window_start.clone();
        if catch_up.is_some() && failure.is_none() && !was_interrupted() {
            consume_start = WindowMark::now(&producers, &consumers, self.options);
            if !self.options.quiet {
                eprintln!("catch-up: consumers read the backlog from the start");
            }
            self.start_consumers(clock, &mut consumers, &positions)?;
        }
        // Consumers: until they have everything the logs hold.
        let mut last_progress = (Instant::now(), consumers.recorder.snapshot().records);
        if workload.consumers_per_topic > 0 {
            loop {
                let caught_up = positions
                    .iter()
                    .zip(&ends)
                    .all(|(positions, ends)| positions.reached(ends));
                if caught_up {
                    break;
                }
                failure = failure.or_else(|| consumers.failure());
                let limit = if was_interrupted() || failure.is_some() {
                    INTERRUPTED_TIMEOUT
                } else {
                    CATCH_UP_TIMEOUT
                };
                let consumed = consumers.recorder.snapshot().records;
                if consumed != last_progress.1 {
                    last_progress = (Instant::now(), consumed);
                }
                if last_progress.0.elapsed() > limit || consumers.threads.is_empty() {
                    if !was_interrupted() && failure.is_none() {
                        failure = Some(format!(
                            "consumers made no progress for {limit:?} before reaching the end \
                             of the log"
                        ));
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
                sampler.maybe_sample(&producers, &consumers, "consume");
            }
        }
        let consume_end = WindowMark::now(&producers, &consumers, self.options);
        failure = failure.or_else(|| consumers.stop());
        sampler.sample(&producers, &consumers, "end");
        sampler.flush_line();

        let log_records_added = self
            .start_offsets
            .iter()
            .zip(&ends)
            .flat_map(|(starts, ends)| {
                ends.iter()
                    .map(move |(partition, end)| end - starts.get(partition).copied().unwrap_or(0))
            })
            .sum::<i64>();
        let first_errors = [&producers, &consumers]
            .iter()
            .filter_map(|side| side.recorder.first_error())
            .collect();
        let (consumed, consume_window) = if catch_up.is_some() {
            (
                consume_end.consumed.since(consume_start.consumed),
                consume_end.at.saturating_sub(consume_start.at),
            )
        } else {
            (
                window_end.consumed.since(window_start.consumed),
                window_end.at.saturating_sub(window_start.at),
            )
        };
        let produce_window = window_end.at.saturating_sub(window_start.at);
        Ok(RunOutcome {
            workload: workload.clone(),
            bootstrap: self.options.bootstrap.clone(),
            embedded: self.options.broker_pid.is_some(),
            started_at,
            topics: self.topics.clone(),
            samples: sampler.samples,
            publish: producers.recorder.total(),
            end_to_end: (catch_up.is_none() && workload.consumers_per_topic > 0)
                .then(|| consumers.recorder.total()),
            produced: window_end.produced.since(window_start.produced),
            consumed,
            produced_total: producers.recorder.snapshot(),
            consumed_total: consumers.recorder.snapshot(),
            produce_window,
            consume_window,
            log_records_added: u64::try_from(log_records_added).ok(),
            interrupted: interrupted.load(Ordering::Relaxed),
            failure,
            first_errors,
            bench_cpu: window_end.cpu.since(window_start.cpu, produce_window),
            broker_cpu_secs: match (window_start.broker_cpu_secs, window_end.broker_cpu_secs) {
                (Some(start), Some(end)) => Some(end - start),
                _ => None,
            },
        })
    }
}

/// Counters at one instant (start or end of a measured window).
#[derive(Clone, Debug)]
struct WindowMark {
    at: Duration,
    produced: Counts,
    consumed: Counts,
    cpu: CpuTime,
    broker_cpu_secs: Option<f64>,
}

static RUN_EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl WindowMark {
    fn now(producers: &Side, consumers: &Side, options: &RunOptions) -> WindowMark {
        WindowMark {
            at: RUN_EPOCH.get_or_init(Instant::now).elapsed(),
            produced: producers.recorder.snapshot(),
            consumed: consumers.recorder.snapshot(),
            cpu: CpuTime::now(),
            broker_cpu_secs: options.broker_pid.and_then(process_cpu_secs),
        }
    }
}

/// User + system CPU seconds of process `pid` (from /proc/<pid>/stat).
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, so split at the
    // last ')'): state is field 3, utime 14, stime 15.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((user + system) / ticks)
}

/// Run the futures `make` builds on a new current-thread runtime on a new
/// thread; the thread ends with the first error or when all are done.
fn spawn_runtime_thread<F>(
    name: &str,
    make: impl FnOnce() -> Vec<F> + Send + 'static,
) -> anyhow::Result<ClientThread>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a client runtime")?;
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for future in make() {
                    tasks.spawn(future);
                }
                while let Some(result) = tasks.join_next().await {
                    result.map_err(|error| anyhow!("client task failed: {error}"))??;
                }
                Ok(())
            })
        })
        .with_context(|| format!("spawning thread {name}"))
}

/// Per-second samples and the live progress line.
struct Sampler {
    clock: Clock,
    samples: Vec<Sample>,
    last_at: Duration,
    last_produced: Counts,
    last_consumed: Counts,
    terminal: bool,
    quiet: bool,
    label: String,
    line_open: bool,
}

impl Sampler {
    fn new(clock: Clock, options: &RunOptions) -> Sampler {
        Sampler {
            clock,
            samples: Vec::new(),
            last_at: Duration::ZERO,
            last_produced: Counts::default(),
            last_consumed: Counts::default(),
            terminal: std::io::stderr().is_terminal(),
            quiet: options.quiet,
            label: options.label.clone(),
            line_open: false,
        }
    }

    fn maybe_sample(&mut self, producers: &Side, consumers: &Side, phase: &str) {
        let at = Duration::from_nanos(self.clock.now_ns());
        if at.saturating_sub(self.last_at) >= SAMPLE_INTERVAL {
            self.sample(producers, consumers, phase);
        }
    }

    fn sample(&mut self, producers: &Side, consumers: &Side, phase: &str) {
        let at = Duration::from_nanos(self.clock.now_ns());
        let interval = at.saturating_sub(self.last_at);
        if interval.is_zero() {
            return;
        }
        let produced = producers.recorder.snapshot();
        let consumed = consumers.recorder.snapshot();
        let publish = producers.recorder.take_interval();
        let end_to_end = consumers.recorder.take_interval();
        let p99 = |histogram: &Histogram<u64>| {
            (!histogram.is_empty()).then(|| histogram.value_at_quantile(0.99))
        };
        let sample = Sample {
            at_secs: at.as_secs_f64(),
            produced: produced.since(self.last_produced),
            consumed: consumed.since(self.last_consumed),
            interval_secs: interval.as_secs_f64(),
            publish_p99_us: p99(&publish),
            end_to_end_p99_us: p99(&end_to_end),
        };
        let warmup = !self.clock.is_measured(self.clock.now_ns());
        let phase = if warmup { "warm-up" } else { phase };
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("{} ", self.label)
        };
        if !self.quiet {
            let line = sample.progress_line(&format!("{label}{phase}"));
            if self.terminal {
                eprint!("\r\x1b[K{line}");
                self.line_open = true;
            } else {
                eprintln!("{line}");
            }
        }
        self.samples.push(sample);
        self.last_at = at;
        self.last_produced = produced;
        self.last_consumed = consumed;
    }

    fn flush_line(&mut self) {
        if self.line_open {
            eprintln!();
            self.line_open = false;
        }
    }
}
