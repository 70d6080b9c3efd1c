//! A partition replica on its owning shard: the log plus the state the
//! broker keeps next to it (topic config, idempotent producer state).

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use sluice_engine::io::uring::UringIo;
use sluice_engine::{AppendError, LeaderEpoch, Log, Offset, TimestampMs};

use crate::metadata::{TopicConfig, TopicMetadata};
use crate::shard::Shard;
use crate::shard::notify::DurableWatch;

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
    /// Wakes fetches waiting for new durable data (shard/notify.rs).
    pub durable: Rc<DurableWatch>,
    /// Idempotent producers' sequences (shard/producer_state.rs).
    pub producers: RefCell<crate::shard::producer_state::ProducerStateTable>,
}

/// An accepted append made through [`PartitionReplica::append`]: like the
/// engine's `Appended`, but its completion also wakes waiting fetches.
#[must_use = "an append is not durable until its completion resolves"]
pub struct ReplicaAppend {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker time used for the append (LogAppendTime topics).
    pub append_time: TimestampMs,
    /// Resolves `Ok` once the batch is durable (as the engine's completion).
    pub completion: LocalBoxFuture<'static, Result<(), AppendError>>,
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
        let producers =
            crate::shard::producer_state::ProducerStateTable::recover_at_open(&log).await;
        Ok(PartitionReplica {
            topic_partition,
            log,
            config: RefCell::new(config),
            durable: Rc::new(DurableWatch::new()),
            producers: RefCell::new(producers),
        })
    }

    /// Append to the log (see `Log::append`) and wake the fetches waiting on
    /// this partition once the append is durable. The produce path should
    /// append through this rather than `self.log.append`, so that long-poll
    /// fetches answer as soon as the data is visible.
    pub fn append(
        &self,
        records: &Bytes,
        epoch: LeaderEpoch,
    ) -> Result<ReplicaAppend, AppendError> {
        let appended = self.log.append(records, epoch)?;
        let end = appended.last_offset.plus(1);
        let engine_completion = appended.completion;
        let log = self.log.clone();
        let watch = Rc::clone(&self.durable);
        let completion = Box::pin(async move {
            let result = engine_completion.await;
            if log.durable_end_offset() >= end {
                watch.notify_from_append();
            } else if result.is_ok() {
                // FlushPolicy::Interval acknowledges before the flush: wake
                // the waiters when the committer gets there.
                notify_when_durable(log, watch, end);
            }
            result
        });
        Ok(ReplicaAppend {
            base_offset: appended.base_offset,
            last_offset: appended.last_offset,
            append_time: appended.append_time,
            completion,
        })
    }

    /// Wake the fetches waiting on this partition (new durable data, or a
    /// change such as truncation that they must re-read for).
    pub fn notify_durable(&self) {
        self.durable.notify_from_append();
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

/// Poll the log's durable end until it reaches `end`, then notify. One poller
/// per partition at a time (the watch remembers the furthest target); it
/// stops when the partition is dropped, its log poisoned or truncated.
fn notify_when_durable(log: Log<UringIo>, watch: Rc<DurableWatch>, end: Offset) {
    if !watch.raise_poll_target(end.value()) {
        return;
    }
    compio::runtime::spawn(async move {
        loop {
            compio::time::sleep(INTERVAL_FLUSH_POLL).await;
            // Stop when the target is reached, or can no longer be: the
            // replica is gone (only the poller holds the watch), the log is
            // poisoned or was truncated below it. Waiters re-read either way.
            let target = watch.poll_target();
            if log.durable_end_offset().value() >= target
                || Rc::strong_count(&watch) == 1
                || log.is_poisoned()
                || log.log_end_offset().value() < target
            {
                watch.finish_polling();
                watch.notify_from_append();
                return;
            }
        }
    })
    .detach();
}

/// How often [`notify_when_durable`] looks at the durable end.
const INTERVAL_FLUSH_POLL: std::time::Duration = std::time::Duration::from_millis(5);
