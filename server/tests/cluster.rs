//! A cluster of real `sluice` processes on loopback (issue 9): three
//! brokers that are also the controller's three Raft voters, started by
//! [`support::cluster::Cluster`] on free ports.
//!
//! - clients (kcat, confluent-kafka, kafka-python, a consumer group) follow
//!   the leaders of a 12-partition topic across all three brokers;
//! - kill -9 of the active controller during a burst of CreateTopics: a new
//!   controller, every acknowledged topic exactly once, the killed voter
//!   catches up;
//! - kill -9 of a broker: fenced after the session timeout, its partitions
//!   without a leader, back with their data when it returns;
//! - 2,000 topics survive a restart of every broker unchanged;
//! - `sluice dev-cluster --nodes 3` serves kcat and stops on SIGINT.
//!
//! The scenarios run one at a time (each starts three brokers; run together
//! on a small CI machine their timeouts would measure the machine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use sluice_server::admin::client::Connection;
use support::cluster::{Cluster, wait_until};
use support::kafka::{self, Record};
use support::{require_python, require_tool, run_with_input, run_with_timeout};

/// Flags of every broker: a short first join window (the group test), a
/// small `__consumer_offsets`, heartbeats often enough for a 3 s session.
const BROKER_ARGS: [&str; 6] = [
    "--group-initial-rebalance-delay-ms",
    "300",
    "--offsets-topic-partitions",
    "6",
    "--broker-heartbeat-interval-ms",
    "500",
];
/// The session timeout of the fencing scenario (Kafka's default is 9 s),
/// as a number and as its flag's value.
const SESSION_TIMEOUT_MS: u64 = 3000;
const SESSION_TIMEOUT_FLAG: &str = "3000";
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the cluster may take to agree on something after a change
/// (a topic created, a broker killed or back, a new controller).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

const TOPIC_ERROR_NONE: i16 = 0;
const LEADER_NOT_AVAILABLE: i16 = 5;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// One scenario at a time (see the module comment); a failed one must not
/// stop the others, so a poisoned lock is taken anyway.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn broker_args(extra: &[&'static str]) -> Vec<&'static str> {
    BROKER_ARGS.iter().chain(extra).copied().collect()
}

/// Every broker lists `topic` with `partitions` partitions, each with a
/// leader, and they agree: partition -> leader.
fn wait_for_agreed_leaders(
    cluster: &Cluster,
    topic: &str,
    partitions: usize,
) -> BTreeMap<i32, i32> {
    wait_until(
        &format!("every broker lists {topic} with a leader for each partition"),
        CONVERGE_TIMEOUT,
        || {
            let mut views = Vec::new();
            for node in cluster.nodes() {
                let leaders = cluster
                    .leaders(node, topic)
                    .ok_or(format!("node {node} does not list {topic}"))?;
                if leaders.len() != partitions || leaders.values().any(|leader| *leader < 0) {
                    return Err(format!("node {node}: {leaders:?}"));
                }
                views.push(leaders);
            }
            if views.windows(2).any(|pair| pair[0] != pair[1]) {
                return Err(format!("brokers disagree: {views:?}"));
            }
            Ok(views.swap_remove(0))
        },
    )
}

fn assert_output_success(output: &std::process::Output, what: &str, cluster: &Cluster) {
    assert!(
        output.status.success(),
        "{what} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.stderr_tails()
    );
}

fn kcat_command(kcat: &Path, bootstrap: &str) -> Command {
    let mut command = Command::new(kcat);
    command
        .arg("-b")
        .arg(bootstrap)
        .args(["-X", "broker.address.family=v4"]);
    command
}

#[test]
fn three_brokers_lead_a_twelve_partition_topic_and_kcat_python_clients_and_a_group_follow_them() {
    const TOPIC: &str = "cluster-clients";
    const PARTITIONS: usize = 12;
    const KCAT_LINES: usize = 20;
    let _serial = serial();
    let (Some(kcat), Some(python)) = (require_tool("kcat"), require_python()) else {
        return;
    };
    let cluster = Cluster::start("clients", 3, &BROKER_ARGS);
    kafka::create_topic(&cluster.bootstrap(), TOPIC, PARTITIONS as i32, &[]);
    let leaders = wait_for_agreed_leaders(&cluster, TOPIC, PARTITIONS);
    let leading: BTreeSet<i32> = leaders.values().copied().collect();
    assert_eq!(
        leading,
        cluster.nodes().collect::<BTreeSet<i32>>(),
        "the partitions' leaders are spread over every broker: {leaders:?}"
    );

    // kcat knows broker 1 only and must find the other leaders itself.
    let bootstrap = cluster.broker(1).bootstrap();
    for partition in 0..PARTITIONS {
        let lines: Vec<String> = (0..KCAT_LINES)
            .map(|index| format!("kcat {partition} {index}"))
            .collect();
        let mut input = lines.join("\n").into_bytes();
        input.push(b'\n');
        let mut produce = kcat_command(&kcat, &bootstrap);
        produce
            .args(["-P", "-t", TOPIC, "-p", &partition.to_string()])
            .args(["-X", "acks=all", "-X", "message.timeout.ms=30000"]);
        let output = run_with_input(produce, Some(input), TOOL_TIMEOUT, "kcat -P");
        assert_output_success(&output, &format!("kcat -P partition {partition}"), &cluster);

        let mut consume = kcat_command(&kcat, &bootstrap);
        consume
            .args(["-C", "-t", TOPIC, "-p", &partition.to_string()])
            .args(["-o", "beginning", "-e", "-f", "%s\n"]);
        let output = run_with_timeout(consume, TOOL_TIMEOUT, "kcat -C");
        assert_output_success(&output, &format!("kcat -C partition {partition}"), &cluster);
        let read: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(
            read,
            lines,
            "kcat reads back what it wrote to partition {partition} (led by {})",
            leaders[&(partition as i32)]
        );
    }

    // The Python clients know broker 2 only.
    let script = support::repo_root().join("server/tests/python/cluster_clients.py");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg(cluster.broker(2).bootstrap())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = run_with_timeout(command, SCRIPT_TIMEOUT, "cluster_clients.py");
    println!(
        "--- cluster_clients.py stdout ---\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_output_success(&output, "cluster_clients.py", &cluster);
}

/// How one thread's creations ended.
#[derive(Default)]
struct Creations {
    acknowledged: Vec<String>,
    /// Creations whose outcome never became known (the thread stopped).
    unknown: Vec<String>,
    /// Names answered TOPIC_ALREADY_EXISTS on their first attempt, which
    /// no other client creates: the broker retried a forwarded creation
    /// that had been carried out, and told the client it was not.
    exists_on_first_attempt: Vec<String>,
    failures: Vec<String>,
}

/// Create topics `{prefix}-{n}` (one partition each) one after another
/// until `stop`, through any broker of `addresses`: a lost connection or a
/// retriable error is retried under the same name, and then
/// TOPIC_ALREADY_EXISTS means an earlier attempt was carried out.
fn create_until_stopped(
    addresses: Vec<String>,
    first_address: usize,
    prefix: String,
    stop: Arc<AtomicBool>,
    acknowledged_count: Arc<AtomicUsize>,
) -> Creations {
    let mut creations = Creations::default();
    let mut connection: Option<Connection> = None;
    let mut next_address = first_address;
    for sequence in 0.. {
        let name = format!("{prefix}-{sequence}");
        let mut retried = false;
        let mut exists_on_first_attempt = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                if retried {
                    creations.unknown.push(name);
                }
                return creations;
            }
            let Some(open) = connection.as_mut() else {
                next_address += 1;
                connection = Connection::open(&addresses[next_address % addresses.len()]).ok();
                if connection.is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            };
            let request = CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                ])
                .with_timeout_ms(10_000);
            let code = match open.call(&request, 0..=5) {
                Ok((response, _)) => response.topics.first().map(|topic| topic.error_code),
                Err(_) => None,
            };
            match code {
                Some(TOPIC_ERROR_NONE) => break,
                Some(TOPIC_ALREADY_EXISTS) if retried => break,
                Some(TOPIC_ALREADY_EXISTS) => {
                    exists_on_first_attempt = true;
                    break;
                }
                // Not carried out, or not known to be: try again elsewhere.
                None | Some(_) => {
                    retried = true;
                    connection = None;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        if exists_on_first_attempt {
            creations.exists_on_first_attempt.push(name);
        } else {
            creations.acknowledged.push(name);
        }
        acknowledged_count.fetch_add(1, Ordering::Relaxed);
    }
    creations
}

/// Topic names (with their ids) in a Metadata answer, and the names listed
/// more than once.
fn topic_ids(metadata: &MetadataResponse) -> (BTreeMap<String, String>, Vec<String>) {
    let mut topics = BTreeMap::new();
    let mut twice = Vec::new();
    for topic in &metadata.topics {
        let name = topic
            .name
            .as_ref()
            .map(|name| name.0.to_string())
            .unwrap_or_default();
        if topics
            .insert(name.clone(), topic.topic_id.to_string())
            .is_some()
        {
            twice.push(name);
        }
    }
    (topics, twice)
}

#[test]
fn kill_9_of_the_active_controller_during_a_create_burst_loses_no_acknowledged_topic() {
    const THREADS: usize = 4;
    const BEFORE_KILL: usize = 40;
    const AFTER_KILL: usize = 40;
    let _serial = serial();
    let mut cluster = Cluster::start("controller-failover", 3, &BROKER_ARGS);
    let controller = wait_until("an active controller", CONVERGE_TIMEOUT, || {
        cluster.active_controller(&[]).ok_or("none".to_string())
    });
    assert!(
        cluster.is_voter(controller),
        "controller {controller} is a voter"
    );

    let addresses: Vec<String> = cluster
        .nodes()
        .map(|node| cluster.broker(node).bootstrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let addresses = addresses.clone();
            let stop = Arc::clone(&stop);
            let acknowledged = Arc::clone(&acknowledged);
            std::thread::spawn(move || {
                create_until_stopped(
                    addresses,
                    thread,
                    format!("burst-{thread}"),
                    stop,
                    acknowledged,
                )
            })
        })
        .collect();
    wait_until("creations before the kill", CONVERGE_TIMEOUT, || {
        let count = acknowledged.load(Ordering::Relaxed);
        if count >= BEFORE_KILL {
            Ok(())
        } else {
            Err(format!("{count} acknowledged"))
        }
    });
    let killed_at = acknowledged.load(Ordering::Relaxed);
    cluster.kill9(controller);
    let successor = wait_until(
        "another voter takes over",
        CONVERGE_TIMEOUT,
        || match cluster.active_controller(&[controller]) {
            Some(node) if node != controller => Ok(node),
            other => Err(format!("controller {other:?}")),
        },
    );
    assert!(cluster.is_voter(successor));
    wait_until("creations after the kill", CONVERGE_TIMEOUT, || {
        let count = acknowledged.load(Ordering::Relaxed);
        if count >= killed_at + AFTER_KILL {
            Ok(())
        } else {
            Err(format!("{count} acknowledged, {killed_at} at the kill"))
        }
    });
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged_names = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    let mut exists_on_first_attempt = BTreeSet::new();
    for thread in threads {
        let creations = thread.join().expect("a creating thread");
        assert!(creations.failures.is_empty(), "{:?}", creations.failures);
        acknowledged_names.extend(creations.acknowledged);
        unknown.extend(creations.unknown);
        exists_on_first_attempt.extend(creations.exists_on_first_attempt);
    }
    println!(
        "{} topics acknowledged ({killed_at} before the kill of controller {controller}), \
         {} unknown; controller {successor} took over",
        acknowledged_names.len(),
        unknown.len()
    );

    let survivor = cluster.nodes().find(|node| *node != controller).unwrap();
    let check_topics = |cluster: &Cluster, node: i32| -> Result<BTreeMap<String, String>, String> {
        let metadata = cluster.metadata(node).map_err(|error| error.to_string())?;
        let (topics, twice) = topic_ids(&metadata);
        if !twice.is_empty() {
            panic!("node {node} lists topics twice: {twice:?}");
        }
        let ids: BTreeSet<&String> = topics.values().collect();
        assert_eq!(
            ids.len(),
            topics.len(),
            "node {node}: every topic id is unique"
        );
        let missing: Vec<&String> = acknowledged_names
            .iter()
            .filter(|name| !topics.contains_key(*name))
            .collect();
        if !missing.is_empty() {
            return Err(format!("node {node} misses {missing:?}"));
        }
        let strays: Vec<&String> = topics
            .keys()
            .filter(|name| name.starts_with("burst-"))
            .filter(|name| {
                !acknowledged_names.contains(*name)
                    && !unknown.contains(*name)
                    && !exists_on_first_attempt.contains(*name)
            })
            .collect();
        assert!(
            strays.is_empty(),
            "node {node} lists topics never created: {strays:?}"
        );
        Ok(topics)
    };
    let expected = wait_until(
        "the survivors list every acknowledged topic",
        CONVERGE_TIMEOUT,
        || check_topics(&cluster, survivor),
    );

    cluster.start_again(controller);
    wait_until("the killed voter catches up", CONVERGE_TIMEOUT, || {
        let topics = check_topics(&cluster, controller)?;
        if topics == expected {
            Ok(())
        } else {
            Err(format!(
                "node {controller} lists {} topics, node {survivor} {}",
                topics.len(),
                expected.len()
            ))
        }
    });
    let missing: Vec<&String> = exists_on_first_attempt
        .iter()
        .filter(|name| !expected.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty(),
        "answered TOPIC_ALREADY_EXISTS but missing: {missing:?}"
    );
    assert!(
        exists_on_first_attempt.is_empty(),
        "CreateTopics of a name no other client creates was answered TOPIC_ALREADY_EXISTS on \
         its first attempt (the broker retried a forwarded creation that the old controller had \
         committed): {exists_on_first_attempt:?}"
    );
}

#[test]
fn a_killed_broker_is_fenced_after_its_session_and_its_partitions_return_with_their_data() {
    const TOPIC: &str = "fenced";
    const PARTITIONS: usize = 6;
    const RECORDS: usize = 30;
    let _serial = serial();
    assert_eq!(SESSION_TIMEOUT_FLAG, SESSION_TIMEOUT_MS.to_string());
    let mut cluster = Cluster::start(
        "fencing",
        3,
        &broker_args(&["--broker-session-timeout-ms", SESSION_TIMEOUT_FLAG]),
    );
    kafka::create_topic(&cluster.bootstrap(), TOPIC, PARTITIONS as i32, &[]);
    let leaders = wait_for_agreed_leaders(&cluster, TOPIC, PARTITIONS);
    let mut sent: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for partition in 0..PARTITIONS as i32 {
        let records: Vec<Record> = (0..RECORDS)
            .map(|index| Record {
                key: Some(format!("key-{index}").into_bytes()),
                value: Some(format!("partition {partition} record {index}").into_bytes()),
                headers: Vec::new(),
            })
            .collect();
        kafka::produce_all(
            &cluster.bootstrap(),
            TOPIC,
            Some(partition),
            &records,
            &[("acks", "all")],
        );
        sent.insert(partition, records);
    }

    // A broker that is not the controller (the failover has its own test)
    // and leads something.
    let controller = cluster
        .active_controller(&[])
        .expect("an active controller");
    let victim = *leaders
        .values()
        .find(|leader| **leader != controller)
        .expect("a partition led by a broker that is not the controller");
    let observer = cluster.nodes().find(|node| *node != victim).unwrap();
    let orphans: BTreeSet<i32> = leaders
        .iter()
        .filter(|(_, leader)| **leader == victim)
        .map(|(partition, _)| *partition)
        .collect();
    let killed = Instant::now();
    cluster.kill9(victim);
    wait_until("the killed broker is fenced", CONVERGE_TIMEOUT, || {
        let metadata = cluster
            .metadata(observer)
            .map_err(|error| error.to_string())?;
        if metadata
            .brokers
            .iter()
            .any(|broker| broker.node_id.0 == victim)
        {
            return Err(format!("node {observer} still lists broker {victim}"));
        }
        let topic = metadata
            .topics
            .iter()
            .find(|topic| {
                topic
                    .name
                    .as_ref()
                    .is_some_and(|name| name.0.as_str() == TOPIC)
            })
            .ok_or("no topic")?;
        for partition in &topic.partitions {
            let orphan = orphans.contains(&partition.partition_index);
            let led = partition.error_code == 0 && partition.leader_id.0 >= 0;
            if orphan && (led || partition.error_code != LEADER_NOT_AVAILABLE) {
                return Err(format!(
                    "partition {} of the fenced broker: error {} leader {}",
                    partition.partition_index, partition.error_code, partition.leader_id.0
                ));
            }
            if !orphan && !led {
                panic!(
                    "partition {} of a live broker lost its leader: error {}",
                    partition.partition_index, partition.error_code
                );
            }
        }
        Ok(())
    });
    let fenced_after = killed.elapsed();
    println!("broker {victim} fenced {fenced_after:?} after kill -9");
    assert!(
        fenced_after >= Duration::from_millis(SESSION_TIMEOUT_MS / 2),
        "fenced after {fenced_after:?}, well before its {SESSION_TIMEOUT_MS} ms session ended"
    );

    // A manual assignment may name the fenced broker, as Kafka's does
    // (registered brokers; it starts outside the ISR): it was refused as a
    // replication factor above the live brokers.
    const MANUAL: &str = "manual-with-a-fenced-broker";
    let third = cluster
        .nodes()
        .find(|node| *node != victim && *node != observer)
        .unwrap();
    // Three replicas with two brokers live.
    let assignment: [&[i32]; 1] = [&[victim, observer, third]];
    let created = kafka::block_on(kafka::admin(&cluster.bootstrap()).create_topics(
        &[rdkafka::admin::NewTopic::new(
            MANUAL,
            1,
            rdkafka::admin::TopicReplication::Variable(&assignment),
        )],
        &kafka::admin_options(),
    ))
    .expect("CreateTopics answered");
    assert!(
        created.iter().all(Result::is_ok),
        "a manual assignment naming a fenced broker: {created:?}"
    );
    wait_until(
        "the manual topic is led by the live broker",
        CONVERGE_TIMEOUT,
        || {
            let metadata = cluster
                .metadata(observer)
                .map_err(|error| error.to_string())?;
            let topic = metadata
                .topics
                .iter()
                .find(|topic| {
                    topic
                        .name
                        .as_ref()
                        .is_some_and(|name| name.0.as_str() == MANUAL)
                })
                .ok_or("no manual topic yet")?;
            let partition = &topic.partitions[0];
            let replicas: Vec<i32> = partition.replica_nodes.iter().map(|id| id.0).collect();
            let isr: Vec<i32> = partition.isr_nodes.iter().map(|id| id.0).collect();
            if replicas != vec![victim, observer, third]
                || isr != vec![observer, third]
                || partition.leader_id.0 != observer
            {
                return Err(format!(
                    "replicas {replicas:?} isr {isr:?} leader {}",
                    partition.leader_id.0
                ));
            }
            Ok(())
        },
    );
    // Growing it by validate_only answers as the real request would: its
    // three replicas do not fit on the two live brokers (it answered OK).
    let validated = kafka::block_on(kafka::admin(&cluster.bootstrap()).create_partitions(
        &[rdkafka::admin::NewPartitions::new(MANUAL, 2)],
        &kafka::admin_options().validate_only(true),
    ))
    .expect("CreatePartitions answered");
    assert!(
        matches!(
            validated.as_slice(),
            [Err((
                _,
                rdkafka::types::RDKafkaErrorCode::InvalidReplicationFactor
            ))]
        ),
        "validate_only growth of an RF-3 topic with two live brokers: {validated:?}"
    );

    cluster.start_again(victim);
    let back = wait_for_agreed_leaders(&cluster, TOPIC, PARTITIONS);
    for partition in &orphans {
        assert_eq!(
            back[partition], victim,
            "partition {partition} is led by its broker again"
        );
    }
    for (partition, records) in &sent {
        let read: Vec<Record> = kafka::consume_all(&cluster.bootstrap(), TOPIC, *partition)
            .into_iter()
            .map(|consumed| consumed.record)
            .collect();
        assert_eq!(&read, records, "partition {partition} kept its records");
    }
}

/// What must survive a restart of every broker unchanged: the brokers
/// (id, host, port) and for each topic its id, whether it is internal, and
/// each partition's replicas in order. Leaders and epochs may change.
type MetadataDump = (
    BTreeSet<(i32, String, i32)>,
    BTreeMap<String, (String, bool, Vec<(i32, Vec<i32>)>)>,
);

fn canonical_dump(metadata: &MetadataResponse) -> Result<MetadataDump, String> {
    let brokers = metadata
        .brokers
        .iter()
        .map(|broker| (broker.node_id.0, broker.host.to_string(), broker.port))
        .collect();
    let mut topics = BTreeMap::new();
    for topic in &metadata.topics {
        let name = topic
            .name
            .as_ref()
            .map(|name| name.0.to_string())
            .unwrap_or_default();
        let mut partitions = Vec::new();
        for partition in &topic.partitions {
            let replicas: Vec<i32> = partition.replica_nodes.iter().map(|node| node.0).collect();
            if partition.error_code != 0 || !replicas.contains(&partition.leader_id.0) {
                return Err(format!(
                    "{name}/{}: error {}, leader {} not among replicas {replicas:?}",
                    partition.partition_index, partition.error_code, partition.leader_id.0
                ));
            }
            partitions.push((partition.partition_index, replicas));
        }
        partitions.sort();
        let entry = (topic.topic_id.to_string(), topic.is_internal, partitions);
        if topics.insert(name.clone(), entry).is_some() {
            return Err(format!("{name} listed twice"));
        }
    }
    Ok((brokers, topics))
}

/// Every broker's dump, once all of them are complete (`topic_count`
/// topics, every partition led) and identical.
fn wait_for_identical_dumps(cluster: &Cluster, topic_count: usize) -> MetadataDump {
    wait_until(
        &format!("every broker lists {topic_count} topics, all led, the same"),
        Duration::from_secs(120),
        || {
            let mut dumps = Vec::new();
            for node in cluster.nodes() {
                let metadata = cluster.metadata(node).map_err(|error| error.to_string())?;
                let dump = canonical_dump(&metadata)?;
                if dump.1.len() < topic_count || dump.0.len() != cluster.nodes().count() {
                    return Err(format!(
                        "node {node}: {} topics, {} brokers",
                        dump.1.len(),
                        dump.0.len()
                    ));
                }
                dumps.push(dump);
            }
            if dumps.windows(2).any(|pair| pair[0] != pair[1]) {
                return Err("the brokers' metadata differ".to_string());
            }
            Ok(dumps.swap_remove(0))
        },
    )
}

#[test]
fn two_thousand_topics_are_identical_after_every_broker_restarts() {
    const TOPICS: usize = 2000;
    const PER_REQUEST: usize = 100;
    let _serial = serial();
    let mut cluster = Cluster::start("restart-all", 3, &BROKER_ARGS);
    let started = Instant::now();
    let mut connection = Connection::open(&cluster.broker(1).bootstrap()).expect("connecting");
    for batch in 0..TOPICS / PER_REQUEST {
        let topics = (0..PER_REQUEST)
            .map(|index| {
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(format!(
                        "many-{:04}",
                        batch * PER_REQUEST + index
                    ))))
                    .with_num_partitions(if index % 10 == 0 { 3 } else { 1 })
                    .with_replication_factor(1)
            })
            .collect();
        let request = CreateTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(60_000);
        let (response, _) = connection.call(&request, 0..=5).unwrap_or_else(|error| {
            panic!(
                "CreateTopics batch {batch}: {error}\n{}",
                cluster.stderr_tails()
            )
        });
        for topic in &response.topics {
            assert_eq!(
                topic.error_code, TOPIC_ERROR_NONE,
                "CreateTopics {}: {:?}",
                topic.name.0, topic.error_message
            );
        }
    }
    drop(connection);
    println!("{TOPICS} topics created in {:?}", started.elapsed());
    let before = wait_for_identical_dumps(&cluster, TOPICS);

    let restarted = Instant::now();
    cluster.stop_all();
    cluster.start_all_again();
    let after = wait_for_identical_dumps(&cluster, TOPICS);
    println!(
        "every broker restarted and agreed in {:?}",
        restarted.elapsed()
    );
    assert_eq!(before.0, after.0, "the same brokers");
    let changed: Vec<&String> = before
        .1
        .iter()
        .filter(|(name, topic)| after.1.get(*name) != Some(*topic))
        .map(|(name, _)| name)
        .collect();
    assert!(
        changed.is_empty(),
        "topics changed by the restart: {changed:?}"
    );
    assert_eq!(before.1.len(), after.1.len(), "no topic appeared");
}

/// A `sluice dev-cluster` process and the broker pids it printed, all
/// killed if the test fails before it stops them.
struct DevCluster {
    child: Child,
    broker_pids: Vec<i32>,
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        for pid in &self.broker_pids {
            // SAFETY: kill(2); the pids were printed by the dev-cluster
            // and may already be gone (ESRCH, ignored).
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A base port whose derived ports (Kafka and controller of 3 nodes) are
/// all free.
fn dev_cluster_base_port() -> u16 {
    for _ in 0..200 {
        let base = support::reserve_port();
        if base > u16::MAX - 30 {
            continue;
        }
        let derived: Vec<u16> = (0..3)
            .flat_map(|node| [base + 10 * node, base + 10 * node + 1, base + 10 * node + 2])
            .filter(|port| *port != base)
            .collect();
        if support::reserve_ports(&derived) {
            return base;
        }
    }
    panic!("no free port range for a dev cluster");
}

#[test]
fn dev_cluster_of_three_nodes_serves_kcat_and_stops_cleanly_on_sigint() {
    let _serial = serial();
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cluster")
        .join(format!("dev-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let base_port = dev_cluster_base_port();
    let stderr_path = root.join("dev-cluster.stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["dev-cluster", "--nodes", "3", "--cores", "1", "--base-port"])
        .arg(base_port.to_string())
        .arg("--data-dir")
        .arg(root.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawning sluice dev-cluster");
    let mut dev = DevCluster {
        child,
        broker_pids: Vec::new(),
    };
    let stderr_text = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = dev.child.stdout.take().unwrap();
    let reader_lines = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            reader_lines.lock().unwrap().push(line);
        }
    });
    let bootstrap = wait_until(
        "the dev cluster prints its bootstrap",
        Duration::from_secs(120),
        || {
            if let Ok(Some(status)) = dev.child.try_wait() {
                panic!("dev-cluster exited with {status}\n{}", stderr_text());
            }
            let lines = lines.lock().unwrap();
            lines
                .iter()
                .find_map(|line| line.strip_prefix("bootstrap: ").map(str::to_string))
                .ok_or(format!("stdout so far: {lines:?}"))
        },
    );
    let table = lines.lock().unwrap().clone();
    println!("{}", table.join("\n"));
    dev.broker_pids = table
        .iter()
        .filter(|line| line.contains("127.0.0.1:"))
        .filter_map(|line| line.split_whitespace().nth(4)?.parse().ok())
        .collect();
    assert_eq!(
        dev.broker_pids.len(),
        3,
        "three brokers in the table: {table:?}"
    );
    let expected_bootstrap = (0..3)
        .map(|node| format!("127.0.0.1:{}", base_port + 10 * node))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(bootstrap, expected_bootstrap);

    kafka::create_topic(&bootstrap, "dev", 3, &[]);
    let lines_sent: Vec<String> = (0..30).map(|index| format!("dev line {index}")).collect();
    let mut input = lines_sent.join("\n").into_bytes();
    input.push(b'\n');
    let mut produce = kcat_command(&kcat, &bootstrap);
    produce
        .args(["-P", "-t", "dev"])
        .args(["-X", "acks=all", "-X", "message.timeout.ms=30000"]);
    let output = run_with_input(produce, Some(input), TOOL_TIMEOUT, "kcat -P");
    assert!(
        output.status.success(),
        "kcat -P: {output:?}\n{}",
        stderr_text()
    );
    let mut consume = kcat_command(&kcat, &bootstrap);
    consume.args(["-C", "-t", "dev", "-o", "beginning", "-e", "-f", "%s\n"]);
    let output = run_with_timeout(consume, TOOL_TIMEOUT, "kcat -C");
    assert!(
        output.status.success(),
        "kcat -C: {output:?}\n{}",
        stderr_text()
    );
    let mut read: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    read.sort();
    let mut expected = lines_sent.clone();
    expected.sort();
    assert_eq!(read, expected, "kcat reads back every line");

    let pid = libc::pid_t::try_from(dev.child.id()).unwrap();
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = wait_until(
        "dev-cluster exits after SIGINT",
        Duration::from_secs(90),
        || {
            dev.child
                .try_wait()
                .unwrap()
                .ok_or("still running".to_string())
        },
    );
    reader.join().unwrap();
    let stderr = stderr_text();
    assert!(
        status.success(),
        "dev-cluster exited with {status}\n{stderr}"
    );
    for pid in &dev.broker_pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "broker pid {pid} outlived the dev cluster"
        );
    }
    for node in 1..=3 {
        assert!(
            stderr.contains(&format!("[node-{node}] ")),
            "node {node}'s log lines are prefixed\n{stderr}"
        );
    }
    dev.broker_pids.clear();
    let _ = std::fs::remove_dir_all(&root);
}
