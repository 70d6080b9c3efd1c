//! OffsetForLeaderEpoch (API 23), v2..=4: where a leader epoch ends on the
//! leader's log, for truncation detection (KIP-101, KIP-279, KIP-320).
//!
//! A consumer that saw a leader change asks, for the epoch of the last
//! record it consumed, where that epoch ends on the new leader; if that is
//! below its position, the log it read from was truncated and it resets.
//! Followers ask the same before fetching (v3+ names them by replica id).
//!
//! Versions 0 and 1 are gone from Kafka (KIP-896, Kafka 4.0) and from the
//! kafka-protocol crate; v2 is the oldest any client still sends.
//!
//! Runs on the connection's shard; each owning shard answers for its
//! partitions (one call per shard, concurrently), as ListOffsets does. Per
//! partition, as Kafka's `ReplicaManager.lastOffsetForLeaderEpoch`:
//! - a `current_leader_epoch` (-1: unchecked) older than the partition's is
//!   FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH; checked against the
//!   view where the request arrives and again against the replica's own
//!   state on its shard;
//! - only the leader answers, for consumers and followers alike
//!   (NOT_LEADER_OR_FOLLOWER elsewhere); a partition the view does not
//!   know is UNKNOWN_TOPIC_OR_PARTITION;
//! - the answer is `Log::end_offset_for_epoch_client`: the largest epoch
//!   at or below the requested one and the offset where it ends (for the
//!   latest epoch, the log end offset, as Kafka answers); for an epoch
//!   below every cached one (its records deleted), the requested epoch and
//!   the first cached epoch's start, as Kafka; leader epoch and end offset
//!   -1 when the log knows no epoch (UNDEFINED_EPOCH_OFFSET).

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use std::collections::BTreeMap;
use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind,
};
use sluice_engine::{LeaderEpoch, Offset};

use crate::handlers::fetch::{on_shard, serving};
use crate::handlers::{Reply, leader_epoch_error};
use crate::shard::{Shard, ShardId, TopicPartition};

/// One partition's answer: error, leader epoch, end offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochAnswer {
    pub error_code: i16,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

impl EpochAnswer {
    /// No epoch at or below the requested one (Kafka's
    /// UNDEFINED_EPOCH_OFFSET), and what every error carries.
    pub const UNDEFINED: EpochAnswer = EpochAnswer {
        error_code: 0,
        leader_epoch: -1,
        end_offset: -1,
    };

    pub fn error(error: ResponseError) -> EpochAnswer {
        EpochAnswer {
            error_code: error.code(),
            ..EpochAnswer::UNDEFINED
        }
    }

    /// The answer for what `Log::end_offset_for_epoch_client` found.
    pub fn from_log(found: Option<(LeaderEpoch, Offset)>) -> EpochAnswer {
        match found {
            Some((epoch, end_offset)) => {
                assert!(epoch.0 >= 0, "a cached leader epoch is never negative");
                EpochAnswer {
                    error_code: 0,
                    leader_epoch: epoch.0,
                    end_offset: end_offset.value(),
                }
            }
            None => EpochAnswer::UNDEFINED,
        }
    }
}

pub(in crate::handlers) struct Query {
    pub(in crate::handlers) slot: usize,
    pub(in crate::handlers) topic_partition: TopicPartition,
    /// The id of the topic the query was routed for (see list_offsets.rs).
    pub(in crate::handlers) topic_id: uuid::Uuid,
    pub(in crate::handlers) current_leader_epoch: i32,
    pub(in crate::handlers) leader_epoch: i32,
}

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let snapshot = shard.metadata.snapshot();
    let mut answers: Vec<Option<EpochAnswer>> = Vec::new();
    let mut groups: BTreeMap<ShardId, Vec<Query>> = BTreeMap::new();
    for topic in &request.topics {
        let found = snapshot.topics.get(topic.topic.0.as_str());
        let described = access.allows(
            AclOperation::Describe,
            ResourceType::Topic,
            topic.topic.0.as_str(),
        );
        for partition in &topic.partitions {
            let slot = answers.len();
            if !described {
                answers.push(Some(EpochAnswer::error(
                    ResponseError::TopicAuthorizationFailed,
                )));
                continue;
            }
            let assignment = found.and_then(|metadata| {
                usize::try_from(partition.partition)
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
                Err(error) => answers.push(Some(EpochAnswer::error(error))),
                Ok((owner, topic_id)) => {
                    answers.push(None);
                    groups.entry(owner).or_default().push(Query {
                        slot,
                        topic_partition: TopicPartition::new(
                            topic.topic.0.as_str(),
                            partition.partition,
                        ),
                        topic_id,
                        current_leader_epoch: partition.current_leader_epoch,
                        leader_epoch: partition.leader_epoch,
                    });
                }
            }
        }
    }
    let calls = groups.into_iter().map(|(owner, queries)| {
        let slots: Vec<usize> = queries.iter().map(|query| query.slot).collect();
        async move {
            let result = on_shard(shard, owner, move |owner_shard| async move {
                queries
                    .iter()
                    .map(|query| (query.slot, answer_on_owner(&owner_shard, query)))
                    .collect::<Vec<_>>()
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
                tracing::debug!(%gone, "offset for leader epoch on a stopping shard");
                for slot in slots {
                    answers[slot] = Some(EpochAnswer::error(ResponseError::NotLeaderOrFollower));
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
                        .unwrap_or(EpochAnswer::error(ResponseError::UnknownServerError));
                    EpochEndOffset::default()
                        .with_partition(partition.partition)
                        .with_error_code(answer.error_code)
                        .with_leader_epoch(answer.leader_epoch)
                        .with_end_offset(answer.end_offset)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    let response = OffsetForLeaderEpochResponse::default().with_topics(topics);
    Ok(Reply::Body(Box::new(ResponseKind::OffsetForLeaderEpoch(
        response,
    ))))
}

/// The answer on the shard that owns the replica, checked against the
/// replica's own role and epoch: the view the request was routed with may
/// be older than what this shard has applied.
pub(in crate::handlers) fn answer_on_owner(owner: &Shard, query: &Query) -> EpochAnswer {
    let Some(replica) = owner.partition_of(&query.topic_partition, query.topic_id) else {
        // The view places it here but the replica is not open (yet, or any
        // more): retriable, as Kafka answers for a partition its metadata
        // knows but it does not host.
        return EpochAnswer::error(ResponseError::NotLeaderOrFollower);
    };
    let state = replica.state();
    if let Some(error) = leader_epoch_error(state.leader_epoch.0, query.current_leader_epoch) {
        return EpochAnswer::error(error);
    }
    if !state.is_leader() {
        return EpochAnswer::error(ResponseError::NotLeaderOrFollower);
    }
    EpochAnswer::from_log(
        replica
            .log
            .end_offset_for_epoch_client(LeaderEpoch(query.leader_epoch)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_found_epoch_answers_its_epoch_and_end_offset() {
        assert_eq!(
            EpochAnswer::from_log(Some((LeaderEpoch(3), Offset(42)))),
            EpochAnswer {
                error_code: 0,
                leader_epoch: 3,
                end_offset: 42,
            }
        );
    }

    #[test]
    fn no_epoch_answers_undefined_without_an_error() {
        assert_eq!(
            EpochAnswer::from_log(None),
            EpochAnswer {
                error_code: 0,
                leader_epoch: -1,
                end_offset: -1,
            }
        );
    }

    #[test]
    fn errors_carry_undefined_epoch_and_offset() {
        assert_eq!(
            EpochAnswer::error(ResponseError::FencedLeaderEpoch),
            EpochAnswer {
                error_code: 74,
                leader_epoch: -1,
                end_offset: -1,
            }
        );
    }
}
