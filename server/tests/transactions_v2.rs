//! KIP-890 against real `sluice` processes.
//!
//! Transaction protocol v2 is what Kafka 4.x Java clients speak when the
//! broker finalizes the `transaction.version` feature at 2; no client in
//! this machine's registries speaks it (librdkafka and kafka-python stay
//! on v1), so these tests send the requests the Java client documents, in
//! its order, with kafka-protocol: no AddPartitionsToTxn or
//! AddOffsetsToTxn; Produce v12, TxnOffsetCommit v5 and EndTxn v5, whose
//! answer carries the bumped epoch. What they wrote is read back with
//! librdkafka (read_committed and read_uncommitted consumers, committed
//! offsets). Part 1 (verification for v1 clients) and
//! transactional.id.expiration.ms are tested here too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse, EndTxnRequest,
    EndTxnResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest,
    ProduceResponse, RequestKind, TopicName, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use sluice_engine::TimestampMs;
use sluice_engine::batch::BatchBuilder;
use support::Broker;
use support::cluster::{Cluster, wait_until};
use support::kafka::{self, create_topic, create_topic_replicated};
use support::wire;

const NONE: i16 = 0;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const CONCURRENT_TRANSACTIONS: i16 = 51;
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
const CONVERGE: Duration = Duration::from_secs(30);

/// Poll `condition` until it gives a value (within [`CONVERGE`]).
fn until<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    wait_until(what, CONVERGE, || {
        condition().ok_or_else(|| "not yet".to_string())
    })
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn connect(address: std::net::SocketAddr) -> TcpStream {
    wire::connect(address)
}

/// The node coordinating `key` (a group or a transactional id), once one
/// answers.
fn find_coordinator(stream: &mut TcpStream, key: &str, key_type: i8) -> i32 {
    until(&format!("the coordinator of {key}"), || {
        let request = FindCoordinatorRequest::default()
            .with_key_type(key_type)
            .with_coordinator_keys(vec![str_bytes(key)]);
        let mut body = wire::call(
            stream,
            ApiKey::FindCoordinator,
            4,
            RequestKind::FindCoordinator(request),
        );
        let response = FindCoordinatorResponse::decode(&mut body, 4).unwrap();
        let coordinator = &response.coordinators[0];
        (coordinator.error_code == NONE).then_some(coordinator.node_id.0)
    })
}

/// InitProducerId for `transactional_id`, retried while the coordinator
/// loads: (producer id, epoch).
fn init_producer_id(stream: &mut TcpStream, transactional_id: &str, version: i16) -> (i64, i16) {
    until(&format!("InitProducerId({transactional_id})"), || {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(str_bytes(transactional_id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
        let mut body = wire::call(
            stream,
            ApiKey::InitProducerId,
            version,
            RequestKind::InitProducerId(request),
        );
        let response = InitProducerIdResponse::decode(&mut body, version).unwrap();
        (response.error_code == NONE).then_some((response.producer_id.0, response.producer_epoch))
    })
}

/// A transactional batch of `values` (one record each).
fn batch(producer: (i64, i16), sequence: i32, values: &[String]) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder
        .producer(producer.0, producer.1, sequence)
        .transactional(true);
    for value in values {
        builder.record(None, Some(value.as_bytes()), TimestampMs(1_700_000_000_000));
    }
    builder.build()
}

/// Produce (acks=all) one transactional batch; the partition's error code.
fn produce(
    stream: &mut TcpStream,
    version: i16,
    transactional_id: &str,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> i16 {
    produce_answer(stream, version, transactional_id, topic, partition, records).0
}

/// [`produce`]: the partition's error code and base offset.
fn produce_answer(
    stream: &mut TcpStream,
    version: i16,
    transactional_id: &str,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_transactional_id(Some(TransactionalId(str_bytes(transactional_id))))
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let mut body = wire::call(
        stream,
        ApiKey::Produce,
        version,
        RequestKind::Produce(request),
    );
    let response = ProduceResponse::decode(&mut body, version).unwrap();
    let answer = &response.responses[0].partition_responses[0];
    (answer.error_code, answer.base_offset)
}

/// AddPartitionsToTxn v3 (a protocol v1 client adding `topic`/`partition`
/// itself): the partition's error code.
fn add_partition(
    stream: &mut TcpStream,
    transactional_id: &str,
    producer: (i64, i16),
    topic: &str,
    partition: i32,
) -> i16 {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(str_bytes(transactional_id)))
        .with_v3_and_below_producer_id(producer.0.into())
        .with_v3_and_below_producer_epoch(producer.1)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(vec![partition]),
        ]);
    let mut body = wire::call(
        stream,
        ApiKey::AddPartitionsToTxn,
        3,
        RequestKind::AddPartitionsToTxn(request),
    );
    let added = AddPartitionsToTxnResponse::decode(&mut body, 3).unwrap();
    added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

/// EndTxn v5: (error, producer id, epoch).
fn end_txn(
    stream: &mut TcpStream,
    transactional_id: &str,
    producer: (i64, i16),
    commit: bool,
) -> (i16, i64, i16) {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(transactional_id)))
        .with_producer_id(producer.0.into())
        .with_producer_epoch(producer.1)
        .with_committed(commit);
    let mut body = wire::call(stream, ApiKey::EndTxn, 5, RequestKind::EndTxn(request));
    let response = EndTxnResponse::decode(&mut body, 5).unwrap();
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

/// EndTxn v5, retried while the previous transaction completes.
fn end_txn_settled(
    stream: &mut TcpStream,
    transactional_id: &str,
    producer: (i64, i16),
    commit: bool,
) -> (i16, i64, i16) {
    until("EndTxn without CONCURRENT_TRANSACTIONS", || {
        let answer = end_txn(stream, transactional_id, producer, commit);
        (answer.0 != CONCURRENT_TRANSACTIONS).then_some(answer)
    })
}

/// The (partition -> leader) map of `topic`, asked of `node`.
fn leaders(cluster: &Cluster, topic: &str, partitions: usize) -> Vec<i32> {
    until(&format!("leaders of {topic}"), || {
        let leaders = cluster.leaders(1, topic)?;
        (leaders.len() == partitions && leaders.values().all(|leader| *leader > 0))
            .then(|| leaders.values().copied().collect())
    })
}

/// Every value of `topic` (all partitions), read up to the end the
/// isolation level allows.
fn read_values(bootstrap: &str, topic: &str, partitions: i32, committed: bool) -> Vec<String> {
    let consumer: BaseConsumer = kafka::config(bootstrap)
        .set("group.id", "transactions-v2-reader")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut values = Vec::new();
    let mut quiet_since = Instant::now();
    let started = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) && started.elapsed() < CONVERGE {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                values.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into());
                quiet_since = Instant::now();
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
        }
    }
    values.sort();
    values
}

/// The group's committed offset of `topic`/0, as librdkafka fetches it
/// (require_stable: it waits for pending transactional commits).
fn committed_offset(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let consumer: BaseConsumer = kafka::config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .ok()?;
    match committed.find_partition(topic, 0)?.offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

fn api_versions(stream: &mut TcpStream, version: i16) -> ApiVersionsResponse {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(str_bytes("sluice-test"))
        .with_client_software_version(str_bytes("1"));
    let mut body = wire::call(
        stream,
        ApiKey::ApiVersions,
        version,
        RequestKind::ApiVersions(request),
    );
    ApiVersionsResponse::decode(&mut body, version).unwrap()
}

fn max_version(response: &ApiVersionsResponse, api_key: ApiKey) -> i16 {
    response
        .api_keys
        .iter()
        .find(|api| api.api_key == api_key as i16)
        .map_or(-1, |api| api.max_version)
}

#[test]
fn a_v2_client_commits_and_aborts_with_partitions_added_by_the_brokers_and_an_epoch_per_transaction()
 {
    const TOPIC: &str = "v2-out";
    const INPUT: &str = "v2-in";
    const PARTITIONS: i32 = 3;
    const ID: &str = "v2-transform";
    const GROUP: &str = "v2-group";
    let cluster = Cluster::start("txn-v2", 3, &[]);
    let bootstrap = cluster.bootstrap();
    create_topic_replicated(&bootstrap, TOPIC, PARTITIONS, 3, &[]);
    create_topic_replicated(&bootstrap, INPUT, 1, 3, &[]);
    let leaders = leaders(&cluster, TOPIC, PARTITIONS as usize);

    // The feature a Kafka 4.x client looks for before it speaks v2.
    let mut first = connect(cluster.broker(1).address());
    let features = api_versions(&mut first, 4);
    let finalized: Vec<(String, i16)> = features
        .finalized_features
        .iter()
        .map(|feature| (feature.name.to_string(), feature.max_version_level))
        .collect();
    assert_eq!(finalized, vec![("transaction.version".to_string(), 2)]);
    assert!(features.finalized_features_epoch >= 0);
    assert!(
        features
            .supported_features
            .iter()
            .any(|feature| feature.name.as_str() == "transaction.version"
                && feature.max_version == 2)
    );
    assert!(max_version(&features, ApiKey::Produce) >= 12);
    assert!(max_version(&features, ApiKey::EndTxn) >= 5);
    assert!(max_version(&features, ApiKey::TxnOffsetCommit) >= 5);

    let coordinator = find_coordinator(&mut first, ID, KEY_TYPE_TRANSACTION);
    let mut to_coordinator = connect(cluster.broker(coordinator).address());
    let producer = init_producer_id(&mut to_coordinator, ID, 5);
    println!("coordinator {coordinator}, producer {producer:?}, leaders {leaders:?}");

    // Transaction 1: every partition (led by all three brokers, so most
    // adds cross to the coordinator's broker), plus the group's offset.
    for (partition, leader) in leaders.iter().enumerate() {
        let partition = partition as i32;
        let mut stream = connect(cluster.broker(*leader).address());
        let values = vec![
            format!("committed-{partition}-a"),
            format!("committed-{partition}-b"),
        ];
        let error = produce(
            &mut stream,
            12,
            ID,
            TOPIC,
            partition,
            batch(producer, 0, &values),
        );
        assert_eq!(
            error, NONE,
            "Produce v12 to {TOPIC}-{partition} on {leader}"
        );
    }
    let group_coordinator = find_coordinator(&mut first, GROUP, KEY_TYPE_GROUP);
    let mut to_group = connect(cluster.broker(group_coordinator).address());
    let request = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(ID)))
        .with_group_id(GroupId(str_bytes(GROUP)))
        .with_producer_id(producer.0.into())
        .with_producer_epoch(producer.1)
        .with_generation_id(-1)
        .with_member_id(str_bytes(""))
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(str_bytes(INPUT)))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(42)
                        .with_committed_leader_epoch(-1),
                ]),
        ]);
    let mut body = wire::call(
        &mut to_group,
        ApiKey::TxnOffsetCommit,
        5,
        RequestKind::TxnOffsetCommit(request),
    );
    let response = TxnOffsetCommitResponse::decode(&mut body, 5).unwrap();
    assert_eq!(response.topics[0].partitions[0].error_code, NONE);

    let (error, producer_id, epoch) = end_txn(&mut to_coordinator, ID, producer, true);
    assert_eq!(error, NONE, "EndTxn v5 commit");
    assert_eq!(
        (producer_id, epoch),
        (producer.0, producer.1 + 1),
        "the answer carries the bumped epoch"
    );
    let next = (producer_id, epoch);
    // A retry of the same EndTxn (its answer lost) gets the same answer.
    assert_eq!(
        end_txn_settled(&mut to_coordinator, ID, producer, true),
        (NONE, next.0, next.1)
    );
    // A late write of the ended transaction is fenced on its partition.
    let mut to_leader_0 = connect(cluster.broker(leaders[0]).address());
    let late = produce(
        &mut to_leader_0,
        12,
        ID,
        TOPIC,
        0,
        batch(producer, 2, &["late-write".to_string()]),
    );
    assert_eq!(
        late, INVALID_PRODUCER_EPOCH,
        "a zombie write after the commit"
    );

    // Transaction 2, with the new epoch, aborted.
    let values = vec!["aborted-0".to_string()];
    let error = until("the second transaction's first write", || {
        let error = produce(&mut to_leader_0, 12, ID, TOPIC, 0, batch(next, 0, &values));
        // NOT_ENOUGH_REPLICAS (19): the coordinator still completes the
        // first transaction; the client retries.
        (error != 19).then_some(error)
    });
    assert_eq!(error, NONE);
    let (error, producer_id, epoch) = end_txn_settled(&mut to_coordinator, ID, next, false);
    assert_eq!((error, producer_id, epoch), (NONE, next.0, next.1 + 1));
    // An abort with nothing open still bumps the epoch (it fences writes in
    // flight).
    let (error, _, epoch_after_empty_abort) =
        end_txn_settled(&mut to_coordinator, ID, (producer_id, epoch), false);
    assert_eq!((error, epoch_after_empty_abort), (NONE, epoch + 1));

    let mut expected: Vec<String> = (0..PARTITIONS)
        .flat_map(|partition| {
            [
                format!("committed-{partition}-a"),
                format!("committed-{partition}-b"),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(read_values(&bootstrap, TOPIC, PARTITIONS, true), expected);
    let mut uncommitted = expected.clone();
    uncommitted.push("aborted-0".to_string());
    uncommitted.sort();
    assert_eq!(
        read_values(&bootstrap, TOPIC, PARTITIONS, false),
        uncommitted
    );
    assert_eq!(
        until("the transactional offset commit", || {
            committed_offset(&bootstrap, GROUP, INPUT).filter(|offset| *offset == 42)
        }),
        42
    );
}

#[test]
fn a_v1_transactional_batch_for_a_partition_its_coordinator_did_not_add_is_refused() {
    const TOPIC: &str = "v1-verified";
    const ID: &str = "v1-verified-txn";
    let broker = Broker::start("txn-v1-verification");
    create_topic(&broker.bootstrap(), TOPIC, 1, &[]);
    let mut stream = connect(broker.address());

    // ApiVersions v3: the finalized level, but no supported feature whose
    // minimum is 0 (older clients reject those; Kafka omits them too).
    let v3 = api_versions(&mut stream, 3);
    assert!(v3.supported_features.is_empty());
    assert_eq!(v3.finalized_features.len(), 1);

    let _ = find_coordinator(&mut stream, ID, KEY_TYPE_TRANSACTION);
    let producer = init_producer_id(&mut stream, ID, 4);
    let values = vec!["hanging".to_string()];
    // No AddPartitionsToTxn: a batch that would open a transaction no
    // marker would ever end.
    let refused = produce(&mut stream, 9, ID, TOPIC, 0, batch(producer, 0, &values));
    assert_eq!(
        refused, INVALID_TXN_STATE,
        "an unverified transactional batch"
    );
    let (low, high) = kafka::watermarks(&broker.bootstrap(), TOPIC, 0);
    assert_eq!((low, high), (0, 0), "nothing was appended");

    assert_eq!(add_partition(&mut stream, ID, producer, TOPIC, 0), NONE);
    let accepted = produce(&mut stream, 9, ID, TOPIC, 0, batch(producer, 0, &values));
    assert_eq!(
        accepted, NONE,
        "the same batch once the partition was added"
    );
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(ID)))
        .with_producer_id(producer.0.into())
        .with_producer_epoch(producer.1)
        .with_committed(true);
    let mut body = wire::call(&mut stream, ApiKey::EndTxn, 4, RequestKind::EndTxn(request));
    let ended = EndTxnResponse::decode(&mut body, 4).unwrap();
    assert_eq!(ended.error_code, NONE);
    assert_eq!(
        read_values(&broker.bootstrap(), TOPIC, 1, true),
        vec!["hanging".to_string()]
    );
}

/// KIP-890 part 1 and a producer's pipeline: the first batch of a
/// transaction on a partition (sequences 0..=1) fails before its append,
/// here because its verification finds the partition not added yet, and
/// the next batch of the pipeline (sequence 2) then passes its own. The
/// producer has no state on the partition, so its sequence alone would let
/// the second batch be stored first, and the retried first one would then
/// be out of order for good. The leader remembers the lowest sequence it
/// verified (Kafka's VerificationStateEntry, checked since 3.6) and refuses
/// the second with OUT_OF_ORDER_SEQUENCE_NUMBER, which the Java client
/// retries for a batch that is not the next it waits for; once the first
/// is retried, both are stored in order. (The leader handles a
/// connection's requests in order, so sending them one after the other
/// is what a pipeline looks like to it.)
#[test]
fn a_pipelined_batch_waits_for_the_first_one_that_failed_before_its_append() {
    const TOPIC: &str = "v1-pipeline";
    const ID: &str = "v1-pipeline-txn";
    let broker = Broker::start("txn-v1-pipeline");
    create_topic(&broker.bootstrap(), TOPIC, 1, &[]);
    let mut stream = connect(broker.address());
    let _ = find_coordinator(&mut stream, ID, KEY_TYPE_TRANSACTION);
    let producer = init_producer_id(&mut stream, ID, 4);
    let values = ["first-0", "first-1", "second-2"].map(String::from);
    let first = || batch(producer, 0, &values[..2]);
    let second = || batch(producer, 2, &values[2..]);

    assert_eq!(
        produce(&mut stream, 9, ID, TOPIC, 0, first()),
        INVALID_TXN_STATE
    );
    assert_eq!(add_partition(&mut stream, ID, producer, TOPIC, 0), NONE);
    assert_eq!(
        produce(&mut stream, 9, ID, TOPIC, 0, second()),
        OUT_OF_ORDER_SEQUENCE_NUMBER,
        "the second batch may not be stored before the first"
    );
    assert_eq!(
        kafka::watermarks(&broker.bootstrap(), TOPIC, 0),
        (0, 0),
        "nothing was appended"
    );
    assert_eq!(
        produce_answer(&mut stream, 9, ID, TOPIC, 0, first()),
        (NONE, 0)
    );
    assert_eq!(
        produce_answer(&mut stream, 9, ID, TOPIC, 0, second()),
        (NONE, 2)
    );
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(str_bytes(ID)))
        .with_producer_id(producer.0.into())
        .with_producer_epoch(producer.1)
        .with_committed(true);
    let mut body = wire::call(&mut stream, ApiKey::EndTxn, 4, RequestKind::EndTxn(request));
    assert_eq!(
        EndTxnResponse::decode(&mut body, 4).unwrap().error_code,
        NONE
    );
    assert_eq!(
        read_values(&broker.bootstrap(), TOPIC, 1, true),
        values.to_vec()
    );
}

/// Codes a client retries while the group's coordinator loads or moves.
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;

fn retriable_at_the_coordinator(error: i16) -> bool {
    [
        COORDINATOR_LOAD_IN_PROGRESS,
        COORDINATOR_NOT_AVAILABLE,
        NOT_COORDINATOR,
        CONCURRENT_TRANSACTIONS,
    ]
    .contains(&error)
}

/// AddOffsetsToTxn v3 (a protocol v1 client adding the group's offsets
/// partition), retried while the coordinators load: its error code.
fn add_offsets(
    stream: &mut TcpStream,
    transactional_id: &str,
    producer: (i64, i16),
    group: &str,
) -> i16 {
    until("AddOffsetsToTxn", || {
        let request = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(str_bytes(transactional_id)))
            .with_producer_id(producer.0.into())
            .with_producer_epoch(producer.1)
            .with_group_id(GroupId(str_bytes(group)));
        let mut body = wire::call(
            stream,
            ApiKey::AddOffsetsToTxn,
            3,
            RequestKind::AddOffsetsToTxn(request),
        );
        let error = AddOffsetsToTxnResponse::decode(&mut body, 3)
            .unwrap()
            .error_code;
        (!retriable_at_the_coordinator(error)).then_some(error)
    })
}

/// TxnOffsetCommit v3 of `offset` for `topic`/0 (a producer outside the
/// group), retried while the group's coordinator loads: its error code.
fn txn_offset_commit(
    stream: &mut TcpStream,
    transactional_id: &str,
    producer: (i64, i16),
    group: &str,
    topic: &str,
    offset: i64,
) -> i16 {
    until("TxnOffsetCommit", || {
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(str_bytes(transactional_id)))
            .with_group_id(GroupId(str_bytes(group)))
            .with_producer_id(producer.0.into())
            .with_producer_epoch(producer.1)
            .with_generation_id(-1)
            .with_member_id(str_bytes(""))
            .with_topics(vec![
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(vec![
                        TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1),
                    ]),
            ]);
        let mut body = wire::call(
            stream,
            ApiKey::TxnOffsetCommit,
            3,
            RequestKind::TxnOffsetCommit(request),
        );
        let response = TxnOffsetCommitResponse::decode(&mut body, 3).unwrap();
        let error = response.topics[0].partitions[0].error_code;
        (!retriable_at_the_coordinator(error)).then_some(error)
    })
}

/// OffsetFetch v7 of `topic`/0 with require_stable (as the Java consumer
/// asks under read_committed): (error code, committed offset).
fn offset_fetch_stable(stream: &mut TcpStream, group: &str, topic: &str) -> (i16, i64) {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes(group)))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_indexes(vec![0]),
        ]))
        .with_require_stable(true);
    let mut body = wire::call(
        stream,
        ApiKey::OffsetFetch,
        7,
        RequestKind::OffsetFetch(request),
    );
    let response = OffsetFetchResponse::decode(&mut body, 7).unwrap();
    assert_eq!(response.error_code, NONE, "OffsetFetch");
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.committed_offset)
}

/// A zombie producer's TxnOffsetCommit (protocol v1), retried after a new
/// instance's InitProducerId aborted its transaction, on a broker without
/// KIP-890 verification (nothing asks the transaction coordinator): the
/// abort marker on the group's offsets partition carries the bumped epoch,
/// and the commit's older one is refused with INVALID_PRODUCER_EPOCH (the
/// Java client's "fenced"), as Kafka's append refuses it. Appended, it
/// opened a transaction that no marker would end: OffsetFetch with
/// require_stable answered UNSTABLE_OFFSET_COMMIT for the group from then
/// on, and the offsets partition's last stable offset stayed there.
#[test]
fn a_zombie_txn_offset_commit_after_a_new_instance_aborted_its_transaction_is_fenced() {
    const ID: &str = "zombie-offsets-txn";
    const GROUP: &str = "zombie-offsets-group";
    const INPUT: &str = "zombie-offsets-in";
    const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    let broker = Broker::start_with_args(
        "txn-zombie-offsets",
        &["--transaction-partition-verification", "false"],
    );
    create_topic(&broker.bootstrap(), INPUT, 1, &[]);
    let mut stream = connect(broker.address());
    let _ = find_coordinator(&mut stream, ID, KEY_TYPE_TRANSACTION);
    let _ = find_coordinator(&mut stream, GROUP, KEY_TYPE_GROUP);
    let zombie = init_producer_id(&mut stream, ID, 4);
    assert_eq!(add_offsets(&mut stream, ID, zombie, GROUP), NONE);

    // The new instance's InitProducerId aborts the zombie's transaction;
    // it is answered once the abort completed (its markers written).
    let current = init_producer_id(&mut stream, ID, 4);
    assert_eq!(current.0, zombie.0);
    assert!(current.1 > zombie.1, "the epoch was bumped");

    assert_eq!(
        txn_offset_commit(&mut stream, ID, zombie, GROUP, INPUT, 42),
        INVALID_PRODUCER_EPOCH,
        "the zombie's late commit"
    );
    let fetched = offset_fetch_stable(&mut stream, GROUP, INPUT);
    assert_ne!(
        fetched.0, UNSTABLE_OFFSET_COMMIT,
        "a transaction was left open"
    );
    assert_eq!(fetched, (NONE, -1), "nothing committed");
}

/// The transactional ids the broker lists.
fn listed_ids(stream: &mut TcpStream) -> Vec<String> {
    let mut body = wire::call(
        stream,
        ApiKey::ListTransactions,
        0,
        RequestKind::ListTransactions(ListTransactionsRequest::default()),
    );
    let response = ListTransactionsResponse::decode(&mut body, 0).unwrap();
    response
        .transaction_states
        .iter()
        .map(|state| state.transactional_id.0.to_string())
        .collect()
}

#[test]
fn an_idle_transactional_id_expires_and_comes_back_with_a_new_producer_id() {
    const ID: &str = "expiring-txn";
    let broker = Broker::start_with_args(
        "txn-id-expiration",
        &["--transactional-id-expiration-ms", "1500"],
    );
    let mut stream = connect(broker.address());
    let _ = find_coordinator(&mut stream, ID, KEY_TYPE_TRANSACTION);
    let (first_id, _) = init_producer_id(&mut stream, ID, 4);
    assert!(listed_ids(&mut stream).contains(&ID.to_string()));
    until("the idle id to expire", || {
        (!listed_ids(&mut stream).contains(&ID.to_string())).then_some(())
    });
    let (second_id, epoch) = init_producer_id(&mut stream, ID, 4);
    assert_ne!(second_id, first_id, "an expired id starts afresh");
    assert_eq!(epoch, 0);
}
