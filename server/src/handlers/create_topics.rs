//! CreateTopics: validate each topic (name, partitions, replication factor,
//! explicit replica assignment, configs), then create it through
//! shard::topics (metadata first, then its partitions open on their shards).
//!
//! Topics are independent: one failing does not stop the others. A topic
//! with any invalid setting is not created at all. `validate_only` runs
//! every check and creates nothing. Sluice is a single node, so the only
//! valid replication factor is 1 and an explicit assignment must name this
//! broker, exactly once, for every partition.
//!
//! Also home of the error mapping shared by the admin handlers
//! ([`topic_error`]).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{BrokerId, CreateTopicsRequest, CreateTopicsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::handlers::Reply;
use crate::handlers::describe_configs::topic_config_entries;
use crate::metadata::{MetadataError, TopicMetadata, validate_topic_name};
use crate::shard::Shard;
use crate::shard::topics::{TopicError, create_topic, settled_snapshot};

/// An error for one topic or resource: the Kafka code and a message for
/// the client.
pub type AdminError = (ResponseError, String);

/// The Kafka error code and message for a failed topic change.
pub fn topic_error(error: &TopicError) -> AdminError {
    let code = match error {
        TopicError::Metadata(metadata) => match metadata {
            MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists,
            MetadataError::TopicCollision { .. } => ResponseError::InvalidTopicException,
            MetadataError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            MetadataError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
            MetadataError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
            MetadataError::InvalidConfig(_) => ResponseError::InvalidConfig,
            MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
            MetadataError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            MetadataError::ControllerUnavailable(_) => ResponseError::RequestTimedOut,
            MetadataError::Controller(_) => ResponseError::UnknownServerError,
        },
    };
    if matches!(
        code,
        ResponseError::KafkaStorageError | ResponseError::UnknownServerError
    ) {
        tracing::error!(%error, "admin change failed");
    }
    (code, error.to_string())
}

/// Check that an explicit assignment of one partition names exactly this
/// broker (Sluice is a single node).
pub fn check_assignment(
    node_id: i32,
    partition: i32,
    broker_ids: &[BrokerId],
) -> Result<(), AdminError> {
    if broker_ids.len() == 1 && broker_ids[0].0 == node_id {
        return Ok(());
    }
    let listed: Vec<i32> = broker_ids.iter().map(|broker| broker.0).collect();
    Err((
        ResponseError::InvalidReplicaAssignment,
        format!(
            "Partition {partition} is assigned to brokers {listed:?}; this single-node cluster \
             has only broker {node_id}, so every partition must be assigned to [{node_id}]."
        ),
    ))
}

/// Turn request configs into a map; a null value or a name given twice is
/// INVALID_CONFIG (validation of names and values is the metadata's).
pub fn config_map<'a>(
    configs: impl IntoIterator<Item = (&'a StrBytes, Option<&'a StrBytes>)>,
) -> Result<BTreeMap<String, String>, AdminError> {
    let mut map = BTreeMap::new();
    for (name, value) in configs {
        let Some(value) = value else {
            return Err((
                ResponseError::InvalidConfig,
                format!(
                    "Null value not supported for topic config {}",
                    name.as_str()
                ),
            ));
        };
        if map
            .insert(name.as_str().to_string(), value.as_str().to_string())
            .is_some()
        {
            return Err((
                ResponseError::InvalidConfig,
                format!("Config {} is given more than once", name.as_str()),
            ));
        }
    }
    Ok(map)
}

/// How often each name occurs in a request: a name listed twice is
/// INVALID_REQUEST for every entry (Kafka's rule for the topic admin APIs).
pub fn count_names<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name.to_string()).or_default() += 1;
    }
    counts
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: CreateTopicsRequest,
) -> anyhow::Result<Reply> {
    let occurrences = count_names(request.topics.iter().map(|topic| topic.name.0.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let outcome = if occurrences.get(&name).copied().unwrap_or(0) > 1 {
            Err((
                ResponseError::InvalidRequest,
                format!("Create topics request contains multiple entries for topic {name}"),
            ))
        } else {
            create_one(shard, &topic, request.validate_only).await
        };
        let result = CreatableTopicResult::default().with_name(topic.name);
        let result = match outcome {
            Ok(created) => {
                let mut result = result.with_error_message(None).with_topic_id(created.id);
                if version >= 5 {
                    let configs = topic_config_entries(&created.configs)
                        .into_iter()
                        .map(|entry| {
                            CreatableTopicConfigs::default()
                                .with_name(StrBytes::from_string(entry.name))
                                .with_value(entry.value.map(StrBytes::from_string))
                                .with_read_only(entry.read_only)
                                .with_config_source(entry.source)
                                .with_is_sensitive(false)
                        })
                        .collect();
                    result = result
                        .with_num_partitions(created.partitions.len() as i32)
                        .with_replication_factor(1)
                        .with_configs(Some(configs));
                }
                result
            }
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        };
        results.push(result);
    }
    let response = CreateTopicsResponse::default().with_topics(results);
    Ok(Reply::Body(Box::new(ResponseKind::CreateTopics(response))))
}

async fn create_one(
    shard: &Rc<Shard>,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<TopicMetadata, AdminError> {
    let name = topic.name.0.as_str();
    let node_id = shard.config.node_id;
    validate_topic_name(name)
        .map_err(|error| (ResponseError::InvalidTopicException, error.to_string()))?;
    // A creation of this name in flight (another client's, or an automatic
    // one) decides whether the topic exists.
    if settled_snapshot(shard, name)
        .await
        .topics
        .contains_key(name)
    {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("Topic '{name}' already exists."),
        ));
    }
    let partitions = if topic.assignments.is_empty() {
        let partitions = match topic.num_partitions {
            -1 => shard.config.default_partitions,
            count if count > 0 => count,
            _ => {
                return Err((
                    ResponseError::InvalidPartitions,
                    "Number of partitions was set to an invalid non-positive value.".to_string(),
                ));
            }
        };
        match topic.replication_factor {
            -1 | 1 => {}
            factor if factor > 1 => {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "Unable to replicate the partition {factor} time(s): this is a \
                         single-node cluster (1 broker)."
                    ),
                ));
            }
            _ => {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    "Replication factor must be larger than 0, or -1 to use the default value."
                        .to_string(),
                ));
            }
        }
        partitions
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. \
                 Both cannot be used at the same time."
                    .to_string(),
            ));
        }
        let mut indexes: Vec<i32> = topic
            .assignments
            .iter()
            .map(|assignment| assignment.partition_index)
            .collect();
        indexes.sort_unstable();
        if indexes
            .iter()
            .enumerate()
            .any(|(position, &index)| position as i64 != i64::from(index))
        {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "Partitions should be a consecutive 0-based integer sequence, got {indexes:?}"
                ),
            ));
        }
        for assignment in &topic.assignments {
            check_assignment(node_id, assignment.partition_index, &assignment.broker_ids)?;
        }
        i32::try_from(topic.assignments.len()).map_err(|_| {
            (
                ResponseError::InvalidReplicaAssignment,
                "Too many partitions in the assignment".to_string(),
            )
        })?
    };
    let configs = config_map(
        topic
            .configs
            .iter()
            .map(|config| (&config.name, config.value.as_ref())),
    )?;
    create_topic(shard, name, partitions, configs, validate_only)
        .await
        .map_err(|error| topic_error(&error))
}
