//! DescribeConfigs: the effective configs of topics and of this broker.
//!
//! Topic resources list every supported topic config (metadata/topic_config.rs)
//! with its value and source: DYNAMIC_TOPIC_CONFIG when set on the topic,
//! DEFAULT_CONFIG otherwise. Broker resources list a few static broker
//! settings, all read-only (Sluice has no dynamic broker configs). Runs on
//! the connection's shard and reads only the metadata snapshot.
//!
//! Also home of the config description tables shared by CreateTopics (v5+
//! answers with the effective configs) and IncrementalAlterConfigs (which
//! configs are lists).

use crate::auth::acl::AclOperation;
use crate::auth::authorizer::Access;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::cli::BrokerConfig;
use crate::handlers::Reply;
use crate::metadata::topic_config::TOPIC_CONFIG_DEFAULTS;
use crate::metadata::validate_topic_name;
use crate::shard::Shard;

/// Kafka's `ConfigResource.Type` codes.
pub mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
    pub const BROKER_LOGGER: i8 = 8;
}

/// Kafka's `DescribeConfigsResponse.ConfigSource` codes.
pub mod config_source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's `DescribeConfigsResponse.ConfigType` codes.
pub mod config_type {
    pub const UNKNOWN: i8 = 0;
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const SHORT: i8 = 4;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
}

/// How a topic config is described: (name, type, the broker config that
/// supplies its default in Kafka, documentation).
const TOPIC_CONFIG_DESCRIPTIONS: &[(&str, i8, &str, &str)] = &[
    (
        "cleanup.policy",
        config_type::LIST,
        "log.cleanup.policy",
        "What happens to old segments: delete (by retention), compact (keep the latest record \
         per key; keys required) or both (compact,delete).",
    ),
    (
        "compression.type",
        config_type::STRING,
        "compression.type",
        "The codec of stored batches. Only producer is accepted: batches are stored as the \
         producer compressed them (Kafka would recompress to another codec).",
    ),
    (
        "delete.retention.ms",
        config_type::LONG,
        "log.cleaner.delete.retention.ms",
        "How long a tombstone (null value) of a compacted topic stays readable, from its \
         batch's timestamp, before the cleaner removes it.",
    ),
    (
        "flush.ms",
        config_type::LONG,
        "log.flush.interval.ms",
        "Longest time written records may wait before they are forced to disk. The default \
         (Long.MAX_VALUE) makes Sluice fsync before acknowledging a produce.",
    ),
    (
        "index.interval.bytes",
        config_type::INT,
        "log.index.interval.bytes",
        "Bytes of records between two entries of the offset index.",
    ),
    (
        "max.message.bytes",
        config_type::INT,
        "message.max.bytes",
        "Largest record batch the topic accepts.",
    ),
    (
        "message.timestamp.type",
        config_type::STRING,
        "log.message.timestamp.type",
        "CreateTime (the producer's timestamp) or LogAppendTime (the broker's clock).",
    ),
    (
        "min.cleanable.dirty.ratio",
        config_type::DOUBLE,
        "log.cleaner.min.cleanable.ratio",
        "Share of a compacted log's cleanable bytes that must be uncleaned before the cleaner \
         compacts it.",
    ),
    (
        "min.compaction.lag.ms",
        config_type::LONG,
        "log.cleaner.min.compaction.lag.ms",
        "Segments holding records newer than this are not compacted yet.",
    ),
    (
        "min.insync.replicas",
        config_type::INT,
        "min.insync.replicas",
        "Fewest ISR members with which an acks=all produce is accepted.",
    ),
    (
        "retention.bytes",
        config_type::LONG,
        "log.retention.bytes",
        "Size a partition's log may reach before its oldest segments are deleted; -1 for no \
         limit.",
    ),
    (
        "retention.ms",
        config_type::LONG,
        "log.retention.ms",
        "How long a segment is kept after its newest record; -1 for no limit.",
    ),
    (
        "segment.bytes",
        config_type::INT,
        "log.segment.bytes",
        "Size at which a segment is closed and a new one started.",
    ),
    (
        "segment.ms",
        config_type::LONG,
        "log.roll.ms",
        "Age at which a segment is closed and a new one started, even if not full.",
    ),
    (
        "unclean.leader.election.enable",
        config_type::BOOLEAN,
        "unclean.leader.election.enable",
        "With no live in-sync replica, elect an out-of-sync one (which may lose records).",
    ),
];

/// A topic config's Kafka type (LIST configs accept APPEND and SUBTRACT).
pub fn topic_config_type(name: &str) -> i8 {
    describe_topic_config(name).map_or(config_type::UNKNOWN, |(_, kind, _, _)| kind)
}

fn describe_topic_config(name: &str) -> Option<(&'static str, i8, &'static str, &'static str)> {
    TOPIC_CONFIG_DESCRIPTIONS
        .iter()
        .find(|(known, ..)| *known == name)
        .copied()
}

/// One config as DescribeConfigs and CreateTopics report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub config_type: i8,
    pub documentation: Option<&'static str>,
    /// Most specific first, as Kafka orders them: (name, value, source).
    pub synonyms: Vec<(String, Option<String>, i8)>,
}

/// Every supported topic config of a topic whose explicit configs are
/// `explicit`, in name order.
pub fn topic_config_entries(explicit: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    TOPIC_CONFIG_DEFAULTS
        .iter()
        .map(|&(name, default)| {
            let description = describe_topic_config(name);
            let broker_name = description.map_or(name, |(_, _, broker, _)| broker);
            let mut synonyms = Vec::new();
            if let Some(value) = explicit.get(name) {
                synonyms.push((
                    name.to_string(),
                    Some(value.clone()),
                    config_source::DYNAMIC_TOPIC_CONFIG,
                ));
            }
            synonyms.push((
                broker_name.to_string(),
                Some(default.to_string()),
                config_source::DEFAULT_CONFIG,
            ));
            let (value, source) = match explicit.get(name) {
                Some(value) => (value.clone(), config_source::DYNAMIC_TOPIC_CONFIG),
                None => (default.to_string(), config_source::DEFAULT_CONFIG),
            };
            ConfigEntry {
                name: name.to_string(),
                value: Some(value),
                source,
                read_only: false,
                config_type: description.map_or(config_type::UNKNOWN, |(_, kind, _, _)| kind),
                documentation: description.map(|(_, _, _, documentation)| documentation),
                synonyms,
            }
        })
        .collect()
}

/// The broker settings reported for a BROKER resource, all read-only.
fn broker_config_entries(config: &BrokerConfig) -> Vec<ConfigEntry> {
    let static_entry =
        |name: &str, value: String, kind: i8, documentation: &'static str| ConfigEntry {
            name: name.to_string(),
            value: Some(value.clone()),
            source: config_source::STATIC_BROKER_CONFIG,
            read_only: true,
            config_type: kind,
            documentation: Some(documentation),
            synonyms: vec![(
                name.to_string(),
                Some(value),
                config_source::STATIC_BROKER_CONFIG,
            )],
        };
    let mut entries = vec![
        static_entry(
            "broker.id",
            config.node_id.to_string(),
            config_type::INT,
            "This broker's id (--node-id).",
        ),
        static_entry(
            "node.id",
            config.node_id.to_string(),
            config_type::INT,
            "This broker's id (--node-id).",
        ),
        static_entry(
            "log.dirs",
            config.data_dir.display().to_string(),
            config_type::STRING,
            "Data directory (--data-dir).",
        ),
        static_entry(
            "num.partitions",
            config.default_partitions.to_string(),
            config_type::INT,
            "Partitions of a topic created without a count (--default-partitions).",
        ),
        static_entry(
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            config_type::BOOLEAN,
            "Create topics on first use by Metadata or Produce (--auto-create-topics).",
        ),
        static_entry(
            "default.replication.factor",
            config.default_replication_factor.to_string(),
            config_type::INT,
            "Replicas of a topic created without a replication factor (--default-replication-factor).",
        ),
        static_entry(
            "min.insync.replicas",
            config.min_insync_replicas.to_string(),
            config_type::INT,
            "In-sync replicas an acks=all write needs, unless the topic sets it (--min-insync-replicas).",
        ),
        static_entry(
            "offsets.topic.replication.factor",
            config.offsets_topic_replication_factor.to_string(),
            config_type::SHORT,
            "Replicas of __consumer_offsets, capped at the live brokers (--offsets-topic-replication-factor).",
        ),
        static_entry(
            "replica.lag.time.max.ms",
            config.replica_lag_time_max_ms.to_string(),
            config_type::LONG,
            "A follower not caught up for this long leaves the ISR (--replica-lag-time-max-ms).",
        ),
        static_entry(
            "listeners",
            config
                .listeners
                .iter()
                .map(|listener| format!("{}://{}", listener.name, listener.address))
                .collect::<Vec<_>>()
                .join(","),
            config_type::LIST,
            "Addresses clients connect to (--listen, --listeners).",
        ),
        static_entry(
            "advertised.listeners",
            config
                .listeners
                .iter()
                .map(|listener| {
                    format!(
                        "{}://{}:{}",
                        listener.name, listener.advertised_host, listener.advertised_port
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            config_type::LIST,
            "Addresses given to clients in metadata (--advertised, --advertised-listeners).",
        ),
        static_entry(
            "listener.security.protocol.map",
            config
                .listeners
                .iter()
                .map(|listener| format!("{}:{}", listener.name, listener.protocol.name()))
                .collect::<Vec<_>>()
                .join(","),
            config_type::LIST,
            "Each listener's security protocol (--listener-security-protocol-map).",
        ),
        static_entry(
            "socket.request.max.bytes",
            config.request_bytes_max.to_string(),
            config_type::INT,
            "Largest request frame accepted.",
        ),
    ];
    // The broker-level defaults of the topic configs.
    for entry in topic_config_entries(&BTreeMap::new()) {
        let Some((_, value, _)) = entry.synonyms.last().cloned() else {
            continue;
        };
        let name = describe_topic_config(&entry.name)
            .map_or(entry.name.clone(), |found| found.2.to_string());
        entries.push(ConfigEntry {
            synonyms: vec![(name.clone(), value.clone(), config_source::DEFAULT_CONFIG)],
            name,
            value,
            source: config_source::DEFAULT_CONFIG,
            read_only: true,
            ..entry
        });
    }
    entries.sort_by(|left, right| left.name.cmp(&right.name));
    entries
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: DescribeConfigsRequest,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let snapshot = shard.metadata.snapshot();
    let include_synonyms = version >= 1 && request.include_synonyms;
    let include_documentation = version >= 3 && request.include_documentation;
    let mut results = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_string();
        let denied = crate::handlers::alter_configs::config_access_error(
            access,
            AclOperation::DescribeConfigs,
            resource.resource_type,
            &name,
        );
        let found: Result<Vec<ConfigEntry>, (ResponseError, String)> = match resource.resource_type
        {
            _ if let Some(denied) = denied => Err(denied),
            resource_type::TOPIC => match snapshot.topics.get(&name) {
                Some(topic) => Ok(topic_config_entries(&topic.configs)),
                None => match validate_topic_name(&name) {
                    Err(error) => Err((ResponseError::InvalidTopicException, error.to_string())),
                    Ok(()) => Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("Topic '{name}' does not exist."),
                    )),
                },
            },
            resource_type::BROKER | resource_type::BROKER_LOGGER => {
                if name == shard.config.node_id.to_string() {
                    if resource.resource_type == resource_type::BROKER {
                        Ok(broker_config_entries(&shard.config))
                    } else {
                        // No loggers are configurable through Kafka's API.
                        Ok(Vec::new())
                    }
                } else if name.is_empty() {
                    // The cluster-wide dynamic defaults: Sluice has none.
                    Ok(Vec::new())
                } else {
                    Err((
                        ResponseError::InvalidRequest,
                        format!(
                            "Unexpected broker id, expected {} or empty string, but \
                                 received {name}",
                            shard.config.node_id
                        ),
                    ))
                }
            }
            other => Err((
                ResponseError::InvalidRequest,
                format!("Resource type {other} is not supported by DescribeConfigs"),
            )),
        };
        let result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        let result = match found {
            Ok(entries) => {
                // Null and empty both mean every key, as in Kafka's
                // ConfigHelper (kafka-protocol's default is an empty list).
                let wanted: Option<HashSet<&str>> = resource
                    .configuration_keys
                    .as_ref()
                    .filter(|keys| !keys.is_empty())
                    .map(|keys| keys.iter().map(StrBytes::as_str).collect());
                let configs = entries
                    .into_iter()
                    .filter(|entry| {
                        wanted
                            .as_ref()
                            .is_none_or(|wanted| wanted.contains(entry.name.as_str()))
                    })
                    .map(|entry| encode_entry(entry, include_synonyms, include_documentation))
                    .collect();
                result.with_error_message(None).with_configs(configs)
            }
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_string(message))),
        };
        results.push(result);
    }
    let response = DescribeConfigsResponse::default().with_results(results);
    Ok(Reply::Body(Box::new(ResponseKind::DescribeConfigs(
        response,
    ))))
}

fn encode_entry(
    entry: ConfigEntry,
    include_synonyms: bool,
    include_documentation: bool,
) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms {
        entry
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name))
                    .with_value(value.map(StrBytes::from_string))
                    .with_source(source)
            })
            .collect()
    } else {
        Vec::new()
    };
    let documentation = entry
        .documentation
        .filter(|_| include_documentation)
        .map(StrBytes::from_static_str);
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(entry.name))
        .with_value(entry.value.map(StrBytes::from_string))
        .with_read_only(entry.read_only)
        .with_config_source(entry.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(entry.config_type)
        .with_documentation(documentation)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_topic_config_is_described() {
        for (name, _) in TOPIC_CONFIG_DEFAULTS {
            assert!(
                describe_topic_config(name).is_some(),
                "{name} has no entry in TOPIC_CONFIG_DESCRIPTIONS"
            );
        }
    }

    #[test]
    fn explicit_values_are_dynamic_topic_configs_and_others_defaults() {
        let explicit = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let entries = topic_config_entries(&explicit);
        assert_eq!(entries.len(), TOPIC_CONFIG_DEFAULTS.len());
        let retention = entries
            .iter()
            .find(|entry| entry.name == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(retention.source, config_source::DYNAMIC_TOPIC_CONFIG);
        assert_eq!(
            retention.synonyms,
            vec![
                (
                    "retention.ms".to_string(),
                    Some("1000".to_string()),
                    config_source::DYNAMIC_TOPIC_CONFIG
                ),
                (
                    "log.retention.ms".to_string(),
                    Some("604800000".to_string()),
                    config_source::DEFAULT_CONFIG
                ),
            ]
        );
        let segment = entries
            .iter()
            .find(|entry| entry.name == "segment.bytes")
            .unwrap();
        assert_eq!(segment.value.as_deref(), Some("1073741824"));
        assert_eq!(segment.source, config_source::DEFAULT_CONFIG);
        assert_eq!(segment.synonyms.len(), 1);
    }
}
