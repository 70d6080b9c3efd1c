//! The follower's side: the replication listener (on shard 0) reads the
//! leaders' messages, hands each to the shard that owns the replica (in
//! arrival order, so a partition's pushes append in order), and writes the
//! answers back on the same connection.
//!
//! On the owning shard ([`apply`]) a message is checked against the
//! replica's leader epoch, then: a probe reports the log; a truncation
//! cuts the divergent tail (never below the high watermark); a push is
//! appended byte-identical (`Log::append_replicated`) and answered once
//! fsynced, with the durable end the leader may count.
//!
//! A view may change the replica's epoch or make it the leader while a
//! message awaits I/O: the checks run again after each await, and a
//! truncation or start-over holds the replica's rewrite guard
//! (`PartitionReplica::begin_rewrite`) so that a leadership beginning
//! meanwhile starts from the log as the cut leaves it.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use compio::BufResult;
use compio::io::{AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use sluice_engine::{LeaderEpoch, Offset, ReplicatedAppendError};
use zerocopy::IntoBytes;

use super::messages::{FollowerLog, ReplyStatus, StateReply, ToFollower};
use super::progress::truncation_target;
use crate::peer::frame::{FrameHeader, HEADER_SIZE};
use crate::peer::kind;
use crate::shard::{PartitionReplica, Shard, ShardId, TopicPartition};

/// Answers queued to one connection's writer.
const ANSWER_QUEUE: usize = 1024;

/// Accept leaders' connections until the shard stops.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                compio::runtime::spawn(serve(Rc::clone(&shard), stream, peer)).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a replication connection failed");
                compio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(shard: Rc<Shard>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    if let Some(secret) = &shard.config.peer_secret
        && let Err(error) = crate::peer::aio::authenticate_server(&mut stream, secret).await
    {
        tracing::warn!(%peer, %error, "replication connection refused");
        let _ = stream.shutdown().await;
        return;
    }
    tracing::info!(%peer, "replication connection accepted");
    let (mut reader, writer) = stream.into_split();
    let (answers, queued) = flume::bounded::<Vec<u8>>(ANSWER_QUEUE);
    let writing = compio::runtime::spawn(write_answers(writer, queued));
    let reason = loop {
        let frame = match crate::peer::aio::read_frame(&mut reader).await {
            Ok(frame) => frame,
            Err(reason) => break reason,
        };
        if frame.kind == kind::AUTH_HELLO {
            break crate::peer::auth::unexpected_hello_reason().to_string();
        }
        let message = match ToFollower::decode(frame.kind, Bytes::from(frame.payload)) {
            Ok(message) => message,
            Err(error) => break format!("bad replication message: {error}"),
        };
        let leader_header = *message.header();
        let view = shard.metadata.snapshot();
        let target = view
            .topics
            .values()
            .find(|topic| topic.id == leader_header.topic_id)
            .and_then(|topic| {
                let index = usize::try_from(leader_header.partition).ok()?;
                let shard = topic.partitions.get(index)?.local_shard?;
                Some((
                    TopicPartition::new(&topic.name, leader_header.partition),
                    shard,
                ))
            });
        let Some((topic_partition, owner)) = target else {
            let reply = not_replica(&leader_header);
            if send_answer(&answers, &reply).await.is_err() {
                break "the writer stopped".to_string();
            }
            continue;
        };
        // Enqueued in arrival order; the owner runs each job's append at
        // its first poll, in order.
        let answer = shard.shards.post(ShardId(owner), move |owner| async move {
            match replica_for(&owner, &topic_partition, message.header().topic_id) {
                Some(replica) => apply(&replica, message).await,
                None => not_replica(message.header()),
            }
        });
        let receiver = match answer.await {
            Ok(receiver) => receiver,
            Err(gone) => break gone.to_string(),
        };
        let answers = answers.clone();
        compio::runtime::spawn(async move {
            if let Ok(reply) = receiver.await {
                let _ = send_answer(&answers, &reply).await;
            }
        })
        .detach();
    };
    tracing::info!(%peer, reason, "replication connection closed");
    drop(answers);
    let _ = writing.await;
}

async fn send_answer(
    answers: &flume::Sender<Vec<u8>>,
    reply: &StateReply,
) -> Result<(), flume::SendError<Vec<u8>>> {
    let payload = reply.encode();
    let header = FrameHeader::new(kind::REPLICA_STATE, 0, &payload).expect("answers are small");
    let mut frame = Vec::with_capacity(HEADER_SIZE + payload.len());
    frame.extend_from_slice(header.as_bytes());
    frame.extend_from_slice(&payload);
    answers.send_async(frame).await
}

async fn write_answers<W: AsyncWrite>(mut writer: W, queued: flume::Receiver<Vec<u8>>) {
    while let Ok(frame) = queued.recv_async().await {
        let BufResult(result, _) = writer.write_all(frame).await;
        if result.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

fn not_replica(header: &super::messages::LeaderHeader) -> StateReply {
    StateReply {
        request_id: header.request_id,
        topic_id: header.topic_id,
        partition: header.partition,
        status: ReplyStatus::NotReplica,
        // Without a replica there is no epoch to report.
        follower_epoch: LeaderEpoch(0),
        log: FollowerLog {
            log_start: Offset::ZERO,
            log_end: Offset::ZERO,
            durable_end: Offset::ZERO,
            last_epoch: None,
        },
    }
}

fn log_state(replica: &PartitionReplica) -> FollowerLog {
    let log = &replica.log;
    FollowerLog {
        log_start: log.log_start_offset(),
        log_end: log.log_end_offset(),
        durable_end: log.durable_end_offset(),
        last_epoch: log.last_leader_epoch(),
    }
}

/// The open replica a leader's message for `topic_id` is for: by name and
/// by id. The view that named it may be older than the shard's replicas,
/// and a topic deleted and created again under its name must never take
/// its predecessor's pushes or truncations.
pub fn replica_for(
    owner: &Shard,
    topic_partition: &TopicPartition,
    topic_id: uuid::Uuid,
) -> Option<Rc<PartitionReplica>> {
    owner
        .partition(topic_partition)
        .filter(|replica| replica.topic_id == topic_id)
}

/// Why a message of `header`'s leader may not act on `replica` as it is
/// now: a deposed leader, a leader this replica does not know yet, or this
/// replica leads. Checked at the first poll and again after each await.
fn refusal(
    replica: &PartitionReplica,
    header: &super::messages::LeaderHeader,
) -> Option<ReplyStatus> {
    let state = replica.state();
    if header.leader_epoch < state.leader_epoch {
        Some(ReplyStatus::FencedLeaderEpoch)
    } else if header.leader_epoch > state.leader_epoch {
        Some(ReplyStatus::UnknownLeaderEpoch)
    } else if state.is_leader() {
        Some(ReplyStatus::NotFollower)
    } else {
        None
    }
}

/// Take one leader message on the replica's shard. Everything up to the
/// append happens at the first poll (see the module docs).
pub async fn apply(replica: &Rc<PartitionReplica>, message: ToFollower) -> StateReply {
    let header = *message.header();
    // The replica's state when answering: a view may have changed it
    // during an await.
    let reply = |status: ReplyStatus| StateReply {
        request_id: header.request_id,
        topic_id: header.topic_id,
        partition: header.partition,
        status,
        follower_epoch: replica.state().leader_epoch,
        log: log_state(replica),
    };
    if let Some(status) = refusal(replica, &header) {
        return reply(status);
    }
    let log = &replica.log;
    match message {
        ToFollower::Probe { .. } => reply(ReplyStatus::Ok),
        ToFollower::Truncate { .. } if log.log_end_offset() < header.log_start => {
            // Everything this log holds is below the leader's log start:
            // start over there (progress::SyncStep::StartOver).
            tracing::info!(
                partition = %replica.topic_partition,
                log_end = %log.log_end_offset(),
                leader_log_start = %header.log_start,
                leader = header.leader_id,
                "starting over at the leader's log start"
            );
            // The rebuild uses the directory by path too (transaction
            // snapshots): both under one use of it (engine dir_gate.rs).
            let Ok(_dir) = log.enter_dir() else {
                return reply(ReplyStatus::NotReplica);
            };
            // Until the producer and transaction state follow the new log.
            let rewrite = replica.begin_rewrite();
            if let Err(error) = log.start_over_at(header.log_start).await {
                tracing::error!(partition = %replica.topic_partition, %error, "starting over failed");
                return reply(ReplyStatus::StorageError);
            }
            let (producers, txns) = match crate::shard::tail_replay::rebuild_at_open(log.io(), log)
                .await
            {
                Ok(rebuilt) => rebuilt,
                Err(error) => {
                    tracing::error!(partition = %replica.topic_partition, %error, "rebuilding the state after starting over failed");
                    return reply(ReplyStatus::StorageError);
                }
            };
            *replica.producers.borrow_mut() = producers;
            *replica.txns.borrow_mut() = txns;
            drop(rewrite);
            replica.notify_high_watermark();
            reply(refusal(replica, &header).unwrap_or(ReplyStatus::Ok))
        }
        ToFollower::Truncate {
            epoch, end_offset, ..
        } => {
            let high_watermark = replica.high_watermark();
            let target = truncation_target(
                epoch,
                end_offset,
                log.log_start_offset(),
                log.log_end_offset(),
                high_watermark,
                |requested| log.end_offset_for_epoch(requested),
            );
            let target = match target {
                Ok(target) => target,
                Err(below) if replica.lower_follower_high_watermark(below, header.leader_epoch) => {
                    tracing::error!(
                        partition = %replica.topic_partition,
                        ?epoch,
                        %end_offset,
                        to = %below,
                        %high_watermark,
                        leader = header.leader_id,
                        leader_epoch = ?header.leader_epoch,
                        "truncating below the high watermark an earlier leader gave: this leader \
                         does not hold those records (an unclean election); they are lost"
                    );
                    below
                }
                Err(below) => {
                    tracing::error!(
                        partition = %replica.topic_partition,
                        ?epoch,
                        %end_offset,
                        %below,
                        %high_watermark,
                        "refusing a truncation below the high watermark"
                    );
                    return reply(ReplyStatus::TruncationRefused);
                }
            };
            if target < log.log_end_offset() {
                tracing::info!(
                    partition = %replica.topic_partition,
                    from = %log.log_end_offset(),
                    to = %target,
                    leader = header.leader_id,
                    "truncating a divergent tail"
                );
                let rewrite = replica.begin_rewrite();
                match log.truncate_to(target).await {
                    Ok(_) => {}
                    // Removed from this broker meanwhile.
                    Err(sluice_engine::LogError::Closed { .. }) => {
                        return reply(ReplyStatus::NotReplica);
                    }
                    Err(error) => {
                        tracing::error!(partition = %replica.topic_partition, %error, "truncation failed");
                        return reply(ReplyStatus::StorageError);
                    }
                }
                replica
                    .producers
                    .borrow_mut()
                    .reconcile(log.log_end_offset());
                drop(rewrite);
                replica.notify_high_watermark();
            }
            // A leader deposed meanwhile must not take this as synced.
            reply(refusal(replica, &header).unwrap_or(ReplyStatus::Ok))
        }
        ToFollower::Push {
            start_offset,
            records,
            ..
        } => {
            if start_offset != log.log_end_offset() {
                return reply(ReplyStatus::OutOfOrder);
            }
            let Some(records) = records.into_iter().next() else {
                // A heartbeat. It carries the leader's log start too: an
                // idle partition's DeleteRecords reaches the followers
                // without a record pushed after it (else a failover served
                // the deleted records again).
                replica.set_follower_high_watermark(header.high_watermark, header.leader_epoch);
                follow_log_start(replica, header.log_start).await;
                return reply(ReplyStatus::Ok);
            };
            // A log started over at the leader's log start, which lies inside
            // a batch: the log holds no record yet, so it starts over at
            // that batch's base instead (as Kafka's follower does) and takes
            // the batch whole; the leader's log start follows below.
            if let Ok(first) = sluice_engine::batch::BatchHeader::parse(&records)
                && first.base_offset() < start_offset
                && first.last_offset() >= start_offset
                && log.log_start_offset() == log.log_end_offset()
            {
                let rewrite = replica.begin_rewrite();
                let started_over = log.start_over_at(first.base_offset()).await;
                drop(rewrite);
                if let Err(error) = started_over {
                    tracing::error!(partition = %replica.topic_partition, %error, "starting over at a batch base failed");
                    return reply(ReplyStatus::StorageError);
                }
                // Became the leader meanwhile, or another leader's: not
                // this leader's to append to any more.
                if let Some(status) = refusal(replica, &header) {
                    return reply(status);
                }
            }
            // Read by the leader from `start_offset`, this log's end (or,
            // started over inside a batch above, from that batch's base):
            // offsets skipped after it are ones the leader's cleaner
            // removed. A log changed meanwhile is refused (NonContiguous).
            let from = sluice_engine::batch::BatchHeader::parse(&records)
                .ok()
                .map_or(start_offset, |first| first.base_offset().min(start_offset));
            let appended = match log.append_replicated(from, &records) {
                Ok(appended) => appended,
                // A truncation of an earlier leader's still in progress:
                // the leader syncs again once it is done.
                Err(ReplicatedAppendError::Append(
                    error @ sluice_engine::AppendError::Truncating { .. },
                )) => {
                    tracing::debug!(partition = %replica.topic_partition, %error, "replicated append during a truncation");
                    return reply(ReplyStatus::OutOfOrder);
                }
                Err(ReplicatedAppendError::Append(error)) => {
                    tracing::warn!(partition = %replica.topic_partition, %error, "replicated append failed");
                    return reply(ReplyStatus::StorageError);
                }
                Err(error) => {
                    tracing::warn!(partition = %replica.topic_partition, %error, "replicated append refused");
                    return reply(ReplyStatus::OutOfOrder);
                }
            };
            crate::shard::txn_state::observe_replicated(replica, &records);
            replica.set_follower_high_watermark(header.high_watermark, header.leader_epoch);
            if let Err(error) = appended.completion.await {
                tracing::warn!(partition = %replica.topic_partition, %error, "replicated append not durable");
                return reply(ReplyStatus::StorageError);
            }
            // The leader's log start is not a later leader's to follow.
            if let Some(status) = refusal(replica, &header) {
                return reply(status);
            }
            follow_log_start(replica, header.log_start).await;
            reply(ReplyStatus::Ok)
        }
    }
}

/// Move the log start up to the leader's (`leader_start`: retention,
/// DeleteRecords), as far as this log holds durable records: the replicas
/// agree on where the partition starts.
async fn follow_log_start(replica: &PartitionReplica, leader_start: Offset) {
    let log = &replica.log;
    let leader_start = leader_start.min(log.durable_end_offset());
    if leader_start > log.log_start_offset()
        && let Err(error) = log.delete_records_before(leader_start).await
    {
        tracing::warn!(partition = %replica.topic_partition, %error, "following the leader's log start failed");
    }
}
