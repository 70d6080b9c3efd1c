//! Dynamic broker configs: the topic-config defaults that Kafka lets an
//! operator change while the cluster runs (its "cluster-wide" update mode),
//! set as the cluster-wide default (BROKER resource `""`, Kafka's
//! DYNAMIC_DEFAULT_BROKER_CONFIG) or for one broker (BROKER resource
//! `"<id>"`, DYNAMIC_BROKER_CONFIG).
//!
//! They are config records of the metadata log (`ConfigResource::Broker`),
//! so every broker finds them in its view ([`DynamicBrokerConfigs`]). On a
//! broker, a topic config the topic does not set takes that broker's
//! dynamic value, else the cluster default, else the broker's static flag
//! (`--min-insync-replicas`), else Kafka's default ([`TopicDefaults`]); the
//! metadata follower (shard/follower.rs) re-applies the effective configs
//! to the open logs whenever one of these layers changes.
//!
//! Which broker configs are dynamic: every broker synonym of a topic config
//! (metadata/topic_config.rs), except `log.message.format.version`
//! (read-only in Kafka) and `unclean.leader.election.enable` (see
//! [`NOT_DYNAMIC_HERE`]); and Kafka's other dynamic broker configs that
//! tune what Sluice does not have (thread pools, connection quotas,
//! Kerberos, replication throttles: [`NO_EFFECT`]), accepted, validated,
//! stored and described so that Kafka's tools and clients work, without
//! effect. Pure; runs wherever the view is read.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::controller::MetadataImage;
use crate::controller::records::ConfigResource;
use crate::metadata::topic_config::{
    ConfigKind, Rule, TOPIC_CONFIGS, TopicConfigSpec, validate_value,
};

/// Topic-config synonyms that Kafka does not update dynamically.
/// (Kafka's other names of a few of them are read-only too.)
const READ_ONLY_IN_KAFKA: &[&str] = &[
    "log.message.format.version",
    "log.retention.hours",
    "log.retention.minutes",
    "log.roll.hours",
    "log.roll.jitter.hours",
    "log.flush.scheduler.interval.ms",
];

/// Dynamic in Kafka per broker too, but only as the cluster-wide default
/// in Sluice, with the reason (refused on a broker id).
pub const NOT_DYNAMIC_HERE: &[(&str, &str)] = &[(
    "unclean.leader.election.enable",
    "per broker: the controller's elections read the topic's own config, then the \
     cluster-wide default (BROKER \"\"); set it there or on the topics",
)];

const fn no_effect(
    name: &'static str,
    kind: ConfigKind,
    default: &'static str,
    rule: Rule,
    documentation: &'static str,
) -> TopicConfigSpec {
    TopicConfigSpec {
        name,
        kind,
        default,
        rule,
        broker_name: Some(name),
        documentation,
    }
}

/// Kafka's dynamic broker configs that are not topic defaults, with Kafka's
/// type, default and validation: accepted and described, no effect in
/// Sluice (the documentation says why). In name order.
pub const NO_EFFECT: &[TopicConfigSpec] = &[
    no_effect(
        "background.threads",
        ConfigKind::Int,
        "10",
        Rule::AtLeast(1),
        "Threads of Kafka's background tasks. Accepted, no effect: Sluice runs one thread per \
         shard (--cores).",
    ),
    no_effect(
        "follower.replication.throttled.rate",
        ConfigKind::Long,
        "9223372036854775807",
        Rule::AtLeast(0),
        "Replication throttle of follower fetches. Accepted, no effect: Sluice does not \
         throttle replication.",
    ),
    no_effect(
        "leader.replication.throttled.rate",
        ConfigKind::Long,
        "9223372036854775807",
        Rule::AtLeast(0),
        "Replication throttle of leaders. Accepted, no effect: Sluice does not throttle \
         replication.",
    ),
    no_effect(
        "log.cleaner.dedupe.buffer.size",
        ConfigKind::Long,
        "134217728",
        Rule::Any,
        "Memory of Kafka's cleaner threads for deduplication. Accepted, no effect: each \
         shard's cleaner sizes its key map per log.",
    ),
    no_effect(
        "log.cleaner.io.buffer.load.factor",
        ConfigKind::Double,
        "0.9",
        Rule::Any,
        "Load factor of Kafka's cleaner dedupe buffer. Accepted, no effect.",
    ),
    no_effect(
        "log.cleaner.io.buffer.size",
        ConfigKind::Int,
        "524288",
        Rule::AtLeast(0),
        "I/O buffer of Kafka's cleaner threads. Accepted, no effect.",
    ),
    no_effect(
        "log.cleaner.threads",
        ConfigKind::Int,
        "1",
        Rule::AtLeast(0),
        "Kafka's cleaner threads. Accepted, no effect: every shard cleans its own partitions.",
    ),
    no_effect(
        "max.connection.creation.rate",
        ConfigKind::Int,
        "2147483647",
        Rule::AtLeast(0),
        "Connections accepted per second. Accepted, no effect: no connection quotas.",
    ),
    no_effect(
        "max.connections",
        ConfigKind::Int,
        "2147483647",
        Rule::AtLeast(0),
        "Connections accepted at once. Accepted, no effect: no connection quotas.",
    ),
    no_effect(
        "max.connections.per.ip",
        ConfigKind::Int,
        "2147483647",
        Rule::AtLeast(0),
        "Connections accepted per client address. Accepted, no effect: no connection quotas.",
    ),
    no_effect(
        "max.connections.per.ip.overrides",
        ConfigKind::String,
        "",
        Rule::Any,
        "Per-address exceptions to max.connections.per.ip. Accepted, no effect.",
    ),
    no_effect(
        "num.io.threads",
        ConfigKind::Int,
        "8",
        Rule::AtLeast(1),
        "Kafka's request handler threads. Accepted, no effect: Sluice handles requests on its \
         shards (--cores).",
    ),
    no_effect(
        "num.network.threads",
        ConfigKind::Int,
        "3",
        Rule::AtLeast(1),
        "Kafka's network threads. Accepted, no effect: each shard serves its own connections.",
    ),
    no_effect(
        "num.recovery.threads.per.data.dir",
        ConfigKind::Int,
        "2",
        Rule::AtLeast(1),
        "Threads that open logs at start. Accepted, no effect: every shard opens its own.",
    ),
    no_effect(
        "num.replica.fetchers",
        ConfigKind::Int,
        "1",
        Rule::Any,
        "Kafka's follower fetcher threads. Accepted, no effect: leaders push to followers.",
    ),
    no_effect(
        "replica.alter.log.dirs.io.max.bytes.per.second",
        ConfigKind::Long,
        "9223372036854775807",
        Rule::AtLeast(0),
        "Throttle of moves between log directories. Accepted, no effect: one data directory.",
    ),
    no_effect(
        "sasl.kerberos.kinit.cmd",
        ConfigKind::String,
        "/usr/bin/kinit",
        Rule::Any,
        "Kerberos kinit command. Accepted, no effect: Sluice has no GSSAPI.",
    ),
    no_effect(
        "sasl.kerberos.min.time.before.relogin",
        ConfigKind::Long,
        "60000",
        Rule::Any,
        "Kerberos login refresh sleep. Accepted, no effect: Sluice has no GSSAPI.",
    ),
    no_effect(
        "sasl.kerberos.ticket.renew.jitter",
        ConfigKind::Double,
        "0.05",
        Rule::Any,
        "Kerberos ticket renewal jitter. Accepted, no effect: Sluice has no GSSAPI.",
    ),
    no_effect(
        "sasl.kerberos.ticket.renew.window.factor",
        ConfigKind::Double,
        "0.8",
        Rule::Any,
        "Kerberos ticket renewal point. Accepted, no effect: Sluice has no GSSAPI.",
    ),
];

/// Configs of [`NO_EFFECT`] that Kafka takes per broker only (its listener
/// configs): refused on the cluster-wide default.
const PER_BROKER_ONLY: &[&str] = &[
    "sasl.kerberos.kinit.cmd",
    "sasl.kerberos.min.time.before.relogin",
    "sasl.kerberos.ticket.renew.jitter",
    "sasl.kerberos.ticket.renew.window.factor",
];

/// The spec of dynamic broker config `name`: the topic config it is the
/// default of, or its own ([`NO_EFFECT`]); `None` when `name` is not a
/// dynamic broker config here.
pub fn dynamic_spec(name: &str) -> Option<&'static TopicConfigSpec> {
    if READ_ONLY_IN_KAFKA.contains(&name) {
        return None;
    }
    TOPIC_CONFIGS
        .iter()
        .find(|spec| spec.broker_name == Some(name))
        .or_else(|| NO_EFFECT.iter().find(|spec| spec.name == name))
}

/// Whether dynamic broker config `name` is the default of a topic config
/// (and so acts); the others are [`NO_EFFECT`].
pub fn is_topic_default(name: &str) -> bool {
    dynamic_spec(name).is_some()
        && TOPIC_CONFIGS
            .iter()
            .any(|spec| spec.broker_name == Some(name))
}

/// Every dynamic broker config name, in name order.
pub fn dynamic_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = TOPIC_CONFIGS
        .iter()
        .filter_map(|spec| spec.broker_name)
        .chain(NO_EFFECT.iter().map(|spec| spec.name))
        .filter(|name| dynamic_spec(name).is_some())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Why a dynamic broker config change is refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BrokerConfigError {
    #[error(
        "Unknown broker config {name}: the dynamic broker configs are the topic-config \
         defaults (log.retention.ms, log.segment.bytes, message.max.bytes, ...; see \
         docs/operations/broker-configs.md)"
    )]
    Unknown { name: String },
    #[error("Cannot update these configs dynamically: Set({name}) (a read-only broker config)")]
    ReadOnly { name: String },
    #[error("Cannot update {name} dynamically in Sluice: {reason}")]
    NotDynamicHere { name: String, reason: &'static str },
    #[error(
        "Cannot update these configs at default cluster level, broker id must be specified: \
         Set({name})"
    )]
    PerBrokerOnly { name: String },
    #[error("{0}")]
    InvalidValue(String),
    /// The new defaults would leave a topic with configs that contradict
    /// each other (e.g. min.compaction.lag.ms above max.compaction.lag.ms).
    #[error("{0}")]
    Conflict(String),
}

/// Check the names and values of a resource's new dynamic config set (of
/// one broker when `per_broker`, else the cluster-wide default).
/// `read_only` says whether a name is one of the broker's static settings
/// (reported read-only by DescribeConfigs).
pub fn validate(
    configs: &BTreeMap<String, String>,
    read_only: &dyn Fn(&str) -> bool,
    per_broker: bool,
) -> Result<(), BrokerConfigError> {
    for (name, value) in configs {
        let spec = check_name(name, read_only, per_broker)?;
        // Kafka's message names the broker config, not the topic config.
        let as_broker = TopicConfigSpec {
            name: spec.broker_name.unwrap_or(spec.name),
            ..*spec
        };
        validate_value(&as_broker, value).map_err(BrokerConfigError::InvalidValue)?;
    }
    Ok(())
}

/// The spec behind dynamic broker config `name`, or why it cannot be set
/// (on one broker when `per_broker`, else on the cluster-wide default).
pub fn check_name(
    name: &str,
    read_only: &dyn Fn(&str) -> bool,
    per_broker: bool,
) -> Result<&'static TopicConfigSpec, BrokerConfigError> {
    if let Some((_, reason)) = NOT_DYNAMIC_HERE
        .iter()
        .find(|(refused, _)| per_broker && *refused == name)
    {
        return Err(BrokerConfigError::NotDynamicHere {
            name: name.to_string(),
            reason,
        });
    }
    if let Some(spec) = dynamic_spec(name) {
        if !per_broker && PER_BROKER_ONLY.contains(&name) {
            return Err(BrokerConfigError::PerBrokerOnly {
                name: name.to_string(),
            });
        }
        return Ok(spec);
    }
    if let Some((_, reason)) = NOT_DYNAMIC_HERE
        .iter()
        .find(|(refused, _)| *refused == name)
    {
        return Err(BrokerConfigError::NotDynamicHere {
            name: name.to_string(),
            reason,
        });
    }
    if READ_ONLY_IN_KAFKA.contains(&name) || read_only(name) {
        return Err(BrokerConfigError::ReadOnly {
            name: name.to_string(),
        });
    }
    Err(BrokerConfigError::Unknown {
        name: name.to_string(),
    })
}

/// The dynamic broker configs of the cluster (broker config names), as of
/// one metadata image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DynamicBrokerConfigs {
    /// The cluster-wide defaults (resource `""`).
    pub cluster_default: BTreeMap<String, String>,
    /// Per broker id (resource `"<id>"`).
    pub per_broker: BTreeMap<i32, BTreeMap<String, String>>,
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

impl DynamicBrokerConfigs {
    pub fn from_image(image: &MetadataImage) -> DynamicBrokerConfigs {
        let cluster_default = image
            .configs(&ConfigResource::Broker(None))
            .cloned()
            .unwrap_or_default();
        let per_broker = image
            .brokers()
            .keys()
            .filter_map(|id| {
                image
                    .configs(&ConfigResource::Broker(Some(*id)))
                    .map(|configs| (id.0, configs.clone()))
            })
            .collect();
        DynamicBrokerConfigs {
            cluster_default,
            per_broker,
        }
    }

    /// The configs of one resource: the cluster default (`None`) or a
    /// broker's own.
    pub fn of(&self, broker: Option<i32>) -> &BTreeMap<String, String> {
        match broker {
            None => &self.cluster_default,
            Some(id) => self.per_broker.get(&id).unwrap_or(&EMPTY),
        }
    }

    /// These configs with the set of `broker` (None: the cluster default)
    /// replaced by `configs`.
    pub fn with(&self, broker: Option<i32>, configs: BTreeMap<String, String>) -> Self {
        let mut changed = self.clone();
        match broker {
            None => changed.cluster_default = configs,
            Some(id) => {
                changed.per_broker.insert(id, configs);
            }
        }
        changed
    }

    /// The value of dynamic broker config `name` on broker `node_id`: its
    /// own, else the cluster default (most specific first, both if set).
    pub fn layers_of(&self, node_id: i32, name: &str) -> Vec<(DefaultSource, String)> {
        let mut layers = Vec::new();
        if let Some(value) = self.of(Some(node_id)).get(name) {
            layers.push((DefaultSource::DynamicBroker, value.clone()));
        }
        if let Some(value) = self.cluster_default.get(name) {
            layers.push((DefaultSource::DynamicDefaultBroker, value.clone()));
        }
        layers
    }

    /// The topic-config defaults in effect on broker `node_id`, over the
    /// broker's static ones (`statics`, by topic config name).
    pub fn topic_defaults(
        &self,
        node_id: i32,
        statics: &BTreeMap<&'static str, String>,
    ) -> TopicDefaults {
        let mut layers: BTreeMap<&'static str, Vec<(DefaultSource, String)>> = BTreeMap::new();
        let own = self.of(Some(node_id));
        for spec in TOPIC_CONFIGS {
            let mut found = Vec::new();
            if let Some(broker_name) = spec.broker_name
                && dynamic_spec(broker_name).is_some()
            {
                if let Some(value) = own.get(broker_name) {
                    found.push((DefaultSource::DynamicBroker, value.clone()));
                }
                if let Some(value) = self.cluster_default.get(broker_name) {
                    found.push((DefaultSource::DynamicDefaultBroker, value.clone()));
                }
            }
            if let Some(value) = statics.get(spec.name) {
                found.push((DefaultSource::StaticBroker, value.clone()));
            }
            if !found.is_empty() {
                layers.insert(spec.name, found);
            }
        }
        TopicDefaults { layers }
    }
}

/// Where a topic config's default comes from on a broker, besides Kafka's
/// own default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultSource {
    /// This broker's dynamic value (DYNAMIC_BROKER_CONFIG).
    DynamicBroker,
    /// The cluster-wide dynamic default (DYNAMIC_DEFAULT_BROKER_CONFIG).
    DynamicDefaultBroker,
    /// A flag of this broker (STATIC_BROKER_CONFIG).
    StaticBroker,
}

/// The topic-config defaults of one broker: by topic config name, the
/// values that stand in for Kafka's default, most specific first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicDefaults {
    layers: BTreeMap<&'static str, Vec<(DefaultSource, String)>>,
}

impl TopicDefaults {
    /// The layers above Kafka's default for topic config `name`, most
    /// specific first (empty when only Kafka's default applies).
    pub fn layers(&self, name: &str) -> &[(DefaultSource, String)] {
        self.layers.get(name).map_or(&[], Vec::as_slice)
    }

    /// The configs a topic with explicit configs `explicit` runs with: its
    /// own, and for the others the first layer that sets them (Kafka's
    /// defaults are left out, as in a topic's explicit map).
    pub fn effective(&self, explicit: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut effective = explicit.clone();
        for (name, layers) in &self.layers {
            if let Some((_, value)) = layers.first() {
                effective
                    .entry((*name).to_string())
                    .or_insert_with(|| value.clone());
            }
        }
        effective
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::metadata::TopicConfig;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn never(_: &str) -> bool {
        false
    }

    #[test]
    fn the_topic_default_synonyms_are_dynamic_except_the_read_only_ones() {
        let names = dynamic_names();
        for name in [
            "log.retention.ms",
            "log.retention.bytes",
            "log.segment.bytes",
            "log.roll.ms",
            "log.cleanup.policy",
            "log.cleaner.delete.retention.ms",
            "log.cleaner.min.cleanable.ratio",
            "message.max.bytes",
            "log.message.timestamp.type",
            "min.insync.replicas",
            "compression.type",
            "log.flush.interval.ms",
            "log.flush.interval.messages",
        ] {
            assert!(names.contains(&name), "{name}");
            assert_eq!(dynamic_spec(name).unwrap().broker_name, Some(name));
        }
        assert!(!names.contains(&"log.message.format.version"));
        assert!(names.contains(&"unclean.leader.election.enable"));
        assert!(
            dynamic_spec("retention.ms").is_none(),
            "topic names are not broker names"
        );
    }

    #[test]
    fn names_and_values_are_checked_with_broker_names_in_the_messages() {
        validate(
            &map(&[
                ("log.retention.ms", "1000"),
                ("log.cleanup.policy", "compact,delete"),
            ]),
            &never,
            false,
        )
        .unwrap();
        let error = validate(&map(&[("log.retention.ms", "soon")]), &never, false).unwrap_err();
        assert!(
            matches!(&error, BrokerConfigError::InvalidValue(message) if message.contains("log.retention.ms")),
            "{error}"
        );
        assert!(matches!(
            validate(&map(&[("log.retention.mss", "1")]), &never, true),
            Err(BrokerConfigError::Unknown { .. })
        ));
        let static_names = |name: &str| name == "broker.id";
        assert!(matches!(
            validate(&map(&[("broker.id", "7")]), &static_names, true),
            Err(BrokerConfigError::ReadOnly { .. })
        ));
        assert!(matches!(
            validate(
                &map(&[("log.message.format.version", "3.0")]),
                &never,
                false
            ),
            Err(BrokerConfigError::ReadOnly { .. })
        ));
        // Cluster-wide only: the controller reads the default, not a
        // broker's own value.
        validate(
            &map(&[("unclean.leader.election.enable", "true")]),
            &never,
            false,
        )
        .unwrap();
        assert!(matches!(
            validate(
                &map(&[("unclean.leader.election.enable", "true")]),
                &never,
                true
            ),
            Err(BrokerConfigError::NotDynamicHere { .. })
        ));
    }

    #[test]
    fn kafkas_other_dynamic_configs_are_accepted_with_their_validation_and_scope() {
        for pair in NO_EFFECT.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} out of order", pair[1].name);
        }
        for spec in NO_EFFECT {
            validate_value(spec, spec.default).unwrap();
            assert!(
                !TOPIC_CONFIGS
                    .iter()
                    .any(|topic| topic.broker_name == Some(spec.name))
            );
            assert!(!is_topic_default(spec.name), "{}", spec.name);
        }
        assert!(is_topic_default("log.retention.ms"));
        validate(&map(&[("background.threads", "9")]), &never, false).unwrap();
        assert!(matches!(
            validate(&map(&[("background.threads", "0")]), &never, false),
            Err(BrokerConfigError::InvalidValue(_))
        ));
        let kerberos = map(&[("sasl.kerberos.min.time.before.relogin", "58000")]);
        validate(&kerberos, &never, true).unwrap();
        assert!(matches!(
            validate(&kerberos, &never, false),
            Err(BrokerConfigError::PerBrokerOnly { .. })
        ));
    }

    #[test]
    fn a_brokers_value_wins_over_the_cluster_default_and_the_topics_over_both() {
        let configs = DynamicBrokerConfigs {
            cluster_default: map(&[("log.retention.ms", "1000"), ("message.max.bytes", "500")]),
            per_broker: [(2, map(&[("log.retention.ms", "2000")]))].into(),
        };
        let statics = BTreeMap::from([("min.insync.replicas", "2".to_string())]);
        let on_two = configs.topic_defaults(2, &statics);
        assert_eq!(
            on_two.layers("retention.ms"),
            &[
                (DefaultSource::DynamicBroker, "2000".to_string()),
                (DefaultSource::DynamicDefaultBroker, "1000".to_string()),
            ]
        );
        let on_one = configs.topic_defaults(1, &BTreeMap::new());
        assert_eq!(
            on_one.layers("retention.ms"),
            &[(DefaultSource::DynamicDefaultBroker, "1000".to_string())]
        );
        assert!(on_one.layers("segment.bytes").is_empty());
        let effective = on_two.effective(&map(&[("max.message.bytes", "900")]));
        assert_eq!(
            effective,
            map(&[
                ("max.message.bytes", "900"),
                ("min.insync.replicas", "2"),
                ("retention.ms", "2000"),
            ])
        );
        let parsed = TopicConfig::from_map(&effective).unwrap();
        assert_eq!(parsed.log.retention_ms, Some(2000));
        assert_eq!(parsed.log.max_message_bytes, 900);
    }

    #[test]
    fn replacing_a_resources_set_leaves_the_others() {
        let configs = DynamicBrokerConfigs {
            cluster_default: map(&[("log.retention.ms", "1000")]),
            per_broker: [(2, map(&[("log.retention.ms", "2000")]))].into(),
        };
        let changed = configs.with(Some(2), BTreeMap::new());
        assert!(changed.of(Some(2)).is_empty());
        assert_eq!(changed.of(None), configs.of(None));
        let changed = configs.with(None, map(&[("log.segment.bytes", "4096")]));
        assert_eq!(changed.of(Some(2)), configs.of(Some(2)));
        assert_eq!(changed.of(None), &map(&[("log.segment.bytes", "4096")]));
    }
}
