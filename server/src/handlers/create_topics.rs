//! CreateTopics: validate each topic (name, partitions, replication factor,
//! explicit replica assignment, configs), then create it through
//! shard::topics (metadata first, then its partitions open on their shards).
//!
//! Topics are independent: one failing does not stop the others. A topic
//! with any invalid setting is not created at all. `validate_only` runs
//! every check and creates nothing. The replication factor may be up to
//! the number of live brokers (-1: the default); an explicit assignment
//! names registered brokers, each at most once per partition, the same
//! number for every partition (Kafka's rules and messages). The controller
//! places replicas and checks again when it commits.
//!
//! Also home of the error mapping shared by the admin handlers
//! ([`topic_error`]).

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
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
use crate::handlers::describe_configs::{topic_config_entries, topic_defaults};
use crate::metadata::broker_config::BrokerConfigError;
use crate::metadata::{ClusterMetadata, MetadataError, TopicMetadata, validate_topic_name};
use crate::shard::Shard;
use crate::shard::topics::{TopicError, create_topic_with};

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
            // Kafka answers a static broker config with INVALID_REQUEST
            // ("Cannot update these configs dynamically"), a bad value with
            // INVALID_CONFIG.
            MetadataError::BrokerConfig(
                BrokerConfigError::ReadOnly { .. }
                | BrokerConfigError::NotDynamicHere { .. }
                | BrokerConfigError::PerBrokerOnly { .. },
            ) => ResponseError::InvalidRequest,
            MetadataError::BrokerConfig(_) => ResponseError::InvalidConfig,
            MetadataError::UnknownBroker(_) => ResponseError::InvalidRequest,
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

/// Check an explicit assignment of one partition against the view, as
/// Kafka's controller does: not empty, every broker registered, none twice,
/// and `replica_count` replicas when the other partitions fix it.
pub fn check_assignment(
    view: &ClusterMetadata,
    replica_count: Option<usize>,
    broker_ids: &[BrokerId],
) -> Result<(), AdminError> {
    let invalid = |message: String| Err((ResponseError::InvalidReplicaAssignment, message));
    if broker_ids.is_empty() {
        return invalid(
            "The manual partition assignment includes an empty replica list.".to_string(),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for broker in broker_ids {
        if !view.brokers.contains_key(&broker.0) {
            return invalid(format!(
                "The manual partition assignment includes broker {}, but no such broker is \
                 registered.",
                broker.0
            ));
        }
        if !seen.insert(broker.0) {
            return invalid(format!(
                "The manual partition assignment includes the broker {} more than once.",
                broker.0
            ));
        }
    }
    if let Some(count) = replica_count
        && count != broker_ids.len()
    {
        return invalid(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this \
             is not consistent with previous partitions, which have {count} replica(s).",
            broker_ids.len()
        ));
    }
    Ok(())
}

/// Brokers that can take new replicas: live and not shutting down.
pub fn usable_brokers(view: &ClusterMetadata) -> usize {
    view.live_brokers()
        .filter(|broker| !broker.in_controlled_shutdown)
        .count()
}

/// The replication factor a creation asks for (-1: the default), checked
/// against the usable brokers as Kafka does.
pub fn check_replication_factor(
    requested: i16,
    usable_brokers: usize,
    default: i32,
) -> Result<i32, AdminError> {
    let factor = match requested {
        -1 => default,
        factor if factor > 0 => i32::from(factor),
        _ => {
            return Err((
                ResponseError::InvalidReplicationFactor,
                "Replication factor must be larger than 0, or -1 to use the default value."
                    .to_string(),
            ));
        }
    };
    if factor as usize > usable_brokers {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "Unable to replicate the partition {factor} time(s): The target replication \
                 factor of {factor} cannot be reached because only {usable_brokers} broker(s) \
                 are registered."
            ),
        ));
    }
    Ok(factor)
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
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    // CREATE on the cluster covers every topic; else per topic (Kafka).
    let cluster_create = access.allows_cluster(AclOperation::Create);
    let occurrences = count_names(request.topics.iter().map(|topic| topic.name.0.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    // One topic after the other: the controller places a topic against
    // the committed metadata only, so topics created at once would all be
    // placed on the same least-loaded brokers.
    for topic in request.topics {
        let name = topic.name.0.as_str().to_string();
        let outcome = if occurrences.get(&name).copied().unwrap_or(0) > 1 {
            Err((
                ResponseError::InvalidRequest,
                format!("Create topics request contains multiple entries for topic {name}"),
            ))
        } else if !cluster_create
            && !access.allows(AclOperation::Create, ResourceType::Topic, &name)
        {
            Err((
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.".to_string(),
            ))
        } else {
            create_one(shard, &topic, request.validate_only).await
        };
        let result = CreatableTopicResult::default().with_name(topic.name);
        let result = match outcome {
            Ok(Created {
                topic: created,
                replication_factor,
                partitions,
            }) => {
                let mut result = result.with_error_message(None).with_topic_id(created.id);
                // The created topic's configs (v5+) are what DescribeConfigs
                // shows: Kafka (ReplicationControlManager.createTopic) gives
                // them, with the partition count and replication factor,
                // only to a principal that may DESCRIBE_CONFIGS the topic,
                // and answers the others TOPIC_AUTHORIZATION_FAILED in
                // topic_config_error_code (the topic is created all the
                // same).
                let describable =
                    access.allows(AclOperation::DescribeConfigs, ResourceType::Topic, &name);
                if version >= 5 && !describable {
                    result = result.with_topic_config_error_code(
                        ResponseError::TopicAuthorizationFailed.code(),
                    );
                } else if version >= 5 {
                    let configs = topic_config_entries(
                        &created.configs,
                        &topic_defaults(&shard.config, &shard.metadata.snapshot()),
                    )
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
                        .with_num_partitions(partitions)
                        .with_replication_factor(replication_factor)
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
) -> Result<Created, AdminError> {
    let name = topic.name.0.as_str();
    validate_topic_name(name)
        .map_err(|error| (ResponseError::InvalidTopicException, error.to_string()))?;
    // A creation of this name in flight (another client's, or an automatic
    // one) decides whether the topic exists.
    let view = shard.metadata.snapshot();
    if view.topics.contains_key(name) {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("Topic '{name}' already exists."),
        ));
    }
    let (partitions, replication_factor, assignment) = if topic.assignments.is_empty() {
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
        let factor = check_replication_factor(
            topic.replication_factor,
            usable_brokers(&view),
            i32::from(shard.config.default_replication_factor),
        )?;
        (partitions, factor, None)
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
        let mut ordered: Vec<_> = topic.assignments.iter().collect();
        ordered.sort_by_key(|assignment| assignment.partition_index);
        let replica_count = ordered[0].broker_ids.len();
        for assignment in &ordered {
            check_assignment(&view, Some(replica_count), &assignment.broker_ids)?;
        }
        let partitions = i32::try_from(ordered.len()).map_err(|_| {
            (
                ResponseError::InvalidReplicaAssignment,
                "Too many partitions in the assignment".to_string(),
            )
        })?;
        let assignment: Vec<Vec<i32>> = ordered
            .iter()
            .map(|assignment| {
                assignment
                    .broker_ids
                    .iter()
                    .map(|broker| broker.0)
                    .collect()
            })
            .collect();
        (partitions, replica_count as i32, Some(assignment))
    };
    let configs = config_map(
        topic
            .configs
            .iter()
            .map(|config| (&config.name, config.value.as_ref())),
    )?;
    let created = create_topic_with(
        shard,
        name,
        partitions,
        replication_factor,
        assignment,
        configs,
        validate_only,
    )
    .await
    .map_err(|error| topic_error(&error))?;
    // The factor as committed (the requested one when only validating).
    let committed = created
        .partitions
        .first()
        .map_or(replication_factor, |partition| {
            partition.replicas.len() as i32
        });
    // The count as committed, or the one that would be (validate_only:
    // nothing was placed, and Kafka answers the count it would create).
    let count = if validate_only {
        partitions
    } else {
        created.partitions.len() as i32
    };
    Ok(Created {
        topic: created,
        replication_factor: i16::try_from(committed).unwrap_or(i16::MAX),
        partitions: count,
    })
}

/// A topic CreateTopics created (or, validating only, would create).
struct Created {
    topic: TopicMetadata,
    replication_factor: i16,
    partitions: i32,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;
    use crate::metadata::{BrokerInfo, DEFAULT_REPLICATION_FACTOR};

    /// Brokers 1 and 2 live, 3 fenced.
    fn view() -> ClusterMetadata {
        let broker = |id, fenced| BrokerInfo {
            id,
            host: "localhost".to_string(),
            port: 9092,
            rack: None,
            fenced,
            in_controlled_shutdown: false,
            replication_address: None,
        };
        ClusterMetadata {
            node_id: 1,
            brokers: [
                (1, broker(1, false)),
                (2, broker(2, false)),
                (3, broker(3, true)),
            ]
            .into(),
            ..ClusterMetadata::default()
        }
    }

    fn ids(ids: &[i32]) -> Vec<BrokerId> {
        ids.iter().copied().map(BrokerId).collect()
    }

    fn refusal(result: Result<(), AdminError>) -> String {
        let (code, message) = result.expect_err("refused");
        assert_eq!(code, ResponseError::InvalidReplicaAssignment);
        message
    }

    #[test]
    fn assignments_name_registered_brokers_once_and_agree_on_the_count() {
        let view = view();
        assert!(check_assignment(&view, None, &ids(&[1, 2, 3])).is_ok());
        assert!(check_assignment(&view, Some(2), &ids(&[2, 1])).is_ok());
        assert!(refusal(check_assignment(&view, None, &ids(&[]))).contains("empty replica list"));
        assert!(
            refusal(check_assignment(&view, None, &ids(&[1, 4])))
                .contains("includes broker 4, but no such broker is registered")
        );
        assert!(
            refusal(check_assignment(&view, None, &ids(&[2, 2])))
                .contains("the broker 2 more than once")
        );
        assert!(
            refusal(check_assignment(&view, Some(1), &ids(&[1, 2])))
                .contains("a partition with 2 replica(s)")
        );
    }

    #[test]
    fn the_replication_factor_is_at_most_the_usable_brokers() {
        let usable = usable_brokers(&view());
        assert_eq!(usable, 2);
        assert_eq!(
            check_replication_factor(-1, usable, DEFAULT_REPLICATION_FACTOR),
            Ok(DEFAULT_REPLICATION_FACTOR)
        );
        assert_eq!(
            check_replication_factor(2, usable, DEFAULT_REPLICATION_FACTOR),
            Ok(2)
        );
        let (code, message) =
            check_replication_factor(3, usable, DEFAULT_REPLICATION_FACTOR).expect_err("too many");
        assert_eq!(code, ResponseError::InvalidReplicationFactor);
        assert_eq!(
            message,
            "Unable to replicate the partition 3 time(s): The target replication factor of 3 \
             cannot be reached because only 2 broker(s) are registered."
        );
        assert_eq!(
            check_replication_factor(0, usable, DEFAULT_REPLICATION_FACTOR)
                .map_err(|error| error.0),
            Err(ResponseError::InvalidReplicationFactor)
        );
    }
}
