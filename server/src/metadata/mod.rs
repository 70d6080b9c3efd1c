//! Cluster metadata: topics, partitions, their shard placement and configs.
//!
//! Held behind [`MetadataStore`], the interface the Raft controller will
//! implement later (DESIGN.md "Replication and controller"). Today's
//! implementation, [`FileMetadataStore`], keeps the metadata in memory and
//! persists every change to `<data>/cluster-metadata.json` (atomic replace)
//! before returning, so a change that returned Ok survives a restart.
//!
//! Readers take an immutable snapshot (`Arc<ClusterMetadata>`); writers are
//! serialized by a mutex. Changes are rare (admin requests), reads are on
//! every request.

pub mod topic_config;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use topic_config::TopicConfig;

/// Where one partition lives on this broker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// The shard (thread) that owns the partition's log.
    pub shard: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    /// Kafka topic id (a UUID), stable for the topic's lifetime.
    pub id: uuid::Uuid,
    pub partitions: Vec<PartitionAssignment>,
    /// Topic configs set explicitly (Kafka names, e.g. "retention.ms").
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Chosen at the first start, reported in Metadata and DescribeCluster.
    #[serde(default)]
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMetadata>,
}

impl ClusterMetadata {
    /// Partitions per shard, for balanced placement.
    fn shard_loads(&self, shard_count: usize) -> Vec<usize> {
        let mut loads = vec![0usize; shard_count];
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                if let Some(load) = loads.get_mut(partition.shard) {
                    *load += 1;
                }
            }
        }
        loads
    }

    fn place(&self, count: usize, shard_count: usize) -> Vec<PartitionAssignment> {
        let mut loads = self.shard_loads(shard_count);
        (0..count)
            .map(|_| {
                let shard = (0..shard_count)
                    .min_by_key(|&shard| (loads[shard], shard))
                    .unwrap_or(0);
                loads[shard] += 1;
                PartitionAssignment { shard }
            })
            .collect()
    }
}

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("topic {0} already exists")]
    TopicExists(String),
    /// Kafka's metric names replace '.' by '_': such names would collide.
    #[error("Topic '{name}' collides with existing topic: {existing}")]
    TopicCollision { name: String, existing: String },
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("invalid partition count {count}: {reason}")]
    InvalidPartitions { count: i32, reason: &'static str },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("could not persist cluster metadata to {path}: {source}")]
    Persist {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The metadata interface shared by all shards. See the module docs.
pub trait MetadataStore: Send + Sync {
    fn snapshot(&self) -> Arc<ClusterMetadata>;
    /// Create a topic, placing its partitions on the least loaded shards.
    /// `validate_only` checks everything and changes nothing.
    fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError>;
    fn delete_topic(&self, name: &str) -> Result<TopicMetadata, MetadataError>;
    /// Grow a topic to `total` partitions.
    fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError>;
    /// Shrink a topic back to `count` partitions: only to undo an
    /// `add_partitions` whose partitions did not open (shard/topics.rs),
    /// never as a Kafka operation (Kafka topics never shrink).
    fn remove_added_partitions(
        &self,
        name: &str,
        count: usize,
    ) -> Result<TopicMetadata, MetadataError>;
    /// Replace the topic's explicit configs.
    fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError>;
}

/// Topic names as Kafka allows them.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |reason| {
        Err(MetadataError::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if name.len() > 249 {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Partition counts above this are refused (a guard against typos that
/// would create millions of files).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

pub struct FileMetadataStore {
    path: PathBuf,
    shard_count: usize,
    current: Mutex<Arc<ClusterMetadata>>,
}

impl FileMetadataStore {
    /// Load `<data_dir>/cluster-metadata.json` (empty metadata if missing).
    /// Partitions placed on shards that no longer exist (fewer cores than
    /// before) are moved to `shard % shard_count`.
    pub fn open(data_dir: &Path, shard_count: usize) -> anyhow::Result<FileMetadataStore> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("cluster-metadata.json");
        let mut metadata: ClusterMetadata = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                anyhow::anyhow!("{} is not valid metadata: {error}", path.display())
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                ClusterMetadata::default()
            }
            Err(error) => return Err(error.into()),
        };
        for topic in metadata.topics.values_mut() {
            for partition in &mut topic.partitions {
                partition.shard %= shard_count;
            }
        }
        if metadata.cluster_id.is_empty() {
            metadata.cluster_id = uuid::Uuid::new_v4().simple().to_string();
            persist(&path, &metadata)?;
        }
        Ok(FileMetadataStore {
            path,
            shard_count,
            current: Mutex::new(Arc::new(metadata)),
        })
    }

    fn update<T>(
        &self,
        change: impl FnOnce(&mut ClusterMetadata) -> Result<(T, bool), MetadataError>,
    ) -> Result<T, MetadataError> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = ClusterMetadata::clone(&current);
        let (result, commit) = change(&mut next)?;
        if commit {
            persist(&self.path, &next)?;
            *current = Arc::new(next);
        }
        Ok(result)
    }
}

fn persist(path: &Path, metadata: &ClusterMetadata) -> Result<(), MetadataError> {
    let error = |source| MetadataError::Persist {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(metadata).map_err(|source| error(source.into()))?;
    // One writer at a time: every change persists under the store's mutex
    // (and `open` runs before the store is shared), and the data directory
    // is locked to one process; so one temporary name is enough.
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(error)?;
    file.write_all(&bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(error)?;
    }
    Ok(())
}

impl MetadataStore for FileMetadataStore {
    fn snapshot(&self) -> Arc<ClusterMetadata> {
        Arc::clone(
            &self
                .current
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(MetadataError::InvalidPartitions {
                count: partitions,
                reason: "must be 1 to 10000",
            });
        }
        TopicConfig::from_map(&configs).map_err(MetadataError::InvalidConfig)?;
        let shard_count = self.shard_count;
        self.update(|metadata| {
            if metadata.topics.contains_key(name) {
                return Err(MetadataError::TopicExists(name.to_string()));
            }
            // Checked here, under the lock, so that two topics created at
            // once cannot both pass.
            let collision_key = name.replace('.', "_");
            if let Some(existing) = metadata
                .topics
                .keys()
                .find(|existing| existing.replace('.', "_") == collision_key)
            {
                return Err(MetadataError::TopicCollision {
                    name: name.to_string(),
                    existing: existing.clone(),
                });
            }
            let topic = TopicMetadata {
                name: name.to_string(),
                id: uuid::Uuid::new_v4(),
                partitions: metadata.place(partitions as usize, shard_count),
                configs,
            };
            metadata.topics.insert(name.to_string(), topic.clone());
            Ok((topic, !validate_only))
        })
    }

    fn delete_topic(&self, name: &str) -> Result<TopicMetadata, MetadataError> {
        self.update(|metadata| match metadata.topics.remove(name) {
            Some(topic) => Ok((topic, true)),
            None => Err(MetadataError::UnknownTopic(name.to_string())),
        })
    }

    fn add_partitions(
        &self,
        name: &str,
        total: i32,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError> {
        let shard_count = self.shard_count;
        self.update(|metadata| {
            let current = match metadata.topics.get(name) {
                Some(topic) => topic.partitions.len() as i32,
                None => return Err(MetadataError::UnknownTopic(name.to_string())),
            };
            if total <= current {
                return Err(MetadataError::InvalidPartitions {
                    count: total,
                    reason: "must be more than the current partition count",
                });
            }
            if total > PARTITIONS_PER_TOPIC_MAX {
                return Err(MetadataError::InvalidPartitions {
                    count: total,
                    reason: "must be at most 10000",
                });
            }
            let added = metadata.place((total - current) as usize, shard_count);
            let Some(topic) = metadata.topics.get_mut(name) else {
                return Err(MetadataError::UnknownTopic(name.to_string()));
            };
            topic.partitions.extend(added);
            Ok((topic.clone(), !validate_only))
        })
    }

    fn remove_added_partitions(
        &self,
        name: &str,
        count: usize,
    ) -> Result<TopicMetadata, MetadataError> {
        self.update(|metadata| {
            let Some(topic) = metadata.topics.get_mut(name) else {
                return Err(MetadataError::UnknownTopic(name.to_string()));
            };
            assert!(count >= 1, "a topic keeps at least one partition");
            topic.partitions.truncate(count);
            Ok((topic.clone(), true))
        })
    }

    fn set_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMetadata, MetadataError> {
        TopicConfig::from_map(&configs).map_err(MetadataError::InvalidConfig)?;
        self.update(|metadata| {
            let Some(topic) = metadata.topics.get_mut(name) else {
                return Err(MetadataError::UnknownTopic(name.to_string()));
            };
            topic.configs = configs;
            Ok((topic.clone(), !validate_only))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store(name: &str) -> (FileMetadataStore, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("sluice-metadata-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (FileMetadataStore::open(&dir, 2).unwrap(), dir)
    }

    #[test]
    fn names_that_collide_once_dots_become_underscores_are_refused() {
        let (store, dir) = store("collide");
        store
            .create_topic("a.b", 1, BTreeMap::new(), false)
            .unwrap();
        let error = store
            .create_topic("a_b", 1, BTreeMap::new(), false)
            .unwrap_err();
        assert!(
            matches!(&error, MetadataError::TopicCollision { existing, .. } if existing == "a.b"),
            "{error}"
        );
        assert!(matches!(
            store.create_topic("a.b", 1, BTreeMap::new(), false),
            Err(MetadataError::TopicExists(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn added_partitions_are_removed_durably_when_undone() {
        let (store, dir) = store("undo-add");
        store.create_topic("t", 2, BTreeMap::new(), false).unwrap();
        store.add_partitions("t", 5, false).unwrap();
        store.remove_added_partitions("t", 2).unwrap();
        assert_eq!(store.snapshot().topics["t"].partitions.len(), 2);
        let reopened = FileMetadataStore::open(&dir, 2).unwrap();
        assert_eq!(reopened.snapshot().topics["t"].partitions.len(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }
}
