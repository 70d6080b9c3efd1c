//! One broker's replica of the partition: a real engine `Log` on its own
//! simulated disk, its role as the last applied image says, and the
//! leader's and follower's drivers doing what `replication::leader` and
//! `replication::follower::apply` do in production, with the decisions
//! taken by the production `progress` module.
//!
//! A reassignment reaches a broker through its view, as in production: a
//! leader follows a new replica list within its epoch
//! (`LeaderState::apply_committed`) and starts a pusher, with the number
//! the progress got, for each added follower (`leader::start_pushers`); a
//! pusher whose follower's progress is gone, or carries another number,
//! stops. A broker the view no longer lists deletes its copy
//! (`shard/follower.rs`) and answers NOT_REPLICA; listed again, it starts
//! from a fresh empty log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::testing::block_on;
use sluice_engine::{
    AppendCompletion, Committer, LeaderEpoch, Log, LogConfig, Offset, ReadLimits,
    ReplicatedAppendError,
};
use sluice_server::replication::messages::{
    FollowerLog, LeaderHeader, ReplyStatus, StateReply, ToFollower,
};
use sluice_server::replication::progress::{
    Effect, LeaderState, Phase, sync_step, truncation_target,
};
use uuid::Uuid;

use super::controller::Image;
use super::network::{CONTROLLER, Network, Payload};
use super::prng::Prng;

pub const TOPIC_ID: Uuid = Uuid::from_u128(0x51u128 << 64 | 0x1CE);
pub const MIN_INSYNC: usize = 2;

/// A deliberately broken variant, to prove the checker can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    None,
    /// Followers answer a push before it is fsynced, reporting their log
    /// end as durable.
    AnswerBeforeFsync,
    /// Followers cut a divergent tail at their high watermark instead of
    /// by leader epoch (the bug KIP-101 fixed), and the leader streams
    /// from there.
    TruncateToHighWatermark,
    /// Logs roll back what a flush that found no space was writing and give
    /// its offsets to the next appends (the engine's default; production
    /// keeps them: `Log::keep_unflushed_when_full`). A leader's followers
    /// already hold some of those records.
    RollBackOnFullDisk,
}

/// Timing of the replication drivers (scaled down from Kafka's).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lag_max_ms: i64,
    pub heartbeat_ms: i64,
    pub isr_interval_ms: i64,
    pub isr_answer_timeout_ms: i64,
}

pub enum Role {
    Follower { high_watermark: Offset },
    Leader(Box<LeaderState>),
}

/// The leader's pusher for one follower (push_loop's state).
#[derive(Clone, Debug, Default)]
struct Pusher {
    /// `FollowerProgress::pusher` of the progress it serves.
    number: u64,
    connection: Option<u64>,
    last_sent_ms: i64,
    backoff_until_ms: i64,
    /// A follower knew a newer epoch: the pusher returned.
    stopped: bool,
}

/// An AlterPartition awaiting its answer (isr_loop is blocked on it).
#[derive(Clone, Copy, Debug)]
struct IsrRequest {
    request_id: u64,
    epoch: LeaderEpoch,
    partition_epoch: i32,
    sent_ms: i64,
}

/// What the driver shares with a broker for one step.
pub struct Context<'a> {
    pub network: &'a mut Network,
    pub random: &'a mut Prng,
    pub now_ms: i64,
    pub trace: &'a mut Vec<String>,
    pub timing: Timing,
    pub bug: Bug,
    /// Ignore AlterPartition answers older than the applied metadata (the
    /// fix for the partition-epoch rollback; off: production's isr_loop).
    pub guard_stale_answers: bool,
    /// An unanswered AlterPartition counts as refused (production's
    /// isr_loop: any `Err` of `propose_isr` clears the pending change);
    /// off: it is sent again and the change stays pending until an answer
    /// or newer metadata says how it ended (Kafka's behaviour).
    pub timeout_clears_pending: bool,
}

impl Context<'_> {
    pub fn note(&mut self, line: String) {
        self.trace.push(format!("{}: {line}", self.now_ms));
    }
}

pub struct Broker {
    pub id: i32,
    pub io: SimIo,
    committer: Committer<SimIo>,
    pub log: Option<Log<SimIo>>,
    pub registered: bool,
    pub incarnation: u64,
    pub view_version: u64,
    pub view_leader: Option<i32>,
    pub leader_epoch: LeaderEpoch,
    pub role: Role,
    /// Bumps whenever data below a checked point may have changed
    /// (truncation, restart): the checker starts over.
    pub generation: u64,
    /// The last applied view lists this broker as a replica (its copy
    /// exists); else the log is a fresh empty one standing for no copy.
    pub hosted: bool,
    /// Which directory holds the copy: a deleted copy's files stay behind,
    /// a new one starts in the next directory.
    copy: u64,
    /// Copies deleted because a reassignment moved the partition away.
    pub deletions: u64,
    pushers: BTreeMap<i32, Pusher>,
    request_next: u64,
    isr_request: Option<IsrRequest>,
    isr_next_ms: i64,
    /// The disk is full until then (`SimIo::set_space_limit`).
    pub disk_full_until_ms: Option<i64>,
    /// `Bug::RollBackOnFullDisk`.
    pub rolls_back: bool,
}

pub fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        index_interval_bytes: 1024,
        preallocate_step_bytes: 4 << 10,
        chunk_size_bytes: 4 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn dir(copy: u64) -> PathBuf {
    PathBuf::from(format!("/data/sim-{copy}"))
}

fn concat(parts: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    for part in parts {
        out.extend_from_slice(part);
    }
    out.freeze()
}

/// Through the production codec, as over the wire.
fn wire_to_follower(message: &ToFollower) -> ToFollower {
    let (kind, parts) = message.encode();
    ToFollower::decode(kind, concat(&parts)).expect("the codec decodes what it encodes")
}

fn wire_reply(reply: &StateReply) -> StateReply {
    StateReply::decode(&reply.encode()).expect("the codec decodes what it encodes")
}

impl Broker {
    pub fn new(id: i32, seed: u64, image: &Image, now_ms: i64, rolls_back: bool) -> Broker {
        let io = SimIo::new(seed);
        io.set_now_ms(now_ms);
        let mut broker = Broker {
            id,
            io,
            committer: Committer::new(SimIo::new(0)),
            log: None,
            registered: true,
            incarnation: 0,
            view_version: 0,
            view_leader: None,
            leader_epoch: LeaderEpoch(-1),
            role: Role::Follower {
                high_watermark: Offset::ZERO,
            },
            generation: 0,
            hosted: image.replicas.contains(&id),
            copy: 0,
            deletions: 0,
            pushers: BTreeMap::new(),
            request_next: 1,
            isr_request: None,
            isr_next_ms: 0,
            disk_full_until_ms: None,
            rolls_back,
        };
        broker.open_log();
        broker.apply_image(image, now_ms, &mut Vec::new());
        broker
    }

    fn open_log(&mut self) {
        self.committer = Committer::new(self.io.clone());
        let log = block_on(Log::open(
            self.io.clone(),
            dir(self.copy),
            log_config(),
            &self.committer,
        ))
        .expect("the log opens on the simulated disk");
        // As shard/partition.rs opens a replica's log.
        log.keep_unflushed_when_full(!self.rolls_back);
        self.log = Some(log);
        self.generation += 1;
    }

    pub fn is_up(&self) -> bool {
        self.log.is_some()
    }

    pub fn log(&self) -> &Log<SimIo> {
        self.log.as_ref().expect("the broker is up")
    }

    /// Power loss: unsynced writes are lost (all of them, or torn).
    pub fn crash(&mut self, crash_mode: CrashMode) {
        self.io.set_crash_mode(crash_mode);
        self.log = None;
        self.io = self.io.crash();
        self.registered = false;
        self.role = Role::Follower {
            high_watermark: Offset::ZERO,
        };
        self.pushers.clear();
        self.isr_request = None;
        self.generation += 1;
    }

    /// Reboot: reopen the log from the disk; a new incarnation that must
    /// register with the controller before it serves.
    pub fn restart(&mut self, now_ms: i64) {
        self.io.set_now_ms(now_ms);
        self.io.set_space_limit(None);
        self.disk_full_until_ms = None;
        self.open_log();
        self.incarnation += 1;
        self.view_version = 0;
        self.view_leader = None;
        self.leader_epoch = LeaderEpoch(-1);
        self.role = Role::Follower {
            high_watermark: Offset::ZERO,
        };
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    pub fn leader_state(&self) -> Option<&LeaderState> {
        match &self.role {
            Role::Leader(leader) => Some(leader),
            Role::Follower { .. } => None,
        }
    }

    /// As `PartitionReplica::high_watermark`.
    pub fn high_watermark(&mut self) -> Offset {
        let durable_end = self.log().durable_end_offset();
        match &mut self.role {
            Role::Leader(leader) => {
                leader.update_high_watermark(durable_end);
                leader.high_watermark()
            }
            Role::Follower { high_watermark } => (*high_watermark).min(durable_end),
        }
    }

    /// As `PartitionReplica::apply_view`.
    pub fn apply_image(&mut self, image: &Image, now_ms: i64, trace: &mut Vec<String>) {
        if !self.is_up() || !self.registered || image.version <= self.view_version {
            return;
        }
        let epoch = LeaderEpoch(image.leader_epoch);
        assert!(
            epoch >= self.leader_epoch,
            "broker {}: leader epoch went back from {:?} to {:?}",
            self.id,
            self.leader_epoch,
            epoch
        );
        self.view_version = image.version;
        self.view_leader = image.leader;
        self.leader_epoch = epoch;
        let replica = image.replicas.contains(&self.id);
        if !replica {
            assert_ne!(image.leader, Some(self.id), "a leader outside the replicas");
            if self.hosted {
                // shard/follower.rs: removals first; the copy is deleted.
                trace.push(format!(
                    "{now_ms}: broker {} is no longer a replica: deletes its copy (log end {})",
                    self.id,
                    self.log().log_end_offset()
                ));
                self.copy += 1;
                self.deletions += 1;
                self.open_log();
                self.hosted = false;
            }
            self.role = Role::Follower {
                high_watermark: Offset::ZERO,
            };
            self.pushers.clear();
            self.isr_request = None;
            return;
        }
        if !self.hosted {
            trace.push(format!(
                "{now_ms}: broker {} is a replica again: opens a fresh copy",
                self.id
            ));
            assert_eq!(self.log().log_end_offset(), Offset::ZERO);
            self.hosted = true;
        }
        let leads = image.leader == Some(self.id);
        let known_high_watermark = match &self.role {
            Role::Leader(leader) => leader.high_watermark(),
            Role::Follower { high_watermark } => *high_watermark,
        };
        let log_end = self.log().log_end_offset();
        match (&mut self.role, leads) {
            (Role::Leader(leader), true) if leader.epoch == epoch => {
                let added = leader.apply_committed(
                    image.partition_epoch,
                    &image.replicas,
                    &image.isr,
                    now_ms,
                );
                // leader::start_pushers; removed followers' pushers stop
                // when they find no progress with their number.
                for (follower, number) in added {
                    trace.push(format!(
                        "{now_ms}: leader {} (epoch {}) starts pusher {number} for added follower {follower}",
                        self.id, epoch.0
                    ));
                    self.pushers.insert(
                        follower,
                        Pusher {
                            number,
                            ..Pusher::default()
                        },
                    );
                }
            }
            (_, true) => {
                trace.push(format!(
                    "{now_ms}: broker {} leads epoch {} from log end {log_end} (hw {known_high_watermark}), isr {:?}",
                    self.id, epoch.0, image.isr
                ));
                let state = LeaderState::new(
                    self.id,
                    epoch,
                    log_end,
                    image.partition_epoch,
                    image.replicas.clone(),
                    image.isr.clone(),
                    known_high_watermark,
                    now_ms,
                );

                self.pushers = state
                    .pushers()
                    .into_iter()
                    .map(|(follower, number)| {
                        (
                            follower,
                            Pusher {
                                number,
                                ..Pusher::default()
                            },
                        )
                    })
                    .collect();
                self.isr_request = None;
                self.isr_next_ms = now_ms;
                self.role = Role::Leader(Box::new(state));
            }
            (Role::Leader(_), false) => {
                trace.push(format!(
                    "{now_ms}: broker {} follows in epoch {}",
                    self.id, epoch.0
                ));
                self.role = Role::Follower {
                    high_watermark: known_high_watermark,
                };
                self.pushers.clear();
                self.isr_request = None;
            }
            (Role::Follower { .. }, false) => {}
        }
    }

    fn log_state(&self) -> FollowerLog {
        let log = self.log();
        FollowerLog {
            log_start: log.log_start_offset(),
            log_end: log.log_end_offset(),
            durable_end: log.durable_end_offset(),
            last_epoch: log.last_leader_epoch(),
        }
    }

    /// A leader's message on this broker (follower.rs `apply`).
    pub fn follower_apply(&mut self, context: &mut Context<'_>, message: ToFollower) -> StateReply {
        let header = *message.header();
        let follower_epoch = self.leader_epoch;
        let bug = context.bug;
        let reply = move |broker: &Broker, status: ReplyStatus| {
            let mut log = broker.log_state();
            if bug == Bug::AnswerBeforeFsync {
                log.durable_end = log.log_end;
            }
            StateReply {
                request_id: header.request_id,
                topic_id: header.topic_id,
                partition: header.partition,
                status,
                follower_epoch,
                log,
            }
        };
        if !self.registered || self.view_version == 0 {
            let mut answer = reply(self, ReplyStatus::NotReplica);
            answer.follower_epoch = LeaderEpoch(0);
            return answer;
        }
        if !self.hosted {
            // follower.rs `not_replica`: no copy, no epoch, no log.
            return StateReply {
                request_id: header.request_id,
                topic_id: header.topic_id,
                partition: header.partition,
                status: ReplyStatus::NotReplica,
                follower_epoch: LeaderEpoch(0),
                log: FollowerLog {
                    log_start: Offset::ZERO,
                    log_end: Offset::ZERO,
                    durable_end: Offset::ZERO,
                    last_epoch: None,
                },
            };
        }
        if header.leader_epoch < follower_epoch {
            return reply(self, ReplyStatus::FencedLeaderEpoch);
        }
        if header.leader_epoch > follower_epoch {
            return reply(self, ReplyStatus::UnknownLeaderEpoch);
        }
        if self.is_leader() {
            return reply(self, ReplyStatus::NotFollower);
        }
        match message {
            ToFollower::Probe { .. } => reply(self, ReplyStatus::Ok),
            ToFollower::Truncate {
                epoch, end_offset, ..
            } => {
                let high_watermark = self.high_watermark();
                let log = self.log();
                let target = if context.bug == Bug::TruncateToHighWatermark {
                    Ok(high_watermark.min(log.log_end_offset()))
                } else {
                    truncation_target(
                        epoch,
                        end_offset,
                        log.log_start_offset(),
                        log.log_end_offset(),
                        high_watermark,
                        |requested| log.end_offset_for_epoch(requested),
                    )
                };
                let target = match target {
                    Ok(target) => target,
                    Err(below) => {
                        context.note(format!(
                            "broker {} refuses truncation to {below} below its hw {high_watermark} (leader epoch {:?} ends at {end_offset})",
                            self.id, epoch
                        ));
                        return reply(self, ReplyStatus::TruncationRefused);
                    }
                };
                let log_end = log.log_end_offset();
                if target < log_end {
                    context.note(format!(
                        "broker {} truncates {log_end} -> {target} for leader {} (epoch {:?} ends at {end_offset}, hw {high_watermark})",
                        self.id, header.leader_id, epoch
                    ));
                    if let Err(error) = block_on(log.truncate_to(target)) {
                        context.note(format!("broker {} truncation failed: {error}", self.id));
                        return reply(self, ReplyStatus::StorageError);
                    }
                    self.generation += 1;
                }
                reply(self, ReplyStatus::Ok)
            }
            ToFollower::Push {
                start_offset,
                records,
                ..
            } => {
                let log = self.log();
                if start_offset != log.log_end_offset() {
                    return reply(self, ReplyStatus::OutOfOrder);
                }
                let Some(records) = records.into_iter().next() else {
                    self.set_follower_high_watermark(header.high_watermark);
                    return reply(self, ReplyStatus::Ok);
                };
                match log.append_replicated(start_offset, &records) {
                    Ok(appended) => drop(appended.completion),
                    Err(ReplicatedAppendError::Append(error)) => {
                        context.note(format!(
                            "broker {} replicated append failed: {error}",
                            self.id
                        ));
                        return reply(self, ReplyStatus::StorageError);
                    }
                    Err(error) => {
                        context.note(format!(
                            "broker {} replicated append refused: {error}",
                            self.id
                        ));
                        return reply(self, ReplyStatus::OutOfOrder);
                    }
                }
                self.set_follower_high_watermark(header.high_watermark);
                if context.bug != Bug::AnswerBeforeFsync
                    && let Err(error) = block_on(self.log().flush())
                {
                    context.note(format!("broker {} fsync failed: {error}", self.id));
                    return reply(self, ReplyStatus::StorageError);
                }
                reply(self, ReplyStatus::Ok)
            }
        }
    }

    fn set_follower_high_watermark(&mut self, leader_high_watermark: Offset) {
        let log_end = self.log().log_end_offset();
        if let Role::Follower { high_watermark } = &mut self.role {
            let bounded = leader_high_watermark.min(log_end);
            if bounded > *high_watermark {
                *high_watermark = bounded;
            }
        }
    }

    fn header(&mut self, epoch: LeaderEpoch, request_id: u64) -> LeaderHeader {
        LeaderHeader {
            request_id,
            topic_id: TOPIC_ID,
            partition: 0,
            leader_id: self.id,
            leader_epoch: epoch,
            high_watermark: self.high_watermark(),
            log_start: self.log().log_start_offset(),
        }
    }

    fn leader_mut(&mut self) -> Option<&mut LeaderState> {
        match &mut self.role {
            Role::Leader(leader) => Some(leader),
            Role::Follower { .. } => None,
        }
    }

    /// Send `message` to `follower` on the pusher's connection (opening
    /// one if needed). `None` when the follower cannot be reached.
    fn send_to(
        &mut self,
        context: &mut Context<'_>,
        follower: i32,
        message: impl FnOnce(&mut Broker, u64) -> ToFollower,
    ) -> Option<u64> {
        let connection = match self
            .pushers
            .get(&follower)
            .and_then(|pusher| pusher.connection)
        {
            Some(connection) => connection,
            None => {
                let connection = context.network.connect(self.id, follower)?;
                self.pushers.get_mut(&follower)?.connection = Some(connection);
                connection
            }
        };
        let request_id = self.request_next;
        self.request_next += 1;
        let message = wire_to_follower(&message(self, request_id));
        context.network.send(
            context.random,
            context.now_ms,
            self.id,
            follower,
            Some(connection),
            Payload::ToFollower(message),
        );
        if let Some(pusher) = self.pushers.get_mut(&follower) {
            pusher.last_sent_ms = context.now_ms;
        }
        Some(request_id)
    }

    /// The leader's drivers for one step: every pusher sends what its
    /// progress allows (push_loop), the ISR task proposes (isr_loop), and
    /// the log's group commit makes appends durable.
    pub fn drive(&mut self, context: &mut Context<'_>) {
        if !self.is_up() {
            return;
        }
        if context.random.chance(500_000) {
            // The shard's committer: what is queued and due (a log out of
            // space is tried again only after a pause).
            let _ = block_on(self.committer.flush_round());
        }
        if context.bug == Bug::AnswerBeforeFsync && context.random.chance(200_000) {
            let _ = block_on(self.log().flush());
        }
        let Some(epoch) = self.leader_state().map(|leader| leader.epoch) else {
            return;
        };
        let followers: Vec<i32> = self.pushers.keys().copied().collect();
        for follower in followers {
            self.drive_pusher(context, epoch, follower);
        }
        self.drive_isr(context, epoch);
        let _ = self.high_watermark();
    }

    fn drive_pusher(&mut self, context: &mut Context<'_>, epoch: LeaderEpoch, follower: i32) {
        let now_ms = context.now_ms;
        for _ in 0..8 {
            let Some(pusher) = self.pushers.get(&follower).cloned() else {
                return;
            };
            if pusher.stopped || now_ms < pusher.backoff_until_ms {
                return;
            }
            let log_end = self.log().log_end_offset();
            let heartbeat_due = now_ms - pusher.last_sent_ms >= context.timing.heartbeat_ms;
            enum Send {
                Probe,
                Push(Offset),
                Heartbeat(Offset),
            }
            let Some(leader) = self.leader_mut() else {
                return;
            };
            let Some(progress) = leader
                .followers
                .get_mut(&follower)
                .filter(|progress| progress.pusher == pusher.number)
            else {
                // No longer a replica (or served by a newer pusher): this
                // pusher stops (push_loop's `with_progress` gives None).
                self.pushers.remove(&follower);
                return;
            };
            let next = if progress.wants_probe(now_ms) {
                Send::Probe
            } else if let Some(from) = progress.push_from(log_end) {
                Send::Push(from)
            } else if progress.phase == Phase::Streaming
                && progress.in_flight() == 0
                && heartbeat_due
            {
                Send::Heartbeat(progress.next_offset)
            } else {
                return;
            };
            let sent = match next {
                Send::Probe => self
                    .send_to(context, follower, |broker, id| ToFollower::Probe {
                        header: broker.header(epoch, id),
                    })
                    .map(|id| {
                        self.progress(follower).sent_probe(id, log_end, now_ms);
                    }),
                Send::Push(from) => {
                    let limits = ReadLimits {
                        max_bytes: context.random.between(100, 3000) as usize,
                        min_one_batch: true,
                        max_offset: log_end,
                    };
                    let read = match block_on(self.log().read(from, limits)) {
                        Ok(read) if read.next_offset > from => read,
                        Ok(_) => return,
                        Err(error) => {
                            context
                                .note(format!("leader {} cannot read at {from}: {error}", self.id));
                            self.progress(follower).reset();
                            return;
                        }
                    };
                    let end = read.next_offset;
                    self.send_to(context, follower, |broker, id| ToFollower::Push {
                        header: broker.header(epoch, id),
                        start_offset: from,
                        records: read.records,
                    })
                    .map(|id| {
                        let progress = self.progress(follower);
                        if progress.push_from(log_end) == Some(from) {
                            progress.sent_push(id, from, end, log_end, now_ms);
                        }
                    })
                }
                Send::Heartbeat(at) => self
                    .send_to(context, follower, |broker, id| ToFollower::Push {
                        header: broker.header(epoch, id),
                        start_offset: at,
                        records: Vec::new(),
                    })
                    .map(|id| {
                        let progress = self.progress(follower);
                        if progress.next_offset == at {
                            progress.sent_push(id, at, at, log_end, now_ms);
                        }
                    }),
            };
            if sent.is_none() {
                self.progress(follower).reset();
                let backoff = context.timing.heartbeat_ms.min(200);
                if let Some(pusher) = self.pushers.get_mut(&follower) {
                    pusher.backoff_until_ms = now_ms + backoff;
                }
                return;
            }
        }
    }

    fn progress(
        &mut self,
        follower: i32,
    ) -> &mut sluice_server::replication::progress::FollowerProgress {
        self.leader_mut()
            .and_then(|leader| leader.followers.get_mut(&follower))
            .expect("a leader with this follower")
    }

    fn drive_isr(&mut self, context: &mut Context<'_>, epoch: LeaderEpoch) {
        let now_ms = context.now_ms;
        if let Some(request) = self.isr_request
            && now_ms - request.sent_ms >= context.timing.isr_answer_timeout_ms
        {
            context.note(format!("leader {} AlterPartition timed out", self.id));
            self.isr_request = None;
            let timeout_clears_pending = context.timeout_clears_pending;
            if let Some(leader) = self.leader_mut() {
                if timeout_clears_pending {
                    // propose_isr's Err: the isr_loop clears the pending change.
                    leader.pending_isr = None;
                } else if let Some(wanted) = leader.pending_isr.clone()
                    && leader.partition_epoch == request.partition_epoch
                {
                    self.send_alter_partition(context, epoch, request.partition_epoch, wanted);
                    return;
                }
            }
        }
        if self.isr_request.is_some() || now_ms < self.isr_next_ms {
            return;
        }
        self.isr_next_ms = now_ms + context.timing.isr_interval_ms;
        let lag_max_ms = context.timing.lag_max_ms;
        let Some(leader) = self.leader_mut() else {
            return;
        };
        let Some(wanted) = leader.wanted_isr(now_ms, lag_max_ms) else {
            return;
        };
        leader.pending_isr = Some(wanted.clone());
        let partition_epoch = leader.partition_epoch;
        self.send_alter_partition(context, epoch, partition_epoch, wanted);
    }

    fn send_alter_partition(
        &mut self,
        context: &mut Context<'_>,
        epoch: LeaderEpoch,
        partition_epoch: i32,
        wanted: Vec<i32>,
    ) {
        let now_ms = context.now_ms;
        let request_id = self.request_next;
        self.request_next += 1;
        context.note(format!(
            "leader {} (epoch {}) proposes isr {wanted:?} at partition epoch {partition_epoch}",
            self.id, epoch.0
        ));
        self.isr_request = Some(IsrRequest {
            request_id,
            epoch,
            partition_epoch,
            sent_ms: now_ms,
        });
        context.network.send(
            context.random,
            now_ms,
            self.id,
            CONTROLLER,
            None,
            Payload::AlterPartition {
                request_id,
                leader: self.id,
                leader_epoch: epoch.0,
                partition_epoch,
                isr: wanted,
            },
        );
    }

    /// The controller's answer to an AlterPartition (isr_loop's tail).
    pub fn on_alter_answer(
        &mut self,
        context: &mut Context<'_>,
        request_id: u64,
        outcome: Result<(i32, Vec<i32>), String>,
    ) {
        let Some(request) = self.isr_request else {
            return;
        };
        if request.request_id != request_id {
            return;
        }
        self.isr_request = None;
        let id = self.id;
        let Some(leader) = self.leader_mut() else {
            return;
        };
        if leader.epoch != request.epoch {
            return;
        }
        match outcome {
            Ok((partition_epoch, _))
                if context.guard_stale_answers && partition_epoch < leader.partition_epoch =>
            {
                // Newer metadata arrived first: this answer is history.
                // (LeaderState::apply_committed would take it and move
                // the partition epoch back: see the ignored test
                // a_stale_alter_partition_answer_does_not_roll_back_the_partition_epoch.)
                context.note(format!(
                    "leader {id} ignores a stale AlterPartition answer at partition epoch {partition_epoch} (has {})",
                    leader.partition_epoch
                ));
                leader.pending_isr = None;
            }
            Ok((partition_epoch, isr)) => {
                context.note(format!(
                    "leader {id} applies committed isr {isr:?} at partition epoch {partition_epoch}"
                ));
                let replicas = leader.replicas.clone();
                let added =
                    leader.apply_committed(partition_epoch, &replicas, &isr, context.now_ms);
                // isr_loop starts pushers for followers restarted after a
                // missed change.
                for (follower, number) in added {
                    context.note(format!(
                        "leader {id} starts pusher {number} for follower {follower} (a change was missed)"
                    ));
                    self.pushers.insert(
                        follower,
                        Pusher {
                            number,
                            ..Pusher::default()
                        },
                    );
                }
            }
            // Refused as stale (replication::propose_isr): an earlier
            // attempt whose answer was lost may have committed; the change
            // stays pending until a view settles it.
            Err(error)
                if !context.timeout_clears_pending
                    && (error.starts_with("stale partition epoch")
                        || error.starts_with("fenced leader epoch")
                        || error.starts_with("not the leader")) =>
            {
                // Perhaps our own earlier attempt was committed: newer
                // metadata will say (apply_committed clears the pending
                // change).
                context.note(format!(
                    "leader {id} AlterPartition refused: {error}; waiting for metadata"
                ));
            }
            Err(error) => {
                context.note(format!("leader {id} AlterPartition refused: {error}"));
                leader.pending_isr = None;
            }
        }
    }

    /// A follower's answer (take_answer, and the truncation it may lead to).
    pub fn on_reply(&mut self, context: &mut Context<'_>, from: i32, reply: StateReply) {
        let reply = wire_reply(&reply);
        let now_ms = context.now_ms;
        let Some(epoch) = self.leader_state().map(|leader| leader.epoch) else {
            return;
        };
        let Some(number) = self
            .pushers
            .get(&from)
            .filter(|pusher| !pusher.stopped)
            .map(|pusher| pusher.number)
        else {
            return;
        };
        let log = self.log.as_ref().expect("up");
        let sync = |follower_log: &FollowerLog| {
            sync_step(
                follower_log,
                log.log_start_offset(),
                log.log_end_offset(),
                |requested| log.end_offset_for_epoch_client(requested),
            )
        };
        let durable_end = log.durable_end_offset();
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let Some(progress) = leader
            .followers
            .get_mut(&from)
            .filter(|progress| progress.pusher == number)
        else {
            return;
        };
        let effect = progress.on_reply(&reply, now_ms, epoch, sync);
        match effect {
            Effect::None => {}
            Effect::Acknowledged => {
                leader.update_high_watermark(durable_end);
            }
            Effect::Deposed => {
                context.note(format!(
                    "leader {} (epoch {}) deposed: follower {from} knows epoch {}",
                    self.id, epoch.0, reply.follower_epoch.0
                ));
                if let Some(pusher) = self.pushers.get_mut(&from) {
                    pusher.stopped = true;
                }
            }
            Effect::Truncate {
                epoch: cut_epoch,
                end_offset,
            } => {
                let sent = self.send_to(context, from, |broker, id| ToFollower::Truncate {
                    header: broker.header(epoch, id),
                    epoch: cut_epoch,
                    end_offset,
                });
                let log_end = self.log().log_end_offset();
                match sent {
                    Some(id) => self.progress(from).sent_truncate(id, log_end, now_ms),
                    None => self.progress(from).reset(),
                }
            }
        }
    }

    /// A connection broke: the pusher using it forgets what is in flight.
    pub fn on_broken(&mut self, connection: u64) {
        let followers: Vec<i32> = self
            .pushers
            .iter()
            .filter(|(_, pusher)| pusher.connection == Some(connection))
            .map(|(&follower, _)| follower)
            .collect();
        for follower in followers {
            if let Some(pusher) = self.pushers.get_mut(&follower) {
                pusher.connection = None;
            }
            if let Some(leader) = self.leader_mut()
                && let Some(progress) = leader.followers.get_mut(&follower)
            {
                progress.reset();
            }
        }
    }

    /// A produce request (acks=all): append if this broker leads and the
    /// ISR is large enough. The leader epoch and the batch's offsets.
    pub fn produce(
        &mut self,
        batch: &Bytes,
    ) -> Result<(LeaderEpoch, Offset, Offset, AppendCompletion), &'static str> {
        if !self.is_up() || !self.registered {
            return Err("NOT_LEADER_OR_FOLLOWER");
        }
        let Some(leader) = self.leader_state() else {
            return Err("NOT_LEADER_OR_FOLLOWER");
        };
        if leader.isr.len() < MIN_INSYNC {
            return Err("NOT_ENOUGH_REPLICAS");
        }
        let epoch = leader.epoch;
        match self.log().append(batch, epoch) {
            Ok(appended) => Ok((
                epoch,
                appended.base_offset,
                appended.last_offset.plus(1),
                appended.completion,
            )),
            Err(_) => Err("KAFKA_STORAGE_ERROR"),
        }
    }

    /// The stored batches of `[from, to)`, one `Vec` per batch, with their
    /// base offsets.
    pub fn batches(&self, from: Offset, to: Offset) -> Vec<(Offset, Vec<u8>)> {
        let log = self.log();
        let mut out = Vec::new();
        let mut offset = from.max(log.log_start_offset());
        while offset < to {
            let limits = ReadLimits {
                max_bytes: 1 << 20,
                min_one_batch: true,
                max_offset: to,
            };
            let read = block_on(log.read(offset, limits)).expect("reading below the log end");
            if read.records.is_empty() {
                break;
            }
            for run in &read.records {
                for range in sluice_engine::batch::split_batches(run).expect("stored batches split")
                {
                    let bytes = run[range].to_vec();
                    let header =
                        sluice_engine::batch::BatchHeader::parse(&bytes).expect("a stored batch");
                    out.push((header.base_offset(), bytes));
                }
            }
            offset = read.next_offset;
        }
        out
    }

    pub fn crash_mode(random: &mut Prng) -> CrashMode {
        if random.chance(500_000) {
            CrashMode::LoseUnsynced
        } else {
            CrashMode::Torn
        }
    }
}
