//! Data replication across three real `sluice` brokers on loopback: every
//! partition has three replicas, acks=all means "fsynced on every ISR
//! member", and no fault the tests inject loses an acknowledged record,
//! duplicates one, or leaves the replicas' logs different below the high
//! watermark.
//!
//! Each broker's replication listener sits behind a [`FaultProxy`] (the
//! broker listens on one port and advertises the proxy's), so a test can
//! cut a broker off from the others' replication traffic.
//!
//! Every scenario runs an idempotent acks=all rdkafka producer writing
//! unique values (`<scenario>-<sequence>`) and keeps every delivery report;
//! at the end it reads every partition from its current leader and checks
//! that each acknowledged value sits at its acknowledged offset, that no
//! value appears twice, and (after stopping every broker) that the three
//! replicas' segment files hold the same batches byte for byte below the
//! high watermark. A failed delivery is never counted as acknowledged.
//!
//! Scenarios, one at a time (each starts three brokers; together on a small
//! machine their timeouts would measure the machine):
//! - a healthy cluster: 5,000 records, full ISRs, identical replicas;
//! - kill -9 of partition 0's leader, `SLUICE_REPLICATION_KILLS` times
//!   (default 20), under load;
//! - a follower cut off by a network blackhole (or whose replication
//!   connections are reset and refused) leaves the ISR, writes go on, and
//!   it rejoins once healed;
//! - two of three brokers killed: acks=all is refused, then resumes;
//! - a rolling restart under load;
//! - a consumer group whose coordinator is killed keeps its commits;
//! - a power loss of all three brokers;
//! - partition reassignment under load: one replica to three, a partition
//!   moved off its leader's broker, a reassignment listed and cancelled.
//!
//! Random choices come from `SLUICE_REPLICATION_SEED` (printed; set it to
//! replay).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, FindCoordinatorRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_server::admin::client::Connection;
use support::Rng;
use support::cluster::{
    Cluster, PartitionState, compare_replica_directories, compare_replicas, compare_replicas_from,
    read_replica, wait_until,
};
use support::fault_proxy::FaultProxy;
use support::kafka;

/// Nodes of every scenario's cluster (all three are controller voters).
const NODES: usize = 3;
const SESSION_TIMEOUT_MS: u64 = 3000;
const REPLICA_LAG_TIME_MAX_MS: u64 = 2000;
/// Flags of every broker: short session and lag times so that faults are
/// noticed within seconds, three replicas by default (offsets topic too),
/// and acks=all needing two of them.
const BROKER_ARGS: [&str; 18] = [
    "--group-initial-rebalance-delay-ms",
    "300",
    "--offsets-topic-partitions",
    "6",
    "--broker-heartbeat-interval-ms",
    "500",
    "--broker-session-timeout-ms",
    "3000",
    "--replica-lag-time-max-ms",
    "2000",
    "--min-insync-replicas",
    "2",
    "--default-replication-factor",
    "3",
    "--offsets-topic-replication-factor",
    "3",
    "--leader-imbalance-check-interval-ms",
    "300000",
];
const REPLICATION_FACTOR: i32 = 3;
/// How long the cluster may take to agree on something after a change
/// (a topic created, a broker killed or back, an ISR change).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long acks=all writes may stall after a single broker fails before
/// the test calls it a liveness failure (session timeout, election and
/// the producer's retry backoff fit well within it).
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);
/// The producer gives a record up after this long (and reports it failed).
const MESSAGE_TIMEOUT_MS: &str = "15000";
/// Records sent and not yet reported, at most.
const OUTSTANDING_MAX: u64 = 2000;

/// One scenario at a time (see the module comment); a failed one must not
/// stop the others, so a poisoned lock is taken anyway.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn seeded_rng(scenario: &str) -> Rng {
    let seed = Rng::seed_from_env("SLUICE_REPLICATION_SEED");
    println!("{scenario}: seed {seed} (SLUICE_REPLICATION_SEED={seed} replays it)");
    Rng::new(seed)
}

/// Three brokers, each one's replication listener behind its own proxy.
struct ReplicatedCluster {
    cluster: Cluster,
    /// Node `n`'s proxy at index `n - 1`.
    proxies: Vec<FaultProxy>,
}

impl ReplicatedCluster {
    fn start(name: &str) -> ReplicatedCluster {
        ReplicatedCluster::start_with(name, &[])
    }

    /// `start`, with `extra` broker arguments (flag, value pairs) in place
    /// of `BROKER_ARGS`' own for the same flags.
    fn start_with(name: &str, extra: &[&str]) -> ReplicatedCluster {
        let listen_ports: Vec<u16> = (0..NODES).map(|_| support::reserve_port()).collect();
        let proxies: Vec<FaultProxy> = listen_ports
            .iter()
            .map(|port| FaultProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, *port))))
            .collect();
        let node_args = |node: i32| {
            let index = usize::try_from(node - 1).unwrap();
            vec![
                "--replication-listen".to_string(),
                format!("127.0.0.1:{}", listen_ports[index]),
                "--replication-advertised".to_string(),
                proxies[index].addr().to_string(),
            ]
        };
        let args: Vec<&str> = BROKER_ARGS
            .chunks(2)
            .filter(|pair| !extra.contains(&pair[0]))
            .flatten()
            .chain(extra)
            .copied()
            .collect();
        let cluster = Cluster::start_with_node_args(name, NODES, &args, &node_args);
        ReplicatedCluster { cluster, proxies }
    }

    fn proxy(&self, node: i32) -> &FaultProxy {
        &self.proxies[usize::try_from(node - 1).unwrap()]
    }

    /// Create `topic` with three replicas per partition and
    /// min.insync.replicas 2, and wait until every ISR is full.
    fn create_topic(&mut self, topic: &str, partitions: i32) -> BTreeMap<i32, PartitionState> {
        kafka::create_topic_replicated(
            &self.bootstrap(),
            topic,
            partitions,
            REPLICATION_FACTOR,
            &[("min.insync.replicas", "2")],
        );
        let states = self.wait_for_full_isr(topic, partitions as usize, CONVERGE_TIMEOUT);
        for (partition, state) in &states {
            assert_eq!(
                state.sorted_replicas(),
                self.nodes().collect::<Vec<i32>>(),
                "{topic}/{partition} has a replica on every broker: {state:?}"
            );
        }
        states
    }
}

impl Deref for ReplicatedCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl DerefMut for ReplicatedCluster {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

// ---------------------------------------------------------------------------
// The load: an idempotent acks=all producer that keeps every report.

/// What the producer was told about one record.
struct Sent {
    sequence: u64,
    partition: i32,
    sent_at: Instant,
}

/// One delivery report.
#[derive(Clone, Debug)]
struct Outcome {
    sequence: u64,
    /// The partition the record was sent to.
    partition: i32,
    sent_at: Instant,
    reported_at: Instant,
    /// (partition, offset) where the producer says it landed, or why it
    /// was not acknowledged.
    result: Result<(i32, i64), String>,
}

#[derive(Default)]
struct Progress {
    acknowledged: AtomicU64,
    failed: AtomicU64,
    /// Per partition: the latest send time among acknowledged records.
    latest_acknowledged_send: Mutex<BTreeMap<i32, Instant>>,
}

#[derive(Clone)]
struct Recorder {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    progress: Arc<Progress>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let result = match result {
            Ok(message) => {
                self.progress.acknowledged.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut latest) = self.progress.latest_acknowledged_send.lock() {
                    let latest = latest.entry(sent.partition).or_insert(sent.sent_at);
                    *latest = (*latest).max(sent.sent_at);
                }
                Ok((message.partition(), message.offset()))
            }
            Err((error, _)) => {
                self.progress.failed.fetch_add(1, Ordering::SeqCst);
                Err(error.to_string())
            }
        };
        if let Ok(mut outcomes) = self.outcomes.lock() {
            outcomes.push(Outcome {
                sequence: sent.sequence,
                partition: sent.partition,
                sent_at: sent.sent_at,
                reported_at: Instant::now(),
                result,
            });
        }
    }
}

/// An acknowledged record: its value at (partition, offset).
#[derive(Clone, Debug)]
struct Acked {
    partition: i32,
    offset: i64,
    value: String,
}

/// Everything the load's producer(s) reported.
struct LoadOutcome {
    prefix: String,
    /// Records handed to the producer (sequences `0..sent`).
    sent: u64,
    outcomes: Vec<Outcome>,
    /// Producers created (a fatal error makes the load start a new one).
    producer_count: u32,
    fatal_errors: Vec<String>,
    started: Instant,
    stopped: Instant,
}

impl LoadOutcome {
    fn value(&self, sequence: u64) -> String {
        format!("{}-{sequence}", self.prefix)
    }

    fn acknowledged(&self) -> Vec<Acked> {
        self.outcomes
            .iter()
            .filter_map(|outcome| {
                let (partition, offset) = outcome.result.clone().ok()?;
                assert_eq!(
                    partition, outcome.partition,
                    "record {} was sent to partition {} and acknowledged on {partition}",
                    outcome.sequence, outcome.partition
                );
                Some(Acked {
                    partition,
                    offset,
                    value: self.value(outcome.sequence),
                })
            })
            .collect()
    }

    fn failed_count(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|outcome| outcome.result.is_err())
            .count()
    }

    /// Counts, failure reasons and the longest stretch without an ack.
    fn summary(&self) -> String {
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for outcome in &self.outcomes {
            if let Err(reason) = &outcome.result {
                *reasons.entry(reason.as_str()).or_default() += 1;
            }
        }
        let (gap, gap_end) = self.longest_gap_without_ack();
        format!(
            "{}: {} sent, {} acknowledged, {} failed, {} unreported, {} producer(s) \
             (fatal errors: {:?}), over {:?}; failures: {reasons:?}; longest time without an \
             acknowledgement {gap:?} (ending {:?} after the start)",
            self.prefix,
            self.sent,
            self.outcomes.len() - self.failed_count(),
            self.failed_count(),
            self.sent - self.outcomes.len() as u64,
            self.producer_count,
            self.fatal_errors,
            self.stopped - self.started,
            gap_end.map(|end| end - self.started),
        )
    }

    /// The longest time between two acknowledgements (counting the load's
    /// start and end as bounds), and when it ended.
    fn longest_gap_without_ack(&self) -> (Duration, Option<Instant>) {
        let mut times: Vec<Instant> = self
            .outcomes
            .iter()
            .filter(|outcome| outcome.result.is_ok())
            .map(|outcome| outcome.reported_at)
            .collect();
        times.push(self.started);
        times.push(self.stopped);
        times.sort();
        times
            .windows(2)
            .map(|pair| (pair[1] - pair[0], Some(pair[1])))
            .max_by_key(|(gap, _)| *gap)
            .unwrap_or((Duration::ZERO, None))
    }
}

/// An idempotent acks=all producer on its own thread, writing
/// `<prefix>-<sequence>` round robin over the partitions of a topic at a
/// steady rate until finished.
struct Load {
    prefix: String,
    partitions: i32,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    /// Every report so far (the thread's recorder appends to it).
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<JoinHandle<LoadOutcome>>,
}

impl Load {
    fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        prefix: &str,
        rate_per_second: u64,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let recorder = Recorder {
                outcomes: Arc::clone(&outcomes),
                progress: Arc::clone(&progress),
            };
            let bootstrap = bootstrap.to_string();
            let topic = topic.to_string();
            let prefix = prefix.to_string();
            std::thread::Builder::new()
                .name(format!("load-{prefix}"))
                .spawn(move || {
                    run_load(
                        &bootstrap,
                        &topic,
                        partitions,
                        &prefix,
                        rate_per_second,
                        &stop,
                        recorder,
                    )
                })
                .expect("spawning the load thread")
        };
        Load {
            prefix: prefix.to_string(),
            partitions,
            stop,
            progress,
            outcomes,
            thread: Some(thread),
        }
    }

    /// The reports so far.
    fn outcomes_so_far(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// The records acknowledged so far.
    fn acknowledged_so_far(&self) -> Vec<Acked> {
        self.outcomes_so_far()
            .into_iter()
            .filter_map(|outcome| {
                let (partition, offset) = outcome.result.ok()?;
                Some(Acked {
                    partition,
                    offset,
                    value: format!("{}-{}", self.prefix, outcome.sequence),
                })
            })
            .collect()
    }

    fn acknowledged(&self) -> u64 {
        self.progress.acknowledged.load(Ordering::SeqCst)
    }

    fn latest_acknowledged_send(&self) -> BTreeMap<i32, Instant> {
        self.progress
            .latest_acknowledged_send
            .lock()
            .unwrap()
            .clone()
    }

    /// Wait until `count` records in all were acknowledged.
    fn wait_for_acks(&self, count: u64, what: &str, timeout: Duration) {
        wait_until(what, timeout, || {
            let acknowledged = self.acknowledged();
            if acknowledged >= count {
                Ok(())
            } else {
                Err(format!(
                    "{acknowledged} acknowledged, {} failed",
                    self.progress.failed.load(Ordering::SeqCst)
                ))
            }
        });
    }

    /// Wait until a record sent after `instant` was acknowledged.
    /// Wait until, on every partition the load writes to, a record sent
    /// after `instant` was acknowledged.
    fn wait_for_ack_sent_after(&self, instant: Instant, what: &str, timeout: Duration) {
        wait_until(what, timeout, || {
            let latest = self.latest_acknowledged_send();
            let waiting: Vec<i32> = (0..self.partitions)
                .filter(|partition| latest.get(partition).is_none_or(|sent| *sent <= instant))
                .collect();
            if waiting.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "no record sent since acknowledged on partitions {waiting:?}; {} \
                     acknowledged, {} failed",
                    self.acknowledged(),
                    self.progress.failed.load(Ordering::SeqCst)
                ))
            }
        });
    }

    /// Stop sending, wait for every report (or its timeout) and return
    /// what happened.
    fn finish(mut self) -> LoadOutcome {
        self.stop.store(true, Ordering::SeqCst);
        let outcome = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("the load thread panicked");
        println!("{}", outcome.summary());
        outcome
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn load_producer(bootstrap: &str, recorder: &Recorder) -> BaseProducer<Recorder> {
    let mut config = kafka::config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "50")
        .set("retry.backoff.max.ms", "500")
        .set("linger.ms", "5")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("reconnect.backoff.max.ms", "500")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
    config
        .create_with_context(recorder.clone())
        .expect("creating the load's producer")
}

fn run_load(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    prefix: &str,
    rate_per_second: u64,
    stop: &AtomicBool,
    recorder: Recorder,
) -> LoadOutcome {
    let started = Instant::now();
    let mut sequence: u64 = 0;
    let mut producer_count = 1;
    let mut fatal_errors = Vec::new();
    let mut producer = load_producer(bootstrap, &recorder);
    // A token bucket: `rate_per_second`, bursts of at most a tenth of it.
    let burst_max = (rate_per_second / 10).max(1) as f64;
    let mut tokens = 0.0_f64;
    let mut refilled = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if let Some((code, reason)) = producer.client().fatal_error() {
            // Whatever was outstanding is reported failed (or never): not
            // acknowledged. A new producer (new producer id) goes on.
            fatal_errors.push(format!("{code:?}: {reason}"));
            producer.purge(PurgeConfig::default().queue().inflight());
            let _ = producer.flush(Duration::from_secs(10));
            producer = load_producer(bootstrap, &recorder);
            producer_count += 1;
            continue;
        }
        let now = Instant::now();
        tokens = (tokens + (now - refilled).as_secs_f64() * rate_per_second as f64).min(burst_max);
        refilled = now;
        let reported = recorder.outcomes.lock().unwrap().len() as u64;
        while tokens >= 1.0 && sequence - reported < OUTSTANDING_MAX {
            let partition = i32::try_from(sequence % partitions as u64).unwrap();
            let value = format!("{prefix}-{sequence}");
            let sent = Box::new(Sent {
                sequence,
                partition,
                sent_at: Instant::now(),
            });
            let record: BaseRecord<'_, [u8], [u8], Box<Sent>> =
                BaseRecord::with_opaque_to(topic, sent)
                    .partition(partition)
                    .payload(value.as_bytes());
            match producer.send(record) {
                Ok(()) => {
                    sequence += 1;
                    tokens -= 1.0;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                // Never handed over (a fatal state, seen above next time):
                // the sequence number is used again.
                Err(_) => break,
            }
        }
        producer.poll(Duration::from_millis(5));
    }
    if producer.flush(Duration::from_secs(60)).is_err() {
        producer.purge(PurgeConfig::default().queue().inflight());
        let _ = producer.flush(Duration::from_secs(10));
    }
    drop(producer);
    let outcomes = recorder.outcomes.lock().unwrap().clone();
    LoadOutcome {
        prefix: prefix.to_string(),
        sent: sequence,
        outcomes,
        producer_count,
        fatal_errors,
        started,
        stopped: Instant::now(),
    }
}

// ---------------------------------------------------------------------------
// Checks.

/// ListOffsets (earliest, latest) of a partition from its leader.
fn try_watermarks(bootstrap: &str, topic: &str, partition: i32) -> Result<(i64, i64), String> {
    let consumer: BaseConsumer = kafka::config(bootstrap)
        .create()
        .map_err(|error| error.to_string())?;
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .map_err(|error| error.to_string())
}

/// Read `topic`/`partition` by manual assignment from `from` up to
/// `until` (exclusive). Client errors (a broker that went away, a leader
/// that moved) are retried, not fatal: only a lack of progress for
/// [`CONVERGE_TIMEOUT`] fails. Offsets must increase.
fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: i64,
    until: i64,
) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = kafka::config(bootstrap)
        .set("group.id", "sluice-replication-reader-unused")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
        .create()
        .expect("creating a reader");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(from))
        .unwrap();
    consumer.assign(&assignment).expect("assign");
    let mut records: Vec<(i64, String)> = Vec::new();
    let mut last_progress = Instant::now();
    let mut errors: Vec<String> = Vec::new();
    while records.last().map_or(from, |(offset, _)| offset + 1) < until {
        assert!(
            last_progress.elapsed() < CONVERGE_TIMEOUT,
            "reading {topic}/{partition} from {from} to {until}: no progress for \
             {CONVERGE_TIMEOUT:?} after {} records (last offset {:?}); errors: {:?}",
            records.len(),
            records.last().map(|(offset, _)| offset),
            &errors[errors.len().saturating_sub(5)..]
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if let Some((last, _)) = records.last() {
                    assert!(
                        message.offset() > *last,
                        "{topic}/{partition}: offset {} after {last} (offsets go backwards)",
                        message.offset()
                    );
                }
                last_progress = Instant::now();
                let value =
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
                records.push((message.offset(), value));
            }
            Some(Err(error)) => errors.push(error.to_string()),
            None => {}
        }
    }
    records
}

/// The bootstrap list of the brokers that are running.
fn running_bootstrap(cluster: &mut Cluster) -> String {
    cluster
        .running()
        .into_iter()
        .map(|node| cluster.broker(node).bootstrap())
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `ack` is stored as its acknowledgement says: at its offset, or,
/// when the client reported no offset (librdkafka's -1001: an idempotent
/// batch acknowledged implicitly because a later batch of the same producer
/// was, after the answer to its own request was lost), exactly once in its
/// partition.
fn stored_as_acknowledged(
    ack: &Acked,
    values: &HashMap<(i32, i64), String>,
    places: &HashMap<String, Vec<(i32, i64)>>,
) -> bool {
    if ack.offset >= 0 {
        return values.get(&(ack.partition, ack.offset)) == Some(&ack.value);
    }
    places
        .get(&ack.value)
        .is_some_and(|places| places.len() == 1 && places[0].0 == ack.partition)
}

/// Read every partition of `topic` from its leader up to the high
/// watermark and check `acked`: each value at its acknowledged offset, no
/// value twice anywhere in the topic. The high watermarks read.
fn verify_records(
    cluster: &mut Cluster,
    topic: &str,
    partitions: i32,
    acked: &[Acked],
) -> BTreeMap<i32, i64> {
    let bootstrap = running_bootstrap(cluster);
    let mut high_watermarks = BTreeMap::new();
    let mut places: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    let mut values: HashMap<(i32, i64), String> = HashMap::new();
    for partition in 0..partitions {
        let (low, high) = wait_until(
            &format!("ListOffsets of {topic}/{partition}"),
            CONVERGE_TIMEOUT,
            || try_watermarks(&bootstrap, topic, partition),
        );
        for (offset, value) in read_partition(&bootstrap, topic, partition, low, high) {
            places
                .entry(value.clone())
                .or_default()
                .push((partition, offset));
            values.insert((partition, offset), value);
        }
        high_watermarks.insert(partition, high);
    }
    let mut duplicates: Vec<(&String, &Vec<(i32, i64)>)> = places
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .collect();
    duplicates.sort();
    let missing: Vec<String> = acked
        .iter()
        .filter(|ack| !stored_as_acknowledged(ack, &values, &places))
        .map(|ack| {
            format!(
                "{} acknowledged at {}/{} (high watermark {:?}): found {:?} there, the value at {:?}",
                ack.value,
                ack.partition,
                ack.offset,
                high_watermarks.get(&ack.partition),
                values.get(&(ack.partition, ack.offset)),
                places.get(&ack.value)
            )
        })
        .collect();
    println!(
        "{topic}: {} records read (high watermarks {high_watermarks:?}), {} acknowledged \
         checked: {} missing or misplaced, {} values duplicated",
        values.len(),
        acked.len(),
        missing.len(),
        duplicates.len()
    );
    assert!(
        missing.is_empty() && duplicates.is_empty(),
        "{topic}: {} acknowledged records missing or misplaced (first 20: {:#?}); {} values \
         stored more than once (first 20: {:?})",
        missing.len(),
        &missing[..missing.len().min(20)],
        duplicates.len(),
        &duplicates[..duplicates.len().min(20)]
    );
    high_watermarks
}

/// Wait for full ISRs, stop every broker cleanly and compare the three
/// replicas of every partition below `high_watermarks`.
fn stop_and_compare_replicas(
    cluster: &mut Cluster,
    topic: &str,
    high_watermarks: &BTreeMap<i32, i64>,
) {
    let states = cluster.wait_for_full_isr(topic, high_watermarks.len(), CONVERGE_TIMEOUT);
    cluster.stop_all();
    for (partition, high_watermark) in high_watermarks {
        let replicas = &states[partition].replicas;
        match compare_replicas(cluster, topic, *partition, replicas, *high_watermark) {
            Ok(batches) => println!(
                "{topic}/{partition}: replicas {replicas:?} byte-identical below {high_watermark} \
                 ({batches} batches)"
            ),
            Err(difference) => panic!("replicas differ: {difference}"),
        }
    }
}

/// A running broker other than `except` that answers; for reads.
fn the_leader_of(cluster: &mut Cluster, topic: &str, partition: i32, except: i32) -> Option<i32> {
    for node in cluster.running() {
        if node == except {
            continue;
        }
        if let Some(state) = cluster.partition_state(node, topic, partition)
            && state.error_code == 0
            && state.leader >= 0
            && state.leader != except
        {
            return Some(state.leader);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// The proxy itself.

/// An echo server on loopback counting the connections and bytes it got.
struct Echo {
    address: SocketAddr,
    received_bytes: Arc<AtomicUsize>,
    accepted_count: Arc<AtomicUsize>,
}

fn start_echo() -> Echo {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let address = listener.local_addr().unwrap();
    let received_bytes = Arc::new(AtomicUsize::new(0));
    let accepted_count = Arc::new(AtomicUsize::new(0));
    let (received, accepted) = (Arc::clone(&received_bytes), Arc::clone(&accepted_count));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            accepted.fetch_add(1, Ordering::SeqCst);
            let received = Arc::clone(&received);
            std::thread::spawn(move || {
                let mut buffer = [0_u8; 4096];
                loop {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(count) => {
                            received.fetch_add(count, Ordering::SeqCst);
                            if stream.write_all(&buffer[..count]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Echo {
        address,
        received_bytes,
        accepted_count,
    }
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).expect("connecting to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    stream
}

/// Read exactly `expected.len()` bytes within a few seconds.
fn read_echo(stream: &mut TcpStream, expected: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buffer = [0_u8; 256];
    while got.len() < expected.len() {
        if Instant::now() > deadline {
            return Err(format!("got {got:?} of {expected:?}"));
        }
        match stream.read(&mut buffer) {
            Ok(0) => return Err(format!("end of stream after {got:?}")),
            Ok(count) => got.extend_from_slice(&buffer[..count]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => return Err(format!("{error} after {got:?}")),
        }
    }
    if got == expected {
        Ok(())
    } else {
        Err(format!("got {got:?}, expected {expected:?}"))
    }
}

/// Whether `stream` delivers nothing for `window` (no byte, no end).
fn stays_silent(stream: &mut TcpStream, window: Duration) -> Result<(), String> {
    let deadline = Instant::now() + window;
    let mut buffer = [0_u8; 256];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return Err("the connection ended".to_string()),
            Ok(count) => return Err(format!("{count} bytes delivered")),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => return Err(format!("the connection failed: {error}")),
        }
    }
    Ok(())
}

/// Whether `stream` was closed by the other side (end of stream or reset)
/// within a few seconds.
fn is_closed(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buffer = [0_u8; 256];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => return false,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn the_fault_proxy_forwards_blackholes_and_resets_connections() {
    let echo = start_echo();
    let proxy = FaultProxy::start(echo.address);

    // pass: both directions forwarded.
    let mut first = connect(&proxy);
    first.write_all(b"hello").unwrap();
    read_echo(&mut first, b"hello").expect("pass forwards both ways");
    assert_eq!(echo.received_bytes.load(Ordering::SeqCst), 5);

    // blackhole: the open connection stays open, nothing arrives either
    // way; a new connection is accepted but never reaches the target.
    proxy.blackhole();
    let accepted_before = echo.accepted_count.load(Ordering::SeqCst);
    first.write_all(b"cut").unwrap();
    let mut during = connect(&proxy);
    during.write_all(b"new").unwrap();
    stays_silent(&mut first, Duration::from_millis(800)).expect("an open connection is cut");
    stays_silent(&mut during, Duration::from_millis(300)).expect("a new connection is cut");
    assert_eq!(
        echo.received_bytes.load(Ordering::SeqCst),
        5,
        "nothing reaches the target during the cut"
    );
    assert_eq!(
        echo.accepted_count.load(Ordering::SeqCst),
        accepted_before,
        "a connection made during the cut does not reach the target"
    );

    // pass again: new connections work, and held bytes arrive in order.
    proxy.pass();
    let mut after = connect(&proxy);
    after.write_all(b"again").unwrap();
    read_echo(&mut after, b"again").expect("a new connection after the cut works");
    read_echo(&mut first, b"cut").expect("bytes held during the cut are delivered");
    read_echo(&mut during, b"new").expect("a connection held during the cut goes through");
    // The proxy counts a chunk after writing it, so the echo can arrive
    // a moment before the count does.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.forwarded_bytes() < 2 * (5 + 3 + 3 + 5) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(proxy.forwarded_bytes(), 2 * (5 + 3 + 3 + 5));

    // reset: every open connection is closed and new ones are refused.
    proxy.reset();
    assert!(is_closed(&mut first), "reset closes open connections");
    assert!(is_closed(&mut after), "reset closes open connections");
    let mut refused = connect(&proxy);
    let _ = refused.write_all(b"x");
    assert!(is_closed(&mut refused), "reset refuses new connections");
    proxy.pass();
    let mut healed = connect(&proxy);
    healed.write_all(b"back").unwrap();
    read_echo(&mut healed, b"back").expect("pass after reset accepts again");
}

/// A record batch v2 of `record_count` records at `base_offset` with a
/// valid CRC-32C (the records themselves are opaque bytes here).
fn fake_batch(base_offset: i64, leader_epoch: i32, record_count: i32, body: &[u8]) -> Vec<u8> {
    let mut batch = Vec::new();
    batch.extend_from_slice(&base_offset.to_be_bytes());
    batch.extend_from_slice(&0_i32.to_be_bytes()); // batchLength, below
    batch.extend_from_slice(&leader_epoch.to_be_bytes());
    batch.push(2); // magic
    batch.extend_from_slice(&0_u32.to_be_bytes()); // crc, below
    batch.extend_from_slice(&0_i16.to_be_bytes()); // attributes
    batch.extend_from_slice(&(record_count - 1).to_be_bytes()); // lastOffsetDelta
    batch.extend_from_slice(&0_i64.to_be_bytes()); // baseTimestamp
    batch.extend_from_slice(&0_i64.to_be_bytes()); // maxTimestamp
    batch.extend_from_slice(&(-1_i64).to_be_bytes()); // producerId
    batch.extend_from_slice(&(-1_i16).to_be_bytes()); // producerEpoch
    batch.extend_from_slice(&(-1_i32).to_be_bytes()); // baseSequence
    batch.extend_from_slice(&record_count.to_be_bytes());
    assert_eq!(batch.len(), 61);
    batch.extend_from_slice(body);
    let length = i32::try_from(batch.len() - 12).unwrap();
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Write `segments` (base offset, batches) into a fresh replica directory,
/// each segment followed by preallocated zeros.
fn write_replica(directory: &std::path::Path, segments: &[(i64, Vec<Vec<u8>>)]) {
    let _ = std::fs::remove_dir_all(directory);
    std::fs::create_dir_all(directory).unwrap();
    for (base, batches) in segments {
        let mut bytes: Vec<u8> = batches.concat();
        bytes.resize(bytes.len() + 4096, 0);
        std::fs::write(directory.join(format!("{base:020}.log")), bytes).unwrap();
    }
}

#[test]
fn the_replica_comparison_finds_a_differing_byte_a_torn_batch_and_a_short_replica() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("replica-comparison-{}", std::process::id()));
    let batches: Vec<Vec<u8>> = (0..3)
        .map(|index| fake_batch(index * 5, 1, 5, format!("records {index}").as_bytes()))
        .collect();
    let directory = |node: i32| root.join(format!("node-{node}"));
    let nodes = |count: i32| -> Vec<(i32, std::path::PathBuf)> {
        (1..=count).map(|node| (node, directory(node))).collect()
    };
    write_replica(&directory(1), &[(0, batches.clone())]);
    // The same batches in two segments.
    write_replica(
        &directory(2),
        &[(0, batches[..1].to_vec()), (5, batches[1..].to_vec())],
    );
    write_replica(&directory(3), &[(0, batches.clone())]);
    assert_eq!(compare_replica_directories("t-0", &nodes(3), 15), Ok(3));
    assert_eq!(compare_replica_directories("t-0", &nodes(3), 10), Ok(2));

    // Another leader epoch stamp (outside the CRC): a difference.
    let mut restamped = batches.clone();
    restamped[2] = fake_batch(10, 2, 5, b"records 2");
    write_replica(&directory(3), &[(0, restamped)]);
    let error = compare_replica_directories("t-0", &nodes(3), 15).unwrap_err();
    assert!(error.contains("batch 2 differs"), "{error}");
    assert_eq!(compare_replica_directories("t-0", &nodes(3), 10), Ok(2));

    // A torn last batch (bad CRC) leaves the replica short of the HW.
    let mut torn = batches.clone();
    let last = torn[2].len() - 1;
    torn[2][last] ^= 0xff;
    write_replica(&directory(3), &[(0, torn)]);
    let error = compare_replica_directories("t-0", &nodes(3), 15).unwrap_err();
    assert!(
        error.contains("below the high watermark") && error.contains("CRC-32C"),
        "{error}"
    );
    assert_eq!(compare_replica_directories("t-0", &nodes(3), 10), Ok(2));

    // A replica that lacks the last batch.
    write_replica(&directory(3), &[(0, batches[..2].to_vec())]);
    let error = compare_replica_directories("t-0", &nodes(3), 15).unwrap_err();
    assert!(error.contains("below the high watermark"), "{error}");
    std::fs::remove_dir_all(&root).unwrap();
}

// ---------------------------------------------------------------------------
// Scenarios.

#[test]
fn three_replicas_of_four_partitions_are_byte_identical_after_5000_acks_all_records() {
    const TOPIC: &str = "replicated-basic";
    const PARTITIONS: i32 = 4;
    const RECORDS: usize = 5000;
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = ReplicatedCluster::start("replication-basic");
    cluster.create_topic(TOPIC, PARTITIONS);

    let records: Vec<kafka::Record> = (0..RECORDS)
        .map(|index| kafka::Record {
            key: None,
            value: Some(format!("basic-{index}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    let (producer, reports) = kafka::producer(
        &cluster.bootstrap(),
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            // Many batches per partition, for the replica comparison.
            ("linger.ms", "0"),
            ("batch.num.messages", "50"),
        ],
    );
    for (index, record) in records.iter().enumerate() {
        let partition = i32::try_from(index).unwrap() % PARTITIONS;
        kafka::send(&producer, TOPIC, Some(partition), index, record);
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .unwrap_or_else(|error| panic!("flushing the producer: {error}"));
    let reports = std::mem::take(&mut *reports.0.lock().unwrap());
    assert_eq!(reports.len(), RECORDS, "one delivery report per record");
    let acked: Vec<Acked> = reports
        .into_iter()
        .map(|(index, outcome)| {
            let (partition, offset) = outcome.unwrap_or_else(|error| {
                panic!("record {index} was not acknowledged by a healthy cluster: {error}")
            });
            assert_eq!(partition, i32::try_from(index).unwrap() % PARTITIONS);
            Acked {
                partition,
                offset,
                value: format!("basic-{index}"),
            }
        })
        .collect();

    let states = cluster.wait_for_full_isr(TOPIC, PARTITIONS as usize, CONVERGE_TIMEOUT);
    for (partition, state) in &states {
        assert_eq!(
            state.isr.len(),
            3,
            "{TOPIC}/{partition}: three in-sync replicas: {state:?}"
        );
    }
    let high_watermarks = verify_records(&mut cluster, TOPIC, PARTITIONS, &acked);
    assert_eq!(
        high_watermarks.values().sum::<i64>(),
        RECORDS as i64,
        "every record once, nothing else: {high_watermarks:?}"
    );
    stop_and_compare_replicas(&mut cluster, TOPIC, &high_watermarks);
    println!("basic scenario took {:?}", started.elapsed());
}

#[test]
fn kill_9_of_partition_0_leader_again_and_again_under_load_loses_no_acknowledged_record() {
    const TOPIC: &str = "replicated-kills";
    const PARTITIONS: i32 = 3;
    let kills: usize = std::env::var("SLUICE_REPLICATION_KILLS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20);
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = ReplicatedCluster::start("replication-kills");
    let mut states = cluster.create_topic(TOPIC, PARTITIONS);
    let load = Load::start(&cluster.bootstrap(), TOPIC, PARTITIONS, "kills", 300);
    load.wait_for_acks(300, "acks before the first kill", CONVERGE_TIMEOUT);

    for round in 1..=kills {
        let leader = states[&0].leader;
        let killed_at = Instant::now();
        cluster.kill9(leader);
        let successor = wait_until(
            &format!("round {round}: a new leader of {TOPIC}/0 after kill -9 of {leader}"),
            CONVERGE_TIMEOUT,
            || {
                the_leader_of(&mut cluster, TOPIC, 0, leader)
                    .ok_or("no other leader yet".to_string())
            },
        );
        let elected_after = killed_at.elapsed();
        load.wait_for_ack_sent_after(
            killed_at,
            &format!("round {round}: acks=all writes resume with two of three brokers"),
            RESUME_TIMEOUT,
        );
        let resumed_after = killed_at.elapsed();
        cluster.start_again(leader);
        states = cluster.wait_for_full_isr(TOPIC, PARTITIONS as usize, CONVERGE_TIMEOUT);
        println!(
            "round {round}/{kills}: killed leader {leader}; {successor} elected after \
             {elected_after:?}, writes resumed after {resumed_after:?}, {leader} back in every \
             ISR after {:?}; {} acknowledged so far",
            killed_at.elapsed(),
            load.acknowledged()
        );
    }

    let outcome = load.finish();
    let high_watermarks = verify_records(&mut cluster, TOPIC, PARTITIONS, &outcome.acknowledged());
    stop_and_compare_replicas(&mut cluster, TOPIC, &high_watermarks);
    println!("{kills} kills scenario took {:?}", started.elapsed());
}

#[test]
fn a_follower_cut_off_leaves_the_isr_while_writes_go_on_and_rejoins_once_healed() {
    let _serial = serial();
    cut_off_a_follower("cut", FaultProxy::blackhole, 0);
}

#[test]
fn a_follower_whose_replication_connections_are_reset_and_refused_leaves_the_isr_and_rejoins() {
    let _serial = serial();
    cut_off_a_follower("reset", FaultProxy::reset, 0);
}

/// Cut a follower of a one-partition topic off from its leader with `cut`
/// on the proxy in front of its replication listener: it leaves the ISR
/// within the lag time (and some), acks=all writes go on with two, and
/// once the proxy passes again it catches up and rejoins; nothing
/// acknowledged is lost and the replicas end identical.
/// A follower cut off while 24 MiB go to another topic falls far behind:
/// more than the leader keeps in memory (two 1 MiB write chunks per log),
/// so it catches up from the leader's disk once healed.
#[test]
fn a_follower_far_behind_catches_up_from_the_leaders_disk() {
    cut_off_a_follower("far-behind", FaultProxy::blackhole, 24 << 20);
}

/// Write `bytes` to `topic` (one partition) in 16 KiB acks=all records;
/// returns how many were acknowledged.
fn bulk_write(bootstrap: &str, topic: &str, bytes: usize) -> usize {
    use rdkafka::producer::{BaseRecord, Producer};
    let (producer, reports) = kafka::producer(
        bootstrap,
        &[
            ("acks", "all"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "60000"),
        ],
    );
    let value = vec![b'x'; 16 << 10];
    for index in 0..bytes / value.len() {
        let key = index.to_string();
        loop {
            let record = BaseRecord::with_opaque_to(topic, Box::new(index))
                .partition(0)
                .key(&key)
                .payload(&value);
            match producer.send(record) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    let _ = producer.flush(Duration::from_secs(60));
    let reports = reports.0.lock().unwrap();
    reports
        .iter()
        .filter(|(_, outcome)| outcome.is_ok())
        .count()
}

fn cut_off_a_follower(name: &str, cut: fn(&FaultProxy), bulk_bytes: usize) {
    const PARTITIONS: i32 = 1;
    let topic = format!("replicated-{name}");
    let topic = topic.as_str();
    let started = Instant::now();
    let mut rng = seeded_rng(&format!("{name} follower"));
    let mut cluster = ReplicatedCluster::start(&format!("replication-{name}"));
    let states = cluster.create_topic(topic, PARTITIONS);
    let leader = states[&0].leader;
    let followers: Vec<i32> = cluster.nodes().filter(|node| *node != leader).collect();
    let follower = followers[rng.below(followers.len() as u64) as usize];
    let load = Load::start(&cluster.bootstrap(), topic, PARTITIONS, name, 300);
    load.wait_for_acks(300, "acks before the cut", CONVERGE_TIMEOUT);
    assert!(
        cluster.proxy(follower).forwarded_bytes() > 0,
        "replication to follower {follower} goes through the proxy it advertises \
         (--replication-advertised {})",
        cluster.proxy(follower).addr()
    );

    let bulk_topic = format!("{topic}-bulk");
    if bulk_bytes > 0 {
        cluster.create_topic(&bulk_topic, 1);
    }
    cut(cluster.proxy(follower));
    let cut_at = Instant::now();
    let expected_isr: Vec<i32> = {
        let mut isr = followers
            .iter()
            .copied()
            .filter(|node| *node != follower)
            .chain([leader])
            .collect::<Vec<i32>>();
        isr.sort_unstable();
        isr
    };
    let shrink_timeout = Duration::from_millis(REPLICA_LAG_TIME_MAX_MS) + Duration::from_secs(10);
    wait_until(
        &format!(
            "the ISR of {topic}/0 shrinks to {expected_isr:?} once follower {follower} is cut off"
        ),
        shrink_timeout,
        || match cluster.isr(leader, topic, 0) {
            Some(isr) if isr == expected_isr => Ok(()),
            other => Err(format!("ISR {other:?}")),
        },
    );
    let shrunk_at = Instant::now();
    println!(
        "follower {follower} (leader {leader}) left the ISR {:?} after the cut \
         (replica.lag.time.max.ms {REPLICA_LAG_TIME_MAX_MS})",
        shrunk_at - cut_at
    );
    load.wait_for_ack_sent_after(
        shrunk_at,
        "acks=all writes go on with the ISR of two",
        RESUME_TIMEOUT,
    );
    let acknowledged_during_cut = load.acknowledged();
    if bulk_bytes > 0 {
        let acknowledged = bulk_write(&cluster.bootstrap(), &bulk_topic, bulk_bytes);
        println!(
            "{acknowledged} bulk records of 16 KiB acknowledged while follower {follower} is cut off"
        );
        assert!(acknowledged > 0, "bulk writes go on with the ISR of two");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cluster.isr(leader, topic, 0),
        Some(expected_isr.clone()),
        "the cut-off follower stays out of the ISR"
    );

    cluster.proxy(follower).pass();
    let healed_at = Instant::now();
    cluster.wait_for_full_isr(topic, PARTITIONS as usize, CONVERGE_TIMEOUT);
    println!(
        "follower {follower} caught up and rejoined the ISR {:?} after the cut healed \
         ({} records acknowledged during the cut)",
        healed_at.elapsed(),
        acknowledged_during_cut
    );
    load.wait_for_ack_sent_after(
        Instant::now(),
        "acks=all writes go on after the follower rejoined",
        RESUME_TIMEOUT,
    );

    let outcome = load.finish();
    let high_watermarks = verify_records(&mut cluster, topic, PARTITIONS, &outcome.acknowledged());
    if bulk_bytes > 0 {
        let bootstrap = running_bootstrap(&mut cluster);
        let (_, bulk_high_watermark) = wait_until(
            &format!("ListOffsets of {bulk_topic}/0"),
            CONVERGE_TIMEOUT,
            || try_watermarks(&bootstrap, &bulk_topic, 0),
        );
        let states = cluster.wait_for_full_isr(&bulk_topic, 1, CONVERGE_TIMEOUT);
        let replicas = states[&0].replicas.clone();
        let isr_states = cluster.wait_for_full_isr(topic, PARTITIONS as usize, CONVERGE_TIMEOUT);
        cluster.stop_all();
        for (partition, high_watermark) in &high_watermarks {
            compare_replicas(
                &cluster,
                topic,
                *partition,
                &isr_states[partition].replicas,
                *high_watermark,
            )
            .unwrap_or_else(|difference| panic!("replicas differ: {difference}"));
        }
        let batches = compare_replicas(&cluster, &bulk_topic, 0, &replicas, bulk_high_watermark)
            .unwrap_or_else(|difference| panic!("bulk replicas differ: {difference}"));
        println!(
            "{bulk_topic}/0: replicas {replicas:?} byte-identical below {bulk_high_watermark} \
             ({batches} batches), the cut-off follower included"
        );
    } else {
        stop_and_compare_replicas(&mut cluster, topic, &high_watermarks);
    }
    println!("{name} scenario took {:?}", started.elapsed());
}

#[test]
fn with_two_of_three_brokers_killed_acks_all_is_refused_and_resumes_after_their_restart() {
    const TOPIC: &str = "replicated-minority";
    const PARTITIONS: i32 = 1;
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = ReplicatedCluster::start("replication-minority");
    let states = cluster.create_topic(TOPIC, PARTITIONS);
    let survivor = states[&0].leader;
    let victims: Vec<i32> = cluster.nodes().filter(|node| *node != survivor).collect();
    let load = Load::start(&cluster.bootstrap(), TOPIC, PARTITIONS, "minority", 200);
    load.wait_for_acks(300, "acks before the kills", CONVERGE_TIMEOUT);

    for victim in &victims {
        cluster.kill9(*victim);
    }
    // Anything handed to the producer from now on can reach at most one
    // replica: with min.insync.replicas 2 it must not be acknowledged.
    let killed_at = Instant::now();
    let outage = Duration::from_millis(SESSION_TIMEOUT_MS + REPLICA_LAG_TIME_MAX_MS)
        + Duration::from_secs(5);
    std::thread::sleep(outage);
    // Checked before the restart: what the survivor did alone.
    let restarted_at = Instant::now();
    let reports = load.outcomes_so_far();
    let wrongly_acknowledged: Vec<String> = reports
        .iter()
        .filter(|report| report.result.is_ok() && report.sent_at > killed_at)
        .map(|report| {
            format!(
                "minority-{} sent {:?} after the kills, acknowledged at {:?} ({:?} after the \
                 kills)",
                report.sequence,
                report.sent_at - killed_at,
                report.result,
                report.reported_at - killed_at
            )
        })
        .collect();
    let failed_during_outage = reports
        .iter()
        .filter(|report| report.result.is_err() && report.sent_at > killed_at)
        .count();
    println!(
        "brokers {victims:?} dead for {outage:?} (survivor {survivor}): {} acknowledged before \
         the kills, {failed_during_outage} records sent after them reported failed, {} \
         acknowledged",
        load.acknowledged_so_far().len() - wrongly_acknowledged.len(),
        wrongly_acknowledged.len()
    );
    assert!(
        wrongly_acknowledged.is_empty(),
        "acks=all records acknowledged by broker {survivor} alone (min.insync.replicas 2) \
         while {victims:?} were dead: {} (first 20: {:#?})",
        wrongly_acknowledged.len(),
        &wrongly_acknowledged[..wrongly_acknowledged.len().min(20)]
    );
    let acknowledged_before = load.acknowledged_so_far();

    cluster.start_all_again();
    // Everything acknowledged before is there, as soon as there is a
    // leader to read from.
    verify_records(&mut cluster, TOPIC, PARTITIONS, &acknowledged_before);
    cluster.wait_for_full_isr(TOPIC, PARTITIONS as usize, CONVERGE_TIMEOUT);
    load.wait_for_ack_sent_after(
        restarted_at,
        "acks=all writes resume once the two brokers are back",
        CONVERGE_TIMEOUT,
    );
    let outcome = load.finish();
    let high_watermarks = verify_records(&mut cluster, TOPIC, PARTITIONS, &outcome.acknowledged());
    stop_and_compare_replicas(&mut cluster, TOPIC, &high_watermarks);
    println!("minority scenario took {:?}", started.elapsed());
}

/// `count` records (`record-<n>`) to partition 0 of `topic` with acks=all,
/// then every ISR full again.
fn produce_numbered(cluster: &mut ReplicatedCluster, topic: &str, count: usize) {
    let values: Vec<kafka::Record> = (0..count)
        .map(|index| kafka::Record {
            key: None,
            value: Some(format!("record-{index}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    kafka::produce_all(
        &cluster.bootstrap(),
        topic,
        Some(0),
        &values,
        &[("acks", "all")],
    );
    cluster.wait_for_full_isr(topic, 1, CONVERGE_TIMEOUT);
}

/// DeleteRecords on an idle partition reaches the followers with the
/// leader's heartbeats (they carry its log start): once the leader is
/// killed, the new leader does not serve the deleted records again. The
/// followers used to follow the log start only with pushed records, so a
/// failover after a DeleteRecords on an idle partition brought them back
/// (found by a read-only audit).
#[test]
fn records_deleted_on_an_idle_partition_stay_deleted_after_a_failover() {
    const TOPIC: &str = "replicated-deleted";
    const DELETED_BELOW: i64 = 60;
    let _serial = serial();
    let mut cluster = ReplicatedCluster::start("replication-delete-records");
    let states = cluster.create_topic(TOPIC, 1);
    let leader = states[&0].leader;
    produce_numbered(&mut cluster, TOPIC, 100);
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset(TOPIC, 0, Offset::Offset(DELETED_BELOW))
        .unwrap();
    let admin = kafka::admin(&cluster.bootstrap());
    kafka::block_on(admin.delete_records(&cut, &kafka::admin_options())).expect("DeleteRecords");
    // Several heartbeat rounds, nothing produced.
    std::thread::sleep(Duration::from_secs(3));
    cluster.kill9(leader);
    let new_leader = wait_until("a new leader", CONVERGE_TIMEOUT, || {
        the_leader_of(&mut cluster, TOPIC, 0, leader).ok_or("none yet".to_string())
    });
    let bootstrap = cluster.broker(new_leader).bootstrap();
    let (low, high) = wait_until("the new leader's watermarks", CONVERGE_TIMEOUT, || {
        try_watermarks(&bootstrap, TOPIC, 0)
    });
    assert_eq!(
        (low, high),
        (DELETED_BELOW, 100),
        "the new leader {new_leader} starts where the deleted records ended"
    );
}

/// A follower that was down while its leader's cleaner compacted the
/// partition catches up through the compacted region: the leader's
/// batches that lost records, and the offsets between them that whole
/// batches left, are taken as they are (Kafka's followers need offsets to
/// grow, not to be contiguous). They were refused as invalid or
/// non-contiguous, so such a follower never caught up: the partition
/// stayed under-replicated (found by a read-only audit).
#[test]
fn a_follower_catches_up_through_a_compacted_region() {
    const TOPIC: &str = "replicated-compacted";
    const RECORDS: usize = 3000;
    const KEYS: usize = 40;
    let _serial = serial();
    let mut cluster = ReplicatedCluster::start_with(
        "replication-compacted",
        &["--log-cleaner-interval-ms", "300"],
    );
    kafka::create_topic_replicated(
        &cluster.bootstrap(),
        TOPIC,
        1,
        REPLICATION_FACTOR,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "16384"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.insync.replicas", "1"),
        ],
    );
    let states = cluster.wait_for_full_isr(TOPIC, 1, CONVERGE_TIMEOUT);
    let leader = states[&0].leader;
    let follower = *states[&0]
        .replicas
        .iter()
        .find(|node| **node != leader)
        .unwrap();
    cluster.kill9(follower);
    // Half of the keys are written again only in the first two thirds:
    // their last records stay in the leader's cleaned segments, in batches
    // that lose their other records, between batches removed whole.
    let key_of = |index: usize| {
        if index < RECORDS * 2 / 3 {
            index % KEYS
        } else {
            index % (KEYS / 2)
        }
    };
    let values: Vec<kafka::Record> = (0..RECORDS)
        .map(|index| kafka::Record {
            key: Some(format!("key-{}", key_of(index)).into_bytes()),
            value: Some(format!("value-{index}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    let mut latest: BTreeMap<usize, usize> = BTreeMap::new();
    for index in 0..RECORDS {
        latest.insert(key_of(index), index);
    }
    kafka::produce_all(
        &cluster.bootstrap(),
        TOPIC,
        Some(0),
        &values,
        &[("acks", "1"), ("batch.num.messages", "25")],
    );
    // The leader's cleaner removes most of it (its files, read as they
    // are: the first batches gone whole).
    let bootstrap = cluster.broker(leader).bootstrap();
    let leader_copy = cluster.data_dir(leader).join(format!("{TOPIC}-0"));
    wait_until("the leader's compaction", CONVERGE_TIMEOUT, || {
        let first = read_replica(&leader_copy)?
            .batches
            .first()
            .map_or(0, |batch| batch.base_offset);
        if first > 0 {
            Ok(())
        } else {
            Err("not compacted yet".to_string())
        }
    });
    cluster.start_again(follower);
    let states = cluster.wait_for_full_isr(TOPIC, 1, CONVERGE_TIMEOUT);
    let (low_watermark, high_watermark) = kafka::watermarks(&bootstrap, TOPIC, 0);
    assert_eq!((low_watermark, high_watermark), (0, RECORDS as i64));
    cluster.stop_all();
    // Its copy holds valid batches up to the end, with the latest record
    // of every key (its own cleaner may have removed more since).
    let copy = read_replica(&cluster.data_dir(follower).join(format!("{TOPIC}-0"))).unwrap();
    let last = copy.batches.last().map_or(-1, |batch| batch.last_offset);
    assert_eq!(last, RECORDS as i64 - 1, "stops: {:?}", copy.stops);
    for index in latest.values() {
        let offset = *index as i64;
        assert!(
            copy.batches
                .iter()
                .any(|batch| batch.base_offset <= offset && offset <= batch.last_offset),
            "node {follower} holds offset {offset} ({states:?})"
        );
    }
    // Whole batches removed (offsets skipped: the log starts at 0) and
    // batches that lost records (a record count below their offset range).
    let gaps = usize::from(copy.batches[0].base_offset > 0)
        + copy
            .batches
            .windows(2)
            .filter(|pair| pair[1].base_offset != pair[0].last_offset + 1)
            .count();
    let shrunk = copy
        .batches
        .iter()
        .filter(|batch| {
            let count = i32::from_be_bytes(batch.bytes[57..61].try_into().unwrap());
            i64::from(count) < batch.last_offset - batch.base_offset + 1
        })
        .count();
    println!("node {follower}'s copy: {gaps} offset gaps, {shrunk} batches missing records");
    assert!(gaps > 0 && shrunk > 0, "the copy holds compacted data");
}

/// DeleteRecords answers once every in-sync replica's log start reached
/// the offset, as Kafka's: while a follower in the ISR cannot hear the
/// leader it times out (it answered at once, and a failover before the
/// followers followed served the deleted records again); once it can, it
/// answers, and a failover right after finds the records gone.
#[test]
fn delete_records_waits_for_the_in_sync_replicas() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
    const TOPIC: &str = "replicated-delete-wait";
    const DELETED_BELOW: i64 = 60;
    let _serial = serial();
    let mut cluster = ReplicatedCluster::start("replication-delete-wait");
    let states = cluster.create_topic(TOPIC, 1);
    let leader = states[&0].leader;
    produce_numbered(&mut cluster, TOPIC, 100);
    let delete = |cluster: &Cluster, timeout_ms: i32| -> (i16, i64) {
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(DELETED_BELOW),
                    ]),
            ]);
        let mut connection = Connection::open(&cluster.broker(leader).bootstrap()).unwrap();
        let response: DeleteRecordsResponse = connection.send(&request, 2).unwrap();
        let partition = &response.topics[0].partitions[0];
        (partition.error_code, partition.low_watermark)
    };
    // A follower cut off (within replica.lag.time.max.ms: still in the
    // ISR): the leader's log start moves, the answer waits and times out.
    let follower = *states[&0]
        .replicas
        .iter()
        .find(|node| **node != leader)
        .unwrap();
    cluster.proxy(follower).blackhole();
    let (error, _) = delete(&cluster, 300);
    assert_eq!(error, 7, "REQUEST_TIMED_OUT while an in-sync replica lags");
    cluster.proxy(follower).pass();
    assert_eq!(delete(&cluster, 30_000), (0, DELETED_BELOW));
    // At once: whichever replica leads next starts there.
    cluster.kill9(leader);
    let new_leader = wait_until("a new leader", CONVERGE_TIMEOUT, || {
        the_leader_of(&mut cluster, TOPIC, 0, leader).ok_or("none yet".to_string())
    });
    let bootstrap = cluster.broker(new_leader).bootstrap();
    let (low, high) = wait_until("the new leader's watermarks", CONVERGE_TIMEOUT, || {
        try_watermarks(&bootstrap, TOPIC, 0)
    });
    assert_eq!((low, high), (DELETED_BELOW, 100));
}

/// An acks=all write is held to min.insync.replicas as it is when the high
/// watermark covers it, as Kafka's DelayedProduce: raised while the write
/// waits for a follower, the write is answered
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND (it was held to the value of its
/// arrival, and a value lowered meanwhile did not let a waiting write
/// through either).
#[test]
fn an_acks_all_write_is_held_to_the_min_insync_of_its_completion() {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    const TOPIC: &str = "replicated-min-insync";
    const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    let _serial = serial();
    // A long lag window: the ISR keeps the cut-off follower throughout.
    let mut cluster = ReplicatedCluster::start_with(
        "replication-min-insync",
        &["--replica-lag-time-max-ms", "30000"],
    );
    let states = cluster.create_topic(TOPIC, 1);
    let leader = states[&0].leader;
    let follower = *states[&0]
        .replicas
        .iter()
        .find(|node| **node != leader)
        .unwrap();
    cluster.proxy(follower).blackhole();
    let bootstrap = cluster.broker(leader).bootstrap();
    let writer = std::thread::spawn({
        let bootstrap = bootstrap.clone();
        move || {
            let mut builder = sluice_engine::batch::BatchBuilder::new();
            builder.record(None, Some(b"waits"), sluice_engine::TimestampMs(0));
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(25_000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(builder.build())),
                        ]),
                ]);
            let mut connection = Connection::open(&bootstrap).expect("connecting");
            let (response, _) = connection.call(&request, 3..=9).expect("Produce");
            response.responses[0].partition_responses[0].error_code
        }
    });
    // Appended (the ISR had 3 >= 2), waiting for the cut-off follower (a
    // wide margin on a busy machine: the ISR keeps it for 30 s).
    std::thread::sleep(Duration::from_secs(3));
    let admin = kafka::admin(&bootstrap);
    let raise = AlterConfig::new(ResourceSpecifier::Topic(TOPIC)).set("min.insync.replicas", "4");
    for result in kafka::block_on(admin.alter_configs([&raise], &kafka::admin_options()))
        .expect("AlterConfigs")
    {
        result.unwrap_or_else(|(_, code)| panic!("AlterConfigs: {code:?}"));
    }
    wait_until(
        "the leader's view has the new value",
        CONVERGE_TIMEOUT,
        || match kafka::describe_topic_configs(&bootstrap, TOPIC).get("min.insync.replicas") {
            Some(Some(value)) if value == "4" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // The follower back: the high watermark covers the write, with 3 in
    // the ISR, now fewer than required.
    cluster.proxy(follower).pass();
    assert_eq!(writer.join().unwrap(), NOT_ENOUGH_REPLICAS_AFTER_APPEND);
}

#[test]
fn a_rolling_restart_of_every_broker_under_load_loses_no_acknowledged_record() {
    const TOPIC: &str = "replicated-rolling";
    const PARTITIONS: i32 = 3;
    let _serial = serial();
    let started = Instant::now();
    let mut rng = seeded_rng("rolling restart");
    let mut cluster = ReplicatedCluster::start("replication-rolling");
    cluster.create_topic(TOPIC, PARTITIONS);
    let mut order: Vec<i32> = cluster.nodes().collect();
    for index in (1..order.len()).rev() {
        let other = rng.below(index as u64 + 1) as usize;
        order.swap(index, other);
    }
    let load = Load::start(&cluster.bootstrap(), TOPIC, PARTITIONS, "rolling", 300);
    load.wait_for_acks(300, "acks before the rolling restart", CONVERGE_TIMEOUT);
    for node in &order {
        let step = Instant::now();
        cluster.stop(*node);
        let stopped_after = step.elapsed();
        cluster.start_again(*node);
        cluster.wait_for_full_isr(TOPIC, PARTITIONS as usize, CONVERGE_TIMEOUT);
        println!(
            "broker {node}: stopped in {stopped_after:?}, back in every ISR after {:?}; {} \
             acknowledged so far",
            step.elapsed(),
            load.acknowledged()
        );
        load.wait_for_ack_sent_after(
            Instant::now(),
            &format!("writes go on after broker {node} restarted"),
            RESUME_TIMEOUT,
        );
    }
    let outcome = load.finish();
    let (gap, gap_end) = outcome.longest_gap_without_ack();
    println!(
        "rolling restart (order {order:?}): longest time without a successful \
         acknowledgement {gap:?}, ending {:?} after the load started",
        gap_end.map(|end| end - outcome.started)
    );
    let high_watermarks = verify_records(&mut cluster, TOPIC, PARTITIONS, &outcome.acknowledged());
    stop_and_compare_replicas(&mut cluster, TOPIC, &high_watermarks);
    println!("rolling restart scenario took {:?}", started.elapsed());
}

/// The group's coordinator per the first running broker that knows it.
fn find_coordinator(cluster: &mut Cluster, group: &str) -> Result<i32, String> {
    let mut last = "no broker is running".to_string();
    for node in cluster.running() {
        let mut connection = match Connection::open(&cluster.broker(node).bootstrap()) {
            Ok(connection) => connection,
            Err(error) => {
                last = format!("node {node}: {error}");
                continue;
            }
        };
        let version = connection
            .negotiate(ApiKey::FindCoordinator, 0..=4)
            .map_err(|error| error.to_string())?;
        let key = StrBytes::from_string(group.to_string());
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default()
                .with_key(key)
                .with_key_type(0)
        };
        let response = match connection.send(&request, version) {
            Ok(response) => response,
            Err(error) => {
                last = format!("node {node}: {error}");
                continue;
            }
        };
        let (code, coordinator) = if version >= 4 {
            response
                .coordinators
                .first()
                .map_or((-1, -1), |found| (found.error_code, found.node_id.0))
        } else {
            (response.error_code, response.node_id.0)
        };
        if code == 0 && coordinator >= 0 {
            return Ok(coordinator);
        }
        last = format!("node {node}: error {code}, coordinator {coordinator}");
    }
    Err(last)
}

fn group_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    kafka::config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // Small fetches, so that the partitions are read side by side and
        // every one has commits before the coordinator dies.
        .set("max.partition.fetch.bytes", "4096")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
        .create()
        .expect("creating the group's consumer")
}

/// The group's committed offsets of `topic` (OffsetFetch), partitions
/// without a commit left out.
fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>, String> {
    let consumer = group_consumer(bootstrap, group);
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .map_err(|error| error.to_string())?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some((element.partition(), offset)),
            _ => None,
        })
        .collect())
}

/// A deleted topic's committed offsets go from every group, whichever
/// broker coordinates it: a topic created again under the name must not
/// resume at the old topic's offsets (Kafka removes them with the topic).
/// They used to be forgotten only by the broker that took the DeleteTopics
/// request, for the groups it coordinated itself.
#[test]
fn a_topic_deleted_through_another_broker_leaves_no_committed_offsets_in_its_groups() {
    const TOPIC: &str = "deleted-elsewhere";
    const GROUP: &str = "deleted-elsewhere-readers";
    let _serial = serial();
    let mut cluster = ReplicatedCluster::start("replication-deleted-offsets");
    cluster.create_topic(TOPIC, 2);
    let coordinator = wait_until("the group's coordinator", CONVERGE_TIMEOUT, || {
        find_coordinator(&mut cluster, GROUP)
    });
    let bootstrap = cluster.bootstrap();
    let consumer = group_consumer(&bootstrap, GROUP);
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(TOPIC, 0, Offset::Offset(7))
        .unwrap();
    list.add_partition_offset(TOPIC, 1, Offset::Offset(9))
        .unwrap();
    consumer
        .commit(&list, CommitMode::Sync)
        .expect("committing offsets");
    drop(consumer);
    assert_eq!(
        committed_offsets(&bootstrap, GROUP, TOPIC, 2).unwrap(),
        BTreeMap::from([(0, 7), (1, 9)])
    );

    let other = cluster.nodes().find(|node| *node != coordinator).unwrap();
    let mut connection = Connection::open(&cluster.broker(other).bootstrap()).unwrap();
    let version = connection.negotiate(ApiKey::DeleteTopics, 0..=5).unwrap();
    let request = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_static_str(TOPIC))])
        .with_timeout_ms(30_000);
    let response = connection.send(&request, version).unwrap();
    assert!(
        response
            .responses
            .iter()
            .all(|result| result.error_code == 0),
        "DeleteTopics through node {other}: {response:?}"
    );

    cluster.create_topic(TOPIC, 2);
    // The coordinator applies the deletion in its own time (DeleteTopics
    // waits for the broker that took it only).
    wait_until(
        &format!(
            "the group coordinated by node {coordinator} forgetting the offsets of \
             the topic deleted through node {other}"
        ),
        CONVERGE_TIMEOUT,
        || match committed_offsets(&bootstrap, GROUP, TOPIC, 2)? {
            offsets if offsets.is_empty() => Ok(()),
            offsets => Err(format!("committed {offsets:?}")),
        },
    );
}

/// The group's consumer state: what it read and what it committed.
#[derive(Default)]
struct GroupProgress {
    seen: BTreeSet<String>,
    /// Per partition: the offset after the last record read.
    positions: BTreeMap<i32, i64>,
    /// Per partition: the highest offset a successful commit carried.
    committed: BTreeMap<i32, i64>,
    commits_failed: Vec<String>,
    commits_succeeded: usize,
}

impl GroupProgress {
    /// Commit `positions` synchronously; on success they are committed.
    fn commit(&mut self, consumer: &BaseConsumer, topic: &str) -> bool {
        if self.positions.is_empty() {
            return true;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &self.positions {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .unwrap();
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                for (partition, offset) in &self.positions {
                    let committed = self.committed.entry(*partition).or_insert(*offset);
                    *committed = (*committed).max(*offset);
                }
                self.commits_succeeded += 1;
                true
            }
            Err(error) => {
                self.commits_failed.push(error.to_string());
                false
            }
        }
    }

    /// Poll until `done` holds, committing every `commit_every` records.
    fn consume_until(
        &mut self,
        consumer: &BaseConsumer,
        topic: &str,
        commit_every: usize,
        what: &str,
        done: &dyn Fn(&GroupProgress) -> bool,
    ) {
        let mut last_progress = Instant::now();
        let mut since_commit = 0;
        let mut last_error = None;
        while !done(self) {
            assert!(
                last_progress.elapsed() < CONVERGE_TIMEOUT,
                "{what}: no record for {CONVERGE_TIMEOUT:?} ({} values seen, positions {:?}, \
                 commits failed: {:?}, last consumer error: {last_error:?})",
                self.seen.len(),
                self.positions,
                self.commits_failed
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    let value =
                        String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
                    self.seen.insert(value);
                    let position = self.positions.entry(message.partition()).or_insert(0);
                    *position = (*position).max(message.offset() + 1);
                    since_commit += 1;
                    if since_commit >= commit_every {
                        since_commit = 0;
                        self.commit(consumer, topic);
                    }
                }
                // Broker failures surface here; the consumer carries on.
                Some(Err(error)) => last_error = Some(error.to_string()),
                None => {}
            }
        }
    }
}

#[test]
fn a_consumer_group_keeps_its_committed_offsets_when_its_coordinator_is_killed() {
    const TOPIC: &str = "replicated-group";
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 3000;
    const GROUP: &str = "replicated-group-readers";
    const COMMIT_EVERY: usize = 100;
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = ReplicatedCluster::start("replication-group");
    cluster.create_topic(TOPIC, PARTITIONS);
    let records: Vec<kafka::Record> = (0..RECORDS)
        .map(|index| kafka::Record {
            key: None,
            value: Some(format!("group-{index}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    let (producer, reports) = kafka::producer(
        &cluster.bootstrap(),
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            // Small batches: a fetch holds a few of them, not a partition.
            ("linger.ms", "0"),
            ("batch.num.messages", "20"),
        ],
    );
    for (index, record) in records.iter().enumerate() {
        let partition = i32::try_from(index).unwrap() % PARTITIONS;
        kafka::send(&producer, TOPIC, Some(partition), index, record);
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .unwrap_or_else(|error| panic!("flushing the producer: {error}"));
    let reports = std::mem::take(&mut *reports.0.lock().unwrap());
    let acked: Vec<Acked> = reports
        .into_iter()
        .map(|(index, outcome)| {
            let (partition, offset) = outcome.unwrap_or_else(|error| {
                panic!("record {index} was not acknowledged by a healthy cluster: {error}")
            });
            Acked {
                partition,
                offset,
                value: format!("group-{index}"),
            }
        })
        .collect();
    let expected: BTreeSet<String> = acked.iter().map(|ack| ack.value.clone()).collect();

    // The group's coordinator, and __consumer_offsets with three replicas
    // in sync before anything is committed.
    let coordinator = wait_until("the group's coordinator", CONVERGE_TIMEOUT, || {
        find_coordinator(&mut cluster, GROUP)
    });
    let offsets_states = cluster.wait_for_full_isr("__consumer_offsets", 6, CONVERGE_TIMEOUT);
    for (partition, state) in &offsets_states {
        assert_eq!(
            state.replicas.len(),
            3,
            "__consumer_offsets/{partition} has three replicas \
             (--offsets-topic-replication-factor 3): {state:?}"
        );
    }

    let bootstrap = cluster.bootstrap();
    let consumer = group_consumer(&bootstrap, GROUP);
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut progress = GroupProgress::default();
    progress.consume_until(
        &consumer,
        TOPIC,
        COMMIT_EVERY,
        "reading a third before the kill",
        &|progress| {
            progress.seen.len() >= RECORDS / 3
                && progress.positions.len() == PARTITIONS as usize
                && progress.commits_succeeded > 0
        },
    );
    wait_until(
        "a commit of every position before the kill",
        CONVERGE_TIMEOUT,
        || {
            if progress.commit(&consumer, TOPIC) {
                Ok(())
            } else {
                Err(format!("{:?}", progress.commits_failed.last()))
            }
        },
    );
    let committed_before_kill = progress.committed.clone();

    // The coordinator may have moved since (a new leader of its partition).
    let coordinator = find_coordinator(&mut cluster, GROUP).unwrap_or(coordinator);
    cluster.kill9(coordinator);
    let killed_at = Instant::now();
    let successor = wait_until(
        &format!("a new coordinator after kill -9 of {coordinator}"),
        CONVERGE_TIMEOUT,
        || match find_coordinator(&mut cluster, GROUP) {
            Ok(node) if node != coordinator => Ok(node),
            other => Err(format!("{other:?}")),
        },
    );
    // What the new coordinator serves, before anything is committed again.
    let after_failover = wait_until(
        "OffsetFetch from the new coordinator",
        CONVERGE_TIMEOUT,
        || committed_offsets(&bootstrap, GROUP, TOPIC, PARTITIONS),
    );
    println!(
        "coordinator {coordinator} killed; {successor} took over after {:?}; committed before \
         the kill {committed_before_kill:?}, served after {after_failover:?}",
        killed_at.elapsed()
    );
    for (partition, offset) in &committed_before_kill {
        let served = after_failover.get(partition);
        assert!(
            served.is_some_and(|served| served >= offset),
            "partition {partition}: committed {offset} before the coordinator died, the new \
             coordinator serves {served:?}"
        );
    }

    progress.consume_until(
        &consumer,
        TOPIC,
        COMMIT_EVERY,
        "reading the rest after the kill",
        &|progress| expected.is_subset(&progress.seen),
    );
    wait_until("a final commit", CONVERGE_TIMEOUT, || {
        if progress.commit(&consumer, TOPIC) {
            Ok(())
        } else {
            Err(format!("{:?}", progress.commits_failed.last()))
        }
    });
    drop(consumer);
    let committed_at_end = wait_until("OffsetFetch at the end", CONVERGE_TIMEOUT, || {
        committed_offsets(&bootstrap, GROUP, TOPIC, PARTITIONS)
    });
    println!(
        "{} values read, {} commits, {} failed (first: {:?}); committed at the end \
         {committed_at_end:?}",
        progress.seen.len(),
        progress.commits_succeeded,
        progress.commits_failed.len(),
        progress.commits_failed.first()
    );
    let missing: Vec<&String> = expected.difference(&progress.seen).collect();
    assert!(missing.is_empty(), "records never consumed: {missing:?}");
    for partition in 0..PARTITIONS {
        let end = acked
            .iter()
            .filter(|ack| ack.partition == partition)
            .map(|ack| ack.offset + 1)
            .max()
            .unwrap_or(0);
        let before = committed_before_kill.get(&partition).copied().unwrap_or(0);
        let committed = committed_at_end.get(&partition).copied();
        assert!(
            committed.is_some_and(|committed| committed >= before && committed >= end),
            "partition {partition}: committed {committed:?} at the end, {before} before the \
             kill, {end} records"
        );
    }
    verify_records(&mut cluster, TOPIC, PARTITIONS, &acked);
    println!("group scenario took {:?}", started.elapsed());
}

#[test]
fn a_power_loss_of_all_three_brokers_loses_no_acks_all_record() {
    const TOPIC: &str = "replicated-power-loss";
    const PARTITIONS: i32 = 4;
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = ReplicatedCluster::start("replication-power-loss");
    cluster.create_topic(TOPIC, PARTITIONS);
    let load = Load::start(&cluster.bootstrap(), TOPIC, PARTITIONS, "power", 500);
    load.wait_for_acks(1500, "acks before the power loss", CONVERGE_TIMEOUT);
    cluster.kill9_all();
    std::thread::sleep(Duration::from_secs(1));
    // Nothing can be acknowledged while every broker is dead.
    let acknowledged_at_loss = load.acknowledged_so_far();
    let restarted_at = Instant::now();
    cluster.start_all_again();
    // Checked as soon as there are leaders to read from.
    verify_records(&mut cluster, TOPIC, PARTITIONS, &acknowledged_at_loss);
    cluster.wait_for_full_isr(TOPIC, PARTITIONS as usize, CONVERGE_TIMEOUT);
    println!(
        "power loss after {} acks; every ISR full {:?} after the restart",
        acknowledged_at_loss.len(),
        restarted_at.elapsed()
    );
    load.wait_for_ack_sent_after(
        Instant::now(),
        "writes resume after the power loss",
        CONVERGE_TIMEOUT,
    );
    let outcome = load.finish();
    let high_watermarks = verify_records(&mut cluster, TOPIC, PARTITIONS, &outcome.acknowledged());
    stop_and_compare_replicas(&mut cluster, TOPIC, &high_watermarks);
    println!("power loss scenario took {:?}", started.elapsed());
}

/// `sluice ARGS --bootstrap BOOTSTRAP`: its stdout; panics when it fails.
fn sluice_cli(bootstrap: &str, args: &[&str]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    command
        .args(args)
        .arg("--bootstrap")
        .arg(bootstrap)
        .env_remove("SLUICE_BOOTSTRAP")
        .env_remove("SLUICE_PROFILE")
        .env("XDG_CONFIG_HOME", "/nonexistent/sluice-test-config");
    let what = format!("sluice {}", args.join(" "));
    let output = support::run_with_timeout(command, Duration::from_secs(180), &what);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ {what}\n{stdout}");
    stdout
}

/// Partition reassignment (issue 15) under an acks=all load: a topic of
/// one replica per partition grows to three (`--replication-factor 3`),
/// then partition 0 moves off its leader's broker (`--replicas`), whose
/// copy is then deleted; a reassignment that cannot finish (onto a stopped
/// broker) is listed and cancelled. The new replicas copy a backlog from
/// the leader's disk, whose first half was deleted (DeleteRecords: they
/// start over at the log start, inside a batch); no acknowledged record is
/// lost or duplicated, and the replicas end byte-identical from the log
/// start on.
#[test]
fn reassignment_under_load_grows_moves_and_cancels_without_losing_a_record() {
    const TOPIC: &str = "replicated-reassign";
    const PARTITIONS: i32 = 2;
    const LOG_START: i64 = 1001;
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = ReplicatedCluster::start("replication-reassign");
    // One replica: acks=all needs just it (the brokers' default is 2).
    kafka::create_topic_replicated(
        &cluster.bootstrap(),
        TOPIC,
        PARTITIONS,
        1,
        &[("min.insync.replicas", "1")],
    );
    cluster.wait_for_full_isr(TOPIC, PARTITIONS as usize, CONVERGE_TIMEOUT);
    // A backlog on partition 0 for the new replicas to copy from the
    // leader's disk: 2,000 records of 4 KiB, each value unique (the final
    // check finds any value stored twice).
    let (producer, reports) = kafka::producer(&cluster.bootstrap(), &[("acks", "all")]);
    let padding = "p".repeat(4096);
    for index in 0..2000 {
        let record = kafka::Record {
            key: None,
            value: Some(format!("backlog-{index}-{padding}").into_bytes()),
            headers: Vec::new(),
        };
        kafka::send(&producer, TOPIC, Some(0), index, &record);
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .unwrap_or_else(|error| panic!("flushing the backlog: {error}"));
    let backlog = reports.0.lock().unwrap().len();
    assert_eq!(backlog, 2000, "every backlog record reported");
    // Its first half deleted (DeleteRecords): the new replicas start over
    // at the log start, inside a batch of the leader's first segment.
    let mut cut = TopicPartitionList::new();
    cut.add_partition_offset(TOPIC, 0, Offset::Offset(LOG_START))
        .unwrap();
    let admin = kafka::admin(&cluster.bootstrap());
    kafka::block_on(admin.delete_records(&cut, &kafka::admin_options())).expect("DeleteRecords");
    let load = Load::start(&cluster.bootstrap(), TOPIC, PARTITIONS, "reassign", 300);
    load.wait_for_acks(300, "acks before the reassignment", CONVERGE_TIMEOUT);

    // One replica to three, the new ones copying partition 0's backlog.
    let bootstrap = cluster.bootstrap();
    let grown_at = Instant::now();
    sluice_cli(
        &bootstrap,
        &[
            "topic",
            "reassign",
            TOPIC,
            "--replication-factor",
            "3",
            "--wait",
        ],
    );
    let states = cluster.wait_for_full_isr(TOPIC, PARTITIONS as usize, CONVERGE_TIMEOUT);
    for (partition, state) in &states {
        assert_eq!(
            state.sorted_replicas(),
            vec![1, 2, 3],
            "{TOPIC}/{partition} has three replicas: {state:?}"
        );
    }
    println!(
        "replication factor 1 -> 3 ({backlog} backlog records on partition 0) in {:?}",
        grown_at.elapsed()
    );
    load.wait_for_ack_sent_after(Instant::now(), "writes go on after growing", RESUME_TIMEOUT);

    // Partition 0 off its leader's broker: the leadership moves too.
    let old_leader = states[&0].leader;
    let target: Vec<i32> = cluster.nodes().filter(|node| *node != old_leader).collect();
    let target_list = target
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    sluice_cli(
        &bootstrap,
        &[
            "topic",
            "reassign",
            TOPIC,
            "--partition",
            "0",
            "--replicas",
            &target_list,
            "--wait",
        ],
    );
    let moved = wait_until(
        &format!("{TOPIC}/0 on {target:?} only, led by one of them"),
        CONVERGE_TIMEOUT,
        || {
            let state = cluster
                .partition_state(target[0], TOPIC, 0)
                .ok_or("no metadata".to_string())?;
            let mut sorted_target = target.clone();
            sorted_target.sort_unstable();
            (state.sorted_replicas() == sorted_target
                && state.sorted_isr() == sorted_target
                && target.contains(&state.leader))
            .then_some(state.clone())
            .ok_or(format!("{state:?}"))
        },
    );
    let old_copy = cluster.data_dir(old_leader).join(format!("{TOPIC}-0"));
    wait_until(
        &format!("broker {old_leader} deletes its copy of {TOPIC}/0"),
        CONVERGE_TIMEOUT,
        || {
            (!old_copy.exists())
                .then_some(())
                .ok_or("still there".to_string())
        },
    );
    println!("{TOPIC}/0 moved from {old_leader} to {moved:?}");
    load.wait_for_ack_sent_after(
        Instant::now(),
        "writes go on after the move",
        RESUME_TIMEOUT,
    );

    // Back onto the old leader's broker while it is stopped: the new
    // replica cannot catch up, the reassignment stays listed; cancelled,
    // the partition is back on `target`.
    cluster.stop(old_leader);
    let with_stopped = format!("{target_list},{old_leader}");
    let bootstrap = running_bootstrap(&mut cluster);
    sluice_cli(
        &bootstrap,
        &[
            "topic",
            "reassign",
            TOPIC,
            "--partition",
            "0",
            "--replicas",
            &with_stopped,
        ],
    );
    let listed = sluice_cli(
        &bootstrap,
        &["topic", "reassignments", TOPIC, "--format", "json"],
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed,
        serde_json::json!([{
            "topic": TOPIC,
            "partition": 0,
            "replicas": [target[0], target[1], old_leader],
            "adding": [old_leader],
            "removing": [],
        }]),
        "the reassignment onto the stopped broker is in progress"
    );
    sluice_cli(
        &bootstrap,
        &["topic", "reassign", TOPIC, "--partition", "0", "--cancel"],
    );
    let listed = sluice_cli(&bootstrap, &["topic", "reassignments", "--format", "json"]);
    assert_eq!(
        listed.trim(),
        "[]",
        "nothing in progress after the cancellation"
    );
    assert_eq!(
        cluster
            .partition_state(target[0], TOPIC, 0)
            .unwrap()
            .sorted_replicas(),
        target,
        "back to the replicas before"
    );
    cluster.start_again(old_leader);

    let outcome = load.finish();
    println!("{}", outcome.summary());
    let (gap, _) = outcome.longest_gap_without_ack();
    println!("longest gap without an acknowledgement: {gap:?}");
    let high_watermarks = verify_records(&mut cluster, TOPIC, PARTITIONS, &outcome.acknowledged());
    let states = cluster.wait_for_full_isr(TOPIC, PARTITIONS as usize, CONVERGE_TIMEOUT);
    let log_starts: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|partition| {
            let (low, _) = try_watermarks(&cluster.bootstrap(), TOPIC, partition).unwrap();
            (partition, low)
        })
        .collect();
    assert_eq!(
        log_starts[&0], LOG_START,
        "the log start moved with the partition"
    );
    cluster.stop_all();
    // Partition 0's replicas are both new (it had one, on the broker it
    // left): each started over inside the log, holding no deleted batch.
    for node in &states[&0].replicas {
        let first_base = std::fs::read_dir(cluster.data_dir(*node).join(format!("{TOPIC}-0")))
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".log")?.parse::<i64>().ok()
            })
            .min()
            .unwrap();
        assert!(
            first_base > 0 && first_base <= LOG_START,
            "node {node}'s copy of {TOPIC}/0 starts at {first_base}, the batch holding {LOG_START}"
        );
    }
    for (partition, high_watermark) in &high_watermarks {
        let replicas = &states[partition].replicas;
        let compared = compare_replicas_from(
            &cluster,
            TOPIC,
            *partition,
            replicas,
            log_starts[partition],
            *high_watermark,
        )
        .unwrap_or_else(|difference| panic!("replicas differ: {difference}"));
        println!(
            "{TOPIC}/{partition}: replicas {replicas:?} byte-identical from {} below \
             {high_watermark} ({compared} batches)",
            log_starts[partition]
        );
    }
    println!("reassignment scenario took {:?}", started.elapsed());
}
