//! The transaction coordinator (DESIGN.md "Coordinators"): the state of
//! each transactional id, on the broker leading its `__transaction_state`
//! partition (`abs(java_hash(id)) % partitions`, as groups).
//!
//! Runs on the shard owning that partition. The table is the shard's own
//! (a thread-local: one shard is one thread), holding the ids of the
//! partitions it leads and has loaded. Every request about an id is sent to
//! that shard ([`on_coordinator`]); a transition is written to the
//! partition and committed (acks=all) before it is installed or acted on
//! (txn/state.rs). While it is written, the id's `pending` flag makes the
//! other requests about it answer CONCURRENT_TRANSACTIONS.
//!
//! After PrepareCommit / PrepareAbort is committed, a task writes the
//! markers to every partition of the transaction (txn/markers.rs) and then
//! writes CompleteCommit / CompleteAbort. A replica that starts leading
//! replays the partition ([`load`]) and resumes every PrepareX it finds.
//! A per-shard ticker aborts transactions past their timeout.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use sluice_engine::batch::{self, BatchBuilder, Compression};
use sluice_engine::{ReadLimits, TimestampMs};

use crate::group::{self, wall_ms};
use crate::metadata::{PartitionMetadata, TopicMetadata};
use crate::shard::{PartitionReplica, Shard, ShardId};
use crate::txn::state::{
    EndV2, InitOutcome, NO_EPOCH, TRANSACTION_TIMEOUT_MAX_MS, TxnError, TxnMetadata, TxnPartitions,
    TxnState, TxnVersion,
};
use crate::txn::{TRANSACTION_STATE_PARTITIONS, TRANSACTION_STATE_TOPIC, markers};

/// How often the timeout check runs (Kafka's
/// transaction.abort.timed.out.transaction.cleanup.interval.ms is 10 s; a
/// shorter period costs one pass over the ids).
const TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Segment size of `__transaction_state` (Kafka's
/// transaction.state.log.segment.bytes).
const SEGMENT_BYTES: &str = "104857600";
/// Longest transactional id (stored in an i16-length string).
const TRANSACTIONAL_ID_MAX_BYTES: usize = i16::MAX as usize;

/// One transactional id on its coordinator.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its `__transaction_state` partition.
    pub partition: i32,
    pub metadata: TxnMetadata,
    /// A transition is being written.
    pub pending: bool,
}

/// A loaded partition of `__transaction_state`.
struct Loaded {
    replica: Rc<PartitionReplica>,
    /// The partition's leader epoch when it was loaded (the coordinator
    /// epoch the markers carry).
    coordinator_epoch: i32,
}

#[derive(Default)]
struct Coordinator {
    ids: RefCell<HashMap<String, Entry>>,
    loaded: RefCell<HashMap<i32, Loaded>>,
    /// Partitions being replayed, each with the number of its load (a
    /// later load of the same partition supersedes an earlier one).
    loading: RefCell<HashMap<i32, u64>>,
    loads_started: Cell<u64>,
    ticker_started: Cell<bool>,
}

thread_local! {
    /// This shard's coordinator (one shard per thread).
    static COORDINATOR: Coordinator = Coordinator::default();
}

fn with<R>(work: impl FnOnce(&Coordinator) -> R) -> R {
    COORDINATOR.with(work)
}

/// `__transaction_state`, created on first use (as Kafka creates it on the
/// first FindCoordinator for a transactional id).
pub async fn state_topic(shard: &Rc<Shard>) -> Result<TopicMetadata, ResponseError> {
    group::internal_topic(
        shard,
        TRANSACTION_STATE_TOPIC,
        TRANSACTION_STATE_PARTITIONS,
        SEGMENT_BYTES,
    )
    .await
}

/// The `__transaction_state` partition of `transactional_id` and its state
/// in the published view.
pub async fn coordinator_partition(
    shard: &Rc<Shard>,
    transactional_id: &str,
) -> Result<(i32, PartitionMetadata), ResponseError> {
    if transactional_id.is_empty() || transactional_id.len() > TRANSACTIONAL_ID_MAX_BYTES {
        return Err(ResponseError::InvalidRequest);
    }
    let topic = state_topic(shard).await?;
    let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
    let partition = group::partition_for(transactional_id, count);
    let state = topic
        .partitions
        .get(partition as usize)
        .cloned()
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((partition, state))
}

/// Run `work` on the shard coordinating `transactional_id`, once its
/// partition is loaded: NOT_COORDINATOR when this broker does not lead it,
/// COORDINATOR_LOAD_IN_PROGRESS while it loads.
pub async fn on_coordinator<R, F, W>(
    shard: &Rc<Shard>,
    transactional_id: &str,
    work: W,
) -> Result<R, ResponseError>
where
    R: Send + 'static,
    F: Future<Output = R> + 'static,
    W: FnOnce(Rc<Shard>, i32) -> F + Send + 'static,
{
    let (partition, state) = coordinator_partition(shard, transactional_id).await?;
    let view = shard.metadata.snapshot();
    let owner =
        crate::handlers::serving_shard(&view, &state).map_err(|_| ResponseError::NotCoordinator)?;
    let outcome = shard
        .shards
        .call(owner, move |owner| async move {
            if !with(|coordinator| coordinator.loaded.borrow().contains_key(&partition)) {
                return Err(ResponseError::CoordinatorLoadInProgress);
            }
            start_ticker(&owner);
            Ok(work(Rc::clone(&owner), partition).await)
        })
        .await;
    match outcome {
        Ok(result) => result,
        Err(gone) => {
            tracing::error!(%gone, "transaction coordinator shard unavailable");
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}

/// A copy of the id's state on this shard.
pub fn entry(transactional_id: &str) -> Option<Entry> {
    with(|coordinator| coordinator.ids.borrow().get(transactional_id).cloned())
}

/// Every id on this shard (ListTransactions).
pub fn entries() -> Vec<Entry> {
    with(|coordinator| coordinator.ids.borrow().values().cloned().collect())
}

/// Claim the id for a transition: `Err` when one is in flight. An id not
/// in the table is claimed with `new` (partition and state) as a
/// placeholder, so that two InitProducerIds of a new id do not both write;
/// releasing a placeholder removes it.
fn claim(transactional_id: &str) -> Result<(), TxnError> {
    claim_or_insert(transactional_id, None)
}

fn claim_or_insert(
    transactional_id: &str,
    new: Option<(i32, &TxnMetadata)>,
) -> Result<(), TxnError> {
    with(|coordinator| {
        let mut ids = coordinator.ids.borrow_mut();
        match ids.get_mut(transactional_id) {
            Some(entry) if entry.pending => Err(TxnError::ConcurrentTransactions),
            Some(entry) => {
                entry.pending = true;
                Ok(())
            }
            None => {
                if let Some((partition, metadata)) = new {
                    ids.insert(
                        transactional_id.to_string(),
                        Entry {
                            partition,
                            metadata: metadata.clone(),
                            pending: true,
                        },
                    );
                }
                Ok(())
            }
        }
    })
}

fn release(transactional_id: &str) {
    with(|coordinator| {
        let mut ids = coordinator.ids.borrow_mut();
        let placeholder = match ids.get_mut(transactional_id) {
            Some(entry) => {
                entry.pending = false;
                entry.metadata.producer_epoch == NO_EPOCH
            }
            None => false,
        };
        if placeholder {
            ids.remove(transactional_id);
        }
    });
}

/// The replica of `partition` of `__transaction_state`, when this shard
/// coordinates it.
fn loaded_replica(partition: i32) -> Option<Rc<PartitionReplica>> {
    with(|coordinator| {
        coordinator
            .loaded
            .borrow()
            .get(&partition)
            .map(|loaded| Rc::clone(&loaded.replica))
    })
}

/// Write `next` to the id's partition; once committed, install it. The
/// caller holds the claim ([`claim`]); it is released either way.
async fn transition(
    shard: &Rc<Shard>,
    partition: i32,
    next: TxnMetadata,
) -> Result<(), ResponseError> {
    let replica = loaded_replica(partition);
    let Some(replica) = replica else {
        release(&next.transactional_id);
        return Err(ResponseError::NotCoordinator);
    };
    let mut builder = BatchBuilder::new();
    builder.record(
        Some(&TxnMetadata::encode_key(&next.transactional_id)),
        Some(&next.encode_value()),
        TimestampMs(wall_ms()),
    );
    let written = group::append_committed(shard, &replica, &builder.build()).await;
    with(|coordinator| {
        let loaded = coordinator.loaded.borrow().contains_key(&partition);
        let mut ids = coordinator.ids.borrow_mut();
        match &written {
            // Installed only while this shard still coordinates the id.
            Ok(_) if loaded => {
                ids.insert(
                    next.transactional_id.clone(),
                    Entry {
                        partition,
                        metadata: next.clone(),
                        pending: false,
                    },
                );
            }
            _ => {}
        }
    });
    if written.is_err() {
        release(&next.transactional_id);
    }
    written.map(|_| ())
}

/// An error of the coordinator: a refusal of the state machine, or a Kafka
/// code from the write path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorError {
    Txn(TxnError),
    Kafka(ResponseError),
}

impl CoordinatorError {
    pub fn code(self, version: i16, fenced_since: i16) -> ResponseError {
        match self {
            CoordinatorError::Txn(error) => error.code(version, fenced_since),
            CoordinatorError::Kafka(error) => error,
        }
    }
}

impl From<TxnError> for CoordinatorError {
    fn from(error: TxnError) -> Self {
        CoordinatorError::Txn(error)
    }
}

impl From<ResponseError> for CoordinatorError {
    fn from(error: ResponseError) -> Self {
        CoordinatorError::Kafka(error)
    }
}

/// InitProducerId with a transactional id: the producer id and epoch.
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    partition: i32,
    transactional_id: String,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), CoordinatorError> {
    TxnMetadata::check_timeout(timeout_ms, TRANSACTION_TIMEOUT_MAX_MS)?;
    let current = match entry(&transactional_id) {
        Some(entry) => entry.metadata,
        None => {
            let producer_id = crate::handlers::init_producer_id::allocate_producer_id(shard)
                .await
                .ok_or(ResponseError::CoordinatorLoadInProgress)?;
            match entry(&transactional_id) {
                // Created meanwhile by a concurrent InitProducerId.
                Some(entry) => entry.metadata,
                None => TxnMetadata::new(&transactional_id, producer_id, timeout_ms, wall_ms()),
            }
        }
    };
    // A fresh id for an exhausted epoch is fetched before deciding (rare).
    let fresh = if current.producer_epoch >= i16::MAX - 1 {
        crate::handlers::init_producer_id::allocate_producer_id(shard).await
    } else {
        None
    };
    claim_or_insert(&transactional_id, Some((partition, &current)))?;
    // The state may have changed while the id was fetched: decide on the
    // latest one.
    let current = entry(&transactional_id).map_or(current, |entry| entry.metadata);
    let outcome = match current.prepare_init(timeout_ms, wall_ms(), expected, || fresh) {
        Ok(outcome) => outcome,
        Err(error) => {
            release(&transactional_id);
            return Err(error.into());
        }
    };
    match outcome {
        InitOutcome::Ready(next) => {
            let answer = (next.producer_id, next.producer_epoch);
            transition(shard, partition, next).await?;
            tracing::info!(
                %transactional_id,
                producer_id = answer.0,
                producer_epoch = answer.1,
                "transactional producer initialized"
            );
            Ok(answer)
        }
        InitOutcome::AbortFirst(next) => {
            tracing::info!(%transactional_id, "aborting the ongoing transaction of a fenced producer");
            transition(shard, partition, next).await?;
            complete_in_background(shard, partition, &transactional_id);
            Err(TxnError::ConcurrentTransactions.into())
        }
    }
}

/// AddPartitionsToTxn / AddOffsetsToTxn: add `added` to the transaction
/// (by the client, or for protocol v2 by a partition leader or the group
/// coordinator on its behalf).
pub async fn add_partitions(
    shard: &Rc<Shard>,
    partition: i32,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    added: TxnPartitions,
    version: TxnVersion,
) -> Result<(), CoordinatorError> {
    let Some(current) = entry(&transactional_id) else {
        return Err(TxnError::InvalidProducerIdMapping.into());
    };
    if current.pending {
        return Err(TxnError::ConcurrentTransactions.into());
    }
    let next =
        current
            .metadata
            .prepare_add(producer_id, producer_epoch, &added, wall_ms(), version)?;
    let Some(next) = next else {
        return Ok(());
    };
    claim(&transactional_id)?;
    transition(shard, partition, next).await?;
    Ok(())
}

/// KIP-890 verification (AddPartitionsToTxn v4+ with VerifyOnly): `Ok` when
/// the producer's ongoing transaction holds every partition of `wanted`.
pub fn verify_partitions(
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    wanted: &TxnPartitions,
) -> Result<(), CoordinatorError> {
    let Some(current) = entry(transactional_id) else {
        return Err(TxnError::InvalidProducerIdMapping.into());
    };
    if current.pending {
        return Err(TxnError::ConcurrentTransactions.into());
    }
    current
        .metadata
        .check_partitions_added(producer_id, producer_epoch, wanted)
        .map_err(CoordinatorError::from)
}

/// EndTxn v5+ (transaction protocol v2): like [`end_txn`], with the epoch
/// bumped; the producer id and epoch the client continues with.
pub async fn end_txn_v2(
    shard: &Rc<Shard>,
    partition: i32,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<(i64, i16), CoordinatorError> {
    let Some(current) = entry(&transactional_id) else {
        return Err(TxnError::InvalidProducerIdMapping.into());
    };
    if current.pending {
        return Err(TxnError::ConcurrentTransactions.into());
    }
    // A fresh id for an exhausted epoch is fetched before deciding (rare).
    let fresh = if producer_epoch >= i16::MAX - 1 {
        crate::handlers::init_producer_id::allocate_producer_id(shard).await
    } else {
        None
    };
    claim(&transactional_id)?;
    let latest = entry(&transactional_id).map_or(current.metadata, |entry| entry.metadata);
    let decided = latest.prepare_end_v2(producer_id, producer_epoch, commit, wall_ms(), || fresh);
    let next = match decided {
        Ok(EndV2::Write(next)) => next,
        Ok(EndV2::Done(id, epoch)) => {
            release(&transactional_id);
            return Ok((id, epoch));
        }
        Err(error) => {
            release(&transactional_id);
            return Err(error.into());
        }
    };
    let answer = next.client_identity();
    transition(shard, partition, next).await?;
    complete_in_background(shard, partition, &transactional_id);
    Ok(answer)
}

/// EndTxn: answered once PrepareX is committed; the markers and CompleteX
/// follow in the background.
pub async fn end_txn(
    shard: &Rc<Shard>,
    partition: i32,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<(), CoordinatorError> {
    let Some(current) = entry(&transactional_id) else {
        return Err(TxnError::InvalidProducerIdMapping.into());
    };
    if current.pending {
        return Err(TxnError::ConcurrentTransactions.into());
    }
    let next = current
        .metadata
        .prepare_end(producer_id, producer_epoch, commit, wall_ms())?;
    let Some(next) = next else {
        return Ok(());
    };
    claim(&transactional_id)?;
    transition(shard, partition, next).await?;
    complete_in_background(shard, partition, &transactional_id);
    Ok(())
}

/// Write the markers of the id's PrepareX, then its CompleteX, in a task.
/// Stops when this shard stops coordinating the partition (the next
/// coordinator resumes it when it loads).
fn complete_in_background(shard: &Rc<Shard>, partition: i32, transactional_id: &str) {
    let Some(work) = shard.background_work() else {
        return;
    };
    let shard = Rc::clone(shard);
    let transactional_id = transactional_id.to_string();
    compio::runtime::spawn(async move {
        let _work = work;
        complete(&shard, partition, &transactional_id).await;
    })
    .detach();
}

async fn complete(shard: &Rc<Shard>, partition: i32, transactional_id: &str) {
    let Some(current) = entry(transactional_id) else {
        return;
    };
    let metadata = current.metadata;
    if !metadata.state.is_prepare() {
        return;
    }
    let Some(coordinator_epoch) = with(|coordinator| {
        coordinator
            .loaded
            .borrow()
            .get(&partition)
            .map(|loaded| loaded.coordinator_epoch)
    }) else {
        return;
    };
    let commit = metadata.state == TxnState::PrepareCommit;
    let still_coordinating = move || {
        with(|coordinator| {
            coordinator
                .loaded
                .borrow()
                .get(&partition)
                .is_some_and(|loaded| loaded.coordinator_epoch == coordinator_epoch)
        })
    };
    let written = markers::write_markers(
        shard,
        metadata.producer_id,
        metadata.producer_epoch,
        coordinator_epoch,
        commit,
        metadata.partition_list(),
        &still_coordinating,
    )
    .await;
    if !written {
        tracing::info!(%transactional_id, "stopped writing markers: no longer the coordinator");
        return;
    }
    // The completion is written until it is, while this shard coordinates
    // (Kafka's marker channel retries it too): given up after one failed
    // write (a follower of __transaction_state killed makes the commit
    // wait time out), the id stayed in PrepareX, answering
    // CONCURRENT_TRANSACTIONS to its producer until the partition's
    // leadership moved.
    let mut pause = COMPLETION_RETRY_PAUSE_MIN;
    loop {
        // Wait for a transition in flight (none is expected in PrepareX).
        loop {
            match claim(transactional_id) {
                Ok(()) => break,
                Err(_) => compio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let Some(latest) = entry(transactional_id) else {
            release(transactional_id);
            return;
        };
        if latest.metadata != metadata {
            release(transactional_id);
            return;
        }
        let next = metadata.prepare_complete(wall_ms());
        match transition(shard, partition, next).await {
            Ok(()) => {
                tracing::debug!(%transactional_id, commit, "transaction completed");
                return;
            }
            Err(error) => {
                tracing::warn!(%transactional_id, ?error, "writing the transaction's completion failed; retrying");
            }
        }
        compio::time::sleep(pause).await;
        pause = (pause * 2).min(COMPLETION_RETRY_PAUSE_MAX);
        if !still_coordinating() || shard.background_work().is_none() {
            tracing::info!(%transactional_id, "stopped writing the completion: no longer the coordinator");
            return;
        }
    }
}

/// First pause before writing a failed completion again; doubles up to
/// [`COMPLETION_RETRY_PAUSE_MAX`].
const COMPLETION_RETRY_PAUSE_MIN: Duration = Duration::from_millis(100);
const COMPLETION_RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Start this shard's timeout check (once).
fn start_ticker(shard: &Rc<Shard>) {
    if with(|coordinator| coordinator.ticker_started.replace(true)) {
        return;
    }
    let shard = Rc::clone(shard);
    compio::runtime::spawn(async move {
        loop {
            compio::time::sleep(TIMEOUT_CHECK_INTERVAL).await;
            let Some(_work) = shard.background_work() else {
                return;
            };
            abort_timed_out(&shard).await;
            expire_idle(&shard).await;
        }
    })
    .detach();
}

/// Abort the transactions past their timeout, fencing their producers.
async fn abort_timed_out(shard: &Rc<Shard>) {
    let now = wall_ms();
    let expired: Vec<(i32, TxnMetadata)> = with(|coordinator| {
        coordinator
            .ids
            .borrow()
            .values()
            .filter(|entry| !entry.pending)
            .filter_map(|entry| {
                entry
                    .metadata
                    .prepare_timeout_abort(now)
                    .map(|next| (entry.partition, next))
            })
            .collect()
    });
    for (partition, next) in expired {
        let transactional_id = next.transactional_id.clone();
        if claim(&transactional_id).is_err() {
            continue;
        }
        // Decided on a copy: check it is still the state to replace.
        let unchanged = entry(&transactional_id)
            .is_some_and(|entry| entry.metadata.prepare_timeout_abort(now).as_ref() == Some(&next));
        if !unchanged {
            release(&transactional_id);
            continue;
        }
        tracing::info!(%transactional_id, "aborting a transaction past its timeout");
        match transition(shard, partition, next).await {
            Ok(()) => complete_in_background(shard, partition, &transactional_id),
            Err(error) => {
                tracing::warn!(%transactional_id, ?error, "aborting a timed-out transaction failed")
            }
        }
    }
}

/// transactional.id.expiration.ms: forget the ids idle that long (a
/// tombstone in `__transaction_state`, committed before the id leaves the
/// table). A later InitProducerId for one starts afresh with a new producer
/// id, as in Kafka.
async fn expire_idle(shard: &Rc<Shard>) {
    let now = wall_ms();
    let expiration_ms =
        i64::try_from(shard.config.transactional_id_expiration_ms).unwrap_or(i64::MAX);
    let expired: Vec<(i32, TxnMetadata)> = with(|coordinator| {
        coordinator
            .ids
            .borrow()
            .values()
            .filter(|entry| !entry.pending && entry.metadata.is_expired(now, expiration_ms))
            .map(|entry| (entry.partition, entry.metadata.clone()))
            .collect()
    });
    for (partition, metadata) in expired {
        let transactional_id = metadata.transactional_id.clone();
        if claim(&transactional_id).is_err() {
            continue;
        }
        if entry(&transactional_id).is_none_or(|entry| entry.metadata != metadata) {
            release(&transactional_id);
            continue;
        }
        let replica = loaded_replica(partition);
        let Some(replica) = replica else {
            release(&transactional_id);
            continue;
        };
        let mut builder = BatchBuilder::new();
        builder.record(
            Some(&TxnMetadata::encode_key(&transactional_id)),
            None,
            TimestampMs(wall_ms()),
        );
        match group::append_committed(shard, &replica, &builder.build()).await {
            Ok(_) => {
                with(|coordinator| {
                    coordinator.ids.borrow_mut().remove(&transactional_id);
                });
                tracing::info!(%transactional_id, "transactional id expired");
            }
            Err(error) => {
                release(&transactional_id);
                tracing::warn!(%transactional_id, ?error, "writing the expiry of a transactional id failed");
            }
        }
    }
}

/// A replica of `__transaction_state` started leading on this shard:
/// replay it, then resume the transactions it left in PrepareX.
pub fn load(shard: &Rc<Shard>, replica: &Rc<PartitionReplica>) {
    let partition = replica.topic_partition.partition;
    unload(partition);
    let load_number = with(|coordinator| {
        let number = coordinator.loads_started.get() + 1;
        coordinator.loads_started.set(number);
        coordinator.loading.borrow_mut().insert(partition, number);
        number
    });
    // This load is still wanted (not unloaded or superseded meanwhile);
    // ends it either way.
    let finish = move || {
        with(|coordinator| {
            let mut loading = coordinator.loading.borrow_mut();
            let current = loading.get(&partition) == Some(&load_number);
            if current {
                loading.remove(&partition);
            }
            current
        })
    };
    let Some(work) = shard.background_work() else {
        return;
    };
    let shard = Rc::clone(shard);
    let replica = Rc::clone(replica);
    compio::runtime::spawn(async move {
        let _work = work;
        let coordinator_epoch = replica.state().leader_epoch.0;
        // A leadership that began during a follower's truncation reads
        // the log as the cut leaves it.
        replica.rewrite_done().await;
        let ids = match replay(&replica).await {
            Ok(ids) => ids,
            Err(error) => {
                // Tried again (still loading meanwhile) while this replica
                // leads in the same epoch and the load is still wanted:
                // left failed, its transactional ids answered
                // COORDINATOR_LOAD_IN_PROGRESS until the leadership moved.
                tracing::error!(
                    partition,
                    error = format!("{error:#}"),
                    "loading the transactions failed; trying again"
                );
                drop(_work);
                compio::time::sleep(crate::shard::COORDINATOR_LOAD_RETRY).await;
                let current = replica.state();
                if finish()
                    && current.is_leader()
                    && current.leader_epoch.0 == coordinator_epoch
                    && !shard.partitions.is_closing()
                {
                    load(&shard, &replica);
                }
                return;
            }
        };
        // Still leading in the same epoch, and not unloaded meanwhile.
        let current = replica.state();
        let wanted = finish();
        if !wanted || !current.is_leader() || current.leader_epoch.0 != coordinator_epoch {
            return;
        }
        let resume: Vec<String> = ids
            .values()
            .filter(|metadata| metadata.state.is_prepare())
            .map(|metadata| metadata.transactional_id.clone())
            .collect();
        let count = ids.len();
        with(|coordinator| {
            let mut table = coordinator.ids.borrow_mut();
            table.retain(|_, entry| entry.partition != partition);
            table.extend(ids.into_iter().map(|(id, metadata)| {
                (
                    id,
                    Entry {
                        partition,
                        metadata,
                        pending: false,
                    },
                )
            }));
            coordinator.loaded.borrow_mut().insert(
                partition,
                Loaded {
                    replica: Rc::clone(&replica),
                    coordinator_epoch,
                },
            );
        });
        start_ticker(&shard);
        tracing::debug!(
            partition,
            transactional_ids = count,
            resumed = resume.len(),
            "loaded transaction coordinator partition"
        );
        for transactional_id in resume {
            complete_in_background(&shard, partition, &transactional_id);
        }
    })
    .detach();
}

/// This shard stopped leading `partition` of `__transaction_state`.
pub fn unload(partition: i32) {
    with(|coordinator| {
        coordinator.loading.borrow_mut().remove(&partition);
        coordinator.loaded.borrow_mut().remove(&partition);
        coordinator
            .ids
            .borrow_mut()
            .retain(|_, entry| entry.partition != partition);
    });
}

/// The latest state of every id in the replica's log (tombstones delete).
async fn replay(replica: &PartitionReplica) -> anyhow::Result<HashMap<String, TxnMetadata>> {
    let log = &replica.log;
    // The whole log, as groups load it (group::load_partition).
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut ids = HashMap::new();
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
                let size = header.total_size().min(rest.len());
                let whole = &rest[..size];
                rest = &rest[size..];
                if header.is_control() || header.compression() != Compression::None {
                    continue;
                }
                for record in batch::records(whole, &header) {
                    let record = record?;
                    let Some(key) = record.key else { continue };
                    let transactional_id = match TxnMetadata::decode_key(key) {
                        Ok(id) => id,
                        Err(error) => {
                            tracing::warn!(%error, "skipping an unreadable transaction key");
                            continue;
                        }
                    };
                    match record.value {
                        None => {
                            ids.remove(&transactional_id);
                        }
                        Some(value) => match TxnMetadata::decode_value(&transactional_id, value) {
                            Ok(metadata) => {
                                ids.insert(transactional_id, metadata);
                            }
                            Err(error) => {
                                tracing::warn!(%transactional_id, %error, "skipping an unreadable transaction state");
                            }
                        },
                    }
                }
            }
        }
    }
    Ok(ids)
}

/// The shards of this broker (ListTransactions asks each).
pub fn shard_ids(shard: &Shard) -> impl Iterator<Item = ShardId> {
    (0..shard.shards.count()).map(ShardId)
}
