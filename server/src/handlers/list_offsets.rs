//! ListOffsets (API 2), v1..=10: offsets by time, for consumers' offset
//! resets, `offsetsForTimes` and watermarks.
//!
//! Runs on the connection's shard; each owning shard answers for its
//! partitions (one call per shard, concurrently). Special timestamps:
//! - -2 EARLIEST, -4 EARLIEST_LOCAL (no tiered storage: the same): the log
//!   start offset;
//! - -1 LATEST: the high watermark (`PartitionReplica::high_watermark`)
//!   for isolation_level 0; for read_committed (1) the last stable offset
//!   (`PartitionReplica::last_stable_offset`), which also bounds its
//!   timestamp lookups, as Kafka;
//! - -3 MAX_TIMESTAMP: the record with the largest timestamp;
//! - -5 LATEST_TIERED: nothing is tiered, so offset -1.
//!
//! Any other timestamp finds the first record whose timestamp is >= it;
//! offset and timestamp -1 when no record below the high watermark is that
//! recent (Kafka hides records consumers could not read yet).
//!
//! A new leader's high watermark may lag the previous leader's until its
//! followers catch up: it starts at what the new leader knows, which can be
//! below offsets consumers were already given. While the high watermark is
//! below the leader epoch start offset (the log end when this replica took
//! leadership, `PartitionReplica::leader_epoch_start`), LATEST answers
//! OFFSET_NOT_AVAILABLE, and so do MAX_TIMESTAMP and by-timestamp lookups
//! that find no record below the high watermark, as Kafka's
//! `Partition.fetchOffsetForTimestamp` does: the client retries rather than
//! see "latest" go backwards. EARLIEST is answered regardless.
//!
//! A partition named more than once in a request (in one topic entry or in
//! two of the same name) is answered INVALID_REQUEST at each occurrence,
//! as Kafka's handleListOffsetRequestV1AndAbove answers its
//! `duplicatePartitions`: which of the queries to answer would be a
//! guess. The authorization check comes first, as in Kafka.
//!
//! Only the partition's leader answers (NOT_LEADER_OR_FOLLOWER elsewhere);
//! a `current_leader_epoch` is checked as Fetch does (fetch::serving).
//! Both are checked again on the owning shard against the replica's own
//! role and epoch, as OffsetForLeaderEpoch does: the metadata follower
//! changes a replica's role before it publishes the view that says so, and
//! a request routed with the older view meanwhile answered a follower's
//! lagging high watermark as LATEST.
//! The leader epoch answered is, as Kafka's: for LATEST the partition's
//! current one (the replica's), for EARLIEST and found records the epoch of
//! the batch at that offset (the log's epoch cache), -1 when unknown. A
//! consumer keeps it with its position and later asks OffsetForLeaderEpoch
//! with it to detect truncation: a later epoch than the record's would hide
//! a truncation of the records between.

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse, ResponseKind};
use sluice_engine::{LeaderEpoch, LogError, Offset, TimestampMs};

use crate::handlers::fetch::{on_shard, serving};
use crate::handlers::{Reply, leader_epoch_error};
use crate::shard::{Shard, ShardId, TopicPartition};

pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
pub const LATEST_TIERED_TIMESTAMP: i64 = -5;

/// Versions whose partitions carry a leader epoch.
const LEADER_EPOCH_VERSION_MIN: i16 = 4;

/// One partition's answer: error, timestamp, offset, leader epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetAnswer {
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
    pub leader_epoch: i32,
}

impl OffsetAnswer {
    fn error(error: ResponseError) -> OffsetAnswer {
        OffsetAnswer {
            error_code: error.code(),
            ..OffsetAnswer::NOT_FOUND
        }
    }

    /// No record matches (Kafka's UNKNOWN offset, no error).
    const NOT_FOUND: OffsetAnswer = OffsetAnswer {
        error_code: 0,
        timestamp: -1,
        offset: -1,
        leader_epoch: -1,
    };

    fn found(offset: Offset, timestamp: i64, leader_epoch: i32) -> OffsetAnswer {
        OffsetAnswer {
            error_code: 0,
            timestamp,
            offset: offset.value(),
            leader_epoch,
        }
    }
}

pub(in crate::handlers) struct Query {
    pub(in crate::handlers) slot: usize,
    pub(in crate::handlers) topic_partition: TopicPartition,
    /// The id of the topic the query was routed for: the replica on the
    /// owner must be of this topic, not of one created again under its name.
    pub(in crate::handlers) topic_id: uuid::Uuid,
    pub(in crate::handlers) timestamp: i64,
    /// The client's `current_leader_epoch` (-1: unchecked), checked again
    /// against the replica's on the owner.
    pub(in crate::handlers) current_leader_epoch: i32,
    /// isolation_level 1: answer within the last stable offset.
    pub(in crate::handlers) read_committed: bool,
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ListOffsetsRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let snapshot = shard.metadata.snapshot();
    let mut answers: Vec<Option<OffsetAnswer>> = Vec::new();
    let mut groups: BTreeMap<ShardId, Vec<Query>> = BTreeMap::new();
    let duplicated = duplicated_partitions(&request);
    for topic in &request.topics {
        let found = snapshot.topics.get(topic.name.0.as_str());
        let described = access.allows(
            AclOperation::Describe,
            ResourceType::Topic,
            topic.name.0.as_str(),
        );
        for partition in &topic.partitions {
            let slot = answers.len();
            if !described {
                answers.push(Some(OffsetAnswer::error(
                    ResponseError::TopicAuthorizationFailed,
                )));
                continue;
            }
            if duplicated.contains_key(&(topic.name.0.as_str(), partition.partition_index)) {
                answers.push(Some(OffsetAnswer::error(ResponseError::InvalidRequest)));
                continue;
            }
            let assignment = found.and_then(|metadata| {
                usize::try_from(partition.partition_index)
                    .ok()
                    .and_then(|index| metadata.partitions.get(index))
            });
            let owner = assignment
                .ok_or(ResponseError::UnknownTopicOrPartition)
                .and_then(|state| serving(&snapshot, state, partition.current_leader_epoch))
                .and_then(|owner| {
                    let topic_id = found.ok_or(ResponseError::UnknownTopicOrPartition)?.id;
                    Ok((owner, topic_id))
                });
            match owner {
                Err(error) => answers.push(Some(OffsetAnswer::error(error))),
                Ok((owner, topic_id)) => {
                    answers.push(None);
                    groups.entry(owner).or_default().push(Query {
                        slot,
                        topic_partition: TopicPartition::new(
                            topic.name.0.as_str(),
                            partition.partition_index,
                        ),
                        topic_id,
                        timestamp: partition.timestamp,
                        current_leader_epoch: partition.current_leader_epoch,
                        read_committed: request.isolation_level == 1,
                    });
                }
            }
        }
    }
    let calls = groups.into_iter().map(|(owner, queries)| {
        let slots: Vec<usize> = queries.iter().map(|query| query.slot).collect();
        async move {
            let result = on_shard(shard, owner, move |owner_shard| async move {
                let mut answers = Vec::with_capacity(queries.len());
                for query in queries {
                    answers.push((query.slot, answer_on_owner(&owner_shard, &query).await));
                }
                answers
            })
            .await;
            (slots, result)
        }
    });
    for (slots, result) in join_all(calls).await {
        match result {
            Ok(found) => {
                for (slot, answer) in found {
                    answers[slot] = Some(answer);
                }
            }
            Err(gone) => {
                tracing::debug!(%gone, "list offsets on a stopping shard");
                for slot in slots {
                    answers[slot] = Some(OffsetAnswer::error(ResponseError::NotLeaderOrFollower));
                }
            }
        }
    }
    let mut answers = answers.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let answer = answers
                        .next()
                        .flatten()
                        .unwrap_or(OffsetAnswer::error(ResponseError::UnknownServerError));
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(answer.error_code)
                        .with_timestamp(answer.timestamp)
                        .with_offset(answer.offset)
                        // Not in the schema before v4: must stay at its default.
                        .with_leader_epoch(if version >= LEADER_EPOCH_VERSION_MIN {
                            answer.leader_epoch
                        } else {
                            -1
                        })
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    let response = ListOffsetsResponse::default().with_topics(topics);
    Ok(Reply::Body(Box::new(ResponseKind::ListOffsets(response))))
}

/// The partitions `request` names more than once (by topic name and
/// index, across its topic entries), with how many times.
fn duplicated_partitions(request: &ListOffsetsRequest) -> HashMap<(&str, i32), usize> {
    let mut named: HashMap<(&str, i32), usize> = HashMap::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            *named
                .entry((topic.name.0.as_str(), partition.partition_index))
                .or_default() += 1;
        }
    }
    named.retain(|_, count| *count > 1);
    named
}

/// The answer on the shard that owns the replica, checked against the
/// replica's own role and epoch (see the module docs).
pub(in crate::handlers) async fn answer_on_owner(owner: &Shard, query: &Query) -> OffsetAnswer {
    let Some(replica) = owner.partition_of(&query.topic_partition, query.topic_id) else {
        return OffsetAnswer::error(ResponseError::UnknownTopicOrPartition);
    };
    let state = replica.state();
    if let Some(error) = leader_epoch_error(state.leader_epoch.0, query.current_leader_epoch) {
        return OffsetAnswer::error(error);
    }
    if !state.is_leader() {
        return OffsetAnswer::error(ResponseError::NotLeaderOrFollower);
    }
    let log = &replica.log;
    let high_watermark = replica.high_watermark();
    let lagging = high_watermark_lags(replica.leader_epoch_start(), high_watermark);
    // What the asking consumer can read (Kafka's maxOffset by isolation).
    let high_watermark = if query.read_committed {
        replica.last_stable_offset()
    } else {
        high_watermark
    };
    let found = match query.timestamp {
        EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => {
            let start = log.log_start_offset();
            return OffsetAnswer::found(start, -1, epoch_of(log.epoch_for_offset(start)));
        }
        LATEST_TIMESTAMP if lagging => {
            return OffsetAnswer::error(ResponseError::OffsetNotAvailable);
        }
        LATEST_TIMESTAMP => {
            return OffsetAnswer::found(high_watermark, -1, state.leader_epoch.0);
        }
        LATEST_TIERED_TIMESTAMP => return OffsetAnswer::NOT_FOUND,
        MAX_TIMESTAMP => log.max_timestamp(high_watermark).await,
        target => {
            log.offset_for_timestamp(TimestampMs(target), high_watermark)
                .await
        }
    };
    match found {
        // Only what consumers can read (Kafka filters on the high watermark).
        Ok(Some((offset, timestamp))) if offset < high_watermark => {
            OffsetAnswer::found(offset, timestamp.0, epoch_of(log.epoch_for_offset(offset)))
        }
        // Nothing readable yet, but a caught-up high watermark might show it.
        Ok(_) if lagging => OffsetAnswer::error(ResponseError::OffsetNotAvailable),
        Ok(_) => OffsetAnswer::NOT_FOUND,
        Err(error) => {
            tracing::warn!(partition = %query.topic_partition, %error, "list offsets failed");
            OffsetAnswer::error(match error {
                LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                _ => ResponseError::KafkaStorageError,
            })
        }
    }
}

/// The leader epoch to answer for a found offset: its batch's, or -1
/// (UNDEFINED) when the log's epochs do not cover it.
fn epoch_of(epoch: Option<LeaderEpoch>) -> i32 {
    epoch.map_or(-1, |epoch| epoch.0)
}

/// Whether a leader's high watermark is still below the offset where its
/// leader epoch started (`epoch_start`; `None` on a follower), so that
/// offsets derived from it could go backwards (Kafka's OFFSET_NOT_AVAILABLE
/// window after an election).
fn high_watermark_lags(epoch_start: Option<Offset>, high_watermark: Offset) -> bool {
    epoch_start.is_some_and(|start| high_watermark < start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_lags_until_its_high_watermark_reaches_its_epoch_start() {
        assert!(high_watermark_lags(Some(Offset(10)), Offset(9)));
        assert!(!high_watermark_lags(Some(Offset(10)), Offset(10)));
        assert!(!high_watermark_lags(Some(Offset(10)), Offset(11)));
        assert!(!high_watermark_lags(None, Offset(0)));
    }

    #[test]
    fn offset_not_available_is_kafkas_code_78() {
        assert_eq!(ResponseError::OffsetNotAvailable.code(), 78);
    }

    #[test]
    fn invalid_request_is_kafkas_code_42() {
        assert_eq!(ResponseError::InvalidRequest.code(), 42);
    }

    #[test]
    fn special_timestamps_are_kafkas() {
        assert_eq!(LATEST_TIMESTAMP, -1);
        assert_eq!(EARLIEST_TIMESTAMP, -2);
        assert_eq!(MAX_TIMESTAMP, -3);
        assert_eq!(EARLIEST_LOCAL_TIMESTAMP, -4);
        assert_eq!(LATEST_TIERED_TIMESTAMP, -5);
    }
}
