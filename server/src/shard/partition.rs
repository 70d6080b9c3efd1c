//! A partition replica on its owning shard: the log plus the state the
//! broker keeps next to it (topic config, idempotent producer state).

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use sluice_engine::Log;
use sluice_engine::io::uring::UringIo;

use crate::metadata::{TopicConfig, TopicMetadata};
use crate::shard::Shard;

/// A topic name and partition index. The name is shared (`Arc<str>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }

    /// `<data>/<topic>-<partition>`, as Kafka lays out log directories.
    pub fn dir(&self, data_dir: &std::path::Path) -> PathBuf {
        data_dir.join(format!("{}-{}", self.topic, self.partition))
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}-{}", self.topic, self.partition)
    }
}

pub struct PartitionReplica {
    pub topic_partition: TopicPartition,
    pub log: Log<UringIo>,
    pub config: RefCell<TopicConfig>,
}

impl PartitionReplica {
    pub async fn open(
        shard: &Rc<Shard>,
        topic: &TopicMetadata,
        topic_partition: TopicPartition,
    ) -> anyhow::Result<PartitionReplica> {
        let config = TopicConfig::from_map(&topic.configs).map_err(anyhow::Error::msg)?;
        let dir = topic_partition.dir(&shard.config.data_dir);
        let log = Log::open(shard.io, dir, config.log.clone(), &shard.committer).await?;
        tracing::debug!(partition = %topic_partition, shard = shard.id.0, end = %log.log_end_offset(), "opened partition");
        Ok(PartitionReplica {
            topic_partition,
            log,
            config: RefCell::new(config),
        })
    }

    pub fn set_config(&self, config: TopicConfig) {
        self.log.set_config(config.log.clone());
        *self.config.borrow_mut() = config;
    }

    /// Close the log and remove its directory.
    pub async fn delete(&self) -> anyhow::Result<()> {
        let _ = self.log.close().await;
        let dir = self.log.dir().to_path_buf();
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
