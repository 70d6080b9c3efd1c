//! Produce (v3..=12): append each partition's record batch on the shard that
//! owns the partition; for acks=1 and acks=-1 answer once it is durable
//! (there are no followers, so both mean "in this broker's fsynced log").
//!
//! Runs on the connection's shard: resolve topics (never creating them: a
//! topic that does not exist is UNKNOWN_TOPIC_OR_PARTITION, as Kafka; only
//! Metadata auto-creates), check each existing partition's records as
//! Kafka's ProduceRequest.validateRecords (one batch, magic 2, else
//! INVALID_RECORD; zstd only from v7, else UNSUPPORTED_COMPRESSION_TYPE),
//! then send every partition's work to its owning shard and wait for all
//! of them concurrently. A
//! partition this broker does not lead answers NOT_LEADER_OR_FOLLOWER. The
//! replica itself refuses the append when it no longer leads
//! (NOT_LEADER_OR_FOLLOWER: the view the request was routed with is
//! behind) and stamps batches with its own leader epoch
//! (shard/partition.rs). From v10 every NOT_LEADER_OR_FOLLOWER answer,
//! whoever refused, names the leader's id, epoch and endpoint on the
//! client's listener from the view at answer time (KIP-951), so the client
//! goes there without a metadata round trip.
//!
//! On the owning shard, in one synchronous step (no await, so batches are
//! checked and appended in arrival order): exactly one record batch (magic
//! 2; more is INVALID_RECORD, as Kafka requires for v3+), validated by the
//! engine against the topic's max.message.bytes (MESSAGE_TOO_LARGE, nothing
//! written); no control batches from clients; a batch whose codec differs
//! from the topic's compression.type rebuilt under it (engine
//! batch/codec.rs, producer fields and timestamps kept); on compacted
//! topics every record has a key, compressed batches decompressed to check
//! (KIP-467 per-record errors); with CreateTime, record timestamps within
//! message.timestamp.before/after.max.ms (INVALID_TIMESTAMP); a batch the
//! producer marked LogAppendTime refused (INVALID_TIMESTAMP) unless the
//! topic is CreateTime and the batch has a maxTimestamp; the idempotent producer
//! rules (shard/producer_state.rs: duplicates answered with their original
//! offsets, not appended); on LogAppendTime topics the batch's maxTimestamp
//! set to the broker's time, on a copy; on CreateTime topics to the largest
//! of its records' timestamps, whatever the producer's header claims
//! (Kafka's LogValidator), on a copy only when the header is wrong. Then
//! the durability wait.
//!
//! [`dispatch`] splits this in two so that a connection can pipeline: it
//! returns once every partition's batch has been appended on this shard or
//! queued on its owner's inbox, ahead of anything the connection queues
//! there later (so requests of one connection are appended in the order
//! they arrived), with a future for the durability wait and the answer.
//! [`handle`] is both steps back to back.
//!
//! acks=0 gets no response. If any partition failed, the connection is
//! closed instead, as Kafka does, so the client notices and refreshes its
//! metadata.
//!
//! acks=all (-1) needs the committed ISR to hold min.insync.replicas
//! members before the append (else NOT_ENOUGH_REPLICAS, nothing appended)
//! and is answered once the high watermark covers the batch
//! (`PartitionReplica::wait_committed`: NOT_ENOUGH_REPLICAS_AFTER_APPEND if
//! the ISR shrank below it meanwhile, REQUEST_TIMED_OUT after the request's
//! `timeout_ms`, NOT_LEADER_OR_FOLLOWER if leadership moved). acks=1 is
//! answered after the leader's own fsync.
//!
//! Transactions (shard/txn_state.rs): a transactional batch is an
//! idempotent batch that also opens its producer's transaction on the
//! partition (`PartitionReplica::append` tells the transaction state) (its first offset holds the last stable offset back until the
//! coordinator's marker ends it); while one is open, that producer's
//! non-transactional batches are refused (INVALID_TXN_STATE, as Kafka).
//! Before the first transactional batch of a transaction reaches a
//! partition, the coordinator verifies that the client added the
//! partition (v3..=11, KIP-890 part 1) or adds it on the client's behalf
//! (v12, transaction protocol v2): txn/membership.rs.
//!
//! Compressed batches are decompressed as they are checked (as Kafka's
//! LogValidator does): their records' count and offsets, their timestamps,
//! and on compacted topics their keys.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, join_all};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch::codec::{self, CodecError, Target};
use sluice_engine::batch::{self, BatchError, BatchHeader, Compression};
use sluice_engine::io::Io;
use sluice_engine::io::uring::UringIo;
use sluice_engine::{AppendError, FlushPolicy, Log};

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use crate::handlers::{LeaderHint, Reply};
use crate::metadata::ClusterMetadata;
use crate::metadata::topic_config::{TimestampBounds, TimestampType, TopicCompression};
use crate::shard::partition::CommitWaitError;
use crate::shard::producer_state::{ProducerBatch, ProducerStateError, SequenceCheck};
use crate::shard::{PartitionReplica, ReplicaAppendError, Shard, ShardId, TopicPartition};
use crate::txn::membership::Verified;

/// Versions from which a NOT_LEADER_OR_FOLLOWER answer names the current
/// leader and its endpoint (KIP-951).
const LEADER_HINT_VERSION_MIN: i16 = 10;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ProduceRequest,
    listener: &Arc<str>,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    dispatch(shard, version, request, listener, access)
        .await
        .await
}

/// Whether the first batch of any partition's records is transactional,
/// as Kafka's `RequestUtils.hasTransactionalRecords` (headers only; a
/// batch too short or of another magic counts as not transactional and is
/// refused by the append path with its own error).
fn has_transactional_records(request: &ProduceRequest) -> bool {
    request
        .topic_data
        .iter()
        .flat_map(|topic| topic.partition_data.iter())
        .filter_map(|partition| partition.records.as_ref())
        .any(|records| BatchHeader::parse(records).is_ok_and(|header| header.is_transactional()))
}

/// Resolve topics and append every partition's batch on its owner; returns
/// when all of them are appended or queued in order on their owners (not
/// yet durable), with the future that
/// waits for durability and builds the reply. Awaiting `dispatch` of one
/// request before dispatching the next keeps a connection's appends in
/// arrival order even when their durability waits overlap.
///
/// `access`: with the authorizer on, a transactional request needs WRITE
/// on its transactional id (else every partition answers
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and each topic WRITE (else
/// TOPIC_AUTHORIZATION_FAILED). Decided once per topic, never per
/// partition or record.
/// Transactional records in a request without a transactional id are
/// refused the same way whether or not the authorizer is on.
///
/// `listener`: the name of the listener the client connected on, whose
/// endpoints the KIP-951 leader hints carry.
pub async fn dispatch(
    shard: &Rc<Shard>,
    version: i16,
    request: ProduceRequest,
    listener: &Arc<str>,
    access: &Access<'_>,
) -> LocalBoxFuture<'static, anyhow::Result<Reply>> {
    let acks = request.acks;
    let transactional_id = request.transactional_id.as_ref().map(|id| id.0.to_string());
    let timeout = std::time::Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    // Errors that apply to the whole request, answered per partition.
    let refusal: Option<(ResponseError, String)> = if !matches!(acks, -1..=1) {
        Some((
            ResponseError::InvalidRequiredAcks,
            format!("acks must be -1, 0 or 1, got {acks}"),
        ))
    } else if transactional_id.is_none() && has_transactional_records(&request) {
        // As Kafka's handleProduceRequest: transactional records need a
        // transactional id, authorizer or not. Without one there is nothing
        // to check WRITE on and no coordinator to verify the partition with
        // (KIP-890), so a client could open transactions on a partition
        // that no coordinator knows of and hold its last stable offset.
        Some((
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactional records need a transactional id".to_string(),
        ))
    } else {
        transactional_id
            .as_deref()
            .filter(|id| !access.allows(AclOperation::Write, ResourceType::TransactionalId, id))
            .map(|id| {
                (
                    ResponseError::TransactionalIdAuthorizationFailed,
                    format!("Transactional Id authorization failed for {id}"),
                )
            })
    };

    let mut resolved: HashMap<String, Result<Arc<ClusterMetadata>, (ResponseError, String)>> =
        HashMap::new();
    // Each entry resolves once its partition's batch is appended (or
    // refused), to the future of its outcome. They run concurrently: only
    // the order between requests matters, not between partitions.
    let mut work: Vec<LocalBoxFuture<'_, LocalBoxFuture<'static, PartitionOutcome>>> = Vec::new();
    let mut layout: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)> = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let metadata = match &refusal {
            Some(refusal) => Err(refusal.clone()),
            None => match resolved.get(&name) {
                Some(found) => found.clone(),
                None if !access.allows(AclOperation::Write, ResourceType::Topic, &name) => {
                    let refused = Err((
                        ResponseError::TopicAuthorizationFailed,
                        format!("Not authorized to write to topic {name}"),
                    ));
                    resolved.insert(name.clone(), refused.clone());
                    refused
                }
                None => {
                    let found = resolve_topic(shard, &name);
                    resolved.insert(name.clone(), found.clone());
                    found
                }
            },
        };
        let mut indexes = Vec::with_capacity(topic.partition_data.len());
        // One shared name for the topic's partitions: the owning shard's
        // lookup then hashes it once, not once per partition (shard/mod.rs).
        let topic_name: Arc<str> = Arc::from(name.as_str());
        // The owning shard appends only to a replica of this topic: a
        // coordinator's verification (KIP-890) awaits between here and the
        // append, and the topic may be deleted and created again meanwhile.
        let topic_id = metadata
            .as_ref()
            .ok()
            .and_then(|metadata| metadata.topics.get(&name))
            .map(|found| found.id)
            .unwrap_or_default();
        for partition in topic.partition_data {
            let index = partition.index;
            indexes.push(index);
            let owner = match &metadata {
                Err((error, message)) => Err(PartitionOutcome::failed(*error, message.clone())),
                Ok(metadata) => metadata
                    .topics
                    .get(&name)
                    .and_then(|topic| topic.partitions.get(usize::try_from(index).ok()?))
                    .ok_or_else(|| {
                        PartitionOutcome::failed(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic {name} has no partition {index}"),
                        )
                    })
                    .and_then(|state| {
                        validate_records(version, partition.records.as_ref())?;
                        crate::handlers::serving_shard(metadata, state).map_err(|error| {
                            PartitionOutcome::failed(
                                error,
                                format!("this broker does not lead {name}-{index}"),
                            )
                        })
                    }),
            };
            // KIP-890: the coordinator verifies or adds the partition first.
            let owner = match owner {
                Ok(owner) => crate::txn::membership::before_produce(
                    shard,
                    version,
                    owner,
                    &name,
                    index,
                    transactional_id.as_deref(),
                    partition.records.as_ref(),
                )
                .await
                .map(|verified| (owner, verified))
                .map_err(|error| {
                    PartitionOutcome::failed(
                        error,
                        format!("{name}-{index}: the transaction coordinator refused the batch"),
                    )
                }),
                Err(outcome) => Err(outcome),
            };
            work.push(match owner {
                Err(outcome) => {
                    futures_util::future::ready(futures_util::future::ready(outcome).boxed_local())
                        .boxed_local()
                }
                Ok((owner, verified)) => route(
                    shard,
                    owner,
                    TopicPartition {
                        topic: Arc::clone(&topic_name),
                        partition: index,
                    },
                    topic_id,
                    partition.records,
                    verified,
                    Durability {
                        acks,
                        timeout,
                        min_insync: metadata
                            .as_ref()
                            .ok()
                            .and_then(|metadata| {
                                let topic = metadata.topics.get(&name)?;
                                Some(min_insync_replicas(shard, metadata, &topic.configs))
                            })
                            .unwrap_or(1),
                    },
                )
                .boxed_local(),
            });
        }
        layout.push((topic.name, indexes));
    }
    let appended = join_all(work).await;
    let shard = Rc::clone(shard);
    let listener = Arc::clone(listener);
    async move {
        let outcomes = join_all(appended).await;
        // KIP-951: every NOT_LEADER_OR_FOLLOWER answer names the current
        // leader, whatever refused the batch (the routing view, the replica
        // itself, leadership lost while acks=all waited), as Kafka's
        // sendResponseCallback does for each such partition. The view is
        // taken once, and only when a partition needs it.
        let view = (version >= LEADER_HINT_VERSION_MIN
            && acks != 0
            && outcomes
                .iter()
                .any(|outcome| outcome.error == Some(ResponseError::NotLeaderOrFollower)))
        .then(|| shard.metadata.snapshot());
        reply(version, acks, layout, outcomes, view.as_deref(), &listener)
    }
    .boxed_local()
}

/// The answer to a produce request once every partition has its outcome
/// (`outcomes` in the order of `layout`). `view` (needed only when a
/// partition answers NOT_LEADER_OR_FOLLOWER from v10) gives the leader
/// hints, with endpoints on `listener`.
fn reply(
    version: i16,
    acks: i16,
    layout: Vec<(kafka_protocol::messages::TopicName, Vec<i32>)>,
    outcomes: Vec<PartitionOutcome>,
    view: Option<&ClusterMetadata>,
    listener: &str,
) -> anyhow::Result<Reply> {
    let mut outcomes = outcomes.into_iter();

    if acks == 0 {
        let mut failures = Vec::new();
        for (name, indexes) in &layout {
            for (index, outcome) in indexes.iter().zip(outcomes.by_ref()) {
                if let Some(error) = outcome.error {
                    failures.push(format!("{}-{index}: {error:?}", name.0));
                }
            }
        }
        if failures.is_empty() {
            return Ok(Reply::Nothing);
        }
        // Kafka closes the connection of a failed acks=0 produce: the only
        // way to tell the client, which then refreshes its metadata.
        anyhow::bail!(
            "acks=0 produce failed ({}); closing the connection as Kafka does",
            failures.join(", ")
        );
    }

    // The endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers.
    let mut endpoints: BTreeMap<i32, NodeEndpoint> = BTreeMap::new();
    let topics = layout
        .into_iter()
        .map(|(name, indexes)| {
            let partitions = indexes
                .into_iter()
                .zip(outcomes.by_ref())
                .map(|(index, mut outcome)| {
                    if version >= LEADER_HINT_VERSION_MIN
                        && outcome.error == Some(ResponseError::NotLeaderOrFollower)
                        && let Some(view) = view
                    {
                        // A partition the view does not know: no leader
                        // (Kafka's getCurrentLeader answers -1, -1).
                        let hint = view
                            .topics
                            .get(name.0.as_str())
                            .and_then(|topic| topic.partitions.get(usize::try_from(index).ok()?))
                            .map_or(
                                LeaderHint {
                                    leader_id: -1,
                                    leader_epoch: -1,
                                    endpoint: None,
                                },
                                |state| LeaderHint::of(view, state, listener),
                            );
                        if let Some(endpoint) = &hint.endpoint {
                            endpoints.entry(endpoint.id).or_insert_with(|| {
                                NodeEndpoint::default()
                                    .with_node_id(BrokerId(endpoint.id))
                                    .with_host(StrBytes::from_string(endpoint.host.clone()))
                                    .with_port(endpoint.port)
                                    .with_rack(endpoint.rack.clone().map(StrBytes::from_string))
                            });
                        }
                        outcome.leader = Some(Box::new(hint));
                    }
                    outcome.into_response(index, version)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partitions)
        })
        .collect();
    let response = ProduceResponse::default()
        .with_responses(topics)
        .with_node_endpoints(endpoints.into_values().collect());
    Ok(Reply::Body(Box::new(ResponseKind::Produce(response))))
}

/// The metadata snapshot holding topic `name`. Produce never creates a
/// topic: one that does not exist is UNKNOWN_TOPIC_OR_PARTITION, as Kafka's
/// handleProduceRequest answers (only Metadata auto-creates, and clients
/// send it before producing). Internal topics are refused.
fn resolve_topic(
    shard: &Shard,
    name: &str,
) -> Result<Arc<ClusterMetadata>, (ResponseError, String)> {
    if crate::txn::is_internal_topic(name) {
        // Only the coordinators write their internal topics (Kafka
        // refuses client writes to internal topics the same way).
        return Err((
            ResponseError::InvalidTopicException,
            format!("{name} is an internal topic"),
        ));
    }
    let snapshot = shard.metadata.snapshot();
    if snapshot.topics.contains_key(name) {
        Ok(snapshot)
    } else {
        Err((
            ResponseError::UnknownTopicOrPartition,
            format!("topic {name} does not exist"),
        ))
    }
}

/// Kafka's ProduceRequest.validateRecords (v3+), checked where Kafka checks
/// it: once the partition is known to exist, before leadership and before
/// the batch is looked at any further. The first batch is framed as
/// Kafka's batch iterator frames it, whatever its magic (batchLength at 8,
/// magic at 16): none (too short, or cut off) is INVALID_RECORD; one of
/// magic 0 or 1 is INVALID_RECORD, not UNSUPPORTED_FOR_MESSAGE_FORMAT
/// (Produce v3+ carries only record batches v2); zstd before v7 is
/// UNSUPPORTED_COMPRESSION_TYPE (KIP-110: such a client cannot read zstd
/// back); a second whole batch after it is INVALID_RECORD. A batchLength
/// below the smallest record is CORRUPT_MESSAGE (Kafka's
/// CorruptRecordException). `None` (null records) is left to [`accept`].
fn validate_records(version: i16, records: Option<&Bytes>) -> Result<(), PartitionOutcome> {
    use sluice_engine::batch::layout;
    /// Kafka's LegacyRecord.RECORD_OVERHEAD_V0: the smallest batchLength
    /// of any format.
    const BATCH_LENGTH_MIN: i32 = 14;
    /// Bytes up to and including the magic (Kafka's
    /// HEADER_SIZE_UP_TO_MAGIC).
    const HEADER_SIZE_UP_TO_MAGIC: usize = layout::MAGIC_AT + 1;
    /// The size of the batch at the start of `bytes` if a whole one is
    /// there, as Kafka's ByteBufferLogInputStream.nextBatch decides.
    fn next_batch_size(bytes: &[u8]) -> Result<Option<usize>, PartitionOutcome> {
        let Some(length) = bytes.get(layout::BATCH_LENGTH_AT..layout::LOG_OVERHEAD) else {
            return Ok(None);
        };
        let batch_length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        if batch_length < BATCH_LENGTH_MIN {
            return Err(PartitionOutcome::failed(
                ResponseError::CorruptMessage,
                format!(
                    "Record size {batch_length} is less than the minimum record overhead \
                     ({BATCH_LENGTH_MIN})"
                ),
            ));
        }
        let size = usize::try_from(batch_length)
            .unwrap_or(usize::MAX)
            .saturating_add(layout::LOG_OVERHEAD);
        Ok((bytes.len() >= HEADER_SIZE_UP_TO_MAGIC && bytes.len() >= size).then_some(size))
    }
    let Some(records) = records else {
        return Ok(());
    };
    let invalid = |message: String| {
        Err(PartitionOutcome::failed(
            ResponseError::InvalidRecord,
            message,
        ))
    };
    let Some(size) = next_batch_size(records)? else {
        return invalid(format!(
            "Produce requests with version {version} must have at least one record batch"
        ));
    };
    if records[layout::MAGIC_AT] as i8 != layout::MAGIC_V2 {
        return invalid(format!(
            "Produce requests with version {version} are only allowed to contain record \
             batches with magic version 2"
        ));
    }
    assert!(
        size >= layout::ATTRIBUTES_AT + 2,
        "a batch of BATCH_LENGTH_MIN bytes or more holds its attributes"
    );
    let attributes = i16::from_be_bytes([
        records[layout::ATTRIBUTES_AT],
        records[layout::ATTRIBUTES_AT + 1],
    ]);
    /// Attributes bits 0-2: the codec.
    const COMPRESSION_MASK: i16 = 0x07;
    if version < 7 && attributes & COMPRESSION_MASK == i16::from(Compression::Zstd.code()) {
        return Err(PartitionOutcome::failed(
            ResponseError::UnsupportedCompressionType,
            format!(
                "Produce requests with version {version} are not allowed to use ZStandard \
                 compression"
            ),
        ));
    }
    if next_batch_size(&records[size..])?.is_some() {
        return invalid(format!(
            "Produce requests with version {version} are only allowed to contain exactly \
             one record batch per partition"
        ));
    }
    Ok(())
}

/// What a produce waits for before it is answered.
#[derive(Clone, Copy, Debug)]
pub(in crate::handlers) struct Durability {
    pub(in crate::handlers) acks: i16,
    /// The request's timeout_ms: how long acks=all waits for the ISR.
    pub(in crate::handlers) timeout: std::time::Duration,
    /// min.insync.replicas of the topic (or the broker default).
    pub(in crate::handlers) min_insync: usize,
}

/// A topic's min.insync.replicas: its config, else this broker's dynamic
/// value, else the cluster's dynamic default (metadata/broker_config.rs),
/// else the broker's flag.
pub(crate) fn min_insync_replicas(
    shard: &Shard,
    view: &crate::metadata::ClusterMetadata,
    configs: &std::collections::BTreeMap<String, String>,
) -> usize {
    const NAME: &str = "min.insync.replicas";
    configs
        .get(NAME)
        .or_else(|| view.broker_configs.of(Some(view.node_id)).get(NAME))
        .or_else(|| view.broker_configs.of(None).get(NAME))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or_else(|| usize::try_from(shard.config.min_insync_replicas).unwrap_or(1))
        .max(1)
}

/// Produce to `topic_partition` on its owning shard. Returns once the batch
/// is appended (or refused) on this shard, or queued on the owner's inbox,
/// with the future of its outcome (which waits for durability).
pub(in crate::handlers) async fn route(
    shard: &Rc<Shard>,
    owner: ShardId,
    topic_partition: TopicPartition,
    topic_id: uuid::Uuid,
    records: Option<Bytes>,
    verified: Verified,
    durability: Durability,
) -> LocalBoxFuture<'static, PartitionOutcome> {
    if owner == shard.id {
        return started(produce_on_owner(
            Rc::clone(shard),
            topic_partition,
            topic_id,
            records,
            verified,
            durability,
        ))
        .await;
    }
    // Posted, not called: the job appends at its first poll (as
    // `produce_on_owner` promises), and the jobs one task posts to a shard
    // start there in the order they were posted (`Shards::post`). So the
    // appends of a connection's requests to this partition keep their order
    // without waiting here for a "appended" answer from the owner: one
    // cross-shard wake-up each way per batch, the outcome's, instead of
    // two back (issue 11, docs/benchmarks.md, sixteenth session).
    let posted = shard
        .shards
        .post(owner, move |owner| {
            produce_on_owner(
                owner,
                topic_partition,
                topic_id,
                records,
                verified,
                durability,
            )
        })
        .await;
    async move {
        match posted {
            Ok(receiver) => receiver.await.unwrap_or_else(|_| {
                PartitionOutcome::failed(
                    ResponseError::NotLeaderOrFollower,
                    "the owning shard stopped before answering".to_string(),
                )
            }),
            Err(gone) => {
                PartitionOutcome::failed(ResponseError::NotLeaderOrFollower, gone.to_string())
            }
        }
    }
    .boxed_local()
}

/// Poll `future` once (which runs [`produce_on_owner`] up to and including
/// the append) and hand back the rest of it.
async fn started(
    future: impl Future<Output = PartitionOutcome> + 'static,
) -> LocalBoxFuture<'static, PartitionOutcome> {
    let mut future = future.boxed_local();
    match futures_util::poll!(&mut future) {
        std::task::Poll::Ready(outcome) => futures_util::future::ready(outcome).boxed_local(),
        std::task::Poll::Pending => future,
    }
}

/// Runs on the owning shard. Everything up to the append happens at the
/// first poll (see [`accept`]); then the durability wait.
async fn produce_on_owner(
    owner: Rc<Shard>,
    topic_partition: TopicPartition,
    topic_id: uuid::Uuid,
    records: Option<Bytes>,
    verified: Verified,
    durability: Durability,
) -> PartitionOutcome {
    let acks = durability.acks;
    let Some(replica) = owner.partition_of(&topic_partition, topic_id) else {
        return PartitionOutcome::failed(
            ResponseError::UnknownTopicOrPartition,
            format!(
                "partition {topic_partition} is not open on shard {}",
                owner.id.0
            ),
        );
    };
    let now_ms = owner.io.now_ms();
    if acks == -1
        && let Some(isr) = replica.isr_size()
        && isr < durability.min_insync
    {
        return PartitionOutcome::failed(
            ResponseError::NotEnoughReplicas,
            format!(
                "{topic_partition}: {isr} in-sync replicas, min.insync.replicas is {}",
                durability.min_insync
            ),
        );
    }
    let epoch = replica.state().leader_epoch;
    let accepted = match accept(&replica, records, verified, now_ms) {
        Ok(accepted) => accepted,
        Err(outcome) => {
            tracing::debug!(partition = %topic_partition, error = ?outcome.error, message = ?outcome.error_message, "produce refused");
            return outcome;
        }
    };
    match accepted {
        Accepted::Appended {
            completion,
            outcome,
            end,
        } => {
            if acks == 0 {
                // Still wake waiting fetches once durable.
                compio::runtime::spawn(completion).detach();
                return outcome;
            }
            if let Err(error) = completion.await {
                return append_failed(&error);
            }
            committed_or_failed(&owner, &replica, outcome, end, epoch, durability).await
        }
        Accepted::Duplicate {
            outcome,
            flush,
            end,
        } => {
            // The original may not be durable yet (it is in flight in an
            // earlier request): acknowledge no sooner than it would be.
            if acks != 0
                && let Some(log) = flush
                && let Err(error) = log.flush().await
            {
                return append_failed(&error);
            }
            committed_or_failed(&owner, &replica, outcome, end, epoch, durability).await
        }
    }
}

/// acks=all: `outcome` once the high watermark covers `end`, else the
/// error Kafka answers (see the module docs). Other acks: `outcome`. The
/// ISR is held to min.insync.replicas as the owner's view says when the
/// high watermark gets there, as Kafka's DelayedProduce (a value lowered
/// meanwhile lets a waiting acks=all through).
async fn committed_or_failed(
    owner: &Shard,
    replica: &PartitionReplica,
    outcome: PartitionOutcome,
    end: sluice_engine::Offset,
    epoch: sluice_engine::LeaderEpoch,
    durability: Durability,
) -> PartitionOutcome {
    if durability.acks != -1 {
        return outcome;
    }
    let min_insync = || {
        let view = owner.metadata.snapshot();
        view.topics
            .get(replica.topic_partition.topic.as_ref())
            .map_or(durability.min_insync, |topic| {
                min_insync_replicas(owner, &view, &topic.configs)
            })
    };
    let waited = replica
        .wait_committed(end, epoch, min_insync, durability.timeout)
        .await;
    match waited {
        Ok(()) => outcome,
        Err(error) => {
            let code = match error {
                CommitWaitError::NotLeader => ResponseError::NotLeaderOrFollower,
                CommitWaitError::NotEnoughReplicasAfterAppend => {
                    ResponseError::NotEnoughReplicasAfterAppend
                }
                CommitWaitError::TimedOut => ResponseError::RequestTimedOut,
            };
            PartitionOutcome::failed(code, format!("{}: {error}", replica.topic_partition))
        }
    }
}

/// [`accept`] for tests driving a replica directly: the error it answers,
/// if any (an appended batch's durability is not awaited).
#[cfg(test)]
pub(crate) fn accept_error(
    replica: &PartitionReplica,
    records: Bytes,
    verified: Verified,
    now_ms: i64,
) -> Option<ResponseError> {
    match accept(replica, Some(records), verified, now_ms) {
        Ok(_) => None,
        Err(outcome) => Some(outcome.error.unwrap_or(ResponseError::UnknownServerError)),
    }
}

/// What [`accept`] did with a batch.
enum Accepted {
    /// Appended; `outcome` is the answer once `completion` resolves `Ok`.
    Appended {
        completion: LocalBoxFuture<'static, Result<(), AppendError>>,
        outcome: PartitionOutcome,
        /// The offset after the batch.
        end: sluice_engine::Offset,
    },
    /// A duplicate of a retained batch: not appended. `flush` is the log to
    /// flush first when the original is not durable yet.
    Duplicate {
        outcome: PartitionOutcome,
        flush: Option<Log<UringIo>>,
        /// The offset after the original batch.
        end: sluice_engine::Offset,
    },
}

/// Validate, apply the topic's policies, the idempotence rules and the
/// transaction's verification guard (`verified`, txn/membership.rs), and
/// append through the replica, which refuses unless it leads and stamps
/// the batch with its leader epoch (shard/partition.rs). Synchronous, so batches are checked and
/// appended in order and the producer state advances only with appends
/// that happened.
fn accept(
    replica: &PartitionReplica,
    records: Option<Bytes>,
    verified: Verified,
    now_ms: i64,
) -> Result<Accepted, PartitionOutcome> {
    let Some(records) = records else {
        return Err(PartitionOutcome::failed(
            ResponseError::InvalidRecord,
            "the partition has no records".to_string(),
        ));
    };
    let batch_count = batch::split_batches(&records)
        .map_err(|error| batch_failed(&error))?
        .len();
    if batch_count != 1 {
        return Err(PartitionOutcome::failed(
            ResponseError::InvalidRecord,
            format!(
                "a produce request (v3+) must carry exactly one record batch per partition, \
                 got {batch_count}"
            ),
        ));
    }
    let (
        cleanup_policy,
        timestamp_type,
        timestamp_bounds,
        compression,
        max_message_bytes,
        flush_policy,
    ) = {
        let config = replica.config.borrow();
        (
            config.cleanup_policy,
            config.timestamp_type,
            config.timestamp_bounds,
            config.compression,
            config.log.max_message_bytes,
            config.log.flush,
        )
    };
    // Validating here first keeps corrupt batches from reaching the
    // producer state or the LogAppendTime rewrite (which recomputes the
    // CRC). The engine's append of these same bytes, below on this thread,
    // then skips its second pass over them (validate_for_append); a
    // rebuilt or rewritten batch is validated again by the append.
    //
    // `records_max_timestamp`: the maxTimestamp the records give, which
    // Kafka's LogValidator stores whatever the producer's header says; read
    // on the passes over the records that the checks below make anyway
    // (`None` until a compressed batch is decompressed).
    let (header, mut records_max_timestamp) =
        sluice_engine::validate_for_append(&records, max_message_bytes as usize)
            .map_err(|error| batch_failed(&error))?;
    if header.is_control() {
        return Err(PartitionOutcome::failed(
            ResponseError::InvalidRecord,
            "clients may not write control batches".to_string(),
        ));
    }
    let producer = ProducerBatch::of(&header).map_err(|error| producer_failed(&error))?;
    if header.is_transactional() && producer.is_none() {
        return Err(PartitionOutcome::failed(
            ResponseError::InvalidRecord,
            "a transactional batch needs a producer id".to_string(),
        ));
    }
    // compression.type: a batch whose codec differs from the topic's is
    // rebuilt under the topic's (Kafka's LogValidator), producer fields
    // and timestamps kept; the rebuilt batch must fit max.message.bytes.
    let (records, header) = match codec_target(compression) {
        Some(target) if target.compression() != header.compression() => {
            // recompress decompresses and validates the records first.
            let (rebuilt, max_timestamp) =
                codec::recompress_with_max_timestamp(&records, &header, target)
                    .map_err(|error| codec_failed(&error))?;
            let header = batch::validate(&rebuilt, max_message_bytes as usize)
                .map_err(|error| batch_failed(&error))?;
            records_max_timestamp = Some(max_timestamp);
            (Bytes::from(rebuilt), header)
        }
        _ => (records, header),
    };
    if cleanup_policy.compacts() {
        // Kafka decompresses to check the keys of a compressed batch too.
        let missing = if header.compression() == Compression::None {
            records_without_key(&records, &header)
        } else {
            let mut missing = Vec::new();
            let mut max_timestamp = batch::NO_TIMESTAMP;
            codec::walk_compressed_records(&records, &header, |index, record| {
                if record.key.is_none() {
                    missing.push(index as i32);
                }
                max_timestamp = max_timestamp.max(header.record_timestamp(record));
            })
            .map_err(|error| codec_failed(&error))?;
            records_max_timestamp = Some(max_timestamp);
            missing
        };
        if !missing.is_empty() {
            return Err(PartitionOutcome::null_keys(
                &replica.topic_partition,
                &missing,
            ));
        }
    }
    // Kafka's LogValidator decompresses every compressed batch: records
    // that do not decompress are CORRUPT_MESSAGE, records whose count or
    // offset deltas differ from the header's INVALID_RECORD (codec_failed,
    // batch_failed). Stored unchecked, such a batch
    // stopped every consumer of the partition at it, and a header claiming
    // 2^31 records moved the log end by that much. Only a compressed batch
    // that no step above decompressed is still without its records'
    // maxTimestamp.
    let records_max_timestamp = match records_max_timestamp {
        Some(max_timestamp) => max_timestamp,
        None => {
            assert!(
                header.compression() != Compression::None,
                "an uncompressed batch's records are read as it is validated"
            );
            let mut max_timestamp = batch::NO_TIMESTAMP;
            codec::walk_compressed_records(&records, &header, |_, record| {
                max_timestamp = max_timestamp.max(header.record_timestamp(record));
            })
            .map_err(|error| codec_failed(&error))?;
            max_timestamp
        }
    };
    // Kafka's validateTimestamp, record by record: on a CreateTime topic a
    // record with a timestamp (for a LogAppendTime batch: its header's
    // maxTimestamp) is judged by the bounds only; any other record of a
    // batch a producer marked LogAppendTime is refused, as only the broker
    // may set that time. So a LogAppendTime batch is refused whole on a
    // LogAppendTime topic, or without a maxTimestamp; on a CreateTime topic
    // it is judged by its maxTimestamp and stored as CreateTime
    // (with_create_time), as Kafka's setMaxTimestamp does.
    let create_time = timestamp_type == TimestampType::CreateTime;
    if header.timestamp_type() == batch::TimestampType::LogAppendTime
        && !(create_time && header.max_timestamp() != batch::NO_TIMESTAMP)
    {
        return Err(PartitionOutcome::invalid_timestamps(
            log_append_time_refused(&records, &header).map_err(|error| codec_failed(&error))?,
        ));
    }
    if create_time && timestamp_bounds.limits() {
        let refused = records_out_of_bounds(&records, &header, timestamp_bounds, now_ms);
        if !refused.is_empty() {
            return Err(PartitionOutcome::invalid_timestamps(refused));
        }
    }

    let log = &replica.log;
    let mut producers = replica.producers.borrow_mut();
    // Forget batches the log lost (truncated) before checking anything.
    producers.reconcile(log.log_end_offset());
    if let Some(producer) = &producer {
        match producers.check(producer, log.log_end_offset()) {
            Ok(SequenceCheck::Append) => {}
            Ok(SequenceCheck::Duplicate(original)) => {
                tracing::debug!(partition = %replica.topic_partition, producer = producer.producer_id.0, sequence = producer.first_sequence, offset = %original.base_offset, "duplicate batch acknowledged with its original offset");
                let not_durable = original.last_offset >= log.durable_end_offset();
                let flush =
                    (not_durable && flush_policy == FlushPolicy::BeforeAck).then(|| log.clone());
                return Ok(Accepted::Duplicate {
                    end: original.last_offset.plus(1),
                    outcome: PartitionOutcome::appended(
                        original.base_offset.value(),
                        original.log_append_time_ms,
                        log.log_start_offset().value(),
                    ),
                    flush,
                });
            }
            Err(error) => return Err(producer_failed(&error)),
        }
        // Kafka: a producer with a transaction open here writes only
        // transactional batches until the transaction ends.
        let open = {
            let mut txns = replica.txns.borrow_mut();
            txns.reconcile(log.log_end_offset());
            txns.open_transaction(producer.producer_id)
        };
        // KIP-890: a batch that opens the transaction here must hold the
        // guard it was verified under; a marker since (the transaction
        // ended) removed it.
        if header.is_transactional()
            && open.is_none()
            && let Some(refusal) =
                verified.refusal_to_open(&producers, producer.producer_id, producer.epoch)
        {
            return Err(PartitionOutcome::failed(
                refusal,
                format!(
                    "producer {} epoch {}: its transaction ended on this partition after the \
                     batch was verified; it may not open another",
                    producer.producer_id.0, producer.epoch
                ),
            ));
        }
        if !header.is_transactional()
            && let Some(first_offset) = open
        {
            return Err(PartitionOutcome::failed(
                ResponseError::InvalidTxnState,
                format!(
                    "producer {} has a transaction open since offset {first_offset}; \
                     a non-transactional batch is not allowed",
                    producer.producer_id.0
                ),
            ));
        }
    }
    let (records, log_append_time_ms) = match timestamp_type {
        TimestampType::LogAppendTime => (with_log_append_time(&records, now_ms), now_ms),
        TimestampType::CreateTime => (
            with_create_time(records, &header, records_max_timestamp),
            -1,
        ),
    };
    let appended = replica.append(&records).map_err(|error| match error {
        ReplicaAppendError::NotLeader { .. } => {
            PartitionOutcome::failed(ResponseError::NotLeaderOrFollower, error.to_string())
        }
        ReplicaAppendError::Append(error) => append_failed(&error),
    })?;
    if let Some(producer) = &producer {
        producers.record(
            producer,
            appended.base_offset,
            appended.last_offset,
            log_append_time_ms,
            now_ms,
        );
        if header.is_transactional() {
            // The transaction is open: the guard is spent.
            producers.end_verification(producer.producer_id);
        }
    }
    Ok(Accepted::Appended {
        end: appended.last_offset.plus(1),
        completion: appended.completion,
        outcome: PartitionOutcome::appended(
            appended.base_offset.value(),
            log_append_time_ms,
            log.log_start_offset().value(),
        ),
    })
}

/// Indexes (in the batch) of the records with a null key. `batch` is one
/// validated, uncompressed batch, so every record decodes.
fn records_without_key(batch: &[u8], header: &BatchHeader) -> Vec<i32> {
    batch::records(batch, header)
        .zip(0..)
        .filter_map(|(record, index)| match record {
            Ok(record) if record.key.is_none() => Some(index),
            _ => None,
        })
        .collect()
}

/// The records of the validated batch `batch` whose CreateTime is outside
/// `bounds` at broker time `now_ms` (message.timestamp.before.max.ms and
/// after.max.ms): (index in the batch, Kafka's message). A compressed
/// batch is decompressed to judge each record, as Kafka does; one that does
/// not decompress is judged by its header's first and max timestamps
/// (reported as its first record).
fn records_out_of_bounds(
    batch: &[u8],
    header: &BatchHeader,
    bounds: TimestampBounds,
    now_ms: i64,
) -> Vec<(i32, String)> {
    let base_timestamp = header.base_timestamp().0;
    let message = |timestamp: i64, offset_delta: i64| {
        format!(
            "Timestamp {timestamp} of message with offset {} is out of range. The timestamp \
             should be within [{}, {}]",
            header.base_offset().value().saturating_add(offset_delta),
            now_ms.saturating_sub(bounds.before_max_ms),
            now_ms.saturating_add(bounds.after_max_ms)
        )
    };
    if header.compression() != Compression::None {
        if let Ok(plain) = codec::recompress(batch, header, Target::None)
            && let Ok(plain_header) = batch::validate(&plain, plain.len())
        {
            return records_out_of_bounds(&plain, &plain_header, bounds, now_ms);
        }
        return [base_timestamp, header.max_timestamp().0]
            .into_iter()
            .find(|&timestamp| !bounds.allows(timestamp, now_ms))
            .map(|timestamp| (0, message(timestamp, 0)))
            .into_iter()
            .collect();
    }
    batch::records(batch, header)
        .zip(0..)
        .filter_map(|(record, index)| {
            let record = record.ok()?;
            let timestamp = header.record_timestamp(&record).0;
            (!bounds.allows(timestamp, now_ms))
                .then(|| (index, message(timestamp, i64::from(record.offset_delta))))
        })
        .collect()
}

/// Kafka's record errors for a batch a producer marked LogAppendTime
/// (validateTimestamp): every record, with Kafka's message naming it as
/// `DefaultRecord.toString` does. `batch` is validated, and decompressed
/// already when compressed, so its records decode.
fn log_append_time_refused(
    batch: &[u8],
    header: &BatchHeader,
) -> Result<Vec<(i32, String)>, CodecError> {
    let message = |record: &batch::Record<'_>| {
        format!(
            "Invalid timestamp type in message DefaultRecord(offset={}, timestamp={}, key={} \
             bytes, value={} bytes). Producer should not set timestamp type to LogAppendTime.",
            header
                .base_offset()
                .value()
                .saturating_add(i64::from(record.offset_delta)),
            header.record_timestamp(record).0,
            record.key.map_or(0, <[u8]>::len),
            record.value.map_or(0, <[u8]>::len),
        )
    };
    let mut refused = Vec::new();
    if header.compression() == Compression::None {
        for (record, index) in batch::records(batch, header).zip(0..) {
            refused.push((index, message(&record.map_err(CodecError::Batch)?)));
        }
    } else {
        codec::walk_compressed_records(batch, header, |index, record| {
            refused.push((index as i32, message(record)));
        })?;
    }
    Ok(refused)
}

/// A copy of the validated batch `batch` marked LogAppendTime with
/// `append_time_ms` as its maxTimestamp (see `batch::set_log_append_time`).
fn with_log_append_time(batch: &[u8], append_time_ms: i64) -> Bytes {
    let mut copy = BytesMut::from(batch);
    batch::set_log_append_time(&mut copy, sluice_engine::TimestampMs(append_time_ms));
    copy.freeze()
}

/// The validated batch `batch` (header `header`) as Kafka's LogValidator
/// stores it on a CreateTime topic: marked CreateTime, with the
/// maxTimestamp its records give (`records_max_timestamp`) whatever the
/// producer's header claimed (DefaultRecordBatch.setMaxTimestamp). A
/// header lying low hid the batch from ListOffsets by time; one lying high
/// (i64::MAX) kept its segment from retention.ms forever. The same bytes
/// when the header is right (the usual case: no copy, no CRC pass), else a
/// rewritten copy.
fn with_create_time(
    batch: Bytes,
    header: &BatchHeader,
    records_max_timestamp: sluice_engine::TimestampMs,
) -> Bytes {
    if header.timestamp_type() == batch::TimestampType::CreateTime
        && header.max_timestamp() == records_max_timestamp
    {
        return batch;
    }
    let mut copy = BytesMut::from(&batch[..]);
    batch::set_max_timestamp(
        &mut copy,
        batch::TimestampType::CreateTime,
        records_max_timestamp,
    );
    copy.freeze()
}

/// One partition's answer, built on the owning shard (plain data: it
/// crosses shards).
#[derive(Debug)]
pub(in crate::handlers) struct PartitionOutcome {
    pub(in crate::handlers) error: Option<ResponseError>,
    error_message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    /// KIP-467: (index of the record in the batch, why it was rejected).
    record_errors: Vec<(i32, String)>,
    /// KIP-951: where the client should go instead (NOT_LEADER_OR_FOLLOWER).
    leader: Option<Box<LeaderHint>>,
}

impl PartitionOutcome {
    fn appended(base_offset: i64, log_append_time_ms: i64, log_start_offset: i64) -> Self {
        PartitionOutcome {
            error: None,
            error_message: None,
            base_offset,
            log_append_time_ms,
            log_start_offset,
            record_errors: Vec::new(),
            leader: None,
        }
    }

    fn failed(error: ResponseError, message: String) -> Self {
        PartitionOutcome {
            error: Some(error),
            error_message: Some(message),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            record_errors: Vec::new(),
            leader: None,
        }
    }

    /// Kafka's answer to null keys on a compacted topic, messages included.
    fn null_keys(topic_partition: &TopicPartition, indexes: &[i32]) -> Self {
        let reason = format!(
            "Compacted topic cannot accept message without key in topic partition \
             {topic_partition}."
        );
        let mut outcome = PartitionOutcome::failed(
            ResponseError::InvalidRecord,
            format!(
                "One or more records have been rejected due to {} record errors in total, \
                 and only showing the first error message: {reason}",
                indexes.len()
            ),
        );
        outcome.record_errors = indexes
            .iter()
            .map(|&index| (index, reason.clone()))
            .collect();
        outcome
    }

    /// Kafka's answer to records outside the timestamp bounds (KIP-467
    /// record errors, the whole batch refused).
    fn invalid_timestamps(record_errors: Vec<(i32, String)>) -> Self {
        let mut outcome = PartitionOutcome::failed(
            ResponseError::InvalidTimestamp,
            "One or more records have been rejected due to invalid timestamp".to_string(),
        );
        outcome.record_errors = record_errors;
        outcome
    }

    fn into_response(self, index: i32, version: i16) -> PartitionProduceResponse {
        let mut response = PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(self.error.map_or(0, |error| error.code()))
            .with_base_offset(self.base_offset)
            .with_log_append_time_ms(self.log_append_time_ms)
            .with_log_start_offset(self.log_start_offset);
        if version >= LEADER_HINT_VERSION_MIN
            && let Some(hint) = &self.leader
        {
            response = response.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(hint.leader_id))
                    .with_leader_epoch(hint.leader_epoch),
            );
        }
        // error_message and record_errors exist from v8 on.
        if version >= 8 {
            response = response
                .with_error_message(self.error_message.map(StrBytes::from_string))
                .with_record_errors(
                    self.record_errors
                        .into_iter()
                        .map(|(batch_index, message)| {
                            BatchIndexAndErrorMessage::default()
                                .with_batch_index(batch_index)
                                .with_batch_index_error_message(Some(StrBytes::from_string(
                                    message,
                                )))
                        })
                        .collect(),
                );
        }
        response
    }
}

fn batch_failed(error: &BatchError) -> PartitionOutcome {
    let code = match error.kafka_error_name() {
        "MESSAGE_TOO_LARGE" => ResponseError::MessageTooLarge,
        "UNSUPPORTED_FOR_MESSAGE_FORMAT" => ResponseError::UnsupportedForMessageFormat,
        "INVALID_RECORD" => ResponseError::InvalidRecord,
        // CORRUPT_MESSAGE, and anything the engine adds later.
        _ => ResponseError::CorruptMessage,
    };
    PartitionOutcome::failed(code, error.to_string())
}

/// The codec a topic's batches must have, `None` for compression.type
/// producer (stored as sent).
fn codec_target(compression: TopicCompression) -> Option<Target> {
    match compression {
        TopicCompression::Producer => None,
        TopicCompression::Uncompressed => Some(Target::None),
        TopicCompression::Gzip { level } => Some(Target::Gzip { level }),
        TopicCompression::Snappy => Some(Target::Snappy),
        TopicCompression::Lz4 { .. } => Some(Target::Lz4),
        TopicCompression::Zstd { level } => Some(Target::Zstd { level }),
    }
}

/// A compressed batch that does not decompress, or whose records do not
/// match its header: CORRUPT_MESSAGE (INVALID_RECORD for bad records, as
/// the uncompressed path answers them).
fn codec_failed(error: &CodecError) -> PartitionOutcome {
    match error {
        CodecError::Batch(error) => batch_failed(error),
        CodecError::Compress { .. } => {
            PartitionOutcome::failed(ResponseError::UnknownServerError, error.to_string())
        }
        CodecError::Corrupt { .. } | CodecError::TooLarge { .. } => {
            PartitionOutcome::failed(ResponseError::CorruptMessage, error.to_string())
        }
    }
}

fn producer_failed(error: &ProducerStateError) -> PartitionOutcome {
    let code = match error {
        ProducerStateError::InvalidProducerFields { .. } => ResponseError::InvalidRecord,
        ProducerStateError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        ProducerStateError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
    };
    PartitionOutcome::failed(code, error.to_string())
}

fn append_failed(error: &AppendError) -> PartitionOutcome {
    let code = match error {
        AppendError::InvalidBatch(error) => return batch_failed(error),
        AppendError::StorageFull { .. } | AppendError::Poisoned { .. } => {
            ResponseError::KafkaStorageError
        }
        // Closed under us (shutdown, deletion): the client should look again.
        AppendError::Closed { .. } => ResponseError::NotLeaderOrFollower,
        // A leader epoch older than the log's: this replica was deposed.
        AppendError::EpochRegression { .. } => ResponseError::NotLeaderOrFollower,
        // A follower's truncation in progress (the replica became leader
        // during it): retriable, as a leadership change is.
        AppendError::Truncating { .. } => ResponseError::NotLeaderOrFollower,
    };
    PartitionOutcome::failed(code, error.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use kafka_protocol::messages::TopicName;
    use sluice_engine::TimestampMs;
    use sluice_engine::batch::{BatchBuilder, TimestampType as BatchTimestampType};

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn log_append_time_rewrite_matches_a_batch_built_that_way() {
        let mut builder = BatchBuilder::new();
        builder
            .producer(5, 1, 10)
            .record(Some(&b"k"[..]), Some(&b"v1"[..]), TimestampMs(NOW))
            .record(None, Some(&b"v2"[..]), TimestampMs(NOW + 7));
        let original = builder.build();
        let rewritten = with_log_append_time(&original, NOW + 1000);
        let expected = builder.log_append_time(TimestampMs(NOW + 1000)).build();
        assert_eq!(rewritten, expected);
        let header = batch::validate(&rewritten, 1 << 20).unwrap();
        assert_eq!(header.timestamp_type(), BatchTimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp(), TimestampMs(NOW + 1000));
        assert_eq!(header.base_timestamp(), TimestampMs(NOW));
        // The original is untouched.
        let header = batch::validate(&original, 1 << 20).unwrap();
        assert_eq!(header.timestamp_type(), BatchTimestampType::CreateTime);
    }

    #[test]
    fn records_outside_the_timestamp_bounds_are_found_by_index() {
        let batch = BatchBuilder::new()
            .record(None, Some(&b"1"[..]), TimestampMs(NOW - 100))
            .record(None, Some(&b"2"[..]), TimestampMs(NOW - 101))
            .record(None, Some(&b"3"[..]), TimestampMs(NOW + 11))
            .record(None, Some(&b"4"[..]), TimestampMs(NOW + 10))
            .build();
        let header = batch::validate(&batch, 1 << 20).unwrap();
        let bounds = TimestampBounds {
            before_max_ms: 100,
            after_max_ms: 10,
        };
        let refused = records_out_of_bounds(&batch, &header, bounds, NOW);
        let indexes: Vec<i32> = refused.iter().map(|(index, _)| *index).collect();
        assert_eq!(indexes, vec![1, 2]);
        assert_eq!(
            refused[0].1,
            format!(
                "Timestamp {} of message with offset 1 is out of range. The timestamp should \
                 be within [{}, {}]",
                NOW - 101,
                NOW - 100,
                NOW + 10
            )
        );
        let wide = TimestampBounds {
            before_max_ms: 101,
            after_max_ms: 11,
        };
        assert!(records_out_of_bounds(&batch, &header, wide, NOW).is_empty());
        // A compressed batch is judged record by record too.
        let compressed = codec::recompress(&batch, &header, Target::Lz4).unwrap();
        let compressed_header = batch::validate(&compressed, 1 << 20).unwrap();
        assert_eq!(
            records_out_of_bounds(&compressed, &compressed_header, bounds, NOW),
            refused
        );
    }

    #[test]
    fn every_record_of_a_batch_marked_log_append_time_is_refused_as_kafka_words_it() {
        let mut batch = BatchBuilder::new()
            .record(Some(&b"key"[..]), Some(&b"value"[..]), TimestampMs(NOW))
            .record(None, None, TimestampMs(NOW + 3))
            .build()
            .to_vec();
        batch::set_log_append_time(&mut batch, TimestampMs(NOW + 9));
        let header = batch::validate(&batch, 1 << 20).unwrap();
        let refused = log_append_time_refused(&batch, &header).unwrap();
        assert_eq!(
            refused,
            vec![
                (
                    0,
                    format!(
                        "Invalid timestamp type in message DefaultRecord(offset=0, timestamp={}, \
                         key=3 bytes, value=5 bytes). Producer should not set timestamp type to \
                         LogAppendTime.",
                        NOW + 9
                    )
                ),
                (
                    1,
                    format!(
                        "Invalid timestamp type in message DefaultRecord(offset=1, timestamp={}, \
                         key=0 bytes, value=0 bytes). Producer should not set timestamp type to \
                         LogAppendTime.",
                        NOW + 9
                    )
                ),
            ]
        );
        // Compressed: the records are read as they decompress.
        let compressed = codec::recompress(&batch, &header, Target::Zstd { level: 3 }).unwrap();
        let compressed_header = batch::validate(&compressed, 1 << 20).unwrap();
        assert_eq!(
            log_append_time_refused(&compressed, &compressed_header).unwrap(),
            refused
        );
    }

    #[test]
    fn records_are_checked_as_kafkas_produce_request_validate_records_does() {
        let error = |version: i16, records: &[u8]| {
            validate_records(version, Some(&Bytes::copy_from_slice(records)))
                .err()
                .and_then(|outcome| outcome.error)
        };
        let plain = BatchBuilder::new()
            .record(None, Some(&b"v"[..]), TimestampMs(NOW))
            .build();
        let header = batch::validate(&plain, 1 << 20).unwrap();
        let zstd = codec::recompress(&plain, &header, Target::Zstd { level: 3 }).unwrap();
        let lz4 = codec::recompress(&plain, &header, Target::Lz4).unwrap();
        for version in 3..=12 {
            assert_eq!(error(version, &plain), None);
            assert_eq!(error(version, &lz4), None);
        }
        // Magic 0 and 1 (message sets): INVALID_RECORD in Produce v3+.
        for magic in [0u8, 1] {
            let mut old = plain.to_vec();
            old[batch::layout::MAGIC_AT] = magic;
            assert_eq!(error(9, &old), Some(ResponseError::InvalidRecord));
        }
        // zstd needs v7 (KIP-110).
        for version in 3..=6 {
            assert_eq!(
                error(version, &zstd),
                Some(ResponseError::UnsupportedCompressionType)
            );
        }
        assert_eq!(error(7, &zstd), None);
        // No whole batch: INVALID_RECORD; a second whole one too.
        assert_eq!(error(9, &[]), Some(ResponseError::InvalidRecord));
        assert_eq!(
            error(9, &plain[..plain.len() - 1]),
            Some(ResponseError::InvalidRecord)
        );
        let two = [&plain[..], &plain[..]].concat();
        assert_eq!(error(9, &two), Some(ResponseError::InvalidRecord));
        // A batchLength smaller than any record: CORRUPT_MESSAGE.
        let mut tiny = plain.to_vec();
        tiny[batch::layout::BATCH_LENGTH_AT..batch::layout::LOG_OVERHEAD]
            .copy_from_slice(&13i32.to_be_bytes());
        assert_eq!(error(9, &tiny), Some(ResponseError::CorruptMessage));
    }

    #[test]
    fn records_without_key_are_found_by_index() {
        let batch = BatchBuilder::new()
            .record(Some(&b"a"[..]), Some(&b"1"[..]), TimestampMs(NOW))
            .record(None, Some(&b"2"[..]), TimestampMs(NOW))
            .record(Some(&b""[..]), Some(&b"3"[..]), TimestampMs(NOW))
            .record(None, None, TimestampMs(NOW))
            .build();
        let header = batch::validate(&batch, 1 << 20).unwrap();
        assert_eq!(records_without_key(&batch, &header), vec![1, 3]);
    }

    #[test]
    fn null_key_outcome_lists_every_record_from_v8() {
        let topic_partition = TopicPartition::new("compacted", 2);
        let outcome = PartitionOutcome::null_keys(&topic_partition, &[1, 3]);
        let response = outcome.into_response(2, 8);
        assert_eq!(response.error_code, ResponseError::InvalidRecord.code());
        assert_eq!(response.base_offset, -1);
        let indexes: Vec<i32> = response
            .record_errors
            .iter()
            .map(|error| error.batch_index)
            .collect();
        assert_eq!(indexes, vec![1, 3]);
        assert!(
            response
                .error_message
                .unwrap()
                .contains("due to 2 record errors")
        );
        let old = PartitionOutcome::null_keys(&topic_partition, &[1]).into_response(2, 7);
        assert!(old.record_errors.is_empty() && old.error_message.is_none());
    }

    #[test]
    fn not_leader_names_the_leader_from_v10() {
        let mut outcome =
            PartitionOutcome::failed(ResponseError::NotLeaderOrFollower, "elsewhere".to_string());
        outcome.leader = Some(Box::new(LeaderHint {
            leader_id: 2,
            leader_epoch: 7,
            endpoint: None,
        }));
        let response = outcome.into_response(0, 10);
        assert_eq!(response.current_leader.leader_id, BrokerId(2));
        assert_eq!(response.current_leader.leader_epoch, 7);
        let mut outcome =
            PartitionOutcome::failed(ResponseError::NotLeaderOrFollower, "elsewhere".to_string());
        outcome.leader = Some(Box::new(LeaderHint {
            leader_id: 2,
            leader_epoch: 7,
            endpoint: None,
        }));
        let old = outcome.into_response(0, 9);
        assert_eq!(old.current_leader, LeaderIdAndEpoch::default());
    }

    /// Broker 2 leads `topic`-0 at epoch 7 and listens on PLAINTEXT and
    /// SASL_SSL; broker 3 (fenced) leads `topic`-1.
    fn view_led_elsewhere() -> ClusterMetadata {
        let broker = |id: i32, fenced: bool| crate::metadata::BrokerInfo {
            id,
            host: format!("broker{id}"),
            port: 9090 + id,
            rack: Some("rack-a".to_string()),
            fenced,
            in_controlled_shutdown: false,
            replication_address: None,
        };
        let partition = |leader: i32| crate::metadata::PartitionMetadata {
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: Some(leader),
            leader_epoch: 7,
            partition_epoch: 7,
            local_shard: Some(0),
        };
        ClusterMetadata {
            node_id: 1,
            brokers: [(2, broker(2, false)), (3, broker(3, true))].into(),
            topics: [(
                "topic".to_string(),
                crate::metadata::TopicMetadata {
                    name: "topic".to_string(),
                    id: uuid::Uuid::nil(),
                    partitions: vec![partition(2), partition(3)],
                    configs: BTreeMap::new(),
                },
            )]
            .into(),
            listener_endpoints: [(
                2,
                vec![
                    ("PLAINTEXT".to_string(), "broker2".to_string(), 9092),
                    ("SASL_SSL".to_string(), "public2".to_string(), 19094),
                ],
            )]
            .into(),
            ..ClusterMetadata::default()
        }
    }

    fn produce_response(reply: Reply) -> ProduceResponse {
        match reply {
            Reply::Body(body) => match *body {
                ResponseKind::Produce(response) => response,
                other => panic!("not a produce response: {other:?}"),
            },
            _ => panic!("produce answers with a body"),
        }
    }

    #[test]
    fn a_replica_refusing_as_not_leader_names_the_leader_on_the_clients_listener() {
        let view = view_led_elsewhere();
        // What the owning shard answers when its replica no longer leads
        // (or leadership moved while acks=all waited): no hint of its own.
        let refused = || {
            PartitionOutcome::failed(
                ResponseError::NotLeaderOrFollower,
                "topic-0: this replica is not the leader".to_string(),
            )
        };
        let layout = || vec![(TopicName(StrBytes::from_static_str("topic")), vec![0, 1, 5])];
        let response = produce_response(
            reply(
                10,
                1,
                layout(),
                vec![refused(), refused(), refused()],
                Some(&view),
                "SASL_SSL",
            )
            .unwrap(),
        );
        let partitions = &response.responses[0].partition_responses;
        assert_eq!(partitions[0].current_leader.leader_id, BrokerId(2));
        assert_eq!(partitions[0].current_leader.leader_epoch, 7);
        // A fenced leader is named without an endpoint; a partition the
        // view does not know names none.
        assert_eq!(partitions[1].current_leader.leader_id, BrokerId(3));
        assert_eq!(partitions[2].current_leader.leader_id, BrokerId(-1));
        assert_eq!(partitions[2].current_leader.leader_epoch, -1);
        let endpoints: Vec<(i32, String, i32)> = response
            .node_endpoints
            .iter()
            .map(|endpoint| (endpoint.node_id.0, endpoint.host.to_string(), endpoint.port))
            .collect();
        assert_eq!(endpoints, vec![(2, "public2".to_string(), 19094)]);
        // Before v10 no hint.
        let old = produce_response(
            reply(
                9,
                1,
                layout(),
                vec![refused(), refused(), refused()],
                Some(&view),
                "SASL_SSL",
            )
            .unwrap(),
        );
        assert!(old.node_endpoints.is_empty());
        assert_eq!(
            old.responses[0].partition_responses[0].current_leader,
            LeaderIdAndEpoch::default()
        );
    }

    #[test]
    fn engine_batch_errors_map_to_their_kafka_codes() {
        let too_large = BatchError::TooLarge { size: 10, max: 5 };
        assert_eq!(
            batch_failed(&too_large).error,
            Some(ResponseError::MessageTooLarge)
        );
        let crc = BatchError::CorruptCrc {
            expected: 1,
            actual: 2,
        };
        assert_eq!(
            batch_failed(&crc).error,
            Some(ResponseError::CorruptMessage)
        );
        let magic = BatchError::UnsupportedMagic { magic: 1 };
        assert_eq!(
            batch_failed(&magic).error,
            Some(ResponseError::UnsupportedForMessageFormat)
        );
        let count = BatchError::InvalidRecordsCount { records_count: 0 };
        assert_eq!(
            batch_failed(&count).error,
            Some(ResponseError::InvalidRecord)
        );
        let full = AppendError::StorageFull {
            dir: "/data".into(),
        };
        assert_eq!(
            append_failed(&full).error,
            Some(ResponseError::KafkaStorageError)
        );
    }
}
