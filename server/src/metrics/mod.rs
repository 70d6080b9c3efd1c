//! Broker metrics and the admin HTTP port (`--admin-listen`,
//! docs/decisions/0011-metrics.md).
//!
//! Counters are written on the data path without locks: each shard owns a
//! [`ShardCounters`] (plain atomics, `Relaxed`, written by that shard's
//! thread only, in an allocation aligned to its own cache lines) and each
//! listener a [`ListenerCounters`] (touched per connection, not per
//! request). They live in a process-wide [`Registry`] and are never freed;
//! a scrape sums them. What only a shard's thread can read (its
//! committer's statistics, its partitions' offsets and sizes) is gathered
//! at scrape time by one closure per shard through [`Shards::post`], with a
//! deadline, so a scrape costs each shard one short job and never blocks it.
//!
//! `encode.rs` writes the text exposition format; `server.rs` is the HTTP
//! listener (its own threads, never a shard's).

pub mod encode;
pub mod server;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use crate::shard::{ShardId, Shards};
use encode::{Kind, TextEncoder};

/// Kafka API keys counted one by one (0..API_KEYS); any other key is
/// counted under the label `unknown`. Kafka 4.x's highest key is 92.
const API_KEYS: usize = 96;
/// Slot of the requests whose API key is not in 0..API_KEYS.
const API_UNKNOWN: usize = API_KEYS;

/// Upper bounds of the request latency histogram, in seconds: 100 µs (a
/// metadata request) to 10 s (a long-poll fetch, a slow fsync).
pub const LATENCY_BOUNDS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// The same bounds in nanoseconds, for the data path's comparison.
const LATENCY_BOUNDS_NANOS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// One API's counters on one shard.
#[derive(Default)]
struct ApiCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    /// Not cumulative: `latency_buckets[i]` counts latencies in
    /// (bound i-1, bound i]; the last one those above every bound.
    latency_buckets: [AtomicU64; LATENCY_BOUNDS_NANOS.len() + 1],
    latency_nanos_sum: AtomicU64,
}

/// A shard's request counters. Written by its shard thread only; read by
/// scrapes. Aligned so that no other shard's counters share its lines.
#[repr(align(128))]
pub struct ShardCounters {
    shard: usize,
    apis: [ApiCounters; API_KEYS + 1],
    produce_records: AtomicU64,
    produce_bytes: AtomicU64,
    produce_partition_errors: AtomicU64,
}

/// Add without a read-modify-write bus lock: every counter has one
/// writer (its shard's thread), so a load and a store suffice.
fn bump(counter: &AtomicU64, amount: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(amount),
        Ordering::Relaxed,
    );
}

/// The counter slot of a raw API key.
pub fn api_slot(api_key: i16) -> usize {
    usize::try_from(api_key)
        .ok()
        .filter(|key| *key < API_KEYS)
        .unwrap_or(API_UNKNOWN)
}

impl ShardCounters {
    fn new(shard: usize) -> ShardCounters {
        ShardCounters {
            shard,
            apis: std::array::from_fn(|_| ApiCounters::default()),
            produce_records: AtomicU64::new(0),
            produce_bytes: AtomicU64::new(0),
            produce_partition_errors: AtomicU64::new(0),
        }
    }

    /// A request of `size_bytes` (its frame) was read.
    pub fn request_read(&self, slot: usize, size_bytes: usize) {
        let api = &self.apis[slot];
        bump(&api.requests, 1);
        bump(&api.request_bytes, size_bytes as u64);
    }

    /// A request was answered (`response_bytes`: its frame, 0 when none was
    /// written) or failed (`failed`: the connection is closed), `elapsed`
    /// after it was read.
    pub fn request_done(&self, slot: usize, elapsed: Duration, response_bytes: u64, failed: bool) {
        let api = &self.apis[slot];
        if failed {
            bump(&api.errors, 1);
        }
        bump(&api.response_bytes, response_bytes);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NANOS
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(LATENCY_BOUNDS_NANOS.len());
        bump(&api.latency_buckets[bucket], 1);
        bump(&api.latency_nanos_sum, nanos);
    }

    /// Records (and their batches' bytes) a produce request appended, and
    /// how many of its partitions were answered with an error code.
    pub fn produced(&self, counts: RecordCounts, partition_errors: u64) {
        bump(&self.produce_records, counts.records);
        bump(&self.produce_bytes, counts.bytes);
        bump(&self.produce_partition_errors, partition_errors);
    }
}

/// Records and bytes of some record batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordCounts {
    pub records: u64,
    pub bytes: u64,
}

impl RecordCounts {
    /// Walk the RecordBatch v2 headers of `records` (batch length at byte
    /// 8, record count at byte 57); a truncated or odd tail is counted in
    /// bytes only (the append refuses it anyway).
    pub fn of_batches(records: &Bytes) -> RecordCounts {
        const LENGTH_AT: usize = 8;
        const COUNT_AT: usize = 57;
        let mut counts = RecordCounts {
            records: 0,
            bytes: records.len() as u64,
        };
        let mut position = 0;
        while let Some(header) = records.get(position..position + COUNT_AT + 4) {
            let length = i32::from_be_bytes([
                header[LENGTH_AT],
                header[LENGTH_AT + 1],
                header[LENGTH_AT + 2],
                header[LENGTH_AT + 3],
            ]);
            let count = i32::from_be_bytes([
                header[COUNT_AT],
                header[COUNT_AT + 1],
                header[COUNT_AT + 2],
                header[COUNT_AT + 3],
            ]);
            let Ok(length) = usize::try_from(length) else {
                break;
            };
            counts.records += u64::try_from(count).unwrap_or(0);
            position += LENGTH_AT + 4 + length;
        }
        counts
    }

    pub fn add(&mut self, other: RecordCounts) {
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

/// A client listener's connection counters (all shards').
pub struct ListenerCounters {
    name: String,
    open: AtomicI64,
    accepted: AtomicU64,
}

/// Counts a connection open until dropped.
pub struct OpenConnection(Arc<ListenerCounters>);

impl ListenerCounters {
    /// A connection was accepted: open until the guard drops.
    pub fn opened(self: &Arc<Self>) -> OpenConnection {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(self))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every shard's and listener's counters in this process. Locked only to
/// register one (a shard's first connection, a listener's accept loop) or
/// to list them (a scrape).
#[derive(Default)]
pub struct Registry {
    shards: Mutex<Vec<&'static ShardCounters>>,
    listeners: Mutex<Vec<Arc<ListenerCounters>>>,
}

/// The process's registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// Shard `shard`'s counters, created on first use (and kept for the
    /// process's lifetime: a restarted in-process broker's shards count on).
    pub fn shard(&self, shard: ShardId) -> &'static ShardCounters {
        let mut shards = lock(&self.shards);
        if let Some(counters) = shards.iter().find(|counters| counters.shard == shard.0) {
            return counters;
        }
        let counters: &'static ShardCounters = Box::leak(Box::new(ShardCounters::new(shard.0)));
        shards.push(counters);
        counters
    }

    /// Listener `name`'s counters, created on first use.
    pub fn listener(&self, name: &str) -> Arc<ListenerCounters> {
        let mut listeners = lock(&self.listeners);
        if let Some(counters) = listeners.iter().find(|counters| counters.name == name) {
            return Arc::clone(counters);
        }
        let counters = Arc::new(ListenerCounters {
            name: name.to_string(),
            open: AtomicI64::new(0),
            accepted: AtomicU64::new(0),
        });
        listeners.push(Arc::clone(&counters));
        counters
    }
}

/// What a shard reports at a scrape (gathered on its thread).
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub commit: sluice_engine::CommitStats,
    pub partitions: Vec<PartitionSnapshot>,
}

/// One open partition replica at a scrape.
#[derive(Clone, Debug)]
pub struct PartitionSnapshot {
    pub topic: Arc<str>,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    /// On a leader: the in-sync replicas (itself included).
    pub isr_size: Option<usize>,
    /// On a leader: each follower's progress.
    pub followers: Vec<FollowerSnapshot>,
}

/// A leader's view of one follower of a partition.
#[derive(Clone, Debug, PartialEq)]
pub struct FollowerSnapshot {
    pub broker: i32,
    /// Records between the leader's log end and the follower's
    /// acknowledged durable end (`None`: nothing acknowledged in this
    /// leadership yet).
    pub lag_records: Option<i64>,
    /// Milliseconds since the follower last caught up with the log end
    /// (what replica.lag.time.max.ms measures).
    pub caught_up_age_ms: i64,
}

/// Gather every shard's snapshot, each within `deadline`; a shard that
/// does not answer in time is left out (`missing` counts it).
pub fn gather_shards(shards: &Shards, deadline: Duration) -> (Vec<ShardSnapshot>, usize) {
    let count = shards.count();
    let calls = (0..count).map(|index| {
        shards.call(ShardId(index), move |shard| async move {
            let mut snapshot = ShardSnapshot {
                shard: index,
                commit: shard.committer.stats(),
                partitions: Vec::new(),
            };
            for replica in shard.partitions.values() {
                let log = &replica.log;
                snapshot.partitions.push(PartitionSnapshot {
                    topic: Arc::clone(&replica.topic_partition.topic),
                    partition: replica.topic_partition.partition,
                    log_start_offset: log.log_start_offset().0,
                    log_end_offset: log.log_end_offset().0,
                    high_watermark: replica.high_watermark().0,
                    size_bytes: log.size_bytes(),
                    isr_size: replica.isr_size(),
                    followers: follower_snapshots(
                        &replica,
                        sluice_engine::io::Io::now_ms(&shard.io),
                    ),
                });
            }
            snapshot
        })
    });
    let all = futures_util::future::join_all(calls);
    let results = block_on_timeout(all, deadline).unwrap_or_default();
    let snapshots: Vec<ShardSnapshot> = results.into_iter().filter_map(Result::ok).collect();
    let missing = count - snapshots.len();
    (snapshots, missing)
}

/// A leader's followers, for the replication lag gauges (empty on a
/// follower).
fn follower_snapshots(
    replica: &crate::shard::PartitionReplica,
    now_ms: i64,
) -> Vec<FollowerSnapshot> {
    let log_end = replica.log.log_end_offset().0;
    match &*replica.replication.borrow() {
        crate::shard::partition::Replication::Leader(leader) => leader
            .followers
            .values()
            .map(|follower| FollowerSnapshot {
                broker: follower.broker,
                lag_records: follower.acked_end.map(|acked| (log_end - acked.0).max(0)),
                caught_up_age_ms: (now_ms - follower.last_caught_up_ms).max(0),
            })
            .collect(),
        crate::shard::partition::Replication::Follower { .. } => Vec::new(),
    }
}

/// Run `future` on this thread (outside any runtime) until it completes
/// or `timeout` passes (`None`).
pub(crate) fn block_on_timeout<F: std::future::Future>(
    future: F,
    timeout: Duration,
) -> Option<F::Output> {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let deadline = std::time::Instant::now() + timeout;
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// Totals of the data path's counters (every shard's), read without
/// asking any shard: what the console's charts poll every second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CounterTotals {
    pub produce_records: u64,
    pub produce_bytes: u64,
    /// Bytes of Fetch response frames written (records and framing).
    pub fetch_bytes: u64,
    /// Kafka requests read, every API.
    pub requests: u64,
    /// Latency histograms of Produce and Fetch: counts per bucket of
    /// [`LATENCY_BOUNDS_SECONDS`] (not cumulative; the last one above every
    /// bound).
    pub produce_latency_buckets: Vec<u64>,
    pub fetch_latency_buckets: Vec<u64>,
}

/// Sum the counters of every shard in `registry`.
pub fn counter_totals(registry: &Registry) -> CounterTotals {
    let shards: Vec<&ShardCounters> = lock(&registry.shards).clone();
    let buckets = |slot: usize| -> Vec<u64> {
        (0..=LATENCY_BOUNDS_NANOS.len())
            .map(|bucket| {
                api_sum(&shards, slot, |api| {
                    api.latency_buckets[bucket].load(Ordering::Relaxed)
                })
            })
            .collect()
    };
    let produce = api_slot(ApiKey::Produce as i16);
    let fetch = api_slot(ApiKey::Fetch as i16);
    CounterTotals {
        produce_records: shards
            .iter()
            .map(|shard| shard.produce_records.load(Ordering::Relaxed))
            .sum(),
        produce_bytes: shards
            .iter()
            .map(|shard| shard.produce_bytes.load(Ordering::Relaxed))
            .sum(),
        fetch_bytes: api_sum(&shards, fetch, |api| {
            api.response_bytes.load(Ordering::Relaxed)
        }),
        requests: (0..=API_KEYS)
            .map(|slot| api_sum(&shards, slot, |api| api.requests.load(Ordering::Relaxed)))
            .sum(),
        produce_latency_buckets: buckets(produce),
        fetch_latency_buckets: buckets(fetch),
    }
}

/// The broker-wide state a scrape reads besides the counters.
pub struct BrokerView {
    pub node_id: i32,
    pub ready: bool,
    /// The active controller as this node knows it.
    pub active_controller: Option<i32>,
    /// The metadata log offset this node applied.
    pub metadata_offset: i64,
    /// The published view (topics, leaders, ISRs), once serving.
    pub metadata: Option<Arc<crate::metadata::ClusterMetadata>>,
    pub shards: Vec<ShardSnapshot>,
    /// Shards that did not answer the scrape in time.
    pub shards_missing: usize,
    /// The consumer groups this broker coordinates.
    pub groups: Vec<crate::console::GroupSnapshot>,
}

/// Sum of one API counter over every shard.
fn api_sum(shards: &[&ShardCounters], slot: usize, read: impl Fn(&ApiCounters) -> u64) -> u64 {
    shards.iter().map(|shard| read(&shard.apis[slot])).sum()
}

fn api_name(slot: usize) -> String {
    if slot == API_UNKNOWN {
        return "unknown".to_string();
    }
    match i16::try_from(slot)
        .ok()
        .and_then(|key| ApiKey::try_from(key).ok())
    {
        Some(key) => format!("{key:?}"),
        None => format!("key_{slot}"),
    }
}

/// Write the whole exposition.
pub fn encode(registry: &Registry, view: &BrokerView) -> String {
    let shards: Vec<&ShardCounters> = lock(&registry.shards).clone();
    let listeners: Vec<Arc<ListenerCounters>> = lock(&registry.listeners).clone();
    let mut out = TextEncoder::new();

    // Requests, by API: only the APIs some shard has seen.
    let slots: Vec<(usize, String)> = (0..=API_KEYS)
        .filter(|slot| api_sum(&shards, *slot, |api| api.requests.load(Ordering::Relaxed)) > 0)
        .map(|slot| (slot, api_name(slot)))
        .collect();
    type Read = fn(&ApiCounters) -> u64;
    let per_api: [(&str, &str, Read); 4] = [
        (
            "sluice_kafka_requests_total",
            "Kafka requests read, by API.",
            |api| api.requests.load(Ordering::Relaxed),
        ),
        (
            "sluice_kafka_request_errors_total",
            "Kafka requests the broker failed to answer (undecodable, unsupported, or a \
             handler failure; the connection is closed). Error codes inside answered \
             responses are not counted.",
            |api| api.errors.load(Ordering::Relaxed),
        ),
        (
            "sluice_kafka_request_bytes_total",
            "Bytes of Kafka request frames read, by API.",
            |api| api.request_bytes.load(Ordering::Relaxed),
        ),
        (
            "sluice_kafka_response_bytes_total",
            "Bytes of Kafka response frames written, by API.",
            |api| api.response_bytes.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in per_api {
        out.family(name, help, Kind::Counter);
        for (slot, api) in &slots {
            out.sample(&[("api", api)], api_sum(&shards, *slot, read) as f64);
        }
    }
    out.family(
        "sluice_kafka_request_duration_seconds",
        "Time from a request read to its answer ready to write (Produce: appended and durable \
         as its acks ask), by API.",
        Kind::Histogram,
    );
    for (slot, api) in &slots {
        let buckets: Vec<u64> = (0..=LATENCY_BOUNDS_NANOS.len())
            .map(|bucket| {
                api_sum(&shards, *slot, |counters| {
                    counters.latency_buckets[bucket].load(Ordering::Relaxed)
                })
            })
            .collect();
        let sum_nanos = api_sum(&shards, *slot, |api| {
            api.latency_nanos_sum.load(Ordering::Relaxed)
        });
        out.histogram(
            &[("api", api)],
            &LATENCY_BOUNDS_SECONDS,
            &buckets,
            sum_nanos as f64 / 1e9,
        );
    }
    out.family(
        "sluice_produce_records_total",
        "Records appended by Produce requests (partitions answered without error, and every \
         acks=0 request).",
        Kind::Counter,
    );
    out.sample(
        &[],
        shards
            .iter()
            .map(|shard| shard.produce_records.load(Ordering::Relaxed))
            .sum::<u64>() as f64,
    );
    out.family(
        "sluice_produce_bytes_total",
        "Record batch bytes appended by Produce requests (as sluice_produce_records_total).",
        Kind::Counter,
    );
    out.sample(
        &[],
        shards
            .iter()
            .map(|shard| shard.produce_bytes.load(Ordering::Relaxed))
            .sum::<u64>() as f64,
    );
    out.family(
        "sluice_produce_partition_errors_total",
        "Partitions of Produce requests answered with an error code (NOT_LEADER_OR_FOLLOWER, \
         NOT_ENOUGH_REPLICAS, a refused batch, ...): their records were not appended.",
        Kind::Counter,
    );
    out.sample(
        &[],
        shards
            .iter()
            .map(|shard| shard.produce_partition_errors.load(Ordering::Relaxed))
            .sum::<u64>() as f64,
    );
    out.family(
        "sluice_fetch_record_bytes_copied_total",
        "Bytes of stored records copied in user space on their way to a consumer (0: \
         zero-copy).",
        Kind::Counter,
    );
    out.sample(
        &[],
        crate::net::FETCH_RECORD_BYTES_COPIED.load(Ordering::Relaxed) as f64,
    );

    // Connections, by listener.
    out.family(
        "sluice_connections_open",
        "Client connections open, by listener.",
        Kind::Gauge,
    );
    for listener in &listeners {
        out.sample(
            &[("listener", &listener.name)],
            listener.open.load(Ordering::Relaxed) as f64,
        );
    }
    out.family(
        "sluice_connections_accepted_total",
        "Client connections accepted, by listener.",
        Kind::Counter,
    );
    for listener in &listeners {
        out.sample(
            &[("listener", &listener.name)],
            listener.accepted.load(Ordering::Relaxed) as f64,
        );
    }

    encode_shards(&mut out, view);
    encode_broker(&mut out, view);
    encode_memory(&mut out);
    out.finish()
}

/// Where the broker's memory is: the log tails' write chunks (live, of
/// which retained as a read cache, and pooled for reuse), the O_DIRECT
/// read buffers, and what malloc holds. Resident memory above malloc's in-use figure is freed memory
/// malloc keeps (see alloc.rs).
fn encode_memory(out: &mut TextEncoder) {
    use sluice_engine::io::aligned;
    use sluice_engine::segment::buffer;
    let mut gauges: Vec<(&str, &str, f64)> = vec![
        (
            "sluice_memory_write_chunk_bytes",
            "Capacity of every log tail write chunk alive (being filled, awaiting a flush, \
             retained as a read cache, or held by a read or write in flight).",
            buffer::live_chunk_bytes() as f64,
        ),
        (
            "sluice_memory_write_chunk_retained_bytes",
            "Write chunks wholly durable and kept as a read cache of recent data \
             (bounded per shard by --tail-cache-bytes); part of sluice_memory_write_chunk_bytes.",
            sluice_engine::tail_cache::retained_bytes_total() as f64,
        ),
        (
            "sluice_memory_write_chunk_pooled_bytes",
            "Freed write chunks kept for reuse.",
            buffer::pooled_chunk_bytes() as f64,
        ),
        (
            "sluice_memory_read_buffer_bytes",
            "Capacity of every O_DIRECT buffer alive: reads in flight or being sent, \
             read-ahead slots.",
            aligned::live_buffer_bytes() as f64,
        ),
        (
            "sluice_memory_read_buffer_pooled_bytes",
            "Freed read buffers kept for reuse.",
            aligned::pooled_read_buffer_bytes() as f64,
        ),
    ];
    if let Some(usage) = crate::alloc::malloc_usage() {
        gauges.push((
            "sluice_memory_malloc_in_use_bytes",
            "Bytes allocated through malloc and not freed.",
            usage.in_use_bytes as f64,
        ));
        gauges.push((
            "sluice_memory_malloc_free_bytes",
            "Bytes freed and kept by malloc for reuse (resident if touched).",
            usage.free_bytes as f64,
        ));
    }
    unlabelled_gauges(out, &gauges);
}

/// One family and one sample without labels per gauge.
fn unlabelled_gauges(out: &mut TextEncoder, gauges: &[(&str, &str, f64)]) {
    for &(name, help, value) in gauges {
        out.family(name, help, Kind::Gauge);
        out.sample(&[], value);
    }
}

/// Group commit per shard and the partitions' gauges.
fn encode_shards(out: &mut TextEncoder, view: &BrokerView) {
    type Read = fn(&sluice_engine::CommitStats) -> u64;
    let commit: [(&str, &str, Read); 6] = [
        (
            "sluice_commit_rounds_total",
            "Group-commit flush rounds that flushed at least one log, by shard.",
            |stats| stats.rounds,
        ),
        (
            "sluice_commit_log_flushes_total",
            "Log flushes by group commit (a log flushed in a round counts once), by shard.",
            |stats| stats.log_flushes,
        ),
        (
            "sluice_commit_fsyncs_total",
            "fdatasync calls of log flushes, by shard.",
            |stats| stats.fsyncs,
        ),
        (
            "sluice_commit_durable_writes_total",
            "Durable (RWF_DSYNC) segment writes of log flushes (--sync-mode write-through), by shard.",
            |stats| stats.durable_writes,
        ),
        (
            "sluice_commit_filesystem_syncs_total",
            "syncfs calls of log flushes (--sync-mode filesystem), by shard.",
            |stats| stats.filesystem_syncs,
        ),
        (
            "sluice_commit_write_bytes_total",
            "Bytes written to segment files by group commit (whole pages), by shard.",
            |stats| stats.bytes_written,
        ),
    ];
    for (name, help, read) in commit {
        out.family(name, help, Kind::Counter);
        for shard in &view.shards {
            let label = shard.shard.to_string();
            out.sample(&[("shard", &label)], read(&shard.commit) as f64);
        }
    }
    let sync_bounds: Vec<f64> = sluice_engine::SYNC_BOUNDS_NANOS
        .iter()
        .map(|nanos| *nanos as f64 / 1e9)
        .collect();
    out.family(
        "sluice_commit_sync_duration_seconds",
        "How long each log flush waited for durability (its fdatasyncs, or its share of a \
         syncfs), by shard.",
        Kind::Histogram,
    );
    for shard in &view.shards {
        let label = shard.shard.to_string();
        out.histogram(
            &[("shard", &label)],
            &sync_bounds,
            &shard.commit.sync_duration_buckets,
            shard.commit.sync_duration_nanos_sum as f64 / 1e9,
        );
    }
    let flush_bounds: Vec<f64> = sluice_engine::FLUSH_BYTES_BOUNDS
        .iter()
        .map(|bytes| *bytes as f64)
        .collect();
    out.family(
        "sluice_commit_flush_bytes",
        "Bytes each log flush wrote: the group-commit batch of one partition, by shard.",
        Kind::Histogram,
    );
    for shard in &view.shards {
        let label = shard.shard.to_string();
        out.histogram(
            &[("shard", &label)],
            &flush_bounds,
            &shard.commit.flush_bytes_buckets,
            shard.commit.bytes_written as f64,
        );
    }
    out.family(
        "sluice_shard_cpu_seconds_total",
        "CPU time of a shard's thread (user and system), from /proc: its busy time, since a \
         shard thread sleeps in io_uring when idle.",
        Kind::Counter,
    );
    for (shard, seconds) in shard_cpu_seconds() {
        let label = shard.to_string();
        out.sample(&[("shard", &label)], seconds);
    }
    out.family(
        "sluice_shard_partitions",
        "Partition replicas open on a shard.",
        Kind::Gauge,
    );
    for shard in &view.shards {
        let label = shard.shard.to_string();
        out.sample(&[("shard", &label)], shard.partitions.len() as f64);
    }
    type PartitionRead = fn(&PartitionSnapshot) -> Option<f64>;
    let gauges: [(&str, &str, PartitionRead); 5] = [
        (
            "sluice_partition_log_end_offset",
            "Offset after the last record appended to the local replica.",
            |partition| Some(partition.log_end_offset as f64),
        ),
        (
            "sluice_partition_log_start_offset",
            "First offset still in the local replica's log.",
            |partition| Some(partition.log_start_offset as f64),
        ),
        (
            "sluice_partition_high_watermark",
            "Offset below which records are committed (readable by consumers).",
            |partition| Some(partition.high_watermark as f64),
        ),
        (
            "sluice_partition_log_size_bytes",
            "Bytes of the local replica's segment files.",
            |partition| Some(partition.size_bytes as f64),
        ),
        (
            "sluice_partition_isr_size",
            "In-sync replicas of a partition this broker leads.",
            |partition| partition.isr_size.map(|size| size as f64),
        ),
    ];
    for (name, help, read) in gauges {
        out.family(name, help, Kind::Gauge);
        for shard in &view.shards {
            for partition in &shard.partitions {
                if let Some(value) = read(partition) {
                    let index = partition.partition.to_string();
                    out.sample(&[("topic", &partition.topic), ("partition", &index)], value);
                }
            }
        }
    }
    type FollowerRead = fn(&FollowerSnapshot) -> Option<f64>;
    let followers: [(&str, &str, FollowerRead); 2] = [
        (
            "sluice_replica_lag_records",
            "On a partition's leader: records between its log end and a follower's acknowledged \
             durable end.",
            |follower| follower.lag_records.map(|lag| lag as f64),
        ),
        (
            "sluice_replica_caught_up_age_seconds",
            "On a partition's leader: time since a follower was last caught up with the log end \
             (it leaves the ISR past replica.lag.time.max.ms).",
            |follower| Some(follower.caught_up_age_ms as f64 / 1000.0),
        ),
    ];
    for (name, help, read) in followers {
        out.family(name, help, Kind::Gauge);
        for shard in &view.shards {
            for partition in &shard.partitions {
                let index = partition.partition.to_string();
                for follower in &partition.followers {
                    if let Some(value) = read(follower) {
                        let broker = follower.broker.to_string();
                        out.sample(
                            &[
                                ("topic", &partition.topic),
                                ("partition", &index),
                                ("follower", &broker),
                            ],
                            value,
                        );
                    }
                }
            }
        }
    }
    encode_groups(out, view);
}

/// Consumer groups this broker coordinates: members, committed offsets,
/// and the lag where this broker holds a replica of the partition (its
/// high watermark minus the committed offset).
fn encode_groups(out: &mut TextEncoder, view: &BrokerView) {
    let high_watermarks: std::collections::BTreeMap<(&str, i32), i64> = view
        .shards
        .iter()
        .flat_map(|shard| &shard.partitions)
        .map(|partition| {
            (
                (&*partition.topic, partition.partition),
                partition.high_watermark,
            )
        })
        .collect();
    out.family(
        "sluice_consumer_group_members",
        "Members of a consumer group this broker coordinates.",
        Kind::Gauge,
    );
    for group in &view.groups {
        out.sample(&[("group", &group.id)], group.members.len() as f64);
    }
    out.family(
        "sluice_consumer_group_committed_offset",
        "A group's committed offset for a partition (groups this broker coordinates).",
        Kind::Gauge,
    );
    for group in &view.groups {
        for ((topic, partition), committed) in &group.offsets {
            let index = partition.to_string();
            out.sample(
                &[
                    ("group", &group.id),
                    ("topic", topic),
                    ("partition", &index),
                ],
                *committed as f64,
            );
        }
    }
    out.family(
        "sluice_consumer_group_lag",
        "Records a group has yet to consume in a partition: the high watermark minus its \
         committed offset (groups this broker coordinates, partitions it holds a replica of).",
        Kind::Gauge,
    );
    for group in &view.groups {
        for ((topic, partition), committed) in &group.offsets {
            if let Some(end) = high_watermarks.get(&(topic.as_str(), *partition)) {
                let index = partition.to_string();
                out.sample(
                    &[
                        ("group", &group.id),
                        ("topic", topic),
                        ("partition", &index),
                    ],
                    (end - committed).max(0) as f64,
                );
            }
        }
    }
}

/// CPU seconds (user + system) of each `shard-N` thread of this process,
/// from `/proc/self/task/*/stat`; empty where /proc cannot be read.
fn shard_cpu_seconds() -> Vec<(usize, f64)> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return Vec::new();
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut shards: Vec<(usize, f64)> = tasks
        .flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (name, ticks) = thread_cpu_ticks(&stat)?;
            let shard = name.strip_prefix("shard-")?.parse().ok()?;
            Some((shard, ticks as f64 / ticks_per_second as f64))
        })
        .collect();
    shards.sort_by_key(|(shard, _)| *shard);
    shards
}

/// The thread name and utime + stime (clock ticks) of a
/// `/proc/<pid>/task/<tid>/stat` line: `tid (name) state ...`, utime and
/// stime the 14th and 15th fields; the name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn thread_cpu_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// Cluster state as this broker sees it.
fn encode_broker(out: &mut TextEncoder, view: &BrokerView) {
    let mut led = 0_u64;
    let mut under_replicated = 0_u64;
    let mut offline = 0_u64;
    if let Some(metadata) = &view.metadata {
        for topic in metadata.topics.values() {
            for partition in &topic.partitions {
                match partition.leader {
                    None => offline += 1,
                    Some(leader) if leader == view.node_id => {
                        led += 1;
                        if partition.isr.len() < partition.replicas.len() {
                            under_replicated += 1;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
    }
    let gauges: [(&str, &str, f64); 7] = [
        (
            "sluice_partitions_leader",
            "Partitions this broker leads.",
            led as f64,
        ),
        (
            "sluice_partitions_under_replicated",
            "Partitions this broker leads whose ISR is smaller than their replica set.",
            under_replicated as f64,
        ),
        (
            "sluice_partitions_offline",
            "Partitions of the cluster without a leader, in this broker's metadata view.",
            offline as f64,
        ),
        (
            "sluice_controller_active",
            "1 if this node is the active controller.",
            f64::from(u8::from(view.active_controller == Some(view.node_id))),
        ),
        (
            "sluice_controller_metadata_offset",
            "Metadata log offset this node has applied.",
            view.metadata_offset as f64,
        ),
        (
            "sluice_broker_ready",
            "1 once the broker is registered, unfenced and its shards serve \
             (/v1/status/ready).",
            f64::from(u8::from(view.ready)),
        ),
        (
            "sluice_scrape_shards_missing",
            "Shards that did not answer this scrape in time (their gauges are missing).",
            view.shards_missing as f64,
        ),
    ];
    unlabelled_gauges(out, &gauges);
    out.family(
        "sluice_build_info",
        "The broker's version (value 1).",
        Kind::Gauge,
    );
    out.sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn batch(records: i32, length: usize) -> Vec<u8> {
        let mut bytes = vec![0_u8; length];
        let batch_length = i32::try_from(length - 12).unwrap();
        bytes[8..12].copy_from_slice(&batch_length.to_be_bytes());
        bytes[57..61].copy_from_slice(&records.to_be_bytes());
        bytes
    }

    #[test]
    fn records_are_counted_from_the_batch_headers() {
        let mut bytes = batch(3, 100);
        bytes.extend(batch(5, 70));
        let counts = RecordCounts::of_batches(&Bytes::from(bytes));
        assert_eq!(
            counts,
            RecordCounts {
                records: 8,
                bytes: 170
            }
        );
        let truncated = RecordCounts::of_batches(&Bytes::from(vec![0_u8; 30]));
        assert_eq!(truncated.records, 0);
    }

    #[test]
    fn latencies_fall_in_their_buckets_and_sums_add_up() {
        let counters = ShardCounters::new(7);
        let slot = api_slot(0);
        counters.request_read(slot, 10);
        counters.request_done(slot, Duration::from_micros(50), 20, false);
        counters.request_read(slot, 10);
        counters.request_done(slot, Duration::from_secs(60), 0, true);
        let api = &counters.apis[slot];
        assert_eq!(api.requests.load(Ordering::Relaxed), 2);
        assert_eq!(api.errors.load(Ordering::Relaxed), 1);
        assert_eq!(api.request_bytes.load(Ordering::Relaxed), 20);
        assert_eq!(api.response_bytes.load(Ordering::Relaxed), 20);
        assert_eq!(api.latency_buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(
            api.latency_buckets[LATENCY_BOUNDS_NANOS.len()].load(Ordering::Relaxed),
            1
        );
        assert_eq!(api_slot(-1), API_UNKNOWN);
        assert_eq!(api_slot(500), API_UNKNOWN);
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(API_UNKNOWN), "unknown");
    }

    #[test]
    fn thread_cpu_time_is_read_from_the_stat_line() {
        let stat = "4242 (shard-1) S 1 2 3 4 5 6 7 8 9 10 120 35 0 0 20 0 1 0 100 0 0";
        assert_eq!(thread_cpu_ticks(stat), Some(("shard-1", 155)));
        let odd = "7 (a) b) R 1 2 3 4 5 6 7 8 9 10 1 2 0";
        assert_eq!(thread_cpu_ticks(odd), Some(("a) b", 3)));
        assert_eq!(thread_cpu_ticks("garbage"), None);
    }

    #[test]
    fn the_bounds_agree_in_seconds_and_nanoseconds() {
        for (seconds, nanos) in LATENCY_BOUNDS_SECONDS.iter().zip(LATENCY_BOUNDS_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
    }

    #[test]
    fn an_exposition_has_every_family_once() {
        let registry = Registry::default();
        let counters = registry.shard(ShardId(0));
        counters.request_read(api_slot(3), 40);
        counters.request_done(api_slot(3), Duration::from_millis(2), 100, false);
        let listener = registry.listener("PLAINTEXT");
        let _open = listener.opened();
        let view = BrokerView {
            node_id: 1,
            ready: true,
            active_controller: Some(1),
            metadata_offset: 12,
            metadata: None,
            shards: vec![ShardSnapshot {
                shard: 0,
                commit: sluice_engine::CommitStats::default(),
                partitions: vec![PartitionSnapshot {
                    topic: Arc::from("events"),
                    partition: 2,
                    log_start_offset: 0,
                    log_end_offset: 10,
                    high_watermark: 10,
                    size_bytes: 4096,
                    isr_size: Some(2),
                    followers: vec![FollowerSnapshot {
                        broker: 3,
                        lag_records: Some(4),
                        caught_up_age_ms: 1500,
                    }],
                }],
            }],
            shards_missing: 0,
            groups: vec![crate::console::GroupSnapshot {
                id: "billing".to_string(),
                state: "Stable",
                protocol_type: Some("consumer".to_string()),
                protocol: Some("range".to_string()),
                generation: 1,
                leader: None,
                offsets_partition: 0,
                members: Vec::new(),
                offsets: [
                    (("events".to_string(), 2), 7),
                    (("elsewhere".to_string(), 0), 1),
                ]
                .into_iter()
                .collect(),
            }],
        };
        let text = encode(&registry, &view);
        assert!(text.contains("sluice_kafka_requests_total{api=\"Metadata\"} 1\n"));
        assert!(text.contains("sluice_connections_open{listener=\"PLAINTEXT\"} 1\n"));
        assert!(
            text.contains("sluice_partition_log_end_offset{topic=\"events\",partition=\"2\"} 10\n")
        );
        assert!(text.contains("sluice_controller_active 1\n"));
        assert!(text.contains(
            "sluice_replica_lag_records{topic=\"events\",partition=\"2\",follower=\"3\"} 4\n"
        ));
        assert!(text.contains(
            "sluice_replica_caught_up_age_seconds{topic=\"events\",partition=\"2\",follower=\"3\"} 1.5\n"
        ));
        // Lag where the partition is held here (high watermark 10 - 7);
        // none for a partition held elsewhere.
        assert!(text.contains(
            "sluice_consumer_group_lag{group=\"billing\",topic=\"events\",partition=\"2\"} 3\n"
        ));
        assert!(!text.contains("sluice_consumer_group_lag{group=\"billing\",topic=\"elsewhere\""));
        assert!(text.contains(
            "sluice_consumer_group_committed_offset{group=\"billing\",topic=\"elsewhere\",partition=\"0\"} 1\n"
        ));
        assert!(text.contains("sluice_consumer_group_members{group=\"billing\"} 0\n"));
        let mut families: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|line| line.split(' ').next().unwrap())
            .collect();
        let count = families.len();
        families.sort_unstable();
        families.dedup();
        assert_eq!(families.len(), count, "a family written twice");
    }
}
