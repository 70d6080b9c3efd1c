//! Topic configs: every topic config of Kafka's documentation (3.x and
//! 4.x), its type, default, validation and broker synonym, and how the
//! accepted values map onto the engine's `LogConfig` and the broker's
//! behaviour. Which configs act and why the others are accepted anyway:
//! docs/operations/topic-configs.md.
//!
//! Unknown names and invalid values are errors (INVALID_CONFIG at the edge),
//! with Kafka's rules (type, range, allowed values): nothing is created or
//! changed with a config Kafka would refuse. Pure; runs wherever a topic's
//! configs are parsed (handlers, the metadata follower, partition open).

use std::collections::BTreeMap;

use sluice_engine::{CleanOptions, FlushPolicy, LogConfig};

/// A config's Kafka type (ConfigDef.Type), as DescribeConfigs reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    Boolean,
    String,
    Int,
    Long,
    Double,
    List,
}

/// The value rule of a config, beyond its type (Kafka's validators).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Any value of the type.
    Any,
    /// A number at least this.
    AtLeast(i64),
    /// A number in this closed range.
    Between(i64, i64),
    /// One of these strings (case-sensitive, as Kafka's ValidString).
    OneOf(&'static [&'static str]),
    /// compression.gzip.level: 1 to 9, or -1 (the codec's default).
    GzipLevel,
    /// *.replication.throttled.replicas: empty, `*`, or `partition:broker`
    /// pairs separated by commas.
    ThrottledReplicas,
    /// message.format.version: a Kafka version such as 0.10.2 or 3.0-IV1.
    FormatVersion,
}

/// One topic config as Kafka defines it.
#[derive(Clone, Copy, Debug)]
pub struct TopicConfigSpec {
    pub name: &'static str,
    pub kind: ConfigKind,
    /// Kafka's default, as Kafka prints it.
    pub default: &'static str,
    pub rule: Rule,
    /// The broker config that supplies the default in Kafka
    /// (ServerTopicConfigSynonyms), if any.
    pub broker_name: Option<&'static str>,
    pub documentation: &'static str,
}

const LONG_MAX: &str = "9223372036854775807";

const fn spec(
    name: &'static str,
    kind: ConfigKind,
    default: &'static str,
    rule: Rule,
    broker_name: Option<&'static str>,
    documentation: &'static str,
) -> TopicConfigSpec {
    TopicConfigSpec {
        name,
        kind,
        default,
        rule,
        broker_name,
        documentation,
    }
}

use ConfigKind::{Boolean, Double, Int, List, Long, String as Str};

/// Every topic config, in name order: Kafka 3.9's list plus the 4.x
/// additions (remote.log.copy.disable, remote.log.delete.on.disable), with
/// the 3.x defaults (message.timestamp.after.max.ms is Long.MAX_VALUE, as in
/// 3.x; 4.0 lowered it to one hour). Kafka 4.0 removed
/// message.downconversion.enable, message.format.version and
/// message.timestamp.difference.max.ms; they are accepted for 3.x clients.
pub const TOPIC_CONFIGS: &[TopicConfigSpec] = &[
    spec(
        "cleanup.policy",
        List,
        "delete",
        Rule::OneOf(&["compact", "delete"]),
        Some("log.cleanup.policy"),
        "What happens to old segments: delete (by retention), compact (keep the latest record \
         per key; keys required) or both (compact,delete).",
    ),
    spec(
        "compression.gzip.level",
        Int,
        "-1",
        Rule::GzipLevel,
        Some("compression.gzip.level"),
        "Level of gzip when compression.type is gzip: 1 to 9, or -1 for the codec's default.",
    ),
    spec(
        "compression.lz4.level",
        Int,
        "9",
        Rule::Between(1, 17),
        Some("compression.lz4.level"),
        "Level of lz4 when compression.type is lz4 (1 to 17).",
    ),
    spec(
        "compression.type",
        Str,
        "producer",
        Rule::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        Some("compression.type"),
        "The codec of stored batches: producer keeps the producer's; any other codec (or \
         uncompressed) makes the broker recompress batches that use another.",
    ),
    spec(
        "compression.zstd.level",
        Int,
        "3",
        Rule::Between(-131_072, 22),
        Some("compression.zstd.level"),
        "Level of zstd when compression.type is zstd (-131072 to 22).",
    ),
    spec(
        "delete.retention.ms",
        Long,
        "86400000",
        Rule::AtLeast(0),
        Some("log.cleaner.delete.retention.ms"),
        "How long a tombstone (null value) of a compacted topic stays readable, from its \
         batch's timestamp, before the cleaner removes it.",
    ),
    spec(
        "file.delete.delay.ms",
        Long,
        "60000",
        Rule::AtLeast(0),
        Some("log.segment.delete.delay.ms"),
        "How long Kafka waits before deleting a file that left the log. Accepted; Sluice \
         removes the file at once (readers keep their open descriptors).",
    ),
    spec(
        "flush.messages",
        Long,
        LONG_MAX,
        Rule::AtLeast(1),
        Some("log.flush.interval.messages"),
        "Records written before a forced flush. 1 makes every produce wait for its fsync, \
         whatever flush.ms says; other values leave flush.ms in charge.",
    ),
    spec(
        "flush.ms",
        Long,
        LONG_MAX,
        Rule::AtLeast(0),
        Some("log.flush.interval.ms"),
        "Longest time written records may wait before they are forced to disk. The default \
         (Long.MAX_VALUE) makes Sluice fsync before acknowledging a produce.",
    ),
    spec(
        "follower.replication.throttled.replicas",
        List,
        "",
        Rule::ThrottledReplicas,
        None,
        "Replicas whose follower fetches are throttled. Accepted; Sluice does not throttle \
         replication.",
    ),
    spec(
        "index.interval.bytes",
        Int,
        "4096",
        Rule::AtLeast(0),
        Some("log.index.interval.bytes"),
        "Bytes of records between two entries of the offset index.",
    ),
    spec(
        "leader.replication.throttled.replicas",
        List,
        "",
        Rule::ThrottledReplicas,
        None,
        "Replicas whose leader side of replication is throttled. Accepted; Sluice does not \
         throttle replication.",
    ),
    spec(
        "local.retention.bytes",
        Long,
        "-2",
        Rule::AtLeast(-2),
        Some("log.local.retention.bytes"),
        "Local size limit of a tiered-storage topic (-2: retention.bytes). Accepted; Sluice \
         has no tiered storage.",
    ),
    spec(
        "local.retention.ms",
        Long,
        "-2",
        Rule::AtLeast(-2),
        Some("log.local.retention.ms"),
        "Local time limit of a tiered-storage topic (-2: retention.ms). Accepted; Sluice has \
         no tiered storage.",
    ),
    spec(
        "max.compaction.lag.ms",
        Long,
        LONG_MAX,
        Rule::AtLeast(1),
        Some("log.cleaner.max.compaction.lag.ms"),
        "Longest time a record of a compacted topic stays uncompacted: a log with older dirty \
         records is cleaned whatever its dirty ratio, and its active segment rolls by then.",
    ),
    spec(
        "max.message.bytes",
        Int,
        "1048588",
        Rule::AtLeast(0),
        Some("message.max.bytes"),
        "Largest record batch the topic accepts.",
    ),
    spec(
        "message.downconversion.enable",
        Boolean,
        "true",
        Rule::Any,
        Some("log.message.downconversion.enable"),
        "Whether old fetch versions get down-converted batches (removed in Kafka 4.0). \
         Accepted; Sluice stores and serves record batch v2 only.",
    ),
    spec(
        "message.format.version",
        Str,
        "3.0-IV1",
        Rule::FormatVersion,
        Some("log.message.format.version"),
        "Record format of appended batches (ignored since Kafka 3.0, removed in 4.0). \
         Accepted and ignored, as Kafka 3.x does.",
    ),
    spec(
        "message.timestamp.after.max.ms",
        Long,
        LONG_MAX,
        Rule::AtLeast(0),
        Some("log.message.timestamp.after.max.ms"),
        "With CreateTime, a batch with a record timestamp more than this ahead of the \
         broker's clock is refused (INVALID_TIMESTAMP).",
    ),
    spec(
        "message.timestamp.before.max.ms",
        Long,
        LONG_MAX,
        Rule::AtLeast(0),
        Some("log.message.timestamp.before.max.ms"),
        "With CreateTime, a batch with a record timestamp more than this behind the broker's \
         clock is refused (INVALID_TIMESTAMP).",
    ),
    spec(
        "message.timestamp.difference.max.ms",
        Long,
        LONG_MAX,
        Rule::AtLeast(0),
        Some("log.message.timestamp.difference.max.ms"),
        "Deprecated (removed in Kafka 4.0): the bound used for before.max.ms and after.max.ms \
         when they are left at their defaults.",
    ),
    spec(
        "message.timestamp.type",
        Str,
        "CreateTime",
        Rule::OneOf(&["CreateTime", "LogAppendTime"]),
        Some("log.message.timestamp.type"),
        "CreateTime (the producer's timestamp) or LogAppendTime (the broker's clock).",
    ),
    spec(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        Rule::Any,
        Some("log.cleaner.min.cleanable.ratio"),
        "Share of a compacted log's cleanable bytes that must be uncleaned before the cleaner \
         compacts it.",
    ),
    spec(
        "min.compaction.lag.ms",
        Long,
        "0",
        Rule::AtLeast(0),
        Some("log.cleaner.min.compaction.lag.ms"),
        "Segments holding records newer than this are not compacted yet.",
    ),
    spec(
        "min.insync.replicas",
        Int,
        "1",
        Rule::AtLeast(1),
        Some("min.insync.replicas"),
        "Fewest ISR members with which an acks=all produce is accepted.",
    ),
    spec(
        "preallocate",
        Boolean,
        "false",
        Rule::Any,
        Some("log.preallocate"),
        "Preallocate a whole segment file when it is created. Accepted; Sluice always \
         grows segment files by fallocate steps.",
    ),
    spec(
        "remote.log.copy.disable",
        Boolean,
        "false",
        Rule::Any,
        None,
        "Stop copying segments to tiered storage. Accepted; Sluice has no tiered storage.",
    ),
    spec(
        "remote.log.delete.on.disable",
        Boolean,
        "false",
        Rule::Any,
        None,
        "Delete the tiered copy when tiered storage is turned off. Accepted; Sluice has no \
         tiered storage.",
    ),
    spec(
        "remote.storage.enable",
        Boolean,
        "false",
        Rule::Any,
        None,
        "Tiered storage for the topic. Only false: Sluice has no tiered storage (true is \
         refused, as Kafka does when tiered storage is off in the broker).",
    ),
    spec(
        "retention.bytes",
        Long,
        "-1",
        Rule::Any,
        Some("log.retention.bytes"),
        "Size a partition's log may reach before its oldest segments are deleted; -1 (any \
         negative value) for no limit.",
    ),
    spec(
        "retention.ms",
        Long,
        "604800000",
        Rule::AtLeast(-1),
        Some("log.retention.ms"),
        "How long a segment is kept after its newest record; -1 for no limit.",
    ),
    spec(
        "segment.bytes",
        Int,
        "1073741824",
        Rule::AtLeast(14),
        Some("log.segment.bytes"),
        "Size at which a segment is closed and a new one started.",
    ),
    spec(
        "segment.index.bytes",
        Int,
        "10485760",
        Rule::AtLeast(4),
        Some("log.index.size.max.bytes"),
        "Largest offset index of a segment (Kafka rolls when it is full). Accepted; Sluice's \
         sparse indexes grow as needed.",
    ),
    spec(
        "segment.jitter.ms",
        Long,
        "0",
        Rule::AtLeast(0),
        Some("log.roll.jitter.ms"),
        "Random time taken off segment.ms per segment, to spread rolls. Accepted; Sluice \
         rolls at segment.ms.",
    ),
    spec(
        "segment.ms",
        Long,
        "604800000",
        Rule::AtLeast(1),
        Some("log.roll.ms"),
        "Age at which a segment is closed and a new one started, even if not full.",
    ),
    spec(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        Rule::Any,
        Some("unclean.leader.election.enable"),
        "With no live in-sync replica, elect an out-of-sync one (which may lose records).",
    ),
];

/// The spec of a topic config, `None` for a name Kafka does not know.
pub fn spec_of(name: &str) -> Option<&'static TopicConfigSpec> {
    TOPIC_CONFIGS.iter().find(|spec| spec.name == name)
}

/// Kafka's default of a topic config (as Kafka prints it).
pub fn default_of(name: &str) -> Option<&'static str> {
    spec_of(name).map(|spec| spec.default)
}

/// Check one value against its spec (type, range, allowed values), as
/// Kafka's ConfigDef does (numbers and booleans trimmed, booleans in any
/// case). The error is Kafka's message.
pub fn validate_value(spec: &TopicConfigSpec, value: &str) -> Result<(), String> {
    let name = spec.name;
    let invalid =
        |reason: String| format!("Invalid value {value} for configuration {name}: {reason}");
    let trimmed = value.trim();
    let number: Option<i64> = match spec.kind {
        ConfigKind::Int => Some(
            trimmed
                .parse::<i32>()
                .map_err(|_| invalid("Not a number of type INT".to_string()))?
                .into(),
        ),
        ConfigKind::Long => Some(
            trimmed
                .parse::<i64>()
                .map_err(|_| invalid("Not a number of type LONG".to_string()))?,
        ),
        ConfigKind::Double => {
            let parsed: f64 = trimmed
                .parse()
                .map_err(|_| invalid("Not a number of type DOUBLE".to_string()))?;
            // min.cleanable.dirty.ratio, the only DOUBLE: between(0, 1).
            if !(0.0..=1.0).contains(&parsed) {
                return Err(invalid("Value must be between 0 and 1".to_string()));
            }
            None
        }
        ConfigKind::Boolean => {
            if !trimmed.eq_ignore_ascii_case("true") && !trimmed.eq_ignore_ascii_case("false") {
                return Err(invalid(
                    "Expected value to be either true or false".to_string(),
                ));
            }
            None
        }
        ConfigKind::String | ConfigKind::List => None,
    };
    match (spec.rule, number) {
        (Rule::Any, _) => Ok(()),
        (Rule::AtLeast(minimum), Some(number)) if number < minimum => {
            Err(invalid(format!("Value must be at least {minimum}")))
        }
        (Rule::Between(low, high), Some(number)) if number < low || number > high => {
            Err(invalid(format!("Value must be between {low} and {high}")))
        }
        (Rule::GzipLevel, Some(number)) if number != -1 && !(1..=9).contains(&number) => {
            Err(invalid("Value must be in [1,...,9] or -1".to_string()))
        }
        (Rule::OneOf(allowed), _) if spec.kind == ConfigKind::List => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            for (index, item) in items.iter().enumerate() {
                if !allowed.contains(item) {
                    return Err(invalid(format!(
                        "String must be one of: {}",
                        allowed.join(", ")
                    )));
                }
                if items[..index].contains(item) {
                    return Err(invalid(format!("Duplicate value {item:?} in the list")));
                }
            }
            Ok(())
        }
        (Rule::OneOf(allowed), _) if !allowed.contains(&trimmed) => Err(invalid(format!(
            "String must be one of: {}",
            allowed.join(", ")
        ))),
        (Rule::ThrottledReplicas, _) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            let pair = |item: &str| {
                item.split_once(':').is_some_and(|(partition, broker)| {
                    partition.trim().parse::<u32>().is_ok() && broker.trim().parse::<u32>().is_ok()
                })
            };
            let valid = trimmed.is_empty() || trimmed == "*" || items.iter().all(|item| pair(item));
            if valid {
                Ok(())
            } else {
                Err(invalid(
                    "must be the literal '*' or a list of replicas in the following format: \
                     [partitionId]:[brokerId],[partitionId]:[brokerId],..."
                        .to_string(),
                ))
            }
        }
        (Rule::FormatVersion, _) => {
            let (version, feature) = match trimmed.split_once("-IV") {
                Some((version, level)) => (version, Some(level)),
                None => (trimmed, None),
            };
            let parts: Vec<&str> = version.split('.').collect();
            let valid = (2..=4).contains(&parts.len())
                && parts.iter().all(|part| part.parse::<u16>().is_ok())
                && parts[0].parse::<u16>().is_ok_and(|major| major <= 4)
                && feature.is_none_or(|level| level.parse::<u16>().is_ok());
            if valid {
                Ok(())
            } else {
                Err(invalid(format!("Unknown metadata.version '{trimmed}'")))
            }
        }
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    /// Records must have keys; the shard's cleaner (shard/cleaner.rs) keeps
    /// the latest record per key.
    Compact,
    /// "compact,delete": compaction and retention both apply.
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether the log cleaner compacts the topic (and produce requires keys).
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Whether retention (retention.ms, retention.bytes) deletes old segments.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

/// The compaction configs of a topic (used when its policy compacts).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactionConfig {
    /// delete.retention.ms and min.compaction.lag.ms, as the engine takes them.
    pub clean: CleanOptions,
    /// min.cleanable.dirty.ratio: clean once this share of the cleanable
    /// bytes is dirty.
    pub min_cleanable_dirty_ratio: f64,
    /// max.compaction.lag.ms: a log whose dirty records are older than
    /// this is cleaned whatever its dirty ratio (`i64::MAX`: never forced).
    pub max_compaction_lag_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// compression.type with its level: the codec stored batches must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicCompression {
    /// Batches are stored as the producer compressed them.
    Producer,
    Uncompressed,
    /// `None`: the codec's default level (compression.gzip.level -1).
    Gzip {
        level: Option<u32>,
    },
    Snappy,
    Lz4 {
        level: u32,
    },
    Zstd {
        level: i32,
    },
}

/// message.timestamp.before.max.ms and after.max.ms in effect (the
/// deprecated difference.max.ms stands in for either left at its default,
/// as in Kafka 3.x's LogConfig). Checked only with CreateTime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimestampBounds {
    pub before_max_ms: i64,
    pub after_max_ms: i64,
}

impl TimestampBounds {
    /// Whether a record timestamp is within the bounds at broker time
    /// `now_ms`. Timestamps of -1 (none) are always accepted, as in Kafka.
    pub fn allows(self, timestamp_ms: i64, now_ms: i64) -> bool {
        timestamp_ms == -1
            || (now_ms.saturating_sub(timestamp_ms) <= self.before_max_ms
                && timestamp_ms.saturating_sub(now_ms) <= self.after_max_ms)
    }

    /// Whether any timestamp could be refused.
    pub fn limits(self) -> bool {
        self.before_max_ms != i64::MAX || self.after_max_ms != i64::MAX
    }
}

/// A topic's effective configuration (explicit values over defaults).
#[derive(Clone, Debug)]
pub struct TopicConfig {
    pub cleanup_policy: CleanupPolicy,
    pub compaction: CompactionConfig,
    pub timestamp_type: TimestampType,
    pub timestamp_bounds: TimestampBounds,
    pub compression: TopicCompression,
    pub log: LogConfig,
    /// unclean.leader.election.enable: with no active ISR member, the
    /// controller may elect an out-of-sync replica (losing data).
    pub unclean_leader_election: bool,
    /// min.insync.replicas: acks=all needs at least this many ISR members.
    pub min_insync_replicas: i32,
}

impl TopicConfig {
    /// The config a replica opens with or applies: committed configs, never
    /// refused. What a change was checked against when it was committed
    /// (the receiving broker's view of the dynamic defaults, its version's
    /// config names) may differ from this broker's, and a replica whose
    /// configs did not parse never opened (its partition unavailable here
    /// for good). As Kafka's brokers build a log's config without the
    /// controller's cross-checks: an unknown name or a bad value is left
    /// out (its default applies), and max.compaction.lag.ms below
    /// min.compaction.lag.ms is raised to it. Returns what was set aside,
    /// for the caller to log.
    pub fn for_replica(configs: &BTreeMap<String, String>) -> (TopicConfig, Vec<String>) {
        let mut kept = BTreeMap::new();
        let mut set_aside = Vec::new();
        for (name, value) in configs {
            match spec_of(name).map(|spec| validate_value(spec, value)) {
                Some(Ok(())) => {
                    kept.insert(name.clone(), value.clone());
                }
                Some(Err(error)) => set_aside.push(format!("{name}={value}: {error}")),
                None => set_aside.push(format!("{name}: unknown topic config")),
            }
        }
        let lag = |kept: &BTreeMap<String, String>, name: &str| -> i64 {
            kept.get(name)
                .map(String::as_str)
                .or_else(|| default_of(name))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0)
        };
        let (min, max) = (
            lag(&kept, "min.compaction.lag.ms"),
            lag(&kept, "max.compaction.lag.ms"),
        );
        if min > max {
            set_aside.push(format!(
                "max.compaction.lag.ms {max} is below min.compaction.lag.ms {min}: raised to it"
            ));
            kept.insert("max.compaction.lag.ms".to_string(), min.to_string());
        }
        // Refused by `from_map` whatever else is set (no tiered storage
        // here): set aside alone, not with every other config.
        if kept
            .get("remote.storage.enable")
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
        {
            kept.remove("remote.storage.enable");
            set_aside.push("remote.storage.enable=true: no tiered storage here".to_string());
        }
        match TopicConfig::from_map(&kept) {
            Ok(config) => (config, set_aside),
            Err(error) => {
                set_aside.push(format!("{error}: every config at its default"));
                let defaults = TopicConfig::from_map(&BTreeMap::new());
                assert!(defaults.is_ok(), "the defaults parse (a unit test checks)");
                (defaults.unwrap_or_else(|_| unreachable!()), set_aside)
            }
        }
    }

    /// Parse explicit configs; an unknown name or a bad value is an error
    /// naming it (Kafka's message where Kafka has one).
    pub fn from_map(configs: &BTreeMap<String, String>) -> Result<TopicConfig, String> {
        for (name, value) in configs {
            let Some(spec) = spec_of(name) else {
                return Err(format!("Unknown topic config name: {name}"));
            };
            validate_value(spec, value)?;
        }
        let value = |name: &str| -> &str {
            configs
                .get(name)
                .map(String::as_str)
                .unwrap_or_else(|| default_of(name).unwrap_or(""))
                .trim()
        };
        // Every value was validated above (and the defaults are valid, a
        // unit test checks), so parsing cannot fail; a failure is a bug.
        let integer = |name: &str| -> i64 {
            let parsed = value(name).parse::<i64>();
            assert!(
                parsed.is_ok(),
                "validated topic config {name} does not parse"
            );
            parsed.unwrap_or_default()
        };
        let boolean = |name: &str| value(name).eq_ignore_ascii_case("true");

        let mut policies: Vec<&str> = value("cleanup.policy").split(',').map(str::trim).collect();
        policies.sort_unstable();
        let cleanup_policy = match policies.as_slice() {
            ["delete"] => CleanupPolicy::Delete,
            ["compact"] => CleanupPolicy::Compact,
            ["compact", "delete"] => CleanupPolicy::CompactDelete,
            _ => {
                return Err(format!(
                    "cleanup.policy must be delete, compact or compact,delete, got {:?}",
                    value("cleanup.policy")
                ));
            }
        };
        let min_compaction_lag_ms = integer("min.compaction.lag.ms");
        let max_compaction_lag_ms = integer("max.compaction.lag.ms");
        if min_compaction_lag_ms > max_compaction_lag_ms {
            return Err(format!(
                "conflict topic config setting min.compaction.lag.ms ({min_compaction_lag_ms}) > \
                 max.compaction.lag.ms ({max_compaction_lag_ms})"
            ));
        }
        let min_cleanable_dirty_ratio: f64 =
            value("min.cleanable.dirty.ratio").parse().unwrap_or(0.5);
        let compaction = CompactionConfig {
            clean: CleanOptions {
                delete_retention_ms: integer("delete.retention.ms"),
                min_compaction_lag_ms,
            },
            min_cleanable_dirty_ratio,
            max_compaction_lag_ms,
        };
        let timestamp_type = if value("message.timestamp.type") == "LogAppendTime" {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        };
        let difference_max_ms = integer("message.timestamp.difference.max.ms");
        let bound = |name: &str| match integer(name) {
            i64::MAX => difference_max_ms,
            set => set,
        };
        let timestamp_bounds = TimestampBounds {
            before_max_ms: bound("message.timestamp.before.max.ms"),
            after_max_ms: bound("message.timestamp.after.max.ms"),
        };
        let compression = match value("compression.type") {
            "uncompressed" => TopicCompression::Uncompressed,
            "gzip" => TopicCompression::Gzip {
                level: u32::try_from(integer("compression.gzip.level")).ok(),
            },
            "snappy" => TopicCompression::Snappy,
            "lz4" => TopicCompression::Lz4 {
                level: u32::try_from(integer("compression.lz4.level")).unwrap_or(9),
            },
            "zstd" => TopicCompression::Zstd {
                level: i32::try_from(integer("compression.zstd.level")).unwrap_or(3),
            },
            _ => TopicCompression::Producer,
        };
        if boolean("remote.storage.enable") {
            return Err(
                "Tiered Storage functionality is disabled in the broker. Topic cannot \
                        be configured with remote log storage."
                    .to_string(),
            );
        }
        let retention_ms = integer("retention.ms");
        let retention_bytes = integer("retention.bytes");
        let mut segment_ms = integer("segment.ms");
        // Kafka's maxSegmentMs: a compacted topic's active segment rolls
        // by max.compaction.lag.ms, so that its records can be cleaned.
        if cleanup_policy.compacts() {
            segment_ms = segment_ms.min(max_compaction_lag_ms);
        }
        let flush_ms = integer("flush.ms");
        let flush = if flush_ms == i64::MAX || integer("flush.messages") == 1 {
            FlushPolicy::BeforeAck
        } else {
            FlushPolicy::Interval {
                interval_ms: flush_ms,
                interval_bytes: u64::MAX,
            }
        };
        // INT configs with a lower bound of 0 or more fit in u32.
        let unsigned = |name: &str| u32::try_from(integer(name)).unwrap_or(u32::MAX);
        let log = LogConfig {
            segment_bytes: u64::from(unsigned("segment.bytes")),
            segment_ms,
            retention_bytes: u64::try_from(retention_bytes).ok(),
            retention_ms: (retention_ms >= 0).then_some(retention_ms),
            index_interval_bytes: unsigned("index.interval.bytes"),
            max_message_bytes: unsigned("max.message.bytes"),
            flush,
            ..LogConfig::default()
        };
        Ok(TopicConfig {
            cleanup_policy,
            compaction,
            timestamp_type,
            timestamp_bounds,
            compression,
            log,
            unclean_leader_election: boolean("unclean.leader.election.enable"),
            min_insync_replicas: i32::try_from(integer("min.insync.replicas")).unwrap_or(1),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// A replica opens whatever configs were committed: checked on another
    /// broker (its own dynamic defaults, its version's names), they may
    /// not pass here, and a replica refused them never opened.
    #[test]
    fn a_replica_takes_committed_configs_that_would_be_refused_here() {
        let committed = map(&[
            ("min.compaction.lag.ms", "120000"),
            ("max.compaction.lag.ms", "60000"),
            ("retention.ms", "3600000"),
            ("a.config.of.a.newer.version", "1"),
            ("segment.bytes", "not a number"),
        ]);
        assert!(TopicConfig::from_map(&committed).is_err());
        let (config, set_aside) = TopicConfig::for_replica(&committed);
        assert_eq!(set_aside.len(), 3, "{set_aside:?}");
        assert_eq!(config.compaction.clean.min_compaction_lag_ms, 120_000);
        assert_eq!(config.compaction.max_compaction_lag_ms, 120_000);
        assert_eq!(config.log.retention_ms, Some(3_600_000));
        let defaults = TopicConfig::from_map(&BTreeMap::new()).unwrap();
        assert_eq!(config.log.segment_bytes, defaults.log.segment_bytes);
        // A config refused whatever else is set goes alone.
        let (config, set_aside) = TopicConfig::for_replica(&map(&[
            ("cleanup.policy", "compact"),
            ("min.insync.replicas", "2"),
            ("remote.storage.enable", "true"),
        ]));
        assert_eq!(set_aside.len(), 1, "{set_aside:?}");
        assert_eq!(config.min_insync_replicas, 2);
        assert_eq!(config.cleanup_policy, CleanupPolicy::Compact);
        // Valid configs come through unchanged and nothing is set aside.
        let valid = map(&[("retention.ms", "1000"), ("cleanup.policy", "compact")]);
        let (config, set_aside) = TopicConfig::for_replica(&valid);
        assert!(set_aside.is_empty());
        assert_eq!(
            format!("{config:?}"),
            format!("{:?}", TopicConfig::from_map(&valid).unwrap())
        );
    }

    fn refused(pairs: &[(&str, &str)]) -> bool {
        TopicConfig::from_map(&map(pairs)).is_err()
    }

    #[test]
    fn the_table_is_sorted_and_every_default_is_valid() {
        for pair in TOPIC_CONFIGS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} out of order", pair[1].name);
        }
        for spec in TOPIC_CONFIGS {
            validate_value(spec, spec.default).unwrap();
            // Each default set explicitly parses like no setting at all.
            TopicConfig::from_map(&map(&[(spec.name, spec.default)])).unwrap();
        }
    }

    #[test]
    fn every_config_of_kafkas_documentation_is_known() {
        for name in [
            "cleanup.policy",
            "compression.gzip.level",
            "compression.lz4.level",
            "compression.type",
            "compression.zstd.level",
            "delete.retention.ms",
            "file.delete.delay.ms",
            "flush.messages",
            "flush.ms",
            "follower.replication.throttled.replicas",
            "index.interval.bytes",
            "leader.replication.throttled.replicas",
            "local.retention.bytes",
            "local.retention.ms",
            "max.compaction.lag.ms",
            "max.message.bytes",
            "message.downconversion.enable",
            "message.format.version",
            "message.timestamp.after.max.ms",
            "message.timestamp.before.max.ms",
            "message.timestamp.difference.max.ms",
            "message.timestamp.type",
            "min.cleanable.dirty.ratio",
            "min.compaction.lag.ms",
            "min.insync.replicas",
            "preallocate",
            "remote.log.copy.disable",
            "remote.log.delete.on.disable",
            "remote.storage.enable",
            "retention.bytes",
            "retention.ms",
            "segment.bytes",
            "segment.index.bytes",
            "segment.jitter.ms",
            "segment.ms",
            "unclean.leader.election.enable",
        ] {
            assert!(spec_of(name).is_some(), "{name}");
        }
        assert!(spec_of("dummy.doesntexist").is_none());
    }

    #[test]
    fn defaults_match_kafka() {
        let config = TopicConfig::from_map(&BTreeMap::new()).unwrap();
        assert_eq!(config.cleanup_policy, CleanupPolicy::Delete);
        assert_eq!(config.log.max_message_bytes, 1_048_588);
        assert_eq!(config.log.retention_ms, Some(604_800_000));
        assert_eq!(config.log.retention_bytes, None);
        assert_eq!(config.log.segment_ms, 604_800_000);
        assert_eq!(config.log.flush, FlushPolicy::BeforeAck);
        assert_eq!(config.compaction.clean.delete_retention_ms, 86_400_000);
        assert_eq!(config.compaction.clean.min_compaction_lag_ms, 0);
        assert_eq!(config.compaction.max_compaction_lag_ms, i64::MAX);
        assert_eq!(config.compaction.min_cleanable_dirty_ratio, 0.5);
        assert_eq!(config.compression, TopicCompression::Producer);
        assert!(!config.timestamp_bounds.limits());
        assert!(!config.unclean_leader_election);
        assert_eq!(config.min_insync_replicas, 1);
    }

    #[test]
    fn replication_configs_parse_and_validate() {
        let config = TopicConfig::from_map(&map(&[
            ("unclean.leader.election.enable", "TRUE"),
            ("min.insync.replicas", "2"),
        ]))
        .unwrap();
        assert!(config.unclean_leader_election);
        assert_eq!(config.min_insync_replicas, 2);
        for (name, bad) in [
            ("unclean.leader.election.enable", "yes"),
            ("min.insync.replicas", "0"),
            ("min.insync.replicas", "x"),
            ("min.insync.replicas", "2147483648"),
        ] {
            assert!(refused(&[(name, bad)]), "{name}={bad}");
        }
    }

    #[test]
    fn compaction_configs_parse() {
        let config = TopicConfig::from_map(&map(&[
            ("cleanup.policy", "delete,compact"),
            ("delete.retention.ms", "100"),
            ("min.compaction.lag.ms", "5"),
            ("max.compaction.lag.ms", "3600000"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]))
        .unwrap();
        assert_eq!(config.cleanup_policy, CleanupPolicy::CompactDelete);
        assert!(config.cleanup_policy.compacts());
        assert!(!CleanupPolicy::Delete.compacts());
        assert_eq!(config.compaction.clean.delete_retention_ms, 100);
        assert_eq!(config.compaction.clean.min_compaction_lag_ms, 5);
        assert_eq!(config.compaction.max_compaction_lag_ms, 3_600_000);
        assert_eq!(config.compaction.min_cleanable_dirty_ratio, 0.01);
        // Kafka's maxSegmentMs: compacted topics roll by the max lag.
        assert_eq!(config.log.segment_ms, 3_600_000);
        let deleting =
            TopicConfig::from_map(&map(&[("max.compaction.lag.ms", "3600000")])).unwrap();
        assert_eq!(deleting.log.segment_ms, 604_800_000);
        assert!(refused(&[("max.compaction.lag.ms", "0")]));
        assert!(refused(&[
            ("min.compaction.lag.ms", "10"),
            ("max.compaction.lag.ms", "5")
        ]));
    }

    #[test]
    fn timestamp_bounds_take_the_difference_for_unset_sides() {
        let bounds =
            |pairs: &[(&str, &str)]| TopicConfig::from_map(&map(pairs)).unwrap().timestamp_bounds;
        assert_eq!(
            bounds(&[("message.timestamp.difference.max.ms", "1000")]),
            TimestampBounds {
                before_max_ms: 1000,
                after_max_ms: 1000
            }
        );
        assert_eq!(
            bounds(&[
                ("message.timestamp.difference.max.ms", "1000"),
                ("message.timestamp.after.max.ms", "10"),
            ]),
            TimestampBounds {
                before_max_ms: 1000,
                after_max_ms: 10
            }
        );
        let limits = bounds(&[
            ("message.timestamp.before.max.ms", "100"),
            ("message.timestamp.after.max.ms", "10"),
        ]);
        assert!(limits.allows(1000, 1000));
        assert!(limits.allows(900, 1000));
        assert!(!limits.allows(899, 1000));
        assert!(limits.allows(1010, 1000));
        assert!(!limits.allows(1011, 1000));
        assert!(limits.allows(-1, 1000));
        assert!(refused(&[("message.timestamp.before.max.ms", "-1")]));
        assert!(refused(&[("message.timestamp.type", "createtime")]));
    }

    #[test]
    fn compression_codecs_and_levels_are_accepted_with_kafkas_ranges() {
        let compression =
            |pairs: &[(&str, &str)]| TopicConfig::from_map(&map(pairs)).unwrap().compression;
        assert_eq!(
            compression(&[("compression.type", "gzip")]),
            TopicCompression::Gzip { level: None }
        );
        assert_eq!(
            compression(&[
                ("compression.type", "gzip"),
                ("compression.gzip.level", "9")
            ]),
            TopicCompression::Gzip { level: Some(9) }
        );
        assert_eq!(
            compression(&[("compression.type", "lz4")]),
            TopicCompression::Lz4 { level: 9 }
        );
        assert_eq!(
            compression(&[
                ("compression.type", "zstd"),
                ("compression.zstd.level", "-5")
            ]),
            TopicCompression::Zstd { level: -5 }
        );
        assert_eq!(
            compression(&[("compression.type", "snappy")]),
            TopicCompression::Snappy
        );
        assert_eq!(
            compression(&[("compression.type", "uncompressed")]),
            TopicCompression::Uncompressed
        );
        for (name, bad) in [
            ("compression.type", "brotli"),
            ("compression.type", "none"),
            ("compression.gzip.level", "0"),
            ("compression.gzip.level", "10"),
            ("compression.lz4.level", "18"),
            ("compression.zstd.level", "23"),
            ("compression.zstd.level", "-131073"),
        ] {
            assert!(refused(&[(name, bad)]), "{name}={bad}");
        }
    }

    #[test]
    fn configs_accepted_without_effect_are_still_validated() {
        TopicConfig::from_map(&map(&[
            ("file.delete.delay.ms", "0"),
            ("flush.messages", "10"),
            ("follower.replication.throttled.replicas", "0:1,1:2"),
            ("leader.replication.throttled.replicas", "*"),
            ("local.retention.bytes", "-2"),
            ("local.retention.ms", "1000"),
            ("message.downconversion.enable", "false"),
            ("message.format.version", "2.8"),
            ("preallocate", "true"),
            ("remote.log.copy.disable", "false"),
            ("remote.log.delete.on.disable", "true"),
            ("remote.storage.enable", "false"),
            ("segment.index.bytes", "4096"),
            ("segment.jitter.ms", "100"),
        ]))
        .unwrap();
        TopicConfig::from_map(&map(&[("message.format.version", "3.0-IV1")])).unwrap();
        for (name, bad) in [
            ("file.delete.delay.ms", "-1"),
            ("flush.messages", "0"),
            ("follower.replication.throttled.replicas", "0-1"),
            ("leader.replication.throttled.replicas", "a:b"),
            ("local.retention.bytes", "-3"),
            ("message.downconversion.enable", "maybe"),
            ("message.format.version", "banana"),
            ("preallocate", "1"),
            ("segment.index.bytes", "3"),
            ("segment.jitter.ms", "-1"),
            // No tiered storage: refused as Kafka refuses it when off.
            ("remote.storage.enable", "true"),
        ] {
            assert!(refused(&[(name, bad)]), "{name}={bad}");
        }
    }

    #[test]
    fn flush_messages_one_flushes_before_every_acknowledgement() {
        let config =
            TopicConfig::from_map(&map(&[("flush.ms", "50"), ("flush.messages", "1")])).unwrap();
        assert_eq!(config.log.flush, FlushPolicy::BeforeAck);
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        assert!(refused(&[("retention.mss", "1")]));
        assert!(refused(&[("retention.ms", "soon")]));
        assert!(refused(&[("retention.ms", "-2")]));
        assert!(refused(&[("cleanup.policy", "shred")]));
        assert!(refused(&[("cleanup.policy", "compact,compact")]));
        assert!(refused(&[("delete.retention.ms", "-1")]));
        assert!(refused(&[("min.compaction.lag.ms", "x")]));
        assert!(refused(&[("segment.bytes", "13")]));
        assert!(refused(&[("max.message.bytes", "2147483648")]));
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            assert!(refused(&[("min.cleanable.dirty.ratio", bad)]), "{bad}");
        }
        let config = TopicConfig::from_map(&map(&[
            ("retention.bytes", "1000"),
            ("flush.ms", "50"),
            ("retention.ms", " 2000 "),
        ]))
        .unwrap();
        assert_eq!(config.log.retention_bytes, Some(1000));
        assert_eq!(config.log.retention_ms, Some(2000));
        assert_eq!(
            config.log.flush,
            FlushPolicy::Interval {
                interval_ms: 50,
                interval_bytes: u64::MAX
            }
        );
        // Any negative retention.bytes means no limit, as in Kafka.
        let unlimited = TopicConfig::from_map(&map(&[("retention.bytes", "-7")])).unwrap();
        assert_eq!(unlimited.log.retention_bytes, None);
    }
}
