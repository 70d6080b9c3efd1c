//! Thread-per-core shards.
//!
//! One shard per core: an OS thread pinned to its core running its own compio
//! runtime (one io_uring ring), its own group-commit `Committer`, the logs of
//! the partitions placed on it, and its own listener on the shared port
//! (SO_REUSEPORT: the kernel spreads connections over shards).
//!
//! Shards share nothing mutable on the hot path. A connection's requests are
//! decoded on the connection's shard; work for a partition is sent to the
//! owning shard with [`Shards::call`] (a closure through a bounded MPSC inbox)
//! and the answer comes back on a oneshot. Record data crosses as `Bytes`
//! (reference counted, never copied).

pub mod cleaner;
pub mod notify;
pub mod partition;
pub mod producer_state;
pub mod topics;

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use futures_util::future::LocalBoxFuture;
use sluice_engine::Committer;
use sluice_engine::io::uring::UringIo;

use crate::cli::BrokerConfig;
use crate::metadata::MetadataStore;
pub use partition::{PartitionReplica, TopicPartition};

/// Index of a shard (and of its thread and core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// Work sent to a shard: run on its thread, with access to its state.
type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>;

/// Inbox capacity per shard: senders wait (backpressure) beyond it.
const INBOX_CAPACITY: usize = 4096;

/// The handles every shard holds to reach every other shard.
pub struct Shards {
    inboxes: Vec<flume::Sender<Job>>,
}

#[derive(Debug, thiserror::Error)]
#[error("shard {0:?} is shutting down")]
pub struct ShardGone(pub ShardId);

impl Shards {
    /// Create the inboxes; returns the router and each shard's receiver.
    pub fn new(count: usize) -> (Arc<Shards>, Vec<flume::Receiver<Job>>) {
        let (senders, receivers) = (0..count).map(|_| flume::bounded(INBOX_CAPACITY)).unzip();
        (Arc::new(Shards { inboxes: senders }), receivers)
    }

    pub fn count(&self) -> usize {
        self.inboxes.len()
    }

    /// Run `work` on `shard` and return its result.
    pub async fn call<R, F, W>(&self, shard: ShardId, work: W) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: Future<Output = R> + 'static,
        W: FnOnce(Rc<Shard>) -> F + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move |target| {
            Box::pin(async move {
                let _ = sender.send(work(target).await);
            })
        });
        let inbox = self.inboxes.get(shard.0).ok_or(ShardGone(shard))?;
        inbox.send_async(job).await.map_err(|_| ShardGone(shard))?;
        receiver.await.map_err(|_| ShardGone(shard))
    }
}

/// One shard's state. Lives on its thread only (`Rc`).
pub struct Shard {
    pub id: ShardId,
    pub io: UringIo,
    pub committer: Committer<UringIo>,
    pub config: Arc<BrokerConfig>,
    pub shards: Arc<Shards>,
    pub metadata: Arc<dyn MetadataStore>,
    /// Partitions owned by this shard.
    pub partitions: RefCell<HashMap<TopicPartition, Rc<PartitionReplica>>>,
    /// The consumer groups coordinated by this shard (group/mod.rs).
    pub groups: crate::group::Coordinator,
}

impl Shard {
    pub fn partition(&self, topic_partition: &TopicPartition) -> Option<Rc<PartitionReplica>> {
        self.partitions.borrow().get(topic_partition).cloned()
    }

    /// Open the partitions that the metadata places on this shard and are
    /// not open yet (startup, topic creation, added partitions).
    pub async fn open_assigned_partitions(self: &Rc<Self>) -> anyhow::Result<()> {
        let metadata = self.metadata.snapshot();
        for topic in metadata.topics.values() {
            for (index, assignment) in topic.partitions.iter().enumerate() {
                if assignment.shard != self.id.0 {
                    continue;
                }
                let topic_partition = TopicPartition::new(&topic.name, index as i32);
                if self.partitions.borrow().contains_key(&topic_partition) {
                    continue;
                }
                let replica =
                    Rc::new(PartitionReplica::open(self, topic, topic_partition.clone()).await?);
                self.partitions
                    .borrow_mut()
                    .insert(topic_partition, Rc::clone(&replica));
                if topic.name == crate::group::OFFSETS_TOPIC {
                    crate::group::load_partition(self, &replica).await?;
                }
            }
        }
        Ok(())
    }

    /// Close and forget the partitions of `topic` on this shard, removing
    /// their directories (DeleteTopics).
    pub async fn remove_topic(self: &Rc<Self>, topic: &str) -> anyhow::Result<()> {
        let removed: Vec<Rc<PartitionReplica>> = {
            let mut partitions = self.partitions.borrow_mut();
            let keys: Vec<TopicPartition> = partitions
                .keys()
                .filter(|key| key.topic.as_ref() == topic)
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|key| partitions.remove(key))
                .collect()
        };
        for replica in removed {
            replica.delete().await?;
        }
        Ok(())
    }

    /// Re-apply topic configs to open logs (AlterConfigs).
    pub fn apply_topic_config(&self, topic: &str, config: &crate::metadata::TopicConfig) {
        for (key, replica) in self.partitions.borrow().iter() {
            if key.topic.as_ref() == topic {
                replica.set_config(config.clone());
            }
        }
    }

    /// Close every log: flush, write indexes and checkpoints.
    pub async fn close_all(&self) {
        let partitions: Vec<Rc<PartitionReplica>> =
            self.partitions.borrow().values().cloned().collect();
        for replica in partitions {
            if let Err(error) = replica.log.close().await {
                tracing::error!(partition = %replica.topic_partition, %error, "closing a log failed");
            }
        }
    }
}
