//! DeleteRecords: advance partitions' log start offsets.
//!
//! Each partition is handled on its owning shard (`Log::delete_records_before`,
//! durable when it returns Ok); partitions on different shards proceed
//! concurrently. Offset -1 means the high watermark
//! (`PartitionReplica::high_watermark`);
//! an offset beyond it, or negative otherwise, is OFFSET_OUT_OF_RANGE. An
//! offset at or below the current log start changes nothing. As Kafka's
//! (DelayedDeleteRecords), the answer waits until every in-sync replica's
//! log start reached the offset (`PartitionReplica::wait_low_watermark`:
//! the followers follow the leader's with its pushes and heartbeats), up to
//! the request's timeout (REQUEST_TIMED_OUT); its low watermark is the
//! smallest of them. Answered once the leader's alone moved, a failover
//! before the followers followed served the deleted records again.
//!
//! The owning shard checks that the replica still leads: the metadata
//! follower changes a replica's role before it publishes the view that
//! says so, and a request routed with the older view meanwhile moved a
//! follower's log start (then answered NOT_LEADER_OR_FOLLOWER).

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, ResponseKind};
use sluice_engine::{LogError, Offset};

use crate::handlers::Reply;
use crate::shard::partition::CommitWaitError;
use crate::shard::{Shard, ShardId, TopicPartition};

/// Kafka's "delete up to the high watermark" offset.
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DeleteRecordsRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let snapshot = shard.metadata.snapshot();
    let timeout = std::time::Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str();
        let placement = snapshot.topics.get(name);
        let deletable = access.allows(AclOperation::Delete, ResourceType::Topic, name);
        let partitions = join_all(topic.partitions.iter().map(|partition| {
            let index = partition.partition_index;
            let offset = partition.offset;
            let owner = placement
                .filter(|_| deletable)
                .and_then(|found| {
                    usize::try_from(index)
                        .ok()
                        .and_then(|i| found.partitions.get(i))
                })
                .ok_or(if deletable {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::TopicAuthorizationFailed
                })
                .and_then(|state| crate::handlers::serving_shard(&snapshot, state))
                .map(|owner| (owner, placement.map(|found| found.id).unwrap_or_default()));
            let topic_partition = TopicPartition::new(name, index);
            async move {
                let outcome = match owner {
                    Ok((owner, topic_id)) => {
                        delete_on_owner(shard, owner, topic_partition, topic_id, offset, timeout)
                            .await
                    }
                    Err(error) => Err(error),
                };
                let result = DeleteRecordsPartitionResult::default().with_partition_index(index);
                match outcome {
                    Ok(low_watermark) => result.with_low_watermark(low_watermark),
                    Err(error) => result.with_low_watermark(-1).with_error_code(error.code()),
                }
            }
        }))
        .await;
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let response = DeleteRecordsResponse::default().with_topics(topics);
    Ok(Reply::Body(Box::new(ResponseKind::DeleteRecords(response))))
}

/// Delete the records of one partition before `offset` on its shard;
/// returns the new log start.
pub(in crate::handlers) async fn delete_on_owner(
    shard: &Rc<Shard>,
    owner: ShardId,
    topic_partition: TopicPartition,
    topic_id: uuid::Uuid,
    offset: i64,
    timeout: std::time::Duration,
) -> Result<i64, ResponseError> {
    let outcome = shard
        .shards
        .call(owner, move |owner| async move {
            // Of the topic the request was routed for: never the records of
            // a topic created again under its name meanwhile.
            let Some(replica) = owner.partition_of(&topic_partition, topic_id) else {
                return Err(ResponseError::UnknownTopicOrPartition);
            };
            let state = replica.state();
            if !state.is_leader() {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            let epoch = state.leader_epoch;
            let high_watermark = replica.high_watermark();
            let target = match offset {
                HIGH_WATERMARK => high_watermark,
                offset if offset < 0 || offset > high_watermark.value() => {
                    return Err(ResponseError::OffsetOutOfRange);
                }
                offset => Offset(offset),
            };
            match replica.log.delete_records_before(target).await {
                Ok(log_start) => match replica
                    .wait_low_watermark(log_start.min(target), epoch, timeout)
                    .await
                {
                    Ok(low_watermark) => Ok(low_watermark.value()),
                    Err(CommitWaitError::TimedOut) => Err(ResponseError::RequestTimedOut),
                    Err(_) => Err(ResponseError::NotLeaderOrFollower),
                },
                Err(LogError::OffsetOutOfRange { .. }) => Err(ResponseError::OffsetOutOfRange),
                // Deleted (or moved) while the request waited for it.
                Err(LogError::Closed { .. }) => Err(ResponseError::UnknownTopicOrPartition),
                Err(LogError::InvalidArgument(reason)) => {
                    tracing::warn!(partition = %topic_partition, %reason, "delete records refused");
                    Err(ResponseError::InvalidRequest)
                }
                Err(error) => {
                    tracing::error!(partition = %topic_partition, %error, "delete records failed");
                    Err(ResponseError::KafkaStorageError)
                }
            }
        })
        .await;
    match outcome {
        Ok(result) => result,
        Err(gone) => {
            tracing::error!(%gone, "delete records: owning shard unavailable");
            Err(ResponseError::UnknownServerError)
        }
    }
}
