//! CreatePartitions: grow topics to a new partition count.
//!
//! The controller places the new partitions' replicas (with the topic's
//! replication factor) unless the request assigns them: one entry per new
//! partition, each naming registered brokers, none twice, as many as the
//! topic's existing partitions have (Kafka's rules and messages).
//! `validate_only` checks everything and changes nothing.

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::handlers::create_topics::{AdminError, check_assignment, count_names, topic_error};
use crate::shard::Shard;
use crate::shard::topics::add_partitions;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: CreatePartitionsRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let occurrences = count_names(request.topics.iter().map(|topic| topic.name.0.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let outcome = if occurrences.get(&name).copied().unwrap_or(0) > 1 {
            Err((
                ResponseError::InvalidRequest,
                format!("Create partitions request contains multiple entries for topic {name}"),
            ))
        } else if !access.allows(AclOperation::Alter, ResourceType::Topic, &name) {
            Err((
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".to_string(),
            ))
        } else {
            grow(shard, &topic, request.validate_only).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        });
    }
    let response = CreatePartitionsResponse::default().with_results(results);
    Ok(Reply::Body(Box::new(ResponseKind::CreatePartitions(
        response,
    ))))
}

async fn grow(
    shard: &Rc<Shard>,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), AdminError> {
    let name = topic.name.0.as_str();
    // A group's or transactional id's coordinator is its partition under
    // the topic's partition count: more partitions would move most of them
    // to new, empty partitions (their committed offsets and transactions
    // out of sight). Kafka fixes the count when its coordinators start;
    // here it cannot change.
    if crate::txn::is_internal_topic(name) {
        return Err((
            ResponseError::InvalidRequest,
            format!(
                "{name} is an internal topic: its partition count decides where groups and \
                 transactional ids live and cannot be changed."
            ),
        ));
    }
    // A creation of this topic in flight decides whether it exists.
    let found = shard.metadata.current_topic(name).await.ok();
    let view = shard.metadata.snapshot();
    let (current, replica_count) = match found {
        Some(found) => (
            found.partitions.len() as i32,
            found
                .partitions
                .first()
                .map(|partition| partition.replicas.len()),
        ),
        None => {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("The topic '{name}' does not exist."),
            ));
        }
    };
    if topic.count == current {
        return Err((
            ResponseError::InvalidPartitions,
            format!("Topic already has {current} partitions."),
        ));
    }
    if topic.count < current {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "Topic currently has {current} partitions, which is higher than the requested \
                 {}.",
                topic.count
            ),
        ));
    }
    let assignment = if let Some(assignments) = &topic.assignments {
        let added = i64::from(topic.count) - i64::from(current);
        if assignments.len() as i64 != added {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "Attempted to add {added} additional partition(s), but only {} assignment(s) \
                     were specified.",
                    assignments.len()
                ),
            ));
        }
        for assignment in assignments {
            check_assignment(&view, replica_count, &assignment.broker_ids)?;
        }
        Some(
            assignments
                .iter()
                .map(|assignment| {
                    assignment
                        .broker_ids
                        .iter()
                        .map(|broker| broker.0)
                        .collect()
                })
                .collect(),
        )
    } else {
        None
    };
    add_partitions(shard, name, topic.count, assignment, validate_only)
        .await
        .map_err(|error| topic_error(&error))?;
    Ok(())
}
