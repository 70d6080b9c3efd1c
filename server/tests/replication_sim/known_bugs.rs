//! Minimal reproductions, on the production functions alone, of bugs the
//! reassignment simulation found (`reassignments_under_faults_lose_nothing`:
//! seeds 96 and 144 of its default 400, seed 1096 of 2,500), kept as
//! regression tests now that they are fixed. A fourth bug, in
//! `replication::leader::isr_loop` (seed 1076 of 2,500: a refusal dropped
//! a pending ISR change that had committed), has no reproduction here: it
//! is in the async driver, which only the simulation models.

use sluice_engine::{LeaderEpoch, Offset};
use sluice_server::controller::image::MetadataImage;
use sluice_server::controller::reassignment::alter;
use sluice_server::controller::records::{
    BrokerRegistrationChange, LeaderChange, MetadataRecord, PartitionChange, PartitionRecord,
    RegisterBroker, TopicRecord,
};
use sluice_server::controller::types::{
    BrokerEpoch, BrokerId, IncarnationId, MetadataOffset, PartitionEpoch, PartitionIndex, TopicId,
};
use sluice_server::replication::messages::{FollowerLog, ReplyStatus, StateReply};
use sluice_server::replication::progress::{LeaderState, SyncStep};
use uuid::Uuid;

use super::broker::TOPIC_ID;

/// A follower's answer to request `request_id` with a log of `end` (all
/// of it durable, of leader epoch 0 unless empty).
fn answer(request_id: u64, end: i64) -> StateReply {
    StateReply {
        request_id,
        topic_id: TOPIC_ID,
        partition: 0,
        status: ReplyStatus::Ok,
        follower_epoch: LeaderEpoch(0),
        log: FollowerLog {
            log_start: Offset::ZERO,
            log_end: Offset(end),
            durable_end: Offset(end),
            last_epoch: (end > 0).then_some(LeaderEpoch(0)),
        },
    }
}

/// Bug 1 (seed 96): a leader whose view skips a reassignment's removal of
/// a follower (the metadata follower applies the latest image, so views
/// coalesce) keeps that follower's progress when a later reassignment
/// adds it back, though its broker deleted its copy in between and
/// starts from an empty log. `LeaderState::apply_committed` (via
/// `set_replicas`, which keeps the progress of every broker still
/// listed) and `FollowerProgress::resync` (which only ever raises
/// `acked_end`) keep the old durable end: the ISR task adds the empty
/// replica to the ISR at once, and the high watermark counts its old copy.
/// An acknowledged write is then missing from an ISR member the
/// controller may elect.
#[test]
fn a_replica_removed_and_added_back_within_one_view_is_not_counted_with_its_deleted_copy() {
    let now_ms = 10_000;
    let lag_max_ms = 1_000;
    // Leader 1 of [1, 2, 3], partition epoch 0; both followers hold 138
    // offsets durably.
    let mut leader = LeaderState::new(
        1,
        LeaderEpoch(0),
        Offset::ZERO,
        0,
        vec![1, 2, 3],
        vec![1, 2, 3],
        Offset::ZERO,
        now_ms,
    );
    let stream_from_its_end = |log: &FollowerLog| SyncStep::Stream { from: log.log_end };
    for (follower, request_id) in [(2, 1), (3, 2)] {
        let progress = leader.followers.get_mut(&follower).unwrap();
        progress.sent_probe(request_id, Offset(138), now_ms);
        progress.on_reply(
            &answer(request_id, 138),
            now_ms,
            LeaderEpoch(0),
            stream_from_its_end,
        );
    }
    leader.update_high_watermark(Offset(138));
    assert_eq!(leader.high_watermark(), Offset(138));
    // The controller: partition epoch 1 shrinks the partition to [1, 2]
    // (ISR [1, 2]); broker 3 deletes its copy. Partition epoch 2 moves it
    // to [2, 3, 1] (adding 3, ISR [1, 2]); broker 3 opens an empty copy.
    // The leader's next view is partition epoch 2.
    let added = leader.apply_committed(2, &[2, 3, 1], &[1, 2], now_ms + 10);
    // Broker 3 answers the leader's next probe with its empty log.
    let progress = leader.followers.get_mut(&3).unwrap();
    progress.sent_probe(3, Offset(138), now_ms + 20);
    progress.on_reply(
        &answer(3, 0),
        now_ms + 20,
        LeaderEpoch(0),
        stream_from_its_end,
    );
    let acked_end = leader.followers[&3].acked_end;
    let wanted = leader.wanted_isr(now_ms + 30, lag_max_ms);
    assert!(
        acked_end.is_none_or(|end| end == Offset::ZERO)
            && !wanted.as_ref().is_some_and(|isr| isr.contains(&3)),
        "broker 3 holds nothing, yet the leader counts {acked_end:?} for it and wants the ISR {wanted:?} \
         (followers added by the view: {added:?})"
    );
}

/// Bug 3 (seed 1096): the controller
/// answers an AlterPartition whose ISR is already in place with the
/// *current* state (`AlterPartitionDecision::Current`), whose partition
/// epoch may be newer than the leader's view and cover a replica-list
/// change. `isr_loop` applies it with the leader's own (old) replica list
/// (`apply_committed(committed.partition_epoch, &leader.replicas, ..)`),
/// and the view carrying the new list, at that same partition epoch, is
/// then ignored by `LeaderState::apply_committed` (`<=`): the leader never
/// starts a pusher for the added replica, which never joins the ISR, and
/// the reassignment never completes.
#[test]
fn a_current_state_answer_does_not_hide_a_new_replica_list() {
    let now_ms = 10_000;
    // Leader 3 of [3, 1] at partition epoch 18.
    let mut leader = LeaderState::new(
        3,
        LeaderEpoch(2),
        Offset::ZERO,
        18,
        vec![3, 1],
        vec![3, 1],
        Offset::ZERO,
        now_ms,
    );
    // The controller meanwhile: 19 starts a move to [3, 2, 1] (adding 2),
    // 20 fences 1 (ISR [3]). The leader proposes [3] at 18 and is
    // answered with the current state, partition epoch 20; isr_loop
    // applies it with its own replica list.
    let replicas = leader.replicas.clone();
    leader.apply_committed(20, &replicas, &[3], now_ms + 10);
    // Then the view of partition epoch 20 arrives.
    let added = leader.apply_committed(20, &[3, 2, 1], &[3], now_ms + 20);
    assert!(
        leader.followers.contains_key(&2) && added.iter().any(|(broker, _)| *broker == 2),
        "the leader follows replicas {:?} (the view says [3, 2, 1]); pushers to start: {added:?}",
        leader.replicas
    );
}

const TOPIC: TopicId = TopicId(Uuid::from_u128(0x51));
const P0: PartitionIndex = PartitionIndex(0);

fn ids(list: &[i32]) -> Vec<BrokerId> {
    list.iter().copied().map(BrokerId).collect()
}

fn commit(image: &mut MetadataImage, offset: &mut i64, records: Vec<MetadataRecord>) {
    image
        .apply_batch(MetadataOffset(*offset), &records)
        .expect("the image takes the batch");
    *offset += 1;
}

fn change(image: &MetadataImage, isr: &[i32], leader: LeaderChange) -> MetadataRecord {
    let current = image.partition(TOPIC, P0).unwrap();
    MetadataRecord::PartitionChange(PartitionChange {
        topic_id: TOPIC,
        partition: P0,
        isr: Some(ids(isr)),
        leader,
        replicas: None,
        expected_partition_epoch: Some(current.partition_epoch),
    })
}

/// Bug 2 (seed 144): cancelling (or replacing) the reassignment of a
/// leaderless partition whose only ISR member is a replica being added
/// empties the ISR. `reassignment::alter` drops the ISR members outside
/// the new replica list and refuses only when a partition *with* a leader
/// would be left without one. The result: no ISR (no leader can ever be
/// elected cleanly), and the one broker known to hold every acknowledged
/// write is no longer a replica, so it deletes its copy when it comes
/// back: acknowledged writes lost.
#[test]
fn cancelling_a_reassignment_never_empties_the_isr() {
    let mut image = MetadataImage::new();
    let mut offset = 1;
    for broker in 1..=3 {
        let epoch = offset;
        commit(
            &mut image,
            &mut offset,
            vec![MetadataRecord::RegisterBroker(RegisterBroker {
                broker_id: BrokerId(broker),
                incarnation_id: IncarnationId(Uuid::from_u128(broker as u128)),
                broker_epoch: BrokerEpoch(epoch),
                listeners: vec![],
                shard_count: 1,
                rack: None,
                directory_id: None,
                directory_replaced: false,
            })],
        );
        commit(
            &mut image,
            &mut offset,
            vec![MetadataRecord::BrokerRegistrationChange(
                BrokerRegistrationChange {
                    broker_id: BrokerId(broker),
                    broker_epoch: BrokerEpoch(epoch),
                    fenced: Some(false),
                    in_controlled_shutdown: None,
                },
            )],
        );
    }
    commit(
        &mut image,
        &mut offset,
        vec![
            MetadataRecord::Topic(TopicRecord {
                name: "t".into(),
                topic_id: TOPIC,
            }),
            MetadataRecord::Partition(PartitionRecord {
                topic_id: TOPIC,
                partition: P0,
                replicas: ids(&[3, 2]),
                isr: ids(&[3, 2]),
                leader: Some(BrokerId(3)),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            }),
        ],
    );
    // Move [3, 2] to [1, 3]: replicas [1, 3, 2], adding [1], removing [2].
    let records = alter(&image, TOPIC, P0, Some(&ids(&[1, 3]))).unwrap();
    commit(&mut image, &mut offset, records);
    // 1 catches up and joins; 3 and 2 are fenced in turn (1 leads, alone
    // in the ISR); then 1 is fenced too: no leader, ISR [1].
    let joined = change(&image, &[3, 2, 1], LeaderChange::Unchanged);
    commit(&mut image, &mut offset, vec![joined]);
    let alone = change(&image, &[1], LeaderChange::To(BrokerId(1)));
    commit(&mut image, &mut offset, vec![alone]);
    let broker_epoch = image.broker(BrokerId(1)).unwrap().broker_epoch;
    let leaderless = change(&image, &[1], LeaderChange::NoLeader);
    commit(
        &mut image,
        &mut offset,
        vec![
            MetadataRecord::BrokerRegistrationChange(BrokerRegistrationChange {
                broker_id: BrokerId(1),
                broker_epoch,
                fenced: Some(true),
                in_controlled_shutdown: None,
            }),
            leaderless,
        ],
    );
    let before = image.partition(TOPIC, P0).unwrap().clone();
    assert_eq!((before.leader, before.isr.clone()), (None, ids(&[1])));
    // The operator cancels.
    let outcome = alter(&image, TOPIC, P0, None);
    if let Ok(records) = outcome {
        commit(&mut image, &mut offset, records);
        let after = image.partition(TOPIC, P0).unwrap();
        assert!(
            !after.isr.is_empty(),
            "the cancellation emptied the ISR: replicas {:?} isr {:?} leader {:?} (broker 1, the only ISR member, is no longer a replica)",
            after.replicas,
            after.isr,
            after.leader
        );
    }
}
