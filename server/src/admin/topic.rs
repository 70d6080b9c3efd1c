//! `sluice topic create|list|describe|alter-config|add-partitions|delete`
//! (reassign and reassignments: `reassign`):
//! what kafka-topics.sh and kafka-configs.sh do for topics, over the Kafka
//! protocol against any broker.
//!
//! Admin requests (CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, IncrementalAlterConfigs) go to any broker, which
//! forwards them to the controller; describe asks each partition's leader
//! for its log start and end (ListOffsets earliest and latest). A request
//! about several topics reports each topic's outcome; the command exits 1
//! if any failed.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::process::ExitCode;

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use serde_json::json;

use super::AdminError;
use super::args::{
    TopicAddPartitionsArgs, TopicAlterConfigArgs, TopicArgs, TopicCommand, TopicCreateArgs,
};
use super::client::{ClientError, check_code_message, describe_code};
use super::group::failures;
use super::output::{Format, Progress, emit, emit_json, join, optional, render_table};
use super::pool::{BrokerPool, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::profile;

/// Versions this client speaks, per API (the broker's ranges narrow them).
const CREATE_TOPICS_VERSIONS: RangeInclusive<i16> = 2..=7;
const DELETE_TOPICS_VERSIONS: RangeInclusive<i16> = 1..=6;
const CREATE_PARTITIONS_VERSIONS: RangeInclusive<i16> = 0..=3;
const DESCRIBE_CONFIGS_VERSIONS: RangeInclusive<i16> = 1..=4;
const INCREMENTAL_ALTER_CONFIGS_VERSIONS: RangeInclusive<i16> = 0..=1;
/// Resource type TOPIC of the config APIs.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operations.
const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
/// How long the broker may take to create or delete (its timeout_ms).
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// Topics per CreateTopics or DeleteTopics request: bulk operations send
/// several, and the progress line advances per request.
const TOPICS_PER_REQUEST: usize = 16;

/// Run `sluice topic ...`.
pub fn run(args: TopicArgs) -> ExitCode {
    let format = args.common.format;
    let result = profile::target(&args.common).and_then(|bootstrap| {
        let mut pool = BrokerPool::connect(&bootstrap)?;
        match args.command {
            TopicCommand::Create(create) => create_topics(&mut pool, &create, format),
            TopicCommand::List { internal } => list_topics(&mut pool, internal, format),
            TopicCommand::Describe { topics } => describe_topics(&mut pool, &topics, format),
            TopicCommand::AlterConfig(alter) => alter_config(&mut pool, &alter, format),
            TopicCommand::AddPartitions(add) => add_partitions(&mut pool, &add, format),
            TopicCommand::Delete { topics } => delete_topics(&mut pool, &topics, format),
            TopicCommand::Reassign(reassign) => {
                super::reassign::reassign(&mut pool, &reassign, format)
            }
            TopicCommand::Reassignments { topics } => {
                super::reassign::list(&mut pool, &topics, format)
            }
        }
    });
    super::exit("topic", result)
}

/// The outcome of one topic of a create, delete or add-partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicOutcome {
    pub topic: String,
    /// `None`: it worked.
    pub error: Option<String>,
}

/// `error_code` and `error_message` as the text shown for one topic.
fn outcome_error(code: i16, message: Option<&StrBytes>) -> Option<String> {
    if code.is_ok() {
        return None;
    }
    Some(match message {
        Some(message) if !message.is_empty() => format!("{}: {message}", describe_code(code)),
        _ => describe_code(code),
    })
}

/// The error of one topic's answer (`found`: its error code and message),
/// or that the broker did not answer for the topic at all.
fn answer_error(found: Option<(i16, Option<&StrBytes>)>) -> Option<String> {
    match found {
        Some((code, message)) => outcome_error(code, message),
        None => Some("the broker did not answer for this topic".to_string()),
    }
}

/// Print the outcomes (`done` names success) and fail if any failed.
fn report(
    outcomes: &[TopicOutcome],
    done: &str,
    what_failed: &str,
    format: Format,
) -> Result<(), AdminError> {
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = outcomes
                .iter()
                .map(|outcome| {
                    vec![
                        outcome.topic.clone(),
                        outcome.error.clone().unwrap_or_else(|| done.to_string()),
                    ]
                })
                .collect();
            emit(&render_table(&["TOPIC", "STATUS"], &rows))?;
        }
        Format::Json => emit_json(&outcomes)?,
    }
    failures(
        outcomes
            .iter()
            .filter(|outcome| outcome.error.is_some())
            .count(),
        outcomes.len(),
        what_failed,
    )
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topics(
    pool: &mut BrokerPool,
    args: &TopicCreateArgs,
    format: Format,
) -> Result<(), AdminError> {
    let connection = pool.any();
    let version = connection.negotiate(
        kafka_protocol::messages::ApiKey::CreateTopics,
        CREATE_TOPICS_VERSIONS,
    )?;
    // -1 (the broker's default) needs CreateTopics v4.
    let default = |value: Option<i32>| value.unwrap_or(if version >= 4 { -1 } else { 1 });
    let partitions = default(args.partitions);
    let replication_factor = args
        .replication_factor
        .unwrap_or(if version >= 4 { -1 } else { 1 });
    let configs: Vec<CreatableTopicConfig> = args
        .configs
        .iter()
        .map(|(key, value)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_value(Some(StrBytes::from_string(value.clone())))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(args.topics.len());
    let mut progress = Progress::new("creating topics", Some(args.topics.len() as u64));
    for chunk in args.topics.chunks(TOPICS_PER_REQUEST) {
        let request = CreateTopicsRequest::default()
            .with_topics(
                chunk
                    .iter()
                    .map(|name| {
                        CreatableTopic::default()
                            .with_name(topic_name(name))
                            .with_num_partitions(partitions)
                            .with_replication_factor(replication_factor)
                            .with_configs(configs.clone())
                    })
                    .collect(),
            )
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_validate_only(args.dry_run);
        let response = connection.send(&request, version)?;
        for name in chunk {
            let result = response
                .topics
                .iter()
                .find(|result| result.name.0.as_str() == name);
            outcomes.push(TopicOutcome {
                topic: name.clone(),
                error: answer_error(
                    result.map(|result| (result.error_code, result.error_message.as_ref())),
                ),
            });
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    let done = if args.dry_run {
        "valid (dry run)"
    } else {
        "created"
    };
    report(&outcomes, done, "topics were not created", format)
}

/// One row of `topic list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicListing {
    pub name: String,
    pub topic_id: Option<String>,
    pub internal: bool,
    pub partitions: usize,
    pub replication_factor: usize,
}

fn list_topics(pool: &mut BrokerPool, internal: bool, format: Format) -> Result<(), AdminError> {
    let layout = pool.metadata(None, false)?;
    let listings: Vec<TopicListing> = layout
        .topics
        .iter()
        .filter(|topic| internal || !topic.internal)
        .map(|topic| TopicListing {
            name: topic.name.clone(),
            topic_id: topic.topic_id.clone(),
            internal: topic.internal,
            partitions: topic.partitions.len(),
            replication_factor: topic
                .partitions
                .iter()
                .map(|partition| partition.replicas.len())
                .max()
                .unwrap_or(0),
        })
        .collect();
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = listings
                .iter()
                .map(|topic| {
                    let mut name = topic.name.clone();
                    if topic.internal {
                        name.push_str(" (internal)");
                    }
                    vec![
                        name,
                        topic.partitions.to_string(),
                        topic.replication_factor.to_string(),
                    ]
                })
                .collect();
            emit(&render_table(&["TOPIC", "PARTITIONS", "REPLICAS"], &rows))
        }
        Format::Json => emit_json(&listings),
    }
}

/// One partition of `topic describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionDescription {
    pub partition: i32,
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub log_start: Option<i64>,
    pub log_end: Option<i64>,
}

/// One config of `topic describe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigDescription {
    pub name: String,
    /// `None` for a sensitive or unset value.
    pub value: Option<String>,
    pub source: String,
    pub read_only: bool,
    pub sensitive: bool,
}

/// Everything `topic describe` shows about one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    pub name: String,
    pub topic_id: Option<String>,
    pub internal: bool,
    pub partitions: Vec<PartitionDescription>,
    pub configs: Vec<ConfigDescription>,
}

/// Kafka's ConfigSource names (DescribeConfigs v1+).
fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

fn describe_topics(
    pool: &mut BrokerPool,
    topics: &[String],
    format: Format,
) -> Result<(), AdminError> {
    let layout = pool.existing_topics(topics, false)?;
    let mut queries = Vec::new();
    for name in topics {
        if let Some(topic) = layout.topic(name) {
            for partition in topic
                .partitions
                .iter()
                .filter(|partition| partition.leader.is_some())
            {
                queries.push((name.clone(), partition.partition));
            }
        }
    }
    let with = |timestamp: i64| -> Vec<(String, i32, i64)> {
        queries
            .iter()
            .map(|(topic, partition)| (topic.clone(), *partition, timestamp))
            .collect()
    };
    let starts = pool.list_offsets(&with(EARLIEST_TIMESTAMP))?;
    let ends = pool.list_offsets(&with(LATEST_TIMESTAMP))?;
    let mut configs = describe_configs(pool, topics)?;

    let mut descriptions = Vec::with_capacity(topics.len());
    for name in topics {
        let Some(topic) = layout.topic(name) else {
            return Err(AdminError::TopicNotFound(name.clone()));
        };
        let key = |partition: i32| (name.clone(), partition);
        descriptions.push(TopicDescription {
            name: name.clone(),
            topic_id: topic.topic_id.clone(),
            internal: topic.internal,
            partitions: topic
                .partitions
                .iter()
                .map(|partition| PartitionDescription {
                    partition: partition.partition,
                    leader: partition.leader,
                    leader_epoch: partition.leader_epoch,
                    replicas: partition.replicas.clone(),
                    isr: partition.isr.clone(),
                    offline_replicas: partition.offline_replicas.clone(),
                    log_start: starts.get(&key(partition.partition)).copied(),
                    log_end: ends.get(&key(partition.partition)).copied(),
                })
                .collect(),
            configs: configs.remove(name).unwrap_or_default(),
        });
    }
    match format {
        Format::Table => emit(
            &descriptions
                .iter()
                .map(render_description)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Format::Json => emit_json(&descriptions),
    }
}

/// Every config of each topic, sorted by name.
fn describe_configs(
    pool: &mut BrokerPool,
    topics: &[String],
) -> Result<BTreeMap<String, Vec<ConfigDescription>>, AdminError> {
    let request = DescribeConfigsRequest::default().with_resources(
        topics
            .iter()
            .map(|topic| {
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_TYPE_TOPIC)
                    .with_resource_name(StrBytes::from_string(topic.clone()))
                    .with_configuration_keys(None)
            })
            .collect(),
    );
    let (response, _) = pool.any().call(&request, DESCRIBE_CONFIGS_VERSIONS)?;
    let mut configs = BTreeMap::new();
    for result in response.results {
        let topic = result.resource_name.to_string();
        if result.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Err(AdminError::TopicNotFound(topic));
        }
        check_code_message(result.error_code, result.error_message.as_ref(), || {
            format!("DescribeConfigs topic {topic:?}")
        })?;
        let mut entries: Vec<ConfigDescription> = result
            .configs
            .into_iter()
            .map(|config| ConfigDescription {
                name: config.name.to_string(),
                value: config.value.map(|value| value.to_string()),
                source: config_source_name(config.config_source).to_string(),
                read_only: config.read_only,
                sensitive: config.is_sensitive,
            })
            .collect();
        entries.sort_by(|left, right| left.name.cmp(&right.name));
        configs.insert(topic, entries);
    }
    Ok(configs)
}

/// The `describe` output of one topic: summary, partitions, configs.
pub fn render_description(topic: &TopicDescription) -> String {
    let replication_factor = topic
        .partitions
        .iter()
        .map(|partition| partition.replicas.len())
        .max()
        .unwrap_or(0);
    let mut text = format!(
        "Topic {}: id {}, {} partitions, replication factor {}{}\n\n",
        topic.name,
        optional(topic.topic_id.as_ref()),
        topic.partitions.len(),
        replication_factor,
        if topic.internal { ", internal" } else { "" },
    );
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|partition| {
            vec![
                partition.partition.to_string(),
                optional(partition.leader),
                partition.leader_epoch.to_string(),
                join(&partition.replicas),
                join(&partition.isr),
                optional(partition.log_start),
                optional(partition.log_end),
            ]
        })
        .collect();
    text.push_str(&render_table(
        &[
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "LOG-START-OFFSET",
            "LOG-END-OFFSET",
        ],
        &rows,
    ));
    if !topic.configs.is_empty() {
        text.push('\n');
        let rows: Vec<Vec<String>> = topic
            .configs
            .iter()
            .map(|config| {
                vec![
                    config.name.clone(),
                    if config.sensitive {
                        "(sensitive)".to_string()
                    } else {
                        optional(config.value.as_ref())
                    },
                    config.source.clone(),
                ]
            })
            .collect();
        text.push_str(&render_table(&["CONFIG", "VALUE", "SOURCE"], &rows));
    }
    text
}

fn alter_config(
    pool: &mut BrokerPool,
    args: &TopicAlterConfigArgs,
    format: Format,
) -> Result<(), AdminError> {
    if args.set.is_empty() && args.delete.is_empty() {
        return Err(AdminError::Invalid(
            "nothing to change: give --set key=value or --delete key".to_string(),
        ));
    }
    let mut changes: Vec<AlterableConfig> = args
        .set
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(key.clone()))
                .with_config_operation(OPERATION_SET)
                .with_value(Some(StrBytes::from_string(value.clone())))
        })
        .collect();
    changes.extend(args.delete.iter().map(|key| {
        AlterableConfig::default()
            .with_name(StrBytes::from_string(key.clone()))
            .with_config_operation(OPERATION_DELETE)
            .with_value(None)
    }));
    let request = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(StrBytes::from_string(args.topic.clone()))
                .with_configs(changes),
        ])
        .with_validate_only(args.dry_run);
    let (response, _) = pool
        .any()
        .call(&request, INCREMENTAL_ALTER_CONFIGS_VERSIONS)?;
    let result = response
        .responses
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Kafka {
            what: format!(
                "IncrementalAlterConfigs topic {:?} answered nothing",
                args.topic
            ),
            code: ResponseError::UnknownServerError.code(),
        })?;
    if result.error_code == ResponseError::UnknownTopicOrPartition.code() {
        return Err(AdminError::TopicNotFound(args.topic.clone()));
    }
    check_code_message(result.error_code, result.error_message.as_ref(), || {
        format!("altering configs of topic {:?}", args.topic)
    })?;
    let mut rows: Vec<Vec<String>> = args
        .set
        .iter()
        .map(|(key, value)| vec![key.clone(), "set".to_string(), value.clone()])
        .collect();
    rows.extend(
        args.delete
            .iter()
            .map(|key| vec![key.clone(), "deleted".to_string(), "-".to_string()]),
    );
    match format {
        Format::Table => {
            let mut text = format!(
                "Topic {}: configs {}\n\n",
                args.topic,
                if args.dry_run {
                    "valid (dry run, nothing changed)"
                } else {
                    "altered"
                }
            );
            text.push_str(&render_table(&["CONFIG", "CHANGE", "VALUE"], &rows));
            emit(&text)
        }
        Format::Json => emit_json(&json!({
            "topic": args.topic,
            "dry_run": args.dry_run,
            "set": args.set.iter().cloned().collect::<BTreeMap<String, String>>(),
            "deleted": args.delete,
        })),
    }
}

fn add_partitions(
    pool: &mut BrokerPool,
    args: &TopicAddPartitionsArgs,
    format: Format,
) -> Result<(), AdminError> {
    let layout = pool.existing_topics(&args.topics, false)?;
    let mut counts = Vec::with_capacity(args.topics.len());
    for name in &args.topics {
        let current = layout
            .topic(name)
            .ok_or_else(|| AdminError::TopicNotFound(name.clone()))?
            .partitions
            .len() as i32;
        let total = match (args.count.num, args.count.total) {
            (Some(num), _) => current.saturating_add(num),
            (None, Some(total)) => total,
            (None, None) => {
                return Err(AdminError::Invalid("give --num or --total".to_string()));
            }
        };
        counts.push((name.clone(), total));
    }
    let request = CreatePartitionsRequest::default()
        .with_topics(
            counts
                .iter()
                .map(|(name, count)| {
                    CreatePartitionsTopic::default()
                        .with_name(topic_name(name))
                        .with_count(*count)
                        .with_assignments(None)
                })
                .collect(),
        )
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let (response, _) = pool.any().call(&request, CREATE_PARTITIONS_VERSIONS)?;
    let outcomes: Vec<TopicOutcome> = counts
        .iter()
        .map(|(name, count)| {
            let result = response
                .results
                .iter()
                .find(|result| result.name.0.as_str() == name);
            TopicOutcome {
                topic: name.clone(),
                error: answer_error(
                    result.map(|result| (result.error_code, result.error_message.as_ref())),
                )
                .map(|error| format!("{error} (asked for {count} partitions)")),
            }
        })
        .collect();
    let done = match (args.count.num, args.count.total) {
        (Some(num), _) => format!("added {num} partitions"),
        (None, total) => format!("now {} partitions", optional(total)),
    };
    report(&outcomes, &done, "topics were not changed", format)
}

fn delete_topics(
    pool: &mut BrokerPool,
    topics: &[String],
    format: Format,
) -> Result<(), AdminError> {
    let connection = pool.any();
    let version = connection.negotiate(
        kafka_protocol::messages::ApiKey::DeleteTopics,
        DELETE_TOPICS_VERSIONS,
    )?;
    let mut outcomes = Vec::with_capacity(topics.len());
    let mut progress = Progress::new("deleting topics", Some(topics.len() as u64));
    for chunk in topics.chunks(TOPICS_PER_REQUEST) {
        let mut request = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
        if version >= 6 {
            request.topics = chunk
                .iter()
                .map(|name| DeleteTopicState::default().with_name(Some(topic_name(name))))
                .collect();
        } else {
            request.topic_names = chunk.iter().map(|name| topic_name(name)).collect();
        }
        let response = connection.send(&request, version)?;
        for name in chunk {
            let result = response.responses.iter().find(|result| {
                result
                    .name
                    .as_ref()
                    .is_some_and(|result_name| result_name.0.as_str() == name)
            });
            outcomes.push(TopicOutcome {
                topic: name.clone(),
                error: answer_error(
                    result.map(|result| (result.error_code, result.error_message.as_ref())),
                ),
            });
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    report(&outcomes, "deleted", "topics were not deleted", format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_shows_partitions_with_offsets_and_configs() {
        let text = render_description(&TopicDescription {
            name: "events".into(),
            topic_id: Some("id-1".into()),
            internal: false,
            partitions: vec![PartitionDescription {
                partition: 0,
                leader: Some(1),
                leader_epoch: 3,
                replicas: vec![1, 2],
                isr: vec![1],
                offline_replicas: vec![],
                log_start: Some(5),
                log_end: Some(9),
            }],
            configs: vec![ConfigDescription {
                name: "retention.ms".into(),
                value: Some("1000".into()),
                source: "DYNAMIC_TOPIC_CONFIG".into(),
                read_only: false,
                sensitive: false,
            }],
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Topic events: id id-1, 1 partitions, replication factor 2"
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            vec!["0", "1", "3", "1,2", "1", "5", "9"]
        );
        assert_eq!(
            lines[6].split_whitespace().collect::<Vec<_>>(),
            vec!["retention.ms", "1000", "DYNAMIC_TOPIC_CONFIG"]
        );
    }

    #[test]
    fn a_failed_topic_shows_the_kafka_error_name_and_message() {
        assert_eq!(outcome_error(0, None), None);
        assert_eq!(
            outcome_error(
                36,
                Some(&StrBytes::from_static_str("Topic 'a' already exists."))
            ),
            Some("TOPIC_ALREADY_EXISTS (36): Topic 'a' already exists.".to_string())
        );
    }
}
