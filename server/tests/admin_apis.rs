//! The admin APIs tools expect (issue 15) against a real `sluice`
//! process, asked over the wire (librdkafka's describe_topics uses
//! Metadata, and no Python client has DescribeLogDirs):
//! DescribeTopicPartitions (API 75) as Kafka 3.8+ kafka-topics.sh asks
//! it, paged with a cursor; DescribeLogDirs (API 35) as
//! kafka-log-dirs.sh asks it; ElectLeaders (API 43) from confluent-kafka's
//! AdminClient.elect_leaders against a three-broker cluster
//! (server/tests/python/elect_leaders.py), and over the wire after the
//! last in-sync replica came back with a wiped disk;
//! AlterPartitionReassignments and
//! ListPartitionReassignments (APIs 45, 46) from kafka-python's protocol
//! classes (server/tests/python/reassign_kafka_python.py).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, DescribeLogDirsRequest,
    DescribeLogDirsResponse, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    ElectLeadersRequest, ElectLeadersResponse, RequestKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use support::cluster::{Cluster, wait_until};
use support::kafka::{
    Record, consume_partition, create_topic, create_topic_assigned, create_topic_replicated,
    produce_all, watermarks,
};
use support::wire::call;
use support::{Broker, require_python, run_with_timeout};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn advertised(stream: &mut TcpStream, api_key: ApiKey) -> Option<(i16, i16)> {
    let mut body = call(
        stream,
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    );
    let response = ApiVersionsResponse::decode(&mut body, 3).expect("an ApiVersions response");
    response
        .api_keys
        .iter()
        .find(|entry| entry.api_key == api_key as i16)
        .map(|entry| (entry.min_version, entry.max_version))
}

fn describe_topic_partitions(
    stream: &mut TcpStream,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsResponse {
    let request = DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|topic| TopicRequest::default().with_name(name(topic)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(topic, index)| {
            Cursor::default()
                .with_topic_name(name(topic))
                .with_partition_index(index)
        }));
    let mut body = call(
        stream,
        ApiKey::DescribeTopicPartitions,
        0,
        RequestKind::DescribeTopicPartitions(request),
    );
    DescribeTopicPartitionsResponse::decode(&mut body, 0)
        .expect("a DescribeTopicPartitions response")
}

#[test]
fn describe_topic_partitions_names_leaders_and_pages_with_a_cursor() {
    let broker = Broker::start("describe-topic-partitions");
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "dtp-a", 3, &[]);
    create_topic(&bootstrap, "dtp-b", 2, &[]);
    let mut stream = support::wire::connect(broker.address());
    assert_eq!(
        advertised(&mut stream, ApiKey::DescribeTopicPartitions),
        Some((0, 0))
    );

    let named = describe_topic_partitions(&mut stream, &["dtp-b", "missing", "dtp-a"], 2000, None);
    let summary: Vec<(String, i16, usize)> = named
        .topics
        .iter()
        .map(|topic| {
            (
                topic.name.as_ref().unwrap().0.to_string(),
                topic.error_code,
                topic.partitions.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("dtp-a".to_string(), 0, 3),
            ("dtp-b".to_string(), 0, 2),
            ("missing".to_string(), UNKNOWN_TOPIC_OR_PARTITION, 0),
        ]
    );
    assert!(named.next_cursor.is_none());
    let topic = &named.topics[0];
    assert!(!topic.topic_id.is_nil());
    assert!(!topic.is_internal);
    for (index, partition) in topic.partitions.iter().enumerate() {
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.partition_index, index as i32);
        assert_eq!(partition.leader_id, BrokerId(0));
        assert!(partition.leader_epoch >= 0);
        assert_eq!(partition.replica_nodes, vec![BrokerId(0)]);
        assert_eq!(partition.isr_nodes, vec![BrokerId(0)]);
        assert_eq!(partition.eligible_leader_replicas, Some(vec![]));
        assert_eq!(partition.last_known_elr, Some(vec![]));
        assert!(partition.offline_replicas.is_empty());
    }

    // Every topic, two partitions at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<(String, i32)> = None;
    for _ in 0..10 {
        let page = describe_topic_partitions(
            &mut stream,
            &[],
            2,
            cursor
                .as_ref()
                .map(|(topic, index)| (topic.as_str(), *index)),
        );
        for topic in &page.topics {
            for partition in &topic.partitions {
                seen.push((
                    topic.name.as_ref().unwrap().0.to_string(),
                    partition.partition_index,
                ));
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some((next.topic_name.0.to_string(), next.partition_index)),
            None => break,
        }
    }
    let expected: Vec<(String, i32)> = [
        ("dtp-a", 0),
        ("dtp-a", 1),
        ("dtp-a", 2),
        ("dtp-b", 0),
        ("dtp-b", 1),
    ]
    .iter()
    .map(|(topic, index)| (topic.to_string(), *index))
    .collect();
    assert_eq!(
        seen.iter()
            .filter(|(topic, _)| topic.starts_with("dtp-"))
            .cloned()
            .collect::<Vec<_>>(),
        expected
    );
}

fn describe_log_dirs(
    stream: &mut TcpStream,
    version: i16,
    topics: Option<Vec<(&str, Vec<i32>)>>,
) -> DescribeLogDirsResponse {
    let request = DescribeLogDirsRequest::default().with_topics(topics.map(|topics| {
        topics
            .into_iter()
            .map(|(topic, partitions)| {
                DescribableLogDirTopic::default()
                    .with_topic(name(topic))
                    .with_partitions(partitions)
            })
            .collect()
    }));
    let mut body = call(
        stream,
        ApiKey::DescribeLogDirs,
        version,
        RequestKind::DescribeLogDirs(request),
    );
    DescribeLogDirsResponse::decode(&mut body, version).expect("a DescribeLogDirs response")
}

/// (topic, partition, size) of every partition in the only log dir.
fn sizes(response: &DescribeLogDirsResponse) -> Vec<(String, i32, i64)> {
    assert_eq!(response.error_code, 0);
    assert_eq!(response.results.len(), 1, "one log dir");
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    let mut sizes = Vec::new();
    for topic in &result.topics {
        for partition in &topic.partitions {
            assert_eq!(partition.offset_lag, 0);
            assert!(!partition.is_future_key);
            sizes.push((
                topic.name.0.to_string(),
                partition.partition_index,
                partition.partition_size,
            ));
        }
    }
    sizes
}

#[test]
fn describe_log_dirs_gives_partition_sizes_and_filesystem_bytes() {
    let broker = Broker::start("describe-log-dirs");
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "dld-a", 2, &[]);
    create_topic(&bootstrap, "dld-b", 1, &[]);
    let records: Vec<Record> = (0..20)
        .map(|index| Record {
            key: None,
            value: Some(vec![b'x'; 100 + index]),
            headers: Vec::new(),
        })
        .collect();
    produce_all(&bootstrap, "dld-a", Some(1), &records, &[]);
    let mut stream = support::wire::connect(broker.address());
    assert_eq!(
        advertised(&mut stream, ApiKey::DescribeLogDirs),
        Some((1, 4))
    );

    let all = describe_log_dirs(&mut stream, 4, None);
    let result = &all.results[0];
    let data_dir = std::path::absolute(broker.data_dir()).unwrap();
    assert_eq!(result.log_dir.as_str(), data_dir.display().to_string());
    assert!(result.total_bytes > 0, "total bytes {}", result.total_bytes);
    assert!(result.usable_bytes > 0 && result.usable_bytes <= result.total_bytes);
    let described = sizes(&all);
    let of = |topic: &str, partition: i32| {
        described
            .iter()
            .find(|(t, p, _)| t == topic && *p == partition)
            .map(|(_, _, size)| *size)
    };
    assert!(of("dld-a", 1).unwrap() > 20 * 100, "{described:?}");
    assert!(of("dld-a", 0).is_some());
    assert!(of("dld-b", 0).is_some());

    // A topic filter: only the named partitions (and not an unknown one).
    let filtered = describe_log_dirs(
        &mut stream,
        1,
        Some(vec![("dld-a", vec![1, 7]), ("missing", vec![0])]),
    );
    assert_eq!(
        sizes(&filtered)
            .into_iter()
            .map(|(topic, partition, _)| (topic, partition))
            .collect::<Vec<_>>(),
        vec![("dld-a".to_string(), 1)]
    );
}

#[test]
fn without_acls_the_admin_apis_are_refused_as_kafka_refuses_them() {
    let broker = Broker::start_with_args(
        "admin-apis-acls",
        &["--authorizer", "standard", "--super-users", "User:admin"],
    );
    // PLAINTEXT: the principal is User:ANONYMOUS, with no ACLs.
    let mut stream = support::wire::connect(broker.address());
    let log_dirs = describe_log_dirs(&mut stream, 4, None);
    assert_eq!(log_dirs.error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert!(log_dirs.results.is_empty());

    let named = describe_topic_partitions(&mut stream, &["secret"], 2000, None);
    assert_eq!(named.topics.len(), 1);
    assert_eq!(named.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    let all = describe_topic_partitions(&mut stream, &[], 2000, None);
    assert!(all.topics.is_empty());

    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(name("secret"))
                .with_partitions(vec![0, 1]),
        ]));
    let mut body = call(
        &mut stream,
        ApiKey::ElectLeaders,
        2,
        RequestKind::ElectLeaders(request),
    );
    let elect = ElectLeadersResponse::decode(&mut body, 2).expect("an ElectLeaders response");
    assert_eq!(elect.error_code, CLUSTER_AUTHORIZATION_FAILED);
    let partitions = &elect.replica_election_results[0].partition_result;
    assert_eq!(
        partitions
            .iter()
            .map(|partition| (partition.partition_id, partition.error_code))
            .collect::<Vec<_>>(),
        vec![
            (0, CLUSTER_AUTHORIZATION_FAILED),
            (1, CLUSTER_AUTHORIZATION_FAILED)
        ]
    );
}

#[test]
fn elect_leaders_moves_leadership_back_to_the_preferred_replica() {
    const TOPIC: &str = "elect";
    let Some(python) = require_python() else {
        return;
    };
    // No periodic rebalance: only ElectLeaders moves the leadership back.
    let mut cluster = Cluster::start(
        "elect-leaders",
        3,
        &[
            "--broker-heartbeat-interval-ms",
            "500",
            "--leader-imbalance-check-interval-ms",
            "0",
        ],
    );
    create_topic_replicated(&cluster.bootstrap(), TOPIC, 1, 3, &[]);
    let states = cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    let preferred = states[&0].replicas[0];
    assert_eq!(states[&0].leader, preferred);
    let other = cluster.nodes().find(|node| *node != preferred).unwrap();

    // Stop the preferred replica: another takes over and keeps leading
    // once it is back in the ISR.
    cluster.stop(preferred);
    wait_until("another leader", Duration::from_secs(60), || match cluster
        .partition_leader(other, TOPIC, 0)
    {
        Some(Ok(leader)) if leader != preferred => Ok(()),
        state => Err(format!("{state:?}")),
    });
    cluster.start_again(preferred);
    let states = cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    assert_ne!(states[&0].leader, preferred, "{states:?}");

    let script = support::repo_root().join("server/tests/python/elect_leaders.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg(cluster.broker(other).bootstrap())
        .arg(TOPIC)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = run_with_timeout(command, Duration::from_secs(120), "elect_leaders.py");
    assert!(
        output.status.success(),
        "elect_leaders.py failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.stderr_tails()
    );
    for node in cluster.nodes() {
        wait_until(
            "the preferred leader everywhere",
            Duration::from_secs(30),
            || match cluster.partition_leader(node, TOPIC, 0) {
                Some(Ok(leader)) if leader == preferred => Ok(()),
                state => Err(format!("node {node}: {state:?}")),
            },
        );
    }
}

/// Three brokers with short timeouts and `topic` on two of them:
/// Broker flags for tests that fence and fail over within seconds.
const FAST_FAILOVER: &[&str] = &[
    "--broker-heartbeat-interval-ms",
    "500",
    "--broker-session-timeout-ms",
    "3000",
    "--replica-lag-time-max-ms",
    "1500",
    "--leader-imbalance-check-interval-ms",
    "0",
];

/// (cluster, leader, follower, the broker without a replica).
fn two_replicas(name: &str, topic: &str) -> (Cluster, i32, i32, i32) {
    let mut cluster = Cluster::start(name, 3, FAST_FAILOVER);
    create_topic_replicated(&cluster.bootstrap(), topic, 1, 2, &[]);
    let states = cluster.wait_for_full_isr(topic, 1, Duration::from_secs(60));
    let leader = states[&0].leader;
    let follower = *states[&0]
        .replicas
        .iter()
        .find(|node| **node != leader)
        .unwrap();
    let bystander = cluster
        .nodes()
        .find(|node| *node != leader && *node != follower)
        .unwrap();
    (cluster, leader, follower, bystander)
}

/// Kill the follower, write one record acknowledged by the leader alone
/// once the ISR shrank to it.
fn write_on_the_leader_alone(cluster: &mut Cluster, topic: &str, nodes: (i32, i32, i32)) {
    let (leader, follower, bystander) = nodes;
    cluster.kill9(follower);
    let record = Record {
        key: None,
        value: Some(b"only on the leader".to_vec()),
        headers: Vec::new(),
    };
    produce_all(
        &cluster.broker(bystander).bootstrap(),
        topic,
        Some(0),
        &[record],
        &[("acks", "all")],
    );
    wait_until(
        "the ISR is the leader alone",
        Duration::from_secs(30),
        || match cluster.isr(bystander, topic, 0) {
            Some(isr) if isr == vec![leader] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// ElectLeaders UNCLEAN on `node` for partition 0 of `topic`: the
/// partition's error code.
fn elect_unclean(cluster: &Cluster, node: i32, topic: &str) -> i16 {
    let mut stream = support::wire::connect(cluster.broker(node).address());
    let request = ElectLeadersRequest::default()
        .with_election_type(1)
        .with_timeout_ms(30_000)
        .with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(name(topic))
                .with_partitions(vec![0]),
        ]));
    let mut body = call(
        &mut stream,
        ApiKey::ElectLeaders,
        2,
        RequestKind::ElectLeaders(request),
    );
    let elect = ElectLeadersResponse::decode(&mut body, 2).expect("an ElectLeaders response");
    assert_eq!(elect.error_code, 0);
    elect.replica_election_results[0].partition_result[0].error_code
}

#[test]
fn an_unclean_election_gives_a_leaderless_partition_its_out_of_sync_replica() {
    const TOPIC: &str = "unclean";
    const ELECTION_NOT_NEEDED: i16 = 84;
    let (mut cluster, leader, follower, bystander) = two_replicas("elect-unclean", TOPIC);
    assert_eq!(
        elect_unclean(&cluster, bystander, TOPIC),
        ELECTION_NOT_NEEDED
    );

    // The follower dies; a write is acknowledged by the leader alone once
    // the ISR shrank; then the leader dies too: no ISR member is left.
    write_on_the_leader_alone(&mut cluster, TOPIC, (leader, follower, bystander));
    cluster.kill9(leader);
    cluster.start_again(follower);
    wait_until(
        "the partition is leaderless",
        Duration::from_secs(30),
        || match cluster.partition_leader(bystander, TOPIC, 0) {
            Some(Err(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // unclean.leader.election.enable is false: the out-of-sync follower,
    // back and live, is not elected by itself.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        matches!(cluster.partition_leader(bystander, TOPIC, 0), Some(Err(_))),
        "elected without being asked"
    );
    // The operator asks for an unclean election: the follower leads.
    assert_eq!(elect_unclean(&cluster, bystander, TOPIC), 0);
    wait_until(
        "the follower leads",
        Duration::from_secs(30),
        || match cluster.partition_leader(bystander, TOPIC, 0) {
            Some(Ok(now)) if now == follower => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(cluster.isr(bystander, TOPIC, 0), Some(vec![follower]));
}

/// After an unclean election, the deposed leader that was paused (not
/// restarted: it keeps the high watermark it gave) follows the new leader,
/// which does not hold the record that high watermark covers. As Kafka's
/// follower it cuts below that high watermark and rejoins the ISR; it
/// refused such a cut for as long as it ran and stayed out of the ISR
/// (found by a read-only audit). The record is lost with the unclean
/// election, as in Kafka.
#[test]
fn after_an_unclean_election_the_paused_old_leader_rejoins() {
    const TOPIC: &str = "unclean-rejoin";
    let (mut cluster, leader, follower, bystander) = two_replicas("elect-unclean-rejoin", TOPIC);
    write_on_the_leader_alone(&mut cluster, TOPIC, (leader, follower, bystander));
    // Its high watermark covers the record. Paused, it is fenced.
    let paused = libc::pid_t::try_from(cluster.broker(leader).pid()).unwrap();
    // SAFETY: a signal to the broker process this test started.
    assert_eq!(unsafe { libc::kill(paused, libc::SIGSTOP) }, 0);
    cluster.start_again(follower);
    wait_until(
        "the partition is leaderless",
        Duration::from_secs(30),
        || match cluster.partition_leader(bystander, TOPIC, 0) {
            Some(Err(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(elect_unclean(&cluster, bystander, TOPIC), 0);
    wait_until(
        "the follower leads",
        Duration::from_secs(30),
        || match cluster.partition_leader(bystander, TOPIC, 0) {
            Some(Ok(now)) if now == follower => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(paused, libc::SIGCONT) }, 0);
    let states = cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    assert_eq!(states[&0].leader, follower);
    assert_eq!(
        watermarks(&cluster.broker(follower).bootstrap(), TOPIC, 0),
        (0, 0),
        "the record went with the unclean election"
    );
}

/// The last ISR member comes back with a wiped disk (docs/internals/
/// replication.md, point 4): it registers with a new directory id, so the
/// controller takes it out of the ISR instead of letting it lead again
/// with an empty log, to which the other replicas would have truncated.
/// Four brokers, node 1 the only controller voter (so that the others can
/// stop and be wiped without touching the quorum); the topic lives on
/// nodes 2 (preferred leader), 3 and 4.
#[test]
fn the_last_isr_member_back_with_a_wiped_disk_leads_nothing_and_the_followers_keep_their_records() {
    const TOPIC: &str = "wiped";
    const BEFORE: usize = 20;
    let (leader, followers) = (2, [3, 4]);
    let mut cluster = Cluster::start_with_voters("wiped-disk", 4, 1, FAST_FAILOVER);
    create_topic_assigned(&cluster.bootstrap(), TOPIC, &[&[2, 3, 4]]);
    let states = cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    assert_eq!(states[&0].leader, leader);
    let record = |value: String| Record {
        key: None,
        value: Some(value.into_bytes()),
        headers: Vec::new(),
    };
    // On all three replicas.
    let before: Vec<Record> = (0..BEFORE)
        .map(|index| record(format!("before-{index}")))
        .collect();
    produce_all(
        &cluster.broker(1).bootstrap(),
        TOPIC,
        Some(0),
        &before,
        &[("acks", "all")],
    );

    // The followers stop; acks=all goes on with the leader alone
    // (min.insync.replicas 1).
    for follower in followers {
        cluster.stop(follower);
    }
    wait_until(
        "the ISR is the leader alone",
        Duration::from_secs(30),
        || match cluster.isr(1, TOPIC, 0) {
            Some(isr) if isr == vec![leader] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    produce_all(
        &cluster.broker(1).bootstrap(),
        TOPIC,
        Some(0),
        &[record("on the leader alone".into())],
        &[("acks", "all")],
    );

    // The leader dies and comes back on an empty disk.
    cluster.kill9(leader);
    let data_dir = cluster.data_dir(leader).to_path_buf();
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    cluster.start_again(leader);
    wait_until(
        "the partition has neither ISR nor leader",
        Duration::from_secs(30),
        || match cluster.partition_state(1, TOPIC, 0) {
            Some(state) if state.leader < 0 && state.isr.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let controller_log = cluster.broker(1).stderr_all();
    assert!(
        controller_log.contains("registers with data directory")
            && controller_log.contains("wiped-0"),
        "no warning naming the broker's new directory and the partition:\n{controller_log}"
    );

    // The followers return: no clean election gives the partition a
    // leader, the wiped broker least of all.
    for follower in followers {
        cluster.start_again(follower);
    }
    std::thread::sleep(Duration::from_secs(2));
    let state = cluster.partition_state(1, TOPIC, 0).unwrap();
    assert!(state.leader < 0 && state.isr.is_empty(), "{state:?}");

    // An unclean election takes a follower, not the wiped broker (the
    // first replica), and the followers' records are all there.
    assert_eq!(elect_unclean(&cluster, 1, TOPIC), 0);
    let states = cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    assert_eq!(states[&0].leader, followers[0]);
    let bootstrap = cluster.broker(followers[0]).bootstrap();
    assert_eq!(watermarks(&bootstrap, TOPIC, 0), (0, BEFORE as i64));
    let read: Vec<Record> = consume_partition(&bootstrap, TOPIC, 0, 0, BEFORE as i64)
        .into_iter()
        .map(|consumed| consumed.record)
        .collect();
    assert_eq!(read, before);
}

/// AlterPartitionReassignments and ListPartitionReassignments (APIs 45
/// and 46) from kafka-python's own protocol code against three brokers: a
/// one-replica partition moved to the two other brokers while its records
/// stay readable, and the refusals
/// (server/tests/python/reassign_kafka_python.py).
#[test]
fn kafka_python_moves_a_partition_to_other_brokers() {
    const TOPIC: &str = "moved";
    let Some(python) = require_python() else {
        return;
    };
    let cluster = Cluster::start(
        "reassign-kafka-python",
        3,
        &[
            "--broker-heartbeat-interval-ms",
            "500",
            "--broker-session-timeout-ms",
            "3000",
        ],
    );
    create_topic_replicated(&cluster.bootstrap(), TOPIC, 1, 1, &[]);
    let script = support::repo_root().join("server/tests/python/reassign_kafka_python.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg(cluster.bootstrap())
        .arg(TOPIC)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = run_with_timeout(
        command,
        Duration::from_secs(180),
        "reassign_kafka_python.py",
    );
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "reassign_kafka_python.py failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.stderr_tails()
    );
}
