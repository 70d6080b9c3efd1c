//! The leader's drivers, on the shard that owns the partition: one pusher
//! task per follower and one ISR task per partition, both for one leader
//! epoch. They stop when the replica stops leading under that epoch (or
//! closes). The decisions are `progress`'s; these tasks do the I/O: read
//! the log, send over `link`, wait for answers, appends or timers, ask the
//! controller to change the ISR.

use std::rc::{Rc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;
use sluice_engine::io::Io;
use sluice_engine::{LeaderEpoch, Offset, ReadLimits};

use super::IsrChangeError;
use super::messages::{FollowerLog, LeaderHeader, StateReply, ToFollower};
use super::progress::{Effect, FollowerProgress, LeaderState, PUSH_BYTES_MAX, sync_step};
use crate::shard::partition::Replication;
use crate::shard::{PartitionReplica, Shard};

/// Start replicating `replica`, which just started leading: a pusher per
/// follower, an ISR task. Nothing to do with replication factor 1 (until
/// a reassignment adds a follower: `start_pushers`).
pub fn start(shard: &Rc<Shard>, replica: &Rc<PartitionReplica>) {
    let Some((epoch, pushers)) =
        with_any_leader(replica, |leader| (leader.epoch, leader.pushers()))
    else {
        return;
    };
    start_pushers(shard, replica, epoch, pushers);
    compio::runtime::spawn(isr_loop(Rc::clone(shard), Rc::downgrade(replica), epoch)).detach();
}

/// Start a pusher for each (follower, pusher number): the followers of a
/// new leadership, or those a reassignment added to it.
pub fn start_pushers(
    shard: &Rc<Shard>,
    replica: &Rc<PartitionReplica>,
    epoch: LeaderEpoch,
    pushers: Vec<(i32, u64)>,
) {
    for (follower, pusher) in pushers {
        compio::runtime::spawn(push_loop(
            Rc::clone(shard),
            Rc::downgrade(replica),
            Pusher {
                follower,
                number: pusher,
            },
            epoch,
        ))
        .detach();
    }
}

fn with_any_leader<R>(
    replica: &PartitionReplica,
    work: impl FnOnce(&LeaderState) -> R,
) -> Option<R> {
    match &*replica.replication.borrow() {
        Replication::Leader(leader) => Some(work(leader)),
        Replication::Follower { .. } => None,
    }
}

/// Wait until no follower truncation of the replica is in progress: a
/// leadership that began during one reads, pushes and counts only the log
/// as the cut leaves it (`PartitionReplica::rewrite_done`). False once the
/// replica is gone.
async fn after_rewrite(replica: &Weak<PartitionReplica>) -> bool {
    let Some(replica) = replica.upgrade() else {
        return false;
    };
    replica.rewrite_done().await;
    true
}

/// One pusher task: the follower it serves and its number
/// (`FollowerProgress::pusher`).
#[derive(Clone, Copy, Debug)]
struct Pusher {
    follower: i32,
    number: u64,
}

/// How often an idle follower hears from the leader (the high watermark,
/// and the proof both are alive that replica.lag.time.max.ms measures).
fn heartbeat_interval(shard: &Shard) -> Duration {
    Duration::from_millis((shard.config.replica_lag_time_max_ms / 4).clamp(20, 500))
}

/// Run `work` on the leader state if `replica` still leads under `epoch`.
fn with_leader<R>(
    replica: &PartitionReplica,
    epoch: LeaderEpoch,
    work: impl FnOnce(&mut LeaderState) -> R,
) -> Option<R> {
    let state = replica.state();
    if !state.is_leader() || state.leader_epoch != epoch {
        return None;
    }
    match &mut *replica.replication.borrow_mut() {
        Replication::Leader(leader) if leader.epoch == epoch => Some(work(leader)),
        _ => None,
    }
}

/// Run `work` on the follower's progress if `replica` still leads under
/// `epoch` and `pusher` still serves that follower.
fn with_progress<R>(
    replica: &PartitionReplica,
    epoch: LeaderEpoch,
    pusher: Pusher,
    work: impl FnOnce(&mut FollowerProgress) -> R,
) -> Option<R> {
    with_leader(replica, epoch, |leader| {
        leader
            .followers
            .get_mut(&pusher.follower)
            .filter(|progress| progress.pusher == pusher.number)
            .map(work)
    })
    .flatten()
}

/// The follower's replication address in the current view.
fn follower_address(shard: &Shard, follower: i32) -> Option<std::net::SocketAddr> {
    let view = shard.metadata.snapshot();
    let broker = view.brokers.get(&follower)?;
    broker.replication_address.as_deref()?.parse().ok()
}

fn header(
    shard: &Shard,
    replica: &PartitionReplica,
    epoch: LeaderEpoch,
    request_id: u64,
) -> LeaderHeader {
    LeaderHeader {
        request_id,
        topic_id: replica.topic_id,
        partition: replica.topic_partition.partition,
        leader_id: shard.config.node_id,
        leader_epoch: epoch,
        high_watermark: replica.high_watermark(),
        log_start: replica.log.log_start_offset(),
    }
}

/// What the pusher does next.
enum Send {
    Probe,
    Push(Offset),
    Heartbeat(Offset),
    Wait,
}

async fn push_loop(
    shard: Rc<Shard>,
    replica: Weak<PartitionReplica>,
    pusher: Pusher,
    epoch: LeaderEpoch,
) {
    let follower = pusher.follower;
    let heartbeat = heartbeat_interval(&shard);
    // Longer than a follower's fsync under load; about the lag limit, so
    // a dead connection is replaced by the time the ISR drops it.
    let answer_timeout_ms =
        i64::try_from(shard.config.replica_lag_time_max_ms.max(1000)).unwrap_or(i64::MAX);
    let mut answers = FuturesUnordered::new();
    let mut last_sent = std::time::Instant::now()
        .checked_sub(heartbeat)
        .unwrap_or_else(std::time::Instant::now);
    if !after_rewrite(&replica).await {
        return;
    }
    tracing::debug!(follower, ?epoch, "pusher started");
    loop {
        let Some(replica) = replica.upgrade() else {
            return;
        };
        let now_ms = shard.io.now_ms();
        let log_end = replica.log.log_end_offset();
        let heartbeat_due = last_sent.elapsed() >= heartbeat;
        // Answers stopped although the connection looks open (a cut TCP
        // has not noticed): drop it and sync again over a new one.
        let stuck = with_progress(&replica, epoch, pusher, |progress| {
            progress
                .oldest_in_flight()
                .filter(|&(_, sent_ms)| now_ms - sent_ms > answer_timeout_ms)
                .map(|(request_id, _)| request_id)
        });
        if let Some(Some(request_id)) = stuck {
            shard
                .replication_links
                .break_connection(follower, request_id);
            with_progress(&replica, epoch, pusher, FollowerProgress::reset);
            answers.clear();
        }
        let Some(next) = with_progress(&replica, epoch, pusher, |progress| {
            if progress.wants_probe(now_ms) {
                Send::Probe
            } else if let Some(from) = progress.push_from(log_end) {
                Send::Push(from)
            } else if progress.phase == super::progress::Phase::Streaming
                && progress.in_flight() == 0
                && heartbeat_due
            {
                Send::Heartbeat(progress.next_offset)
            } else {
                Send::Wait
            }
        }) else {
            tracing::debug!(
                follower,
                ?epoch,
                "pusher stopped: no longer leading, or no longer a replica"
            );
            return;
        };
        let sent = match next {
            Send::Probe => {
                let sent = send(&shard, &replica, follower, |id| ToFollower::Probe {
                    header: header(&shard, &replica, epoch, id),
                })
                .await;
                sent.map(|(id, answer)| {
                    with_progress(&replica, epoch, pusher, |progress| {
                        progress.sent_probe(id, log_end, now_ms)
                    });
                    Some(answer)
                })
            }
            Send::Push(from) => {
                let limits = ReadLimits {
                    max_bytes: PUSH_BYTES_MAX,
                    min_one_batch: true,
                    max_offset: log_end,
                };
                match replica.log.read(from, limits).await {
                    Ok(read) if read.next_offset > from => {
                        let end = read.next_offset;
                        let sent = send(&shard, &replica, follower, |id| ToFollower::Push {
                            header: header(&shard, &replica, epoch, id),
                            start_offset: from,
                            records: read.records,
                        })
                        .await;
                        sent.map(|(id, answer)| {
                            with_progress(&replica, epoch, pusher, |progress| {
                                // A concurrent answer may have reset it.
                                if progress.push_from(log_end) == Some(from) {
                                    progress.sent_push(id, from, end, log_end, now_ms);
                                }
                            });
                            Some(answer)
                        })
                    }
                    Ok(_) => {
                        // Nothing readable yet (not appended whole): wait.
                        compio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    Err(error) => {
                        tracing::debug!(follower, %error, "reading for a push failed; syncing again");
                        with_progress(&replica, epoch, pusher, FollowerProgress::reset);
                        compio::time::sleep(heartbeat).await;
                        continue;
                    }
                }
            }
            Send::Heartbeat(at) => {
                let sent = send(&shard, &replica, follower, |id| ToFollower::Push {
                    header: header(&shard, &replica, epoch, id),
                    start_offset: at,
                    records: Vec::new(),
                })
                .await;
                sent.map(|(id, answer)| {
                    with_progress(&replica, epoch, pusher, |progress| {
                        if progress.next_offset == at {
                            progress.sent_push(id, at, at, log_end, now_ms);
                        }
                    });
                    Some(answer)
                })
            }
            Send::Wait => Ok(None),
        };
        match sent {
            Ok(Some(answer)) => {
                last_sent = std::time::Instant::now();
                answers.push(answer);
                // Send more before waiting, while the window allows.
                continue;
            }
            Ok(None) => {}
            Err(()) => {
                with_progress(&replica, epoch, pusher, FollowerProgress::reset);
                drop(replica);
                compio::time::sleep(heartbeat.min(Duration::from_millis(200))).await;
                continue;
            }
        }
        // Wait for an answer, an append, or the next heartbeat.
        let appended = replica.append_watch.changed();
        // The next heartbeat; when one is overdue but cannot go (answers
        // owed, a stall), look again soon without spinning.
        let remaining = heartbeat.saturating_sub(last_sent.elapsed());
        let pause = if remaining.is_zero() {
            heartbeat.min(Duration::from_millis(50))
        } else {
            remaining
        };
        let timer = Box::pin(compio::time::sleep(pause));
        let answer = if answers.is_empty() {
            let _ = select(appended, timer).await;
            None
        } else {
            match select(answers.next(), select(appended, timer)).await {
                Either::Left((answer, _)) => answer,
                Either::Right(_) => None,
            }
        };
        match answer {
            Some(Ok(reply)) => match take_answer(&shard, &replica, pusher, epoch, &reply) {
                AfterAnswer::Continue => {}
                AfterAnswer::Stop => return,
                AfterAnswer::Truncate {
                    epoch: cut_epoch,
                    end_offset,
                } => {
                    let sent = send(&shard, &replica, follower, |id| ToFollower::Truncate {
                        header: header(&shard, &replica, epoch, id),
                        epoch: cut_epoch,
                        end_offset,
                    })
                    .await;
                    match sent {
                        Ok((id, answer)) => {
                            let log_end = replica.log.log_end_offset();
                            with_progress(&replica, epoch, pusher, |progress| {
                                progress.sent_truncate(id, log_end, now_ms)
                            });
                            answers.push(answer);
                        }
                        Err(()) => {
                            with_progress(&replica, epoch, pusher, FollowerProgress::reset);
                        }
                    }
                }
            },
            // The connection broke: everything in flight is lost.
            Some(Err(_canceled)) => {
                answers.clear();
                with_progress(&replica, epoch, pusher, FollowerProgress::reset);
            }
            None => {}
        }
    }
}

/// Send one message; the answer's receiver once queued, `Err` when the
/// connection could not be had (the caller backs off).
async fn send(
    shard: &Rc<Shard>,
    replica: &PartitionReplica,
    follower: i32,
    message: impl FnOnce(u64) -> ToFollower,
) -> Result<(u64, Answer), ()> {
    let address = follower_address(shard, follower);
    let mut request_id = 0;
    let sent = shard
        .replication_links
        .send(follower, address, |id| {
            request_id = id;
            message(id)
        })
        .await;
    match sent {
        Ok(answer) => Ok((request_id, answer)),
        Err(error) => {
            tracing::debug!(partition = %replica.topic_partition, follower, %error, "cannot reach the follower");
            Err(())
        }
    }
}

type Answer = futures_channel::oneshot::Receiver<StateReply>;

/// What the pusher does after an answer.
enum AfterAnswer {
    Continue,
    Truncate {
        epoch: Option<LeaderEpoch>,
        end_offset: Offset,
    },
    /// This leader is deposed: stop.
    Stop,
}

/// Apply a follower's answer.
fn take_answer(
    shard: &Shard,
    replica: &PartitionReplica,
    pusher: Pusher,
    epoch: LeaderEpoch,
    reply: &StateReply,
) -> AfterAnswer {
    let follower = pusher.follower;
    let now_ms = shard.io.now_ms();
    let log = &replica.log;
    let sync = |follower_log: &FollowerLog| {
        sync_step(
            follower_log,
            log.log_start_offset(),
            log.log_end_offset(),
            |requested| log.end_offset_for_epoch_client(requested),
        )
    };
    let Some(effect) = with_progress(replica, epoch, pusher, |progress| {
        progress.on_reply(reply, now_ms, epoch, sync)
    }) else {
        return AfterAnswer::Stop;
    };
    match effect {
        Effect::None => AfterAnswer::Continue,
        Effect::Acknowledged => {
            let durable_end = log.durable_end_offset();
            let moved = with_leader(replica, epoch, |leader| {
                leader.update_high_watermark(durable_end)
            })
            .unwrap_or(false);
            if moved {
                replica.notify_high_watermark();
            }
            AfterAnswer::Continue
        }
        Effect::Truncate { epoch, end_offset } => AfterAnswer::Truncate { epoch, end_offset },
        Effect::Deposed => {
            tracing::info!(partition = %replica.topic_partition, follower, ?epoch, "a follower knows a newer leader epoch");
            AfterAnswer::Stop
        }
    }
}

/// Keep the committed ISR to what the followers' progress says, through
/// the controller (Kafka's AlterPartition): lagging members out, caught-up
/// replicas in. The leader relies on a change only once committed.
async fn isr_loop(shard: Rc<Shard>, replica: Weak<PartitionReplica>, epoch: LeaderEpoch) {
    let lag_max_ms = i64::try_from(shard.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
    let interval =
        Duration::from_millis((shard.config.replica_lag_time_max_ms / 4).clamp(20, 2000));
    if !after_rewrite(&replica).await {
        return;
    }
    loop {
        compio::time::sleep(interval).await;
        let Some(replica) = replica.upgrade() else {
            return;
        };
        let now_ms = shard.io.now_ms();
        let Some(wanted) = with_leader(&replica, epoch, |leader| {
            // A change whose answer was lost is sent again as it was (the
            // controller answers a repeat of the committed state with
            // it); a new view clears it (`apply_committed`).
            if let Some(pending) = &leader.pending_isr {
                return Some((pending.clone(), leader.partition_epoch));
            }
            let wanted = leader.wanted_isr(now_ms, lag_max_ms)?;
            leader.pending_isr = Some(wanted.clone());
            Some((wanted, leader.partition_epoch))
        }) else {
            return;
        };
        let Some((wanted, partition_epoch)) = wanted else {
            continue;
        };
        tracing::info!(partition = %replica.topic_partition, isr = ?wanted, "proposing an ISR change");
        let outcome = super::propose_isr(&shard, &replica, epoch, partition_epoch, wanted).await;
        let applied = with_leader(&replica, epoch, |leader| match &outcome {
            Ok(committed) => {
                // The answer carries no replica list: the replicas stay
                // (a view brings a reassignment's). Followers restarted
                // after a missed change get pushers below.
                let added = leader.apply_committed(
                    committed.partition_epoch,
                    &leader.replicas.clone(),
                    &committed.isr,
                    now_ms,
                );
                Some(added)
            }
            // Refused: nothing changed. Anything else (no answer in time,
            // no controller) may have committed: the change stays pending,
            // counted by the high watermark (an added member must be, once
            // the controller may elect it), until an answer or a view says.
            Err(error) => {
                if matches!(error, IsrChangeError::Refused(_)) {
                    leader.pending_isr = None;
                }
                None
            }
        });
        if let Some(Some(added)) = &applied
            && !added.is_empty()
        {
            start_pushers(&shard, &replica, epoch, added.clone());
        }
        match (&outcome, applied) {
            (Ok(committed), Some(Some(_))) => {
                tracing::info!(partition = %replica.topic_partition, isr = ?committed.isr, "ISR change committed");
                replica.notify_high_watermark();
            }
            (Err(error), _) => {
                tracing::info!(partition = %replica.topic_partition, %error, "ISR change not made");
            }
            _ => return,
        }
    }
}
