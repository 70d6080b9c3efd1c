//! Partition opens, topic changes and the closing of one shard, on a real
//! io_uring runtime with a temporary data directory. The concurrent cases
//! are deterministic: the callers are joined on the one shard thread, so
//! they interleave at every await as overlapping requests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use sluice_engine::io::uring::UringIo;

use super::*;

use crate::cli::ServeArgs;
use crate::shard::topics::{TopicError, add_partitions, create_topic, delete_topic};

/// Run `test` on a one-shard broker (no listener) whose data directory is
/// removed afterwards.
fn with_shard<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Rc<Shard>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sluice-shard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".to_string()),
        data_dir: Some(dir.clone()),
        cores: Some(1),
        ..ServeArgs::default()
    };
    let config = Arc::new(BrokerConfig::resolve(args).unwrap());
    let (shards, mut inboxes) = Shards::new(1);
    let (metadata, follower) =
        crate::shard::follower::in_memory_single_node(&dir, &shards).unwrap();
    let controller = metadata.controller().clone();
    let inbox = inboxes.remove(0);
    let runtime = compio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let io = UringIo::new();
        let shard = Rc::new(Shard {
            id: ShardId(0),
            io,
            committer: Committer::new(io),
            config,
            shards,
            metadata,
            partitions: Default::default(),
            groups: Default::default(),
            replication_links: Default::default(),
        });
        let committer = shard.committer.clone();
        compio::runtime::spawn(async move { committer.run().await }).detach();
        serve_inbox(&shard, inbox);
        test(Rc::clone(&shard)).await;
        shard.close_all().await;
    });
    follower.stop();
    controller.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Names in `dir` ending in `.tmp` (temporary files left behind).
fn temporary_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        if entry.ends_with(".tmp") {
            found.push(entry);
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            names.extend(walk(&path));
        } else {
            names.push(path.display().to_string());
        }
    }
    names
}

#[test]
fn concurrent_opens_of_one_partition_share_a_single_open() {
    with_shard("single-open", |shard| async move {
        let topic = shard
            .metadata
            .create_topic("t", 1, -1, None, BTreeMap::new(), false)
            .await
            .unwrap();
        let topic = Rc::new(topic);
        let opens = (0..4).map(|_| shard.open_partition(&topic, 0));
        let replicas: Vec<Rc<PartitionReplica>> = join_all(opens)
            .await
            .into_iter()
            .map(|result| result.unwrap())
            .collect();
        for replica in &replicas[1..] {
            assert!(
                Rc::ptr_eq(replica, &replicas[0]),
                "the partition was opened more than once"
            );
        }
        assert!(Rc::ptr_eq(
            &shard.partition(&TopicPartition::new("t", 0)).unwrap(),
            &replicas[0]
        ));
        assert!(shard.partitions.opening.borrow().is_empty());
    });
}

/// Issue 14: six topics created at once on one shard. Each creation used
/// to reopen every unopened partition of the shard, so overlapping ones
/// opened the same partitions twice and raced on `checkpoint.tmp`.
#[test]
fn topics_created_at_once_all_open_every_partition_once() {
    with_shard("create-at-once", |shard| async move {
        let names: Vec<String> = (0..6).map(|index| format!("topic-{index}")).collect();
        let creates = names
            .iter()
            .map(|name| create_topic(&shard, name, 3, BTreeMap::new(), false));
        for (name, result) in names.iter().zip(join_all(creates).await) {
            assert!(result.is_ok(), "creating {name} failed: {result:?}");
        }
        for name in &names {
            for index in 0..3 {
                let replica = shard.partition(&TopicPartition::new(name, index));
                assert!(replica.is_some(), "{name}-{index} is not open");
            }
        }
        assert_eq!(shard.partitions.values().len(), 18);
        assert_eq!(
            temporary_files(&shard.config.data_dir),
            Vec::<String>::new()
        );
    });
}

#[test]
fn the_same_topic_created_at_once_succeeds_once_and_exists_for_the_others() {
    with_shard("create-same", |shard| async move {
        let creates = (0..4).map(|_| create_topic(&shard, "same", 2, BTreeMap::new(), false));
        let results = join_all(creates).await;
        let created = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(created, 1, "{results:?}");
        for result in &results {
            match result {
                Ok(_)
                | Err(TopicError::Metadata(crate::metadata::MetadataError::TopicExists(_))) => {}
                Err(error) => panic!("unexpected error: {error}"),
            }
        }
        assert_eq!(shard.partitions.values().len(), 2);
    });
}

/// Partitions added to one topic by overlapping requests, while another
/// topic is created: the changes of one topic run one after the other, and
/// every partition in the metadata ends open.
#[test]
fn partitions_added_at_once_all_open() {
    with_shard("add-at-once", |shard| async move {
        create_topic(&shard, "grows", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let (to_three, to_five, other) = futures_util::join!(
            add_partitions(&shard, "grows", 3, None, false),
            add_partitions(&shard, "grows", 5, None, false),
            create_topic(&shard, "other", 2, BTreeMap::new(), false),
        );
        // The controller orders the two: growing to 3 after 5 is refused,
        // as Kafka refuses shrinking (INVALID_PARTITIONS).
        match to_three {
            Ok(_) => {}
            Err(TopicError::Metadata(crate::metadata::MetadataError::InvalidPartitions {
                ..
            })) => {}
            Err(other) => panic!("growing to 3: {other}"),
        }
        to_five.unwrap();
        other.unwrap();
        let snapshot = shard.metadata.snapshot();
        assert_eq!(snapshot.topics["grows"].partitions.len(), 5);
        for index in 0..5 {
            assert!(
                shard
                    .partition(&TopicPartition::new("grows", index))
                    .is_some(),
                "grows-{index} is not open"
            );
        }
        assert_eq!(shard.partitions.values().len(), 7);
    });
}

/// A partition that cannot open (its directory holds a directory named
/// `checkpoint`) does not stop the change: the topic is committed, the
/// follower logs the failure and retries, and the partition opens once the
/// obstacle is gone.
#[test]
fn a_partition_that_fails_to_open_is_retried_until_it_opens() {
    with_shard("open-retry", |shard| async move {
        let obstacle = shard.config.data_dir.join("broken-1").join("checkpoint");
        std::fs::create_dir_all(&obstacle).unwrap();
        create_topic(&shard, "broken", 2, BTreeMap::new(), false)
            .await
            .unwrap();
        assert!(shard.partition(&TopicPartition::new("broken", 0)).is_some());
        assert!(shard.partition(&TopicPartition::new("broken", 1)).is_none());
        std::fs::remove_dir_all(&obstacle).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shard.partition(&TopicPartition::new("broken", 1)).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "broken-1 never opened"
            );
            compio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        delete_topic(&shard, "broken").await.unwrap();
        assert!(shard.partitions.values().is_empty());
        assert!(!shard.config.data_dir.join("broken-0").exists());
    });
}

/// A clean stop first waits for background work (a group timer round, a
/// cleaner pass) and the writes it makes to finish, and starts no new
/// background work, before closing logs; then no write starts.
#[test]
fn closing_waits_for_background_work_and_refuses_new_work() {
    with_shard("close-waits", |shard| async move {
        create_topic(&shard, "t", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let work = shard.background_work().unwrap();
        let closing = Rc::clone(&shard);
        let (closed_sender, mut closed) = oneshot::channel();
        compio::runtime::spawn(async move {
            closing.close_all().await;
            let _ = closed_sender.send(());
        })
        .detach();
        compio::time::sleep(Duration::from_millis(50)).await;
        assert!(shard.partitions.is_closing());
        assert!(shard.background_work().is_none());
        // The running work's writes still start (and are waited for).
        let write = shard.log_write();
        assert!(write.is_some());
        drop(write);
        assert_eq!(closed.try_recv(), Ok(None), "closed before the work ended");
        let replica = shard.partition(&TopicPartition::new("t", 0)).unwrap();
        // The work can still write: the log is open until it ends.
        let append = replica
            .append(&sluice_engine::batch::build::simple_batch(
                1,
                10,
                sluice_engine::TimestampMs(0),
            ))
            .unwrap();
        append.completion.await.unwrap();
        drop(work);
        closed.await.unwrap();
        assert!(shard.log_write().is_none());
        assert!(
            replica
                .log
                .append(
                    &sluice_engine::batch::build::simple_batch(
                        1,
                        10,
                        sluice_engine::TimestampMs(0)
                    ),
                    sluice_engine::LeaderEpoch(0),
                )
                .is_err()
        );
    });
}

/// The partition leader epoch stamped into each batch of `records` (bytes
/// 12..16 of a v2 batch header, big-endian).
fn stamped_epochs(records: &[bytes::Bytes]) -> Vec<i32> {
    let mut epochs = Vec::new();
    for buffer in records {
        for range in sluice_engine::batch::split_batches(buffer).unwrap() {
            let batch = &buffer[range];
            epochs.push(i32::from_be_bytes(batch[12..16].try_into().unwrap()));
        }
    }
    epochs
}

fn partition_state(leader: Option<i32>, leader_epoch: i32) -> crate::metadata::PartitionMetadata {
    crate::metadata::PartitionMetadata {
        replicas: vec![1, 2],
        isr: vec![1, 2],
        leader,
        leader_epoch,
        partition_epoch: 0,
        local_shard: Some(0),
    }
}

#[test]
fn a_replica_leads_only_when_the_view_names_this_broker_leader() {
    let leading = ReplicaState::from_view(&partition_state(Some(1), 4), 1);
    assert_eq!(leading.role, ReplicaRole::Leader);
    assert_eq!(leading.leader_epoch, sluice_engine::LeaderEpoch(4));
    let following = ReplicaState::from_view(&partition_state(Some(2), 5), 1);
    assert_eq!(following.role, ReplicaRole::Follower);
    assert_eq!(following.leader_epoch, sluice_engine::LeaderEpoch(5));
    let offline = ReplicaState::from_view(&partition_state(None, 6), 1);
    assert_eq!(offline.role, ReplicaRole::Follower);
}

#[test]
fn a_replica_that_stops_leading_refuses_appends_and_stamps_the_epoch_it_leads_under() {
    with_shard("replica-state", |shard| async move {
        create_topic(&shard, "t", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let topic_partition = TopicPartition::new("t", 0);
        let replica = shard.partition(&topic_partition).unwrap();
        let batch =
            || sluice_engine::batch::build::simple_batch(1, 10, sluice_engine::TimestampMs(0));
        // Replication factor 1: opened as the leader, at the view's epoch.
        let opened = replica.state();
        assert_eq!(opened.role, ReplicaRole::Leader);
        let first = replica.append(&batch()).unwrap();
        first.completion.await.unwrap();

        // Leader -> follower: appends are refused, nothing is written.
        let end = replica.log.log_end_offset();
        let follower = ReplicaState {
            role: ReplicaRole::Follower,
            leader_epoch: sluice_engine::LeaderEpoch(opened.leader_epoch.0 + 1),
        };
        assert!(shard.set_replica_state(&topic_partition, follower));
        assert_eq!(replica.state(), follower);
        match replica.append(&batch()) {
            Err(ReplicaAppendError::NotLeader { leader_epoch, .. }) => {
                assert_eq!(leader_epoch, opened.leader_epoch.0 + 1)
            }
            Err(error) => panic!("refused for another reason: {error}"),
            Ok(_) => panic!("a follower accepted an append"),
        }
        assert_eq!(replica.log.log_end_offset(), end);

        // Follower -> leader under a later epoch: appends carry it.
        let leader = ReplicaState {
            role: ReplicaRole::Leader,
            leader_epoch: sluice_engine::LeaderEpoch(opened.leader_epoch.0 + 2),
        };
        assert!(shard.set_replica_state(&topic_partition, leader));
        let second = replica.append(&batch()).unwrap();
        second.completion.await.unwrap();
        assert_eq!(replica.high_watermark(), second.last_offset.plus(1));
        // A read stops at a segment's end: read on from where it stopped.
        let mut records = Vec::new();
        let mut offset = replica.log.log_start_offset();
        while offset < replica.high_watermark() {
            let read = replica
                .log
                .read(
                    offset,
                    sluice_engine::ReadLimits {
                        max_bytes: 1 << 20,
                        min_one_batch: true,
                        max_offset: replica.high_watermark(),
                    },
                )
                .await
                .unwrap();
            assert!(read.next_offset > offset);
            offset = read.next_offset;
            records.extend(read.records);
        }
        assert_eq!(
            stamped_epochs(&records),
            vec![opened.leader_epoch.0, opened.leader_epoch.0 + 2]
        );

        // A replica not open here is reported, not invented.
        assert!(!shard.set_replica_state(&TopicPartition::new("t", 7), leader));
    });
}

/// A follower forgets the transactions it replicated once the high
/// watermark covers their markers, as a leader does when fetched. It
/// never did: only the last stable offset's lookups forgot them, and a
/// follower serves none, so each transaction stayed in its memory and in
/// every snapshot it wrote (found by a read-only review).
#[test]
fn a_follower_forgets_the_transactions_the_high_watermark_covers() {
    with_shard("follower-txns", |shard| async move {
        create_topic(&shard, "t", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let topic_partition = TopicPartition::new("t", 0);
        let replica = shard.partition(&topic_partition).unwrap();
        let epoch = sluice_engine::LeaderEpoch(replica.state().leader_epoch.0 + 1);
        assert!(shard.set_replica_state(
            &topic_partition,
            ReplicaState {
                role: ReplicaRole::Follower,
                leader_epoch: epoch,
            },
        ));
        let producer_id = 9000;
        let mut next = sluice_engine::Offset(0);
        let mut replicate = |batch: bytes::Bytes| {
            let mut batch = bytes::BytesMut::from(&batch[..]);
            sluice_engine::batch::patch_base_offset(&mut batch, next);
            let batch = batch.freeze();
            let appended = replica.log.append_replicated(next, &batch).unwrap();
            crate::shard::txn_state::observe_replicated(&replica, &batch);
            next = appended.last_offset.plus(1);
            appended.completion
        };
        let mut completions = Vec::new();
        for sequence in 0..100 {
            let data = sluice_engine::batch::BatchBuilder::new()
                .producer(producer_id, 0, sequence)
                .transactional(true)
                .record(None, Some(&b"v"[..]), sluice_engine::TimestampMs(0))
                .build();
            completions.push(replicate(data));
            let marker = crate::shard::txn_state::control_batch(producer_id, 0, 0, true, 0);
            completions.push(replicate(marker));
        }
        for completion in completions {
            completion.await.unwrap();
        }
        assert_eq!(replica.txns.borrow().ended_unstable(), 100);
        // The leader's high watermark reaches the end: every marker is
        // covered. The cleaner's step forgets them and snapshots the rest.
        replica.set_follower_high_watermark(next, epoch);
        replica.persist_txn_state().await;
        assert_eq!(replica.txns.borrow().ended_unstable(), 0);
    });
}

/// Issue 11: deleting a topic must free its replicas, their logs and
/// write buffers. Nothing may keep a removed replica alive (an `Rc`
/// cycle, a task that never ends, a cache): once the deletion returns,
/// the replicas and their high watermark watches (which a flush poller
/// holds with a handle on the log) are dropped within a moment.
#[test]
fn a_deleted_topic_leaves_no_replica_alive() {
    with_shard("delete-drops", |shard| async move {
        create_topic(&shard, "gone", 3, BTreeMap::new(), false)
            .await
            .unwrap();
        let mut replicas = Vec::new();
        let mut watches = Vec::new();
        for index in 0..3 {
            let replica = shard
                .partition(&TopicPartition::new("gone", index))
                .unwrap();
            let append = replica
                .append(&sluice_engine::batch::build::simple_batch(
                    5,
                    100,
                    sluice_engine::TimestampMs(0),
                ))
                .unwrap();
            append.completion.await.unwrap();
            replicas.push(Rc::downgrade(&replica));
            watches.push(Rc::downgrade(&replica.high_watermark_watch));
        }
        delete_topic(&shard, "gone").await.unwrap();
        assert!(shard.topic("gone").is_none());
        assert!(shard.partitions.is_empty());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let alive = replicas
                .iter()
                .filter(|weak| weak.upgrade().is_some())
                .count()
                + watches
                    .iter()
                    .filter(|weak| weak.upgrade().is_some())
                    .count();
            if alive == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{alive} replicas or watches of the deleted topic are still alive"
            );
            compio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// A view making a follower the leader while it truncates its log (the
/// truncation awaits I/O, and the shard applies the view meanwhile): the
/// leadership's epoch starts at the log end after the cut, its high
/// watermark never counts the end being cut, no append is taken until the
/// cut is done, and the old leader is not told the truncation succeeded.
/// The epoch started at the end before the cut: "latest" lookups answered
/// OFFSET_NOT_AVAILABLE and followers stayed out of the ISR until the log
/// grew back there, and the high watermark could pass the log end (found
/// by a read-only audit).
#[test]
fn a_leadership_beginning_during_a_truncation_starts_its_epoch_after_the_cut() {
    use crate::replication::messages::{LeaderHeader, ReplyStatus, ToFollower};
    use sluice_engine::Offset;
    with_shard("leading-during-truncation", |shard| async move {
        create_topic(&shard, "cut", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let topic_partition = TopicPartition::new("cut", 0);
        let replica = shard.partition(&topic_partition).unwrap();
        let batch =
            || sluice_engine::batch::build::simple_batch(5, 100, sluice_engine::TimestampMs(0));
        let first = replica.state().leader_epoch;
        for _ in 0..4 {
            replica.append(&batch()).unwrap().completion.await.unwrap();
        }
        assert_eq!(replica.log.log_end_offset(), Offset(20));
        assert_eq!(replica.high_watermark(), Offset(20));
        let epoch = |delta: i32| sluice_engine::LeaderEpoch(first.0 + delta);
        let follower = ReplicaState {
            role: ReplicaRole::Follower,
            leader_epoch: epoch(1),
        };
        assert!(shard.set_replica_state(&topic_partition, follower));
        // The leader of epoch + 1 holds the first epoch up to 10 only (an
        // unclean election: the follower cuts below its high watermark).
        let truncate = ToFollower::Truncate {
            header: LeaderHeader {
                request_id: 1,
                topic_id: replica.topic_id,
                partition: 0,
                leader_id: shard.config.node_id + 1,
                leader_epoch: epoch(1),
                high_watermark: Offset(10),
                log_start: Offset::ZERO,
            },
            epoch: Some(first),
            end_offset: Offset(10),
        };
        let mut truncation = Box::pin(crate::replication::follower::apply(&replica, truncate));
        assert!(
            futures_util::poll!(&mut truncation).is_pending(),
            "the truncation awaits I/O"
        );
        assert!(replica.is_rewriting());
        let leader = ReplicaState {
            role: ReplicaRole::Leader,
            leader_epoch: epoch(2),
        };
        assert!(shard.set_replica_state(&topic_partition, leader));
        assert!(
            matches!(
                replica.append(&batch()),
                Err(ReplicaAppendError::NotLeader { .. })
            ),
            "an append during the truncation is refused as retriable"
        );
        assert!(
            replica.high_watermark() <= Offset(10),
            "the high watermark counted the end being cut"
        );
        let reply = truncation.await;
        // Its leader was deposed meanwhile: told so, not that it synced.
        assert_eq!(reply.status, ReplyStatus::FencedLeaderEpoch, "{reply:?}");
        assert_eq!(reply.follower_epoch, epoch(2));
        assert_eq!(replica.log.log_end_offset(), Offset(10));
        assert_eq!(replica.leader_epoch_start(), Some(Offset(10)));
        assert_eq!(replica.high_watermark(), Offset(10));
        // Leading from the cut: appends land there, "latest" is answered.
        let appended = replica.append(&batch()).unwrap();
        assert_eq!(appended.base_offset, Offset(10));
        appended.completion.await.unwrap();
        assert_eq!(replica.high_watermark(), Offset(15));
    });
}

/// A replica removed while it leads followers stops leading: its pushers
/// and ISR task end although something still holds the replica. (Two
/// pushers kept each other's hold on it, and probed the followers of a
/// deleted topic forever.)
#[test]
fn the_replication_tasks_of_a_removed_leader_end() {
    with_shard("removed-leader-tasks", |shard| async move {
        create_topic(&shard, "led", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let replica = shard.partition(&TopicPartition::new("led", 0)).unwrap();
        let before = Rc::weak_count(&replica);
        let node = shard.config.node_id;
        let epoch = sluice_engine::LeaderEpoch(replica.state().leader_epoch.0 + 1);
        let assignment = replica.assignment();
        // Two followers no broker of the view has: the pushers keep trying.
        let change = replica.apply_view(
            node,
            ReplicaState {
                role: ReplicaRole::Leader,
                leader_epoch: epoch,
            },
            crate::shard::partition::Assignment {
                replicas: vec![node, node + 101, node + 102],
                isr: vec![node, node + 101, node + 102],
                partition_epoch: assignment.partition_epoch,
            },
            shard.io.now_ms(),
        );
        assert!(matches!(
            change,
            crate::shard::partition::ViewChange::StartedLeading
        ));
        crate::replication::leader::start(&shard, &replica);
        assert_eq!(
            Rc::weak_count(&replica),
            before + 3,
            "two pushers, one ISR task"
        );
        shard.remove_partitions("led", [0]).await.unwrap();
        assert!(!replica.state().is_leader());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Rc::weak_count(&replica) > before {
            assert!(
                std::time::Instant::now() < deadline,
                "{} replication tasks of the removed replica still run",
                Rc::weak_count(&replica) - before
            );
            compio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// A `__transaction_state` replica removed while it leads (a reassignment
/// that moves it away changes its leader and removes it in one record)
/// stops coordinating: its transactional ids leave the table (no longer
/// listed, aborted on timeout or completed through the closed replica).
#[test]
fn a_transaction_state_leader_removed_unloads_its_transactional_ids() {
    use crate::txn::coordinator;
    with_shard("txn-leader-removed", |shard| async move {
        let id = "moved-away".to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let transactional_id = id.clone();
            let outcome = coordinator::on_coordinator(&shard, &id, |owner, partition| async move {
                coordinator::init_producer_id(&owner, partition, transactional_id, 60_000, None)
                    .await
            })
            .await;
            match outcome {
                Ok(Ok(_)) => break,
                Err(ResponseError::CoordinatorLoadInProgress) => {
                    assert!(std::time::Instant::now() < deadline, "never loaded");
                    compio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("InitProducerId failed: {other:?}"),
            }
        }
        assert!(coordinator::entry(&id).is_some());
        let (partition, _) = coordinator::coordinator_partition(&shard, &id)
            .await
            .unwrap();
        shard
            .remove_partitions(crate::txn::TRANSACTION_STATE_TOPIC, [partition])
            .await
            .unwrap();
        let listed: Vec<String> = coordinator::entries()
            .into_iter()
            .map(|entry| entry.metadata.transactional_id)
            .collect();
        assert!(listed.is_empty(), "still coordinated: {listed:?}");
        let served = coordinator::on_coordinator(&shard, &id, |_, _| async {}).await;
        assert_eq!(served, Err(ResponseError::CoordinatorLoadInProgress));
    });
}

/// A leader's message names its partition by topic id: a replica of
/// another topic under the same name (deleted and created again) is not
/// its replica.
#[test]
fn a_leader_message_for_another_topic_id_finds_no_replica() {
    with_shard("replica-by-id", |shard| async move {
        create_topic(&shard, "renamed", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let topic_partition = TopicPartition::new("renamed", 0);
        let replica = shard.partition(&topic_partition).unwrap();
        let found =
            crate::replication::follower::replica_for(&shard, &topic_partition, replica.topic_id);
        assert!(found.is_some_and(|found| Rc::ptr_eq(&found, &replica)));
        let other = uuid::Uuid::from_u128(replica.topic_id.as_u128() ^ 1);
        assert!(
            crate::replication::follower::replica_for(&shard, &topic_partition, other).is_none()
        );
    });
}

/// A replica of a deleted topic that no removal reached (a partly failed
/// open kept it out of the follower's books) is never served as the
/// replica of a topic created again under the name: the open removes it
/// and opens the new topic's own.
#[test]
fn an_open_never_returns_a_replica_of_another_topic_id() {
    with_shard("stale-replica", |shard| async move {
        create_topic(&shard, "again", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let topic_partition = TopicPartition::new("again", 0);
        let old = shard.partition(&topic_partition).unwrap();
        old.append(&sluice_engine::batch::build::simple_batch(
            3,
            10,
            sluice_engine::TimestampMs(0),
        ))
        .unwrap()
        .completion
        .await
        .unwrap();
        let mut created_again = shard.metadata.snapshot().topics["again"].clone();
        created_again.id = uuid::Uuid::from_u128(created_again.id.as_u128() ^ 1);
        let new = shard
            .open_partition(&Rc::new(created_again.clone()), 0)
            .await
            .unwrap();
        assert_eq!(new.topic_id, created_again.id);
        assert!(old.log.is_closed(), "the stale replica was closed");
        assert_eq!(new.log.log_end_offset(), sluice_engine::Offset::ZERO);
        let found = shard.partition(&topic_partition).unwrap();
        assert!(Rc::ptr_eq(&found, &new));
    });
}

/// A group load that was still reading when its offsets partition was
/// unloaded (leadership lost, maybe regained: the new leadership's load
/// runs beside it) installs nothing: finishing last, it replaced the
/// newer load's groups with older ones.
#[test]
fn a_group_load_that_outlived_its_leadership_installs_nothing() {
    with_shard("stale-group-load", |shard| async move {
        let read = |name: &str| {
            std::collections::HashMap::from([(
                name.to_string(),
                crate::group::state::Group::new(name, 0, 0),
            )])
        };
        let older = crate::group::begin_load(&shard, 0);
        crate::group::unload_partition(&shard, 0);
        let newer = crate::group::begin_load(&shard, 0);
        assert!(crate::group::install_load(
            &shard,
            None,
            &newer,
            read("newer")
        ));
        assert!(!crate::group::install_load(
            &shard,
            None,
            &older,
            read("older")
        ));
        let groups = shard.groups.groups.borrow();
        assert!(groups.contains_key("newer") && !groups.contains_key("older"));
    });
}

/// A transaction marker for an offsets partition whose groups are still
/// loading is refused (nothing appended; the coordinator retries): the
/// load reads the log only up to where it started and the marker's hook
/// finds no group, so the transaction's offsets stayed pending for good.
/// Once the load installed the groups, the marker is written; after a
/// load that failed (no groups, its ticket gone), too.
#[test]
fn a_marker_to_an_offsets_partition_waits_for_its_groups_to_load() {
    with_shard("marker-during-load", |shard| async move {
        crate::group::offsets_topic(&shard).await.unwrap();
        let topic_partition = TopicPartition::new(crate::group::OFFSETS_TOPIC, 0);
        let replica = shard.partition(&topic_partition).unwrap();
        assert!(!crate::group::is_loading(&shard, 0));
        // As when this broker starts leading it again: a load running.
        crate::group::unload_partition(&shard, 0);
        let ticket = crate::group::begin_load(&shard, 0);
        assert!(crate::group::is_loading(&shard, 0));
        let end = replica.log.log_end_offset();
        let marker =
            || crate::shard::txn_state::write_txn_marker(&shard, &topic_partition, 7, 0, 0, true);
        assert_eq!(
            marker().await,
            Err(kafka_protocol::error::ResponseError::CoordinatorLoadInProgress)
        );
        assert_eq!(replica.log.log_end_offset(), end, "nothing appended");
        assert!(crate::group::install_load(
            &shard,
            Some(&replica),
            &ticket,
            std::collections::HashMap::new()
        ));
        drop(ticket);
        assert_eq!(marker().await, Ok(end));
        // A load that fails (its ticket dropped without installing) does
        // not hold the markers back for good.
        crate::group::unload_partition(&shard, 0);
        drop(crate::group::begin_load(&shard, 0));
        assert_eq!(marker().await, Ok(end.plus(1)));
    });
}

/// KIP-890's verification guard: a transactional batch verified with its
/// coordinator, then delayed past its transaction's abort (the marker
/// changed nothing here: no transaction was open yet), may not open a new
/// transaction with the old answer: refused with the code it was given
/// (TRANSACTION_ABORTABLE), nothing appended. Without the guard it opened a
/// transaction no marker would end (the partition's LSO stuck). A batch
/// verified afterwards opens the transaction, and spends its guard.
#[test]
fn a_batch_verified_before_its_transaction_ended_cannot_open_another() {
    use crate::shard::producer_state::ProducerId;
    use crate::txn::membership::Verified;
    use kafka_protocol::error::ResponseError;

    with_shard("verification-guard", |shard| async move {
        create_topic(&shard, "verified", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let topic_partition = TopicPartition::new("verified", 0);
        let replica = shard.partition(&topic_partition).unwrap();
        let producer = ProducerId(7);
        let mut builder = sluice_engine::batch::BatchBuilder::new();
        builder.producer(7, 0, 0).transactional(true);
        builder.record(None, Some(&b"late"[..]), sluice_engine::TimestampMs(0));
        let batch = builder.build();
        let now = shard.io.now_ms();
        let verified = |guard| Verified::On {
            guard: Some(guard),
            refusal: ResponseError::TransactionAbortable,
        };

        let guard = replica
            .producers
            .borrow_mut()
            .begin_verification(producer, 0, 0, now);
        // The coordinator aborts the transaction meanwhile.
        let marker =
            crate::shard::txn_state::write_txn_marker(&shard, &topic_partition, 7, 0, 0, false)
                .await
                .unwrap();
        let end = replica.log.log_end_offset();
        assert_eq!(end, marker.plus(1));
        assert_eq!(
            crate::handlers::produce::accept_error(&replica, batch.clone(), verified(guard), now),
            Some(ResponseError::TransactionAbortable)
        );
        assert_eq!(replica.log.log_end_offset(), end, "nothing appended");
        assert_eq!(replica.txns.borrow().open_transaction(producer), None);

        let guard = replica
            .producers
            .borrow_mut()
            .begin_verification(producer, 0, 0, now);
        assert_eq!(
            crate::handlers::produce::accept_error(&replica, batch, verified(guard), now),
            None
        );
        assert_eq!(replica.txns.borrow().open_transaction(producer), Some(end));
        assert!(
            !replica
                .producers
                .borrow()
                .holds_verification(producer, 0, guard)
        );
        replica.log.flush().await.unwrap();
    });
}

/// A JoinGroup request for the group tests below.
fn join_request(member_id: &str) -> crate::group::state::JoinRequest {
    crate::group::state::JoinRequest {
        member_id: member_id.to_string(),
        instance_id: None,
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), bytes::Bytes::new())],
        require_known_member_id: false,
        supports_skip_assignment: true,
    }
}

/// Losing coordinatorship (the offsets partition unloaded) answers the
/// members waiting in JoinGroup and SyncGroup with NOT_COORDINATOR, the
/// joiner with its own member id, as Kafka does: they rejoin at the new
/// coordinator with the ids it restored. A dropped waiter was answered
/// UNKNOWN_MEMBER_ID (join) or REBALANCE_IN_PROGRESS (sync) by the
/// handlers.
#[test]
fn members_waiting_when_the_coordinator_unloads_are_told_not_coordinator() {
    use crate::group::state::{Group, Reply};
    with_shard("unload-waiters", |shard| async move {
        let config = crate::group::group_config(&shard);
        let now = std::time::Instant::now();
        // A member waiting in JoinGroup (the join window is open).
        let mut joining = Group::new("joining", 0, 0);
        let Reply::Wait(mut join) = joining.join(join_request(""), &config, now, 0) else {
            panic!("the first join waits for the window");
        };
        // A member waiting in SyncGroup: the leader's assignment is
        // being written.
        let mut syncing = Group::new("syncing", 0, 0);
        let Reply::Wait(mut first) = syncing.join(join_request(""), &config, now, 0) else {
            panic!("the first join waits for the window");
        };
        let later = now + config.initial_rebalance_delay;
        syncing.tick(&config, later, 1);
        let joined = first.try_recv().unwrap().unwrap();
        let (mut sync, completed) = syncing
            .sync(
                joined.generation,
                &joined.member_id,
                None,
                Vec::new(),
                later,
            )
            .unwrap();
        assert!(completed);
        {
            let mut groups = shard.groups.groups.borrow_mut();
            groups.insert("joining".to_string(), joining);
            groups.insert("syncing".to_string(), syncing);
        }
        let member_id = shard.groups.groups.borrow()["joining"]
            .members
            .keys()
            .next()
            .cloned()
            .unwrap();

        crate::group::unload_partition(&shard, 0);

        assert!(shard.groups.groups.borrow().is_empty());
        let join = join.try_recv().unwrap().expect("the joiner is answered");
        assert_eq!(join.error, Some(ResponseError::NotCoordinator));
        assert_eq!(join.member_id, member_id, "the member keeps its id");
        let sync = sync.try_recv().unwrap().expect("the syncer is answered");
        assert_eq!(sync.error, Some(ResponseError::NotCoordinator));
    });
}

/// KIP-345 on the coordinator, with its log: a restarted static member's
/// JoinGroup is answered only once the group record mapping its instance
/// to the new member id is durable, so a load of the log (a new
/// coordinator) agrees with the answer; when that write fails (this broker
/// stopped leading the offsets partition while it waited) the member is
/// answered the error and the old member id keeps the instance. Sluice
/// answered at once and wrote the record in the background: a failover in
/// between loaded the old mapping, and the member's next request was
/// fenced (fatal to a Java consumer).
#[test]
fn a_restarted_static_member_is_answered_once_its_new_member_id_is_durable() {
    use crate::group::state::{Group, Reply};
    use crate::handlers::join_group::join_on_coordinator;
    with_shard("static-replacement", |shard| async move {
        let replica = loaded_offsets_partition(&shard).await;
        let config = crate::group::group_config(&shard);
        let static_join = |member_id: &str| crate::group::state::JoinRequest {
            instance_id: Some("instance".to_string()),
            ..join_request(member_id)
        };
        // A Stable group of one static member.
        let now = std::time::Instant::now();
        let mut group = Group::new("g", 0, 0);
        let Reply::Wait(mut joined) = group.join(static_join(""), &config, now, 0) else {
            panic!("the first join waits for the window");
        };
        let later = now + config.initial_rebalance_delay;
        group.tick(&config, later, 1);
        let first = joined.try_recv().unwrap().unwrap().member_id;
        let assignment = vec![(first.clone(), bytes::Bytes::from_static(b"all"))];
        let (_synced, completed) = group
            .sync(1, &first, Some("instance"), assignment, later)
            .unwrap();
        assert!(completed);
        group.finish_sync(1, None, &config, later, 1);
        shard
            .groups
            .groups
            .borrow_mut()
            .insert("g".to_string(), group);
        let heartbeat = |shard: &Rc<Shard>, member_id: &str| {
            shard
                .groups
                .groups
                .borrow_mut()
                .get_mut("g")
                .unwrap()
                .heartbeat(1, member_id, Some("instance"), std::time::Instant::now())
        };

        let mut restarted = Box::pin(join_on_coordinator(
            &shard,
            0,
            "g".to_string(),
            static_join(""),
        ));
        assert!(
            futures_util::poll!(&mut restarted).is_pending(),
            "answered before the group record was durable"
        );
        let restarted = restarted.await;
        assert_eq!(restarted.error, None);
        assert_ne!(restarted.member_id, first);
        // A coordinator that loads the log knows the new member id.
        crate::group::unload_partition(&shard, 0);
        let ticket = crate::group::begin_load(&shard, 0);
        crate::group::load_partition(&shard, &replica, ticket)
            .await
            .unwrap();
        assert_eq!(heartbeat(&shard, &restarted.member_id), None);
        assert_eq!(
            heartbeat(&shard, &first),
            Some(ResponseError::FencedInstanceId)
        );

        // It restarts again; the broker stops leading the partition while
        // the record is written.
        let mut again = Box::pin(join_on_coordinator(
            &shard,
            0,
            "g".to_string(),
            static_join(""),
        ));
        assert!(futures_util::poll!(&mut again).is_pending());
        let leading = replica.state();
        let follower = ReplicaState {
            role: ReplicaRole::Follower,
            leader_epoch: sluice_engine::LeaderEpoch(leading.leader_epoch.0 + 1),
        };
        assert!(shard.set_replica_state(&replica.topic_partition, follower));
        let again = again.await;
        assert_eq!(again.error, Some(ResponseError::NotCoordinator));
        assert_eq!(again.member_id, "", "no member id handed out");
        assert_eq!(
            heartbeat(&shard, &restarted.member_id),
            None,
            "the member id the log holds keeps the instance"
        );
    });
}

/// An offsets partition 0 led and loaded on `shard` (its groups served).
async fn loaded_offsets_partition(shard: &Rc<Shard>) -> Rc<PartitionReplica> {
    crate::group::offsets_topic(shard).await.unwrap();
    let ticket = crate::group::begin_load(shard, 0);
    assert!(crate::group::install_load(
        shard,
        None,
        &ticket,
        std::collections::HashMap::new()
    ));
    shard
        .partition(&TopicPartition::new(crate::group::OFFSETS_TOPIC, 0))
        .unwrap()
}

/// A TxnOffsetCommit whose batch is appended, then an abort marker of the
/// same producer appended after it and applied before the commit's write
/// completes: the offsets are dropped, never left pending for the
/// producer's next commit marker to apply (a load of the log drops them
/// too: the abort follows them). The race is driven step by step on the
/// one shard thread.
#[test]
fn a_txn_offset_commit_aborted_while_it_is_written_is_never_applied() {
    with_shard("txn-commit-abort-race", |shard| async move {
        let replica = loaded_offsets_partition(&shard).await;
        let producer = (4000, 0);
        let commit = |offset| commit_to("t", offset);
        let mut written = Box::pin(crate::handlers::txn_offset_commit::commit_on_coordinator(
            &shard,
            0,
            "g".to_string(),
            unverified(producer),
            -1,
            String::new(),
            None,
            vec![commit(7)],
        ));
        assert!(
            futures_util::poll!(&mut written).is_pending(),
            "appended, waiting to be durable"
        );
        let marker = |commit| {
            crate::shard::txn_state::write_txn_marker(
                &shard,
                &replica.topic_partition,
                producer.0,
                producer.1,
                0,
                commit,
            )
        };
        marker(false).await.unwrap();
        assert_eq!(written.await, None, "the commit itself succeeded");
        assert!(
            shard.groups.groups.borrow()["g"]
                .pending_txn_offsets
                .is_empty(),
            "the aborted offsets stayed pending"
        );
        // The producer's next transaction commits (without offsets).
        marker(true).await.unwrap();
        assert!(
            shard.groups.groups.borrow()["g"].offsets.is_empty(),
            "the aborted offsets were applied"
        );
    });
}

/// TxnOffsetCommit's writer `(producer id, epoch)`, without KIP-890
/// verification (`--transaction-partition-verification false`, v0..=4).
fn unverified(producer: (i64, i16)) -> crate::group::TxnWriter {
    crate::group::TxnWriter {
        producer_id: producer.0,
        producer_epoch: producer.1,
        verified: crate::txn::membership::Verified::Off,
    }
}

/// TxnOffsetCommit's transactional batch, delayed past its transaction's
/// abort (the coordinator's timeout, or a new instance's InitProducerId:
/// the abort marker bumped the producer's epoch on the offsets partition,
/// where no transaction was open yet), is refused with
/// INVALID_PRODUCER_EPOCH, as Kafka's append refuses a fenced epoch: not
/// appended, no transaction opened, nothing pending. Appended, it opened a
/// transaction that no marker would end (the partition's last stable
/// offset stuck there for good) and its offsets stayed pending, to be
/// applied by the producer's next commit marker there. The producer's new
/// epoch commits as before, and its commits fence an older epoch's as a
/// marker does (the append records their epoch, as a follower's replay
/// of them does).
#[test]
fn a_txn_offset_commit_of_an_aborted_epoch_is_refused_and_opens_no_transaction() {
    use crate::shard::producer_state::ProducerId;
    with_shard("txn-commit-fenced", |shard| async move {
        let replica = loaded_offsets_partition(&shard).await;
        let marker = |epoch, commit| {
            crate::shard::txn_state::write_txn_marker(
                &shard,
                &replica.topic_partition,
                4000,
                epoch,
                0,
                commit,
            )
        };
        let commit = |epoch, offset| {
            crate::handlers::txn_offset_commit::commit_on_coordinator(
                &shard,
                0,
                "g".to_string(),
                unverified((4000, epoch)),
                -1,
                String::new(),
                None,
                vec![commit_to("t", offset)],
            )
        };
        marker(1, false).await.unwrap();
        let end = replica.log.log_end_offset();

        assert_eq!(
            commit(0, 7).await,
            Some(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(replica.log.log_end_offset(), end, "nothing appended");
        assert_eq!(
            replica.txns.borrow().open_transaction(ProducerId(4000)),
            None
        );
        assert!(
            shard
                .groups
                .groups
                .borrow()
                .get("g")
                .is_none_or(|group| group.pending_txn_offsets.is_empty()),
            "the fenced offsets are pending"
        );

        assert_eq!(commit(1, 8).await, None, "the new epoch commits");
        assert_eq!(
            replica.txns.borrow().open_transaction(ProducerId(4000)),
            Some(end)
        );
        marker(1, true).await.unwrap();
        let offsets: Vec<i64> = shard.groups.groups.borrow()["g"]
            .offsets
            .values()
            .map(|committed| committed.offset)
            .collect();
        assert_eq!(offsets, [8]);

        // A newer epoch's commit fences the older one's too, with no
        // marker between them.
        assert_eq!(commit(2, 9).await, None);
        assert_eq!(
            commit(1, 10).await,
            Some(ResponseError::InvalidProducerEpoch)
        );
    });
}

/// KIP-890 for TxnOffsetCommit: a commit verified with the transaction
/// coordinator, then delayed past its transaction's end (a marker of the
/// same epoch: nothing to fence by epoch), may not open a transaction with
/// the old answer: the marker removed the verification guard taken before
/// the coordinator was asked, so it is refused with the writer's code, as
/// Kafka refuses an append without its guard. A commit verified afterwards
/// opens the transaction and spends its guard.
#[test]
fn a_txn_offset_commit_verified_before_its_transaction_ended_cannot_open_another() {
    use crate::shard::producer_state::ProducerId;
    use crate::txn::membership::{self, Verified};
    with_shard("txn-commit-verification-guard", |shard| async move {
        let replica = loaded_offsets_partition(&shard).await;
        let producer = ProducerId(4000);
        let guard = || {
            membership::begin_verification(&replica, producer.0, 0, 0, shard.io.now_ms())
                .expect("no transaction open: a guard")
        };
        let commit = |guard, offset| {
            crate::handlers::txn_offset_commit::commit_on_coordinator(
                &shard,
                0,
                "g".to_string(),
                crate::group::TxnWriter {
                    producer_id: producer.0,
                    producer_epoch: 0,
                    verified: Verified::On {
                        guard: Some(guard),
                        refusal: ResponseError::InvalidTxnState,
                    },
                },
                -1,
                String::new(),
                None,
                vec![commit_to("t", offset)],
            )
        };

        let late = guard();
        // The coordinator ends the transaction meanwhile.
        crate::shard::txn_state::write_txn_marker(
            &shard,
            &replica.topic_partition,
            producer.0,
            0,
            0,
            false,
        )
        .await
        .unwrap();
        let end = replica.log.log_end_offset();
        assert_eq!(commit(late, 7).await, Some(ResponseError::InvalidTxnState));
        assert_eq!(replica.log.log_end_offset(), end, "nothing appended");
        assert_eq!(replica.txns.borrow().open_transaction(producer), None);
        assert!(
            shard
                .groups
                .groups
                .borrow()
                .get("g")
                .is_none_or(|group| group.pending_txn_offsets.is_empty()),
            "the refused offsets are pending"
        );

        let current = guard();
        assert_eq!(commit(current, 8).await, None);
        assert_eq!(replica.txns.borrow().open_transaction(producer), Some(end));
        assert!(
            !replica
                .producers
                .borrow()
                .holds_verification(producer, 0, current),
            "the guard is spent"
        );
        assert_eq!(
            membership::begin_verification(&replica, producer.0, 0, 0, shard.io.now_ms()),
            None,
            "with the transaction open, nothing to verify"
        );
    });
}

/// Pending transactional offsets end with the first marker of their
/// producer after them: a marker appended before them (its hook running
/// late) leaves them to the next one.
#[test]
fn a_marker_ends_only_the_txn_offsets_written_before_it() {
    let mut group = crate::group::state::Group::new("g", 0, 0);
    let key = |partition| ("t".to_string(), partition);
    group.add_pending_txn_offsets(
        7,
        [(key(0), committed_at(1, 10)), (key(1), committed_at(2, 20))],
    );
    let ended = group.end_txn(7, 15);
    assert_eq!(ended, vec![(key(0), committed_at(1, 10))]);
    assert_eq!(group.pending_txn_offsets[&7].len(), 1);
    // A failed write drops its own entry only.
    group.drop_failed_txn_offsets(7, &[(key(1), 19)]);
    assert_eq!(group.pending_txn_offsets[&7].len(), 1);
    group.drop_failed_txn_offsets(7, &[(key(1), 20)]);
    assert!(group.pending_txn_offsets.is_empty());
}

/// The committed offsets of `group` in memory, then as a load of the log
/// rebuilds them (the partition unloaded and loaded again).
async fn offsets_in_memory_and_on_disk(
    shard: &Rc<Shard>,
    replica: &Rc<PartitionReplica>,
    group: &str,
) -> (Vec<i64>, Vec<i64>) {
    let offsets = |shard: &Rc<Shard>| -> Vec<i64> {
        shard
            .groups
            .groups
            .borrow()
            .get(group)
            .map(|group| {
                group
                    .offsets
                    .values()
                    .map(|committed| committed.offset)
                    .collect()
            })
            .unwrap_or_default()
    };
    let in_memory = offsets(shard);
    crate::group::unload_partition(shard, 0);
    let ticket = crate::group::begin_load(shard, 0);
    crate::group::load_partition(shard, replica, ticket)
        .await
        .unwrap();
    (in_memory, offsets(shard))
}

/// An OffsetCommit (or TxnOffsetCommit) of a client outside the group
/// (generation -1) sent while DeleteGroups waits for its tombstones: as in
/// Kafka, the group is Dead meanwhile and the commit is refused with
/// COORDINATOR_NOT_AVAILABLE (retriable). Let through, it was appended after the tombstones and
/// answered success, but the deletion then removed the group from memory:
/// the offset was missing until a load of the log brought it back.
#[test]
fn a_commit_during_a_group_deletion_is_refused_not_lost() {
    with_shard("delete-group-commit-race", |shard| async move {
        let replica = loaded_offsets_partition(&shard).await;
        install_group_with_an_offset(&shard);
        let mut deleted = Box::pin(crate::handlers::delete_groups::delete_on_coordinator(
            &shard, 0, "g",
        ));
        assert!(
            futures_util::poll!(&mut deleted).is_pending(),
            "tombstones appended, waiting to be durable"
        );
        let commit = commit_to("t", 9);
        let committed = crate::handlers::offset_commit::commit_on_coordinator(
            &shard,
            0,
            "g".to_string(),
            -1,
            String::new(),
            None,
            vec![commit],
        )
        .await;
        let txn_committed = crate::handlers::txn_offset_commit::commit_on_coordinator(
            &shard,
            0,
            "g".to_string(),
            unverified((4001, 0)),
            -1,
            String::new(),
            None,
            vec![commit_to("t", 11)],
        )
        .await;
        assert_eq!(deleted.await, None);
        let (in_memory, on_disk) = offsets_in_memory_and_on_disk(&shard, &replica, "g").await;
        assert_eq!(in_memory, on_disk, "memory and log disagree");
        assert_eq!(committed, Some(ResponseError::CoordinatorNotAvailable));
        assert_eq!(
            txn_committed,
            Some(ResponseError::CoordinatorNotAvailable),
            "a transactional commit too"
        );
    });
}

/// OffsetDelete racing OffsetCommits of the same partition, both orders
/// driven step by step: memory ends as a load of the log rebuilds it. A
/// commit appended after the tombstone and applied while the tombstone
/// was written stays (the deletion removed it from memory once durable);
/// one appended before the tombstone and completing after it is not
/// applied.
#[test]
fn offset_delete_racing_a_commit_leaves_memory_as_the_log_says() {
    with_shard("offset-delete-commit-race", |shard| async move {
        let replica = loaded_offsets_partition(&shard).await;
        install_group_with_an_offset(&shard);
        let commit = |offset| {
            crate::handlers::offset_commit::commit_on_coordinator(
                &shard,
                0,
                "g".to_string(),
                -1,
                String::new(),
                None,
                vec![commit_to("t", offset)],
            )
        };
        let delete = || {
            crate::handlers::offset_delete::delete_on_coordinator(
                &shard,
                0,
                "g",
                vec![("t".to_string(), vec![0])],
            )
        };

        // The commit appended after the tombstone.
        let mut deleted = Box::pin(delete());
        assert!(futures_util::poll!(&mut deleted).is_pending());
        assert_eq!(commit(9).await, None);
        assert!(deleted.await.is_ok());
        let (in_memory, on_disk) = offsets_in_memory_and_on_disk(&shard, &replica, "g").await;
        assert_eq!(
            in_memory, on_disk,
            "a later commit: memory and log disagree"
        );
        assert_eq!(on_disk, [9]);

        // The commit appended before the tombstone.
        let mut committed = Box::pin(commit(10));
        assert!(futures_util::poll!(&mut committed).is_pending());
        assert!(delete().await.is_ok());
        assert_eq!(committed.await, None);
        let (in_memory, on_disk) = offsets_in_memory_and_on_disk(&shard, &replica, "g").await;
        assert_eq!(
            in_memory, on_disk,
            "an earlier commit: memory and log disagree"
        );
        assert!(on_disk.is_empty());
    });
}

/// A commit of `offset` to partition 0 of `topic`, outside any generation's
/// leader epoch, without metadata.
fn commit_to(topic: &str, offset: i64) -> crate::handlers::offset_commit::Commit {
    crate::handlers::offset_commit::Commit {
        topic: topic.to_string(),
        partition: 0,
        offset,
        leader_epoch: -1,
        metadata: String::new(),
    }
}

/// Group "g" in the shard's table, with t-0 committed at 5 (record 0).
fn install_group_with_an_offset(shard: &Shard) {
    let mut group = crate::group::state::Group::new("g", 0, 0);
    group
        .offsets
        .insert(("t".to_string(), 0), committed_at(5, 0));
    shard
        .groups
        .groups
        .borrow_mut()
        .insert("g".to_string(), group);
}

fn committed_at(offset: i64, record_offset: i64) -> crate::group::state::CommittedOffset {
    crate::group::state::CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp: 0,
        record_offset,
    }
}

/// A topic deleted while a group load reads: the load drops its offsets
/// when it installs the groups (the deletion's own pass found nothing in
/// memory to forget).
#[test]
fn a_group_load_drops_the_offsets_of_topics_deleted_while_it_read() {
    with_shard("deleted-during-load", |shard| async move {
        let ticket = crate::group::begin_load(&shard, 0);
        let mut group = crate::group::state::Group::new("g", 0, 0);
        group
            .offsets
            .insert(("gone".to_string(), 0), committed_at(5, 1));
        group
            .offsets
            .insert(("kept".to_string(), 0), committed_at(6, 2));
        crate::group::forget_topics(&shard, &["gone".to_string()].into());
        let read = std::collections::HashMap::from([("g".to_string(), group)]);
        assert!(crate::group::install_load(&shard, None, &ticket, read));
        let groups = shard.groups.groups.borrow();
        let offsets: Vec<&String> = groups["g"].offsets.keys().map(|(topic, _)| topic).collect();
        assert_eq!(offsets, ["kept"]);
    });
}

/// A load at a replica's open runs before the open records the replica in
/// the shard's table: the tombstones of topics deleted while it read are
/// appended through the replica it loads, not one looked up by name.
#[test]
fn a_load_at_open_appends_the_tombstones_of_topics_deleted_while_it_read() {
    with_shard("tombstones-at-open", |shard| async move {
        crate::group::offsets_topic(&shard).await.unwrap();
        let topic_partition = TopicPartition::new(crate::group::OFFSETS_TOPIC, 0);
        let replica = shard.partition(&topic_partition).unwrap();
        let end = replica.log.log_end_offset();
        let ticket = crate::group::begin_load(&shard, 0);
        crate::group::forget_topics(&shard, &["gone".to_string()].into());
        // As during the open: not in the table yet.
        shard.partitions.remove(&topic_partition);
        let mut group = crate::group::state::Group::new("g", 0, 0);
        group
            .offsets
            .insert(("gone".to_string(), 0), committed_at(5, 1));
        let read = std::collections::HashMap::from([("g".to_string(), group)]);
        assert!(crate::group::install_load(
            &shard,
            Some(&replica),
            &ticket,
            read
        ));
        assert_eq!(
            replica.log.log_end_offset(),
            end.plus(1),
            "one tombstone appended"
        );
        shard.partitions.insert(topic_partition, replica);
    });
}

/// An OffsetCommit written before its topic was deleted and completed
/// after: not applied (the deletion's tombstone follows it in the log).
/// Once no commit is in flight, commits apply again. Through the
/// handler's own completion step (`finish_commit`), whose order matters.
#[test]
fn a_commit_in_flight_when_its_topic_is_deleted_is_not_applied() {
    with_shard("deleted-during-commit", |shard| async move {
        let mut group = crate::group::state::Group::new("g", 0, 0);
        let incarnation = group.begin_commit();
        shard
            .groups
            .groups
            .borrow_mut()
            .insert("g".to_string(), group);
        crate::group::forget_topics(&shard, &["gone".to_string()].into());
        let commit = |offset| commit_to("gone", offset);
        let mut groups = shard.groups.groups.borrow_mut();
        let group = groups.get_mut("g").unwrap();
        let finish = crate::handlers::offset_commit::finish_commit;
        assert!(finish(group, incarnation, Ok(3), vec![commit(7)], 0).is_none());
        assert!(
            group.offsets.is_empty(),
            "applied a commit of the deleted topic"
        );
        assert_eq!(group.commits_in_flight, 0);
        // A commit written after the deletion (the topic created again).
        let incarnation = group.begin_commit();
        assert!(finish(group, incarnation, Ok(4), vec![commit(8)], 0).is_none());
        // A commit begun on a group that was unloaded and loaded again
        // since counts nothing against the new one.
        let stale = group.begin_commit();
        let reloaded = &mut crate::group::state::Group::new("g", 0, 0);
        let current = reloaded.begin_commit();
        assert!(finish(reloaded, stale, Ok(5), vec![commit(9)], 0).is_none());
        assert_eq!(reloaded.commits_in_flight, 1);
        assert!(finish(reloaded, current, Ok(6), vec![commit(10)], 0).is_none());
        assert_eq!(reloaded.commits_in_flight, 0);
        assert_eq!(group.offsets[&("gone".to_string(), 0)].offset, 8);
    });
}

/// Lookups remember the last topic by the address of its name: a topic
/// deleted and created again under the same name, looked up with the same
/// `Arc<str>`, must give the new topic's replicas, never the old ones;
/// indexes beyond the topic or negative find nothing.
#[test]
fn a_lookup_with_a_remembered_name_finds_the_topic_created_again() {
    with_shard("lookup-recreated", |shard| async move {
        create_topic(&shard, "t", 2, BTreeMap::new(), false)
            .await
            .unwrap();
        let name: Arc<str> = Arc::from("t");
        let key = |partition| TopicPartition {
            topic: Arc::clone(&name),
            partition,
        };
        let old = shard.partition(&key(1)).unwrap();
        assert!(Rc::ptr_eq(&old, &shard.partition(&key(1)).unwrap()));
        assert!(shard.partition(&key(0)).is_some());
        assert!(shard.partition(&key(2)).is_none());
        assert!(shard.partition(&key(-1)).is_none());
        assert!(shard.topic("t").unwrap().partition(1).is_some());
        delete_topic(&shard, "t").await.unwrap();
        assert!(shard.partition(&key(1)).is_none());
        create_topic(&shard, "t", 3, BTreeMap::new(), false)
            .await
            .unwrap();
        let new = shard.partition(&key(1)).unwrap();
        assert!(!Rc::ptr_eq(&old, &new), "the deleted topic's replica");
        assert_eq!(new.topic_id, shard.metadata.snapshot().topics["t"].id);
        assert!(shard.partition(&key(2)).is_some());
        assert_eq!(shard.partitions.len(), 3);
    });
}

/// Jobs posted one after another start on the target in that order, even
/// when earlier ones are still running (`Shards::post`, `serve_inbox`).
#[test]
fn posted_jobs_start_in_the_order_they_were_posted() {
    const JOBS: u32 = 300;
    with_shard("post-order", |shard| async move {
        let started = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut answers = Vec::new();
        for job in 0..JOBS {
            let started = Arc::clone(&started);
            let answer = shard
                .shards
                .post(shard.id, move |_| async move {
                    started.lock().unwrap().push(job);
                    // Some jobs wait after their first poll, as a produce
                    // waits for durability, and are woken among the
                    // others' first polls.
                    if job % 3 == 0 {
                        compio::time::sleep(Duration::from_micros(u64::from(job % 5) * 100)).await;
                    }
                    job
                })
                .await
                .unwrap();
            answers.push(answer);
            // Let the target take what was posted so far now and then.
            if job % 7 == 0 {
                compio::time::sleep(Duration::from_micros(50)).await;
            }
        }
        let finished: Vec<u32> = join_all(answers)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(finished, (0..JOBS).collect::<Vec<_>>());
        assert_eq!(*started.lock().unwrap(), (0..JOBS).collect::<Vec<_>>());
    });
}

/// Every batch of `replica`'s log, as stored (flushed first).
async fn stored_batches(replica: &PartitionReplica) -> Vec<bytes::Bytes> {
    replica.log.flush().await.unwrap();
    let end = replica.log.log_end_offset();
    let mut batches = Vec::new();
    let mut offset = replica.log.log_start_offset();
    while offset < end {
        let read = replica
            .log
            .read(
                offset,
                sluice_engine::ReadLimits {
                    max_bytes: 1 << 20,
                    min_one_batch: true,
                    max_offset: end,
                },
            )
            .await
            .unwrap();
        assert!(read.next_offset > offset);
        offset = read.next_offset;
        for buffer in read.records {
            for range in sluice_engine::batch::split_batches(&buffer).unwrap() {
                batches.push(buffer.slice(range));
            }
        }
    }
    batches
}

/// Kafka's LogValidator stores a produced batch with the largest of its
/// records' timestamps as maxTimestamp, whatever the producer's header
/// claims (the CRC recomputed): uncompressed, compressed as sent,
/// recompressed under the topic's codec, and decompressed for a compacted
/// topic's keys. A header lying low hid the batch from ListOffsets by
/// time; one lying high (i64::MAX) kept its segment from retention.ms
/// forever. A header that is right is stored as sent.
#[test]
fn a_batch_is_stored_with_its_records_max_timestamp_whatever_its_header_claims() {
    use crate::txn::membership::Verified;
    use sluice_engine::TimestampMs;
    use sluice_engine::batch::{self, BatchBuilder, TimestampType, codec};

    with_shard("records-max-timestamp", |shard| async move {
        let now = shard.io.now_ms();
        let built = BatchBuilder::new()
            .record(Some(&b"k1"[..]), Some(&b"v1"[..]), TimestampMs(now - 50))
            .record(Some(&b"k2"[..]), Some(&b"v2"[..]), TimestampMs(now - 10))
            .record(Some(&b"k3"[..]), Some(&b"v3"[..]), TimestampMs(now - 30))
            .build();
        let header = batch::validate(&built, 1 << 20).unwrap();
        let lz4 = codec::recompress(&built, &header, codec::Target::Lz4).unwrap();
        let claiming = |batch: &[u8], claimed: i64| {
            let mut bytes = batch.to_vec();
            batch::set_max_timestamp(&mut bytes, TimestampType::CreateTime, TimestampMs(claimed));
            bytes::Bytes::from(bytes)
        };
        let topics: [(&str, &[(&str, &str)]); 3] = [
            ("as-sent", &[]),
            ("gzip", &[("compression.type", "gzip")]),
            ("compacted", &[("cleanup.policy", "compact")]),
        ];
        for (topic, configs) in topics {
            let configs: BTreeMap<String, String> = configs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect();
            create_topic(&shard, topic, 1, configs, false)
                .await
                .unwrap();
            let replica = shard.partition(&TopicPartition::new(topic, 0)).unwrap();
            let sent = [
                claiming(&built, now - 1_000),
                claiming(&built, i64::MAX),
                claiming(&lz4, now - 1_000),
                claiming(&lz4, i64::MAX),
                built.clone(),
            ];
            for batch in &sent {
                assert_eq!(
                    crate::handlers::produce::accept_error(
                        &replica,
                        batch.clone(),
                        Verified::Off,
                        now
                    ),
                    None,
                    "{topic}"
                );
            }
            let stored = stored_batches(&replica).await;
            assert_eq!(stored.len(), sent.len(), "{topic}");
            for (index, stored) in stored.iter().enumerate() {
                let header = batch::validate(stored, 1 << 20).unwrap();
                assert_eq!(
                    header.max_timestamp(),
                    TimestampMs(now - 10),
                    "{topic}: batch {index}"
                );
                assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
            }
            // The time index follows: ListOffsets' max timestamp.
            let (_, max_timestamp) = replica
                .log
                .max_timestamp(replica.log.log_end_offset())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(max_timestamp, TimestampMs(now - 10), "{topic}");
        }
        // A right header: the batch is stored as sent (offset and leader
        // epoch aside, which lie outside the CRC).
        let replica = shard.partition(&TopicPartition::new("as-sent", 0)).unwrap();
        let stored = stored_batches(&replica).await;
        let last = stored.last().unwrap();
        assert_eq!(
            last[batch::layout::CRC_AT..],
            built[batch::layout::CRC_AT..]
        );
    });
}

/// Kafka's LogValidator.validateTimestamp: only the broker sets
/// LogAppendTime. A batch a producer marked so is refused
/// (INVALID_TIMESTAMP, nothing appended) on a LogAppendTime topic, and on
/// a CreateTime topic when it has no maxTimestamp; on a CreateTime topic
/// with one, every record has that timestamp and the batch is stored as
/// CreateTime (Kafka's setMaxTimestamp).
#[test]
fn a_batch_a_producer_marked_log_append_time_is_refused_unless_it_has_a_create_time() {
    use crate::txn::membership::Verified;
    use sluice_engine::TimestampMs;
    use sluice_engine::batch::{self, BatchBuilder, TimestampType, codec};

    with_shard("producer-log-append-time", |shard| async move {
        let now = shard.io.now_ms();
        let built = BatchBuilder::new()
            .record(None, Some(&b"v1"[..]), TimestampMs(now - 50))
            .record(None, Some(&b"v2"[..]), TimestampMs(now - 10))
            .build();
        let header = batch::validate(&built, 1 << 20).unwrap();
        let lz4 = codec::recompress(&built, &header, codec::Target::Lz4).unwrap();
        let marked = |batch: &[u8], max_timestamp: i64| {
            let mut bytes = batch.to_vec();
            batch::set_max_timestamp(
                &mut bytes,
                TimestampType::LogAppendTime,
                TimestampMs(max_timestamp),
            );
            bytes::Bytes::from(bytes)
        };
        let configs = [(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        )];
        create_topic(&shard, "appended", 1, configs.into(), false)
            .await
            .unwrap();
        create_topic(&shard, "created", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let appended = shard
            .partition(&TopicPartition::new("appended", 0))
            .unwrap();
        let created = shard.partition(&TopicPartition::new("created", 0)).unwrap();
        let accept = |replica: &PartitionReplica, batch: &bytes::Bytes| {
            crate::handlers::produce::accept_error(replica, batch.clone(), Verified::Off, now)
        };
        for plain_or_compressed in [&built[..], &lz4[..]] {
            for max_timestamp in [now - 10, -1] {
                let batch = marked(plain_or_compressed, max_timestamp);
                assert_eq!(
                    accept(&appended, &batch),
                    Some(ResponseError::InvalidTimestamp),
                    "LogAppendTime topic, maxTimestamp {max_timestamp}"
                );
            }
            assert_eq!(
                accept(&created, &marked(plain_or_compressed, -1)),
                Some(ResponseError::InvalidTimestamp),
                "CreateTime topic, no maxTimestamp"
            );
            assert_eq!(
                accept(&created, &marked(plain_or_compressed, now - 10)),
                None
            );
        }
        assert!(
            stored_batches(&appended).await.is_empty(),
            "nothing appended"
        );
        let stored = stored_batches(&created).await;
        assert_eq!(stored.len(), 2);
        for stored in stored {
            let header = batch::validate(&stored, 1 << 20).unwrap();
            assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
            assert_eq!(header.max_timestamp(), TimestampMs(now - 10));
        }
    });
}

/// Kafka's Produce never creates a topic: one that does not exist answers
/// UNKNOWN_TOPIC_OR_PARTITION, even on a broker that auto-creates topics
/// (only Metadata does, and clients send it before producing).
#[test]
fn a_produce_to_a_topic_that_does_not_exist_creates_nothing() {
    with_shard("produce-no-auto-create", |shard| async move {
        assert!(shard.config.auto_create_topics);
        let batch = sluice_engine::batch::build::simple_batch(1, 10, sluice_engine::TimestampMs(0));
        assert_eq!(
            produce_error_code(&shard, 9, "missing", batch).await,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert!(!shard.metadata.snapshot().topics.contains_key("missing"));
    });
}

/// Produce `records` to `topic`-0 in Produce `version` (acks=1): the
/// partition's error code.
async fn produce_error_code(
    shard: &Rc<Shard>,
    version: i16,
    topic: &'static str,
    records: bytes::Bytes,
) -> i16 {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let listener: Arc<str> = Arc::from("PLAINTEXT");
    let reply = crate::handlers::produce::handle(
        shard,
        version,
        request,
        &listener,
        &crate::auth::authorizer::Access::unrestricted(),
    )
    .await
    .unwrap();
    let crate::handlers::Reply::Body(body) = reply else {
        panic!("acks=1 is answered with a body");
    };
    let ResponseKind::Produce(response) = *body else {
        panic!("not a produce response");
    };
    response.responses[0].partition_responses[0].error_code
}

/// Kafka's ProduceRequest.validateRecords: a batch of magic 0 or 1 is
/// INVALID_RECORD (Sluice answered UNSUPPORTED_FOR_MESSAGE_FORMAT), a zstd
/// batch before Produce v7 UNSUPPORTED_COMPRESSION_TYPE (Sluice took it,
/// and the client could not read it back).
#[test]
fn old_magic_and_zstd_before_v7_are_refused_as_kafka_refuses_them() {
    use sluice_engine::TimestampMs;
    use sluice_engine::batch::{self, BatchBuilder, codec};

    with_shard("produce-validate-records", |shard| async move {
        create_topic(&shard, "records", 1, BTreeMap::new(), false)
            .await
            .unwrap();
        let plain = BatchBuilder::new()
            .record(None, Some(&b"v"[..]), TimestampMs(0))
            .build();
        let header = batch::validate(&plain, 1 << 20).unwrap();
        let mut magic_one = plain.to_vec();
        magic_one[batch::layout::MAGIC_AT] = 1;
        assert_eq!(
            produce_error_code(&shard, 9, "records", magic_one.into()).await,
            ResponseError::InvalidRecord.code()
        );
        let zstd = bytes::Bytes::from(
            codec::recompress(&plain, &header, codec::Target::Zstd { level: 3 }).unwrap(),
        );
        assert_eq!(
            produce_error_code(&shard, 6, "records", zstd.clone()).await,
            ResponseError::UnsupportedCompressionType.code()
        );
        let replica = shard.partition(&TopicPartition::new("records", 0)).unwrap();
        assert_eq!(replica.log.log_end_offset().value(), 0, "nothing appended");
        assert_eq!(produce_error_code(&shard, 7, "records", zstd).await, 0);
        assert_eq!(replica.log.log_end_offset().value(), 1);
    });
}
