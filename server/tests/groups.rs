//! Consumer groups with real clients against a real `sluice` process:
//! confluent-kafka (librdkafka 2.16) consumer processes that rebalance,
//! get killed and resume; kafka-python manual and auto commits; kcat's
//! balanced consumer; committed offsets across broker restarts (clean and
//! kill -9); static membership; the AdminClient's group calls; offsets
//! expiry; and `sluice groups list|describe` against a live group. The
//! `wire_protocol` tests drive the rebalance protocol request by request
//! with the admin wire client (`sluice_server::admin::client`).
//!
//! Each scenario is a script in `server/tests/python/group_*.py` run by the
//! test venv's interpreter against its own broker. Brokers start with a
//! short join window (`--group-initial-rebalance-delay-ms`) so that tests do
//! not wait Kafka's default 3 s. A script that needs the broker restarted
//! prints `@@ broker stop|kill9|start` and waits for `ok` on its stdin (see
//! [`run_scenario`]). Without the venv or kcat the tests skip loudly; under
//! CI they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{
    Broker, assert_success, kcat, require_python, require_tool, run_with_input, run_with_timeout,
};

/// Whole-script limit: generous, a script's own waits are much shorter and
/// say what they waited for.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(170);
/// The join window of every test broker (Kafka's default is 3000 ms).
const JOIN_WINDOW_MS: &str = "500";
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Partitions of `__consumer_offsets` of every test broker. Each partition
/// preallocates its first segment (64 MiB of real disk): Kafka's 50 would
/// reserve 3.2 GB per broker, and a failing test keeps its data directory.
/// Five still spread the groups over both shards.
const OFFSETS_TOPIC_PARTITIONS: &str = "5";

fn broker_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec![
        "--group-initial-rebalance-delay-ms",
        JOIN_WINDOW_MS,
        "--offsets-topic-partitions",
        OFFSETS_TOPIC_PARTITIONS,
    ];
    args.extend_from_slice(extra);
    args
}

/// Run `server/tests/python/<script>.py BOOTSTRAP` against a fresh broker
/// started with `extra_args`, with `env` set. Lines `@@ broker stop`,
/// `@@ broker kill9` and `@@ broker start` on the script's stdout make this
/// harness do that to the broker, then answer `ok` on the script's stdin.
/// Passes when the script exits 0 and the broker still runs.
fn run_scenario(script: &str, extra_args: &[&'static str], env: &[(&str, &str)]) {
    let Some(python) = require_python() else {
        return;
    };
    let mut broker = Broker::start_with_args(script, &broker_args(extra_args));
    let path = support::repo_root()
        .join("server/tests/python")
        .join(format!("{script}.py"));
    let mut command = Command::new(&python);
    command
        .arg(&path)
        .arg(broker.bootstrap())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("SLUICE_BIN", env!("CARGO_BIN_EXE_sluice"))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("{script}: spawn failed: {error}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (lines_sender, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_sender.send(line).is_err() {
                break;
            }
        }
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let mut transcript = String::new();
    let status = loop {
        match lines.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                transcript.push_str(&line);
                transcript.push('\n');
                if let Some(command) = line.strip_prefix("@@ ") {
                    match command.trim() {
                        "broker stop" => broker.stop(),
                        "broker kill9" => broker.kill9(),
                        "broker start" => broker.start_again(),
                        other => panic!("{script}: unknown harness command {other:?}"),
                    }
                    stdin
                        .write_all(b"ok\n")
                        .and_then(|()| stdin.flush())
                        .unwrap_or_else(|error| panic!("{script}: answering {command}: {error}"));
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the script is exiting.
                if let Some(status) = child.try_wait().expect("waiting for the script") {
                    break status;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr_reader.join().unwrap_or_default();
            panic!(
                "{script}.py: no exit within {SCRIPT_TIMEOUT:?}\n--- stdout ---\n{transcript}\n\
                 --- stderr ---\n{}",
                without_librdkafka_logs(&stderr)
            );
        }
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    println!("--- {script}.py stdout ---\n{transcript}");
    println!("--- {script}.py stderr ---\n{stderr}");
    assert!(
        status.success(),
        "{script}.py failed with {status}:\n{}",
        without_librdkafka_logs(&stderr)
    );
    broker.assert_running();
}

/// librdkafka's own log lines start with `%`; failures are the rest.
fn without_librdkafka_logs(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.starts_with('%'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_consumer_processes_split_six_partitions_survive_a_kill_9_and_resume_from_commits() {
    run_scenario("group_three_processes", &[], &[]);
}

#[test]
fn a_member_that_closes_leaves_and_the_other_takes_over_at_once() {
    run_scenario("group_leave", &[], &[]);
}

#[test]
fn kafka_python_resumes_after_manual_and_auto_commits() {
    run_scenario("group_kafka_python_commits", &[], &[]);
}

#[test]
fn committed_offsets_survive_a_clean_broker_restart() {
    run_scenario("group_broker_restart", &[], &[("GROUP_RESTART", "stop")]);
}

#[test]
fn committed_offsets_survive_a_broker_kill_9() {
    run_scenario("group_broker_restart", &[], &[("GROUP_RESTART", "kill9")]);
}

#[test]
fn a_static_member_that_restarts_gets_its_partitions_back_without_a_rebalance() {
    run_scenario("group_static_membership", &[], &[]);
}

#[test]
fn sluice_groups_list_and_describe_show_the_live_group_offsets_and_lag() {
    run_scenario("group_cli", &[], &[]);
}

#[test]
fn admin_client_lists_describes_and_deletes_groups() {
    run_scenario("group_admin", &[], &[]);
}

#[test]
fn deleting_a_topic_deletes_the_groups_offsets_for_it() {
    run_scenario("group_deleted_topic", &[], &[]);
}

#[test]
fn committed_offsets_of_an_empty_group_expire_after_the_retention() {
    run_scenario(
        "group_offsets_expiry",
        &["--offsets-retention-ms", "2000"],
        &[],
    );
}

/// Produce `lines` to `topic` spread over its partitions (kcat -P, keyed
/// with `-K:` so that the partitioner spreads them).
fn kcat_produce(kcat_path: &Path, broker: &Broker, topic: &str, lines: &[String]) {
    let mut input = Vec::new();
    for line in lines {
        input.extend_from_slice(format!("{line}:{line}\n").as_bytes());
    }
    let mut produce = kcat(kcat_path, broker);
    produce.args(["-P", "-t", topic, "-K:"]).args([
        "-X",
        "acks=all",
        "-X",
        "message.timeout.ms=30000",
    ]);
    let output = run_with_input(produce, Some(input), KCAT_TIMEOUT, "kcat -P");
    assert_success(&output, "kcat -P", broker);
}

/// `kcat -G group topic -e ARGS`: the balanced consumer's lines.
fn kcat_group_consume(
    kcat_path: &Path,
    broker: &Broker,
    group: &str,
    topic: &str,
    args: &[&str],
) -> Vec<String> {
    let mut consume = kcat(kcat_path, broker);
    consume
        .args(["-G", group, topic, "-e", "-q"])
        .args(args)
        .args(["-f", "%s\\n"]);
    let output = run_with_timeout(consume, KCAT_TIMEOUT, "kcat -G -e");
    assert_success(&output, "kcat -G -e", broker);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn kcat_balanced_consumer_reads_a_topic_completely_then_resumes_after_its_commits() {
    let Some(kcat_path) = require_tool("kcat") else {
        return;
    };
    let broker = Broker::start_with_args("group_kcat", &broker_args(&[]));
    let topic = "kcat-group";
    support::kafka::create_topic(&broker.bootstrap(), topic, 3, &[]);
    let first: Vec<String> = (0..600).map(|index| format!("first-{index:04}")).collect();
    kcat_produce(&kcat_path, &broker, topic, &first);
    let consumed = kcat_group_consume(
        &kcat_path,
        &broker,
        "kcat-group",
        topic,
        &["-o", "beginning"],
    );
    let consumed_set: BTreeSet<&String> = consumed.iter().collect();
    let first_set: BTreeSet<&String> = first.iter().collect();
    assert_eq!(
        consumed_set,
        first_set,
        "kcat -G consumed {} lines ({} distinct); produced {}",
        consumed.len(),
        consumed_set.len(),
        first.len()
    );
    assert_eq!(consumed.len(), first.len(), "no line consumed twice");

    // The group committed its positions when kcat closed: a second run
    // (no -o: from the committed offsets; earliest only where none) reads
    // only what was produced since.
    let second: Vec<String> = (0..90).map(|index| format!("second-{index:04}")).collect();
    kcat_produce(&kcat_path, &broker, topic, &second);
    let consumed = kcat_group_consume(
        &kcat_path,
        &broker,
        "kcat-group",
        topic,
        &["-X", "auto.offset.reset=earliest"],
    );
    let mut consumed_sorted = consumed.clone();
    consumed_sorted.sort();
    assert_eq!(
        consumed_sorted, second,
        "the second kcat -G run resumes at the committed offsets"
    );
}

/// The classic rebalance protocol on the wire, through the admin wire
/// client (`sluice_server::admin::client`): JoinGroup v5 asks a new member
/// to rejoin with its assigned id (MEMBER_ID_REQUIRED), answers once the
/// join window closes with generation 1 and the member as leader; the
/// leader's SyncGroup assignment comes back; commits carry the generation
/// (a stale one is ILLEGAL_GENERATION); a second member's join makes the
/// first one's heartbeat answer REBALANCE_IN_PROGRESS, and both rejoin into
/// generation 2 with the leader seeing both subscriptions; LeaveGroup
/// empties the group. Also: standalone commits (generation -1) to new
/// groups are all fetched back.
mod wire_protocol {
    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{
        ConsumerProtocolSubscription, DescribeGroupsRequest, GroupId, HeartbeatRequest,
        JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, OffsetCommitRequest,
        OffsetFetchRequest, SyncGroupRequest, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use sluice_server::admin::client::Connection;
    use std::time::{Duration, Instant};

    use super::support::Broker;

    const GROUP: &str = "wire-group";
    const TOPIC: &str = "wire-topic";

    fn text(value: &str) -> StrBytes {
        StrBytes::from_string(value.to_string())
    }

    fn subscription() -> Bytes {
        let mut bytes = BytesMut::new();
        bytes.put_i16(0);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![text(TOPIC)])
            .encode(&mut bytes, 0)
            .expect("encoding a subscription");
        bytes.freeze()
    }

    fn join(connection: &mut Connection, member_id: &str) -> JoinGroupResponse {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(text(member_id))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(text("range"))
                    .with_metadata(subscription()),
            ]);
        connection.send(&request, 5).expect("JoinGroup v5")
    }

    /// Join as a new member: MEMBER_ID_REQUIRED, then the real join.
    fn join_new(connection: &mut Connection) -> JoinGroupResponse {
        let first = join(connection, "");
        assert_eq!(
            first.error_code,
            ResponseError::MemberIdRequired.code(),
            "a v4+ join without a member id is asked to rejoin with one"
        );
        assert!(
            !first.member_id.is_empty(),
            "MEMBER_ID_REQUIRED carries the new id"
        );
        let joined = join(connection, &first.member_id);
        assert_eq!(
            joined.error_code, 0,
            "JoinGroup with the assigned member id"
        );
        assert_eq!(joined.member_id, first.member_id);
        joined
    }

    fn sync(
        connection: &mut Connection,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Bytes {
        let request = SyncGroupRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_generation_id(generation)
            .with_member_id(text(member_id))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(member, assignment)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(text(&member))
                            .with_assignment(assignment)
                    })
                    .collect(),
            );
        let response = connection.send(&request, 3).expect("SyncGroup v3");
        assert_eq!(response.error_code, 0, "SyncGroup of {member_id}");
        response.assignment
    }

    fn heartbeat(connection: &mut Connection, generation: i32, member_id: &str) -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(text(GROUP)))
            .with_generation_id(generation)
            .with_member_id(text(member_id));
        connection
            .send(&request, 3)
            .expect("Heartbeat v3")
            .error_code
    }

    fn commit(connection: &mut Connection, generation: i32, member_id: &str, offset: i64) -> i16 {
        commit_as(connection, GROUP, generation, member_id, offset)
    }

    fn commit_as(
        connection: &mut Connection,
        group: &str,
        generation: i32,
        member_id: &str,
        offset: i64,
    ) -> i16 {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(member_id))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text(TOPIC)))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset),
                    ]),
            ]);
        let response = connection.send(&request, 7).expect("OffsetCommit v7");
        response.topics[0].partitions[0].error_code
    }

    fn state(connection: &mut Connection) -> String {
        let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(text(GROUP))]);
        let response = connection.send(&request, 5).expect("DescribeGroups v5");
        response.groups[0].group_state.to_string()
    }

    #[test]
    fn join_sync_heartbeat_commit_and_a_second_member_rebalance_on_the_wire() {
        let broker = Broker::start_with_args("group_wire", &super::broker_args(&[]));
        super::support::kafka::create_topic(&broker.bootstrap(), TOPIC, 2, &[]);
        let mut first = Connection::open(&broker.bootstrap()).expect("connecting");

        let joined = join_new(&mut first);
        let first_id = joined.member_id.to_string();
        assert_eq!(joined.generation_id, 1, "generation ids start at 1");
        assert_eq!(joined.leader, joined.member_id, "the only member leads");
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        assert_eq!(joined.members.len(), 1, "the leader sees every member");
        assert_eq!(joined.members[0].metadata, subscription());
        let assignment = Bytes::from_static(b"\0\0opaque assignment for the first member");
        let received = sync(
            &mut first,
            1,
            &first_id,
            vec![(first_id.clone(), assignment.clone())],
        );
        assert_eq!(
            received, assignment,
            "SyncGroup returns the leader's assignment"
        );
        assert_eq!(state(&mut first), "Stable");
        assert_eq!(heartbeat(&mut first, 1, &first_id), 0);
        assert_eq!(
            heartbeat(&mut first, 1, "no-such-member"),
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(
            commit(&mut first, 1, &first_id, 7),
            0,
            "a commit of generation 1"
        );
        assert_eq!(
            commit(&mut first, 0, &first_id, 8),
            ResponseError::IllegalGeneration.code(),
            "a commit of a stale generation"
        );

        // A second member joins (its JoinGroup waits for the rebalance).
        let bootstrap = broker.bootstrap();
        let second = std::thread::spawn(move || {
            let mut connection = Connection::open(&bootstrap).expect("connecting");
            let joined = join_new(&mut connection);
            (connection, joined)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let code = heartbeat(&mut first, 1, &first_id);
            if code == ResponseError::RebalanceInProgress.code() {
                break;
            }
            assert_eq!(code, 0, "heartbeat while the second member joins");
            assert!(
                Instant::now() < deadline,
                "the first member's heartbeat never answered REBALANCE_IN_PROGRESS"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let rejoined = join(&mut first, &first_id);
        assert_eq!(rejoined.error_code, 0, "the first member rejoins");
        assert_eq!(
            rejoined.generation_id, 2,
            "the rebalance makes generation 2"
        );
        assert_eq!(
            rejoined.leader, rejoined.member_id,
            "the first member still leads"
        );
        assert_eq!(rejoined.members.len(), 2, "the leader sees both members");
        let (mut second_connection, second_joined) = second.join().expect("second member thread");
        assert_eq!(second_joined.generation_id, 2);
        assert!(
            second_joined.members.is_empty(),
            "only the leader gets the members"
        );
        let second_id = second_joined.member_id.to_string();
        let for_second = Bytes::from_static(b"\0\0for the second member");
        let bootstrap = broker.bootstrap();
        let first_sync = std::thread::spawn({
            let first_id = first_id.clone();
            let second_id = second_id.clone();
            let for_second = for_second.clone();
            move || {
                let mut connection = Connection::open(&bootstrap).expect("connecting");
                sync(
                    &mut connection,
                    2,
                    &first_id,
                    vec![
                        (first_id.clone(), Bytes::from_static(b"\0\0first again")),
                        (second_id, for_second),
                    ],
                )
            }
        });
        let received = sync(&mut second_connection, 2, &second_id, Vec::new());
        assert_eq!(
            received, for_second,
            "the follower gets what the leader assigned it"
        );
        assert_eq!(
            first_sync.join().expect("leader sync thread"),
            Bytes::from_static(b"\0\0first again")
        );
        assert_eq!(
            commit(&mut first, 1, &first_id, 9),
            ResponseError::IllegalGeneration.code(),
            "generation 1 is stale after the rebalance"
        );
        assert_eq!(commit(&mut first, 2, &first_id, 9), 0);

        for (connection, member) in [
            (&mut first, &first_id),
            (&mut second_connection, &second_id),
        ] {
            let request = LeaveGroupRequest::default()
                .with_group_id(GroupId(text(GROUP)))
                .with_members(vec![MemberIdentity::default().with_member_id(text(member))]);
            let response = connection.send(&request, 3).expect("LeaveGroup v3");
            assert_eq!(response.error_code, 0, "LeaveGroup of {member}");
            assert_eq!(response.members[0].error_code, 0, "LeaveGroup of {member}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while state(&mut first) != "Empty" {
            assert!(
                Instant::now() < deadline,
                "the group did not become Empty after both left"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The committed offset of partition 0 of the topic (-1: none).
    fn fetch(connection: &mut Connection, group: &str) -> i64 {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(text(TOPIC)))
                    .with_partition_indexes(vec![0]),
            ]));
        let response = connection.send(&request, 7).expect("OffsetFetch v7");
        assert_eq!(response.error_code, 0, "OffsetFetch of {group}");
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, 0, "OffsetFetch of {group}");
        partition.committed_offset
    }

    /// A commit with generation -1 (a consumer that assigns its partitions
    /// itself) creates its group; OffsetFetch right after returns it. Many
    /// new groups, so that a race with the coordinator's timers (which
    /// forget empty groups without offsets) shows.
    #[test]
    fn a_standalone_commit_to_a_new_group_is_fetched_back() {
        const GROUP_COUNT: usize = 500;
        let broker = Broker::start_with_args("group_standalone", &super::broker_args(&[]));
        super::support::kafka::create_topic(&broker.bootstrap(), TOPIC, 1, &[]);
        let mut connection = Connection::open(&broker.bootstrap()).expect("connecting");
        let mut lost = Vec::new();
        for index in 0..GROUP_COUNT {
            let group = format!("standalone-{index}");
            let offset = i64::try_from(index).expect("small") + 1;
            assert_eq!(
                commit_as(&mut connection, &group, -1, "", offset),
                0,
                "standalone commit of {group}"
            );
            let fetched = fetch(&mut connection, &group);
            if fetched != offset {
                lost.push(format!("{group}: committed {offset}, fetched {fetched}"));
            }
        }
        assert!(
            lost.is_empty(),
            "{} of {GROUP_COUNT} acknowledged standalone commits were not fetched back: {lost:?}",
            lost.len()
        );
    }
}
