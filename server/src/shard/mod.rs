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
//!
//! A shard's [`PartitionTable`] holds its open partitions and the opens in
//! flight: a partition is opened once, however many callers want it at the
//! same time (they await the same open). On a clean stop
//! ([`Shard::close_all`]) the shard first stops its background work (group
//! timers, the log cleaner) and waits for what runs, then closes its logs.

pub mod cleaner;
pub mod follower;
pub mod notify;
pub mod orphans;
pub mod partition;
pub mod producer_state;
pub mod tail_replay;
pub mod topics;
pub mod txn_index;
pub mod txn_state;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared, join_all};
use sluice_engine::Committer;
use sluice_engine::io::Io;
use sluice_engine::io::uring::UringIo;

use crate::cli::BrokerConfig;
use crate::metadata::{Metadata, TopicMetadata};
pub use partition::{
    PartitionReplica, ReplicaAppendError, ReplicaRole, ReplicaState, TopicPartition,
};

/// Index of a shard (and of its thread and core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// Work sent to a shard: run on its thread, with access to its state.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>;

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
        let shards = Shards { inboxes: senders };
        (Arc::new(shards), receivers)
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
        let receiver = self.post(shard, work).await?;
        receiver.await.map_err(|_| ShardGone(shard))
    }
}

impl Shards {
    /// Queue `work` on `shard` and return, once queued, the receiver of its
    /// result. Jobs posted one after another by one task start on the
    /// target in that order (the inbox is FIFO and each job is spawned as
    /// it is taken), which `Shards::call` from concurrent tasks does not
    /// promise.
    pub async fn post<R, F, W>(
        &self,
        shard: ShardId,
        work: W,
    ) -> Result<oneshot::Receiver<R>, ShardGone>
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
        Ok(receiver)
    }
}

/// Run the jobs other shards post to `shard`, on its thread, until every
/// sender is gone. Each job is spawned as it is taken, and compio's
/// executor gives a task its first poll in spawn order (new tasks join the
/// tail of its run queue), so jobs start in the order they were posted:
/// what [`Shards::post`] promises (the follower's appends rely on it,
/// replication/follower.rs).
/// `posted_jobs_start_in_the_order_they_were_posted` pins that property.
pub fn serve_inbox(shard: &Rc<Shard>, inbox: flume::Receiver<Job>) {
    let shard = Rc::clone(shard);
    compio::runtime::spawn(async move {
        while let Ok(job) = inbox.recv_async().await {
            compio::runtime::spawn(job(Rc::clone(&shard))).detach();
        }
    })
    .detach();
}

/// One shard's state. Lives on its thread only (`Rc`).
pub struct Shard {
    pub id: ShardId,
    pub io: UringIo,
    pub committer: Committer<UringIo>,
    pub config: Arc<BrokerConfig>,
    pub shards: Arc<Shards>,
    pub metadata: Arc<Metadata>,
    /// Partitions owned by this shard, their opens in flight, and whether
    /// the shard is closing ([`PartitionTable`]).
    pub partitions: PartitionTable,
    /// The consumer groups coordinated by this shard (group/mod.rs).
    pub groups: crate::group::Coordinator,
    /// This shard's replication connections to follower brokers.
    pub replication_links: crate::replication::link::Links,
}

/// Opens of one shard in flight at once, per topic: bounds the open files
/// and io_uring submissions a 10,000-partition topic starts together.
const OPENS_IN_FLIGHT_MAX: usize = 64;

/// Partition removals of one shard in flight at once
/// ([`Shard::remove_partitions`]), for the same reason.
const REMOVALS_IN_FLIGHT_MAX: usize = 64;

/// How long a failed load of a coordinator partition (groups or
/// transactions) waits before it is tried again.
pub const COORDINATOR_LOAD_RETRY: Duration = Duration::from_secs(1);

/// How long a clean stop waits for background work (group timers, a log
/// cleaner pass, opens in flight) before it closes the logs anyway.
const CLOSE_WAIT_MAX: Duration = Duration::from_secs(30);

impl Shard {
    /// The open replica of `topic_partition` on this shard. Callers that
    /// look up many partitions share one `Arc<str>` name per topic (clone
    /// the `TopicPartition`'s name, never `TopicPartition::new` per
    /// partition): then a lookup hashes the name once per topic and indexes
    /// a vector for the rest ([`PartitionTable`]).
    pub fn partition(&self, topic_partition: &TopicPartition) -> Option<Rc<PartitionReplica>> {
        self.partitions.get(topic_partition)
    }

    /// [`Shard::partition`] of the topic with id `topic_id` only. Work that
    /// resolved its topic before an await (a long-polling fetch) looks its
    /// replica up with this: the topic may have been deleted and created
    /// again under its name meanwhile, and the new topic's replica is not
    /// the one the request named.
    pub fn partition_of(
        &self,
        topic_partition: &TopicPartition,
        topic_id: uuid::Uuid,
    ) -> Option<Rc<PartitionReplica>> {
        self.partition(topic_partition)
            .filter(|replica| replica.topic_id == topic_id)
    }

    /// The open partitions of topic `name` on this shard, to index by
    /// partition number ([`TopicReplicas::partition`]): one hash per topic.
    pub fn topic(&self, name: &str) -> Option<Rc<TopicReplicas>> {
        self.partitions.topic(name)
    }

    /// Open the partitions of `topic` from index `first` on that the
    /// metadata places on this shard (topic creation, added partitions).
    /// Opening an open partition does nothing; one already opening is
    /// awaited ([`Shard::open_partition`]). Every partition is tried, also
    /// after one failed: `Err` lists those that did not open (each is left
    /// unrecorded, to be tried again); all the others are open. A failure
    /// that ended the opens of the whole topic left its siblings unknown
    /// to the metadata follower, which never applied their later roles.
    pub async fn open_topic_partitions(
        self: &Rc<Self>,
        topic: &TopicMetadata,
        first: usize,
    ) -> Result<(), Vec<OpenError>> {
        let indexes: Vec<usize> = topic
            .partitions
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(_, partition)| partition.local_shard == Some(self.id.0))
            .map(|(index, _)| index)
            .collect();
        let topic = Rc::new(topic.clone());
        let mut failures = Vec::new();
        for chunk in indexes.chunks(OPENS_IN_FLIGHT_MAX) {
            let opens = chunk
                .iter()
                .map(|&index| self.open_partition(&topic, index as i32));
            failures.extend(join_all(opens).await.into_iter().filter_map(Result::err));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }

    /// Open partition `index` of `topic` on this shard, once: while it is
    /// opening, every caller awaits the same open (a spawned task, so the
    /// open completes even if its callers go away), which records the
    /// partition before any of them resumes. An open that failed leaves
    /// nothing recorded; the next call tries again.
    pub async fn open_partition(
        self: &Rc<Self>,
        topic: &Rc<TopicMetadata>,
        index: i32,
    ) -> Result<Rc<PartitionReplica>, OpenError> {
        let topic_partition = TopicPartition::new(&topic.name, index);
        if let Some(replica) = self.partition(&topic_partition) {
            if replica.topic_id == topic.id {
                return Ok(replica);
            }
            // A replica of a deleted topic of that name that no removal
            // reached: never served as the new topic's. It goes first.
            tracing::warn!(partition = %topic_partition, stale_topic_id = %replica.topic_id,
                topic_id = %topic.id, "removing a replica of a deleted topic still open under the name");
            drop(replica);
            self.remove_partitions(&topic.name, [index])
                .await
                .map_err(|error| OpenError {
                    partition: topic_partition.clone(),
                    reason: format!("removing the replica of a deleted topic: {error:#}"),
                })?;
        }
        let in_flight = self
            .partitions
            .opening
            .borrow()
            .get(&topic_partition)
            .cloned();
        let open = match in_flight {
            Some(open) => open,
            None => {
                if self.partitions.is_closing() {
                    return Err(OpenError {
                        partition: topic_partition,
                        reason: format!("shard {} is shutting down", self.id.0),
                    });
                }
                let (sender, receiver) = oneshot::channel();
                let open = receiver.shared();
                self.partitions
                    .opening
                    .borrow_mut()
                    .insert(topic_partition.clone(), open.clone());
                let shard = Rc::clone(self);
                let topic = Rc::clone(topic);
                compio::runtime::spawn(async move {
                    let result = open_and_load(&shard, &topic, topic_partition.clone()).await;
                    // Record and leave the in-flight table in one step (no
                    // await between): a caller sees the partition either
                    // opening or open, never neither.
                    shard
                        .partitions
                        .opening
                        .borrow_mut()
                        .remove(&topic_partition);
                    if let Ok(replica) = &result {
                        shard.partitions.insert(topic_partition, Rc::clone(replica));
                    }
                    let _ = sender.send(result);
                })
                .detach();
                open
            }
        };
        match open.await {
            Ok(result) => result,
            Err(oneshot::Canceled) => Err(OpenError {
                partition: TopicPartition::new(&topic.name, index),
                reason: "the open was abandoned (the shard is stopping)".to_string(),
            }),
        }
    }

    /// Close the partitions `indexes` of `topic` that live on this shard and
    /// remove their directories, open or not (DeleteTopics, and the undo of
    /// a creation that failed part way). Opens in flight are awaited first.
    /// Up to [`REMOVALS_IN_FLIGHT_MAX`] removals run at once: each closes
    /// its log and syncs the data directory, and one after the other a
    /// 10,000-partition topic took minutes to delete. Once a removal
    /// closed an open replica, the memory it freed is returned to the
    /// kernel ([`crate::alloc::release_free_memory_soon`]).
    pub async fn remove_partitions(
        self: &Rc<Self>,
        topic: &str,
        indexes: impl IntoIterator<Item = i32>,
    ) -> anyhow::Result<()> {
        let indexes: Vec<i32> = indexes.into_iter().collect();
        let mut first_error = None;
        let mut closed_any = false;
        for chunk in indexes.chunks(REMOVALS_IN_FLIGHT_MAX) {
            let mut removals = Vec::with_capacity(chunk.len());
            for &index in chunk {
                let topic_partition = TopicPartition::new(topic, index);
                let in_flight = self
                    .partitions
                    .opening
                    .borrow()
                    .get(&topic_partition)
                    .cloned();
                if let Some(open) = in_flight {
                    let _ = open.await;
                }
                let removed = self.partitions.remove(&topic_partition);
                // A coordinator partition removed while it leads (a
                // reassignment that moves it away changes its leader and
                // removes it in one record) is unloaded here, as its
                // leadership never ends through `apply_replica_view`.
                if topic == crate::group::OFFSETS_TOPIC {
                    crate::group::unload_partition(self, index);
                }
                if topic == crate::txn::TRANSACTION_STATE_TOPIC {
                    crate::txn::coordinator::unload(index);
                }
                closed_any |= removed.is_some();
                removals.push(async move {
                    let outcome = match removed {
                        Some(replica) => {
                            // Long polls waiting on it re-check, find it
                            // gone and let it go.
                            replica.notify_high_watermark();
                            replica.delete().await
                        }
                        None => partition::remove_partition_dir(
                            &self.io,
                            &topic_partition.dir(&self.config.data_dir),
                        )
                        .await
                        .map_err(anyhow::Error::from),
                    };
                    (topic_partition, outcome)
                });
            }
            for (topic_partition, outcome) in join_all(removals).await {
                if let Err(error) = outcome {
                    tracing::error!(partition = %topic_partition, %error, "removing a partition failed");
                    first_error.get_or_insert(error);
                }
            }
        }
        if closed_any {
            crate::alloc::release_free_memory_soon();
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Apply a newer view's role and leader epoch to the open replica of
    /// `topic_partition` (shard/follower.rs, before it publishes the view).
    /// False when the replica is not open on this shard.
    pub fn set_replica_state(
        self: &Rc<Self>,
        topic_partition: &TopicPartition,
        state: ReplicaState,
    ) -> bool {
        match self.partition(topic_partition) {
            Some(replica) => {
                let node_id = self.metadata.snapshot().node_id;
                if replica.set_state(node_id, state, self.io.now_ms())
                    == partition::ViewChange::StartedLeading
                {
                    crate::replication::leader::start(self, &replica);
                }
                true
            }
            None => false,
        }
    }

    /// Apply a view's state and assignment to an open replica. A replica
    /// that starts leading (its idempotent producer table already holds
    /// the previous leader's batches, fed as they were replicated) starts
    /// pushing to its followers, and, for
    /// `__consumer_offsets`, loads its groups; one that stops leading
    /// drops them. False when the replica is not open here.
    pub async fn apply_replica_view(
        self: &Rc<Self>,
        topic_partition: &TopicPartition,
        state: ReplicaState,
        assignment: partition::Assignment,
    ) -> bool {
        let Some(replica) = self.partition(topic_partition) else {
            return false;
        };
        let node_id = self.metadata.snapshot().node_id;
        let was_leader = replica.state().is_leader();
        let change = replica.apply_view(node_id, state, assignment, self.io.now_ms());
        let started_leading = change == partition::ViewChange::StartedLeading;
        if let partition::ViewChange::NewFollowers(epoch, pushers) = change {
            crate::replication::leader::start_pushers(self, &replica, epoch, pushers);
        }
        let offsets = topic_partition.topic.as_ref() == crate::group::OFFSETS_TOPIC;
        if started_leading {
            // The producer table is current: a follower feeds it with every
            // replicated batch (txn_state::observe_replicated).
            crate::replication::leader::start(self, &replica);
            if offsets {
                crate::group::unload_partition(self, topic_partition.partition);
                let partition = topic_partition.partition;
                let epoch = replica.state().leader_epoch;
                let unloads = self.groups.unloads_of(partition);
                let ticket = crate::group::begin_load(self, partition);
                let shard = Rc::clone(self);
                let replica = Rc::clone(&replica);
                compio::runtime::spawn(async move {
                    let mut ticket = ticket;
                    // A leadership that began during a follower's
                    // truncation reads the log as the cut leaves it.
                    replica.rewrite_done().await;
                    // A failed load (a read error) is tried again while
                    // this replica still leads in the same epoch and was
                    // not unloaded meanwhile: left failed, the groups of
                    // the partition answered COORDINATOR_LOAD_IN_PROGRESS
                    // until the leadership moved.
                    while let Err(error) =
                        crate::group::load_partition(&shard, &replica, ticket).await
                    {
                        tracing::error!(partition = %replica.topic_partition, error = format!("{error:#}"), "loading the groups failed; trying again");
                        compio::time::sleep(COORDINATOR_LOAD_RETRY).await;
                        let state = replica.state();
                        if !state.is_leader()
                            || state.leader_epoch != epoch
                            || shard.groups.unloads_of(partition) != unloads
                            || shard.partitions.is_closing()
                        {
                            return;
                        }
                        ticket = crate::group::begin_load(&shard, partition);
                    }
                })
                .detach();
            }
        } else if was_leader && !state.is_leader() && offsets {
            crate::group::unload_partition(self, topic_partition.partition);
        }
        if topic_partition.topic.as_ref() == crate::txn::TRANSACTION_STATE_TOPIC
            && (started_leading || (was_leader && !state.is_leader()))
        {
            crate::txn::hooks::on_leadership_change(self, &replica, started_leading);
        }
        true
    }

    /// Re-apply topic configs to open logs (AlterConfigs).
    pub fn apply_topic_config(&self, topic: &str, config: &crate::metadata::TopicConfig) {
        let Some(topic) = self.partitions.topic(topic) else {
            return;
        };
        for replica in topic.partitions.borrow().iter().flatten() {
            replica.set_config(config.clone());
        }
    }

    /// Start background work that writes to this shard's logs (a group
    /// timer round, a log cleaner pass, a group metadata write in the
    /// background); `None` once the shard is closing: then the work must not
    /// start. [`Shard::close_all`] waits for every guard to drop.
    pub fn background_work(self: &Rc<Self>) -> Option<BackgroundWork> {
        if self.partitions.stage.get() != Stage::Serving {
            return None;
        }
        Some(self.partitions.start_work(self))
    }

    /// Start one write to this shard's logs (a group coordinator append and
    /// its wait for durability): allowed while the shard closes, so that
    /// the work it waits for can finish, and refused (`None`) once its logs
    /// are being closed. [`Shard::close_all`] waits for the guard too.
    pub fn log_write(self: &Rc<Self>) -> Option<BackgroundWork> {
        if self.partitions.stage.get() == Stage::LogsClosing {
            return None;
        }
        Some(self.partitions.start_work(self))
    }

    /// Close every log: flush, write indexes and checkpoints. First stops
    /// new background work and opens, and waits (up to [`CLOSE_WAIT_MAX`])
    /// for those running: a group timer appending to a log being closed
    /// would fail ("closed before the append became durable").
    pub async fn close_all(&self) {
        self.partitions.stage.set(Stage::Closing);
        let settled = compio::time::timeout(CLOSE_WAIT_MAX, self.partitions.settled()).await;
        if settled.is_err() {
            tracing::warn!(
                shard = self.id.0,
                background = self.partitions.background.get(),
                opening = self.partitions.opening.borrow().len(),
                "background work still running after {CLOSE_WAIT_MAX:?}; closing the logs anyway"
            );
        }
        // No await since `settled` returned: nothing started in between.
        self.partitions.stage.set(Stage::LogsClosing);
        // Many at once: each close waits on its own small-file fsyncs
        // (indexes, checkpoint, snapshots), which the kernel batches when
        // they are in flight together; one after the other, 10,000
        // partitions took minutes to stop.
        const CLOSE_CONCURRENCY: usize = 64;
        let partitions = self.partitions.values();
        futures_util::StreamExt::for_each_concurrent(
            futures_util::stream::iter(partitions),
            CLOSE_CONCURRENCY,
            |replica| async move {
                self.close_replica(&replica).await;
            },
        )
        .await;
    }

    /// Flush one partition, save its transaction snapshot (which holds the
    /// producer table), close its log.
    async fn close_replica(&self, replica: &PartitionReplica) {
        // Flushed first, so the snapshots cover exactly the log; written by
        // path, so not once a removal closed the log (engine dir_gate.rs),
        // and the close below waits for them.
        if let Ok(_dir) = replica.log.enter_dir()
            && replica.log.flush().await.is_ok()
        {
            let state = replica.txns.borrow().clone();
            let log_end = replica.log.log_end_offset();
            let producers = {
                let mut producers = replica.producers.borrow_mut();
                producers.reconcile(log_end);
                producers.clone()
            };
            if state.end_offset() == log_end
                && let Err(error) = txn_state::save_snapshot(replica.log.dir(), &state, &producers)
            {
                tracing::warn!(partition = %replica.topic_partition, %error, "saving the transaction state and producer table failed; the next open reads the log");
            }
        }
        if let Err(error) = replica.log.close().await {
            tracing::error!(partition = %replica.topic_partition, %error, "closing a log failed");
        }
    }
}

/// Open one partition's log and, for `__consumer_offsets`, replay it into
/// the group coordinator before anyone can use it.
async fn open_and_load(
    shard: &Rc<Shard>,
    topic: &TopicMetadata,
    topic_partition: TopicPartition,
) -> Result<Rc<PartitionReplica>, OpenError> {
    let failed = |error: anyhow::Error| OpenError {
        partition: topic_partition.clone(),
        reason: format!("{error:#}"),
    };
    let replica = Rc::new(
        PartitionReplica::open(shard, topic, topic_partition.clone())
            .await
            .map_err(failed)?,
    );
    // Only a leader coordinates its groups (a follower's copy is loaded
    // when it starts leading: `Shard::apply_replica_view`).
    if topic.name == crate::group::OFFSETS_TOPIC
        && replica.state().is_leader()
        && let Err(error) = crate::group::load_partition(
            shard,
            &replica,
            crate::group::begin_load(shard, replica.topic_partition.partition),
        )
        .await
    {
        let _ = replica.log.close().await;
        return Err(failed(error));
    }
    crate::replication::leader::start(shard, &replica);
    if topic.name == crate::txn::TRANSACTION_STATE_TOPIC && replica.state().is_leader() {
        crate::txn::hooks::on_leadership_change(shard, &replica, true);
    }
    Ok(replica)
}

/// Opening a partition failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("opening partition {partition} failed: {reason}")]
pub struct OpenError {
    pub partition: TopicPartition,
    pub reason: String,
}

/// An open in flight, awaited by every caller that wants the partition.
type SharedOpen = Shared<oneshot::Receiver<Result<Rc<PartitionReplica>, OpenError>>>;

/// The open partitions of one topic on one shard, indexed by partition
/// number (a slot per index up to the highest open here; the indexes
/// placed on other shards stay `None`). Found by name once
/// ([`PartitionTable::topic`]), then each partition is a bounds-checked
/// index: no hashing, no comparison of names, no allocation.
#[derive(Default)]
pub struct TopicReplicas {
    partitions: RefCell<Vec<Option<Rc<PartitionReplica>>>>,
    /// `Some` entries of `partitions`.
    open_count: Cell<usize>,
}

impl TopicReplicas {
    /// Partition `index` when it is open on this shard.
    pub fn partition(&self, index: i32) -> Option<Rc<PartitionReplica>> {
        let index = usize::try_from(index).ok()?;
        self.partitions.borrow().get(index)?.clone()
    }

    fn insert(&self, index: i32, replica: Rc<PartitionReplica>) {
        let Ok(index) = usize::try_from(index) else {
            panic!("partition index {index} is negative");
        };
        let mut partitions = self.partitions.borrow_mut();
        if partitions.len() <= index {
            partitions.resize(index + 1, None);
        }
        let previous = partitions[index].replace(replica);
        assert!(previous.is_none(), "partition {index} was opened twice");
        self.open_count.set(self.open_count.get() + 1);
    }

    fn remove(&self, index: i32) -> Option<Rc<PartitionReplica>> {
        let index = usize::try_from(index).ok()?;
        let mut partitions = self.partitions.borrow_mut();
        let removed = partitions.get_mut(index)?.take()?;
        self.open_count.set(self.open_count.get() - 1);
        // Trailing empty slots go, so a topic that shrinks here (all its
        // partitions removed one by one) does not keep its table.
        while partitions.last().is_some_and(Option::is_none) {
            partitions.pop();
        }
        if partitions.is_empty() {
            *partitions = Vec::new();
        }
        Some(removed)
    }
}

/// The partitions of one shard: those open (per topic, then by index:
/// [`TopicReplicas`]), the opens in flight (single-flight, see
/// [`Shard::open_partition`]), and the closing state: once closing, no open
/// or background work starts.
///
/// Lookups cost one hash of the topic name per topic, not per partition:
/// [`PartitionTable::get`] remembers the topic of the last lookup by the
/// address of its `Arc<str>` name, and a request's partitions come grouped
/// by topic with one shared name (`TopicPartition` values cloned from one
/// per topic), so all but the first partition of a topic match by
/// pointer. A miss costs what it did before: one hash and one comparison.
#[derive(Default)]
pub struct PartitionTable {
    topics: RefCell<HashMap<Arc<str>, Rc<TopicReplicas>>>,
    /// The last topic [`PartitionTable::get`] found, keyed by its caller's
    /// name (kept alive here, so its address cannot be reused meanwhile).
    /// Cleared whenever a topic leaves `topics`, so it never names a topic
    /// table that is no longer the current one.
    last_topic: RefCell<Option<(Arc<str>, Rc<TopicReplicas>)>>,
    opening: RefCell<HashMap<TopicPartition, SharedOpen>>,
    stage: Cell<Stage>,
    /// Live [`BackgroundWork`] guards.
    background: Cell<usize>,
    /// Woken when the last guard drops.
    idle: RefCell<Vec<oneshot::Sender<()>>>,
}

impl PartitionTable {
    /// The open replica of `topic_partition` (see the type's docs for what
    /// a lookup costs).
    pub fn get(&self, topic_partition: &TopicPartition) -> Option<Rc<PartitionReplica>> {
        self.topic_of(&topic_partition.topic)?
            .partition(topic_partition.partition)
    }

    /// The open partitions of topic `name` on this shard, remembered for
    /// the next lookup with the same `Arc`.
    fn topic_of(&self, name: &Arc<str>) -> Option<Rc<TopicReplicas>> {
        if let Some((last_name, topic)) = &*self.last_topic.borrow()
            && Arc::ptr_eq(last_name, name)
        {
            return Some(Rc::clone(topic));
        }
        let topic = self.topic(name)?;
        *self.last_topic.borrow_mut() = Some((Arc::clone(name), Rc::clone(&topic)));
        Some(topic)
    }

    /// The open partitions of topic `name` on this shard (one hash of the
    /// name); index them with [`TopicReplicas::partition`].
    pub fn topic(&self, name: &str) -> Option<Rc<TopicReplicas>> {
        self.topics.borrow().get(name).cloned()
    }

    fn insert(&self, topic_partition: TopicPartition, replica: Rc<PartitionReplica>) {
        let topic = Rc::clone(
            self.topics
                .borrow_mut()
                .entry(topic_partition.topic)
                .or_default(),
        );
        topic.insert(topic_partition.partition, replica);
    }

    fn remove(&self, topic_partition: &TopicPartition) -> Option<Rc<PartitionReplica>> {
        let topic = self.topic(&topic_partition.topic)?;
        let removed = topic.remove(topic_partition.partition);
        if topic.open_count.get() == 0 {
            self.topics
                .borrow_mut()
                .remove(topic_partition.topic.as_ref());
            *self.last_topic.borrow_mut() = None;
        }
        removed
    }

    /// Every open partition (a copy: callers await while they use it).
    pub fn values(&self) -> Vec<Rc<PartitionReplica>> {
        let topics = self.topics.borrow();
        let mut values = Vec::new();
        for topic in topics.values() {
            values.extend(topic.partitions.borrow().iter().flatten().cloned());
        }
        values
    }

    /// How many partitions are open on this shard.
    pub fn len(&self) -> usize {
        let topics = self.topics.borrow();
        topics.values().map(|topic| topic.open_count.get()).sum()
    }

    /// True when no partition is open on this shard.
    pub fn is_empty(&self) -> bool {
        self.topics.borrow().is_empty()
    }

    /// True once [`Shard::close_all`] has started.
    pub fn is_closing(&self) -> bool {
        self.stage.get() != Stage::Serving
    }

    fn start_work(&self, shard: &Rc<Shard>) -> BackgroundWork {
        self.background.set(self.background.get() + 1);
        BackgroundWork {
            shard: Rc::clone(shard),
        }
    }

    /// Wait until no background work runs and no open is in flight.
    async fn settled(&self) {
        loop {
            if self.background.get() > 0 {
                let (sender, receiver) = oneshot::channel();
                self.idle.borrow_mut().push(sender);
                let _ = receiver.await;
                continue;
            }
            let in_flight = self.opening.borrow().values().next().cloned();
            match in_flight {
                Some(open) => {
                    let _ = open.await;
                }
                None => return,
            }
        }
    }
}

/// Where a shard is in its life (see [`Shard::close_all`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    Serving,
    /// No open, timer round or cleaner pass starts; writes still may.
    Closing,
    /// The logs are closing: no write starts.
    LogsClosing,
}

/// A running piece of background work, or a log write (see
/// [`Shard::background_work`], [`Shard::log_write`]).
pub struct BackgroundWork {
    shard: Rc<Shard>,
}

impl Drop for BackgroundWork {
    fn drop(&mut self) {
        let table = &self.shard.partitions;
        let count = table.background.get();
        assert!(count > 0, "background work count underflow");
        table.background.set(count - 1);
        if count == 1 {
            for waiter in table.idle.borrow_mut().drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
