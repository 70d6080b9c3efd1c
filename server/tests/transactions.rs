//! Transactions end to end with the rdkafka crate (librdkafka): the
//! transaction coordinator (FindCoordinator key type 1, InitProducerId with
//! a transactional id, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
//! TxnOffsetCommit) and the partitions' data path (markers, last stable
//! offset, aborted transactions) against a real `sluice` process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use support::Broker;
use support::cluster::{Cluster, wait_until};
use support::kafka;

/// Time limit of a transactional call (init, commit, abort).
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

fn transactional_producer(bootstrap: &str, id: &str, settings: &[(&str, &str)]) -> BaseProducer {
    let mut config = kafka::config(bootstrap);
    config.set("transactional.id", id);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer: BaseProducer = config.create().expect("creating a transactional producer");
    producer
        .init_transactions(TXN_TIMEOUT)
        .unwrap_or_else(|error| panic!("init_transactions({id}): {error}"));
    producer
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, value: &str) {
    loop {
        let record = BaseRecord::<(), str>::to(topic)
            .partition(partition)
            .payload(value);
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => panic!("send to {topic}/{partition}: {error}"),
        }
    }
}

fn read(bootstrap: &str, topic: &str, partitions: i32, committed: bool) -> Vec<(i32, String)> {
    kafka::read_values(bootstrap, topic, partitions, committed)
}

fn sorted(mut values: Vec<(i32, String)>) -> Vec<(i32, String)> {
    values.sort();
    values
}

fn pairs(list: &[(i32, &str)]) -> Vec<(i32, String)> {
    sorted(
        list.iter()
            .map(|(partition, value)| (*partition, value.to_string()))
            .collect(),
    )
}

#[test]
fn committed_records_are_read_committed_and_aborted_ones_only_read_uncommitted() {
    let broker = Broker::start("txn-commit-abort");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-a", 2, &[]);
    kafka::create_topic(&bootstrap, "txn-b", 1, &[]);
    let producer = transactional_producer(&bootstrap, "txn-commit-abort", &[]);

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-a", 0, "committed-a0");
    send(&producer, "txn-a", 1, "committed-a1");
    send(&producer, "txn-b", 0, "committed-b0");
    producer.commit_transaction(TXN_TIMEOUT).expect("commit");

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-a", 0, "aborted-a0");
    send(&producer, "txn-b", 0, "aborted-b0");
    producer.flush(TXN_TIMEOUT).expect("flush");
    producer.abort_transaction(TXN_TIMEOUT).expect("abort");

    // Back-to-back transactions: each AddPartitionsToTxn may find the
    // previous commit's markers still being written
    // (CONCURRENT_TRANSACTIONS), which the client retries.
    for round in 0..5 {
        producer.begin_transaction().expect("begin");
        send(&producer, "txn-b", 0, &format!("round-{round}"));
        producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    }

    let mut committed_b = vec![(0, "committed-b0")];
    let rounds: Vec<String> = (0..5).map(|round| format!("round-{round}")).collect();
    committed_b.extend(rounds.iter().map(|value| (0, value.as_str())));
    assert_eq!(
        sorted(read(&bootstrap, "txn-a", 2, true)),
        pairs(&[(0, "committed-a0"), (1, "committed-a1")])
    );
    assert_eq!(
        sorted(read(&bootstrap, "txn-b", 1, true)),
        pairs(&committed_b)
    );
    assert_eq!(
        sorted(read(&bootstrap, "txn-a", 2, false)),
        pairs(&[(0, "committed-a0"), (0, "aborted-a0"), (1, "committed-a1")])
    );
    let mut everything_b = committed_b.clone();
    everything_b.push((0, "aborted-b0"));
    assert_eq!(
        sorted(read(&bootstrap, "txn-b", 1, false)),
        pairs(&everything_b)
    );
}

#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let broker = Broker::start("txn-fencing");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-fenced", 1, &[]);
    let zombie = transactional_producer(&bootstrap, "txn-zombie", &[]);
    zombie.begin_transaction().expect("begin");
    send(&zombie, "txn-fenced", 0, "from-the-zombie");
    zombie.flush(TXN_TIMEOUT).expect("flush");

    // Its InitProducerId aborts the zombie's open transaction and bumps
    // the epoch.
    let successor = transactional_producer(&bootstrap, "txn-zombie", &[]);
    let error = zombie
        .commit_transaction(TXN_TIMEOUT)
        .expect_err("the fenced producer's commit");
    match &error {
        KafkaError::Transaction(inner) => assert!(
            inner.is_fatal() || inner.txn_requires_abort(),
            "the zombie is fenced: {error}"
        ),
        other => panic!("not a transaction error: {other}"),
    }

    successor.begin_transaction().expect("begin");
    send(&successor, "txn-fenced", 0, "from-the-successor");
    successor.commit_transaction(TXN_TIMEOUT).expect("commit");
    assert_eq!(
        read(&bootstrap, "txn-fenced", 1, true),
        pairs(&[(0, "from-the-successor")])
    );
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let broker = Broker::start("txn-timeout");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-slow", 1, &[]);
    let producer = transactional_producer(
        &bootstrap,
        "txn-slow",
        &[
            ("transaction.timeout.ms", "2000"),
            ("socket.timeout.ms", "2000"),
        ],
    );
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-slow", 0, "too-late");
    producer.flush(TXN_TIMEOUT).expect("flush");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        producer.commit_transaction(TXN_TIMEOUT).is_err(),
        "a commit after the coordinator aborted the transaction"
    );
    assert_eq!(read(&bootstrap, "txn-slow", 1, true), Vec::new());
    assert_eq!(
        read(&bootstrap, "txn-slow", 1, false),
        pairs(&[(0, "too-late")])
    );
}

#[test]
fn a_transaction_timeout_above_the_maximum_is_refused() {
    let broker = Broker::start("txn-timeout-max");
    let mut config = kafka::config(&broker.bootstrap());
    config
        .set("transactional.id", "txn-too-long")
        .set("transaction.timeout.ms", "900001");
    let producer: BaseProducer = config.create().expect("creating a producer");
    let error = producer
        .init_transactions(TXN_TIMEOUT)
        .expect_err("a timeout above transaction.max.timeout.ms");
    assert!(
        error.to_string().to_lowercase().contains("timeout"),
        "the error names the timeout: {error}"
    );
}

/// The offsets group `group` has committed for `topic` partition 0 (None:
/// none), asked by a read_uncommitted consumer (OffsetFetch without
/// require_stable: pending transactional offsets are simply not shown).
fn committed_offset(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let committed =
        fetch_committed(bootstrap, group, topic, false, kafka::CALL_TIMEOUT).expect("OffsetFetch");
    match committed {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

/// OffsetFetch of `topic` partition 0 for `group`; `stable`: as a
/// read_committed consumer asks (require_stable: librdkafka retries
/// UNSTABLE_OFFSET_COMMIT until `timeout`).
fn fetch_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    stable: bool,
    timeout: Duration,
) -> Result<Offset, KafkaError> {
    let consumer: BaseConsumer = kafka::config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if stable {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("creating a consumer");
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(topic, 0);
    let committed = consumer.committed_offsets(partitions, timeout)?;
    Ok(committed.find_partition(topic, 0).expect("asked").offset())
}

#[test]
fn offsets_sent_to_a_transaction_are_visible_only_once_it_commits() {
    let broker = Broker::start("txn-offsets");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-in", 1, &[]);
    kafka::create_topic(&bootstrap, "txn-out", 1, &[]);
    let group: BaseConsumer = kafka::config(&bootstrap)
        .set("group.id", "txn-group")
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating the group's consumer");
    let metadata = group.group_metadata().expect("group metadata");
    let producer = transactional_producer(&bootstrap, "txn-offsets", &[]);
    let offsets = |offset: i64| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("txn-in", 0, Offset::Offset(offset))
            .expect("offset");
        list
    };

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-out", 0, "out-1");
    producer
        .send_offsets_to_transaction(&offsets(5), &metadata, TXN_TIMEOUT)
        .expect("send_offsets_to_transaction");
    assert_eq!(
        committed_offset(&bootstrap, "txn-group", "txn-in"),
        None,
        "pending until the commit"
    );
    assert!(
        fetch_committed(
            &bootstrap,
            "txn-group",
            "txn-in",
            true,
            Duration::from_secs(2)
        )
        .is_err(),
        "a read_committed consumer waits for the pending offsets (UNSTABLE_OFFSET_COMMIT)"
    );
    producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    // A read_committed consumer's OffsetFetch waits out the markers.
    assert_eq!(
        fetch_committed(&bootstrap, "txn-group", "txn-in", true, kafka::CALL_TIMEOUT)
            .expect("OffsetFetch"),
        Offset::Offset(5)
    );
    let deadline = Instant::now() + kafka::CALL_TIMEOUT;
    while committed_offset(&bootstrap, "txn-group", "txn-in") != Some(5) {
        assert!(
            Instant::now() < deadline,
            "the committed offset never showed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    producer.begin_transaction().expect("begin");
    send(&producer, "txn-out", 0, "out-2");
    producer
        .send_offsets_to_transaction(&offsets(9), &metadata, TXN_TIMEOUT)
        .expect("send_offsets_to_transaction");
    producer.flush(TXN_TIMEOUT).expect("flush");
    producer.abort_transaction(TXN_TIMEOUT).expect("abort");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        committed_offset(&bootstrap, "txn-group", "txn-in"),
        Some(5),
        "an aborted transaction's offsets are dropped"
    );
}

#[test]
fn the_coordinator_resumes_after_a_restart() {
    let mut broker = Broker::start("txn-restart");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-kept", 1, &[]);
    {
        let producer = transactional_producer(&bootstrap, "txn-kept", &[]);
        producer.begin_transaction().expect("begin");
        send(&producer, "txn-kept", 0, "before-restart");
        producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    }
    broker.restart();
    let producer = transactional_producer(&bootstrap, "txn-kept", &[]);
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-kept", 0, "after-restart");
    producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    assert_eq!(
        sorted(read(&bootstrap, "txn-kept", 1, true)),
        pairs(&[(0, "after-restart"), (0, "before-restart")])
    );
}

/// Flags of the cluster tests' brokers (fast heartbeats so a killed broker
/// is noticed quickly).
const CLUSTER_ARGS: [&str; 2] = ["--broker-heartbeat-interval-ms", "500"];

/// Every broker agrees on a leader for each of `topic`'s `partitions`.
fn agreed_leaders(cluster: &Cluster, topic: &str, partitions: usize) -> BTreeMap<i32, i32> {
    wait_until(
        &format!("every broker lists {topic} with a leader for each partition"),
        Duration::from_secs(60),
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

#[test]
fn the_coordinator_writes_markers_to_partitions_led_by_other_brokers() {
    const PARTITIONS: usize = 6;
    let cluster = Cluster::start("txn-markers", 3, &CLUSTER_ARGS);
    let bootstrap = cluster.bootstrap();
    kafka::create_topic(&bootstrap, "txn-spread", PARTITIONS as i32, &[]);
    let leaders = agreed_leaders(&cluster, "txn-spread", PARTITIONS);
    assert_eq!(
        leaders.values().copied().collect::<BTreeSet<i32>>().len(),
        3,
        "the partitions are led by every broker: {leaders:?}"
    );
    let producer = transactional_producer(&bootstrap, "txn-spread", &[]);
    producer.begin_transaction().expect("begin");
    for partition in 0..PARTITIONS as i32 {
        send(
            &producer,
            "txn-spread",
            partition,
            &format!("committed-{partition}"),
        );
    }
    producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    producer.begin_transaction().expect("begin");
    for partition in 0..PARTITIONS as i32 {
        send(
            &producer,
            "txn-spread",
            partition,
            &format!("aborted-{partition}"),
        );
    }
    producer.flush(TXN_TIMEOUT).expect("flush");
    producer.abort_transaction(TXN_TIMEOUT).expect("abort");
    let committed: Vec<(i32, String)> = (0..PARTITIONS as i32)
        .map(|partition| (partition, format!("committed-{partition}")))
        .collect();
    assert_eq!(
        sorted(read(&bootstrap, "txn-spread", PARTITIONS as i32, true)),
        sorted(committed)
    );
    assert_eq!(
        read(&bootstrap, "txn-spread", PARTITIONS as i32, false).len(),
        2 * PARTITIONS,
        "read_uncommitted sees both transactions"
    );
}

#[test]
fn a_new_coordinator_aborts_the_transaction_of_a_killed_ones_producer() {
    const PARTITIONS: usize = 3;
    let mut cluster = Cluster::start("txn-failover", 3, &CLUSTER_ARGS);
    let bootstrap = cluster.bootstrap();
    kafka::create_topic_replicated(&bootstrap, "txn-replicated", PARTITIONS as i32, 3, &[]);
    agreed_leaders(&cluster, "txn-replicated", PARTITIONS);
    let zombie = transactional_producer(&bootstrap, "txn-failover", &[]);
    zombie.begin_transaction().expect("begin");
    for partition in 0..PARTITIONS as i32 {
        send(&zombie, "txn-replicated", partition, "from-the-zombie");
    }
    zombie.flush(TXN_TIMEOUT).expect("flush");

    let state_partition = sluice_server::group::partition_for(
        "txn-failover",
        sluice_server::txn::TRANSACTION_STATE_PARTITIONS,
    );
    let coordinator =
        wait_until(
            "the coordinator is known",
            Duration::from_secs(30),
            || match cluster.partition_leader(
                1,
                sluice_server::txn::TRANSACTION_STATE_TOPIC,
                state_partition,
            ) {
                Some(Ok(leader)) => Ok(leader),
                other => Err(format!("{other:?}")),
            },
        );
    cluster.kill9(coordinator);
    drop(zombie);

    let survivors: Vec<String> = cluster
        .nodes()
        .filter(|node| *node != coordinator)
        .map(|node| cluster.broker(node).bootstrap())
        .collect();
    let bootstrap = survivors.join(",");
    // The next coordinator loads the id with its transaction Ongoing: the
    // successor's InitProducerId aborts it first.
    let successor = transactional_producer(&bootstrap, "txn-failover", &[]);
    successor.begin_transaction().expect("begin");
    for partition in 0..PARTITIONS as i32 {
        send(
            &successor,
            "txn-replicated",
            partition,
            "from-the-successor",
        );
    }
    successor.commit_transaction(TXN_TIMEOUT).expect("commit");
    let expected: Vec<(i32, String)> = (0..PARTITIONS as i32)
        .map(|partition| (partition, "from-the-successor".to_string()))
        .collect();
    assert_eq!(
        sorted(read(&bootstrap, "txn-replicated", PARTITIONS as i32, true)),
        expected
    );
}

#[test]
fn describe_and_list_transactions_show_the_coordinators_state() {
    use kafka_protocol::messages::{DescribeTransactionsRequest, ListTransactionsRequest};
    use kafka_protocol::protocol::StrBytes;
    use sluice_server::admin::client::Connection;

    let broker = Broker::start("txn-describe");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "txn-described", 2, &[]);
    let producer = transactional_producer(&bootstrap, "txn-describe", &[]);
    producer.begin_transaction().expect("begin");
    send(&producer, "txn-described", 1, "open");
    producer.flush(TXN_TIMEOUT).expect("flush");

    let mut connection = Connection::open(&bootstrap).expect("connecting");
    let describe = |connection: &mut Connection| {
        let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![
            StrBytes::from_static_str("txn-describe").into(),
            StrBytes::from_static_str("txn-unknown").into(),
        ]);
        connection
            .call(&request, 0..=0)
            .expect("DescribeTransactions")
            .0
    };
    let described = describe(&mut connection);
    let open = &described.transaction_states[0];
    assert_eq!(open.error_code, 0);
    assert_eq!(open.transaction_state.as_str(), "Ongoing");
    assert_eq!(open.producer_epoch, 0);
    assert_eq!(open.topics.len(), 1);
    assert_eq!(open.topics[0].topic.0.as_str(), "txn-described");
    assert_eq!(open.topics[0].partitions, vec![1]);
    assert_eq!(
        described.transaction_states[1].error_code,
        kafka_protocol::error::ResponseError::TransactionalIdNotFound.code()
    );

    let request = ListTransactionsRequest::default()
        .with_state_filters(vec![
            StrBytes::from_static_str("Ongoing"),
            StrBytes::from_static_str("Bogus"),
        ])
        .with_duration_filter(-1);
    let listed = connection
        .call(&request, 0..=1)
        .expect("ListTransactions")
        .0;
    assert_eq!(
        listed.unknown_state_filters,
        vec![StrBytes::from_static_str("Bogus")]
    );
    let ids: Vec<&str> = listed
        .transaction_states
        .iter()
        .map(|state| state.transactional_id.0.as_str())
        .collect();
    assert_eq!(ids, vec!["txn-describe"]);

    producer.commit_transaction(TXN_TIMEOUT).expect("commit");
    let finished = wait_until("the commit completes", Duration::from_secs(30), || {
        let described = describe(&mut connection);
        let state = described.transaction_states[0]
            .transaction_state
            .to_string();
        if state == "CompleteCommit" {
            Ok(described)
        } else {
            Err(state)
        }
    });
    assert!(finished.transaction_states[0].topics.is_empty());
}

/// A transaction opened with raw requests on partition `partition` of
/// `topic`, led by another broker than its coordinator.
struct RawTransaction {
    connection: sluice_server::admin::client::Connection,
    coordinator: i32,
    /// The partition's leader (not the coordinator).
    leader: i32,
    end: kafka_protocol::messages::EndTxnRequest,
}

impl RawTransaction {
    /// Find `id`'s coordinator, initialize the id, add a partition of
    /// `topic` (`leaders`: partition -> leader) led by another broker.
    fn begin(
        cluster: &Cluster,
        id: &'static str,
        topic: &'static str,
        leaders: &BTreeMap<i32, i32>,
    ) -> RawTransaction {
        use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
        use kafka_protocol::messages::{AddPartitionsToTxnRequest, EndTxnRequest};
        use kafka_protocol::protocol::StrBytes;
        use sluice_server::admin::client::Connection;

        let coordinator = wait_until("FindCoordinator", Duration::from_secs(30), || {
            cluster.transaction_coordinator(1, id)
        });
        let (&partition, &leader) = leaders
            .iter()
            .find(|(_, leader)| **leader != coordinator)
            .expect("a partition led by another broker");
        let mut connection =
            Connection::open(&cluster.broker(coordinator).bootstrap()).expect("connecting");
        let initialized = wait_until("InitProducerId", Duration::from_secs(30), || {
            let response = raw_init(&mut connection, id);
            if response.error_code == 0 {
                Ok(response)
            } else {
                Err(format!("error {}", response.error_code))
            }
        });
        let mut added_topic = AddPartitionsToTxnTopic::default();
        added_topic.name = StrBytes::from_static_str(topic).into();
        added_topic.partitions = vec![partition];
        let mut add = AddPartitionsToTxnRequest::default();
        add.v3_and_below_transactional_id = StrBytes::from_static_str(id).into();
        add.v3_and_below_producer_id = initialized.producer_id;
        add.v3_and_below_producer_epoch = initialized.producer_epoch;
        add.v3_and_below_topics = vec![added_topic];
        let (added, _) = connection.call(&add, 3..=3).expect("AddPartitionsToTxn");
        assert_eq!(
            added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            0
        );
        let end = EndTxnRequest::default()
            .with_transactional_id(StrBytes::from_static_str(id).into())
            .with_producer_id(initialized.producer_id)
            .with_producer_epoch(initialized.producer_epoch)
            .with_committed(true);
        RawTransaction {
            connection,
            coordinator,
            leader,
            end,
        }
    }

    /// EndTxn (commit): its error code.
    fn end(&mut self) -> Result<i16, String> {
        let (response, _) = self
            .connection
            .call(&self.end, 0..=3)
            .map_err(|error| error.to_string())?;
        Ok(response.error_code)
    }

    /// Retry EndTxn until it succeeds (the transaction completed).
    fn wait_completed(&mut self, timeout: Duration) {
        wait_until("the transaction completes", timeout, || {
            match self.end()? {
                0 => Ok(()),
                code => Err(format!("error {code}")),
            }
        });
    }
}

/// InitProducerId for transactional id `id`.
fn raw_init(
    connection: &mut sluice_server::admin::client::Connection,
    id: &'static str,
) -> kafka_protocol::messages::InitProducerIdResponse {
    use kafka_protocol::messages::InitProducerIdRequest;
    use kafka_protocol::protocol::StrBytes;
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(StrBytes::from_static_str(id).into()))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    connection.call(&request, 0..=4).expect("InitProducerId").0
}

#[test]
fn end_txn_while_markers_wait_for_an_offline_partition_is_concurrent_transactions() {
    use kafka_protocol::error::ResponseError;

    const ID: &str = "txn-stuck";
    // __transaction_state with one replica, so that killing another broker
    // leaves the coordinator's own writes alone.
    let mut cluster = Cluster::start(
        "txn-stuck",
        3,
        &[
            "--broker-heartbeat-interval-ms",
            "500",
            "--offsets-topic-replication-factor",
            "1",
        ],
    );
    let bootstrap = cluster.bootstrap();
    kafka::create_topic(&bootstrap, "txn-stuck", 3, &[]);
    let leaders = agreed_leaders(&cluster, "txn-stuck", 3);
    let mut transaction = RawTransaction::begin(&cluster, ID, "txn-stuck", &leaders);

    // The partition's only replica goes away: its marker cannot be written.
    cluster.kill9(transaction.leader);
    assert_eq!(
        transaction.end(),
        Ok(0),
        "answered once PrepareCommit is written"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        transaction.end(),
        Ok(ResponseError::ConcurrentTransactions.code()),
        "a second EndTxn while the markers are still being written"
    );
    assert_eq!(
        raw_init(&mut transaction.connection, ID).error_code,
        ResponseError::ConcurrentTransactions.code(),
        "InitProducerId waits for the completion too"
    );

    // The partition comes back: the marker is written and the transaction
    // completes; the client's retry of EndTxn then succeeds.
    cluster.start_again(transaction.leader);
    transaction.wait_completed(Duration::from_secs(60));
}

/// The completion (CompleteCommit in __transaction_state) is written again
/// until it is: its first write fails here (a follower of the coordinator's
/// partition was killed and stays in its ISR for longer than the write
/// waits), and the transaction completes once the ISR shrank. Before, the
/// completion was given up after one failed write and the id answered
/// CONCURRENT_TRANSACTIONS until the partition's leadership moved.
#[test]
fn a_completion_whose_write_fails_is_written_again() {
    const ID: &str = "txn-complete-retry";
    let mut cluster = Cluster::start(
        ID,
        3,
        &[
            "--broker-heartbeat-interval-ms",
            "500",
            // A dead follower stays in the ISR longer than the completion
            // waits for its commit (5 s).
            "--replica-lag-time-max-ms",
            "15000",
        ],
    );
    let bootstrap = cluster.bootstrap();
    kafka::create_topic(&bootstrap, ID, 3, &[]);
    let leaders = agreed_leaders(&cluster, ID, 3);
    let mut transaction = RawTransaction::begin(&cluster, ID, ID, &leaders);
    let (coordinator, data_leader) = (transaction.coordinator, transaction.leader);
    let other = cluster
        .nodes()
        .find(|node| *node != coordinator && *node != data_leader)
        .expect("a third broker");

    assert_eq!(transaction.end(), Ok(0), "PrepareCommit written");
    // The markers wait for the partition's only replica; meanwhile the
    // coordinator partition's other follower dies too.
    cluster.kill9(data_leader);
    std::thread::sleep(Duration::from_secs(2));
    cluster.kill9(other);
    // The marker can be written again; the completion's first write cannot
    // commit (a dead ISR member).
    cluster.start_again(data_leader);
    transaction.wait_completed(Duration::from_secs(90));
}
