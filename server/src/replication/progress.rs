//! The replication decisions, free of I/O so that they can be unit tested
//! and simulated: where a follower's log agrees with the leader's
//! ([`sync_step`], [`truncation_target`]), each follower's progress as the
//! leader sees it ([`FollowerProgress`]), and the leader's high watermark
//! and ISR wishes ([`LeaderState`]). Time arrives as `now_ms`; logs are
//! described by offsets and an epoch lookup.
//!
//! Invariants (asserted or checked by the tests and the simulation):
//! - a follower's acknowledged end counts only once its log is known to be
//!   a prefix of the leader's (after a successful sync in this epoch);
//! - the high watermark never moves backwards while one leader leads, and
//!   never passes the durable end of any member of the (maximal) ISR;
//! - nothing at or below a follower's high watermark is truncated.

use std::collections::{BTreeMap, VecDeque};

use sluice_engine::{LeaderEpoch, Offset};

use super::messages::{FollowerLog, ReplyStatus, StateReply};

/// Bytes of batches in one push.
pub const PUSH_BYTES_MAX: usize = 1 << 20;
/// Pushes in flight to one follower for one partition: pipelining, and the
/// bound that keeps a catching-up follower from taking the leader's
/// memory and disk bandwidth from live appends.
pub const PUSHES_IN_FLIGHT_MAX: usize = 4;

/// What a leader does with a follower whose log state it just learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStep {
    /// The follower's log is a prefix of the leader's: push from `from`.
    Stream { from: Offset },
    /// The follower must cut its tail (then report again).
    Truncate {
        epoch: Option<LeaderEpoch>,
        end_offset: Offset,
    },
    /// The follower's log ends before the leader's log start (retention
    /// or DeleteRecords removed what it needs next, or it is a new replica
    /// of such a partition): it must start over, empty, at the leader's log
    /// start `at` (Kafka's truncateFullyAndStartAt), then stream from it.
    StartOver { at: Offset },
    /// A follower log with no batch that ends past the leader's log end:
    /// nothing to stream, nothing to cut; probed again later.
    Gap,
}

/// KIP-101/KIP-279 on the leader's side: compare the follower's last
/// epoch with the leader's epochs. `end_offset_for_epoch` is the leader
/// log's lookup as Kafka's leader answers it (`Log::end_offset_for_epoch_client`):
/// the largest epoch at or below the one asked and where it ends on the
/// leader, or for an epoch below all of the leader's, that epoch and where
/// the leader's first one starts (it holds nothing before). Undefined
/// (`None`) only when the leader's log holds no batch at all.
pub fn sync_step(
    follower: &FollowerLog,
    leader_log_start: Offset,
    leader_log_end: Offset,
    end_offset_for_epoch: impl Fn(LeaderEpoch) -> Option<(LeaderEpoch, Offset)>,
) -> SyncStep {
    let stream_or_gap = |from: Offset| {
        if from < leader_log_start {
            SyncStep::StartOver {
                at: leader_log_start,
            }
        } else {
            SyncStep::Stream { from }
        }
    };
    match follower.last_epoch {
        // No batch: nothing can disagree.
        None if follower.log_end <= leader_log_end => stream_or_gap(follower.log_end),
        None => SyncStep::Gap,
        Some(epoch) => match end_offset_for_epoch(epoch) {
            Some((leader_epoch, end)) if leader_epoch == epoch && follower.log_end <= end => {
                stream_or_gap(follower.log_end)
            }
            Some((leader_epoch, end)) => SyncStep::Truncate {
                epoch: Some(leader_epoch),
                end_offset: end,
            },
            // The leader holds no batch: nothing of it to keep past the
            // leader's end (what lies below is the leader's log start's
            // business: stream or start over there).
            None if follower.log_end <= leader_log_end => stream_or_gap(follower.log_end),
            // Past it: keep what is committed, and nothing past the
            // leader's end.
            None => SyncStep::Truncate {
                epoch: None,
                end_offset: leader_log_end,
            },
        },
    }
}

/// KIP-279 on the follower's side: where to cut when the leader says its
/// `epoch` ends at `leader_end`. `own_end_offset_for_epoch` is the
/// follower log's lookup. The result is never below `high_watermark`
/// (`Err` with the offset that would have been: a bug, refused).
pub fn truncation_target(
    epoch: Option<LeaderEpoch>,
    leader_end: Offset,
    log_start: Offset,
    log_end: Offset,
    high_watermark: Offset,
    own_end_offset_for_epoch: impl Fn(LeaderEpoch) -> Option<(LeaderEpoch, Offset)>,
) -> Result<Offset, Offset> {
    let target = match epoch {
        // The end of the largest epoch both hold, on both logs.
        Some(epoch) => match own_end_offset_for_epoch(epoch) {
            Some((_, own_end)) => leader_end.min(own_end),
            // Every batch of ours is of an epoch the leader does not know.
            None => log_start,
        },
        // The leader holds none of our epochs: keep only what is committed
        // (and the leader holds: after an unclean election it may hold less,
        // as Kafka's follower then cuts to the leader's end).
        None => high_watermark.min(leader_end),
    };
    let target = target.min(log_end).max(log_start);
    if target < high_watermark.min(log_end) {
        return Err(target);
    }
    Ok(target)
}

/// A push or probe awaiting its answer.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    request_id: u64,
    /// The follower's log end once this is appended (probes: none).
    end: Option<Offset>,
    /// The leader's log end when it left: a follower that acknowledges it
    /// was caught up then.
    leader_end_at_send: Offset,
    sent_ms: i64,
}

/// Where the leader is with one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Its log's state is unknown: send a probe.
    Unsynced,
    /// A probe or truncation is out; wait for its answer.
    Syncing,
    /// Its log is a prefix of ours: push from `next_offset`.
    Streaming,
    /// Cannot continue (log start gap, or the follower refused): wait and
    /// probe again later.
    Stalled { until_ms: i64 },
}

/// What the driver should do after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing more (the answer was stale, or only acknowledged).
    None,
    /// The follower's acknowledged end moved: recompute the high
    /// watermark.
    Acknowledged,
    /// Send a truncation.
    Truncate {
        epoch: Option<LeaderEpoch>,
        end_offset: Offset,
    },
    /// The follower knows a newer leader epoch: this leader is deposed.
    Deposed,
}

/// One follower as the leader sees it, for one partition and one leader
/// epoch.
#[derive(Clone, Debug)]
pub struct FollowerProgress {
    pub broker: i32,
    pub phase: Phase,
    /// The next offset to push (Streaming).
    pub next_offset: Offset,
    /// Its durable end, as acknowledged since it synced in this epoch.
    pub acked_end: Option<Offset>,
    /// Its log start, as its last answer said (None: not heard yet).
    pub log_start: Option<Offset>,
    /// The last time it was caught up with the leader's log end (Kafka's
    /// lastCaughtUpTimeMs): what replica.lag.time.max.ms measures.
    pub last_caught_up_ms: i64,
    /// The last answer of any kind.
    pub last_heard_ms: i64,
    /// Which pusher task serves it (`LeaderState::followers`): a replica
    /// removed and added again within a leader epoch gets a new one, and
    /// the old task, finding another number, stops.
    pub pusher: u64,
    in_flight: VecDeque<InFlight>,
}

/// How long a stalled follower waits before the leader probes it again.
pub const STALL_RETRY_MS: i64 = 1000;
/// How long before a follower that does not know the epoch yet is asked
/// again.
pub const UNKNOWN_EPOCH_RETRY_MS: i64 = 50;

impl FollowerProgress {
    /// A follower at the start of a leader epoch: unknown log, considered
    /// caught up now (Kafka's initialisation, so a new leader does not
    /// shrink the ISR at once).
    pub fn new(broker: i32, now_ms: i64) -> FollowerProgress {
        FollowerProgress {
            broker,
            phase: Phase::Unsynced,
            next_offset: Offset::ZERO,
            acked_end: None,
            log_start: None,
            last_caught_up_ms: now_ms,
            last_heard_ms: now_ms,
            pusher: 0,
            in_flight: VecDeque::new(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The oldest message still unanswered: its request id and when it
    /// left.
    pub fn oldest_in_flight(&self) -> Option<(u64, i64)> {
        self.in_flight
            .front()
            .map(|sent| (sent.request_id, sent.sent_ms))
    }

    /// Forget what is in flight (the connection broke): sync again.
    pub fn reset(&mut self) {
        self.in_flight.clear();
        if !matches!(self.phase, Phase::Stalled { .. }) {
            self.phase = Phase::Unsynced;
        }
    }

    /// Whether a probe should go now.
    pub fn wants_probe(&mut self, now_ms: i64) -> bool {
        match self.phase {
            Phase::Unsynced => true,
            Phase::Stalled { until_ms } if now_ms >= until_ms => {
                self.phase = Phase::Unsynced;
                true
            }
            _ => false,
        }
    }

    /// The offset to push from, if a push may go now.
    pub fn push_from(&self, leader_log_end: Offset) -> Option<Offset> {
        (self.phase == Phase::Streaming
            && self.in_flight.len() < PUSHES_IN_FLIGHT_MAX
            && self.next_offset < leader_log_end)
            .then_some(self.next_offset)
    }

    pub fn sent_probe(&mut self, request_id: u64, leader_log_end: Offset, now_ms: i64) {
        self.phase = Phase::Syncing;
        self.in_flight.push_back(InFlight {
            request_id,
            end: None,
            leader_end_at_send: leader_log_end,
            sent_ms: now_ms,
        });
    }

    /// A push of `[start, end)` left (a heartbeat: `start == end`).
    pub fn sent_push(
        &mut self,
        request_id: u64,
        start: Offset,
        end: Offset,
        leader_log_end: Offset,
        now_ms: i64,
    ) {
        assert_eq!(self.phase, Phase::Streaming, "pushes only while streaming");
        assert!(start == self.next_offset && end >= start);
        self.next_offset = end;
        self.in_flight.push_back(InFlight {
            request_id,
            end: Some(end),
            leader_end_at_send: leader_log_end,
            sent_ms: now_ms,
        });
    }

    /// Take a follower's answer. `sync` runs [`sync_step`] against the
    /// leader's log for the follower state given.
    pub fn on_reply(
        &mut self,
        reply: &StateReply,
        now_ms: i64,
        leader_epoch: LeaderEpoch,
        sync: impl Fn(&FollowerLog) -> SyncStep,
    ) -> Effect {
        let Some(position) = self
            .in_flight
            .iter()
            .position(|sent| sent.request_id == reply.request_id)
        else {
            return Effect::None; // from before a reset
        };
        let sent = self.in_flight[position];
        self.last_heard_ms = now_ms;
        match reply.status {
            ReplyStatus::Ok => {}
            ReplyStatus::FencedLeaderEpoch if reply.follower_epoch > leader_epoch => {
                self.in_flight.clear();
                return Effect::Deposed;
            }
            ReplyStatus::OutOfOrder => {
                // It lost its tail (a restart) or an earlier push failed:
                // sync again from what it has.
                self.in_flight.clear();
                return self.resync(&reply.log, now_ms, sync);
            }
            ReplyStatus::UnknownLeaderEpoch | ReplyStatus::NotReplica => {
                self.in_flight.clear();
                self.phase = Phase::Stalled {
                    until_ms: now_ms + UNKNOWN_EPOCH_RETRY_MS,
                };
                return Effect::None;
            }
            ReplyStatus::FencedLeaderEpoch
            | ReplyStatus::NotFollower
            | ReplyStatus::StorageError
            | ReplyStatus::TruncationRefused
            | ReplyStatus::LogStartGap => {
                self.in_flight.clear();
                self.phase = Phase::Stalled {
                    until_ms: now_ms + STALL_RETRY_MS,
                };
                return Effect::None;
            }
        }
        // An answer of its log as it is (a NotReplica one says nothing).
        self.log_start = Some(reply.log.log_start);
        // Answers come in order per connection; anything older than this
        // one was answered already or lost with it.
        self.in_flight.drain(..=position);
        match (self.phase, sent.end) {
            (Phase::Streaming, Some(end)) => {
                let durable = reply.log.durable_end.min(end);
                if self.acked_end.is_none_or(|acked| durable > acked) {
                    self.acked_end = Some(durable);
                }
                if reply.log.durable_end >= sent.leader_end_at_send {
                    self.last_caught_up_ms = self.last_caught_up_ms.max(sent.sent_ms);
                }
                Effect::Acknowledged
            }
            (Phase::Syncing, None) => self.resync(&reply.log, now_ms, sync),
            _ => Effect::None,
        }
    }

    fn resync(
        &mut self,
        log: &FollowerLog,
        now_ms: i64,
        sync: impl Fn(&FollowerLog) -> SyncStep,
    ) -> Effect {
        match sync(log) {
            SyncStep::Stream { from } => {
                self.phase = Phase::Streaming;
                self.next_offset = from;
                // Its whole log is ours: its durable part counts, and only
                // it. It may be less than it acknowledged before: a broker
                // back with a lost or wiped disk answers a probe with what
                // it has now, and an older, larger end would bring it back
                // into the ISR (and count for the high watermark) without
                // the records (found by a read-only audit; Kafka takes the
                // follower's log end from each fetch, down too).
                self.acked_end = Some(log.durable_end.min(from));
                Effect::Acknowledged
            }
            SyncStep::Truncate { epoch, end_offset } => {
                self.phase = Phase::Syncing;
                Effect::Truncate { epoch, end_offset }
            }
            // Sent as a truncation: the follower starts over when its log
            // ends before the leader's log start, which every message's
            // header carries (replication/follower.rs).
            SyncStep::StartOver { at } => {
                self.phase = Phase::Syncing;
                Effect::Truncate {
                    epoch: None,
                    end_offset: at,
                }
            }
            SyncStep::Gap => {
                self.phase = Phase::Stalled {
                    until_ms: now_ms + STALL_RETRY_MS,
                };
                Effect::None
            }
        }
    }

    /// A truncation left; its answer is taken like a probe's.
    pub fn sent_truncate(&mut self, request_id: u64, leader_log_end: Offset, now_ms: i64) {
        self.sent_probe(request_id, leader_log_end, now_ms);
    }

    /// Whether it was caught up within `lag_max_ms` (Kafka's ISR rule).
    pub fn is_caught_up(&self, now_ms: i64, lag_max_ms: i64) -> bool {
        now_ms - self.last_caught_up_ms <= lag_max_ms
    }
}

/// A leader's replication state for one partition and one leader epoch.
#[derive(Clone, Debug)]
pub struct LeaderState {
    pub node_id: i32,
    pub epoch: LeaderEpoch,
    /// The leader's log end when it took leadership (Kafka's leader epoch
    /// start offset): a follower joins the ISR only past it.
    pub epoch_start: Offset,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    /// The committed ISR (as the controller last said).
    pub isr: Vec<i32>,
    /// An ISR change sent to the controller and not yet seen committed.
    pub pending_isr: Option<Vec<i32>>,
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// The number the next follower's pusher gets.
    next_pusher: u64,
    /// Never moves backwards while this leader leads.
    high_watermark: Offset,
}

impl LeaderState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: i32,
        epoch: LeaderEpoch,
        epoch_start: Offset,
        partition_epoch: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        high_watermark: Offset,
        now_ms: i64,
    ) -> LeaderState {
        let mut leader = LeaderState {
            node_id,
            epoch,
            epoch_start,
            partition_epoch,
            replicas: Vec::new(),
            isr,
            pending_isr: None,
            followers: BTreeMap::new(),
            next_pusher: 0,
            high_watermark: high_watermark.min(epoch_start),
        };
        leader.set_replicas(&replicas, now_ms);
        leader
    }

    /// Start this leadership's epoch at `log_end`: it began while a
    /// follower's truncation (or start-over) was in progress, so the log
    /// end it was given was the end before the cut. Nothing was appended,
    /// pushed or counted since (appends, pushers and high-watermark
    /// updates wait for the truncation: `PartitionReplica::begin_rewrite`),
    /// so no follower has acknowledged anything in this epoch.
    pub fn settle_epoch_start(&mut self, log_end: Offset) {
        assert!(
            self.followers
                .values()
                .all(|follower| follower.acked_end.is_none()),
            "a leadership counted followers before its epoch start was known"
        );
        self.epoch_start = log_end;
        self.high_watermark = self.high_watermark.min(log_end);
    }

    /// Follow a new replica list (a reassignment, within the leader
    /// epoch): progress for the replicas new to it, none any more for
    /// those gone. Returns the new followers and their pusher numbers: the
    /// caller starts a pusher for each.
    fn set_replicas(&mut self, replicas: &[i32], now_ms: i64) -> Vec<(i32, u64)> {
        self.replicas = replicas.to_vec();
        self.followers.retain(|broker, _| replicas.contains(broker));
        let mut added = Vec::new();
        for &broker in replicas {
            if broker == self.node_id || self.followers.contains_key(&broker) {
                continue;
            }
            added.push(self.fresh_follower(broker, now_ms));
        }
        added
    }

    /// New progress for `broker` with a pusher number of its own (an old
    /// pusher of it, finding another number, stops).
    fn fresh_follower(&mut self, broker: i32, now_ms: i64) -> (i32, u64) {
        let mut progress = FollowerProgress::new(broker, now_ms);
        progress.pusher = self.next_pusher;
        self.next_pusher += 1;
        self.followers.insert(broker, progress);
        (broker, self.next_pusher - 1)
    }

    /// The followers and their pusher numbers.
    pub fn pushers(&self) -> Vec<(i32, u64)> {
        self.followers
            .iter()
            .map(|(broker, progress)| (*broker, progress.pusher))
            .collect()
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The committed ISR plus members being added: the set the high
    /// watermark waits for (Kafka's maximal ISR). A member being removed
    /// still counts until the removal is committed.
    pub fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let added = self
            .pending_isr
            .iter()
            .flatten()
            .filter(|member| !self.isr.contains(member));
        self.isr.iter().chain(added).copied()
    }

    /// The partition's low watermark (Kafka's lowWatermarkIfLeader): the
    /// smallest log start over the maximal ISR, `leader_log_start` being
    /// ours; a member not heard from yet holds it at zero. DeleteRecords
    /// answers once it reaches the offset asked, so the records stay
    /// deleted whichever member leads next.
    pub fn low_watermark(&self, leader_log_start: Offset) -> Offset {
        self.maximal_isr()
            .filter(|member| *member != self.node_id)
            .map(|member| {
                self.followers
                    .get(&member)
                    .and_then(|follower| follower.log_start)
                    .unwrap_or(Offset::ZERO)
            })
            .fold(leader_log_start, Offset::min)
    }

    /// Recompute the high watermark: the smallest durable end over the
    /// maximal ISR (ours included). Returns whether it moved.
    pub fn update_high_watermark(&mut self, leader_durable_end: Offset) -> bool {
        let mut candidate = leader_durable_end;
        for member in self.maximal_isr() {
            if member == self.node_id {
                continue;
            }
            match self
                .followers
                .get(&member)
                .and_then(|follower| follower.acked_end)
            {
                Some(end) => candidate = candidate.min(end),
                // Not heard from in this epoch: no advance.
                None => return false,
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            true
        } else {
            false
        }
    }

    /// The ISR this leader wants, if it differs from the committed one and
    /// no change is pending: lagging members out, caught-up replicas in.
    pub fn wanted_isr(&self, now_ms: i64, lag_max_ms: i64) -> Option<Vec<i32>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let mut wanted: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|&member| {
                member == self.node_id
                    || self
                        .followers
                        .get(&member)
                        .is_some_and(|follower| follower.is_caught_up(now_ms, lag_max_ms))
            })
            .collect();
        if !wanted.contains(&self.node_id) {
            wanted.insert(0, self.node_id);
        }
        for &replica in &self.replicas {
            if wanted.contains(&replica) {
                continue;
            }
            let Some(follower) = self.followers.get(&replica) else {
                continue;
            };
            let joins = follower.phase == Phase::Streaming
                && follower.is_caught_up(now_ms, lag_max_ms)
                && follower
                    .acked_end
                    .is_some_and(|end| end >= self.high_watermark && end >= self.epoch_start);
            if joins {
                wanted.push(replica);
            }
        }
        let mut sorted_wanted = wanted.clone();
        sorted_wanted.sort_unstable();
        let mut sorted_isr = self.isr.clone();
        sorted_isr.sort_unstable();
        (sorted_wanted != sorted_isr).then_some(wanted)
    }

    /// A newer committed assignment arrived (from the metadata view).
    /// An older partition epoch (a late AlterPartition answer, after a
    /// newer view) is ignored, as Kafka ignores stale AlterPartition
    /// responses. Returns the followers new to the replica list (a
    /// reassignment) with their pusher numbers, to start pushers for.
    ///
    /// At the partition epoch already applied, only a view's replica list
    /// is taken: an AlterPartition answer carries the committed state's
    /// ISR and epoch but not its replicas (the driver passes the leader's
    /// own), so an answer of a newer state (the controller answers a
    /// request already in place with the current state) can reach an epoch
    /// first, and the view of that epoch must still bring its replicas.
    ///
    /// When the epoch jumps by more than one, this leader missed a change
    /// (views coalesce): it may have removed a follower, whose broker then
    /// deleted its copy, and added it back. The progress of every follower
    /// outside the ISR starts afresh (with a new pusher), so that no old
    /// durable end is counted for a copy that is gone; ISR members cannot
    /// have been removed and re-added unseen, as only this leader adds them.
    pub fn apply_committed(
        &mut self,
        partition_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        now_ms: i64,
    ) -> Vec<(i32, u64)> {
        if partition_epoch < self.partition_epoch {
            return Vec::new();
        }
        if partition_epoch == self.partition_epoch {
            return if self.replicas != replicas {
                self.set_replicas(replicas, now_ms)
            } else {
                Vec::new()
            };
        }
        let missed_a_change = partition_epoch > self.partition_epoch + 1;
        self.partition_epoch = partition_epoch;
        self.isr = isr.to_vec();
        self.pending_isr = None;
        let mut added = if self.replicas != replicas {
            self.set_replicas(replicas, now_ms)
        } else {
            Vec::new()
        };
        if missed_a_change {
            let stale: Vec<i32> = self
                .followers
                .keys()
                .copied()
                .filter(|broker| {
                    !isr.contains(broker) && !added.iter().any(|(new, _)| new == broker)
                })
                .collect();
            for broker in stale {
                added.push(self.fresh_follower(broker, now_ms));
            }
        }
        added
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use uuid::Uuid;

    use super::*;

    /// A leader log's epochs: (epoch, start); end of log `end`.
    fn lookup(
        entries: &'static [(i32, i64)],
        end: i64,
    ) -> impl Fn(LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        move |requested| {
            let position = entries
                .iter()
                .rposition(|&(epoch, _)| epoch <= requested.0)?;
            let (epoch, _) = entries[position];
            let epoch_end = entries.get(position + 1).map_or(end, |&(_, start)| start);
            Some((LeaderEpoch(epoch), Offset(epoch_end)))
        }
    }

    fn follower_log(end: i64, durable: i64, last_epoch: Option<i32>) -> FollowerLog {
        FollowerLog {
            log_start: Offset(0),
            log_end: Offset(end),
            durable_end: Offset(durable),
            last_epoch: last_epoch.map(LeaderEpoch),
        }
    }

    #[test]
    fn a_follower_on_the_same_epoch_streams_from_its_end() {
        let leader = lookup(&[(0, 0), (2, 50)], 100);
        let step = sync_step(
            &follower_log(70, 70, Some(2)),
            Offset(0),
            Offset(100),
            &leader,
        );
        assert_eq!(step, SyncStep::Stream { from: Offset(70) });
        let step = sync_step(&follower_log(0, 0, None), Offset(0), Offset(100), &leader);
        assert_eq!(step, SyncStep::Stream { from: Offset(0) });
    }

    #[test]
    fn a_divergent_follower_truncates_to_the_end_of_the_common_epoch() {
        // Leader: epoch 0 [0,50), epoch 2 [50,100). Follower wrote epoch 1
        // at 40..60 as a deposed leader.
        let leader = lookup(&[(0, 0), (2, 50)], 100);
        let follower = lookup(&[(0, 0), (1, 40)], 60);
        let step = sync_step(
            &follower_log(60, 60, Some(1)),
            Offset(0),
            Offset(100),
            &leader,
        );
        assert_eq!(
            step,
            SyncStep::Truncate {
                epoch: Some(LeaderEpoch(0)),
                end_offset: Offset(50)
            }
        );
        // The follower's epoch 0 ends at 40: it keeps [0, 40).
        let target = truncation_target(
            Some(LeaderEpoch(0)),
            Offset(50),
            Offset(0),
            Offset(60),
            Offset(30),
            &follower,
        );
        assert_eq!(target, Ok(Offset(40)));
        // Then it agrees.
        let step = sync_step(
            &follower_log(40, 40, Some(0)),
            Offset(0),
            Offset(100),
            &leader,
        );
        assert_eq!(step, SyncStep::Stream { from: Offset(40) });
    }

    #[test]
    fn a_follower_ahead_on_the_same_epoch_is_cut_to_the_leaders_end() {
        // Both epoch 3; the follower holds more of it (the leader lost an
        // unsynced tail and was re-elected? no: a new leader never had it).
        let leader = lookup(&[(3, 0)], 10);
        let step = sync_step(
            &follower_log(15, 15, Some(3)),
            Offset(0),
            Offset(10),
            &leader,
        );
        assert_eq!(
            step,
            SyncStep::Truncate {
                epoch: Some(LeaderEpoch(3)),
                end_offset: Offset(10)
            }
        );
        let follower = lookup(&[(3, 0)], 15);
        let target = truncation_target(
            Some(LeaderEpoch(3)),
            Offset(10),
            Offset(0),
            Offset(15),
            Offset(8),
            &follower,
        );
        assert_eq!(target, Ok(Offset(10)));
    }

    #[test]
    fn nothing_at_or_below_the_high_watermark_is_truncated() {
        let follower = lookup(&[(0, 0), (1, 40)], 60);
        let refused = truncation_target(
            Some(LeaderEpoch(0)),
            Offset(20),
            Offset(0),
            Offset(60),
            Offset(45),
            &follower,
        );
        assert_eq!(refused, Err(Offset(20)));
        // No common epoch: back to the high watermark, not further.
        let target = truncation_target(
            None,
            Offset(100),
            Offset(0),
            Offset(60),
            Offset(45),
            &follower,
        );
        assert_eq!(target, Ok(Offset(45)));
        // Nor past the leader's end (an unclean leader holding less than
        // the high watermark): below it, said so (the follower then lowers
        // its high watermark if an earlier leader gave it).
        let target = truncation_target(
            None,
            Offset(30),
            Offset(0),
            Offset(60),
            Offset(45),
            &follower,
        );
        assert_eq!(target, Err(Offset(30)));
    }

    /// A leader whose epochs all come after the follower's last one (it
    /// started over at a log start, or its early epochs were deleted)
    /// answers, as Kafka's, with the follower's epoch and where its own
    /// first epoch starts: the follower streams from there or cuts to it.
    /// Answered undefined, the follower was told to cut to its high
    /// watermark, which it held already, and the probe and the cut went
    /// round for good (found by a review).
    #[test]
    fn a_follower_whose_epochs_the_leader_never_had_syncs_without_a_loop() {
        // The leader holds epoch 4 from offset 10 (its log start).
        let leader = |requested: LeaderEpoch| {
            Some(if requested.0 >= 4 {
                (LeaderEpoch(4), Offset(20))
            } else {
                (requested, Offset(10))
            })
        };
        let step = sync_step(
            &follower_log(10, 10, Some(3)),
            Offset(10),
            Offset(20),
            leader,
        );
        assert_eq!(step, SyncStep::Stream { from: Offset(10) });
        let step = sync_step(
            &follower_log(12, 12, Some(3)),
            Offset(10),
            Offset(20),
            leader,
        );
        assert_eq!(
            step,
            SyncStep::Truncate {
                epoch: Some(LeaderEpoch(3)),
                end_offset: Offset(10)
            }
        );
        let follower = lookup(&[(3, 0)], 12);
        let target = truncation_target(
            Some(LeaderEpoch(3)),
            Offset(10),
            Offset(0),
            Offset(12),
            Offset(10),
            &follower,
        );
        assert_eq!(target, Ok(Offset(10)));
        // A leader holding no batch at all: no cut to what it lacks below
        // its end; the log start decides.
        let empty = |_: LeaderEpoch| None;
        let step = sync_step(
            &follower_log(10, 10, Some(3)),
            Offset(10),
            Offset(10),
            empty,
        );
        assert_eq!(step, SyncStep::Stream { from: Offset(10) });
        let step = sync_step(&follower_log(8, 8, Some(3)), Offset(10), Offset(10), empty);
        assert_eq!(step, SyncStep::StartOver { at: Offset(10) });
    }

    #[test]
    fn a_follower_behind_the_leaders_log_start_starts_over_there() {
        let leader = lookup(&[(0, 0)], 100);
        let step = sync_step(
            &follower_log(10, 10, Some(0)),
            Offset(20),
            Offset(100),
            &leader,
        );
        assert_eq!(step, SyncStep::StartOver { at: Offset(20) });
        // A new replica (an empty log) of a partition whose start moved.
        let step = sync_step(&follower_log(0, 0, None), Offset(20), Offset(100), &leader);
        assert_eq!(step, SyncStep::StartOver { at: Offset(20) });
        // An empty log past the leader's end: nothing to do but wait.
        let step = sync_step(
            &follower_log(120, 120, None),
            Offset(20),
            Offset(100),
            &leader,
        );
        assert_eq!(step, SyncStep::Gap);
    }

    fn reply(request_id: u64, status: ReplyStatus, log: FollowerLog) -> StateReply {
        StateReply {
            request_id,
            topic_id: Uuid::from_u128(1),
            partition: 0,
            status,
            follower_epoch: LeaderEpoch(1),
            log,
        }
    }

    #[test]
    fn progress_syncs_streams_and_tracks_caught_up_time() {
        let leader = lookup(&[(1, 0)], 100);
        let sync = |log: &FollowerLog| sync_step(log, Offset(0), Offset(100), &leader);
        let mut progress = FollowerProgress::new(2, 0);
        assert!(progress.wants_probe(0));
        progress.sent_probe(1, Offset(100), 0);
        let effect = progress.on_reply(
            &reply(1, ReplyStatus::Ok, follower_log(60, 60, Some(1))),
            5,
            LeaderEpoch(1),
            sync,
        );
        assert_eq!(effect, Effect::Acknowledged);
        assert_eq!(progress.acked_end, Some(Offset(60)));
        assert_eq!(progress.push_from(Offset(100)), Some(Offset(60)));
        progress.sent_push(2, Offset(60), Offset(100), Offset(100), 10);
        assert_eq!(progress.push_from(Offset(100)), None);
        let effect = progress.on_reply(
            &reply(2, ReplyStatus::Ok, follower_log(100, 100, Some(1))),
            20,
            LeaderEpoch(1),
            sync,
        );
        assert_eq!(effect, Effect::Acknowledged);
        assert_eq!(progress.acked_end, Some(Offset(100)));
        assert_eq!(progress.last_caught_up_ms, 10);
        // An answer from before a reset is ignored.
        progress.reset();
        let effect = progress.on_reply(
            &reply(2, ReplyStatus::Ok, follower_log(100, 100, Some(1))),
            30,
            LeaderEpoch(1),
            sync,
        );
        assert_eq!(effect, Effect::None);
        assert_eq!(progress.phase, Phase::Unsynced);
    }

    #[test]
    fn an_out_of_order_answer_resyncs_and_a_newer_epoch_deposes() {
        let leader = lookup(&[(1, 0)], 100);
        let sync = |log: &FollowerLog| sync_step(log, Offset(0), Offset(100), &leader);
        let mut progress = FollowerProgress::new(2, 0);
        progress.sent_probe(1, Offset(100), 0);
        progress.on_reply(
            &reply(1, ReplyStatus::Ok, follower_log(50, 50, Some(1))),
            1,
            LeaderEpoch(1),
            sync,
        );
        progress.sent_push(2, Offset(50), Offset(80), Offset(100), 2);
        progress.sent_push(3, Offset(80), Offset(100), Offset(100), 2);
        // It restarted and lost everything past 40.
        let effect = progress.on_reply(
            &reply(2, ReplyStatus::OutOfOrder, follower_log(40, 40, Some(1))),
            3,
            LeaderEpoch(1),
            sync,
        );
        assert_eq!(effect, Effect::Acknowledged);
        assert_eq!(progress.next_offset, Offset(40));
        assert_eq!(progress.in_flight(), 0);
        assert_eq!(
            progress.acked_end,
            Some(Offset(40)),
            "what it has now counts, not what it acknowledged before"
        );
        progress.sent_push(4, Offset(40), Offset(100), Offset(100), 4);
        let mut newer = reply(
            4,
            ReplyStatus::FencedLeaderEpoch,
            follower_log(40, 40, Some(1)),
        );
        newer.follower_epoch = LeaderEpoch(2);
        assert_eq!(
            progress.on_reply(&newer, 5, LeaderEpoch(1), sync),
            Effect::Deposed
        );
    }

    fn leader_state() -> LeaderState {
        LeaderState::new(
            1,
            LeaderEpoch(1),
            Offset(10),
            0,
            vec![1, 2, 3],
            vec![1, 2, 3],
            Offset(5),
            0,
        )
    }

    #[test]
    fn the_high_watermark_is_the_isr_minimum_and_never_goes_back() {
        let mut state = leader_state();
        assert_eq!(state.high_watermark(), Offset(5));
        assert!(
            !state.update_high_watermark(Offset(20)),
            "followers unheard"
        );
        state.followers.get_mut(&2).unwrap().acked_end = Some(Offset(15));
        assert!(!state.update_high_watermark(Offset(20)));
        state.followers.get_mut(&3).unwrap().acked_end = Some(Offset(12));
        assert!(state.update_high_watermark(Offset(20)));
        assert_eq!(state.high_watermark(), Offset(12));
        // The leader's own durable end bounds it.
        state.followers.get_mut(&3).unwrap().acked_end = Some(Offset(30));
        state.followers.get_mut(&2).unwrap().acked_end = Some(Offset(30));
        state.update_high_watermark(Offset(18));
        assert_eq!(state.high_watermark(), Offset(18));
        // Never back.
        state.update_high_watermark(Offset(3));
        assert_eq!(state.high_watermark(), Offset(18));
    }

    #[test]
    fn a_lagging_member_leaves_the_isr_and_a_caught_up_replica_joins() {
        let mut state = leader_state();
        for follower in state.followers.values_mut() {
            follower.phase = Phase::Streaming;
            follower.acked_end = Some(Offset(20));
        }
        state.followers.get_mut(&3).unwrap().last_caught_up_ms = 0;
        state.followers.get_mut(&2).unwrap().last_caught_up_ms = 9_000;
        assert_eq!(state.wanted_isr(5_000, 10_000), None);
        assert_eq!(state.wanted_isr(10_500, 10_000), Some(vec![1, 2]));
        // Pending: no second proposal; the removed member still counts
        // for the high watermark until committed.
        state.pending_isr = Some(vec![1, 2]);
        assert_eq!(state.wanted_isr(10_500, 10_000), None);
        assert_eq!(state.maximal_isr().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(
            state.apply_committed(1, &[1, 2, 3], &[1, 2], 10_500),
            vec![]
        );
        assert_eq!(state.pending_isr, None);
        assert_eq!(state.maximal_isr().collect::<Vec<_>>(), vec![1, 2]);
        // A late answer of an older partition epoch changes nothing.
        state.apply_committed(0, &[1, 2, 3], &[1, 2, 3], 10_500);
        assert_eq!(state.isr, vec![1, 2]);
        // 3 catches up again.
        state.followers.get_mut(&3).unwrap().last_caught_up_ms = 11_000;
        state.update_high_watermark(Offset(20));
        assert_eq!(state.wanted_isr(11_000, 10_000), Some(vec![1, 2, 3]));
        // Not past the epoch start: not yet.
        state.followers.get_mut(&3).unwrap().acked_end = Some(Offset(8));
        assert_eq!(state.wanted_isr(11_000, 10_000), None);
    }

    /// A follower whose broker came back with an empty disk (removed from
    /// the ISR by its new registration, one partition epoch: the leader
    /// keeps its progress) answers the next probe with its empty log. Its
    /// old acknowledged end no longer counts: it does not rejoin the ISR
    /// until it has the records again.
    #[test]
    fn a_follower_back_with_less_data_is_counted_for_what_it_has() {
        let leader = lookup(&[(1, 0)], 30);
        let sync = |log: &FollowerLog| sync_step(log, Offset(0), Offset(30), &leader);
        let mut state = leader_state();
        for follower in state.followers.values_mut() {
            follower.phase = Phase::Streaming;
            follower.acked_end = Some(Offset(30));
            follower.last_caught_up_ms = 1_000;
        }
        assert!(state.update_high_watermark(Offset(30)));
        state.apply_committed(1, &[1, 2, 3], &[1, 3], 1_000);
        let follower = state.followers.get_mut(&2).unwrap();
        follower.reset();
        assert!(follower.wants_probe(1_100));
        follower.sent_probe(7, Offset(30), 1_100);
        let effect = follower.on_reply(
            &reply(7, ReplyStatus::Ok, follower_log(0, 0, None)),
            1_200,
            LeaderEpoch(1),
            sync,
        );
        assert_eq!(effect, Effect::Acknowledged);
        assert_eq!(follower.acked_end, Some(Offset(0)));
        assert_eq!(state.wanted_isr(1_200, 10_000), None, "not back in the ISR");
        assert_eq!(state.high_watermark(), Offset(30), "never back");
        // Caught up again: it joins.
        let follower = state.followers.get_mut(&2).unwrap();
        follower.sent_push(8, Offset(0), Offset(30), Offset(30), 1_300);
        follower.on_reply(
            &reply(8, ReplyStatus::Ok, follower_log(30, 30, Some(1))),
            1_400,
            LeaderEpoch(1),
            sync,
        );
        assert_eq!(state.wanted_isr(1_400, 10_000), Some(vec![1, 3, 2]));
    }

    #[test]
    fn a_reassignment_adds_and_removes_followers_within_the_epoch() {
        let mut state = leader_state();
        let first = state.pushers();
        assert_eq!(
            first.iter().map(|(broker, _)| *broker).collect::<Vec<_>>(),
            vec![2, 3]
        );
        // 4 added: a new follower with a new pusher; nobody else changes.
        let added = state.apply_committed(1, &[4, 2, 3, 1], &[1, 2, 3], 1_000);
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].0, 4);
        assert!(!first.iter().any(|(_, pusher)| *pusher == added[0].1));
        assert_eq!(state.followers[&4].acked_end, None);
        // Completed without 3: its progress goes (its pusher stops), and
        // the high watermark no longer waits for it.
        state.apply_committed(2, &[4, 2, 1], &[1, 2, 4], 2_000);
        assert!(!state.followers.contains_key(&3));
        for follower in [2, 4] {
            state.followers.get_mut(&follower).unwrap().acked_end = Some(Offset(30));
        }
        assert!(state.update_high_watermark(Offset(30)));
        // 3 back in a later reassignment: a pusher with another number.
        let again = state.apply_committed(3, &[4, 2, 1, 3], &[1, 2, 4], 3_000);
        assert_eq!(again.len(), 1);
        assert!(again[0].1 > added[0].1);
    }
}
