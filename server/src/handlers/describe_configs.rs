//! DescribeConfigs: the effective configs of topics and of this broker.
//!
//! Topic resources list every topic config (metadata/topic_config.rs) with
//! its value and source: DYNAMIC_TOPIC_CONFIG when set on the topic,
//! STATIC_BROKER_CONFIG when a broker flag sets its default
//! (--min-insync-replicas), DEFAULT_CONFIG otherwise. Group resources (type
//! 32, Kafka 4.0) list Kafka's group configs with their defaults: they tune
//! KIP-848 and share groups, which Sluice does not serve. Broker resources list a few static broker
//! settings, all read-only (Sluice has no dynamic broker configs). Runs on
//! the connection's shard and reads only the metadata snapshot.
//!
//! Also home of the config entries shared by CreateTopics (v5+ answers with
//! the effective configs) and IncrementalAlterConfigs (which configs are
//! lists).

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
use crate::metadata::topic_config::{ConfigKind, TOPIC_CONFIGS, spec_of};
use crate::metadata::validate_topic_name;
use crate::shard::Shard;

/// Kafka's `ConfigResource.Type` codes.
pub mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
    pub const BROKER_LOGGER: i8 = 8;
    /// KIP-848 group configs (Kafka 4.0).
    pub const GROUP: i8 = 32;
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

/// A topic config's Kafka type code (LIST configs accept APPEND and
/// SUBTRACT).
pub fn topic_config_type(name: &str) -> i8 {
    spec_of(name).map_or(config_type::UNKNOWN, |spec| kind_code(spec.kind))
}

fn kind_code(kind: ConfigKind) -> i8 {
    match kind {
        ConfigKind::Boolean => config_type::BOOLEAN,
        ConfigKind::String => config_type::STRING,
        ConfigKind::Int => config_type::INT,
        ConfigKind::Long => config_type::LONG,
        ConfigKind::Double => config_type::DOUBLE,
        ConfigKind::List => config_type::LIST,
    }
}

/// The topic config defaults this broker's settings change (Kafka's
/// STATIC_BROKER_CONFIG): by topic config name, the broker config's value.
/// Only --min-insync-replicas sets a topic default in Sluice.
pub fn static_topic_defaults(config: &BrokerConfig) -> BTreeMap<&'static str, String> {
    let mut defaults = BTreeMap::new();
    if config.min_insync_replicas != 1 {
        defaults.insert(
            "min.insync.replicas",
            config.min_insync_replicas.to_string(),
        );
    }
    defaults
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

/// Kafka 4.0's group configs (GroupConfig, resource type 32): name, type,
/// default, broker synonym. They tune KIP-848 consumer groups and KIP-932
/// share groups, neither of which Sluice serves (classic groups only), so
/// every group reports the defaults.
const GROUP_CONFIGS: &[(&str, i8, &str, &str)] = &[
    (
        "consumer.heartbeat.interval.ms",
        config_type::INT,
        "5000",
        "group.consumer.heartbeat.interval.ms",
    ),
    (
        "consumer.session.timeout.ms",
        config_type::INT,
        "45000",
        "group.consumer.session.timeout.ms",
    ),
    (
        "share.heartbeat.interval.ms",
        config_type::INT,
        "5000",
        "group.share.heartbeat.interval.ms",
    ),
    (
        "share.record.lock.duration.ms",
        config_type::INT,
        "30000",
        "group.share.record.lock.duration.ms",
    ),
    (
        "share.session.timeout.ms",
        config_type::INT,
        "45000",
        "group.share.session.timeout.ms",
    ),
];

/// The configs of any group (Kafka answers for any group id, existing or
/// not): Kafka's defaults, from the broker's group.* settings.
pub fn group_config_entries() -> Vec<ConfigEntry> {
    GROUP_CONFIGS
        .iter()
        .map(|&(name, kind, default, broker_name)| ConfigEntry {
            name: name.to_string(),
            value: Some(default.to_string()),
            source: config_source::DEFAULT_CONFIG,
            read_only: false,
            config_type: kind,
            documentation: Some(
                "A setting of KIP-848 consumer and KIP-932 share groups; Sluice serves \
                 classic groups only, so it is the default and has no effect.",
            ),
            synonyms: vec![(
                broker_name.to_string(),
                Some(default.to_string()),
                config_source::DEFAULT_CONFIG,
            )],
        })
        .collect()
}

/// Every topic config of a topic whose explicit configs are `explicit`, in
/// name order: its value and source (the topic's, the broker's static
/// setting, or Kafka's default), with synonyms most specific first.
pub fn topic_config_entries(
    explicit: &BTreeMap<String, String>,
    static_defaults: &BTreeMap<&'static str, String>,
) -> Vec<ConfigEntry> {
    TOPIC_CONFIGS
        .iter()
        .map(|spec| {
            let broker_name = spec.broker_name.unwrap_or(spec.name);
            let mut synonyms = Vec::new();
            if let Some(value) = explicit.get(spec.name) {
                synonyms.push((
                    spec.name.to_string(),
                    Some(value.clone()),
                    config_source::DYNAMIC_TOPIC_CONFIG,
                ));
            }
            let static_value = static_defaults.get(spec.name);
            if let Some(value) = static_value {
                synonyms.push((
                    broker_name.to_string(),
                    Some(value.clone()),
                    config_source::STATIC_BROKER_CONFIG,
                ));
            }
            synonyms.push((
                broker_name.to_string(),
                Some(spec.default.to_string()),
                config_source::DEFAULT_CONFIG,
            ));
            let (value, source) = match (explicit.get(spec.name), static_value) {
                (Some(value), _) => (value.clone(), config_source::DYNAMIC_TOPIC_CONFIG),
                (None, Some(value)) => (value.clone(), config_source::STATIC_BROKER_CONFIG),
                (None, None) => (spec.default.to_string(), config_source::DEFAULT_CONFIG),
            };
            ConfigEntry {
                name: spec.name.to_string(),
                value: Some(value),
                source,
                read_only: false,
                config_type: kind_code(spec.kind),
                documentation: Some(spec.documentation),
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
    // The broker-level defaults of the topic configs (those with a broker
    // synonym; min.insync.replicas is listed above).
    let static_defaults = static_topic_defaults(config);
    for spec in TOPIC_CONFIGS {
        let Some(name) = spec.broker_name else {
            continue;
        };
        if entries.iter().any(|entry| entry.name == name) {
            continue;
        }
        let (value, source) = match static_defaults.get(spec.name) {
            Some(value) => (value.clone(), config_source::STATIC_BROKER_CONFIG),
            None => (spec.default.to_string(), config_source::DEFAULT_CONFIG),
        };
        entries.push(ConfigEntry {
            name: name.to_string(),
            value: Some(value.clone()),
            source,
            read_only: true,
            config_type: kind_code(spec.kind),
            documentation: Some(spec.documentation),
            synonyms: vec![(name.to_string(), Some(value), source)],
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
                Some(topic) => Ok(topic_config_entries(
                    &topic.configs,
                    &static_topic_defaults(&shard.config),
                )),
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
            resource_type::GROUP => {
                if name.is_empty() {
                    Err((
                        ResponseError::InvalidRequest,
                        "Group name must not be empty".to_string(),
                    ))
                } else {
                    Ok(group_config_entries())
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
    fn explicit_values_are_dynamic_topic_configs_and_others_defaults() {
        let explicit = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
        let entries = topic_config_entries(&explicit, &BTreeMap::new());
        assert_eq!(entries.len(), TOPIC_CONFIGS.len());
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

    #[test]
    fn group_configs_are_kafkas_defaults() {
        let entries = group_config_entries();
        let session = entries
            .iter()
            .find(|entry| entry.name == "consumer.session.timeout.ms")
            .unwrap();
        assert_eq!(session.value.as_deref(), Some("45000"));
        assert_eq!(session.source, config_source::DEFAULT_CONFIG);
        assert_eq!(
            session.synonyms[0].0,
            "group.consumer.session.timeout.ms".to_string()
        );
        assert_eq!(entries.len(), GROUP_CONFIGS.len());
    }

    #[test]
    fn a_broker_flag_default_is_a_static_broker_config() {
        let statics = BTreeMap::from([("min.insync.replicas", "2".to_string())]);
        let entries = topic_config_entries(&BTreeMap::new(), &statics);
        let min_insync = entries
            .iter()
            .find(|entry| entry.name == "min.insync.replicas")
            .unwrap();
        assert_eq!(min_insync.value.as_deref(), Some("2"));
        assert_eq!(min_insync.source, config_source::STATIC_BROKER_CONFIG);
        assert_eq!(min_insync.synonyms.len(), 2);
        let throttled = entries
            .iter()
            .find(|entry| entry.name == "leader.replication.throttled.replicas")
            .unwrap();
        assert_eq!(throttled.value.as_deref(), Some(""));
        assert_eq!(throttled.config_type, config_type::LIST);
        assert_eq!(
            throttled.synonyms,
            vec![(
                "leader.replication.throttled.replicas".to_string(),
                Some(String::new()),
                config_source::DEFAULT_CONFIG
            )]
        );
    }
}
