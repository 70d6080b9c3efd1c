//! A partition replica on its owning shard: the log plus the state the
//! broker keeps next to it (topic config, idempotent producer state, and
//! its replica state: role and leader epoch).
//!
//! Replica state ([`ReplicaState`]): whether this broker leads the
//! partition, and under which leader epoch, as of the last metadata view
//! the follower (shard/follower.rs) applied. It is set when the replica
//! opens and updated before a view that changes it is published, so a
//! request routed by a view never finds the replica behind it. Only a
//! leader accepts appends ([`PartitionReplica::append`] refuses others with
//! [`ReplicaAppendError::NotLeader`]), and every appended batch is stamped
//! with the replica's leader epoch: the replica is the one source of the
//! epoch written to the log.
//!
//! The high watermark ([`PartitionReplica::high_watermark`]) is what
//! consumers may read and what ListOffsets, DeleteRecords and the group
//! coordinator treat as committed. On a leader it is the smallest fsynced
//! end over the (maximal) ISR, the leader's own included
//! (`replication::progress::LeaderState`): with replication factor 1, the
//! log's durable end. On a follower it is what the leader last told it,
//! bounded by its own log. Handlers read it only through this method.
//!
//! Replication ([`Replication`]): a leader keeps its followers' progress,
//! the committed ISR and the high watermark; `replication::leader` drives
//! the pushes. A follower keeps the high watermark the leader sent.
//!
//! A follower's truncation or start-over (replication/follower.rs) awaits
//! I/O, and a view making this replica the leader can be applied meanwhile.
//! While one is in progress ([`PartitionReplica::begin_rewrite`]): appends
//! are refused as by a non-leader (the engine refuses them too), the high
//! watermark does not move, and the work a new leadership starts (pushers,
//! ISR task, coordinator loads) waits ([`PartitionReplica::rewrite_done`]).
//! When the last one ends, a leadership that began during it starts its
//! epoch at the log end after the cut, not at the end the view found
//! (which made "latest" lookups answer OFFSET_NOT_AVAILABLE and kept the
//! followers out of the ISR until the log grew back to it).
//!
//! A partition directory carries the id of the topic it belongs to, in a
//! `partition.metadata` file (Kafka's name and format, see
//! [`encode_partition_metadata`]). Invariant: a directory is served only for
//! the topic whose id it records. A topic deleted and created again under
//! the same name has a new id, so a directory of the old topic that a crash
//! left behind is never served as the new topic's data: the open moves it
//! away ([`remove_partition_dir`]) and starts a fresh one. The startup sweep
//! (shard/orphans.rs) removes such directories before any open, and adopts
//! the directories of the previous Sluice version, which carry no file.
//!
//! Removal is durable before the data goes: the directory is renamed to
//! `<topic>-<partition>.<topic id>-delete` and the data directory fsynced,
//! then the renamed directory is removed. A crash during the removal leaves
//! a `-delete` directory, which is never served and which the startup sweep
//! removes. Runs on the partition's shard (the sweep on the main thread).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use sluice_engine::io::Io;
use sluice_engine::io::uring::UringIo;
use sluice_engine::{AppendError, LeaderEpoch, Log, Offset, TimestampMs};

use crate::metadata::{PartitionMetadata, TopicConfig, TopicMetadata};
use crate::replication::progress::LeaderState;
use crate::shard::Shard;
use crate::shard::notify::HighWatermarkWatch;

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

/// Whether this broker's replica leads its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaRole {
    /// Accepts appends and serves reads up to the high watermark.
    Leader,
    /// Another broker leads (or nobody does: the partition is offline).
    /// Refuses appends; part 2 makes it copy the leader's log.
    Follower,
}

/// A replica's role and the leader epoch it knows, from the metadata view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub role: ReplicaRole,
    /// The partition's leader epoch; stamped into the batches a leader
    /// appends.
    pub leader_epoch: LeaderEpoch,
}

impl ReplicaState {
    /// The state of broker `node_id`'s replica of `partition` in a view.
    pub fn from_view(partition: &PartitionMetadata, node_id: i32) -> ReplicaState {
        let role = if partition.leader == Some(node_id) {
            ReplicaRole::Leader
        } else {
            ReplicaRole::Follower
        };
        ReplicaState {
            role,
            leader_epoch: LeaderEpoch(partition.leader_epoch),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role == ReplicaRole::Leader
    }
}

/// A partition's committed assignment as a view gives it: what a leader
/// replicates to and counts for its high watermark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

impl Assignment {
    pub fn from_view(partition: &PartitionMetadata) -> Assignment {
        Assignment {
            replicas: partition.replicas.clone(),
            isr: partition.isr.clone(),
            partition_epoch: partition.partition_epoch,
        }
    }
}

/// The replication side of a replica's role.
pub enum Replication {
    /// Leading: followers' progress, ISR, high watermark.
    Leader(LeaderState),
    /// Following (or offline): the high watermark the leader last sent,
    /// and the leader epoch it was learned in (this replica's own when it
    /// led; -1 before any).
    Follower {
        high_watermark: Offset,
        learned_in: LeaderEpoch,
    },
}

pub struct PartitionReplica {
    pub topic_partition: TopicPartition,
    pub topic_id: uuid::Uuid,
    pub log: Log<UringIo>,
    pub config: RefCell<TopicConfig>,
    /// Role and leader epoch (see the module docs); changed only through
    /// [`PartitionReplica::set_state`].
    state: Cell<ReplicaState>,
    /// Wakes fetches waiting for the high watermark to move
    /// (shard/notify.rs).
    pub high_watermark_watch: Rc<HighWatermarkWatch>,
    /// Idempotent producers' sequences (shard/producer_state.rs).
    pub producers: RefCell<crate::shard::producer_state::ProducerStateTable>,
    /// Open and aborted transactions, the last stable offset
    /// (shard/txn_state.rs).
    pub txns: RefCell<crate::shard::txn_state::TxnState>,
    /// Leader or follower bookkeeping (see the module docs).
    pub replication: RefCell<Replication>,
    /// The committed assignment as last applied.
    assignment: RefCell<Assignment>,
    /// Wakes the leader's pushers when an append arrives.
    pub append_watch: Rc<HighWatermarkWatch>,
    /// Truncations and start-overs in progress
    /// ([`PartitionReplica::begin_rewrite`]).
    rewriting: Cell<u32>,
}

/// A follower's truncation or start-over of the log in progress, with the
/// state rebuilt after it ([`PartitionReplica::begin_rewrite`]). Dropping
/// the last one settles a leadership that began meanwhile.
pub struct Rewrite<'a> {
    replica: &'a PartitionReplica,
}

impl Drop for Rewrite<'_> {
    fn drop(&mut self) {
        let replica = self.replica;
        let count = replica.rewriting.get() - 1;
        replica.rewriting.set(count);
        if count > 0 {
            return;
        }
        // Only a follower starts a rewrite (follower.rs checks at its first
        // poll), so a leadership now began during it: nothing was appended,
        // pushed or counted since (all wait for the rewrite), and its epoch
        // starts at the log end as the cut left it.
        if let Replication::Leader(leader) = &mut *replica.replication.borrow_mut() {
            let log_end = replica.log.log_end_offset();
            if leader.epoch_start != log_end {
                tracing::info!(partition = %replica.topic_partition, epoch = ?leader.epoch, found = %leader.epoch_start, %log_end, "leadership began during a truncation: its epoch starts after it");
            }
            leader.settle_epoch_start(log_end);
        }
        // Waiters for the rewrite's end, and fetches, re-check.
        replica.notify_high_watermark();
    }
}

/// An append [`PartitionReplica::append`] refused.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaAppendError {
    /// This replica does not lead its partition (as of the last view the
    /// follower applied): the client must look for the leader.
    #[error("{partition}: this replica is not the leader (leader epoch {leader_epoch})")]
    NotLeader {
        partition: TopicPartition,
        leader_epoch: i32,
    },
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Why [`PartitionReplica::wait_committed`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitWaitError {
    #[error("this replica stopped leading the partition before the append was committed")]
    NotLeader,
    #[error("the in-sync replica set shrank below min.insync.replicas while waiting")]
    NotEnoughReplicasAfterAppend,
    #[error("the in-sync replicas did not acknowledge the append within the request timeout")]
    TimedOut,
}

/// What applying a view started (`PartitionReplica::apply_view`).
#[derive(Debug, PartialEq, Eq)]
pub enum ViewChange {
    None,
    /// A new leader epoch led by this broker.
    StartedLeading,
    /// Leading on under this epoch, with followers a reassignment added
    /// (and their pusher numbers).
    NewFollowers(LeaderEpoch, Vec<(i32, u64)>),
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
        let partition = usize::try_from(topic_partition.partition)
            .ok()
            .and_then(|index| topic.partitions.get(index))
            .ok_or_else(|| {
                anyhow::anyhow!("topic {} has no partition {topic_partition}", topic.name)
            })?;
        let node_id = shard.metadata.snapshot().node_id;
        let state = ReplicaState::from_view(partition, node_id);
        let assignment = Assignment::from_view(partition);
        let (config, set_aside) = TopicConfig::for_replica(&topic.configs);
        for reason in set_aside {
            tracing::warn!(partition = %topic_partition, %reason, "topic config set aside");
        }
        let dir = topic_partition.dir(&shard.config.data_dir);
        claim_partition_dir(&shard.io, &dir, topic.id).await?;
        let log = Log::open(shard.io, dir, config.log.clone(), &shard.committer).await?;
        // A full disk never gives an offset to two records: a leader's
        // followers may already hold the appends a failed flush was
        // writing (engine `Log::keep_unflushed_when_full`).
        log.keep_unflushed_when_full(true);
        tracing::debug!(partition = %topic_partition, shard = shard.id.0, end = %log.log_end_offset(), ?state, "opened partition");
        let (producers, txns) = match crate::shard::tail_replay::rebuild_at_open(&shard.io, &log)
            .await
        {
            Ok(rebuilt) => rebuilt,
            Err(error) => {
                if let Err(closed) = log.close().await {
                    tracing::warn!(partition = %topic_partition, error = %closed, "closing after a failed open");
                }
                // A disk that cannot read back its own log is a storage
                // failure, as Kafka takes the directory offline: the
                // `sluice` process halts (engine failure.rs) so that
                // leadership moves; only retried, a leader's partition
                // stayed unavailable for good.
                if matches!(error, sluice_engine::LogError::Io { .. }) {
                    sluice_engine::failure::report(
                        log.dir(),
                        &format!("reading the log to rebuild its state: {error}"),
                    );
                }
                return Err(anyhow::anyhow!(
                    "rebuilding the transaction and producer state of {topic_partition}: {error}"
                ));
            }
        };
        let replication = if state.is_leader() {
            // Nothing is known of the followers yet: the high watermark
            // starts at 0 and rises as they answer (at once with none).
            Replication::Leader(LeaderState::new(
                node_id,
                state.leader_epoch,
                log.log_end_offset(),
                assignment.partition_epoch,
                assignment.replicas.clone(),
                assignment.isr.clone(),
                Offset::ZERO,
                shard.io.now_ms(),
            ))
        } else {
            Replication::Follower {
                high_watermark: Offset::ZERO,
                learned_in: LeaderEpoch(-1),
            }
        };
        Ok(PartitionReplica {
            topic_partition,
            topic_id: topic.id,
            log,
            config: RefCell::new(config),
            state: Cell::new(state),
            high_watermark_watch: Rc::new(HighWatermarkWatch::new()),
            producers: RefCell::new(producers),
            txns: RefCell::new(txns),
            replication: RefCell::new(replication),
            assignment: RefCell::new(assignment),
            append_watch: Rc::new(HighWatermarkWatch::new()),
            rewriting: Cell::new(0),
        })
    }

    /// A truncation or start-over of the log (replication/follower.rs)
    /// begins, on a follower: until the returned guard drops (after the
    /// producer and transaction state follow the new log), see the module
    /// docs.
    pub fn begin_rewrite(&self) -> Rewrite<'_> {
        self.rewriting.set(self.rewriting.get() + 1);
        Rewrite { replica: self }
    }

    /// Whether a truncation or start-over is in progress.
    pub fn is_rewriting(&self) -> bool {
        self.rewriting.get() > 0
    }

    /// Wait until no truncation or start-over is in progress: what a new
    /// leadership starts reads the log as the cut leaves it.
    pub async fn rewrite_done(&self) {
        loop {
            let changed = self.high_watermark_watch.changed();
            if !self.is_rewriting() {
                return;
            }
            let pause = HighWatermarkWatch::fallback_poll_interval();
            futures_util::future::select(changed, Box::pin(compio::time::sleep(pause))).await;
        }
    }

    /// The replica's role and leader epoch.
    pub fn state(&self) -> ReplicaState {
        self.state.get()
    }

    /// Apply the role and leader epoch of a newer view, with the current
    /// assignment (see [`PartitionReplica::apply_view`]).
    pub fn set_state(&self, node_id: i32, state: ReplicaState, now_ms: i64) -> ViewChange {
        let assignment = self.assignment.borrow().clone();
        self.apply_view(node_id, state, assignment, now_ms)
    }

    /// Apply a newer view's state and assignment (shard/follower.rs).
    /// Leader epochs only grow in the committed metadata log, so a lower
    /// one is a bug. Returns `StartedLeading` when this replica just
    /// started leading (a new leader epoch): the caller starts the pushers
    /// (`replication::leader::start`);
    /// `NewFollowers` when, leading on, it has followers a reassignment
    /// added: the caller starts their pushers
    /// (`replication::leader::start_pushers`).
    pub fn apply_view(
        &self,
        node_id: i32,
        state: ReplicaState,
        assignment: Assignment,
        now_ms: i64,
    ) -> ViewChange {
        let previous = self.state.get();
        assert!(
            state.leader_epoch >= previous.leader_epoch,
            "{}: leader epoch went back from {:?} to {:?}",
            self.topic_partition,
            previous.leader_epoch,
            state.leader_epoch
        );
        if state != previous {
            tracing::info!(partition = %self.topic_partition, ?previous, ?state, isr = ?assignment.isr, "replica state changed");
            self.state.set(state);
        }
        let mut replication = self.replication.borrow_mut();
        let (known_high_watermark, learned_in) = match &*replication {
            Replication::Leader(leader) => (leader.high_watermark(), leader.epoch),
            Replication::Follower {
                high_watermark,
                learned_in,
            } => (*high_watermark, *learned_in),
        };
        let change = match (&mut *replication, state.is_leader()) {
            (Replication::Leader(leader), true) if leader.epoch == state.leader_epoch => {
                let added = leader.apply_committed(
                    assignment.partition_epoch,
                    &assignment.replicas,
                    &assignment.isr,
                    now_ms,
                );
                if added.is_empty() {
                    ViewChange::None
                } else {
                    ViewChange::NewFollowers(state.leader_epoch, added)
                }
            }
            (_, true) => {
                *replication = Replication::Leader(LeaderState::new(
                    node_id,
                    state.leader_epoch,
                    self.log.log_end_offset(),
                    assignment.partition_epoch,
                    assignment.replicas.clone(),
                    assignment.isr.clone(),
                    known_high_watermark,
                    now_ms,
                ));
                ViewChange::StartedLeading
            }
            (Replication::Leader(_), false) => {
                *replication = Replication::Follower {
                    high_watermark: known_high_watermark,
                    learned_in,
                };
                ViewChange::None
            }
            (Replication::Follower { .. }, false) => ViewChange::None,
        };
        drop(replication);
        *self.assignment.borrow_mut() = assignment;
        // Waiters (acks=all, long polls) re-check: role, ISR or high
        // watermark may have changed.
        self.notify_high_watermark();
        change
    }

    /// The committed assignment as last applied.
    pub fn assignment(&self) -> Assignment {
        self.assignment.borrow().clone()
    }

    /// The offset below which records are committed: what consumers may
    /// read, what ListOffsets LATEST answers, the bound of DeleteRecords.
    /// See the module docs.
    pub fn high_watermark(&self) -> Offset {
        let durable_end = self.log.durable_end_offset();
        match &mut *self.replication.borrow_mut() {
            // During a truncation the durable end is still the old one,
            // above the cut: a leadership that began then must not count
            // it (its high watermark never moves back).
            Replication::Leader(leader) if self.is_rewriting() => leader.high_watermark(),
            Replication::Leader(leader) => {
                leader.update_high_watermark(durable_end);
                leader.high_watermark()
            }
            Replication::Follower { high_watermark, .. } => (*high_watermark).min(durable_end),
        }
    }

    /// A follower's record of the high watermark of the leader of
    /// `leader_epoch` (bounded by its own log end); ignored on a leader.
    pub fn set_follower_high_watermark(
        &self,
        leader_high_watermark: Offset,
        leader_epoch: LeaderEpoch,
    ) {
        if self.is_rewriting() {
            // Bounded by an end about to be cut.
            return;
        }
        if let Replication::Follower {
            high_watermark,
            learned_in,
        } = &mut *self.replication.borrow_mut()
        {
            let bounded = leader_high_watermark.min(self.log.log_end_offset());
            // A leader that holds all this replica's high watermark covers
            // vouches for it from then on: a cut below it asked in that
            // leader's epoch is refused as a bug.
            if bounded >= *high_watermark {
                *high_watermark = bounded;
                *learned_in = (*learned_in).max(leader_epoch);
            }
        }
    }

    /// A follower told by the leader of `leader_epoch` to cut below the high
    /// watermark it learned from an earlier leader: the new leader does not
    /// hold those records, which only an unclean election allows (every
    /// clean leader holds all that any earlier high watermark covered).
    /// As Kafka's follower, it lowers its high watermark to `to` and cuts
    /// (the records are lost with the election that chose this leader);
    /// returns false, keeping the high watermark, when it was learned in
    /// this leader's epoch or a later one (a bug, refused). Until this,
    /// such a replica refused for as long as it ran and stayed out of the
    /// ISR (found by a read-only audit).
    pub fn lower_follower_high_watermark(&self, to: Offset, leader_epoch: LeaderEpoch) -> bool {
        match &mut *self.replication.borrow_mut() {
            Replication::Follower {
                high_watermark,
                learned_in,
            } if *learned_in < leader_epoch => {
                *high_watermark = (*high_watermark).min(to);
                *learned_in = leader_epoch;
                true
            }
            _ => false,
        }
    }

    /// On a leader, the log end when it took leadership (Kafka's leader
    /// epoch start offset): until the high watermark reaches it, the high
    /// watermark may still be behind the previous leader's, and "latest"
    /// lookups answer OFFSET_NOT_AVAILABLE as Kafka does.
    pub fn leader_epoch_start(&self) -> Option<Offset> {
        match &*self.replication.borrow() {
            Replication::Leader(leader) => Some(leader.epoch_start),
            Replication::Follower { .. } => None,
        }
    }

    /// The low watermark (`LeaderState::low_watermark`); a follower's own
    /// log start.
    pub fn low_watermark(&self) -> Offset {
        let log_start = self.log.log_start_offset();
        match &*self.replication.borrow() {
            Replication::Leader(leader) => leader.low_watermark(log_start),
            Replication::Follower { .. } => log_start,
        }
    }

    /// Wait until the low watermark reaches `offset` while this replica
    /// leads under `epoch` (DeleteRecords): `Ok` with the low watermark,
    /// or why not.
    pub async fn wait_low_watermark(
        &self,
        offset: Offset,
        epoch: LeaderEpoch,
        timeout: std::time::Duration,
    ) -> Result<Offset, CommitWaitError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let changed = self.high_watermark_watch.changed();
            let state = self.state.get();
            if !state.is_leader() || state.leader_epoch != epoch {
                return Err(CommitWaitError::NotLeader);
            }
            let low_watermark = self.low_watermark();
            if low_watermark >= offset {
                return Ok(low_watermark);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(CommitWaitError::TimedOut);
            }
            let pause = (deadline - now).min(HighWatermarkWatch::fallback_poll_interval());
            futures_util::future::select(changed, Box::pin(compio::time::sleep(pause))).await;
        }
    }

    /// The committed ISR's size, on a leader (`None` otherwise).
    pub fn isr_size(&self) -> Option<usize> {
        match &*self.replication.borrow() {
            Replication::Leader(leader) => Some(leader.isr.len()),
            Replication::Follower { .. } => None,
        }
    }

    /// Append to the log (see `Log::append`), stamped with the replica's
    /// leader epoch, and wake the fetches waiting on this partition once
    /// the high watermark covers the append. Refused unless this replica
    /// leads ([`ReplicaAppendError::NotLeader`]), and while a leadership
    /// that began during a follower's truncation waits for it (the same:
    /// retriable). The produce path appends through this rather than
    /// `self.log.append`, so that long-poll fetches answer as soon as the
    /// data is visible.
    pub fn append(&self, records: &Bytes) -> Result<ReplicaAppend, ReplicaAppendError> {
        let state = self.state.get();
        let not_leader = || ReplicaAppendError::NotLeader {
            partition: self.topic_partition.clone(),
            leader_epoch: state.leader_epoch.0,
        };
        if !state.is_leader() || self.is_rewriting() {
            return Err(not_leader());
        }
        let appended = match self.log.append(records, state.leader_epoch) {
            Ok(appended) => appended,
            Err(AppendError::Truncating { .. }) => return Err(not_leader()),
            Err(error) => return Err(error.into()),
        };
        crate::shard::txn_state::observe_leader_append(self, records, appended.base_offset);
        self.append_watch.notify();
        let end = appended.last_offset.plus(1);
        let engine_completion = appended.completion;
        let log = self.log.clone();
        let watch = Rc::clone(&self.high_watermark_watch);
        let completion = Box::pin(async move {
            let result = engine_completion.await;
            if high_watermark_of(&log) >= end {
                watch.notify_from_append();
            } else if result.is_ok() {
                // FlushPolicy::Interval acknowledges before the flush: wake
                // the waiters when the committer gets there.
                notify_when_high_watermark_reaches(log, watch, end);
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

    /// Wait until the high watermark covers `end` (acks=all), under the
    /// leader epoch the append was made in. Kafka's rule: once covered,
    /// the append is acknowledged only if the committed ISR still has
    /// `min_insync()` members, the topic's min.insync.replicas as it is
    /// then (else NOT_ENOUGH_REPLICAS_AFTER_APPEND); a lost leadership or
    /// the deadline ends the wait first.
    pub async fn wait_committed(
        &self,
        end: Offset,
        epoch: LeaderEpoch,
        min_insync: impl Fn() -> usize,
        timeout: std::time::Duration,
    ) -> Result<(), CommitWaitError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let changed = self.high_watermark_watch.changed();
            let state = self.state.get();
            if !state.is_leader() || state.leader_epoch != epoch {
                return Err(CommitWaitError::NotLeader);
            }
            if self.high_watermark() >= end {
                return match self.isr_size() {
                    Some(size) if size >= min_insync() => Ok(()),
                    _ => Err(CommitWaitError::NotEnoughReplicasAfterAppend),
                };
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(CommitWaitError::TimedOut);
            }
            let pause = (deadline - now).min(HighWatermarkWatch::fallback_poll_interval());
            futures_util::future::select(changed, Box::pin(compio::time::sleep(pause))).await;
        }
    }

    /// A replica being removed stops leading under its epoch: its pushers
    /// and ISR task end at their next step (they run only while it leads
    /// under that epoch: replication/leader.rs), and so stop holding it.
    /// Left leading, the pushers of a replica with two followers or more
    /// kept each other's hold on it and probed the followers of a deleted
    /// topic forever. Waiters (acks=all, long polls) re-check and go.
    fn stop_leading(&self) {
        let state = self.state.get();
        if state.is_leader() {
            self.state.set(ReplicaState {
                role: ReplicaRole::Follower,
                ..state
            });
        }
        let mut replication = self.replication.borrow_mut();
        if let Replication::Leader(leader) = &*replication {
            let high_watermark = leader.high_watermark();
            *replication = Replication::Follower {
                high_watermark,
                learned_in: leader.epoch,
            };
        }
        drop(replication);
        self.notify_high_watermark();
    }

    /// Wake the fetches waiting on this partition (the high watermark
    /// moved, or a change such as truncation that they must re-read for).
    pub fn notify_high_watermark(&self) {
        self.high_watermark_watch.notify_from_append();
    }

    pub fn set_config(&self, config: TopicConfig) {
        self.log.set_config(config.log.clone());
        *self.config.borrow_mut() = config;
    }

    /// Close the log and remove its directory ([`remove_partition_dir`]):
    /// when Ok, the directory will never be served again, even after a
    /// crash.
    pub async fn delete(&self) -> anyhow::Result<()> {
        self.stop_leading();
        let _ = self.log.close_for_removal().await;
        let dir = self.log.dir().to_path_buf();
        remove_partition_dir(&UringIo::new(), &dir).await?;
        Ok(())
    }
}

/// The log's durable end: the leader's own part of the high watermark
/// (all of it with replication factor 1). Local appends wake waiters
/// when it covers them; they re-read the real high watermark.
fn high_watermark_of(log: &Log<UringIo>) -> Offset {
    log.durable_end_offset()
}

/// Poll the high watermark until it reaches `end`, then notify. One poller
/// per partition at a time (the watch remembers the furthest target); it
/// stops when the partition is dropped, its log poisoned or truncated.
fn notify_when_high_watermark_reaches(
    log: Log<UringIo>,
    watch: Rc<HighWatermarkWatch>,
    end: Offset,
) {
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
            if high_watermark_of(&log).value() >= target
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

/// How often [`notify_when_high_watermark_reaches`] looks at the high
/// watermark.
const INTERVAL_FLUSH_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// The file in a partition directory that records its topic id.
pub const PARTITION_METADATA_FILE_NAME: &str = "partition.metadata";

/// The suffix of a partition directory being removed (Kafka's).
pub const DELETE_DIR_SUFFIX: &str = "-delete";

/// The only `partition.metadata` version (Kafka's `version: 0`).
const PARTITION_METADATA_VERSION: u32 = 0;

/// A partition directory that cannot be served for the topic asked for.
#[derive(Debug, thiserror::Error)]
pub enum PartitionDirError {
    #[error("{path}: reading or writing the partition's directory failed")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid partition.metadata file: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// Data without a `partition.metadata`: a previous Sluice version's
    /// directory that the startup sweep (shard/orphans.rs) did not adopt.
    /// Whose data it holds is unknown, so it is not served.
    #[error(
        "{path} holds data but no partition.metadata (a directory of a previous Sluice \
         version that the startup sweep did not adopt): refusing to serve it"
    )]
    Unclaimed { path: PathBuf },
}

impl PartitionDirError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PartitionDirError + '_ {
        move |source| PartitionDirError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A topic id as Kafka prints it (`Uuid.toString()`): its 16 bytes, most
/// significant first, in URL-safe base64 without padding (22 characters).
pub fn kafka_topic_id_string(id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut text = String::with_capacity(22);
    for chunk in id.as_bytes().chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from_be_bytes([0, group[0], group[1], group[2]]);
        // Three bytes make four characters; a partial group of n bytes
        // makes n + 1 (no padding).
        for position in 0..=chunk.len() {
            let index = (bits >> (18 - 6 * position)) & 0x3f;
            text.push(char::from(ALPHABET[index as usize]));
        }
    }
    text
}

/// The inverse of [`kafka_topic_id_string`]; `None` unless `text` is 22
/// URL-safe base64 characters whose 4 unused low bits are zero.
pub fn parse_kafka_topic_id(text: &str) -> Option<uuid::Uuid> {
    let bytes = text.as_bytes();
    if bytes.len() != 22 {
        return None;
    }
    let value_of = |byte: u8| -> Option<u128> {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        Some(u128::from(value))
    };
    // 21 characters carry the top 126 bits; the last one the 2 lowest bits
    // and 4 bits of padding.
    let mut bits: u128 = 0;
    for &byte in &bytes[..21] {
        bits = (bits << 6) | value_of(byte)?;
    }
    let last = value_of(bytes[21])?;
    if last & 0x0f != 0 {
        return None;
    }
    Some(uuid::Uuid::from_u128((bits << 2) | (last >> 4)))
}

/// The content of `partition.metadata` (Kafka's
/// `PartitionMetadataFileFormatter`): `version: 0`, a newline, and
/// `topic_id: <id>` with the id as [`kafka_topic_id_string`] prints it.
pub fn encode_partition_metadata(topic_id: uuid::Uuid) -> Vec<u8> {
    format!(
        "version: {PARTITION_METADATA_VERSION}\ntopic_id: {}",
        kafka_topic_id_string(topic_id)
    )
    .into_bytes()
}

/// The topic id in a `partition.metadata` file's content. Accepts what
/// Kafka's reader accepts: the two lines in order, `:` followed by
/// whitespace, an optional trailing newline.
pub fn decode_partition_metadata(content: &[u8]) -> Result<uuid::Uuid, String> {
    let text = std::str::from_utf8(content).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let mut field = |key: &str| -> Result<&str, String> {
        let line = lines.next().ok_or_else(|| format!("no {key} line"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {line:?} is not <key>: <value>"))?;
        if name != key || !value.starts_with(char::is_whitespace) {
            return Err(format!("expected {key:?}, found {line:?}"));
        }
        Ok(value.trim())
    };
    let version = field("version")?;
    if version != PARTITION_METADATA_VERSION.to_string() {
        return Err(format!("unknown version {version:?}"));
    }
    let topic_id = field("topic_id")?;
    let topic_id = parse_kafka_topic_id(topic_id)
        .ok_or_else(|| format!("topic id {topic_id:?} is not a Kafka topic id"))?;
    if lines.any(|line| !line.trim().is_empty()) {
        return Err("text after the topic_id line".to_string());
    }
    Ok(topic_id)
}

/// The topic id recorded in `dir`: `None` when the directory or its
/// `partition.metadata` does not exist.
pub fn recorded_topic_id(dir: &Path) -> Result<Option<uuid::Uuid>, PartitionDirError> {
    let path = dir.join(PARTITION_METADATA_FILE_NAME);
    let content = match std::fs::read(&path) {
        Ok(content) => content,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(PartitionDirError::io(&path)(error)),
    };
    decode_partition_metadata(&content)
        .map(Some)
        .map_err(|reason| PartitionDirError::Malformed { path, reason })
}

/// True when `dir` holds nothing but temporary files (or does not exist):
/// a directory whose creation a crash interrupted before its
/// `partition.metadata` was in place.
pub fn holds_no_data(dir: &Path) -> Result<bool, PartitionDirError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(error) => return Err(PartitionDirError::io(dir)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(PartitionDirError::io(dir))?;
        if !entry.file_name().to_string_lossy().ends_with(".tmp") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Make `dir` the directory of the topic `topic_id` before its log opens
/// (see the module docs): keep it if it records that id; move it away if
/// it records another; refuse it if it holds data and records nothing;
/// otherwise (new or empty) create it and write its `partition.metadata`
/// durably. When Ok, the directory and its file are durable.
async fn claim_partition_dir(
    io: &UringIo,
    dir: &Path,
    topic_id: uuid::Uuid,
) -> Result<(), PartitionDirError> {
    match recorded_topic_id(dir)? {
        Some(recorded) if recorded == topic_id => return Ok(()),
        Some(recorded) => {
            tracing::warn!(
                dir = %dir.display(),
                recorded = %kafka_topic_id_string(recorded),
                topic_id = %kafka_topic_id_string(topic_id),
                "the partition directory belongs to a deleted topic of the same name; \
                 removing it and starting an empty one"
            );
            remove_partition_dir(io, dir).await?;
        }
        None => {
            if !holds_no_data(dir)? {
                return Err(PartitionDirError::Unclaimed {
                    path: dir.to_path_buf(),
                });
            }
        }
    }
    io.create_dir_all(dir).map_err(PartitionDirError::io(dir))?;
    let parent = parent_dir(dir);
    io.sync_dir(parent)
        .await
        .map_err(PartitionDirError::io(parent))?;
    let path = dir.join(PARTITION_METADATA_FILE_NAME);
    io.write_file_atomic(&path, encode_partition_metadata(topic_id))
        .await
        .map_err(PartitionDirError::io(&path))
}

/// `<dir>.<topic id>-delete`: where [`remove_partition_dir`] moves `dir`.
pub fn delete_dir_path(dir: &Path, topic_id: uuid::Uuid) -> PathBuf {
    let mut name = dir.as_os_str().to_os_string();
    name.push(format!(
        ".{}{DELETE_DIR_SUFFIX}",
        kafka_topic_id_string(topic_id)
    ));
    PathBuf::from(name)
}

/// Remove a partition directory so that a crash cannot bring it back:
/// rename it to [`delete_dir_path`] (the id it records, or a random one),
/// fsync the data directory, then remove the renamed directory in the
/// background. When Ok the directory is gone under its name durably; its
/// files go soon after (if that fails, or the process stops first, the
/// `-delete` directory is left for the startup sweep, with a warning). A
/// directory that does not exist is Ok.
pub async fn remove_partition_dir(io: &UringIo, dir: &Path) -> Result<(), PartitionDirError> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(PartitionDirError::io(dir)(error)),
    }
    let topic_id = recorded_topic_id(dir)
        .ok()
        .flatten()
        .unwrap_or_else(uuid::Uuid::new_v4);
    let doomed = delete_dir_path(dir, topic_id);
    // A leftover of an earlier removal of the same directory: rename(2)
    // cannot replace a non-empty directory.
    remove_dir_if_present(&doomed)?;
    io.rename(dir, &doomed)
        .await
        .map_err(PartitionDirError::io(dir))?;
    let parent = parent_dir(dir);
    io.sync_dir(parent)
        .await
        .map_err(PartitionDirError::io(parent))?;
    // The rename made the removal durable. Freeing a large partition's
    // extents (and, with online discard, trimming them) takes the kernel
    // about 0.3 s per GB here, so the files are freed by the reclaimer
    // thread, gradually, in the background: neither this shard's other
    // partitions nor the metadata thread, which waits for a deleted
    // topic's partitions to be removed, wait for it (a 6 GB topic's
    // deletion held up produce to another topic for 1-2 s). A stop before
    // it ends leaves the `-delete` directory to the startup sweep.
    sluice_engine::io::reclaim::remove_dir_in_background(&doomed);
    Ok(())
}

/// `std::fs::remove_dir_all`, Ok if `dir` does not exist.
pub fn remove_dir_if_present(dir: &Path) -> Result<(), PartitionDirError> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(PartitionDirError::io(dir)(error))
        }
        _ => Ok(()),
    }
}

/// The directory holding `dir` ("." for a bare name).
fn parent_dir(dir: &Path) -> &Path {
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}
