//! The group coordinator (DESIGN.md "Coordinators"): consumer groups with
//! Kafka's classic rebalance protocol, and committed offsets.
//!
//! Where a group lives: partition `abs(java_hash(group)) % N` of the
//! internal compacted topic `__consumer_offsets` (N = 50 by default, fixed
//! when the broker first creates the topic, as Kafka). The shard owning that
//! partition owns the group: its state (group/state.rs) lives in that
//! shard's [`Coordinator`], every request about the group is sent there
//! ([`on_coordinator`]), and every change that must survive is a record
//! appended to that partition (group/records.rs, Kafka's layouts) before it
//! is acknowledged. Compaction keeps the latest record per key, so the
//! topic stays the size of the state.
//!
//! On start, each shard replays its `__consumer_offsets` partitions
//! ([`load_partition`]) before the broker serves. A per-shard ticker
//! (every [`TICK`]) runs the timers: join windows, session expiry, offset
//! expiry (offsets.retention: offsets of a group that has been empty that
//! long, or of a standalone group's partition not committed that long).
//! Timer rounds and background writes are the shard's background work
//! (`Shard::background_work`): on a clean stop none starts any more, and
//! the logs close only after those running have finished.
//!
//! Ordering: a commit is applied to the in-memory table only after its
//! record is durable, and only if no later record for the same key was
//! applied first (`CommittedOffset::record_offset`).

pub mod records;
pub mod state;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;
use sluice_engine::batch::{self, BatchBuilder, Compression};
use sluice_engine::io::Io;
use sluice_engine::{Offset, ReadLimits, TimestampMs};

use crate::group::records::{GroupValue, Key, OffsetValue};
use crate::group::state::{CommittedOffset, Group, GroupConfig, GroupState};
use crate::metadata::TopicMetadata;
use crate::shard::producer_state::{ProducerBatch, ProducerId, last_sequence};
use crate::shard::topics::TopicError;
use crate::shard::{PartitionReplica, ReplicaAppendError, Shard, ShardId, TopicPartition};
use crate::txn::membership::Verified;

/// The internal topic holding groups and offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often the timers run.
pub const TICK: Duration = Duration::from_millis(100);
/// Kafka's group.min.session.timeout.ms and group.max.session.timeout.ms.
const SESSION_TIMEOUT_MIN_MS: i32 = 6_000;
const SESSION_TIMEOUT_MAX_MS: i32 = 1_800_000;
/// Kafka's offset.metadata.max.bytes.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Longest group id (it is stored in i16-length strings).
const GROUP_ID_MAX_BYTES: usize = i16::MAX as usize;
/// Segment size of `__consumer_offsets` (Kafka's offsets.topic.segment.bytes).
const OFFSETS_SEGMENT_BYTES: &str = "104857600";

/// Records to append to `__consumer_offsets`: key, value (None: tombstone).
pub type GroupRecord = (Bytes, Option<Bytes>);

/// One shard's groups (those of the offsets partitions it owns).
#[derive(Default)]
pub struct Coordinator {
    pub groups: RefCell<HashMap<String, Group>>,
    /// Offsets partitions replayed on this shard.
    loaded: RefCell<BTreeSet<i32>>,
    /// Per offsets partition, how many times it was unloaded: a load that
    /// started before the last unload is stale when it ends (the
    /// leadership it loaded for is over; a newer one's load replaces it)
    /// and installs nothing.
    unloads: RefCell<HashMap<i32, u64>>,
    /// Topic deletions applied on this shard while loads were reading: a
    /// load applies at its end those that came after it started.
    deletions: RefCell<Deletions>,
    ticker_started: Cell<bool>,
    /// Loads in progress per offsets partition (their [`LoadTicket`]s).
    loading: RefCell<HashMap<i32, usize>>,
}

/// The deletions a load in progress has not seen (`forget_topics`,
/// `install_load`).
#[derive(Default)]
struct Deletions {
    /// Number of the next deletion.
    next: u64,
    /// Deleted topic names by deletion number, kept while a load that
    /// started before them runs.
    recent: BTreeMap<u64, BTreeSet<String>>,
    /// Loads in progress: id, and the first deletion they did not see.
    loads: BTreeMap<u64, u64>,
    next_load: u64,
}

/// A load of one offsets partition, taken when the load is decided
/// ([`begin_load`]: before the task that reads runs, so that an unload or a
/// deletion in between counts against it).
pub struct LoadTicket {
    shard: Rc<Shard>,
    id: u64,
    partition: i32,
    unloads: u64,
    deletions: u64,
}

/// Start a load of `partition` (see [`LoadTicket`]); the load ends when
/// the ticket drops (the load installed, dropped, failed or abandoned).
pub fn begin_load(shard: &Rc<Shard>, partition: i32) -> LoadTicket {
    let mut deletions = shard.groups.deletions.borrow_mut();
    let id = deletions.next_load;
    deletions.next_load += 1;
    let first_unseen = deletions.next;
    deletions.loads.insert(id, first_unseen);
    *shard
        .groups
        .loading
        .borrow_mut()
        .entry(partition)
        .or_default() += 1;
    LoadTicket {
        shard: Rc::clone(shard),
        id,
        partition,
        unloads: shard.groups.unloads_of(partition),
        deletions: first_unseen,
    }
}

/// The load is over (installed, dropped, failed or abandoned): forget the
/// deletions no running load needs.
impl Drop for LoadTicket {
    fn drop(&mut self) {
        {
            let mut loading = self.shard.groups.loading.borrow_mut();
            if let Some(count) = loading.get_mut(&self.partition) {
                *count -= 1;
                if *count == 0 {
                    loading.remove(&self.partition);
                }
            }
        }
        let mut deletions = self.shard.groups.deletions.borrow_mut();
        deletions.loads.remove(&self.id);
        match deletions.loads.values().min().copied() {
            Some(oldest) => deletions.recent.retain(|number, _| *number >= oldest),
            None => deletions.recent.clear(),
        }
    }
}

impl Coordinator {
    pub(crate) fn unloads_of(&self, partition: i32) -> u64 {
        self.unloads.borrow().get(&partition).copied().unwrap_or(0)
    }
}

/// Kafka's choice of partition for a group: Java's `String.hashCode` of
/// the group id (UTF-16 units), sign bit masked, modulo the partition count.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) % partitions.max(1)
}

/// Wall-clock milliseconds since the epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn group_config(shard: &Shard) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(
            shard.config.group_initial_rebalance_delay_ms,
        ),
        session_timeout_min_ms: SESSION_TIMEOUT_MIN_MS,
        session_timeout_max_ms: SESSION_TIMEOUT_MAX_MS,
    }
}

/// The offsets topic, created on first use with the broker's partition
/// count (Kafka creates it on the first FindCoordinator).
pub async fn offsets_topic(shard: &Rc<Shard>) -> Result<TopicMetadata, ResponseError> {
    internal_topic(
        shard,
        OFFSETS_TOPIC,
        shard.config.offsets_topic_partitions,
        OFFSETS_SEGMENT_BYTES,
    )
    .await
}

/// A coordinator's internal compacted topic (`__consumer_offsets`,
/// `__transaction_state`), created on first use with `partitions`
/// partitions and offsets.topic.replication.factor replicas, capped at the
/// brokers alive now.
pub async fn internal_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    segment_bytes: &str,
) -> Result<TopicMetadata, ResponseError> {
    if let Some(topic) = shard.metadata.snapshot().topics.get(name) {
        return Ok(topic.clone());
    }
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), segment_bytes.to_string()),
    ]);
    // offsets.topic.replication.factor, capped at the brokers alive now (a
    // cluster's first group may come before every broker is up).
    let live = shard
        .metadata
        .snapshot()
        .brokers
        .values()
        .filter(|broker| broker.is_live() && !broker.in_controlled_shutdown)
        .count();
    let replication_factor = i32::from(shard.config.offsets_topic_replication_factor)
        .min(i32::try_from(live).unwrap_or(i32::MAX))
        .max(1);
    let created = crate::shard::topics::create_topic_with(
        shard,
        name,
        partitions,
        replication_factor,
        None,
        configs,
        false,
    )
    .await;
    match created {
        Ok(topic) => {
            tracing::info!(
                topic = name,
                partitions,
                "created a coordinator's internal topic on first use"
            );
            Ok(topic)
        }
        // Created concurrently by another connection.
        Err(TopicError::Metadata(crate::metadata::MetadataError::TopicExists(_))) => shard
            .metadata
            .snapshot()
            .topics
            .get(name)
            .cloned()
            .ok_or(ResponseError::CoordinatorNotAvailable),
        Err(error) => {
            tracing::error!(%error, "creating {name} failed");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}

/// The offsets partition of `group` and its state in the published view
/// (the coordinator is that partition's leader, on any broker).
pub async fn coordinator_partition(
    shard: &Rc<Shard>,
    group: &str,
) -> Result<(i32, crate::metadata::PartitionMetadata), ResponseError> {
    // Kafka's record layouts hold the group id in an i16-length string.
    if group.len() > GROUP_ID_MAX_BYTES {
        return Err(ResponseError::InvalidGroupId);
    }
    let topic = offsets_topic(shard).await?;
    let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    let partition = partition_for(group, count);
    let state = topic
        .partitions
        .get(partition as usize)
        .cloned()
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((partition, state))
}

/// The shard and offsets partition coordinating `group` on this broker:
/// NOT_COORDINATOR when another broker leads its offsets partition (or
/// none does yet), as Kafka answers group requests sent elsewhere.
pub async fn locate(shard: &Rc<Shard>, group: &str) -> Result<(ShardId, i32), ResponseError> {
    let (partition, state) = coordinator_partition(shard, group).await?;
    let view = shard.metadata.snapshot();
    let owner =
        crate::handlers::serving_shard(&view, &state).map_err(|_| ResponseError::NotCoordinator)?;
    Ok((owner, partition))
}

/// The offsets partitions this broker leads (whose groups it coordinates).
pub fn coordinated_partitions(view: &crate::metadata::ClusterMetadata) -> BTreeSet<i32> {
    view.topics
        .get(OFFSETS_TOPIC)
        .map(|topic| {
            topic
                .partitions
                .iter()
                .zip(0..)
                .filter(|(state, _)| crate::handlers::serving_shard(view, state).is_ok())
                .map(|(_, index)| index)
                .collect()
        })
        .unwrap_or_default()
}

/// Run `work` on the shard coordinating `group`, once its partition is
/// loaded; `work` gets that shard and the group's offsets partition.
pub async fn on_coordinator<R, F, W>(
    shard: &Rc<Shard>,
    group: &str,
    work: W,
) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: Future<Output = R> + 'static,
    W: FnOnce(Rc<Shard>, i32) -> F + Send + 'static,
{
    let (owner, partition) = locate(shard, group).await?;
    let outcome = shard
        .shards
        .call(owner, move |owner| async move {
            if !owner.groups.loaded.borrow().contains(&partition) {
                return Err(ResponseError::CoordinatorLoadInProgress);
            }
            owner.groups.start_ticker(&owner);
            Ok(work(Rc::clone(&owner), partition).await)
        })
        .await;
    match outcome {
        Ok(result) => result,
        Err(gone) => {
            tracing::error!(%gone, "group coordinator shard unavailable");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}

/// Append `records` (key, value-or-tombstone) to offsets partition
/// `partition` on this shard and wait until they are durable. Returns the
/// offset of the first record.
pub async fn write(
    shard: &Rc<Shard>,
    partition: i32,
    records: &[GroupRecord],
) -> Result<i64, ResponseError> {
    write_as(shard, partition, records, None).await
}

/// [`write`], as a transactional batch of `producer` when given.
pub async fn write_as(
    shard: &Rc<Shard>,
    partition: i32,
    records: &[GroupRecord],
    producer: Option<TxnWriter>,
) -> Result<i64, ResponseError> {
    if records.is_empty() {
        return Ok(-1);
    }
    let (_, wait) = append_as_now(shard, partition, records, producer)?;
    wait.await
}

/// The producer whose transaction a TxnOffsetCommit's offsets belong to:
/// they are written as its transactional batch, and its transaction's
/// marker decides whether they count, as in Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnWriter {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// What the batch needs to open the producer's transaction on the
    /// partition (KIP-890's verification guard).
    pub verified: Verified,
}

/// [`write_as`] in two steps (`records` not empty): the append happens now
/// and its base offset is returned at once, with the future that waits
/// until it is durable and committed. TxnOffsetCommit records its pending
/// offsets in the same synchronous step, before a transaction marker can
/// be appended after them.
///
/// A transactional batch is checked as a transactional Produce is, in the
/// step that appends it, so that no marker comes between the check and
/// the append: INVALID_PRODUCER_EPOCH when its producer's epoch on the
/// partition is newer (a marker of its coordinator, or a batch of a newer
/// instance, fenced it), and the writer's refusal when it would open a
/// transaction without the verification guard it was verified under
/// (a marker since ended the transaction). Appended unchecked, the batch
/// of a fenced or aborted transaction opened one no marker would end: the
/// partition's last stable offset stuck there (the cleaner stopped, and
/// OffsetFetch with require_stable answered UNSTABLE_OFFSET_COMMIT for
/// good), and a later commit of the producer applied its offsets.
pub fn append_as_now(
    shard: &Rc<Shard>,
    partition: i32,
    records: &[GroupRecord],
    producer: Option<TxnWriter>,
) -> Result<
    (
        i64,
        impl Future<Output = Result<i64, ResponseError>> + use<>,
    ),
    ResponseError,
> {
    assert!(!records.is_empty(), "an empty coordinator append");
    let topic_partition = TopicPartition::new(OFFSETS_TOPIC, partition);
    let Some(replica) = shard.partition(&topic_partition) else {
        return Err(ResponseError::NotCoordinator);
    };
    let now = TimestampMs(wall_ms());
    let batch = offsets_batch(
        records,
        producer.map(|writer| (writer.producer_id, writer.producer_epoch)),
        now,
    );
    let Some(writer) = producer else {
        return append_now(shard, replica, &batch);
    };
    let producer_id = ProducerId(writer.producer_id);
    let epoch = writer.producer_epoch;
    let log_end = replica.log.log_end_offset();
    let mut producers = replica.producers.borrow_mut();
    producers.reconcile(log_end);
    if let Err(error) = producers.check_epoch(producer_id, epoch) {
        tracing::debug!(partition = %topic_partition, %error, "transactional offset commit of a fenced producer refused");
        return Err(ResponseError::InvalidProducerEpoch);
    }
    let open = {
        let mut txns = replica.txns.borrow_mut();
        txns.reconcile(log_end);
        txns.open_transaction(producer_id)
    };
    if open.is_none()
        && let Some(refusal) = writer
            .verified
            .refusal_to_open(&producers, producer_id, epoch)
    {
        tracing::debug!(partition = %topic_partition, producer_id = producer_id.0, epoch, "transactional offset commit refused: its transaction ended here after it was verified");
        return Err(refusal);
    }
    let (base_offset, wait) = append_now(shard, Rc::clone(&replica), &batch)?;
    // As the followers' replay records it (`ProducerStateTable::replay_batch`):
    // the epoch fences the producer's older instances here too.
    let last_offset_delta = i32::try_from(records.len() - 1).unwrap_or(i32::MAX);
    producers.record(
        &ProducerBatch {
            producer_id,
            epoch,
            first_sequence: 0,
            last_sequence: last_sequence(0, last_offset_delta),
        },
        Offset(base_offset),
        Offset(record_offset(base_offset, records.len() - 1)),
        -1,
        shard.io.now_ms(),
    );
    // The transaction is open: the guard is spent.
    producers.end_verification(producer_id);
    Ok((base_offset, wait))
}

/// The batch of `records` a coordinator appends to `__consumer_offsets`,
/// transactional for `producer` when given.
fn offsets_batch(records: &[GroupRecord], producer: Option<(i64, i16)>, now: TimestampMs) -> Bytes {
    let mut builder = BatchBuilder::new();
    if let Some((producer_id, producer_epoch)) = producer {
        // Kafka's coordinator writes sequence 0; the partition does not
        // check a coordinator's sequences.
        builder
            .producer(producer_id, producer_epoch, 0)
            .transactional(true);
    }
    for (key, value) in records {
        builder.record(Some(key), value.as_deref(), now);
    }
    builder.build()
}

/// Append `batch` to a coordinator's partition `replica` (this shard's,
/// leading) and wait until it is durable and committed (acks=all). Returns
/// the base offset. NOT_COORDINATOR when the replica no longer leads.
pub async fn append_committed(
    shard: &Rc<Shard>,
    replica: &PartitionReplica,
    batch: &Bytes,
) -> Result<i64, ResponseError> {
    let (_, wait) = append_now(shard, replica, batch)?;
    wait.await
}

/// [`append_committed`] in two steps: the append happens now (its offsets
/// taken in this order, before anything else appends) and its base offset
/// is returned, with the future that waits for it to be durable and
/// committed.
pub fn append_now<R: std::ops::Deref<Target = PartitionReplica>>(
    shard: &Rc<Shard>,
    replica: R,
    batch: &Bytes,
) -> Result<
    (
        i64,
        impl Future<Output = Result<i64, ResponseError>> + use<R>,
    ),
    ResponseError,
> {
    // The shard closes its logs only after this write is durable; once
    // they are closing, no write starts (the client retries after the
    // restart, or on the coordinator it finds then).
    let Some(write) = shard.log_write() else {
        return Err(ResponseError::NotCoordinator);
    };
    // The replica stamps the batch with its leader epoch, and refuses it
    // unless it leads: a broker that no longer leads the partition is no
    // longer the coordinator.
    let append = replica.append(batch).map_err(|error| match error {
        ReplicaAppendError::NotLeader { .. } => ResponseError::NotCoordinator,
        ReplicaAppendError::Append(error) => {
            tracing::error!(partition = %replica.topic_partition, %error, "coordinator append refused");
            ResponseError::CoordinatorNotAvailable
        }
    })?;
    let epoch = replica.state().leader_epoch;
    let base_offset = append.base_offset.value();
    Ok((base_offset, async move {
        let _write = write;
        let topic_partition = &replica.topic_partition;
        let end = append.last_offset.plus(1);
        append.completion.await.map_err(|error| {
            tracing::error!(partition = %topic_partition, %error, "coordinator write failed");
            ResponseError::CoordinatorNotAvailable
        })?;
        // As Kafka writes them: acks=all, so a commit that was answered
        // survives the coordinator's broker (min.insync.replicas: 1 here;
        // the ISR holds every live replica that keeps up).
        replica
            .wait_committed(end, epoch, || 1, GROUP_WRITE_TIMEOUT)
            .await
            .map_err(|error| {
                tracing::info!(partition = %topic_partition, %error, "coordinator write not committed");
                match error {
                    crate::shard::partition::CommitWaitError::NotLeader => {
                        ResponseError::NotCoordinator
                    }
                    _ => ResponseError::CoordinatorNotAvailable,
                }
            })?;
        Ok(append.base_offset.value())
    }))
}

/// How long a group write waits for the ISR (Kafka's
/// offsets.commit.timeout.ms).
const GROUP_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The group metadata record of `group` (or its tombstone).
pub fn group_record(group: &Group) -> GroupRecord {
    let key = Key::Group {
        group: group.id.clone(),
    }
    .encode();
    (key, Some(group.to_value().encode()))
}

pub fn group_tombstone(group: &str) -> GroupRecord {
    let key = Key::Group {
        group: group.to_string(),
    }
    .encode();
    (key, None)
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    Key::Offset {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    }
    .encode()
}

/// Persist the group's metadata if it changed, in the background (the
/// callers that must wait for it write it with [`store_group`]). The
/// record is appended now, in the step that changed the group, so that the
/// log holds the group's records in the order of its changes: appended
/// later by a spawned task, it could land after a newer record of the
/// group and a load would restore the older state.
pub fn persist_if_dirty(shard: &Rc<Shard>, group: &mut Group) {
    // A closing shard writes nothing more (the state stays dirty, and is
    // rebuilt by the members' next rebalance after the restart).
    let Some(work) = shard.background_work() else {
        return;
    };
    if !group.take_dirty() {
        return;
    }
    let record = group_record(group);
    let id = group.id.clone();
    let wait = match append_as_now(shard, group.partition, &[record], None) {
        Ok((_, wait)) => wait,
        Err(error) => {
            tracing::warn!(group = %id, ?error, "writing group metadata failed");
            return;
        }
    };
    compio::runtime::spawn(async move {
        let _work = work;
        if let Err(error) = wait.await {
            tracing::warn!(group = %id, ?error, "writing group metadata failed");
        }
    })
    .detach();
}

/// Append `group`'s metadata record now, in the step that changed the
/// group, and return the future that waits until it is durable and then
/// reports the outcome (None: durable) to the group with `done`, the
/// state machine's callback for the change (`Group::finish_sync`,
/// `Group::finish_static_replacement`), as Kafka's storeGroup callback.
/// A group unloaded meanwhile (another incarnation, or none) is not told:
/// its members were answered NOT_COORDINATOR. What `done` changes is
/// persisted in the background.
pub fn store_group<D>(
    shard: &Rc<Shard>,
    group: &mut Group,
    done: D,
) -> impl Future<Output = ()> + use<D>
where
    D: FnOnce(&mut Group, Option<ResponseError>),
{
    // The record holds every change so far.
    group.take_dirty();
    let appended = append_as_now(shard, group.partition, &[group_record(group)], None);
    let shard = Rc::clone(shard);
    let id = group.id.clone();
    let incarnation = group.incarnation();
    async move {
        let error = match appended {
            Ok((_, wait)) => wait.await.err(),
            Err(error) => Some(error),
        };
        if let Some(error) = error {
            tracing::warn!(group = %id, ?error, "writing group metadata failed");
        }
        let mut groups = shard.groups.groups.borrow_mut();
        if let Some(group) = groups.get_mut(&id)
            && group.incarnation() == incarnation
        {
            done(group, error);
            persist_if_dirty(&shard, group);
        }
    }
}

/// The topics in a consumer-protocol subscription (None if undecodable).
pub fn consumer_subscription(metadata: &[u8]) -> Option<Vec<String>> {
    if metadata.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([metadata[0], metadata[1]]);
    let mut body = Bytes::copy_from_slice(&metadata[2..]);
    // Newer versions only add fields at the end: read what we know.
    let subscription = ConsumerProtocolSubscription::decode(&mut body, version.clamp(0, 3)).ok()?;
    Some(
        subscription
            .topics
            .iter()
            .map(|topic| topic.to_string())
            .collect(),
    )
}

impl Coordinator {
    /// Start this shard's timer task (once).
    pub fn start_ticker(&self, shard: &Rc<Shard>) {
        if self.ticker_started.replace(true) {
            return;
        }
        let shard = Rc::clone(shard);
        compio::runtime::spawn(async move {
            loop {
                compio::time::sleep(TICK).await;
                // Stops for good once the shard is closing: the logs are
                // about to close, and a timer write would fail.
                let Some(_work) = shard.background_work() else {
                    return;
                };
                tick(&shard).await;
            }
        })
        .detach();
    }
}

/// One round of timers on this shard's groups.
async fn tick(shard: &Rc<Shard>) {
    let config = group_config(shard);
    let now = Instant::now();
    let wall = wall_ms();
    let retention_ms = i64::try_from(shard.config.offsets_retention_ms).unwrap_or(i64::MAX);
    let mut writes: Vec<(i32, Vec<GroupRecord>)> = Vec::new();
    {
        let mut groups = shard.groups.groups.borrow_mut();
        let mut forget = Vec::new();
        for group in groups.values_mut() {
            group.tick(&config, now, wall);
            persist_if_dirty(shard, group);
            let mut records = expire_offsets(group, wall, retention_ms);
            if group.is_forgettable() {
                records.push(group_tombstone(&group.id));
                forget.push(group.id.clone());
            }
            if !records.is_empty() {
                writes.push((group.partition, records));
            }
        }
        for id in forget {
            groups.remove(&id);
        }
    }
    // Every write appends at its first poll, so all of them are in the log
    // before anything else is: a commit to a group or offset forgotten
    // above lands after its tombstone, never between (one write awaited
    // after the other let commits to later partitions' forgotten groups
    // land first, and the tombstone then dropped them at the next load).
    let written = futures_util::future::join_all(
        writes
            .iter()
            .map(|(partition, records)| write(shard, *partition, records)),
    )
    .await;
    for ((partition, _), result) in writes.iter().zip(written) {
        if let Err(error) = result {
            tracing::warn!(partition, ?error, "writing expired offsets failed");
        }
    }
}

/// Forget the committed offsets of the topics named in `topics` (deleted)
/// in every group this shard coordinates and write their tombstones
/// (Kafka removes them with the topic). Run by every broker's metadata
/// follower on each of its shards when it applies a deletion
/// (shard/follower.rs): the groups of a cluster are spread over the
/// leaders of `__consumer_offsets`, so forgetting only on the broker that
/// took the DeleteTopics request left the others resuming a topic created
/// again under the name at the old topic's offsets.
///
/// The memory changes at once and the tombstones are appended at once; only
/// their wait for durability runs in the background (each waits for the
/// offsets partition's ISR, up to seconds, and the follower's round must
/// not). Besides the offsets:
/// transactional commits waiting for their marker are dropped; a commit
/// in flight is marked so that it is not applied when it completes
/// (`Group::forgotten`); a load in progress drops them when it ends
/// (`install_load`).
pub fn forget_topics(shard: &Rc<Shard>, topics: &BTreeSet<String>) {
    {
        let mut deletions = shard.groups.deletions.borrow_mut();
        let number = deletions.next;
        deletions.next += 1;
        if !deletions.loads.is_empty() {
            deletions.recent.insert(number, topics.clone());
        }
    }
    let mut tombstones: BTreeMap<i32, Vec<GroupRecord>> = BTreeMap::new();
    for group in shard.groups.groups.borrow_mut().values_mut() {
        if group.commits_in_flight > 0 {
            let log_end = shard
                .partition(&TopicPartition::new(OFFSETS_TOPIC, group.partition))
                .map_or(i64::MAX, |replica| replica.log.log_end_offset().value());
            for topic in topics {
                group.forgotten.insert(topic.clone(), log_end);
            }
        }
        for record in forget_in_group(group, topics) {
            tombstones.entry(group.partition).or_default().push(record);
        }
    }
    write_tombstones_soon(shard, tombstones, None);
}

/// Remove `topics`' offsets and pending transactional offsets from
/// `group`; returns the tombstones of the offsets removed.
fn forget_in_group(group: &mut Group, topics: &BTreeSet<String>) -> Vec<GroupRecord> {
    let keys: Vec<(String, i32)> = group
        .offsets
        .keys()
        .filter(|(name, _)| topics.contains(name))
        .cloned()
        .collect();
    for pending in group.pending_txn_offsets.values_mut() {
        pending.retain(|(name, _), _| !topics.contains(name));
    }
    keys.into_iter()
        .map(|key| {
            group.offsets.remove(&key);
            (offset_key(&group.id, &key.0, key.1), None)
        })
        .collect()
}

/// Append the tombstones of deleted topics' offsets now, per offsets
/// partition, so that they come before any later commit in the log, as
/// they do in memory; their wait for durability runs in the background. A
/// write that fails (this shard no longer leads the partition) is logged:
/// the offsets are gone from memory, and the next leader's load drops
/// them only if its own follower applies the deletion after the load began.
/// `loading` is the replica of a load that installs its groups: it may not
/// be in the shard's table yet (a load at open runs before the open records
/// the replica).
fn write_tombstones_soon(
    shard: &Rc<Shard>,
    tombstones: BTreeMap<i32, Vec<GroupRecord>>,
    loading: Option<&Rc<PartitionReplica>>,
) {
    let now = TimestampMs(wall_ms());
    let mut waits = Vec::new();
    for (partition, records) in tombstones {
        let replica = loading
            .filter(|replica| replica.topic_partition.partition == partition)
            .cloned()
            .or_else(|| shard.partition(&TopicPartition::new(OFFSETS_TOPIC, partition)));
        let Some(replica) = replica else {
            tracing::warn!(
                partition,
                "writing offsets of a deleted topic failed: not the coordinator"
            );
            continue;
        };
        match append_now(shard, replica, &offsets_batch(&records, None, now)) {
            Ok((_, wait)) => waits.push((partition, wait)),
            Err(error) => {
                tracing::warn!(
                    partition,
                    ?error,
                    "writing offsets of a deleted topic failed"
                );
            }
        }
    }
    if waits.is_empty() {
        return;
    }
    compio::runtime::spawn(async move {
        for (partition, wait) in waits {
            if let Err(error) = wait.await {
                tracing::warn!(
                    partition,
                    ?error,
                    "writing offsets of a deleted topic failed"
                );
            }
        }
    })
    .detach();
}

/// Remove the offsets that expired (offsets.retention) and return their
/// tombstones. A consumer group's offsets expire together once it has been
/// empty for the retention time; a standalone group's (never had members)
/// expire per partition, counted from the commit.
fn expire_offsets(group: &mut Group, wall: i64, retention_ms: i64) -> Vec<GroupRecord> {
    if group.state != GroupState::Empty || group.offsets.is_empty() {
        return Vec::new();
    }
    let expired: Vec<(String, i32)> = if group.protocol_type.is_some() {
        if wall.saturating_sub(group.state_timestamp) < retention_ms {
            return Vec::new();
        }
        group.offsets.keys().cloned().collect()
    } else {
        group
            .offsets
            .iter()
            .filter(|(_, committed)| {
                wall.saturating_sub(committed.commit_timestamp) >= retention_ms
            })
            .map(|(key, _)| key.clone())
            .collect()
    };
    expired
        .into_iter()
        .map(|(topic, partition)| {
            group.offsets.remove(&(topic.clone(), partition));
            tracing::info!(group = %group.id, %topic, partition, "committed offset expired");
            (offset_key(&group.id, &topic, partition), None)
        })
        .collect()
}

/// Whether a load of offsets partition `partition` is in progress on this
/// shard (a [`LoadTicket`] is held: its reading has not ended).
pub fn is_loading(shard: &Shard, partition: i32) -> bool {
    shard.groups.loading.borrow().contains_key(&partition)
}

/// Forget the groups of offsets partition `partition`: this broker no
/// longer leads it, or its log is being removed (the undo of a failed
/// creation of the topic). Members waiting in JoinGroup or SyncGroup are
/// answered NOT_COORDINATOR ([`Group::unload`]).
pub fn unload_partition(shard: &Shard, partition: i32) {
    *shard
        .groups
        .unloads
        .borrow_mut()
        .entry(partition)
        .or_default() += 1;
    shard.groups.loaded.borrow_mut().remove(&partition);
    let wall = wall_ms();
    shard.groups.groups.borrow_mut().retain(|_, group| {
        if group.partition != partition {
            return true;
        }
        group.unload(wall);
        false
    });
}

/// Replay offsets partition `partition` (just opened on this shard) into
/// the coordinator: the latest record per key wins, tombstones delete.
/// The load ends when `ticket` drops, however this returns.
pub async fn load_partition(
    shard: &Rc<Shard>,
    replica: &Rc<PartitionReplica>,
    ticket: LoadTicket,
) -> anyhow::Result<()> {
    let partition = replica.topic_partition.partition;
    let log = &replica.log;
    // The whole log, as Kafka loads it: a new leader's high watermark can
    // lag its log, whose records all become committed once its followers
    // have them (a leader never truncates its own log). At open after a
    // restart the log is its recovered, durable part.
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let now = Instant::now();
    let wall = wall_ms();
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut skipped = 0usize;
    // Transactional offset commits whose marker has not been read yet.
    let mut pending_txn: HashMap<i64, Vec<PendingTxnOffset>> = HashMap::new();
    while offset < end {
        let read = log
            .read(
                offset,
                ReadLimits {
                    max_bytes: 1 << 20,
                    min_one_batch: true,
                    max_offset: end,
                },
            )
            .await?;
        if read.next_offset <= offset {
            break;
        }
        offset = read.next_offset;
        for run in &read.records {
            let mut rest: &[u8] = run;
            while !rest.is_empty() {
                let header = batch::BatchHeader::parse(rest)?;
                let size = header.total_size();
                let whole = &rest[..size.min(rest.len())];
                rest = &rest[size.min(rest.len())..];
                if header.compression() != Compression::None {
                    skipped += 1;
                    continue;
                }
                if header.is_control() {
                    // A transaction marker: the producer's transactional
                    // offset commits count (commit) or are dropped.
                    let commit = batch::records(whole, &header)
                        .next()
                        .and_then(Result::ok)
                        .and_then(|record| control_commit(record.key));
                    let pending = pending_txn.remove(&header.producer_id());
                    if let (Some(true), Some(pending)) = (commit, pending) {
                        for (group, topic, topic_partition, committed) in pending {
                            let entry = groups
                                .entry(group.clone())
                                .or_insert_with(|| Group::new(&group, partition, wall));
                            apply_commit(entry, &topic, topic_partition, committed);
                        }
                    }
                    continue;
                }
                let base = header.base_offset().value();
                for record in batch::records(whole, &header) {
                    let record = record?;
                    let record_offset = base + i64::from(record.offset_delta);
                    if header.is_transactional() {
                        match replay_txn_offset(record.key, record.value, record_offset) {
                            Ok(Some(pending)) => pending_txn
                                .entry(header.producer_id())
                                .or_default()
                                .push(pending),
                            Ok(None) => {}
                            Err(error) => {
                                skipped += 1;
                                tracing::warn!(partition, record_offset, %error, "skipping an unreadable transactional offset");
                            }
                        }
                        continue;
                    }
                    if let Err(error) = replay(
                        &mut groups,
                        partition,
                        record.key,
                        record.value,
                        record_offset,
                        now,
                        wall,
                    ) {
                        skipped += 1;
                        tracing::warn!(partition, record_offset, %error, "skipping an unreadable group record");
                    }
                }
            }
        }
    }
    // Transactions still open: their offsets wait for the marker.
    for (producer_id, pending) in pending_txn {
        for (group, topic, topic_partition, committed) in pending {
            groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&group, partition, wall))
                .pending_txn_offsets
                .entry(producer_id)
                .or_default()
                .insert((topic, topic_partition), committed);
        }
    }
    let count = groups.len();
    if install_load(shard, Some(replica), &ticket, groups) {
        tracing::debug!(
            partition,
            groups = count,
            skipped,
            "loaded group coordinator partition"
        );
    }
    Ok(())
}

/// Install the groups a load read, unless its partition was unloaded
/// since the load began: the leadership it loaded for ended, and if this
/// broker leads again, that leadership's own load installs the groups;
/// this one, older, must not replace them. The offsets of topics deleted
/// while it read go first (their tombstones written in the background).
/// Returns whether it installed them.
pub(crate) fn install_load(
    shard: &Rc<Shard>,
    replica: Option<&Rc<PartitionReplica>>,
    ticket: &LoadTicket,
    mut groups: HashMap<String, Group>,
) -> bool {
    let partition = ticket.partition;
    if shard.groups.unloads_of(partition) != ticket.unloads {
        tracing::debug!(partition, "a group load outlived its leadership; dropped");
        return false;
    }
    let deleted: BTreeSet<String> = shard
        .groups
        .deletions
        .borrow()
        .recent
        .range(ticket.deletions..)
        .flat_map(|(_, topics)| topics.iter().cloned())
        .collect();
    if !deleted.is_empty() {
        let mut tombstones: BTreeMap<i32, Vec<GroupRecord>> = BTreeMap::new();
        for group in groups.values_mut() {
            for record in forget_in_group(group, &deleted) {
                tombstones.entry(partition).or_default().push(record);
            }
        }
        write_tombstones_soon(shard, tombstones, replica);
    }
    {
        let mut table = shard.groups.groups.borrow_mut();
        table.retain(|_, group| group.partition != partition);
        table.extend(groups);
    }
    shard.groups.loaded.borrow_mut().insert(partition);
    shard.groups.start_ticker(shard);
    true
}

/// A transactional offset commit read at load: group, topic, partition,
/// the offset.
type PendingTxnOffset = (String, String, i32, CommittedOffset);

/// Whether a control record's key is a commit marker (`Some(false)`: an
/// abort; `None`: not a marker key). Kafka's layout: i16 version, i16 type
/// (0 abort, 1 commit).
pub fn control_commit(key: Option<&[u8]>) -> Option<bool> {
    let key = key?;
    if key.len() < 4 {
        return None;
    }
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

fn replay_txn_offset(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    record_offset: i64,
) -> Result<Option<PendingTxnOffset>, records::RecordError> {
    let (Some(key), Some(value)) = (key, value) else {
        return Ok(None);
    };
    let Key::Offset {
        group,
        topic,
        partition,
    } = Key::decode(key)?
    else {
        return Ok(None);
    };
    let value = OffsetValue::decode(value)?;
    Ok(Some((
        group,
        topic,
        partition,
        CommittedOffset {
            offset: value.offset,
            leader_epoch: value.leader_epoch,
            metadata: value.metadata,
            commit_timestamp: value.commit_timestamp,
            record_offset,
        },
    )))
}

/// A transaction marker of `producer_id` was written to offsets partition
/// `partition` on this shard at `marker_offset`: its pending transactional
/// offset commits written before it become the groups' committed offsets
/// (commit) or are dropped ([`Group::end_txn`]). Those written after it
/// (appended while the marker waited for its ISR) belong to the
/// producer's next transaction and stay pending, as a load reads them.
pub fn apply_txn_marker(
    shard: &Shard,
    partition: i32,
    producer_id: i64,
    commit: bool,
    marker_offset: i64,
) {
    let mut groups = shard.groups.groups.borrow_mut();
    for group in groups.values_mut() {
        if group.partition != partition {
            continue;
        }
        let ended = group.end_txn(producer_id, marker_offset);
        if commit {
            for ((topic, topic_partition), committed) in ended {
                apply_commit(group, &topic, topic_partition, committed);
            }
        }
    }
}

fn replay(
    groups: &mut HashMap<String, Group>,
    partition: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    record_offset: i64,
    now: Instant,
    wall: i64,
) -> Result<(), records::RecordError> {
    let Some(key) = key else {
        return Ok(());
    };
    match Key::decode(key)? {
        Key::Offset {
            group,
            topic,
            partition: topic_partition,
        } => match value {
            Some(value) => {
                let value = OffsetValue::decode(value)?;
                let entry = groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, partition, wall));
                entry.offsets.insert(
                    (topic, topic_partition),
                    CommittedOffset {
                        offset: value.offset,
                        leader_epoch: value.leader_epoch,
                        metadata: value.metadata,
                        commit_timestamp: value.commit_timestamp,
                        record_offset,
                    },
                );
            }
            None => {
                if let Some(entry) = groups.get_mut(&group) {
                    entry.offsets.remove(&(topic, topic_partition));
                }
            }
        },
        Key::Group { group } => match value {
            Some(value) => {
                let value: GroupValue = GroupValue::decode(value)?;
                let entry = groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, partition, wall));
                entry.restore(value, now);
            }
            // Kafka: a group tombstone ends the group's metadata; its
            // offsets have their own records and tombstones (DeleteGroups
            // writes both) and stay. Dropping them with the group lost a
            // commit appended between a group's forgetting and its
            // tombstone.
            None => {
                if let Some(entry) = groups.get_mut(&group) {
                    let offsets = std::mem::take(&mut entry.offsets);
                    if offsets.is_empty() {
                        groups.remove(&group);
                    } else {
                        *entry = Group::new(&group, partition, wall);
                        entry.offsets = offsets;
                    }
                }
            }
        },
    }
    Ok(())
}

/// Apply a durable commit to the table (unless a later one already was).
pub fn apply_commit(group: &mut Group, topic: &str, partition: i32, committed: CommittedOffset) {
    if group.forgets(topic, committed.record_offset) {
        // Written before its topic was deleted (`forget_topics`).
        return;
    }
    let key = (topic.to_string(), partition);
    match group.offsets.get(&key) {
        Some(existing) if existing.record_offset > committed.record_offset => {}
        _ => {
            group.offsets.insert(key, committed);
        }
    }
}

/// Record offset of the `index`-th record of a write that started at `base`.
pub fn record_offset(base: i64, index: usize) -> i64 {
    base + i64::try_from(index).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A group tombstone ends the group's metadata but not its offsets,
    /// which have their own tombstones (Kafka's loader keeps them): a
    /// commit written after a group was forgotten survives the reload.
    #[test]
    fn a_group_tombstone_keeps_the_offsets_written_with_their_own_records() {
        let now = Instant::now();
        let mut groups = HashMap::new();
        let group_key = Key::Group {
            group: "g".to_string(),
        }
        .encode();
        let value = records::GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: None,
            state_timestamp: 9,
            members: Vec::new(),
        }
        .encode();
        let committed = records::OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 1,
        }
        .encode();
        let offset = offset_key("g", "t", 0);
        replay(&mut groups, 0, Some(&group_key), Some(&value), 0, now, 0).unwrap();
        replay(&mut groups, 0, Some(&offset), Some(&committed), 1, now, 0).unwrap();
        replay(&mut groups, 0, Some(&group_key), None, 2, now, 0).unwrap();
        let group = &groups["g"];
        assert_eq!(group.offsets[&("t".to_string(), 0)].offset, 42);
        assert_eq!(group.generation, 0, "the metadata went");
        // Its offset's own tombstone removes it; the group goes with the
        // next group tombstone once it holds nothing.
        replay(&mut groups, 0, Some(&offset), None, 3, now, 0).unwrap();
        replay(&mut groups, 0, Some(&group_key), None, 4, now, 0).unwrap();
        assert!(groups.is_empty());
    }

    #[test]
    fn partition_matches_kafka() {
        // Values of Java's String.hashCode: "abc" = 96354, "test" =
        // 3556498, "polygenelubricants" = Integer.MIN_VALUE (masked to 0).
        assert_eq!(partition_for("abc", i32::MAX), 96354);
        assert_eq!(partition_for("test", 50), 3556498 % 50);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 50), 0);
        for partitions in [1, 7, 50] {
            for name in ["a", "group-1", "ümlaut", "很长的组名"] {
                let partition = partition_for(name, partitions);
                assert!((0..partitions).contains(&partition));
            }
        }
    }

    #[test]
    fn subscription_topics_are_decoded() {
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let subscription = ConsumerProtocolSubscription::default().with_topics(vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ]);
        let mut encoded = bytes::BytesMut::new();
        encoded.extend_from_slice(&1i16.to_be_bytes());
        subscription.encode(&mut encoded, 1).unwrap_or(());
        assert_eq!(
            consumer_subscription(&encoded),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(consumer_subscription(&[0]), None);
    }
}
