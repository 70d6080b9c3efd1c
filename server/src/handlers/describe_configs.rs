//! DescribeConfigs: the effective configs of topics and of this broker.
//!
//! Topic resources list every topic config (metadata/topic_config.rs) with
//! its value and source: DYNAMIC_TOPIC_CONFIG when set on the topic,
//! DYNAMIC_BROKER_CONFIG / DYNAMIC_DEFAULT_BROKER_CONFIG when this broker's
//! or the cluster's dynamic broker config sets its default
//! (metadata/broker_config.rs), STATIC_BROKER_CONFIG when a broker flag
//! does (--min-insync-replicas), DEFAULT_CONFIG otherwise; the synonyms
//! list every layer, most specific first. Group resources (type 32, Kafka
//! 4.0) list Kafka's group configs with their defaults: they tune KIP-848
//! and share groups, which Sluice does not serve. The BROKER resource of
//! this broker lists its static settings (read-only) and the dynamic
//! broker configs (the topic-config defaults, alterable) with their source;
//! the BROKER resource `""` lists the cluster-wide dynamic defaults that
//! are set. Runs on the connection's shard and reads only the metadata
//! snapshot.
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
use crate::metadata::broker_config::{
    DefaultSource, DynamicBrokerConfigs, NO_EFFECT, TopicDefaults, dynamic_spec,
};
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
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
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

/// The protocol's source code of a default's layer.
fn source_code(source: DefaultSource) -> i8 {
    match source {
        DefaultSource::DynamicBroker => config_source::DYNAMIC_BROKER_CONFIG,
        DefaultSource::DynamicDefaultBroker => config_source::DYNAMIC_DEFAULT_BROKER_CONFIG,
        DefaultSource::StaticBroker => config_source::STATIC_BROKER_CONFIG,
    }
}

/// The topic-config defaults a topic of this broker runs with: the
/// dynamic broker configs of `view` over the broker's flags.
pub fn topic_defaults(
    config: &BrokerConfig,
    view: &crate::metadata::ClusterMetadata,
) -> TopicDefaults {
    view.topic_defaults(&static_topic_defaults(config))
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
/// name order: its value and source (the topic's, the broker's dynamic or
/// static default, or Kafka's default), with synonyms most specific first.
pub fn topic_config_entries(
    explicit: &BTreeMap<String, String>,
    defaults: &TopicDefaults,
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
            let layers = defaults.layers(spec.name);
            for (source, value) in layers {
                synonyms.push((
                    broker_name.to_string(),
                    Some(value.clone()),
                    source_code(*source),
                ));
            }
            synonyms.push((
                broker_name.to_string(),
                Some(spec.default.to_string()),
                config_source::DEFAULT_CONFIG,
            ));
            let (value, source) = match (explicit.get(spec.name), layers.first()) {
                (Some(value), _) => (value.clone(), config_source::DYNAMIC_TOPIC_CONFIG),
                (None, Some((source, value))) => (value.clone(), source_code(*source)),
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

/// Whether `name` is one of the broker's static settings (reported
/// read-only for its BROKER resource).
pub fn is_static_broker_config(config: &BrokerConfig, name: &str) -> bool {
    broker_config_entries(config, &DynamicBrokerConfigs::default())
        .iter()
        .any(|entry| entry.name == name && entry.read_only)
}

/// The cluster-wide dynamic defaults that are set (BROKER resource `""`),
/// as Kafka lists them: each with source DYNAMIC_DEFAULT_BROKER_CONFIG.
pub fn cluster_default_entries(dynamic: &DynamicBrokerConfigs) -> Vec<ConfigEntry> {
    dynamic
        .cluster_default
        .iter()
        .map(|(name, value)| {
            let spec = dynamic_spec(name);
            ConfigEntry {
                name: name.clone(),
                value: Some(value.clone()),
                source: config_source::DYNAMIC_DEFAULT_BROKER_CONFIG,
                read_only: false,
                config_type: spec.map_or(config_type::UNKNOWN, |spec| kind_code(spec.kind)),
                documentation: spec.map(|spec| spec.documentation),
                synonyms: vec![(
                    name.clone(),
                    Some(value.clone()),
                    config_source::DYNAMIC_DEFAULT_BROKER_CONFIG,
                )],
            }
        })
        .collect()
}

/// The settings reported for this broker's BROKER resource: its static
/// settings (read-only) and the topic-config defaults, which are dynamic
/// broker configs (read_only false) with the layer that sets them.
fn broker_config_entries(
    config: &BrokerConfig,
    dynamic: &DynamicBrokerConfigs,
) -> Vec<ConfigEntry> {
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
            "Create topics on first use by Metadata (--auto-create-topics).",
        ),
        static_entry(
            "default.replication.factor",
            config.default_replication_factor.to_string(),
            config_type::INT,
            "Replicas of a topic created without a replication factor (--default-replication-factor).",
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
    // Settings whose Kafka default is known: DEFAULT_CONFIG while the
    // broker runs with that value, STATIC_BROKER_CONFIG once a flag, the
    // environment or the file changed it (a flag set to the default value
    // reads as the default, which Kafka would call STATIC_BROKER_CONFIG).
    let defaulted =
        |name: &str, value: String, kafka_default: &str, kind: i8, documentation: &'static str| {
            let source = if value == kafka_default {
                config_source::DEFAULT_CONFIG
            } else {
                config_source::STATIC_BROKER_CONFIG
            };
            ConfigEntry {
                name: name.to_string(),
                value: Some(value.clone()),
                source,
                read_only: true,
                config_type: kind,
                documentation: Some(documentation),
                synonyms: vec![(name.to_string(), Some(value), source)],
            }
        };
    let voters = config
        .controller_voters
        .iter()
        .map(|(id, endpoint)| format!("{id}@{endpoint}"))
        .collect::<Vec<_>>()
        .join(",");
    let is_voter = config
        .controller_voters
        .iter()
        .any(|(id, _)| *id == config.node_id);
    entries.extend([
        defaulted(
            "offsets.topic.num.partitions",
            config.offsets_topic_partitions.to_string(),
            "50",
            config_type::INT,
            "Partitions of __consumer_offsets when it is created (--offsets-topic-partitions).",
        ),
        defaulted(
            "offsets.retention.minutes",
            (config.offsets_retention_ms / 60_000).to_string(),
            "10080",
            config_type::INT,
            "How long the committed offsets of an empty group are kept (--offsets-retention-ms).",
        ),
        defaulted(
            "group.initial.rebalance.delay.ms",
            config.group_initial_rebalance_delay_ms.to_string(),
            "3000",
            config_type::INT,
            "How long a new classic group waits for more members before its first rebalance.",
        ),
        defaulted(
            "group.min.session.timeout.ms",
            "6000".to_string(),
            "6000",
            config_type::INT,
            "Smallest session timeout a classic group member may ask for.",
        ),
        defaulted(
            "group.max.session.timeout.ms",
            "1800000".to_string(),
            "1800000",
            config_type::INT,
            "Largest session timeout a classic group member may ask for.",
        ),
        defaulted(
            "log.cleaner.backoff.ms",
            config.log_cleaner_interval_ms.to_string(),
            "15000",
            config_type::LONG,
            "Pause between two visits of the log cleaner (--log-cleaner-interval-ms).",
        ),
        defaulted(
            "log.retention.check.interval.ms",
            config.log_cleaner_interval_ms.to_string(),
            "300000",
            config_type::LONG,
            "How often retention is applied: at every visit of the log cleaner \
             (--log-cleaner-interval-ms).",
        ),
        defaulted(
            "broker.session.timeout.ms",
            config.broker_session_timeout_ms.to_string(),
            "9000",
            config_type::INT,
            "A broker whose heartbeats stop for this long is fenced by the controller.",
        ),
        defaulted(
            "broker.heartbeat.interval.ms",
            config.broker_heartbeat_interval_ms.to_string(),
            "2000",
            config_type::INT,
            "Time between a broker's heartbeats to the controller.",
        ),
        defaulted(
            "auto.leader.rebalance.enable",
            (config.leader_imbalance_check_interval_ms > 0).to_string(),
            "true",
            config_type::BOOLEAN,
            "Whether leadership moves back to preferred replicas periodically.",
        ),
        defaulted(
            "leader.imbalance.check.interval.seconds",
            (config.leader_imbalance_check_interval_ms / 1000).to_string(),
            "300",
            config_type::LONG,
            "Time between two preferred-leader checks (--leader-imbalance-check-interval-ms).",
        ),
        defaulted(
            "transactional.id.expiration.ms",
            config.transactional_id_expiration_ms.to_string(),
            "604800000",
            config_type::INT,
            "How long an idle transactional id is kept.",
        ),
        defaulted(
            "transaction.partition.verification.enable",
            config.transaction_partition_verification.to_string(),
            "true",
            config_type::BOOLEAN,
            "Whether leaders verify a partition is in the transaction before a transactional \
             write (KIP-890).",
        ),
        defaulted(
            "authorizer.class.name",
            if config.authorizer.is_some() {
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer".to_string()
            } else {
                String::new()
            },
            "",
            config_type::STRING,
            "The authorizer: Kafka's StandardAuthorizer rules with --authorizer standard, \
             none by default.",
        ),
        defaulted(
            "sasl.enabled.mechanisms",
            config
                .sasl_mechanisms
                .iter()
                .map(|mechanism| mechanism.name())
                .collect::<Vec<_>>()
                .join(","),
            "GSSAPI",
            config_type::LIST,
            "SASL mechanisms the SASL listeners offer (GSSAPI is not supported).",
        ),
        static_entry(
            "controller.quorum.voters",
            voters,
            config_type::LIST,
            "The controller's voters, id@host:port (--controller-voters).",
        ),
        static_entry(
            "process.roles",
            if is_voter {
                "broker,controller"
            } else {
                "broker"
            }
            .to_string(),
            config_type::LIST,
            "Whether this node is a controller voter as well as a broker.",
        ),
    ]);
    // The broker-level defaults of the topic configs (those with a broker
    // synonym): dynamic broker configs, but for the few that are not.
    let defaults = dynamic.topic_defaults(config.node_id, &static_topic_defaults(config));
    for spec in TOPIC_CONFIGS {
        let Some(name) = spec.broker_name else {
            continue;
        };
        if entries.iter().any(|entry| entry.name == name) {
            continue;
        }
        let mut synonyms: Vec<(String, Option<String>, i8)> = defaults
            .layers(spec.name)
            .iter()
            .map(|(source, value)| (name.to_string(), Some(value.clone()), source_code(*source)))
            .collect();
        synonyms.push((
            name.to_string(),
            Some(spec.default.to_string()),
            config_source::DEFAULT_CONFIG,
        ));
        let (_, value, source) = synonyms[0].clone();
        entries.push(ConfigEntry {
            name: name.to_string(),
            value,
            source,
            read_only: dynamic_spec(name).is_none(),
            config_type: kind_code(spec.kind),
            documentation: Some(spec.documentation),
            synonyms,
        });
    }
    // Kafka's other dynamic broker configs: accepted, no effect.
    for spec in NO_EFFECT {
        let mut synonyms: Vec<(String, Option<String>, i8)> = dynamic
            .layers_of(config.node_id, spec.name)
            .into_iter()
            .map(|(source, value)| (spec.name.to_string(), Some(value), source_code(source)))
            .collect();
        synonyms.push((
            spec.name.to_string(),
            Some(spec.default.to_string()),
            config_source::DEFAULT_CONFIG,
        ));
        let (_, value, source) = synonyms[0].clone();
        entries.push(ConfigEntry {
            name: spec.name.to_string(),
            value,
            source,
            read_only: false,
            config_type: kind_code(spec.kind),
            documentation: Some(spec.documentation),
            synonyms,
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
                    &topic_defaults(&shard.config, &snapshot),
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
                        Ok(broker_config_entries(
                            &shard.config,
                            &snapshot.broker_configs,
                        ))
                    } else {
                        // No loggers are configurable through Kafka's API.
                        Ok(Vec::new())
                    }
                } else if name.is_empty() {
                    if resource.resource_type == resource_type::BROKER {
                        Ok(cluster_default_entries(&snapshot.broker_configs))
                    } else {
                        Ok(Vec::new())
                    }
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
        let entries = topic_config_entries(&explicit, &TopicDefaults::default());
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
    fn broker_entries_are_unique_read_only_and_sourced_by_their_kafka_default() {
        let mut config = BrokerConfig::single_node(std::path::PathBuf::from("/data"), 1);
        config.group_initial_rebalance_delay_ms = 0;
        let entries = broker_config_entries(&config, &DynamicBrokerConfigs::default());
        for pair in entries.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} twice or unsorted",
                pair[1].name
            );
        }
        for entry in &entries {
            assert_eq!(
                entry.read_only,
                dynamic_spec(&entry.name).is_none(),
                "{} is read-only exactly when it is not a dynamic broker config",
                entry.name
            );
        }
        assert!(is_static_broker_config(&config, "broker.id"));
        assert!(!is_static_broker_config(&config, "log.retention.ms"));
        let source = |name: &str| {
            entries
                .iter()
                .find(|entry| entry.name == name)
                .map(|entry| (entry.value.clone().unwrap(), entry.source))
                .unwrap()
        };
        assert_eq!(
            source("log.cleaner.backoff.ms"),
            ("15000".to_string(), config_source::DEFAULT_CONFIG)
        );
        assert_eq!(
            source("group.initial.rebalance.delay.ms"),
            ("0".to_string(), config_source::STATIC_BROKER_CONFIG)
        );
        assert_eq!(
            source("log.retention.ms"),
            ("604800000".to_string(), config_source::DEFAULT_CONFIG)
        );
        assert_eq!(source("process.roles").0, "broker,controller");
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
        let defaults = DynamicBrokerConfigs::default().topic_defaults(1, &statics);
        let entries = topic_config_entries(&BTreeMap::new(), &defaults);
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

    #[test]
    fn dynamic_defaults_are_described_with_their_source_and_synonyms() {
        let dynamic = DynamicBrokerConfigs {
            cluster_default: BTreeMap::from([
                ("log.retention.ms".to_string(), "1000".to_string()),
                ("message.max.bytes".to_string(), "500".to_string()),
            ]),
            per_broker: [(
                1,
                BTreeMap::from([("log.retention.ms".to_string(), "2000".to_string())]),
            )]
            .into(),
        };
        let explicit = BTreeMap::from([("max.message.bytes".to_string(), "900".to_string())]);
        let entries = topic_config_entries(&explicit, &dynamic.topic_defaults(1, &BTreeMap::new()));
        let entry = |name: &str| entries.iter().find(|entry| entry.name == name).unwrap();
        let retention = entry("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("2000"));
        assert_eq!(retention.source, config_source::DYNAMIC_BROKER_CONFIG);
        let sources: Vec<i8> = retention.synonyms.iter().map(|synonym| synonym.2).collect();
        assert_eq!(
            sources,
            vec![
                config_source::DYNAMIC_BROKER_CONFIG,
                config_source::DYNAMIC_DEFAULT_BROKER_CONFIG,
                config_source::DEFAULT_CONFIG
            ]
        );
        let max = entry("max.message.bytes");
        assert_eq!(max.value.as_deref(), Some("900"), "the topic's value wins");
        assert_eq!(max.synonyms[1].0, "message.max.bytes");

        let mut config = BrokerConfig::single_node(std::path::PathBuf::from("/data"), 1);
        config.node_id = 1;
        let broker = broker_config_entries(&config, &dynamic);
        let retention = broker
            .iter()
            .find(|entry| entry.name == "log.retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_deref(), Some("2000"));
        assert_eq!(retention.source, config_source::DYNAMIC_BROKER_CONFIG);
        assert!(!retention.read_only);
        assert_eq!(retention.synonyms.len(), 3);
        let cluster = cluster_default_entries(&dynamic);
        assert_eq!(cluster.len(), 2);
        assert!(cluster.iter().all(|entry| {
            entry.source == config_source::DYNAMIC_DEFAULT_BROKER_CONFIG && !entry.read_only
        }));
    }
}
