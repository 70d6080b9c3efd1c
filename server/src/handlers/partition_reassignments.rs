//! AlterPartitionReassignments (API 45, v0-1) and
//! ListPartitionReassignments (API 46, v0): `kafka-reassign-partitions.sh`,
//! AdminClient.alterPartitionReassignments, `rpk cluster partitions
//! move`, `sluice topic reassign`.
//!
//! Alter: each named partition gets a new replica list (or, `null`, its
//! ongoing reassignment cancelled). This broker checks each against its
//! metadata as Kafka's controller does (UNKNOWN_TOPIC_OR_PARTITION,
//! INVALID_REPLICA_ASSIGNMENT for an empty list, a broker twice or an
//! unregistered broker, INVALID_REPLICATION_FACTOR when v1's
//! allow_replication_factor_change is false and the count differs,
//! NO_REASSIGNMENT_IN_PROGRESS for a cancellation of nothing), sends the
//! others to the controller in one request (`controller::reassignment`
//! decides and completes them), and answers once it has applied the
//! change: the reassignment has started (or completed, when nothing had to
//! be copied). The data moves afterwards; List shows what is in progress.
//!
//! Authorization (Kafka's rule): ALTER on the cluster for Alter, DESCRIBE
//! on the cluster for List; refused, the whole response carries
//! CLUSTER_AUTHORIZATION_FAILED.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Access;
use crate::controller::image::MetadataImage;
use crate::controller::reassignment::{self, ReassignmentError};
use crate::controller::types::{BrokerId as ControllerBrokerId, PartitionIndex};
use crate::handlers::Reply;
use crate::shard::Shard;

/// One partition's answer: error and message.
type Outcome = Option<(ResponseError, String)>;

pub async fn alter(
    shard: &Rc<Shard>,
    version: i16,
    request: AlterPartitionReassignmentsRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let allow_replication_factor_change = version < 1 || request.allow_replication_factor_change;
    let asked: Vec<(String, i32, Option<Vec<ControllerBrokerId>>)> = request
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            topic.partitions.into_iter().map(move |partition| {
                (
                    name.clone(),
                    partition.partition_index,
                    partition.replicas.map(|list| {
                        list.into_iter()
                            .map(|id| ControllerBrokerId(id.0))
                            .collect()
                    }),
                )
            })
        })
        .collect();
    let mut response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change);
    if !access.allows_cluster(AclOperation::Alter) {
        let refused = ResponseError::ClusterAuthorizationFailed;
        let outcomes = asked.iter().map(|(topic, partition, _)| {
            (
                (topic.clone(), *partition),
                Some((refused, refused.to_string())),
            )
        });
        response.responses = alter_responses(outcomes);
        response.error_code = refused.code();
        return Ok(Reply::Body(Box::new(
            ResponseKind::AlterPartitionReassignments(response),
        )));
    }
    let image = shard.metadata.controller().image();
    let mut outcomes: Vec<((String, i32), Outcome)> = Vec::new();
    let mut to_send = Vec::new();
    for (topic, partition, target) in asked {
        let outcome = check(
            &image,
            &topic,
            partition,
            target.as_deref(),
            allow_replication_factor_change,
        );
        if outcome.is_none() {
            to_send.push((topic.clone(), partition, target));
        }
        outcomes.push(((topic, partition), outcome));
    }
    if !to_send.is_empty() {
        let failure = match shard
            .metadata
            .controller()
            .alter_reassignments(to_send)
            .await
        {
            Ok(offset) => match shard.metadata.wait_published(offset.0).await {
                Ok(()) => None,
                Err(error) => {
                    tracing::warn!(%error, "AlterPartitionReassignments: waiting for the change");
                    Some((ResponseError::RequestTimedOut, error.to_string()))
                }
            },
            Err(error) => {
                tracing::warn!(%error, "AlterPartitionReassignments: the controller refused");
                let code = if error.is_retriable() {
                    ResponseError::NotController
                } else {
                    ResponseError::InvalidReplicaAssignment
                };
                Some((code, error.to_string()))
            }
        };
        if let Some(failure) = failure {
            for (_, outcome) in outcomes.iter_mut() {
                if outcome.is_none() {
                    *outcome = Some(failure.clone());
                }
            }
        }
    }
    response.responses = alter_responses(outcomes.into_iter());
    Ok(Reply::Body(Box::new(
        ResponseKind::AlterPartitionReassignments(response),
    )))
}

/// The broker's check of one partition against its image (the controller
/// checks again on its own).
fn check(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[ControllerBrokerId]>,
    allow_replication_factor_change: bool,
) -> Outcome {
    let error = |code: ResponseError, message: String| Some((code, message));
    let Some((topic_id, state)) = image.topic_by_name(topic).and_then(|found| {
        let state = image.partition(found.topic_id, PartitionIndex(partition))?;
        Some((found.topic_id, state))
    }) else {
        return error(
            ResponseError::UnknownTopicOrPartition,
            format!("{topic}-{partition} does not exist"),
        );
    };
    if let Some(target) = target
        && !allow_replication_factor_change
        && target.len() != state.original_replicas().len()
    {
        return error(
            ResponseError::InvalidReplicationFactor,
            format!(
                "{topic}-{partition}: {} replicas asked, {} now, and the request does not allow a change",
                target.len(),
                state.original_replicas().len()
            ),
        );
    }
    match reassignment::alter(image, topic_id, PartitionIndex(partition), target) {
        Ok(_) => None,
        Err(ReassignmentError::UnknownTopicOrPartition) => error(
            ResponseError::UnknownTopicOrPartition,
            format!("{topic}-{partition} does not exist"),
        ),
        Err(ReassignmentError::InvalidReplicaAssignment(reason)) => error(
            ResponseError::InvalidReplicaAssignment,
            format!("{topic}-{partition}: {reason}"),
        ),
        Err(ReassignmentError::NoReassignmentInProgress) => error(
            ResponseError::NoReassignmentInProgress,
            format!("{topic}-{partition} has no reassignment to cancel"),
        ),
    }
}

fn alter_responses(
    outcomes: impl Iterator<Item = ((String, i32), Outcome)>,
) -> Vec<ReassignableTopicResponse> {
    let mut by_topic: BTreeMap<String, Vec<ReassignablePartitionResponse>> = BTreeMap::new();
    for ((topic, partition), outcome) in outcomes {
        by_topic.entry(topic).or_default().push(
            ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(outcome.as_ref().map_or(0, |(code, _)| code.code()))
                .with_error_message(outcome.map(|(_, message)| StrBytes::from_string(message))),
        );
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            ReassignableTopicResponse::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect()
}

pub fn list(
    shard: &Rc<Shard>,
    request: ListPartitionReassignmentsRequest,
    access: &Access<'_>,
) -> Reply {
    let mut response = ListPartitionReassignmentsResponse::default();
    if !access.allows_cluster(AclOperation::Describe) {
        response.error_code = ResponseError::ClusterAuthorizationFailed.code();
        return Reply::Body(Box::new(ResponseKind::ListPartitionReassignments(response)));
    }
    let wanted: Option<BTreeMap<String, Vec<i32>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
            .collect()
    });
    let image = shard.metadata.controller().image();
    let ids = |list: Vec<ControllerBrokerId>| list.into_iter().map(|id| BrokerId(id.0)).collect();
    let mut by_topic: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for ongoing in reassignment::ongoing(&image) {
        let listed = wanted.as_ref().is_none_or(|wanted| {
            wanted
                .get(&ongoing.topic)
                .is_some_and(|partitions| partitions.contains(&ongoing.partition))
        });
        if !listed {
            continue;
        }
        by_topic.entry(ongoing.topic).or_default().push(
            OngoingPartitionReassignment::default()
                .with_partition_index(ongoing.partition)
                .with_replicas(ids(ongoing.replicas))
                .with_adding_replicas(ids(ongoing.adding))
                .with_removing_replicas(ids(ongoing.removing)),
        );
    }
    response.topics = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            OngoingTopicReassignment::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect();
    Reply::Body(Box::new(ResponseKind::ListPartitionReassignments(response)))
}
