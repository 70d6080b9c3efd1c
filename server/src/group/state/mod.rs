//! One consumer group's state machine: Kafka's classic rebalance protocol.
//!
//! ```text
//!            join                     join window closes          leader's SyncGroup
//!  Empty ------------> Preparing ----------------------> Completing ------------------> Stable
//!    ^                 Rebalance   (all members rejoined   Rebalance                      |
//!    |                   ^   ^      or the rebalance                                      |
//!    |   window closes   |   |      timeout passed)                                       |
//!    +--- with nobody ---+   +------ member joins / leaves / changes protocols / expires -+
//! ```
//!
//! Invariants (asserted in [`Group::check`]):
//! - `Empty` has no members; every other live state has at least one, and
//!   the leader (when set) is a member.
//! - Generations only grow; the first completed join is generation 1.
//! - A member waits for at most one JoinGroup and one SyncGroup answer.
//! - Static members: `static_members` maps each instance id to exactly the
//!   member holding it.
//!
//! This module does no I/O: the coordinator (group/mod.rs) persists what
//! [`Group::take_dirty`] reports and answers the waiters here through
//! oneshot channels. Where an answer must wait for the group record (the
//! leader's SyncGroup, a static member's replacement: [`Reply::Store`]),
//! the coordinator writes it and reports the outcome back
//! ([`Group::finish_sync`], [`Group::finish_static_replacement`]). Time is
//! passed in, so the tests drive it directly.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use kafka_protocol::error::ResponseError;

use crate::group::records::{GroupValue, MemberValue};

/// The protocol type of Kafka consumers (the only one whose member
/// metadata the broker decodes, for OffsetDelete and describe).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Broker settings the state machine needs.
#[derive(Clone, Copy, Debug)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub session_timeout_min_ms: i32,
    pub session_timeout_max_ms: i32,
}

/// A JoinGroup answer.
#[derive(Clone, Debug)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members (with their metadata for the
    /// chosen protocol).
    pub members: Vec<JoinedMember>,
    /// KIP-814: a static leader rejoining a stable group must not compute
    /// a new assignment.
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A SyncGroup answer.
#[derive(Clone, Debug)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer now, or one to wait for.
pub enum Reply<T> {
    Now(T),
    Wait(oneshot::Receiver<T>),
    /// A static member replaced `member_id`'s predecessor (KIP-345): its
    /// answer waits until the group record holding the new member id is
    /// durable. The caller writes that record in the same step (before
    /// anything else changes the group) and reports the outcome with
    /// [`Group::finish_static_replacement`].
    Store {
        receiver: oneshot::Receiver<T>,
        member_id: String,
    },
}

/// What a JoinGroup asks.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new member is first given an id to rejoin with (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: a restarted static leader of a Stable group is told it leads,
    /// with skip_assignment (KIP-814); an older one is told the old leader
    /// id, so that it computes no assignment the Stable group would ignore.
    pub supports_skip_assignment: bool,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// Supported protocols in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heard: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// Joined this generation and has not sent SyncGroup yet (Kafka's
    /// pendingSyncMembers): removed if it has not by the group's
    /// `sync_deadline`.
    pending_sync: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }

    fn session_expired(&self, now: Instant) -> bool {
        // A member waiting for an answer is alive: its client is blocked on
        // the request (Kafka completes the heartbeat for such members).
        self.join_waiter.is_none()
            && self.sync_waiter.is_none()
            && now.duration_since(self.last_heard)
                > Duration::from_millis(u64::try_from(self.session_timeout_ms).unwrap_or(0))
    }
}

/// A static member's replacement whose group record is being written
/// (Kafka's updateStaticMemberAndRebalance in a Stable group): the new
/// member id is answered once the record is durable; if the write fails the
/// old member id gets the instance back, with these settings.
struct Replacement {
    instance_id: String,
    old_id: String,
    protocols: Vec<(String, Bytes)>,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    client_id: String,
    client_host: String,
    /// The leader before the replacement: what a JoinGroup below v9 is
    /// told leads.
    leader_before: Option<String>,
    supports_skip_assignment: bool,
}

/// A committed offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Offset of the record in `__consumer_offsets` (later commits win,
    /// whatever order their appends complete in).
    pub record_offset: i64,
}

/// Longest string a group record stores (a 16-bit length, Kafka's
/// non-flexible versions).
const STORED_STRING_MAX: usize = i16::MAX as usize;

/// Longest part of a client id a member id starts with.
const MEMBER_ID_PREFIX_MAX: usize = 255;

pub struct Group {
    pub id: String,
    /// The `__consumer_offsets` partition holding this group.
    pub partition: i32,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined yet, with
    /// the time after which they are forgotten.
    pending_members: HashMap<String, Instant>,
    static_members: HashMap<String, String>,
    /// Static members replaced in a Stable group whose record is being
    /// written, by new member id; each waits in JoinGroup until then.
    replacements: HashMap<String, Replacement>,
    /// When the join window closes.
    join_deadline: Option<Instant>,
    /// Set while the first join window of an empty group is open (it is
    /// extended as members arrive, up to this).
    initial_join_limit: Option<Instant>,
    /// Wall-clock ms of the last state change (offset expiry of empty groups).
    pub state_timestamp: i64,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// The group metadata changed and must be written.
    dirty: bool,
    /// OffsetCommits written but not applied yet: the group must not be
    /// forgotten under them.
    pub commits_in_flight: usize,
    /// TxnOffsetCommits written per producer id, waiting for their
    /// transaction's marker: a commit marker applies them, an abort drops
    /// them (`txn::hooks::after_offsets_marker`). OffsetFetch shows none.
    pub pending_txn_offsets: BTreeMap<i64, BTreeMap<(String, i32), CommittedOffset>>,
    /// Topics deleted while commits were in flight, with the offsets
    /// partition's log end at the deletion: a commit written before it
    /// (a lower record offset) is for the deleted topic and is not applied
    /// when it completes (`group::forget_topics`). Cleared once no commit
    /// is in flight.
    pub forgotten: BTreeMap<String, i64>,
    /// Offsets deleted (OffsetDelete) while commits were in flight, with
    /// their tombstone's record offset: a commit written before the
    /// tombstone is not applied when it completes
    /// ([`Group::deleted_after`]). Cleared once no commit is in flight.
    deleted_offsets: BTreeMap<(String, i32), i64>,
    /// Which creation of the group this is (unique in the process): a
    /// group unloaded and loaded again is a new one.
    incarnation: u64,
    /// The leader's assignment arrived and the group record holding it is
    /// being written: the group turns Stable, and the members get their
    /// assignments, only once it is durable ([`Group::finish_sync`]), as in
    /// Kafka. Cleared by any state change.
    assignment_pending: bool,
    /// Members still `pending_sync` when this passes are removed (Kafka
    /// 3.x: the rebalance timeout after the join completed), so a member
    /// that joined and never synced does not hold the group.
    sync_deadline: Option<Instant>,
}

/// The next [`Group::incarnation`].
static INCARNATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Group {
    /// Whether a commit for `topic` written at `record_offset` came before
    /// the topic's deletion (see `forgotten`).
    pub fn forgets(&self, topic: &str, record_offset: i64) -> bool {
        self.forgotten
            .get(topic)
            .is_some_and(|deleted_at| record_offset < *deleted_at)
    }

    /// OffsetDelete appended the tombstones of `deleted` (key, tombstone's
    /// record offset): the offsets go from memory in that same step, as
    /// Kafka removes them before its append. A commit appended after a
    /// tombstone applies when it completes (removed after the tombstone
    /// was durable, it was lost from memory, yet a load of the log
    /// restored it); one appended before it does not
    /// ([`Group::deleted_after`]).
    pub fn delete_offsets(&mut self, deleted: impl IntoIterator<Item = ((String, i32), i64)>) {
        for (key, tombstone_offset) in deleted {
            self.offsets.remove(&key);
            if self.commits_in_flight > 0 {
                self.deleted_offsets.insert(key, tombstone_offset);
            }
        }
    }

    /// Whether a commit of `topic`'s `partition` written at
    /// `record_offset` was followed by an OffsetDelete tombstone (see
    /// [`Group::delete_offsets`]).
    pub fn deleted_after(&self, topic: &str, partition: i32, record_offset: i64) -> bool {
        self.deleted_offsets
            .get(&(topic.to_string(), partition))
            .is_some_and(|tombstone_offset| record_offset < *tombstone_offset)
    }

    /// A commit's write starts; returns the group's incarnation, which
    /// [`Group::commit_done`] is given back.
    pub fn begin_commit(&mut self) -> u64 {
        self.commits_in_flight += 1;
        self.incarnation
    }

    /// A commit begun on incarnation `incarnation` completed (applied or
    /// failed). A group unloaded and loaded again meanwhile is another
    /// incarnation, which never counted that commit.
    pub fn commit_done(&mut self, incarnation: u64) {
        if incarnation != self.incarnation {
            return;
        }
        self.commits_in_flight = self.commits_in_flight.saturating_sub(1);
        if self.commits_in_flight == 0 {
            self.forgotten.clear();
            self.deleted_offsets.clear();
        }
    }

    /// A TxnOffsetCommit of `producer_id` was appended (not durable yet):
    /// its offsets wait for the transaction's marker. Called in the
    /// synchronous step that appends them, as Kafka records them before
    /// its append: a marker is appended after them, so its end of the
    /// transaction ([`Group::end_txn`]) always finds them. Recorded once
    /// the write completed, they came after an abort marker that had
    /// already run, stayed pending, and the producer's next commit marker
    /// applied them.
    pub fn add_pending_txn_offsets(
        &mut self,
        producer_id: i64,
        offsets: impl IntoIterator<Item = ((String, i32), CommittedOffset)>,
    ) {
        let pending = self.pending_txn_offsets.entry(producer_id).or_default();
        for (key, committed) in offsets {
            pending.insert(key, committed);
        }
    }

    /// The write of pending offsets of `producer_id` failed: drop those
    /// still pending (`(key, record offset)`; Kafka's `failPendingTxnOffsetCommit`).
    /// A marker may have ended them already, or a later commit replaced them.
    pub fn drop_failed_txn_offsets(&mut self, producer_id: i64, written: &[((String, i32), i64)]) {
        let Some(pending) = self.pending_txn_offsets.get_mut(&producer_id) else {
            return;
        };
        for (key, record_offset) in written {
            if pending
                .get(key)
                .is_some_and(|committed| committed.record_offset == *record_offset)
            {
                pending.remove(key);
            }
        }
        if pending.is_empty() {
            self.pending_txn_offsets.remove(&producer_id);
        }
    }

    /// A transaction marker of `producer_id` at `marker_offset`: remove and
    /// return its pending offsets written before the marker (the caller
    /// applies them on a commit). Those written after it are the next
    /// transaction's and stay pending. Whatever their epoch, as a load of
    /// the log reads them: the append refused those of an epoch older than
    /// the producer's on the partition (handlers/txn_offset_commit.rs).
    pub fn end_txn(
        &mut self,
        producer_id: i64,
        marker_offset: i64,
    ) -> Vec<((String, i32), CommittedOffset)> {
        let Some(pending) = self.pending_txn_offsets.get_mut(&producer_id) else {
            return Vec::new();
        };
        let (ended, later): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(pending)
            .into_iter()
            .partition(|(_, committed)| committed.record_offset < marker_offset);
        if later.is_empty() {
            self.pending_txn_offsets.remove(&producer_id);
        } else {
            *pending = later;
        }
        ended.into_iter().collect()
    }

    /// This incarnation (see [`Group::begin_commit`]).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn new(id: &str, partition: i32, wall_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            partition,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            replacements: HashMap::new(),
            join_deadline: None,
            initial_join_limit: None,
            state_timestamp: wall_ms,
            offsets: BTreeMap::new(),
            dirty: false,
            commits_in_flight: 0,
            pending_txn_offsets: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            deleted_offsets: BTreeMap::new(),
            incarnation: INCARNATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            assignment_pending: false,
            sync_deadline: None,
        }
    }

    /// Restore a group from its stored metadata (at partition load). Members
    /// come back as they were, as in Kafka: they keep heartbeating or expire
    /// after their session timeout.
    pub fn restore(&mut self, value: GroupValue, now: Instant) {
        self.generation = value.generation;
        self.protocol_type = Some(value.protocol_type).filter(|kind| !kind.is_empty());
        self.protocol = value.protocol;
        self.leader = value.leader;
        self.state_timestamp = value.state_timestamp;
        self.members.clear();
        self.static_members.clear();
        self.replacements.clear();
        for stored in value.members {
            let protocol = self.protocol.clone().unwrap_or_default();
            if let Some(instance) = &stored.instance_id {
                self.static_members
                    .insert(instance.clone(), stored.member_id.clone());
            }
            self.members.insert(
                stored.member_id.clone(),
                Member {
                    id: stored.member_id,
                    instance_id: stored.instance_id,
                    client_id: stored.client_id,
                    client_host: stored.client_host,
                    session_timeout_ms: stored.session_timeout_ms,
                    rebalance_timeout_ms: stored.rebalance_timeout_ms,
                    protocols: vec![(protocol, stored.subscription)],
                    assignment: stored.assignment,
                    last_heard: now,
                    join_waiter: None,
                    sync_waiter: None,
                    pending_sync: false,
                },
            );
        }
        // A record is what the disk says, not what this code wrote: two
        // members stored under one id (a record of an older version cut
        // long ids to one prefix) leave a static instance with no member
        // holding it. Such mappings go, said so, rather than failing the
        // checks below (an abort at every load of the partition).
        let members = &self.members;
        let id = &self.id;
        self.static_members.retain(|instance, holder| {
            let held = members
                .get(holder)
                .is_some_and(|member| member.instance_id.as_deref() == Some(instance.as_str()));
            if !held {
                tracing::warn!(group = %id, %instance, member = %holder, "stored group record: a static instance without its member; dropped");
            }
            held
        });
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        if self
            .leader
            .as_ref()
            .is_none_or(|leader| !self.members.contains_key(leader))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.check();
    }

    /// The stored form of the group metadata.
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|member| MemberValue {
                    member_id: member.id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout_ms,
                    session_timeout_ms: member.session_timeout_ms,
                    subscription: member.metadata_for(&protocol),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Whether the group metadata must be written; clears the flag.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// A group with nothing left to keep: no members, no offsets.
    pub fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty
            && self.offsets.is_empty()
            && self.pending_members.is_empty()
            && self.commits_in_flight == 0
            && self.pending_txn_offsets.is_empty()
    }

    // ---- JoinGroup ----

    pub fn join(
        &mut self,
        request: JoinRequest,
        config: &GroupConfig,
        now: Instant,
        wall_ms: i64,
    ) -> Reply<JoinResult> {
        let reply = self.join_inner(request, config, now, wall_ms);
        self.check();
        reply
    }

    fn join_inner(
        &mut self,
        request: JoinRequest,
        config: &GroupConfig,
        now: Instant,
        wall_ms: i64,
    ) -> Reply<JoinResult> {
        let fail = |error| Reply::Now(JoinResult::error(error, &request.member_id));
        if !(config.session_timeout_min_ms..=config.session_timeout_max_ms)
            .contains(&request.session_timeout_ms)
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        // What the group record stores must fit its 16-bit string lengths
        // (Kafka's serializer refuses such a record; here it is refused
        // before anything changes).
        let too_long = |text: &str| text.len() > STORED_STRING_MAX;
        if too_long(&request.protocol_type)
            || request.instance_id.as_deref().is_some_and(too_long)
            || request.protocols.iter().any(|(name, _)| too_long(name))
        {
            return fail(ResponseError::InvalidRequest);
        }
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if !self.members.is_empty() && !self.supports(&request) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if request.member_id.is_empty() {
            return self.join_new_member(request, config, now, wall_ms);
        }
        // A known member id.
        if let Some(instance) = &request.instance_id {
            match self.static_members.get(instance) {
                Some(holder) if *holder != request.member_id => {
                    return fail(ResponseError::FencedInstanceId);
                }
                None if !self.members.contains_key(&request.member_id)
                    && !self.pending_members.contains_key(&request.member_id) =>
                {
                    return fail(ResponseError::UnknownMemberId);
                }
                _ => {}
            }
        }
        if self.pending_members.remove(&request.member_id).is_some() {
            let id = request.member_id.clone();
            return self.add_member_and_rebalance(id, request, config, now, wall_ms);
        }
        let Some(member) = self.members.get_mut(&request.member_id) else {
            return fail(ResponseError::UnknownMemberId);
        };
        member.last_heard = now;
        let unchanged = member.protocols == request.protocols;
        match self.state {
            GroupState::PreparingRebalance => {
                let (sender, receiver) = oneshot::channel();
                member.protocols = request.protocols;
                member.session_timeout_ms = request.session_timeout_ms;
                member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                member.join_waiter = Some(sender);
                self.maybe_complete_join(now, wall_ms);
                Reply::Wait(receiver)
            }
            GroupState::CompletingRebalance | GroupState::Stable if unchanged => {
                let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
                if is_leader && self.state == GroupState::Stable {
                    // The leader rejoining a stable group asks for a new
                    // assignment (e.g. its subscription's metadata changed).
                    let (sender, receiver) = oneshot::channel();
                    if let Some(member) = self.members.get_mut(&request.member_id) {
                        member.join_waiter = Some(sender);
                    }
                    self.prepare_rebalance(config, now, wall_ms);
                    return Reply::Wait(receiver);
                }
                Reply::Now(self.join_result_for(&request.member_id, false))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let (sender, receiver) = oneshot::channel();
                member.protocols = request.protocols;
                member.session_timeout_ms = request.session_timeout_ms;
                member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                member.join_waiter = Some(sender);
                self.prepare_rebalance(config, now, wall_ms);
                Reply::Wait(receiver)
            }
            GroupState::Empty | GroupState::Dead => fail(ResponseError::UnknownMemberId),
        }
    }

    fn join_new_member(
        &mut self,
        request: JoinRequest,
        config: &GroupConfig,
        now: Instant,
        wall_ms: i64,
    ) -> Reply<JoinResult> {
        // The client id is the client's, up to 32,767 bytes: a member id
        // made of all of it would not fit the group record's strings.
        let prefix = if request.client_id.is_empty() {
            "member"
        } else {
            let mut end = request.client_id.len().min(MEMBER_ID_PREFIX_MAX);
            while !request.client_id.is_char_boundary(end) {
                end -= 1;
            }
            &request.client_id[..end]
        };
        let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        if let Some(instance) = request.instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(
                    instance, &old_id, new_id, request, config, now, wall_ms,
                );
            }
            self.static_members.insert(instance, new_id.clone());
            return self.add_member_and_rebalance(new_id, request, config, now, wall_ms);
        }
        if request.require_known_member_id {
            let expiry =
                now + Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0));
            self.pending_members.insert(new_id.clone(), expiry);
            return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &new_id));
        }
        self.add_member_and_rebalance(new_id, request, config, now, wall_ms)
    }

    /// A static member rejoining with a new member id (KIP-345): it takes
    /// over the old member's place. In a stable group this causes no
    /// rebalance unless it changes the protocol the group would select;
    /// the new member id is then answered only once the group record
    /// holding it is durable ([`Reply::Store`]), as in Kafka: answered
    /// before, a coordinator failover in between restored the old mapping,
    /// and the member's next request was fenced (fatal to a Java consumer).
    #[allow(clippy::too_many_arguments)]
    fn replace_static_member(
        &mut self,
        instance: String,
        old_id: &str,
        new_id: String,
        request: JoinRequest,
        config: &GroupConfig,
        now: Instant,
        wall_ms: i64,
    ) -> Reply<JoinResult> {
        if !self.members.contains_key(old_id) {
            // The mapping points at a member that is gone: join afresh.
            self.static_members.insert(instance, new_id.clone());
            return self.add_member_and_rebalance(new_id, request, config, now, wall_ms);
        }
        let leader_before = self.leader.clone();
        self.move_static_member(&instance, old_id, &new_id);
        let Some(member) = self.members.get_mut(&new_id) else {
            unreachable!("the member just moved to {new_id}");
        };
        let (sender, receiver) = oneshot::channel();
        member.join_waiter = Some(sender);
        member.last_heard = now;
        let replacement = Replacement {
            instance_id: instance,
            old_id: old_id.to_string(),
            protocols: std::mem::replace(&mut member.protocols, request.protocols),
            session_timeout_ms: std::mem::replace(
                &mut member.session_timeout_ms,
                request.session_timeout_ms,
            ),
            rebalance_timeout_ms: std::mem::replace(
                &mut member.rebalance_timeout_ms,
                request.rebalance_timeout_ms,
            ),
            client_id: std::mem::replace(&mut member.client_id, request.client_id),
            client_host: std::mem::replace(&mut member.client_host, request.client_host),
            leader_before,
            supports_skip_assignment: request.supports_skip_assignment,
        };
        // Kafka: in Stable, a rejoin rebalances only if it changes the
        // protocol the group would select (its subscription metadata may
        // differ: a restarted Java consumer sends generation -1 and no
        // owned partitions); in CompletingRebalance it always does (the
        // leader may be assigning to the old member id).
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol {
            self.replacements.insert(new_id.clone(), replacement);
            return Reply::Store {
                receiver,
                member_id: new_id,
            };
        }
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now, wall_ms);
        } else {
            self.prepare_rebalance(config, now, wall_ms);
        }
        Reply::Wait(receiver)
    }

    /// Kafka's replaceStaticMember: the member holding `instance` under
    /// `from` holds it under `to` (leadership moves with it). A request of
    /// `from` still waiting is answered FENCED_INSTANCE_ID: an older
    /// incarnation of the instance, or a replacement still being written
    /// that a later restart superseded.
    fn move_static_member(&mut self, instance: &str, from: &str, to: &str) {
        let Some(mut member) = self.members.remove(from) else {
            return;
        };
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::error(ResponseError::FencedInstanceId, from));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        self.replacements.remove(from);
        member.id = to.to_string();
        self.members.insert(to.to_string(), member);
        if self.leader.as_deref() == Some(from) {
            self.leader = Some(to.to_string());
        }
        self.static_members
            .insert(instance.to_string(), to.to_string());
    }

    /// The group record written for static member `member_id`'s
    /// replacement ([`Reply::Store`]) is durable (`error` None) or failed.
    /// Durable: the member is answered (v9+: the leader is told it leads,
    /// with skip_assignment; below v9 it is told the old leader id, as
    /// Kafka does, so that it assigns nothing), unless a rebalance began
    /// meanwhile: it then waits in that join like any member. Failed: the
    /// replacement is undone, as Kafka does: the old member id holds the
    /// instance again with its settings and assignment, and the new one is
    /// answered the error without a member id (it joins afresh). Nothing
    /// is left to do when the member no longer waits for this answer
    /// (removed, answered by a completed join, or superseded by a later
    /// restart of its instance).
    pub fn finish_static_replacement(
        &mut self,
        member_id: &str,
        error: Option<ResponseError>,
        now: Instant,
    ) {
        let Some(replacement) = self.replacements.remove(member_id) else {
            return;
        };
        match error {
            None if self.state == GroupState::Stable => {
                let is_leader = self.leader.as_deref() == Some(member_id);
                let mut result = self.join_result_for(member_id, is_leader);
                if !replacement.supports_skip_assignment {
                    result.skip_assignment = false;
                    result.members = Vec::new();
                    result.leader = replacement.leader_before.unwrap_or_default();
                }
                if let Some(member) = self.members.get_mut(member_id)
                    && let Some(waiter) = member.join_waiter.take()
                {
                    let _ = waiter.send(result);
                    // As after any answer to a waiting member (complete_join).
                    member.last_heard = now;
                }
            }
            None => {}
            Some(error) => {
                let waiter = self
                    .members
                    .get_mut(member_id)
                    .and_then(|member| member.join_waiter.take());
                self.move_static_member(&replacement.instance_id, member_id, &replacement.old_id);
                if let Some(member) = self.members.get_mut(&replacement.old_id) {
                    member.protocols = replacement.protocols;
                    member.session_timeout_ms = replacement.session_timeout_ms;
                    member.rebalance_timeout_ms = replacement.rebalance_timeout_ms;
                    member.client_id = replacement.client_id;
                    member.client_host = replacement.client_host;
                    member.last_heard = now;
                }
                if let Some(waiter) = waiter {
                    let _ = waiter.send(JoinResult::error(error, ""));
                }
            }
        }
        self.check();
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        request: JoinRequest,
        config: &GroupConfig,
        now: Instant,
        wall_ms: i64,
    ) -> Reply<JoinResult> {
        let (sender, receiver) = oneshot::channel();
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id,
                instance_id: request.instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                last_heard: now,
                join_waiter: Some(sender),
                sync_waiter: None,
                pending_sync: false,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            if let Some(limit) = self.initial_join_limit {
                // Another member of a new group: keep the window open a
                // little longer for the rest (Kafka's InitialDelayedJoin).
                self.join_deadline = Some((now + config.initial_rebalance_delay).min(limit));
            }
            self.maybe_complete_join(now, wall_ms);
        } else {
            self.prepare_rebalance(config, now, wall_ms);
        }
        Reply::Wait(receiver)
    }

    /// Whether the request's protocol type and protocols fit the group.
    fn supports(&self, request: &JoinRequest) -> bool {
        if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
            return false;
        }
        request.protocols.iter().any(|(name, _)| {
            self.members.values().all(|member| {
                member.id == request.member_id
                    || member.protocols.iter().any(|(other, _)| other == name)
            })
        })
    }

    fn prepare_rebalance(&mut self, config: &GroupConfig, now: Instant, wall_ms: i64) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncResult::error(ResponseError::RebalanceInProgress));
                    // As after any answer to a waiting member (complete_join).
                    member.last_heard = now;
                }
            }
        }
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
        }
        if self.state == GroupState::Empty {
            let limit = now + self.rebalance_timeout();
            self.initial_join_limit = Some(limit);
            self.join_deadline = Some((now + config.initial_rebalance_delay).min(limit));
        } else {
            self.initial_join_limit = None;
            self.join_deadline = Some(now + self.rebalance_timeout());
        }
        self.set_state(GroupState::PreparingRebalance, wall_ms);
        self.maybe_complete_join(now, wall_ms);
    }

    /// The longest rebalance timeout of the members (Kafka's
    /// GroupMetadata.rebalanceTimeoutMs); a member known from a version 0
    /// record, which has none, counts its session timeout, as a JoinGroup
    /// v0 does. Taking the session timeout into it too held every member
    /// of a group whose static members have long sessions (KIP-345 advises
    /// sessions that cover a restart) in JoinGroup for that long.
    fn rebalance_timeout(&self) -> Duration {
        let longest = self
            .members
            .values()
            .map(|member| {
                if member.rebalance_timeout_ms >= 0 {
                    member.rebalance_timeout_ms
                } else {
                    member.session_timeout_ms
                }
            })
            .max()
            .unwrap_or(0);
        Duration::from_millis(u64::try_from(longest).unwrap_or(0))
    }

    /// Close the join window if it is time: every member rejoined (outside
    /// the initial window) or the deadline passed. Member ids handed out
    /// with MEMBER_ID_REQUIRED count as members not rejoined yet (Kafka's
    /// hasAllMembersJoined: pendingMembers empty) until they join or
    /// expire: consumers starting together are then one generation, not
    /// one join and another rebalance for the latecomers.
    fn maybe_complete_join(&mut self, now: Instant, wall_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = self.join_deadline.is_none_or(|deadline| now >= deadline);
        let all_joined =
            self.pending_members.is_empty() && self.members.values().all(Member::awaiting_join);
        let complete = if self.initial_join_limit.is_some() {
            deadline_passed
        } else {
            deadline_passed || all_joined
        };
        if complete {
            self.complete_join(now, wall_ms);
        }
    }

    fn complete_join(&mut self, now: Instant, wall_ms: i64) {
        // Dynamic members that did not rejoin in time are out. A static one
        // stays in the new generation with its last subscription (Kafka's
        // onCompleteJoin removes only notYetRejoinedDynamicMembers): it is
        // likely restarting and comes back under its instance id without
        // another rebalance; if it does not sync in time, the pending-sync
        // deadline removes it. Unless no member rejoined at all.
        let any_rejoined = self.members.values().any(Member::awaiting_join);
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|member| {
                !member.awaiting_join() && (member.instance_id.is_none() || !any_rejoined)
            })
            .map(|member| member.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        // Replacements still being written are answered below with the new
        // generation, whose record the leader's SyncGroup writes; their own
        // write's outcome no longer matters.
        self.replacements.clear();
        self.join_deadline = None;
        self.initial_join_limit = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, wall_ms);
            self.dirty = true;
            return;
        }
        self.protocol = self.select_protocol();
        // The leader computes the assignment: one that rejoined.
        if self
            .leader
            .as_ref()
            .is_none_or(|leader| !self.members.get(leader).is_some_and(Member::awaiting_join))
        {
            self.leader = self
                .members
                .values()
                .find(|member| member.awaiting_join())
                .map(|member| member.id.clone());
        }
        self.set_state(GroupState::CompletingRebalance, wall_ms);
        for member in self.members.values_mut() {
            member.pending_sync = true;
        }
        self.sync_deadline = Some(now + self.rebalance_timeout());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id, false);
            if let Some(member) = self.members.get_mut(&id)
                && let Some(waiter) = member.join_waiter.take()
            {
                let _ = waiter.send(result);
                // Its session starts again from the answer (Kafka's
                // completeAndScheduleNextHeartbeatExpiration). It was
                // alive only while it waited: a member that rejoined first
                // and waited longer than its session for the others was
                // dropped by the next tick, before its SyncGroup came.
                member.last_heard = now;
            }
        }
    }

    /// Kafka's vote: among the protocols every member supports, each member
    /// votes for its most preferred; the most votes wins (ties: the
    /// candidate listed first by the most preferring member order).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|member| member.protocols.iter().any(|(other, _)| other == name))
            })
            .collect();
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|name| (0, *name)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name.as_str()))
                && let Some(entry) = votes.iter_mut().find(|(_, candidate)| candidate == name)
            {
                entry.0 += 1;
            }
        }
        let best = votes.iter().map(|(count, _)| *count).max()?;
        votes
            .iter()
            .find(|(count, _)| *count == best)
            .map(|(_, name)| (*name).to_string())
    }

    fn join_result_for(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|member| JoinedMember {
                        member_id: member.id.clone(),
                        instance_id: member.instance_id.clone(),
                        metadata: member.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment,
        }
    }

    // ---- SyncGroup ----

    /// Check a SyncGroup and register it. When the leader's assignment
    /// arrives `Ok(true)` is returned: the caller persists the group, then
    /// calls [`Group::finish_sync`], which makes the group Stable and
    /// answers the members. Until then the group stays CompletingRebalance
    /// (members' SyncGroups wait, commits are refused as in any rebalance),
    /// as Kafka's: a member answered before the write could be given an
    /// assignment for a generation the write then lost.
    pub fn sync(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<(oneshot::Receiver<SyncResult>, bool), SyncResult> {
        let outcome = self.sync_inner(generation, member_id, instance_id, assignments, now);
        self.check();
        outcome
    }

    fn sync_inner(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<(oneshot::Receiver<SyncResult>, bool), SyncResult> {
        self.check_member(member_id, instance_id, generation)
            .map_err(SyncResult::error)?;
        let state = self.state;
        let protocol_type = self.protocol_type.clone();
        let protocol = self.protocol.clone();
        let is_leader = self.leader.as_deref() == Some(member_id);
        let Some(member) = self.members.get_mut(member_id) else {
            return Err(SyncResult::error(ResponseError::UnknownMemberId));
        };
        member.last_heard = now;
        if matches!(state, GroupState::CompletingRebalance | GroupState::Stable) {
            member.pending_sync = false;
            if self.members.values().all(|member| !member.pending_sync) {
                self.sync_deadline = None;
            }
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return Err(SyncResult::error(ResponseError::UnknownMemberId));
        };
        match state {
            GroupState::PreparingRebalance => {
                Err(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => Err(SyncResult {
                error: None,
                protocol_type,
                protocol,
                assignment: member.assignment.clone(),
            }),
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                member.sync_waiter = Some(sender);
                // Followers wait for the leader's assignment to be durable,
                // and so does the leader sending it again meanwhile.
                if !is_leader || self.assignment_pending {
                    return Ok((receiver, false));
                }
                let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                for member in self.members.values_mut() {
                    member.assignment = assignments.remove(&member.id).unwrap_or_default();
                }
                self.assignment_pending = true;
                self.dirty = true;
                Ok((receiver, true))
            }
            GroupState::Empty | GroupState::Dead => {
                Err(SyncResult::error(ResponseError::UnknownMemberId))
            }
        }
    }

    /// After the stable group was persisted (or failed to be): answer the
    /// members waiting in SyncGroup of `generation`.
    pub fn finish_sync(
        &mut self,
        generation: i32,
        error: Option<ResponseError>,
        config: &GroupConfig,
        now: Instant,
        wall_ms: i64,
    ) {
        if generation != self.generation
            || self.state != GroupState::CompletingRebalance
            || !self.assignment_pending
        {
            // A rebalance (or the group's end) came meanwhile and answered
            // the waiting members itself.
            return;
        }
        self.assignment_pending = false;
        if error.is_none() {
            self.set_state(GroupState::Stable, wall_ms);
        }
        let protocol_type = self.protocol_type.clone();
        let protocol = self.protocol.clone();
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                // As after any answer to a waiting member (complete_join).
                member.last_heard = now;
                let _ = waiter.send(match error {
                    Some(error) => SyncResult::error(error),
                    None => SyncResult {
                        error: None,
                        protocol_type: protocol_type.clone(),
                        protocol: protocol.clone(),
                        assignment: member.assignment.clone(),
                    },
                });
            }
        }
        if error.is_some() {
            self.prepare_rebalance(config, now, wall_ms);
        }
        self.check();
    }

    // ---- Heartbeat, LeaveGroup ----

    pub fn heartbeat(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Option<ResponseError> {
        if let Err(error) = self.check_member(member_id, instance_id, generation) {
            return Some(error);
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heard = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => None,
            GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
        }
    }

    /// Remove a member that leaves on purpose. `member_id` may be empty for
    /// a static member identified by its instance id. Kafka's
    /// handleLeaveGroup order: a pending member id (MEMBER_ID_REQUIRED, not
    /// joined yet) leaves before any instance id check, then the instance
    /// id must be held by the member (FENCED_INSTANCE_ID, or
    /// UNKNOWN_MEMBER_ID when nobody holds it).
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        config: &GroupConfig,
        now: Instant,
        wall_ms: i64,
    ) -> Option<ResponseError> {
        if !member_id.is_empty() && self.pending_members.remove(member_id).is_some() {
            // The join in progress may have been waiting only for it.
            self.maybe_complete_join(now, wall_ms);
            self.check();
            return None;
        }
        let id = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(holder) if member_id.is_empty() || holder == member_id => holder.clone(),
                Some(_) => return Some(ResponseError::FencedInstanceId),
                None => return Some(ResponseError::UnknownMemberId),
            },
            None => member_id.to_string(),
        };
        if !self.members.contains_key(&id) {
            return Some(ResponseError::UnknownMemberId);
        }
        self.remove_member(&id);
        self.after_member_removed(config, now, wall_ms);
        self.check();
        None
    }

    fn remove_member(&mut self, id: &str) {
        // A replacement being written for it is moot: its JoinGroup gets
        // UNKNOWN_MEMBER_ID (its waiter is dropped), as in Kafka.
        self.replacements.remove(id);
        if let Some(member) = self.members.remove(id)
            && let Some(instance) = &member.instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(id)
        {
            self.static_members.remove(instance);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    fn after_member_removed(&mut self, config: &GroupConfig, now: Instant, wall_ms: i64) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(config, now, wall_ms);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now, wall_ms),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Timers: expired sessions, pending member ids, the join window.
    pub fn tick(&mut self, config: &GroupConfig, now: Instant, wall_ms: i64) {
        self.pending_members.retain(|_, expiry| *expiry > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| member.session_expired(now))
            .map(|member| member.id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                self.remove_member(id);
            }
            self.after_member_removed(config, now, wall_ms);
        }
        if self.sync_deadline.is_some_and(|deadline| now >= deadline) {
            self.sync_deadline = None;
            let unsynced: Vec<String> = self
                .members
                .values()
                .filter(|member| member.pending_sync)
                .map(|member| member.id.clone())
                .collect();
            if !unsynced.is_empty() {
                for id in &unsynced {
                    tracing::info!(group = %self.id, member = %id, "member did not send SyncGroup within the rebalance timeout");
                    self.remove_member(id);
                }
                self.after_member_removed(config, now, wall_ms);
            }
        }
        self.maybe_complete_join(now, wall_ms);
        self.check();
    }

    /// The group is not dead and `instance_id`, if given, is held by
    /// `member_id` (else the caller is an old incarnation: fenced).
    fn check_alive_and_not_fenced(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if let Some(instance) = instance_id
            && let Some(holder) = self.static_members.get(instance)
            && holder != member_id
        {
            return Err(ResponseError::FencedInstanceId);
        }
        Ok(())
    }

    /// The checks shared by SyncGroup and Heartbeat.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        self.check_alive_and_not_fenced(member_id, instance_id)?;
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Whether an OffsetCommit may write: [`Group::check_offset_commit`],
    /// and the group must not be handing out its assignment. A member's
    /// commit counts as a heartbeat.
    pub fn check_commit(
        &mut self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ResponseError> {
        self.check_offset_commit(generation, member_id, instance_id, false)?;
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heard = now;
        }
        Ok(())
    }

    /// Whether a TxnOffsetCommit may write: [`Group::check_offset_commit`]
    /// without the state check. Kafka never answers it
    /// REBALANCE_IN_PROGRESS, which the Java producer treats as fatal (the
    /// transaction's offsets only count at its commit marker anyway).
    pub fn check_txn_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        self.check_offset_commit(generation, member_id, instance_id, true)
    }

    /// Kafka's `ClassicGroup.validateOffsetCommit`, in its order: a dead
    /// group, then (unless the request is outside the group: generation
    /// -1 to an empty group, or no member id, generation nor instance id)
    /// the member and its generation, and only then the state. A member
    /// removed by the rebalance gets UNKNOWN_MEMBER_ID and an old
    /// generation ILLEGAL_GENERATION, also while the group is
    /// CompletingRebalance, so the consumer resets its generation instead
    /// of retrying; REBALANCE_IN_PROGRESS is for the current generation's
    /// members (and never for a transactional commit, whose older versions
    /// carry no member id nor generation).
    fn check_offset_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        transactional: bool,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if generation < 0 && self.state == GroupState::Empty {
            // A consumer managing its own partitions (assign()), or an
            // admin client.
            return Ok(());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.check_commit_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        } else if !transactional && self.state != GroupState::Empty {
            // Without a member id only an empty group takes commits.
            return Err(ResponseError::UnknownMemberId);
        }
        if !transactional && self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Kafka's `ClassicGroup.validateMember`: a static member's instance id
    /// must be held, by `member_id`; a dynamic member must be one.
    fn check_commit_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                None => Err(ResponseError::UnknownMemberId),
                Some(holder) if holder != member_id => Err(ResponseError::FencedInstanceId),
                Some(_) => Ok(()),
            },
            None if !self.members.contains_key(member_id) => Err(ResponseError::UnknownMemberId),
            None => Ok(()),
        }
    }

    /// The topics the members subscribe to (consumer protocol only).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let protocol = self.protocol.clone()?;
        let mut topics = Vec::new();
        for member in self.members.values() {
            topics.extend(crate::group::consumer_subscription(
                &member.metadata_for(&protocol),
            )?);
        }
        topics.sort();
        topics.dedup();
        Some(topics)
    }

    /// The member's metadata for the group's protocol.
    pub fn member_metadata(&self, member: &Member) -> Bytes {
        member.metadata_for(self.protocol.as_deref().unwrap_or_default())
    }

    pub fn mark_dead(&mut self, wall_ms: i64) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinResult::error(
                    ResponseError::CoordinatorNotAvailable,
                    "",
                ));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncResult::error(ResponseError::CoordinatorNotAvailable));
            }
        }
        self.members.clear();
        self.static_members.clear();
        self.replacements.clear();
        self.offsets.clear();
        self.set_state(GroupState::Dead, wall_ms);
    }

    /// This broker stopped coordinating the group (its offsets partition
    /// was unloaded): the group is Dead here, and the members waiting in
    /// JoinGroup or SyncGroup are answered NOT_COORDINATOR, as Kafka's
    /// `onGroupUnloaded` answers them. They look up the new coordinator and
    /// rejoin with the same member id, which that coordinator restored from
    /// the log; an UNKNOWN_MEMBER_ID made them drop it, and the next
    /// rebalance waited for the old id's session to expire.
    pub fn unload(&mut self, wall_ms: i64) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                // A static member whose replacement is being written was
                // never told its new id: the new coordinator may not have it.
                let id = if self.replacements.contains_key(&member.id) {
                    ""
                } else {
                    member.id.as_str()
                };
                let _ = waiter.send(JoinResult::error(ResponseError::NotCoordinator, id));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncResult::error(ResponseError::NotCoordinator));
            }
        }
        self.replacements.clear();
        self.set_state(GroupState::Dead, wall_ms);
    }

    fn set_state(&mut self, state: GroupState, wall_ms: i64) {
        if self.state != state {
            self.state = state;
            self.state_timestamp = wall_ms;
            self.assignment_pending = false;
            if !matches!(state, GroupState::CompletingRebalance | GroupState::Stable) {
                self.sync_deadline = None;
            }
        }
    }

    fn check(&self) {
        match self.state {
            GroupState::Empty => assert!(
                self.members.is_empty(),
                "group {}: Empty with members",
                self.id
            ),
            GroupState::Dead => {}
            GroupState::PreparingRebalance => {}
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(
                    !self.members.is_empty(),
                    "group {}: {:?} without members",
                    self.id,
                    self.state
                );
                assert!(
                    self.leader
                        .as_ref()
                        .is_some_and(|leader| self.members.contains_key(leader)),
                    "group {}: leader is not a member",
                    self.id
                );
            }
        }
        for (instance, holder) in &self.static_members {
            let held = self
                .members
                .get(holder)
                .is_some_and(|member| member.instance_id.as_deref() == Some(instance.as_str()));
            assert!(
                held,
                "group {}: static instance {instance} maps to {holder}, not a member holding it",
                self.id
            );
        }
        // A replaced static member not answered yet holds its instance and
        // waits in JoinGroup, in a group that has not started a new
        // generation since (which would have answered it).
        for (id, replacement) in &self.replacements {
            assert!(
                matches!(
                    self.state,
                    GroupState::Stable | GroupState::PreparingRebalance
                ),
                "group {}: replacement {id} pending in {:?}",
                self.id,
                self.state
            );
            assert!(
                self.static_members.get(&replacement.instance_id) == Some(id)
                    && self.members.get(id).is_some_and(Member::awaiting_join),
                "group {}: replacement {id} does not hold {} or is not waiting",
                self.id,
                replacement.instance_id
            );
        }
    }
}

#[cfg(test)]
mod tests;
