//! Topic configs: the Kafka names Sluice understands, their defaults, their
//! validation, and how they map onto the engine's `LogConfig`.
//!
//! Unknown names and invalid values are errors (INVALID_CONFIG at the edge):
//! nothing is created or changed with a config the broker would ignore.

use std::collections::BTreeMap;

use sluice_engine::{CleanOptions, FlushPolicy, LogConfig};

/// Every supported topic config: (name, default value as Kafka prints it).
pub const TOPIC_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("delete.retention.ms", "86400000"),
    ("flush.ms", "9223372036854775807"),
    ("index.interval.bytes", "4096"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("min.insync.replicas", "1"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
    ("unclean.leader.election.enable", "false"),
];

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// A topic's effective configuration (explicit values over defaults).
#[derive(Clone, Debug)]
pub struct TopicConfig {
    pub cleanup_policy: CleanupPolicy,
    pub compaction: CompactionConfig,
    pub timestamp_type: TimestampType,
    pub log: LogConfig,
    /// unclean.leader.election.enable: with no active ISR member, the
    /// controller may elect an out-of-sync replica (losing data).
    pub unclean_leader_election: bool,
    /// min.insync.replicas: acks=all needs at least this many ISR members.
    pub min_insync_replicas: i32,
}

impl TopicConfig {
    /// Parse explicit configs; an unknown name or a bad value is an error
    /// naming it.
    pub fn from_map(configs: &BTreeMap<String, String>) -> Result<TopicConfig, String> {
        let value = |name: &str| -> &str {
            configs
                .get(name)
                .map(String::as_str)
                .unwrap_or_else(|| default_of(name).unwrap_or(""))
        };
        for name in configs.keys() {
            if default_of(name).is_none() {
                return Err(format!("unknown or unsupported topic config {name:?}"));
            }
        }
        let integer = |name: &str, minimum: i64| -> Result<i64, String> {
            let text = value(name);
            let parsed: i64 = text
                .parse()
                .map_err(|_| format!("{name} must be an integer, got {text:?}"))?;
            if parsed < minimum {
                return Err(format!("{name} must be at least {minimum}, got {parsed}"));
            }
            Ok(parsed)
        };
        // A LIST config: "compact,delete" in any order, no duplicates.
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
        let delete_retention_ms = integer("delete.retention.ms", 0)?;
        let min_compaction_lag_ms = integer("min.compaction.lag.ms", 0)?;
        let ratio_text = value("min.cleanable.dirty.ratio");
        let min_cleanable_dirty_ratio: f64 = ratio_text
            .parse()
            .ok()
            .filter(|ratio: &f64| (0.0..=1.0).contains(ratio))
            .ok_or_else(|| {
                format!("min.cleanable.dirty.ratio must be a number in [0, 1], got {ratio_text:?}")
            })?;
        let compaction = CompactionConfig {
            clean: CleanOptions {
                delete_retention_ms,
                min_compaction_lag_ms,
            },
            min_cleanable_dirty_ratio,
        };
        let timestamp_type = match value("message.timestamp.type") {
            "CreateTime" => TimestampType::CreateTime,
            "LogAppendTime" => TimestampType::LogAppendTime,
            other => {
                return Err(format!(
                    "message.timestamp.type must be CreateTime or LogAppendTime, got {other:?}"
                ));
            }
        };
        // Kafka recompresses batches whose codec differs from the topic's;
        // Sluice stores batches as the producer compressed them.
        match value("compression.type") {
            "producer" => {}
            codec @ ("uncompressed" | "gzip" | "snappy" | "lz4" | "zstd") => {
                return Err(format!(
                    "compression.type {codec} is not supported: batches are stored as the \
                     producer compressed them (compression.type producer); set the codec on \
                     the producer instead"
                ));
            }
            other => {
                return Err(format!(
                    "compression.type must be producer, uncompressed, gzip, snappy, lz4 or zstd, \
                     got {other:?}"
                ));
            }
        }
        let retention_ms = integer("retention.ms", -1)?;
        let retention_bytes = integer("retention.bytes", -1)?;
        let segment_bytes = integer("segment.bytes", 14)?;
        let segment_ms = integer("segment.ms", 1)?;
        let max_message_bytes = integer("max.message.bytes", 0)?;
        let index_interval_bytes = integer("index.interval.bytes", 0)?;
        let flush_ms = integer("flush.ms", 0)?;
        let max_message_bytes = u32::try_from(max_message_bytes)
            .map_err(|_| "max.message.bytes is too large".to_string())?;
        let index_interval_bytes = u32::try_from(index_interval_bytes)
            .map_err(|_| "index.interval.bytes is too large".to_string())?;
        let unclean_leader_election = match value("unclean.leader.election.enable") {
            "true" => true,
            "false" => false,
            other => {
                return Err(format!(
                    "unclean.leader.election.enable must be true or false, got {other:?}"
                ));
            }
        };
        let min_insync_replicas = i32::try_from(integer("min.insync.replicas", 1)?)
            .map_err(|_| "min.insync.replicas is too large".to_string())?;
        let flush = if flush_ms == i64::MAX {
            FlushPolicy::BeforeAck
        } else {
            FlushPolicy::Interval {
                interval_ms: flush_ms,
                interval_bytes: u64::MAX,
            }
        };
        let log = LogConfig {
            segment_bytes: segment_bytes as u64,
            segment_ms,
            retention_bytes: (retention_bytes >= 0).then_some(retention_bytes as u64),
            retention_ms: (retention_ms >= 0).then_some(retention_ms),
            index_interval_bytes,
            max_message_bytes,
            flush,
            ..LogConfig::default()
        };
        Ok(TopicConfig {
            cleanup_policy,
            compaction,
            timestamp_type,
            log,
            unclean_leader_election,
            min_insync_replicas,
        })
    }
}

pub fn default_of(name: &str) -> Option<&'static str> {
    TOPIC_CONFIG_DEFAULTS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, default)| *default)
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

    #[test]
    fn defaults_match_kafka() {
        let config = TopicConfig::from_map(&BTreeMap::new()).unwrap();
        assert_eq!(config.cleanup_policy, CleanupPolicy::Delete);
        assert_eq!(config.log.max_message_bytes, 1_048_588);
        assert_eq!(config.log.retention_ms, Some(604_800_000));
        assert_eq!(config.log.retention_bytes, None);
        assert_eq!(config.log.flush, FlushPolicy::BeforeAck);
        assert_eq!(config.compaction.clean.delete_retention_ms, 86_400_000);
        assert_eq!(config.compaction.clean.min_compaction_lag_ms, 0);
        assert_eq!(config.compaction.min_cleanable_dirty_ratio, 0.5);
        assert!(!config.unclean_leader_election);
        assert_eq!(config.min_insync_replicas, 1);
    }

    #[test]
    fn replication_configs_parse_and_validate() {
        let config = TopicConfig::from_map(&map(&[
            ("unclean.leader.election.enable", "true"),
            ("min.insync.replicas", "2"),
        ]))
        .unwrap();
        assert!(config.unclean_leader_election);
        assert_eq!(config.min_insync_replicas, 2);
        for (name, bad) in [
            ("unclean.leader.election.enable", "yes"),
            ("min.insync.replicas", "0"),
            ("min.insync.replicas", "x"),
        ] {
            assert!(
                TopicConfig::from_map(&map(&[(name, bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn compaction_configs_parse() {
        let config = TopicConfig::from_map(&map(&[
            ("cleanup.policy", "delete,compact"),
            ("delete.retention.ms", "100"),
            ("min.compaction.lag.ms", "5"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ]))
        .unwrap();
        assert_eq!(config.cleanup_policy, CleanupPolicy::CompactDelete);
        assert!(config.cleanup_policy.compacts());
        assert!(!CleanupPolicy::Delete.compacts());
        assert_eq!(config.compaction.clean.delete_retention_ms, 100);
        assert_eq!(config.compaction.clean.min_compaction_lag_ms, 5);
        assert_eq!(config.compaction.min_cleanable_dirty_ratio, 0.01);
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        assert!(TopicConfig::from_map(&map(&[("retention.mss", "1")])).is_err());
        assert!(TopicConfig::from_map(&map(&[("retention.ms", "soon")])).is_err());
        assert!(TopicConfig::from_map(&map(&[("retention.ms", "-2")])).is_err());
        assert!(TopicConfig::from_map(&map(&[("cleanup.policy", "shred")])).is_err());
        assert!(TopicConfig::from_map(&map(&[("cleanup.policy", "compact,compact")])).is_err());
        assert!(TopicConfig::from_map(&map(&[("delete.retention.ms", "-1")])).is_err());
        assert!(TopicConfig::from_map(&map(&[("min.compaction.lag.ms", "x")])).is_err());
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            assert!(
                TopicConfig::from_map(&map(&[("min.cleanable.dirty.ratio", bad)])).is_err(),
                "{bad}"
            );
        }
        let config =
            TopicConfig::from_map(&map(&[("retention.bytes", "1000"), ("flush.ms", "50")]))
                .unwrap();
        assert_eq!(config.log.retention_bytes, Some(1000));
        assert_eq!(
            config.log.flush,
            FlushPolicy::Interval {
                interval_ms: 50,
                interval_bytes: u64::MAX
            }
        );
    }
}
