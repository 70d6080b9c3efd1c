//! `RaftNode`: one controller voter's Raft state machine (raft-rs `RawNode`)
//! plus the metadata image its committed log builds. Sans-I/O apart from
//! the store it is given: inputs are ticks, peer messages and proposals;
//! outputs are messages to send and committed record batches.
//!
//! Driving it (one thread; the production driver and the simulation alike):
//! 1. feed inputs: [`RaftNode::tick`] every tick interval, [`RaftNode::step`]
//!    for each message received, [`RaftNode::propose`] on the leader;
//! 2. [`RaftNode::handle_ready`]: writes new entries and hard state to the
//!    store (not yet durable), applies committed batches to the image, and
//!    returns messages that may leave now (a leader's appends go out before
//!    its own write is durable, Raft thesis 10.2.1);
//! 3. [`RaftNode::persist`]: syncs the store, then releases the messages
//!    that must wait for durability (votes, a follower's acknowledgements).
//!
//! Until `persist` returns, nothing the node said depends on unsynced state,
//! so a crash in between loses only what nobody was told.
//!
//! Election timing: raft-rs draws each election timeout from `thread_rng`;
//! `max_election_tick = min_election_tick + 1` leaves it one possible value,
//! so the node is deterministic and the jitter comes from whoever delivers
//! ticks (the simulation's seed, or the driver's own timer jitter).
//!
//! Invariants asserted: the image's offset is the last applied Raft index;
//! a proposal lands at the index `next_offset` predicted.

// raft-rs's protobuf structs are built by assigning fields to a default.
#![allow(clippy::field_reassign_with_default)]

use protobuf::Message as _;
use raft::eraftpb::{EntryType, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use thiserror::Error;

use super::codec::DecodeError;
use super::image::{ApplyError, MetadataImage, SnapshotError};
use super::records::{MetadataRecord, RecordBatch};
use super::storage::{CatchUpTarget, RaftLogStore, StoreError};
use super::types::{BrokerId, MetadataOffset};

/// Static settings of one voter.
#[derive(Clone, Debug)]
pub struct RaftNodeConfig {
    pub node_id: BrokerId,
    pub voters: Vec<BrokerId>,
    /// Ticks without a leader before a follower campaigns (exactly; jitter
    /// comes from tick delivery).
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Applied entries kept in the log before it is compacted into a
    /// snapshot of the image.
    pub snapshot_interval_entries: u64,
}

impl RaftNodeConfig {
    pub fn new(node_id: BrokerId, voters: Vec<BrokerId>) -> RaftNodeConfig {
        RaftNodeConfig {
            node_id,
            voters,
            election_tick: 10,
            heartbeat_tick: 2,
            snapshot_interval_entries: 1000,
        }
    }

    fn raft_config(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.node_id.raft_id(),
            election_tick: self.election_tick,
            heartbeat_tick: self.heartbeat_tick,
            min_election_tick: self.election_tick,
            max_election_tick: self.election_tick + 1,
            applied,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        }
    }
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("raft storage: {0}")]
    Store(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("committed entry {offset} does not decode: {error}")]
    Undecodable {
        offset: MetadataOffset,
        error: DecodeError,
    },
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("membership changes are not supported (entry {offset})")]
    ConfChange { offset: MetadataOffset },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<BrokerId> },
    #[error("proposal dropped (leadership transfer or too much uncommitted)")]
    Dropped,
}

/// Where a proposal went. It is committed exactly when a committed batch
/// at `offset` has this `term`; a committed batch at `offset` of another
/// term means it was lost (a new leader overwrote it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub offset: MetadataOffset,
    pub term: u64,
}

/// One committed entry as applied to the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedBatch {
    pub offset: MetadataOffset,
    pub term: u64,
    pub records: Vec<MetadataRecord>,
    /// Err when the image refused the batch (every node refuses it alike).
    pub result: Result<(), ApplyError>,
}

/// What a call produced for the driver to carry out.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send, to `message.to` (a raft id: [`BrokerId::from_raft_id`]).
    pub messages: Vec<Message>,
    /// Batches applied to the image, in log order.
    pub committed: Vec<CommittedBatch>,
    /// The image was replaced by a leader's snapshot at this offset.
    pub snapshot_loaded: Option<MetadataOffset>,
}

impl Output {
    pub fn extend(&mut self, other: Output) {
        self.messages.extend(other.messages);
        self.committed.extend(other.committed);
        if other.snapshot_loaded.is_some() {
            self.snapshot_loaded = other.snapshot_loaded;
        }
    }
}

pub struct RaftNode<S: RaftLogStore> {
    raw: RawNode<S>,
    image: MetadataImage,
    config: RaftNodeConfig,
    /// The term of the last applied entry (0: none since start).
    applied_term: u64,
    /// The last Ready written to the store but not yet synced.
    unsynced_ready: Option<u64>,
    /// A leader's snapshot loaded into the image, to report applied once
    /// it is persisted.
    snapshot_to_mark_applied: Option<u64>,
    /// Messages that may leave only after the store is synced.
    held_messages: Vec<Message>,
    /// Set while a voter that started with an empty log catches up: the
    /// term and commit index of the first append (or snapshot) a leader of
    /// the highest term seen sent it, `None` before any. See
    /// [`RaftNode::abstains_from`]. The store's marker
    /// (`LogCore::catching_up`) keeps it across restarts; `handle_ready`
    /// makes a new target durable before it writes anything else.
    catching_up: Option<CatchUpTarget>,
}

impl<S: RaftLogStore> RaftNode<S> {
    /// Starts (or restarts) a voter on `store`: the image is loaded from the
    /// store's snapshot; committed entries after it are applied again as
    /// raft-rs hands them back.
    ///
    /// A store with an empty log gets the catching-up marker (durably,
    /// before raft-rs can append anything); a store that has it, empty or
    /// part-way through catching up before a restart, starts the voter
    /// catching up to the target it had. A lone voter has no one to catch
    /// up with and never does.
    pub fn new(
        config: RaftNodeConfig,
        mut store: S,
        logger: &slog::Logger,
    ) -> Result<RaftNode<S>, NodeError> {
        let snapshot = store.core().snapshot.clone();
        let applied = snapshot.get_metadata().index;
        let image = if applied == 0 {
            MetadataImage::new()
        } else {
            let image = MetadataImage::decode_snapshot(&snapshot.data)?;
            assert_eq!(
                image.offset().raft_index(),
                applied,
                "snapshot image offset"
            );
            image
        };
        let lone_voter = config.voters == [config.node_id];
        if store.core().last_index() == 0 && store.core().catching_up.is_none() && !lone_voter {
            store.mark_catching_up(None)?;
        }
        let catching_up = store.core().catching_up.filter(|_| !lone_voter);
        let raw = RawNode::new(&config.raft_config(applied), store, logger)?;
        let mut node = RaftNode {
            raw,
            image,
            config,
            applied_term: snapshot.get_metadata().term,
            unsynced_ready: None,
            snapshot_to_mark_applied: None,
            held_messages: Vec::new(),
            catching_up,
        };
        if node.catching_up.is_none() && node.store().core().catching_up.is_some() {
            node.raw.mut_store().clear_catching_up();
        }
        // It may have caught up before a crash took the clear's sync.
        node.note_caught_up();
        Ok(node)
    }

    /// Whether this voter started with an empty log (on this start or an
    /// earlier one) and has not caught up yet, so that it gives no vote
    /// ([`RaftNode::abstains_from`]).
    pub fn is_catching_up(&self) -> bool {
        self.catching_up.is_some()
    }

    pub fn node_id(&self) -> BrokerId {
        self.config.node_id
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn store(&self) -> &S {
        self.raw.store()
    }

    /// The store, for a restart (the simulation crashes it first).
    pub fn into_store(self) -> S {
        self.raw.raft.r.raft_log.store
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn leader(&self) -> Option<BrokerId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(BrokerId::from_raft_id(id)),
        }
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The leader has applied its own term's first entry, so its image holds
    /// everything committed before it took over: only now may its
    /// controller decide from the image (KRaft waits the same way).
    pub fn can_decide(&self) -> bool {
        self.is_leader() && self.applied_term == self.term()
    }

    /// The offset the next proposal will take, on the leader. Records that
    /// name their own offset (a broker epoch) are built with it.
    pub fn next_offset(&self) -> Option<MetadataOffset> {
        self.is_leader()
            .then(|| MetadataOffset::from_raft_index(self.raw.raft.raft_log.last_index() + 1))
    }

    /// Counts a tick. A voter catching up with part of the log counts no
    /// election ticks ([`RaftNode::holds_back_campaign`]).
    pub fn tick(&mut self) {
        if self.holds_back_campaign() {
            return;
        }
        self.raw.tick();
    }

    /// Starts an election now instead of after the election timeout: a
    /// single voter uses it at start so that it leads at once. A voter
    /// catching up with part of the log does not.
    pub fn campaign(&mut self) -> Result<(), raft::Error> {
        if self.holds_back_campaign() {
            return Ok(());
        }
        self.raw.campaign()
    }

    /// A voter catching up whose log is not empty does not campaign: it
    /// would vote for itself, a candidate with a log it has not caught
    /// up yet (see [`RaftNode::abstains_from`]); with the vote of a voter
    /// whose log is no longer than its own it could win while lacking
    /// entries committed with its help before its disk was lost. With an
    /// empty log it may (only voters with empty logs vote for it, as when
    /// the cluster first forms). Only a follower holds back: it becomes
    /// one whenever entries reach it.
    fn holds_back_campaign(&self) -> bool {
        self.catching_up.is_some()
            && self.raw.raft.state == StateRole::Follower
            && self.raw.raft.raft_log.last_index() > 0
    }

    /// Feeds a message from a peer. Errors are the peer's problem (unknown
    /// sender, a local message type) and leave the node unchanged.
    pub fn step(&mut self, mut message: Message) -> Result<(), raft::Error> {
        use raft::eraftpb::MessageType;
        if self.abstains_from(&message) {
            return Ok(());
        }
        match message.get_msg_type() {
            // A heartbeat commits up to what the leader believes this node
            // holds; after a lost log that is more than it holds (raft-rs
            // aborts on it). Nothing is committed by it then: the leader's
            // next append finds the log short and sends it again.
            MessageType::MsgHeartbeat if message.commit > self.raw.raft.raft_log.last_index() => {
                message.commit = self.raw.raft.raft_log.committed;
            }
            _ => {}
        }
        self.raw.step(message)
    }

    /// A voter that started with an empty log does not vote (nor
    /// pre-vote) for a candidate whose log is not empty until it holds
    /// entries, up to the commit index of the first append a leader sent it
    /// (what the cluster had committed when it came back; a leader of a
    /// newer term sets it again).
    ///
    /// Its log is empty on its first start, or when its Raft directory was
    /// lost (a wiped or replaced disk). Raft's votes rest on a voter
    /// remembering its log and its vote; one that forgot both would grant
    /// its vote to any candidate, a stale one lacking entries committed
    /// with this voter's help included, or a second vote in a term where
    /// it gave one already: committed metadata lost, or two leaders in a
    /// term. A candidate with a non-empty log means the cluster has
    /// formed; its leader reaches this voter with appends (or a snapshot)
    /// carrying the commit index, and once this voter's log reaches the
    /// first one it saw it votes by Raft's rules again (lagging behind
    /// later commits as any voter may).
    ///
    /// The state survives restarts: the store keeps a marker
    /// (`LogCore::catching_up`) with the target, durable before the first
    /// entry reaches the empty log (a target before the entries that came
    /// with it) and cleared only with the sync that makes the caught-up
    /// log durable, so a voter that restarts part-way through catching up
    /// goes on catching up instead of voting with the part it holds. Nor
    /// does it campaign with that part ([`RaftNode::holds_back_campaign`]):
    /// its vote for itself would be such a vote.
    ///
    /// The price: a voter that never ran before the cluster formed cannot
    /// be the one that completes a quorum until a leader has reached it,
    /// nor can a voter part-way through catching up.
    /// Not closed (KIP-853's directory ids would): a wiped voter may vote
    /// twice in a term for a candidate whose log is empty too (one the
    /// cluster's first entries never reached); and the commit index it
    /// catches up to is its leader's, which a leader elected after the
    /// wipe may not have raised yet to everything committed before it, or
    /// a stale leader's cut off from the others if that one reached it
    /// first and the current one only after it had caught up
    /// (docs/internals/controller.md).
    fn abstains_from(&mut self, message: &Message) -> bool {
        use raft::eraftpb::MessageType;
        let Some(target) = self.catching_up.as_mut() else {
            return false;
        };
        let leader_commit = match message.get_msg_type() {
            MessageType::MsgAppend => Some(message.commit),
            MessageType::MsgSnapshot => Some(message.get_snapshot().get_metadata().index),
            _ => None,
        };
        // The first commit index a leader sent, or the first of a newer
        // term's leader (the first may have come from a stale leader cut
        // off from the others); not the latest, which a lagging voter
        // could chase for good.
        if let Some(commit) = leader_commit
            && message.term >= self.raw.raft.term
            && target.is_none_or(|(term, _)| message.term > term)
        {
            *target = Some((message.term, commit));
        }
        if self.note_caught_up() {
            return false;
        }
        match message.get_msg_type() {
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => message.index > 0,
            // A leadership transfer is a campaign.
            MessageType::MsgTimeoutNow => self.holds_back_campaign(),
            _ => false,
        }
    }

    /// Ends catching up once the store holds the log up to the target
    /// commit index; returns whether it has ended. The store's entries, not
    /// raft-rs's unstable ones: the store's next sync makes them durable
    /// before the cleared marker, so a crash leaves either the marker or
    /// the log that ended it.
    fn note_caught_up(&mut self) -> bool {
        let target = match self.catching_up {
            None => return true,
            Some(None) => return false,
            Some(Some((_, commit))) => commit,
        };
        let last_index = self.raw.store().core().last_index();
        if last_index > 0 && last_index >= target {
            self.stop_catching_up();
            return true;
        }
        false
    }

    fn stop_catching_up(&mut self) {
        self.catching_up = None;
        self.raw.mut_store().clear_catching_up();
    }

    /// Proposes one batch of records (an entry). Only the leader proposes.
    pub fn propose(&mut self, batch: &RecordBatch) -> Result<Proposal, ProposeError> {
        let Some(offset) = self.next_offset() else {
            return Err(ProposeError::NotLeader {
                leader: self.leader(),
            });
        };
        let term = self.term();
        match self.raw.propose(Vec::new(), batch.encode()) {
            Ok(()) => {}
            Err(raft::Error::ProposalDropped) => return Err(ProposeError::Dropped),
            Err(error) => panic!("raft-rs propose failed unexpectedly: {error}"),
        }
        assert_eq!(
            self.raw.raft.raft_log.last_index(),
            offset.raft_index(),
            "a proposal lands where next_offset said"
        );
        Ok(Proposal { offset, term })
    }

    /// Tells the leader whether a snapshot message reached `to`.
    pub fn report_snapshot(&mut self, to: BrokerId, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to.raft_id(), status);
    }

    pub fn report_unreachable(&mut self, to: BrokerId) {
        self.raw.report_unreachable(to.raft_id());
    }

    /// Whether raft-rs has a Ready for `handle_ready`.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Whether any Ready or unsynced state waits.
    pub fn has_work(&self) -> bool {
        self.raw.has_ready() || self.unsynced_ready.is_some()
    }

    /// Takes the pending Ready: writes it to the store (not durable yet),
    /// applies committed batches, and returns messages that may leave now.
    pub fn handle_ready(&mut self) -> Result<Output, NodeError> {
        if self.is_leader() && self.catching_up.is_some() {
            // Its log is the cluster's now (it won a quorum's votes).
            self.stop_catching_up();
        }
        if let Some(target) = self.catching_up
            && self.raw.store().core().catching_up != Some(target)
        {
            // A new target, durable before the entries that came with it:
            // after a crash the voter knows what it was catching up to.
            self.raw.mut_store().mark_catching_up(target)?;
        }
        let mut output = Output::default();
        if !self.raw.has_ready() {
            return Ok(output);
        }
        let mut ready = self.raw.ready();
        output.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.load_snapshot(&snapshot)?;
            self.raw.mut_store().apply_snapshot(&snapshot)?;
            output.snapshot_loaded = Some(self.image.offset());
        }
        // raft-rs leaves `applied` to the application, snapshots included:
        // if it stayed behind a loaded snapshot, raft-rs would later ask the
        // store for entries the snapshot replaced. It may only move once
        // the snapshot is persisted (`persist`).
        if let Some(offset) = output.snapshot_loaded {
            self.snapshot_to_mark_applied = Some(offset.raft_index());
        }
        let mut applied = None;
        let committed = ready.take_committed_entries();
        if let Some(last) = self.apply_committed(committed, &mut output)? {
            applied = Some(last);
        }
        if !ready.entries().is_empty() {
            self.raw.mut_store().append(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            self.raw.mut_store().set_hard_state(hard_state)?;
        }
        // Entries just written may reach the target: the marker's clear
        // then goes out with this Ready's sync, after them.
        self.note_caught_up();
        self.held_messages.extend(ready.take_persisted_messages());
        self.unsynced_ready = Some(ready.number());
        self.raw.advance_append_async(ready);
        if let Some(index) = applied {
            self.raw.advance_apply_to(index);
        }
        Ok(output)
    }

    /// Syncs the store, then releases the messages that waited for it.
    /// Compacts the log into a snapshot when it has grown long enough.
    pub fn persist(&mut self) -> Result<Output, NodeError> {
        let mut output = Output::default();
        let Some(number) = self.unsynced_ready.take() else {
            return Ok(output);
        };
        self.raw.mut_store().sync()?;
        self.raw.on_persist_ready(number);
        if let Some(index) = self.snapshot_to_mark_applied.take() {
            self.raw.advance_apply_to(index);
        }
        output.messages.append(&mut self.held_messages);
        self.maybe_compact()?;
        Ok(output)
    }

    /// `handle_ready` and `persist` until nothing is left: the production
    /// driver's loop body (one sync per round).
    pub fn drive(&mut self) -> Result<Output, NodeError> {
        let mut output = Output::default();
        while self.raw.has_ready() || self.unsynced_ready.is_some() {
            output.extend(self.handle_ready()?);
            output.extend(self.persist()?);
        }
        Ok(output)
    }

    fn load_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let image = MetadataImage::decode_snapshot(&snapshot.data)?;
        assert_eq!(
            image.offset().raft_index(),
            snapshot.get_metadata().index,
            "a snapshot's image reflects its index"
        );
        assert!(
            image.offset() > self.image.offset(),
            "snapshots move forward"
        );
        self.image = image;
        self.applied_term = snapshot.get_metadata().term;
        Ok(())
    }

    /// Applies committed entries to the image; returns the last index.
    fn apply_committed(
        &mut self,
        entries: Vec<raft::eraftpb::Entry>,
        output: &mut Output,
    ) -> Result<Option<u64>, NodeError> {
        let Some(last) = entries.last().map(|entry| entry.index) else {
            return Ok(None);
        };
        for entry in entries {
            let offset = MetadataOffset::from_raft_index(entry.index);
            if entry.get_entry_type() != EntryType::EntryNormal {
                return Err(NodeError::ConfChange { offset });
            }
            // A new leader's first entry is empty; it still moves the image.
            let records = if entry.data.is_empty() {
                Vec::new()
            } else {
                RecordBatch::decode(&entry.data)
                    .map_err(|error| NodeError::Undecodable { offset, error })?
                    .records
            };
            let result = self.image.apply_batch(offset, &records);
            self.applied_term = entry.term;
            output.committed.push(CommittedBatch {
                offset,
                term: entry.term,
                records,
                result,
            });
        }
        assert_eq!(
            self.image.offset().raft_index(),
            last,
            "image offset = applied index"
        );
        Ok(Some(last))
    }

    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        let applied = self.image.offset().raft_index();
        let store = self.raw.store();
        let snapshot_index = store.core().snapshot_index();
        if applied < snapshot_index + self.config.snapshot_interval_entries {
            return Ok(());
        }
        let mut snapshot = Snapshot::default();
        snapshot.data = self.image.encode_snapshot().into();
        let metadata = snapshot.mut_metadata();
        metadata.index = applied;
        metadata.term = store.core().term(applied)?;
        metadata.set_conf_state(store.core().conf_state.clone());
        self.raw.mut_store().compact(snapshot)?;
        Ok(())
    }
}

/// A Raft message as bytes for the wire (protobuf, raft-rs's own format).
pub fn encode_message(message: &Message) -> Vec<u8> {
    message
        .write_to_bytes()
        .expect("encoding an in-memory protobuf message cannot fail")
}

pub fn decode_message(bytes: &[u8]) -> Result<Message, raft::Error> {
    Ok(Message::parse_from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::controller::logger;
    use crate::controller::storage::MemRaftStore;

    fn voters() -> Vec<BrokerId> {
        vec![BrokerId(0)]
    }

    fn single_node() -> RaftNode<MemRaftStore> {
        let store = MemRaftStore::bootstrap(&[BrokerId(0).raft_id()]);
        let mut config = RaftNodeConfig::new(BrokerId(0), voters());
        config.snapshot_interval_entries = 5;
        RaftNode::new(config, store, &logger::discard()).unwrap()
    }

    fn elect(node: &mut RaftNode<MemRaftStore>) {
        for _ in 0..30 {
            node.tick();
            node.drive().unwrap();
            if node.is_leader() {
                return;
            }
        }
        panic!("a single voter elects itself");
    }

    #[test]
    fn a_single_voter_commits_and_restarts_from_snapshot_and_tail() {
        let mut node = single_node();
        elect(&mut node);
        let mut committed = Vec::new();
        for _ in 0..12 {
            let proposal = node
                .propose(&RecordBatch::new(vec![MetadataRecord::NoOp]))
                .unwrap();
            let output = node.drive().unwrap();
            assert!(
                output
                    .committed
                    .iter()
                    .any(|batch| batch.offset == proposal.offset)
            );
            committed.extend(output.committed);
        }
        let image = node.image().clone();
        assert!(
            node.store().core().snapshot_index() > 0,
            "the log was compacted"
        );
        let store = node.into_store().crash();
        let mut config = RaftNodeConfig::new(BrokerId(0), voters());
        config.snapshot_interval_entries = 5;
        let mut node = RaftNode::new(config, store, &logger::discard()).unwrap();
        node.drive().unwrap();
        assert_eq!(node.image(), &image);
    }

    #[test]
    fn a_voter_on_files_restarts_with_the_same_image() {
        use crate::controller::records::TopicRecord;
        use crate::controller::storage::FileRaftStore;
        use crate::controller::types::TopicId;

        let dir = std::env::temp_dir().join(format!("sluice-raft-node-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let voters = [BrokerId(0).raft_id()];
        let mut config = RaftNodeConfig::new(BrokerId(0), vec![BrokerId(0)]);
        config.snapshot_interval_entries = 4;
        let store = FileRaftStore::open(&dir, &voters).unwrap();
        let mut node = RaftNode::new(config.clone(), store, &logger::discard()).unwrap();
        for _ in 0..30 {
            node.tick();
            node.drive().unwrap();
        }
        assert!(node.is_leader());
        for index in 0..10u8 {
            let topic = MetadataRecord::Topic(TopicRecord {
                name: format!("topic-{index}"),
                topic_id: TopicId(uuid::Uuid::from_bytes([index; 16])),
            });
            node.propose(&RecordBatch::new(vec![topic])).unwrap();
            node.drive().unwrap();
        }
        let image = node.image().clone();
        assert_eq!(image.topics().len(), 10);
        drop(node);
        let store = FileRaftStore::open(&dir, &voters).unwrap();
        assert!(
            store.core().snapshot_index() > 0,
            "the log was compacted on disk"
        );
        let mut node = RaftNode::new(config, store, &logger::discard()).unwrap();
        node.drive().unwrap();
        assert_eq!(node.image(), &image);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Three voters on memory stores and a switchboard: `links[i]` says
    /// whether node i's messages get through.
    struct Trio {
        nodes: Vec<Option<RaftNode<MemRaftStore>>>,
        links: [bool; 3],
    }

    impl Trio {
        fn voters() -> Vec<BrokerId> {
            (0..3).map(BrokerId).collect()
        }

        fn fresh(index: usize) -> RaftNode<MemRaftStore> {
            let raft_ids: Vec<u64> = Trio::voters().iter().map(|id| id.raft_id()).collect();
            Trio::start(index, MemRaftStore::bootstrap(&raft_ids))
        }

        fn start(index: usize, store: MemRaftStore) -> RaftNode<MemRaftStore> {
            let config = RaftNodeConfig::new(BrokerId(index as i32), Trio::voters());
            RaftNode::new(config, store, &logger::discard()).unwrap()
        }

        fn new() -> Trio {
            Trio {
                nodes: (0..3).map(|index| Some(Trio::fresh(index))).collect(),
                links: [true; 3],
            }
        }

        fn node(&mut self, index: usize) -> &mut RaftNode<MemRaftStore> {
            self.nodes[index].as_mut().unwrap()
        }

        /// Delivers messages until none is left (those to or from a node
        /// cut off or down are lost).
        fn settle(&mut self) {
            loop {
                let mut messages = Vec::new();
                for index in 0..3 {
                    if let Some(node) = self.nodes[index].as_mut() {
                        let output = node.drive().unwrap();
                        if self.links[index] {
                            messages.extend(output.messages);
                        }
                    }
                }
                if messages.is_empty() {
                    return;
                }
                for message in messages {
                    let to = BrokerId::from_raft_id(message.to).0 as usize;
                    if self.links[to]
                        && let Some(node) = self.nodes[to].as_mut()
                    {
                        let _ = node.step(message);
                    }
                }
            }
        }

        /// Ticks `candidate` until it starts an election, then lets the
        /// messages flow; ticks everyone a while after.
        fn campaign(&mut self, candidate: usize) {
            self.node(candidate).campaign().unwrap();
            for _ in 0..40 {
                self.settle();
                for index in 0..3 {
                    if let Some(node) = self.nodes[index].as_mut() {
                        node.tick();
                    }
                }
            }
            self.settle();
        }

        fn propose_topic(&mut self, leader: usize, name: &str) {
            use crate::controller::records::TopicRecord;
            use crate::controller::types::TopicId;
            let topic = MetadataRecord::Topic(TopicRecord {
                name: name.to_string(),
                topic_id: TopicId(uuid::Uuid::new_v4()),
            });
            self.node(leader)
                .propose(&RecordBatch::new(vec![topic]))
                .unwrap();
            self.settle();
        }
    }

    /// A voter back with an empty log (its Raft directory lost) does not
    /// help a stale candidate win: the entry committed by the old leader
    /// and this voter before it lost its disk stays committed.
    #[test]
    fn a_voter_that_lost_its_log_does_not_elect_a_stale_candidate() {
        let mut trio = Trio::new();
        trio.campaign(0);
        assert!(trio.node(0).is_leader());
        trio.propose_topic(0, "everyone-has-it");
        // Node 2 falls behind; nodes 0 and 1 commit one more entry.
        trio.links[2] = false;
        trio.propose_topic(0, "committed-by-0-and-1");
        assert!(
            trio.node(1)
                .image()
                .topic_by_name("committed-by-0-and-1")
                .is_some()
        );
        assert!(
            trio.node(2)
                .image()
                .topic_by_name("committed-by-0-and-1")
                .is_none()
        );
        // The leader stops; node 1 comes back with a wiped Raft directory.
        let leader_store = trio.nodes[0].take().unwrap().into_store().crash();
        trio.nodes[1] = Some(Trio::fresh(1));
        trio.links[2] = true;
        trio.campaign(2);
        assert!(
            !trio.node(2).is_leader(),
            "a candidate missing a committed entry won with the vote of a voter that forgot it"
        );
        // The old leader returns: whoever leads has the entry, and every
        // node ends with it.
        trio.nodes[0] = Some(Trio::start(0, leader_store));
        trio.campaign(0);
        let leader = (0..3).find(|index| trio.node(*index).is_leader()).unwrap();
        trio.propose_topic(leader, "after");
        for index in 0..3 {
            let image = trio.node(index).image();
            assert!(
                image.topic_by_name("committed-by-0-and-1").is_some(),
                "node {index}"
            );
            assert!(image.topic_by_name("after").is_some(), "node {index}");
        }
    }

    /// Node 2 asks node 1 for its vote in the next term, as a leadership
    /// transfer does (no leader lease in the way); whether node 1 grants it.
    fn grants_vote_to_2(trio: &mut Trio) -> bool {
        use raft::eraftpb::MessageType;
        let candidate = &trio.node(2).raw.raft;
        let mut request = Message::default();
        request.set_msg_type(MessageType::MsgRequestVote);
        request.from = BrokerId(2).raft_id();
        request.to = BrokerId(1).raft_id();
        request.term = candidate.term + 1;
        request.index = candidate.raft_log.last_index();
        request.log_term = candidate.raft_log.last_term();
        request.context = b"CampaignTransfer".to_vec().into();
        trio.node(1).step(request).unwrap();
        let output = trio.node(1).drive().unwrap();
        output.messages.iter().any(|message| {
            message.get_msg_type() == MessageType::MsgRequestVoteResponse && !message.reject
        })
    }

    /// A voter back with an empty log gives no vote to a candidate with a
    /// log, and votes by Raft's rules again once a leader has brought it
    /// up to the commit index.
    #[test]
    fn a_voter_that_lost_its_log_votes_again_once_caught_up() {
        let mut trio = Trio::new();
        trio.campaign(0);
        trio.propose_topic(0, "before");
        trio.nodes[1] = Some(Trio::fresh(1));
        assert!(!grants_vote_to_2(&mut trio), "voted with an empty log");
        trio.nodes[1] = Some(Trio::fresh(1));
        trio.propose_topic(0, "while-1-catches-up");
        assert!(trio.node(1).image().topic_by_name("before").is_some());
        assert!(grants_vote_to_2(&mut trio), "caught up, it votes");
    }

    /// Leader 0's first append to node 1, cut short: entries up to
    /// `last_index`, with the leader's commit index.
    fn append_part_of_the_log(trio: &mut Trio, last_index: u64) {
        use raft::eraftpb::MessageType;
        let leader = &trio.node(0).raw.raft;
        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        append.from = BrokerId(0).raft_id();
        append.to = BrokerId(1).raft_id();
        append.term = leader.term;
        append.commit = leader.raft_log.committed;
        assert!(append.commit > last_index, "the commit index is further");
        let count = usize::try_from(last_index).unwrap();
        append.entries = trio.node(0).store().core().entries[..count].to_vec().into();
        trio.node(1).step(append).unwrap();
        trio.node(1).drive().unwrap();
    }

    /// Restarts node `index` on its store as a power loss leaves it.
    fn restart(trio: &mut Trio, index: usize) {
        let store = trio.nodes[index].take().unwrap().into_store().crash();
        trio.nodes[index] = Some(Trio::start(index, store));
    }

    /// A voter back with an empty log that restarts part-way through
    /// catching up (some entries, fewer than the commit index it is
    /// catching up to) still gives no vote: the marker in its store
    /// survives the restart. Once caught up it votes again, and a further
    /// restart finds the marker cleared.
    #[test]
    fn a_voter_restarted_part_way_through_catching_up_still_gives_no_vote() {
        let mut trio = Trio::new();
        trio.campaign(0);
        for name in ["a", "b", "c"] {
            trio.propose_topic(0, name);
        }
        // Node 2 falls behind; nodes 0 and 1 commit one more entry.
        trio.links[2] = false;
        trio.propose_topic(0, "committed-by-0-and-1");
        let stale_last_index = trio.node(2).store().core().last_index();
        let leader_commit = trio.node(0).commit_index();
        assert!(leader_commit > stale_last_index);
        // Node 1 loses its disk; the leader's first append brings it part
        // of the log only (less than node 2 holds), and the commit index.
        trio.nodes[1] = Some(Trio::fresh(1));
        append_part_of_the_log(&mut trio, stale_last_index - 1);
        assert_eq!(
            trio.node(1).store().core().last_index(),
            stale_last_index - 1
        );
        assert!(trio.node(1).is_catching_up());
        let term = trio.node(0).term();
        assert_eq!(
            trio.node(1).store().core().catching_up,
            Some(Some((term, leader_commit))),
            "the target is durable"
        );
        // It restarts with that part of the log.
        restart(&mut trio, 1);
        assert!(
            !grants_vote_to_2(&mut trio),
            "a voter restarted part-way through catching up voted for a candidate missing a \
             committed entry"
        );
        assert!(trio.node(1).is_catching_up());
        // The leader reaches it and brings it up to date, node 2 too.
        trio.links[2] = true;
        trio.propose_topic(0, "while-1-catches-up");
        assert!(!trio.node(1).is_catching_up());
        assert!(
            trio.node(1)
                .image()
                .topic_by_name("committed-by-0-and-1")
                .is_some()
        );
        assert!(grants_vote_to_2(&mut trio), "caught up, it votes");
        // A new term's leader; node 1 restarts again and votes by Raft's
        // rules: the clear was durable.
        trio.campaign(0);
        let leader = (0..3).find(|index| trio.node(*index).is_leader()).unwrap();
        trio.propose_topic(leader, "after");
        restart(&mut trio, 1);
        assert!(!trio.node(1).is_catching_up());
        assert!(
            grants_vote_to_2(&mut trio),
            "restarted after catching up, it votes"
        );
    }

    /// A voter back with an empty log, brought part of the log (as much as
    /// a stale voter holds, less than was committed), does not campaign:
    /// with the stale voter's vote it would win without the entry
    /// committed by the old leader and itself before it lost its disk.
    #[test]
    fn a_voter_part_way_through_catching_up_does_not_campaign() {
        let mut trio = Trio::new();
        trio.campaign(0);
        for name in ["a", "b", "c"] {
            trio.propose_topic(0, name);
        }
        trio.links[2] = false;
        trio.propose_topic(0, "committed-by-0-and-1");
        let stale_last_index = trio.node(2).store().core().last_index();
        trio.nodes[1] = Some(Trio::fresh(1));
        append_part_of_the_log(&mut trio, stale_last_index);
        assert_eq!(
            trio.node(1).store().core().last_index(),
            stale_last_index,
            "as much as the stale voter"
        );
        // The old leader stops; nodes 1 and 2 are alone together.
        let leader_store = trio.nodes[0].take().unwrap().into_store().crash();
        trio.links[2] = true;
        trio.campaign(1);
        trio.campaign(2);
        assert!(
            !trio.node(1).is_leader() && !trio.node(2).is_leader(),
            "a voter catching up won an election lacking a committed entry"
        );
        // The old leader returns: the entry stays committed everywhere.
        trio.nodes[0] = Some(Trio::start(0, leader_store));
        trio.campaign(0);
        let leader = (0..3).find(|index| trio.node(*index).is_leader()).unwrap();
        trio.propose_topic(leader, "after");
        for index in 0..3 {
            let image = trio.node(index).image();
            assert!(
                image.topic_by_name("committed-by-0-and-1").is_some(),
                "node {index}"
            );
            assert!(image.topic_by_name("after").is_some(), "node {index}");
        }
    }

    /// A voter that crashed in the sync that would have cleared its
    /// marker finds at the restart that its log reaches the target the
    /// marker kept, and votes again.
    #[test]
    fn a_voter_whose_log_reached_the_kept_target_is_caught_up_at_restart() {
        use crate::controller::storage::RaftLogStore;
        let raft_ids: Vec<u64> = Trio::voters().iter().map(|id| id.raft_id()).collect();
        let mut store = MemRaftStore::bootstrap(&raft_ids);
        store.mark_catching_up(Some((1, 2))).unwrap();
        let entries: Vec<_> = (1..=2)
            .map(|index| {
                let mut entry = raft::eraftpb::Entry::default();
                entry.index = index;
                entry.term = 1;
                entry
            })
            .collect();
        store.append(&entries[..1]).unwrap();
        store.sync().unwrap();
        let node = Trio::start(1, store.clone().crash());
        assert!(node.is_catching_up(), "short of the target");
        store.append(&entries[1..]).unwrap();
        store.sync().unwrap();
        let mut node = Trio::start(1, store.crash());
        assert!(!node.is_catching_up(), "at the target");
        node.drive().unwrap();
    }

    /// Abstaining does not stop a cluster forming: every log is empty then.
    #[test]
    fn voters_with_empty_logs_elect_the_first_leader() {
        let mut trio = Trio::new();
        trio.links[0] = false;
        trio.campaign(1);
        assert!(trio.node(1).is_leader());
        trio.propose_topic(1, "first");
        assert!(trio.node(2).image().topic_by_name("first").is_some());
    }

    #[test]
    fn only_the_leader_proposes() {
        let mut node = single_node();
        assert!(matches!(
            node.propose(&RecordBatch::default()),
            Err(ProposeError::NotLeader { leader: None })
        ));
    }

    #[test]
    fn messages_round_trip_through_protobuf() {
        let mut message = Message::default();
        message.to = 2;
        message.from = 1;
        message.term = 7;
        assert_eq!(decode_message(&encode_message(&message)).unwrap(), message);
    }
}
