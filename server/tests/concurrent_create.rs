//! Topics created at the same moment by several clients (issue 14), against
//! a real `sluice` process: explicit CreateTopics from several admin
//! clients, automatic creation by several rdkafka producers and kcat
//! processes, and the group coordinator creating `__consumer_offsets` on a
//! fresh broker while CreateTopics arrive. Consumers subscribe before the
//! topics exist.
//!
//! Every create must succeed (or answer TOPIC_ALREADY_EXISTS to all but
//! one of the clients creating the same name), every partition must take
//! produce and answer ListOffsets, and the consumers must get every record.
//! Before the fix, overlapping creations opened the same partitions twice
//! and raced on one `checkpoint.tmp`: most creates failed with
//! UNKNOWN_SERVER_ERROR and left partitions that never opened.
//!
//! Each scenario runs several rounds: the race needs only one to show.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_server::admin::client::Connection;
use support::kafka::{self, Record, block_on};
use support::{Broker, kcat, require_tool};

/// Rounds of each scenario (new topics each round).
const ROUNDS: usize = 3;
/// Clients creating distinct topics at once, per round.
const CLIENTS: usize = 6;
/// Extra clients creating the name of client 0 at the same moment.
const DUPLICATES: usize = 2;
const PARTITIONS: i32 = 3;
const RECORDS_PER_PARTITION: usize = 20;
/// How long the subscribed consumers may take to get every record.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(90);
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Broker flags shared by the scenarios: a short first join window, so
/// consumers get their partitions soon after the topics appear.
const BROKER_ARGS: [&str; 2] = ["--group-initial-rebalance-delay-ms", "300"];

/// Producer settings: a partition that never opens fails the test within
/// the message timeout instead of hanging.
const PRODUCER_SETTINGS: [(&str, &str); 2] = [("acks", "all"), ("message.timeout.ms", "30000")];

/// A record as the tests compare them: topic, partition, value.
type Seen = (String, i32, Vec<u8>);

/// A consumer (group member) subscribed on its own thread, collecting
/// (topic, partition, value) of every record it gets.
struct Collector {
    name: String,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<BTreeSet<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    /// Subscribe `group` to `subscription` (names, or one `^regex`).
    fn subscribe(bootstrap: &str, group: &str, subscription: Vec<String>) -> Collector {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(BTreeSet::new()));
        let consumer: BaseConsumer = kafka::config(bootstrap)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("topic.metadata.refresh.interval.ms", "500")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .expect("creating a consumer");
        let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).expect("subscribing");
        let thread = {
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Errors (a subscribed topic that does not exist yet)
                    // are expected until the topics are created.
                    if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                        received.lock().unwrap().insert((
                            message.topic().to_string(),
                            message.partition(),
                            message.payload().unwrap_or_default().to_vec(),
                        ));
                    }
                }
            })
        };
        Collector {
            name: group.to_string(),
            stop,
            received,
            thread: Some(thread),
        }
    }

    /// Wait until every record of `expected` arrived; panic naming the
    /// missing ones (per topic and partition) otherwise.
    fn wait_for(&self, expected: &BTreeSet<Seen>, broker: &Broker) {
        let deadline = Instant::now() + CONSUME_TIMEOUT;
        loop {
            let missing: Vec<Seen> = {
                let received = self.received.lock().unwrap();
                expected.difference(&received).cloned().collect()
            };
            if missing.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let mut per_partition: BTreeMap<(String, i32), usize> = BTreeMap::new();
                for (topic, partition, _) in &missing {
                    *per_partition
                        .entry((topic.clone(), *partition))
                        .or_default() += 1;
                }
                panic!(
                    "consumer group {} is missing {} of {} records after {CONSUME_TIMEOUT:?}; \
                     missing per partition: {per_partition:?}\n{}",
                    self.name,
                    missing.len(),
                    expected.len(),
                    broker.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn value(topic: &str, partition: i32, index: usize) -> Vec<u8> {
    format!("{topic}/{partition}/{index}").into_bytes()
}

/// Produce [`RECORDS_PER_PARTITION`] records to every partition of `topic`
/// (all must be acknowledged) and check that each partition's ListOffsets
/// moved by as many; returns what was produced.
fn produce_to_every_partition(broker: &Broker, topic: &str) -> BTreeSet<Seen> {
    let mut produced = BTreeSet::new();
    for partition in 0..PARTITIONS {
        let (low, high) = kafka::watermarks(&broker.bootstrap(), topic, partition);
        let records: Vec<Record> = (0..RECORDS_PER_PARTITION)
            .map(|index| Record {
                key: None,
                value: Some(value(topic, partition, index)),
                headers: Vec::new(),
            })
            .collect();
        kafka::produce_all(
            &broker.bootstrap(),
            topic,
            Some(partition),
            &records,
            &PRODUCER_SETTINGS,
        );
        let watermarks = kafka::watermarks(&broker.bootstrap(), topic, partition);
        assert_eq!(
            watermarks,
            (low, high + RECORDS_PER_PARTITION as i64),
            "ListOffsets of {topic}/{partition}"
        );
        for index in 0..RECORDS_PER_PARTITION {
            produced.insert((topic.to_string(), partition, value(topic, partition, index)));
        }
    }
    produced
}

/// Partition count of every topic, from Metadata; panics on a topic error.
fn partition_counts(broker: &Broker) -> BTreeMap<String, usize> {
    kafka::topic_partition_counts(&broker.bootstrap()).expect("Metadata")
}

/// Six admin clients create six topics at the same moment, two more create
/// the first name again, and a producer's automatic creation races the
/// creation of the second name.
#[test]
fn topics_created_at_once_by_several_admin_clients_all_serve_and_subscribed_consumers_get_every_record()
 {
    let mut args = BROKER_ARGS.to_vec();
    // Created either way, the raced topic has the same partitions.
    let partitions = PARTITIONS.to_string();
    args.extend(["--default-partitions", &partitions]);
    let mut broker = Broker::start_with_args("create-at-once", &args);
    let bootstrap = broker.bootstrap();
    let names: Vec<Vec<String>> = (0..ROUNDS)
        .map(|round| {
            (0..CLIENTS)
                .map(|client| format!("created-{round}-{client}"))
                .collect()
        })
        .collect();
    // Subscribed before any topic exists: by pattern, and by name.
    let by_pattern = Collector::subscribe(&bootstrap, "by-pattern", vec!["^created-.*".into()]);
    let by_name = Collector::subscribe(&bootstrap, "by-name", names.concat());
    let mut expected = BTreeSet::new();
    for round_names in &names {
        // One admin client per thread, connected before the barrier.
        let clients = CLIENTS + DUPLICATES;
        let barrier = Arc::new(Barrier::new(clients + 1));
        let raced = round_names[1].clone();
        let auto_creation = {
            let (producer, reports) = kafka::producer(&bootstrap, &PRODUCER_SETTINGS);
            let barrier = Arc::clone(&barrier);
            let raced = raced.clone();
            std::thread::spawn(move || -> Seen {
                let record = Record {
                    key: None,
                    value: Some(format!("{raced}/auto").into_bytes()),
                    headers: Vec::new(),
                };
                barrier.wait();
                kafka::send(&producer, &raced, None, 0, &record);
                producer
                    .flush(Duration::from_secs(60))
                    .unwrap_or_else(|error| panic!("flushing the producer of {raced}: {error}"));
                let reports = std::mem::take(&mut *reports.0.lock().unwrap());
                let (partition, _) = reports[0].1.clone().unwrap_or_else(|error| {
                    panic!("{raced}: the record was not delivered: {error}")
                });
                (raced, partition, record.value.unwrap_or_default())
            })
        };
        let threads: Vec<JoinHandle<(String, Result<(), RDKafkaErrorCode>)>> = (0..clients)
            .map(|client| {
                let name = round_names[if client < CLIENTS { client } else { 0 }].clone();
                let admin = kafka::admin(&bootstrap);
                admin
                    .inner()
                    .fetch_metadata(None, kafka::CALL_TIMEOUT)
                    .expect("admin client metadata");
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let topic = NewTopic::new(&name, PARTITIONS, TopicReplication::Fixed(1));
                    barrier.wait();
                    let results = block_on(admin.create_topics([&topic], &kafka::admin_options()))
                        .unwrap_or_else(|error| panic!("CreateTopics {name}: {error}"));
                    let result = results.into_iter().next().expect("one result");
                    (name, result.map(|_| ()).map_err(|(_, code)| code))
                })
            })
            .collect();
        let mut outcomes: BTreeMap<String, Vec<Result<(), RDKafkaErrorCode>>> = BTreeMap::new();
        for thread in threads {
            let (name, outcome) = thread.join().expect("a create thread panicked");
            outcomes.entry(name).or_default().push(outcome);
        }
        expected.insert(auto_creation.join().expect("the producer thread panicked"));
        for (name, outcomes) in &outcomes {
            let created = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
            // The producer may have created the raced name first.
            let allowed = if *name == raced { 0..=1 } else { 1..=1 };
            assert!(
                allowed.contains(&created),
                "{name}: one create succeeds: {outcomes:?}\n{}",
                broker.stderr_tail()
            );
            for outcome in outcomes {
                assert!(
                    matches!(outcome, Ok(()) | Err(RDKafkaErrorCode::TopicAlreadyExists)),
                    "{name}: {outcome:?}\n{}",
                    broker.stderr_tail()
                );
            }
        }
        let counts = partition_counts(&broker);
        for name in round_names {
            assert_eq!(counts.get(name), Some(&(PARTITIONS as usize)), "{name}");
            expected.extend(produce_to_every_partition(&broker, name));
        }
    }
    by_pattern.wait_for(&expected, &broker);
    by_name.wait_for(&expected, &broker);
    broker.assert_running();
}

#[test]
fn producers_auto_creating_topics_at_once_all_deliver_and_a_subscribed_consumer_gets_every_record()
{
    let Some(kcat_path) = require_tool("kcat") else {
        return;
    };
    let mut args = BROKER_ARGS.to_vec();
    args.extend(["--default-partitions", "3"]);
    let mut broker = Broker::start_with_args("auto-create-at-once", &args);
    let bootstrap = broker.bootstrap();
    let consumer = Collector::subscribe(&bootstrap, "auto-pattern", vec!["^auto-.*".into()]);
    let mut expected = BTreeSet::new();
    for round in 0..ROUNDS {
        // rdkafka producers: CLIENTS distinct topics plus DUPLICATES more
        // producers on topic 0; kcat processes: CLIENTS more topics.
        let producers = CLIENTS + DUPLICATES;
        let barrier = Arc::new(Barrier::new(producers + 1));
        let threads: Vec<JoinHandle<BTreeSet<Seen>>> = (0..producers)
            .map(|producer| {
                // The DUPLICATES producers after the first CLIENTS write
                // to topic 0 too: they race to create the same name.
                let index = if producer < CLIENTS { producer } else { 0 };
                let topic = format!("auto-{round}-rdkafka-{index}");
                let (client, reports) = kafka::producer(&bootstrap, &PRODUCER_SETTINGS);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut produced = BTreeSet::new();
                    let records: Vec<Record> = (0..RECORDS_PER_PARTITION * PARTITIONS as usize)
                        .map(|index| Record {
                            key: Some(format!("key-{index}").into_bytes()),
                            value: Some(format!("{topic}/{producer}/{index}").into_bytes()),
                            headers: Vec::new(),
                        })
                        .collect();
                    for (index, record) in records.iter().enumerate() {
                        kafka::send(&client, &topic, None, index, record);
                        client.poll(Duration::ZERO);
                    }
                    client
                        .flush(Duration::from_secs(60))
                        .unwrap_or_else(|error| {
                            panic!("flushing the producer of {topic}: {error}")
                        });
                    let reports = std::mem::take(&mut *reports.0.lock().unwrap());
                    assert_eq!(
                        reports.len(),
                        records.len(),
                        "{topic}: one report per record"
                    );
                    for (index, outcome) in reports {
                        let (partition, _) = outcome.unwrap_or_else(|error| {
                            panic!("{topic}: record {index} was not delivered: {error}")
                        });
                        produced.insert((
                            topic.clone(),
                            partition,
                            records[index].value.clone().unwrap(),
                        ));
                    }
                    produced
                })
            })
            .collect();
        let kcat_topics: Vec<String> = (0..CLIENTS)
            .map(|client| format!("auto-{round}-kcat-{client}"))
            .collect();
        barrier.wait();
        let kcats: Vec<JoinHandle<std::process::Output>> = kcat_topics
            .iter()
            .map(|topic| {
                let mut command = kcat(&kcat_path, &broker);
                command.args(["-P", "-t", topic, "-K", ":"]);
                let lines: String = (0..RECORDS_PER_PARTITION * PARTITIONS as usize)
                    .map(|index| format!("key-{index}:{topic}/kcat/{index}\n"))
                    .collect();
                let what = format!("kcat producing to {topic}");
                std::thread::spawn(move || {
                    support::run_with_input(command, Some(lines.into_bytes()), KCAT_TIMEOUT, &what)
                })
            })
            .collect();
        for thread in threads {
            expected.extend(thread.join().expect("a producer thread panicked"));
        }
        for (topic, thread) in kcat_topics.iter().zip(kcats) {
            let output = thread.join().expect("a kcat thread panicked");
            support::assert_success(&output, &format!("kcat producing to {topic}"), &broker);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !stderr.contains("Delivery failed") && !stderr.contains("ERROR"),
                "kcat producing to {topic}: {stderr}"
            );
            let count = RECORDS_PER_PARTITION * PARTITIONS as usize;
            let mut placed = 0;
            for partition in 0..PARTITIONS {
                let (low, high) = kafka::watermarks(&bootstrap, topic, partition);
                assert_eq!(low, 0, "{topic}/{partition}");
                placed += high as usize;
                for consumed in kafka::consume_partition(&bootstrap, topic, partition, 0, high) {
                    let value = consumed.record.value.unwrap_or_default();
                    expected.insert((topic.clone(), partition, value));
                }
            }
            assert_eq!(placed, count, "{topic}: records stored over its partitions");
        }
        let counts = partition_counts(&broker);
        for (topic, partitions) in &counts {
            if topic.starts_with(&format!("auto-{round}-")) {
                assert_eq!(*partitions, PARTITIONS as usize, "{topic}");
                for partition in 0..PARTITIONS {
                    // Every partition answers ListOffsets (no
                    // UNKNOWN_TOPIC_OR_PARTITION for one never opened).
                    kafka::watermarks(&bootstrap, topic, partition);
                }
            }
        }
        assert_eq!(
            counts
                .keys()
                .filter(|topic| topic.starts_with(&format!("auto-{round}-")))
                .count(),
            2 * CLIENTS,
            "topics of round {round}: {counts:?}"
        );
    }
    consumer.wait_for(&expected, &broker);
    broker.assert_running();
    // Each automatic creation is logged at info, with the API that made it.
    let stderr = broker
        .data_dir()
        .parent()
        .expect("the data directory has a parent")
        .join("logs")
        .join("stderr-0.log");
    let log = std::fs::read_to_string(&stderr).expect("reading the broker's stderr");
    assert!(
        log.lines().any(|line| line.contains("auto-created topic")
            && line.contains("topic=auto-0-kcat-0")
            && line.contains("partitions=3")
            && line.contains("api=")),
        "no info line for the auto-created topic auto-0-kcat-0 in {}",
        stderr.display()
    );
}

/// The key of a group the broker coordinates, for FindCoordinator.
const GROUP: &str = "fresh-broker-group";

/// On a fresh broker, FindCoordinator (which creates the 50 partitions of
/// `__consumer_offsets`) and CreateTopics arrive at the same moment on
/// several connections. Before the fix the offsets topic was left with
/// some of its partitions never opened, and the group coordinator stayed
/// unavailable.
#[test]
fn find_coordinator_and_create_topics_at_once_on_a_fresh_broker_leave_a_complete_offsets_topic() {
    const FIND_CLIENTS: usize = 3;
    const CREATE_CLIENTS: usize = 3;
    for round in 0..ROUNDS {
        let mut broker =
            Broker::start_with_args(&format!("fresh-coordinator-{round}"), &BROKER_ARGS);
        let bootstrap = broker.bootstrap();
        let barrier = Arc::new(Barrier::new(FIND_CLIENTS + CREATE_CLIENTS));
        let mut threads: Vec<JoinHandle<Result<(), String>>> = Vec::new();
        for client in 0..FIND_CLIENTS {
            let mut connection = Connection::open(&bootstrap).expect("connecting");
            let version = connection
                .negotiate(ApiKey::FindCoordinator, 0..=3)
                .expect("FindCoordinator version");
            let barrier = Arc::clone(&barrier);
            threads.push(std::thread::spawn(move || {
                let request = FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_string(format!("{GROUP}-{client}")))
                    .with_key_type(0);
                barrier.wait();
                let response: FindCoordinatorResponse = connection
                    .send(&request, version)
                    .map_err(|error| format!("FindCoordinator: {error}"))?;
                match response.error_code {
                    0 => Ok(()),
                    code => Err(format!(
                        "FindCoordinator answered error {code}: {:?}",
                        response.error_message
                    )),
                }
            }));
        }
        for client in 0..CREATE_CLIENTS {
            let mut connection = Connection::open(&bootstrap).expect("connecting");
            let version = connection
                .negotiate(ApiKey::CreateTopics, 0..=5)
                .expect("CreateTopics version");
            let barrier = Arc::clone(&barrier);
            threads.push(std::thread::spawn(move || {
                let name = format!("fresh-{client}");
                let request = CreateTopicsRequest::default()
                    .with_topics(vec![
                        CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.clone())))
                            .with_num_partitions(PARTITIONS)
                            .with_replication_factor(1),
                    ])
                    .with_timeout_ms(30_000);
                barrier.wait();
                let response: CreateTopicsResponse = connection
                    .send(&request, version)
                    .map_err(|error| format!("CreateTopics {name}: {error}"))?;
                match response.topics.first().map(|topic| topic.error_code) {
                    Some(0) => Ok(()),
                    other => Err(format!(
                        "CreateTopics {name} answered {other:?}: {:?}",
                        response.topics
                    )),
                }
            }));
        }
        for thread in threads {
            if let Err(error) = thread.join().expect("a client thread panicked") {
                panic!("round {round}: {error}\n{}", broker.stderr_tail());
            }
        }
        let offsets_partitions = std::fs::read_dir(broker.data_dir())
            .expect("listing the data directory")
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("__consumer_offsets-")
            })
            .count();
        assert_eq!(
            offsets_partitions, 50,
            "round {round}: __consumer_offsets directories"
        );
        let counts = partition_counts(&broker);
        assert_eq!(counts.get("__consumer_offsets"), Some(&50), "round {round}");
        for client in 0..CREATE_CLIENTS {
            assert_eq!(
                counts.get(&format!("fresh-{client}")),
                Some(&(PARTITIONS as usize))
            );
        }
        a_group_consumes_and_commits(&broker, "fresh-0");
        broker.assert_running();
    }
}

/// A consumer group reads every record of `topic` and commits; the
/// committed offsets read back.
fn a_group_consumes_and_commits(broker: &Broker, topic: &str) {
    let expected = produce_to_every_partition(broker, topic);
    let collector = Collector::subscribe(&broker.bootstrap(), GROUP, vec![topic.to_string()]);
    collector.wait_for(&expected, broker);
    drop(collector);
    let consumer: BaseConsumer = kafka::config(&broker.bootstrap())
        .set("group.id", GROUP)
        .create()
        .expect("creating a consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(partitions, kafka::CALL_TIMEOUT)
        .expect("OffsetFetch");
    for element in committed.elements() {
        assert_eq!(
            element.offset(),
            Offset::Offset(RECORDS_PER_PARTITION as i64),
            "committed offset of {topic}/{}",
            element.partition()
        );
    }
}
