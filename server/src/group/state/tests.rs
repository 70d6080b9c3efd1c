//! Unit tests of the group state machine (time driven by hand).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const DELAY: Duration = Duration::from_millis(3000);
const SESSION_MS: i32 = 10_000;

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: DELAY,
        session_timeout_min_ms: 6000,
        session_timeout_max_ms: 1_800_000,
    }
}

fn request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance.map(str::to_string),
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: 30_000,
        protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
        protocols: protocols
            .iter()
            .map(|name| (name.to_string(), Bytes::from(format!("meta-{name}"))))
            .collect(),
        require_known_member_id: true,
        supports_skip_assignment: true,
    }
}

fn now_result<T>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(result) => result,
        Reply::Wait(_) | Reply::Store { .. } => panic!("expected an immediate answer"),
    }
}

fn waiting<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
    match reply {
        Reply::Wait(receiver) => receiver,
        Reply::Now(_) | Reply::Store { .. } => panic!("expected to wait"),
    }
}

/// A static member's replacement waiting for its group record: the
/// answer's receiver and the new member id.
fn stored<T>(reply: Reply<T>) -> (oneshot::Receiver<T>, String) {
    match reply {
        Reply::Store {
            receiver,
            member_id,
        } => (receiver, member_id),
        Reply::Now(_) | Reply::Wait(_) => panic!("expected to wait for the group record"),
    }
}

fn ready<T>(receiver: &mut oneshot::Receiver<T>) -> Option<T> {
    receiver.try_recv().expect("sender dropped")
}

/// Join with an empty member id, get the id (MEMBER_ID_REQUIRED), rejoin.
fn join_new(
    group: &mut Group,
    protocols: &[&str],
    now: Instant,
) -> (String, oneshot::Receiver<JoinResult>) {
    let first = now_result(group.join(request("", None, protocols), &config(), now, 0));
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    let id = first.member_id.clone();
    assert!(!id.is_empty());
    let receiver = waiting(group.join(request(&id, None, protocols), &config(), now, 0));
    (id, receiver)
}

/// A stable group of `count` members; returns their ids (leader first).
fn stable_group(count: usize, start: Instant) -> (Group, Vec<String>) {
    let mut group = Group::new("g", 0, 0);
    let mut joins = Vec::new();
    for _ in 0..count {
        joins.push(join_new(&mut group, &["range"], start));
    }
    group.tick(&config(), start + DELAY, 1);
    let mut ids = Vec::new();
    for (id, mut receiver) in joins {
        let result = ready(&mut receiver).expect("join answered");
        assert_eq!(result.error, None);
        assert_eq!(result.generation, 1);
        ids.push(id);
    }
    let leader = group.leader.clone().unwrap();
    ids.sort_by_key(|id| *id != leader);
    let assignments = ids
        .iter()
        .map(|id| (id.clone(), Bytes::from(format!("assignment-{id}"))))
        .collect();
    let (mut receiver, completed) = group
        .sync(1, &leader, None, assignments, start + DELAY)
        .unwrap();
    assert!(completed);
    assert_eq!(
        group.state,
        GroupState::CompletingRebalance,
        "Stable once the assignment is durable"
    );
    assert!(ready(&mut receiver).is_none());
    group.finish_sync(1, None, &config(), start + DELAY, 1);
    assert_eq!(group.state, GroupState::Stable);
    let answer = ready(&mut receiver).unwrap();
    assert_eq!(
        answer.assignment,
        Bytes::from(format!("assignment-{leader}"))
    );
    // The followers sync too, as clients do.
    for id in ids.iter().skip(1) {
        let answered = group.sync(1, id, None, Vec::new(), start + DELAY);
        assert!(matches!(answered, Err(SyncResult { error: None, .. })));
    }
    (group, ids)
}

#[test]
fn first_join_waits_for_the_initial_delay_then_generation_1() {
    let start = Instant::now();
    let mut group = Group::new("g", 0, 0);
    let (id, mut receiver) = join_new(&mut group, &["range", "roundrobin"], start);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    group.tick(&config(), start + DELAY / 2, 1);
    assert!(
        ready(&mut receiver).is_none(),
        "answered before the window closed"
    );
    group.tick(&config(), start + DELAY, 1);
    let result = ready(&mut receiver).unwrap();
    assert_eq!(result.error, None);
    assert_eq!(result.generation, 1);
    assert_eq!(result.leader, id);
    assert_eq!(result.protocol.as_deref(), Some("range"));
    assert_eq!(result.members.len(), 1, "the leader gets the members");
    assert_eq!(result.members[0].metadata, Bytes::from("meta-range"));
    assert_eq!(group.state, GroupState::CompletingRebalance);
}

#[test]
fn followers_get_their_assignment_when_the_leader_syncs() {
    let start = Instant::now();
    let mut group = Group::new("g", 0, 0);
    let (a, mut join_a) = join_new(&mut group, &["range"], start);
    let (b, mut join_b) = join_new(&mut group, &["range"], start);
    group.tick(&config(), start + DELAY, 1);
    let result_a = ready(&mut join_a).unwrap();
    let result_b = ready(&mut join_b).unwrap();
    let (leader, follower) = if result_a.leader == a { (a, b) } else { (b, a) };
    let leader_result = if result_a.member_id == leader {
        &result_a
    } else {
        &result_b
    };
    let follower_result = if result_a.member_id == follower {
        &result_a
    } else {
        &result_b
    };
    assert_eq!(leader_result.members.len(), 2);
    assert!(follower_result.members.is_empty());

    let (mut follower_sync, completed) = group
        .sync(1, &follower, None, Vec::new(), start + DELAY)
        .unwrap();
    assert!(!completed);
    assert!(ready(&mut follower_sync).is_none());
    let (mut leader_sync, completed) = group
        .sync(
            1,
            &leader,
            None,
            vec![
                (leader.clone(), Bytes::from_static(b"L")),
                (follower.clone(), Bytes::from_static(b"F")),
            ],
            start + DELAY,
        )
        .unwrap();
    assert!(completed);
    assert!(group.take_dirty(), "a stable group must be persisted");
    group.finish_sync(1, None, &config(), start + DELAY, 1);
    assert_eq!(
        ready(&mut follower_sync).unwrap().assignment,
        Bytes::from_static(b"F")
    );
    assert_eq!(
        ready(&mut leader_sync).unwrap().assignment,
        Bytes::from_static(b"L")
    );
    // A late SyncGroup in Stable gets the stored assignment at once.
    let late = group
        .sync(1, &follower, None, Vec::new(), start + DELAY)
        .err()
        .unwrap();
    assert_eq!(late.error, None);
    assert_eq!(late.assignment, Bytes::from_static(b"F"));
}

#[test]
fn a_new_member_triggers_a_rebalance_that_waits_for_everyone() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(2, start);
    let later = start + DELAY + Duration::from_secs(1);
    assert_eq!(group.heartbeat(1, &ids[0], None, later), None);
    let (newcomer, mut join_new_member) = join_new(&mut group, &["range"], later);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat(1, &ids[0], None, later),
        Some(ResponseError::RebalanceInProgress)
    );
    // Not complete until the old members rejoin.
    let mut first = waiting(group.join(request(&ids[0], None, &["range"]), &config(), later, 2));
    assert!(ready(&mut join_new_member).is_none());
    let mut second = waiting(group.join(request(&ids[1], None, &["range"]), &config(), later, 2));
    for receiver in [&mut first, &mut second, &mut join_new_member] {
        let result = ready(receiver).unwrap();
        assert_eq!(result.error, None);
        assert_eq!(result.generation, 2);
    }
    assert_eq!(group.members.len(), 3);
    assert!(group.members.contains_key(&newcomer));
    // The old generation is fenced.
    assert_eq!(
        group.heartbeat(1, &ids[0], None, later),
        Some(ResponseError::IllegalGeneration)
    );
}

#[test]
fn members_that_do_not_rejoin_in_time_are_dropped() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(2, start);
    let later = start + DELAY;
    // New protocol metadata (a changed subscription) forces a rebalance.
    let mut rejoin = waiting(group.join(
        request(&ids[0], None, &["range", "roundrobin"]),
        &config(),
        later,
        2,
    ));
    assert_eq!(group.state, GroupState::PreparingRebalance);
    // ids[1] keeps heartbeating but never rejoins: out at the rebalance timeout.
    for second in [8, 16, 24, 29] {
        let at = later + Duration::from_secs(second);
        assert_eq!(
            group.heartbeat(1, &ids[1], None, at),
            Some(ResponseError::RebalanceInProgress)
        );
        group.tick(&config(), at, 3);
        assert!(ready(&mut rejoin).is_none());
    }
    group.tick(&config(), later + Duration::from_secs(31), 3);
    let result = ready(&mut rejoin).unwrap();
    assert_eq!(result.generation, 2);
    assert_eq!(result.protocol.as_deref(), Some("range"));
    assert_eq!(group.members.len(), 1);
    assert_eq!(
        group.heartbeat(2, &ids[1], None, later),
        Some(ResponseError::UnknownMemberId)
    );
}

/// A member waiting in JoinGroup or SyncGroup sends no heartbeats (the
/// Java consumer's heartbeat thread pauses while it rejoins), so its
/// session starts again when it is answered, as in Kafka. It did not: a
/// member that rejoined first and waited longer than its session timeout
/// for the others was dropped by the tick right after the join completed,
/// before its SyncGroup came, and the group rebalanced again; likewise a
/// follower that waited in SyncGroup longer than its session for the
/// leader's assignment to be durable.
#[test]
fn a_member_answered_after_a_long_wait_keeps_its_session() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(2, start);
    let (leader, follower) = (ids[0].clone(), ids[1].clone());
    let session = Duration::from_millis(SESSION_MS as u64);
    let rebalance_at = start + DELAY;
    // The leader rejoins (a changed subscription) and waits; the follower
    // heartbeats while it finishes its poll, and rejoins 20 s later.
    let mut leader_join = waiting(group.join(
        request(&leader, None, &["range", "roundrobin"]),
        &config(),
        rebalance_at,
        2,
    ));
    for second in [5, 10, 15] {
        let at = rebalance_at + Duration::from_secs(second);
        group.heartbeat(1, &follower, None, at);
        group.tick(&config(), at, 2);
    }
    let joined_at = rebalance_at + 2 * session;
    let mut follower_join = waiting(group.join(
        request(&follower, None, &["range", "roundrobin"]),
        &config(),
        joined_at,
        3,
    ));
    assert_eq!(ready(&mut leader_join).unwrap().generation, 2);
    assert_eq!(ready(&mut follower_join).unwrap().generation, 2);
    // The leader computes the assignment; the coordinator ticks meanwhile.
    group.tick(&config(), joined_at + Duration::from_millis(100), 3);
    assert!(
        group.members.contains_key(&leader),
        "the leader was dropped"
    );
    assert_eq!(group.state, GroupState::CompletingRebalance);
    // The follower syncs first and waits for the leader's assignment,
    // then for it to be durable, longer than its session.
    let follower_sync = group.sync(2, &follower, None, Vec::new(), joined_at);
    let Ok((mut follower_sync, false)) = follower_sync else {
        panic!("the follower's sync was answered at once");
    };
    let assignments = [&leader, &follower]
        .iter()
        .map(|id| (id.to_string(), Bytes::from(format!("assignment-{id}"))))
        .collect();
    let synced_at = joined_at + session / 2;
    let (_leader_sync, completed) = group
        .sync(2, &leader, None, assignments, synced_at)
        .unwrap();
    assert!(completed);
    let durable_at = synced_at + session;
    group.finish_sync(2, None, &config(), durable_at, 4);
    assert_eq!(group.state, GroupState::Stable);
    assert!(ready(&mut follower_sync).unwrap().error.is_none());
    group.tick(&config(), durable_at + Duration::from_millis(100), 4);
    assert_eq!(group.state, GroupState::Stable);
    assert!(
        group.members.contains_key(&follower),
        "the follower was dropped"
    );
}

#[test]
fn an_expired_session_evicts_the_member_and_rebalances() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(2, start);
    let stable_at = start + DELAY;
    let session = Duration::from_millis(SESSION_MS as u64);
    // ids[0] heartbeats, ids[1] is silent.
    group.heartbeat(1, &ids[0], None, stable_at + session / 2);
    group.tick(&config(), stable_at + session / 2, 2);
    assert_eq!(group.state, GroupState::Stable);
    group.heartbeat(1, &ids[0], None, stable_at + session);
    group.tick(&config(), stable_at + session + Duration::from_millis(1), 2);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    assert!(!group.members.contains_key(&ids[1]));
    let mut rejoin = waiting(group.join(
        request(&ids[0], None, &["range"]),
        &config(),
        stable_at + session,
        3,
    ));
    let result = ready(&mut rejoin).unwrap();
    assert_eq!(result.generation, 2);
    assert_eq!(result.leader, ids[0]);
}

#[test]
fn leaving_rebalances_and_the_last_one_out_empties_the_group() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(2, start);
    let now = start + DELAY;
    assert_eq!(group.leave(&ids[1], None, &config(), now, 2), None);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    assert_eq!(
        group.leave("nobody", None, &config(), now, 2),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(group.leave(&ids[0], None, &config(), now, 2), None);
    assert_eq!(group.state, GroupState::Empty);
    assert!(group.take_dirty());
    assert_eq!(
        group.generation, 2,
        "the empty transition is a generation too"
    );
}

/// A JoinGroup of static member `instance` with session timeout
/// `session_timeout_ms`.
fn static_request(member_id: &str, instance: &str, session_timeout_ms: i32) -> JoinRequest {
    let mut join = request(member_id, Some(instance), &["range"]);
    join.session_timeout_ms = session_timeout_ms;
    join
}

/// Two static members (instance-a, instance-b) with session timeout
/// `session_timeout_ms`, of a group made Stable at `start + DELAY`: the
/// group, the leader's member id, and the follower's member id and
/// instance id.
fn stable_static_group(
    start: Instant,
    session_timeout_ms: i32,
) -> (Group, String, String, &'static str) {
    let mut group = Group::new("g", 0, 0);
    let mut first = waiting(group.join(
        static_request("", "instance-a", session_timeout_ms),
        &config(),
        start,
        0,
    ));
    let mut second = waiting(group.join(
        static_request("", "instance-b", session_timeout_ms),
        &config(),
        start,
        0,
    ));
    group.tick(&config(), start + DELAY, 1);
    let a = ready(&mut first).unwrap();
    let b = ready(&mut second).unwrap();
    let leader = a.leader.clone();
    let (follower_id, follower_instance) = if a.member_id == leader {
        (b.member_id.clone(), "instance-b")
    } else {
        (a.member_id.clone(), "instance-a")
    };
    let assignments = vec![
        (a.member_id.clone(), Bytes::from_static(b"A")),
        (b.member_id.clone(), Bytes::from_static(b"B")),
    ];
    let _leader_sync = group
        .sync(1, &leader, None, assignments, start + DELAY)
        .unwrap();
    group.finish_sync(1, None, &config(), start + DELAY, 1);
    assert_eq!(group.state, GroupState::Stable);
    (group, leader, follower_id, follower_instance)
}

/// A restarted static member's JoinGroup `join` to a Stable group whose
/// group record is then durable: its answer.
fn replaced_durably(group: &mut Group, join: JoinRequest, now: Instant) -> JoinResult {
    let (mut answer, member_id) = stored(group.join(join, &config(), now, 2));
    assert!(ready(&mut answer).is_none(), "answered before the write");
    group.finish_static_replacement(&member_id, None, now);
    ready(&mut answer).expect("answered once durable")
}

/// KIP-345: a restarted static member rejoins a Stable group without a
/// rebalance as long as the protocol the group would select stays the
/// same, whatever its subscription metadata (a restarted Java consumer
/// sends generation -1 and no owned partitions) or its other protocols.
/// One whose protocols would change the selection rebalances.
#[test]
fn a_static_member_with_other_metadata_rejoins_without_a_rebalance() {
    let start = Instant::now();
    let (mut group, _, _, instance) = stable_static_group(start, SESSION_MS);
    let mut changed = request("", Some(instance), &["range", "cooperative-sticky"]);
    changed.protocols[0].1 = Bytes::from_static(b"generation -1, nothing owned");
    let rejoin = replaced_durably(&mut group, changed, start + DELAY);
    assert_eq!(rejoin.error, None);
    assert_eq!(rejoin.generation, 1, "no new generation");
    assert_eq!(group.state, GroupState::Stable);

    // Another restart preferring a protocol the other member does not
    // have: the selection stays "range", still no rebalance.
    let rejoin = replaced_durably(
        &mut group,
        request("", Some(instance), &["cooperative-sticky", "range"]),
        start + DELAY,
    );
    assert_eq!((rejoin.error, rejoin.generation), (None, 1));
    assert_eq!(group.state, GroupState::Stable);
}

/// KIP-345: a static member away during a rebalance (restarting, with a
/// session long enough to cover it) stays in the new generation, and the
/// others are held in JoinGroup only for the rebalance timeout, as in
/// Kafka. Sluice waited for the longest session timeout instead and then
/// dropped the static member, which rebalanced the group again when it
/// came back.
#[test]
fn a_static_member_away_during_a_rebalance_keeps_its_place_and_holds_no_one_up() {
    let start = Instant::now();
    let session_ms = 60_000;
    let (mut group, leader, away, away_instance) = stable_static_group(start, session_ms);
    let leader_instance = group.members[&leader].instance_id.clone().unwrap();
    // One static member goes away (restarting); a new member joins, and
    // the leader rejoins.
    let rebalance_at = start + DELAY + Duration::from_secs(1);
    let (_new, mut new_join) = join_new(&mut group, &["range"], rebalance_at);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    let mut leader_join = waiting(group.join(
        static_request(&leader, &leader_instance, session_ms),
        &config(),
        rebalance_at,
        2,
    ));
    let timed_out = rebalance_at + Duration::from_millis(30_000);
    group.tick(&config(), timed_out - Duration::from_millis(100), 2);
    assert!(ready(&mut new_join).is_none());
    group.tick(&config(), timed_out, 2);
    let new_result = ready(&mut new_join).expect("the join ends at the rebalance timeout");
    let leader_result = ready(&mut leader_join).unwrap();
    assert_eq!((new_result.generation, leader_result.generation), (2, 2));
    assert_eq!(leader_result.leader, leader);
    assert_eq!(group.state, GroupState::CompletingRebalance);
    // The static member away is in the generation the leader assigns.
    assert!(group.members.contains_key(&away));
    assert_eq!(group.static_members.get(away_instance), Some(&away));
    assert!(
        leader_result
            .members
            .iter()
            .any(|member| member.member_id == away),
        "the leader was not told of the static member away"
    );
    assert_eq!(leader_result.members.len(), 3);
}

#[test]
fn a_static_member_rejoining_a_stable_group_causes_no_rebalance() {
    let start = Instant::now();
    let (mut group, leader, follower_id, follower_instance) =
        stable_static_group(start, SESSION_MS);

    // The follower restarts: a new member id, same instance id.
    let rejoin = replaced_durably(
        &mut group,
        request("", Some(follower_instance), &["range"]),
        start + DELAY,
    );
    assert_eq!(rejoin.error, None);
    assert_eq!(rejoin.generation, 1, "no new generation");
    assert_ne!(rejoin.member_id, follower_id);
    assert_eq!(group.state, GroupState::Stable);
    // Its assignment is kept; the old member id is fenced.
    let sync = group
        .sync(
            1,
            &rejoin.member_id,
            Some(follower_instance),
            Vec::new(),
            start + DELAY,
        )
        .err()
        .unwrap();
    assert_eq!(sync.error, None);
    assert!(!sync.assignment.is_empty());
    assert_eq!(
        group.heartbeat(1, &follower_id, Some(follower_instance), start + DELAY),
        Some(ResponseError::FencedInstanceId)
    );
    assert_eq!(group.heartbeat(1, &leader, None, start + DELAY), None);
}

#[test]
fn incompatible_protocols_and_bad_timeouts_are_refused() {
    let start = Instant::now();
    let (mut group, _) = stable_group(1, start);
    let mut other = request("", None, &["sticky"]);
    other.require_known_member_id = false;
    let result = now_result(group.join(other, &config(), start, 0));
    assert_eq!(result.error, Some(ResponseError::InconsistentGroupProtocol));
    let mut short = request("", None, &["range"]);
    short.session_timeout_ms = 100;
    let result = now_result(group.join(short, &config(), start, 0));
    assert_eq!(result.error, Some(ResponseError::InvalidSessionTimeout));
    let mut unknown = request("who", None, &["range"]);
    unknown.require_known_member_id = false;
    let result = now_result(group.join(unknown, &config(), start, 0));
    assert_eq!(result.error, Some(ResponseError::UnknownMemberId));
}

#[test]
fn commits_follow_kafkas_rules() {
    let start = Instant::now();
    // A standalone consumer commits to an empty group with generation -1.
    let mut solo = Group::new("solo", 0, 0);
    assert_eq!(solo.check_commit(-1, "", None, start), Ok(()));

    let (mut group, ids) = stable_group(2, start);
    assert_eq!(group.check_commit(1, &ids[0], None, start), Ok(()));
    assert_eq!(
        group.check_commit(0, &ids[0], None, start),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        group.check_commit(1, "stranger", None, start),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        group.check_commit(-1, "", None, start),
        Err(ResponseError::UnknownMemberId),
        "generation -1 is only for groups without members"
    );
    // While preparing a rebalance members may still commit (before revoking).
    let (_newcomer, _receiver) = join_new(&mut group, &["range"], start);
    assert_eq!(group.state, GroupState::PreparingRebalance);
    assert_eq!(group.check_commit(1, &ids[0], None, start), Ok(()));
}

/// Two members closing at once, in the order the three-process interop
/// scenario produced (group_three_processes.py): B commits and leaves; A
/// stays a member while the group prepares the rebalance (its heartbeats
/// keep its session and say a rebalance is on) and may still commit; then
/// A leaves too. Kafka's GroupCoordinator answers every step alike. The
/// one commit that fails is the one sent after A's own LeaveGroup:
/// librdkafka resets its member id to "" when it leaves, and a commit with
/// an unknown member id and a generation >= 0 is UNKNOWN_MEMBER_ID in
/// Kafka too (generation -1 is only for consumers outside the group).
#[test]
fn two_members_closing_at_once_may_commit_until_each_has_left() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(2, start);
    let (a, b) = (&ids[0], &ids[1]);
    let now = start + DELAY;
    assert_eq!(group.check_commit(1, b, None, now), Ok(()));
    assert_eq!(group.leave(b, None, &config(), now, 2), None);
    assert_eq!(group.state, GroupState::PreparingRebalance);

    let later = now + Duration::from_millis(SESSION_MS as u64 / 2);
    assert_eq!(
        group.heartbeat(1, a, None, later),
        Some(ResponseError::RebalanceInProgress)
    );
    assert_eq!(group.check_commit(1, a, None, later), Ok(()));
    assert_eq!(
        group.check_commit(1, b, None, later),
        Err(ResponseError::UnknownMemberId),
        "the member that left"
    );
    // One session after the leave: A's heartbeat kept it in the group.
    let after_session = now + Duration::from_millis(SESSION_MS as u64 + 1);
    group.tick(&config(), after_session, 3);
    assert!(group.members.contains_key(a));
    assert_eq!(group.state, GroupState::PreparingRebalance);

    assert_eq!(group.leave(a, None, &config(), after_session, 3), None);
    assert_eq!(group.state, GroupState::Empty);
    assert_eq!(group.generation, 2);
    for member_id in ["", a.as_str()] {
        assert_eq!(
            group.check_commit(1, member_id, None, after_session),
            Err(ResponseError::UnknownMemberId),
            "a commit after the member's own LeaveGroup (member id {member_id:?})"
        );
    }
    assert_eq!(
        group.check_commit(-1, "", None, after_session),
        Ok(()),
        "an empty group takes commits from consumers outside it"
    );
}

/// The other order of the same close: A sees the rebalance first, commits,
/// rejoins and becomes the only member of the next generation before it
/// closes. Kafka (`ClassicGroup.validateOffsetCommit`): ILLEGAL_GENERATION
/// for the old generation, REBALANCE_IN_PROGRESS for the current one while
/// the assignment is handed out.
#[test]
fn the_member_left_behind_commits_rejoins_and_commits_in_the_next_generation() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(2, start);
    let (a, b) = (&ids[0], &ids[1]);
    let now = start + DELAY;
    assert_eq!(group.leave(b, None, &config(), now, 2), None);
    assert_eq!(group.check_commit(1, a, None, now), Ok(()));

    let mut joined = waiting(group.join(request(a, None, &["range"]), &config(), now, 3));
    let result = ready(&mut joined).expect("the only member rejoined: answered at once");
    assert_eq!(result.error, None);
    assert_eq!(result.generation, 2);
    assert_eq!(result.leader, *a);
    assert_eq!(group.state, GroupState::CompletingRebalance);
    assert_eq!(
        group.check_commit(1, a, None, now),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        group.check_commit(2, a, None, now),
        Err(ResponseError::RebalanceInProgress)
    );

    let assignment = vec![(a.clone(), Bytes::from("everything"))];
    let (mut synced, completed) = group.sync(2, a, None, assignment, now).unwrap();
    assert!(completed);
    group.finish_sync(2, None, &config(), now, 3);
    assert_eq!(
        ready(&mut synced).unwrap().assignment,
        Bytes::from("everything")
    );
    assert_eq!(group.check_commit(2, a, None, now), Ok(()));
    assert_eq!(
        group.check_commit(1, a, None, now),
        Err(ResponseError::IllegalGeneration)
    );

    assert_eq!(group.leave(a, None, &config(), now, 4), None);
    assert_eq!(group.state, GroupState::Empty);
    assert_eq!(
        group.check_commit(2, "", None, now),
        Err(ResponseError::UnknownMemberId)
    );
}

/// A rebalance drops B (it did not rejoin) and hands out generation 2's
/// assignment. Kafka checks the member and generation before the state:
/// B's commit is UNKNOWN_MEMBER_ID and A's of generation 1
/// ILLEGAL_GENERATION (so the consumers reset instead of retrying), only
/// a current member's is REBALANCE_IN_PROGRESS. A TxnOffsetCommit is never
/// refused for the state: the Java producer treats REBALANCE_IN_PROGRESS
/// as fatal.
#[test]
fn commits_during_completing_rebalance_check_the_member_and_generation_first() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(2, start);
    let (a, b) = (&ids[0], &ids[1]);
    let now = start + DELAY;
    let (c, mut joined_c) = join_new(&mut group, &["range"], now);
    let mut joined_a = waiting(group.join(request(a, None, &["range"]), &config(), now, 2));
    assert_eq!(group.state, GroupState::PreparingRebalance);
    group.tick(&config(), now + Duration::from_secs(30), 3);
    assert_eq!(group.state, GroupState::CompletingRebalance);
    assert_eq!(group.generation, 2);
    assert!(!group.members.contains_key(b), "B did not rejoin");
    assert_eq!(ready(&mut joined_a).unwrap().generation, 2);
    assert_eq!(ready(&mut joined_c).unwrap().generation, 2);

    let later = now + Duration::from_secs(30);
    assert_eq!(
        group.check_commit(1, b, None, later),
        Err(ResponseError::UnknownMemberId),
        "the member the rebalance dropped"
    );
    assert_eq!(
        group.check_commit(1, a, None, later),
        Err(ResponseError::IllegalGeneration),
        "a member of the previous generation"
    );
    assert_eq!(
        group.check_commit(2, &c, None, later),
        Err(ResponseError::RebalanceInProgress),
        "a current member before the assignment"
    );
    assert_eq!(
        group.check_commit(-1, "", None, later),
        Err(ResponseError::UnknownMemberId),
        "outside the group, to a group with members"
    );

    assert_eq!(
        group.check_txn_commit(1, b, None),
        Err(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        group.check_txn_commit(1, a, None),
        Err(ResponseError::IllegalGeneration)
    );
    assert_eq!(group.check_txn_commit(2, &c, None), Ok(()));
    assert_eq!(
        group.check_txn_commit(-1, "", None),
        Ok(()),
        "a producer outside the group (no member id) commits to any group"
    );
    assert_eq!(
        group.check_txn_commit(-1, b, None),
        Err(ResponseError::UnknownMemberId),
        "a member id is checked whatever the generation"
    );
}

#[test]
fn restore_brings_back_members_and_generation() {
    let start = Instant::now();
    let (group, ids) = stable_group(2, start);
    let value = group.to_value();
    let mut restored = Group::new("g", 0, 0);
    restored.restore(value, start);
    assert_eq!(restored.state, GroupState::Stable);
    assert_eq!(restored.generation, 1);
    assert_eq!(restored.leader, group.leader);
    for id in &ids {
        assert_eq!(
            restored.members[id].assignment,
            group.members[id].assignment
        );
    }
    // Restored members that never heartbeat expire after their session.
    restored.tick(
        &config(),
        start + Duration::from_millis(SESSION_MS as u64 + 1),
        9,
    );
    assert!(restored.members.is_empty());
}

/// The leader's assignment is answered, and the group Stable, only once
/// its record is durable (`finish_sync`), as in Kafka: a follower syncing
/// meanwhile waits. A failed write answers everyone with its error and
/// rebalances; no member holds an assignment of a generation the write
/// lost.
#[test]
fn members_get_the_assignment_only_once_it_is_durable() {
    for write_fails in [false, true] {
        let start = Instant::now();
        let mut group = Group::new("g", 0, 0);
        let (a, mut join_a) = join_new(&mut group, &["range"], start);
        let (b, mut join_b) = join_new(&mut group, &["range"], start);
        group.tick(&config(), start + DELAY, 1);
        let leader = ready(&mut join_a).unwrap().leader;
        ready(&mut join_b).unwrap();
        let follower = if leader == a { b.clone() } else { a.clone() };
        let (_first, completed) = group
            .sync(
                1,
                &leader,
                None,
                vec![
                    (leader.clone(), Bytes::from_static(b"L")),
                    (follower.clone(), Bytes::from_static(b"F")),
                ],
                start + DELAY,
            )
            .unwrap();
        assert!(completed);
        assert_eq!(group.state, GroupState::CompletingRebalance);
        // The follower, while the record is written: it waits.
        let (mut follower_sync, completed) = group
            .sync(1, &follower, None, Vec::new(), start + DELAY)
            .unwrap();
        assert!(!completed);
        assert!(ready(&mut follower_sync).is_none());
        // The leader sending it again (its first request given up) starts
        // no second write and is answered with the first's outcome.
        let (mut leader_sync, completed) = group
            .sync(1, &leader, None, Vec::new(), start + DELAY)
            .unwrap();
        assert!(!completed);
        let error = write_fails.then_some(ResponseError::NotCoordinator);
        group.finish_sync(1, error, &config(), start + DELAY, 2);
        let (leader_answer, follower_answer) = (
            ready(&mut leader_sync).unwrap(),
            ready(&mut follower_sync).unwrap(),
        );
        if write_fails {
            assert_eq!(leader_answer.error, error);
            assert_eq!(follower_answer.error, error);
            assert_eq!(group.state, GroupState::PreparingRebalance);
        } else {
            assert_eq!(leader_answer.assignment, Bytes::from_static(b"L"));
            assert_eq!(follower_answer.assignment, Bytes::from_static(b"F"));
            assert_eq!(group.state, GroupState::Stable);
        }
    }
}

/// A member that joined but sends no SyncGroup within the rebalance
/// timeout is removed (Kafka 3.x's pending sync members), however it
/// heartbeats: it would hold its partitions unassigned for good.
#[test]
fn a_member_that_never_syncs_is_removed_after_the_rebalance_timeout() {
    let start = Instant::now();
    let mut group = Group::new("g", 0, 0);
    let (a, mut join_a) = join_new(&mut group, &["range"], start);
    let (b, mut join_b) = join_new(&mut group, &["range"], start);
    group.tick(&config(), start + DELAY, 1);
    let leader = ready(&mut join_a).unwrap().leader;
    ready(&mut join_b).unwrap();
    let silent = if leader == a { b.clone() } else { a.clone() };
    let (_leader_sync, completed) = group
        .sync(1, &leader, None, Vec::new(), start + DELAY)
        .unwrap();
    assert!(completed);
    group.finish_sync(1, None, &config(), start + DELAY, 2);
    assert_eq!(group.state, GroupState::Stable);
    // Both heartbeat; only the leader synced.
    let later = start + DELAY + Duration::from_secs(20);
    assert_eq!(group.heartbeat(1, &leader, None, later), None);
    assert_eq!(group.heartbeat(1, &silent, None, later), None);
    group.tick(&config(), later, 3);
    assert_eq!(group.members.len(), 2, "within the rebalance timeout");
    let past = start + DELAY + Duration::from_millis(30_001);
    assert_eq!(group.heartbeat(1, &leader, None, past), None);
    assert_eq!(group.heartbeat(1, &silent, None, past), None);
    group.tick(&config(), past, 4);
    assert!(!group.members.contains_key(&silent), "removed");
    assert!(group.members.contains_key(&leader));
    assert_eq!(group.state, GroupState::PreparingRebalance);
}

/// A stored group record holding two static members under one member id
/// (an older version cut long member ids to one prefix) loads: the
/// instance left without its member is dropped, nothing aborts. It failed
/// the group's checks at every load of the partition.
#[test]
fn a_record_with_two_members_under_one_id_loads() {
    let start = Instant::now();
    let (group, _) = stable_group(2, start);
    let mut value = group.to_value();
    let shared = "a".repeat(32_767);
    for (member, instance) in value.members.iter_mut().zip(["i1", "i2"]) {
        member.member_id = shared.clone();
        member.instance_id = Some(instance.to_string());
    }
    value.leader = Some(shared.clone());
    let decoded = crate::group::records::GroupValue::decode(&value.encode()).unwrap();
    let mut restored = Group::new("g", 0, 0);
    restored.restore(decoded, start);
    assert_eq!(restored.members.len(), 1);
    assert_eq!(restored.state, GroupState::Stable);
    assert_eq!(restored.static_members.len(), 1);
    // Members and no leader: one of them leads.
    let mut leaderless = group.to_value();
    leaderless.leader = None;
    let mut restored = Group::new("g", 0, 0);
    restored.restore(leaderless, start);
    assert!(restored.leader.is_some());
}

/// A member id starts with at most 255 bytes of the client id (cut at a
/// character), and what the group record would have to cut is refused.
#[test]
fn long_client_ids_are_cut_and_long_stored_names_refused() {
    let start = Instant::now();
    let mut group = Group::new("g", 0, 0);
    let mut long = request("", None, &["range"]);
    long.client_id = "é".repeat(20_000);
    let first = now_result(group.join(long, &config(), start, 0));
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    assert!(
        first.member_id.len() <= 255 + 1 + 36,
        "{}",
        first.member_id.len()
    );
    assert!(first.member_id.starts_with('é'));
    for too_long in [
        request("", Some(&"i".repeat(32_768)), &["range"]),
        request("", None, &[&"p".repeat(32_768)]),
    ] {
        let refused = now_result(group.join(too_long, &config(), start, 0));
        assert_eq!(refused.error, Some(ResponseError::InvalidRequest));
    }
    let mut long_type = request("", None, &["range"]);
    long_type.protocol_type = "t".repeat(32_768);
    let refused = now_result(group.join(long_type, &config(), start, 0));
    assert_eq!(refused.error, Some(ResponseError::InvalidRequest));
}

/// KIP-345, as Kafka's updateStaticMemberAndRebalance: a restarted static
/// member's new member id is answered only once the group record mapping
/// its instance to it is durable, and a failed write undoes the
/// replacement (the old member id holds the instance again, with its
/// settings and assignment; the new one gets the error and no member id).
/// Sluice answered at once and kept the replacement whatever the write's
/// outcome: a coordinator failover in between loaded the old mapping, and
/// the member's next request was fenced (FENCED_INSTANCE_ID is fatal to a
/// Java consumer).
#[test]
fn a_restarted_static_member_is_answered_only_once_its_new_member_id_is_durable() {
    let start = Instant::now();
    let now = start + DELAY;
    let (mut group, leader, follower, instance) = stable_static_group(start, SESSION_MS);
    let assignment = group.members[&follower].assignment.clone();

    let (mut answer, restarted) =
        stored(group.join(request("", Some(instance), &["range"]), &config(), now, 2));
    assert!(
        ready(&mut answer).is_none(),
        "answered before the record was durable"
    );
    assert_eq!(
        group.heartbeat(1, &follower, Some(instance), now),
        Some(ResponseError::FencedInstanceId),
        "the old incarnation is fenced at once"
    );
    group.finish_static_replacement(&restarted, None, now);
    let result = ready(&mut answer).unwrap();
    assert_eq!(result.error, None);
    assert_eq!(
        (result.member_id.as_str(), result.generation),
        (restarted.as_str(), 1)
    );
    assert_eq!(group.state, GroupState::Stable);

    // It restarts again, with other protocols, and the write fails (the
    // coordinator lost its partition meanwhile).
    let later = now + Duration::from_secs(1);
    let mut again = request("", Some(instance), &["roundrobin", "range"]);
    again.session_timeout_ms = 2 * SESSION_MS;
    let (mut answer, lost) = stored(group.join(again, &config(), later, 3));
    assert!(ready(&mut answer).is_none());
    group.finish_static_replacement(&lost, Some(ResponseError::NotCoordinator), later);
    let result = ready(&mut answer).unwrap();
    assert_eq!(result.error, Some(ResponseError::NotCoordinator));
    assert_eq!(result.member_id, "", "the new member id is not handed out");
    assert_eq!(group.static_members.get(instance), Some(&restarted));
    assert!(!group.members.contains_key(&lost));
    let member = &group.members[&restarted];
    assert_eq!(member.protocols, request("", None, &["range"]).protocols);
    assert_eq!(member.session_timeout_ms, SESSION_MS);
    assert_eq!(member.assignment, assignment);
    group.check();
    assert_eq!(group.state, GroupState::Stable);
    assert_eq!(group.heartbeat(1, &restarted, Some(instance), later), None);
    let sync = group
        .sync(1, &restarted, Some(instance), Vec::new(), later)
        .err()
        .unwrap();
    assert_eq!((sync.error, sync.assignment), (None, assignment));
    assert_eq!(group.heartbeat(1, &leader, None, later), None);
}

/// KIP-814 and before it: a restarted static leader of a Stable group is
/// told it leads, with the members and skip_assignment, only with
/// JoinGroup v9+. Below v9 Kafka names the old leader id, so that the
/// leader computes no assignment (the Stable group would ignore it); Sluice
/// told it it led, with the members, and the version dropped
/// skip_assignment, so it ran its assignor for nothing.
#[test]
fn a_restarted_static_leader_is_told_it_leads_only_with_skip_assignment() {
    for supports_skip_assignment in [true, false] {
        let start = Instant::now();
        let now = start + DELAY;
        let (mut group, leader, _, _) = stable_static_group(start, SESSION_MS);
        let instance = group.members[&leader].instance_id.clone().unwrap();
        let mut rejoin = request("", Some(&instance), &["range"]);
        rejoin.supports_skip_assignment = supports_skip_assignment;
        let result = replaced_durably(&mut group, rejoin, now);
        let restarted = group.static_members[&instance].clone();
        assert_eq!(result.member_id, restarted);
        assert_eq!(
            group.leader.as_ref(),
            Some(&restarted),
            "it leads the group"
        );
        assert_eq!(group.state, GroupState::Stable);
        if supports_skip_assignment {
            assert_eq!(result.leader, restarted);
            assert!(result.skip_assignment);
            assert_eq!(result.members.len(), 2);
        } else {
            assert_eq!(result.leader, leader, "below v9: the old leader id");
            assert!(!result.skip_assignment);
            assert!(result.members.is_empty());
        }
    }
}

/// Kafka's hasAllMembersJoined: member ids handed out with
/// MEMBER_ID_REQUIRED count as members not rejoined yet, so consumers
/// starting together join one generation; one that never comes back holds
/// the join only until its id expires (its session timeout). Sluice
/// completed the join as soon as the known members had rejoined, and the
/// latecomers' join started another rebalance.
#[test]
fn a_join_waits_for_the_members_given_an_id_to_rejoin_with() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(1, start);
    let now = start + DELAY;
    // Two consumers start together: each is given an id to rejoin with.
    let first = now_result(group.join(request("", None, &["range"]), &config(), now, 2)).member_id;
    let second = now_result(group.join(request("", None, &["range"]), &config(), now, 2)).member_id;
    let mut first_join = waiting(group.join(request(&first, None, &["range"]), &config(), now, 2));
    let mut member_join =
        waiting(group.join(request(&ids[0], None, &["range"]), &config(), now, 2));
    assert!(
        ready(&mut first_join).is_none(),
        "the join completed without the second newcomer"
    );
    let mut second_join =
        waiting(group.join(request(&second, None, &["range"]), &config(), now, 2));
    for receiver in [&mut first_join, &mut member_join, &mut second_join] {
        assert_eq!(ready(receiver).unwrap().generation, 2);
    }
    assert_eq!(group.members.len(), 3);

    // A newcomer that never rejoins: the rebalance the leader starts ends
    // when its id expires, before the rebalance timeout.
    let (mut group, ids) = stable_group(1, start);
    now_result(group.join(request("", None, &["range"]), &config(), now, 2));
    let mut rejoin = waiting(group.join(request(&ids[0], None, &["range"]), &config(), now, 2));
    let session = Duration::from_millis(SESSION_MS as u64);
    group.tick(&config(), now + session - Duration::from_millis(1), 2);
    assert!(ready(&mut rejoin).is_none());
    group.tick(&config(), now + session, 2);
    let result = ready(&mut rejoin).expect("the pending id expired");
    assert_eq!((result.generation, group.members.len()), (2, 1));
}

/// Kafka's handleLeaveGroup removes a pending member id (given with
/// MEMBER_ID_REQUIRED) before it checks the instance id, and the join in
/// progress then stops waiting for it. Sluice checked the instance id
/// first: UNKNOWN_MEMBER_ID for an instance id nobody holds, and the id
/// stayed pending.
#[test]
fn a_pending_member_leaves_before_any_instance_id_check() {
    let start = Instant::now();
    let (mut group, ids) = stable_group(1, start);
    let now = start + DELAY;
    let pending =
        now_result(group.join(request("", None, &["range"]), &config(), now, 2)).member_id;
    let mut rejoin = waiting(group.join(request(&ids[0], None, &["range"]), &config(), now, 2));
    assert!(ready(&mut rejoin).is_none(), "waits for the pending id");
    assert_eq!(
        group.leave(&pending, Some("instance-nobody-holds"), &config(), now, 2),
        None
    );
    assert!(!group.pending_members.contains_key(&pending));
    assert_eq!(ready(&mut rejoin).unwrap().generation, 2);
}
