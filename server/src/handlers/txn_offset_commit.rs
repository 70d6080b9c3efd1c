//! TxnOffsetCommit (v0..=5): offsets a transactional producer commits for
//! a group (send_offsets_to_transaction), sent to the group coordinator
//! after AddOffsetsToTxn. They are written to the group's
//! `__consumer_offsets` partition as a transactional batch of the
//! producer's id and epoch (as Kafka writes them) and kept pending
//! (`Group::pending_txn_offsets`): OffsetFetch does not show them until the
//! transaction's commit marker reaches that partition
//! (`txn::hooks::after_offsets_marker`); an abort marker drops them. They
//! become pending in the synchronous step that appends them, before any
//! marker can be appended after them (`Group::add_pending_txn_offsets`).
//!
//! KIP-890: before writing, the transaction coordinator verifies that the
//! group's partition was added (AddOffsetsToTxn, v0..=4) or adds it on the
//! client's behalf (v5, transaction protocol v2, which sends no
//! AddOffsetsToTxn): txn/membership.rs.
//!
//! The append is checked as a transactional Produce is, in the step that
//! appends (`group::append_as_now`; Kafka appends these batches through
//! its producer-state checks too): INVALID_PRODUCER_EPOCH for a producer
//! fenced on the partition (a marker of a newer epoch: its transaction was
//! aborted, by a timeout or a new instance), and, with verification, the
//! verification guard taken before the coordinator was asked must still
//! hold to open a transaction there (INVALID_TXN_STATE, or
//! TRANSACTION_ABORTABLE for v5). So a commit delayed past its
//! transaction's end never opens a transaction that no marker would end.
//! A marker then ends every pending offset of its producer before it,
//! whatever their epoch (`Group::end_txn`), as a load of the log does and
//! as Kafka does: those were appended after the producer's previous marker
//! there, none at an epoch older than the producer's there, so they belong
//! to the transaction the marker ends (with protocol v2 the marker's epoch
//! is one above its data's, so the epochs could not be matched anyway).
//!
//! A member (generation >= 0 or a member id, v3+) is checked as for
//! OffsetCommit, but never refused for the group's state (Kafka never
//! answers TxnOffsetCommit REBALANCE_IN_PROGRESS, fatal to the Java
//! producer); a producer outside the group (generation -1, no member id)
//! commits to any group, new or not.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ResponseKind, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use sluice_engine::io::Io;

use crate::group::records::OffsetValue;
use crate::group::state::{CommittedOffset, Group};
use crate::group::{self, TxnWriter, offset_key, record_offset, wall_ms};
use crate::handlers::Reply;
use crate::handlers::offset_commit::{Commit, Proposed, validate};
use crate::shard::{Shard, TopicPartition};
use crate::txn::membership::{self, Membership, Verified};

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: TxnOffsetCommitRequest,
) -> anyhow::Result<Reply> {
    let group_id = request.group_id.0.to_string();
    let snapshot = shard.metadata.snapshot();
    let (errors, commits) = validate(
        &snapshot,
        &group_id,
        request.topics.iter().map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| Proposed {
                    partition: partition.partition_index,
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata: partition.committed_metadata.as_deref(),
                })
                .collect();
            (topic.name.0.to_string(), partitions)
        }),
    );
    let group_error = if commits.is_empty() {
        None
    } else {
        match membership(shard, version, &request, &group_id).await {
            Err(error) => Some(error),
            Ok(verified) => {
                let writer = TxnWriter {
                    producer_id: request.producer_id.0,
                    producer_epoch: request.producer_epoch,
                    verified,
                };
                let generation = if version >= 3 {
                    request.generation_id
                } else {
                    -1
                };
                let member_id = request.member_id.to_string();
                let instance_id = request.group_instance_id.map(|id| id.to_string());
                group::on_coordinator(
                    shard,
                    &group_id.clone(),
                    move |owner, partition| async move {
                        commit_on_coordinator(
                            &owner,
                            partition,
                            group_id,
                            writer,
                            generation,
                            member_id,
                            instance_id,
                            commits,
                        )
                        .await
                    },
                )
                .await
                .unwrap_or_else(Some)
            }
        }
    };
    let topics = request
        .topics
        .into_iter()
        .zip(errors)
        .map(|(topic, topic_errors)| {
            let mut out = TxnOffsetCommitResponseTopic::default();
            out.partitions = topic
                .partitions
                .iter()
                .zip(topic_errors)
                .map(|(partition, error)| {
                    let mut result = TxnOffsetCommitResponsePartition::default();
                    result.partition_index = partition.partition_index;
                    result.error_code = error.or(group_error).map_or(0, |error| error.code());
                    result
                })
                .collect();
            out.name = topic.name;
            out
        })
        .collect();
    let mut response = TxnOffsetCommitResponse::default();
    response.topics = topics;
    Ok(Reply::Body(Box::new(ResponseKind::TxnOffsetCommit(
        response,
    ))))
}

/// First TxnOffsetCommit version of transaction protocol v2.
const V2_SINCE: i16 = 5;

/// Verify or add the group's `__consumer_offsets` partition with the
/// transaction coordinator (module docs), after taking the producer's
/// verification guard on it (as a partition leader does before it asks
/// about a produced batch: txn/membership.rs `before_produce`). `Ok` says
/// what the append must check ([`Verified`]: a marker appended while the
/// coordinator was asked, or before the append, ended the transaction the
/// answer was about); `Err` is this API's error.
async fn membership(
    shard: &Rc<Shard>,
    version: i16,
    request: &TxnOffsetCommitRequest,
    group_id: &str,
) -> Result<Verified, ResponseError> {
    let how = if version >= V2_SINCE {
        Membership::Add
    } else if shard.config.transaction_partition_verification {
        Membership::Verify
    } else {
        return Ok(Verified::Off);
    };
    let abortable = version >= V2_SINCE;
    let producer_id = request.producer_id.0;
    let producer_epoch = request.producer_epoch;
    // On the coordinator's shard, which owns the partition; its sequence
    // is the coordinator's (0), never checked.
    let (offsets_partition, guard) =
        group::on_coordinator(shard, group_id, move |owner, partition| async move {
            let replica = owner.partition(&TopicPartition::new(group::OFFSETS_TOPIC, partition));
            let guard = replica.and_then(|replica| {
                membership::begin_verification(
                    &replica,
                    producer_id,
                    producer_epoch,
                    0,
                    owner.io.now_ms(),
                )
            });
            (partition, guard)
        })
        .await?;
    membership::ensure(
        shard,
        &request.transactional_id.0,
        producer_id,
        producer_epoch,
        group::OFFSETS_TOPIC,
        offsets_partition,
        how,
    )
    .await
    .map_err(|error| {
        membership::refusal(error, abortable, ResponseError::CoordinatorLoadInProgress)
    })?;
    Ok(Verified::On {
        guard,
        refusal: membership::refusal(
            ResponseError::InvalidTxnState,
            abortable,
            ResponseError::CoordinatorLoadInProgress,
        ),
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit_on_coordinator(
    owner: &Rc<Shard>,
    partition: i32,
    group_id: String,
    writer: TxnWriter,
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
    commits: Vec<Commit>,
) -> Option<ResponseError> {
    let now_ms = wall_ms();
    let incarnation = {
        let mut groups = owner.groups.groups.borrow_mut();
        let group = match groups.get_mut(&group_id) {
            Some(group) => group,
            None if generation < 0 => groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id, partition, now_ms)),
            None => return Some(ResponseError::IllegalGeneration),
        };
        if let Err(error) = group.check_txn_commit(generation, &member_id, instance_id.as_deref()) {
            return Some(error);
        }
        group.begin_commit()
    };
    let records: Vec<_> = commits
        .iter()
        .map(|commit| {
            let value = OffsetValue {
                offset: commit.offset,
                leader_epoch: commit.leader_epoch,
                metadata: commit.metadata.clone(),
                commit_timestamp: now_ms,
            };
            (
                offset_key(&group_id, &commit.topic, commit.partition),
                Some(value.encode()),
            )
        })
        .collect();
    // One synchronous step: check the producer and append
    // (`group::append_as_now`), then record the offsets as pending
    // (`Group::add_pending_txn_offsets`), before anything else can append
    // a marker after them.
    let producer_id = writer.producer_id;
    let (base, wait) = match group::append_as_now(owner, partition, &records, Some(writer)) {
        Ok(appended) => appended,
        Err(error) => {
            if let Some(group) = owner.groups.groups.borrow_mut().get_mut(&group_id) {
                group.commit_done(incarnation);
            }
            return Some(error);
        }
    };
    let written: Vec<((String, i32), i64)> = commits
        .iter()
        .enumerate()
        .map(|(index, commit)| {
            (
                (commit.topic.clone(), commit.partition),
                record_offset(base, index),
            )
        })
        .collect();
    if let Some(group) = owner.groups.groups.borrow_mut().get_mut(&group_id) {
        group.add_pending_txn_offsets(
            producer_id,
            commits
                .into_iter()
                .zip(&written)
                .map(|(commit, (key, at))| {
                    (
                        key.clone(),
                        CommittedOffset {
                            offset: commit.offset,
                            leader_epoch: commit.leader_epoch,
                            metadata: commit.metadata,
                            commit_timestamp: now_ms,
                            record_offset: *at,
                        },
                    )
                }),
        );
    }
    let outcome = wait.await;
    let mut groups = owner.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(&group_id) else {
        return outcome.err();
    };
    let error = outcome.err();
    if error.is_some() && group.incarnation() == incarnation {
        // Kafka's failPendingTxnOffsetCommit.
        group.drop_failed_txn_offsets(producer_id, &written);
    }
    group.commit_done(incarnation);
    error
}
