//! The partition data path of transactions against a real `sluice`
//! process, driven with raw kafka-protocol requests (no coordinator
//! needed): transactional Produce batches hold the last stable offset at
//! their transaction's first offset, so read_committed Fetch and
//! ListOffsets stop there; a WriteTxnMarkers abort lists the transaction in
//! read_committed fetches' AbortedTransactions; a commit makes it visible;
//! an older producer epoch is fenced after a marker bumped it, and a marker
//! of an older coordinator epoch is refused; and all of it
//! is rebuilt from the log after a restart. With three replicas, a follower
//! that becomes leader answers the same (its state was fed by replication).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, ProducerId,
    RequestKind, ResponseHeader, TopicName, TransactionalId, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_engine::TimestampMs;
use sluice_engine::batch::{self, BatchBuilder, BatchHeader};
use support::Broker;
use support::cluster::{Cluster, wait_until};
use support::kafka::{create_topic, create_topic_replicated};
use support::wire;

const TOPIC: &str = "txn-data-path";
const PRODUCER: i64 = 4242;
const NONE: i16 = 0;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const TRANSACTION_COORDINATOR_FENCED: i16 = 52;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const READ_UNCOMMITTED: i8 = 0;
const READ_COMMITTED: i8 = 1;
/// These batches have no coordinator behind them: the brokers must not ask
/// one (KIP-890 verification, tested in transactions_v2.rs).
const NO_VERIFICATION: [&str; 2] = ["--transaction-partition-verification", "false"];

fn call(stream: &mut TcpStream, api_key: ApiKey, version: i16, body: RequestKind) -> Bytes {
    let correlation_id = 11;
    stream
        .write_all(&wire::request_frame(
            api_key,
            version,
            correlation_id,
            &body,
        ))
        .expect("sending a request");
    let mut frame = wire::read_frame(stream)
        .unwrap_or_else(|error| panic!("no answer to {api_key:?} v{version}: {error}"));
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
        .expect("a response header");
    assert_eq!(header.correlation_id, correlation_id, "correlation id");
    frame
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// Produce one batch (acks=all); returns (error code, base offset).
fn produce(stream: &mut TcpStream, records: Bytes, transactional: bool) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_transactional_id(
            transactional.then(|| TransactionalId(StrBytes::from_static_str("txn-test"))),
        )
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic_name())
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let mut body = call(stream, ApiKey::Produce, 9, RequestKind::Produce(request));
    let response = ProduceResponse::decode(&mut body, 9).expect("a Produce response");
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// A transactional batch of `count` records of `PRODUCER`.
fn transactional_batch(epoch: i16, sequence: i32, count: usize) -> Bytes {
    let mut builder = BatchBuilder::new();
    builder
        .producer(PRODUCER, epoch, sequence)
        .transactional(true);
    for index in 0..count {
        builder.record(
            None,
            Some(&[index as u8; 10][..]),
            TimestampMs(1_700_000_000_000),
        );
    }
    builder.build()
}

fn plain_batch() -> Bytes {
    BatchBuilder::new()
        .record(None, Some(&b"plain"[..]), TimestampMs(1_700_000_000_000))
        .build()
}

fn write_marker(stream: &mut TcpStream, epoch: i16, commit: bool) -> i16 {
    write_marker_from(stream, epoch, 0, commit)
}

/// A marker written by the coordinator of `coordinator_epoch`.
fn write_marker_from(
    stream: &mut TcpStream,
    epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
) -> i16 {
    let request = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(PRODUCER))
            .with_producer_epoch(epoch)
            .with_transaction_result(commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(vec![
                WritableTxnMarkerTopic::default()
                    .with_name(topic_name())
                    .with_partition_indexes(vec![0]),
            ]),
    ]);
    let mut body = call(
        stream,
        ApiKey::WriteTxnMarkers,
        1,
        RequestKind::WriteTxnMarkers(request),
    );
    let response = WriteTxnMarkersResponse::decode(&mut body, 1).expect("a WriteTxnMarkers answer");
    assert_eq!(response.markers[0].producer_id, ProducerId(PRODUCER));
    response.markers[0].topics[0].partitions[0].error_code
}

fn fetch(stream: &mut TcpStream, offset: i64, isolation_level: i8) -> PartitionData {
    let partition = try_fetch(stream, offset, isolation_level);
    assert_eq!(partition.error_code, NONE, "fetch error");
    partition
}

fn try_fetch(stream: &mut TcpStream, offset: i64, isolation_level: i8) -> PartitionData {
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation_level)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic_name())
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let mut body = call(stream, ApiKey::Fetch, 11, RequestKind::Fetch(request));
    let response = FetchResponse::decode(&mut body, 11).expect("a Fetch response");
    response.responses[0].partitions[0].clone()
}

/// (base offset, is control) of every batch a fetch returned.
fn batches(partition: &PartitionData) -> Vec<(i64, bool)> {
    let Some(records) = &partition.records else {
        return Vec::new();
    };
    batch::split_batches(records)
        .unwrap()
        .into_iter()
        .map(|range| {
            let header = BatchHeader::parse(&records[range]).unwrap();
            (header.base_offset().value(), header.is_control())
        })
        .collect()
}

fn aborted(partition: &PartitionData) -> Option<Vec<(i64, i64)>> {
    partition.aborted_transactions.as_ref().map(|list| {
        list.iter()
            .map(|aborted| (aborted.producer_id.0, aborted.first_offset))
            .collect()
    })
}

fn latest(stream: &mut TcpStream, isolation_level: i8) -> i64 {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(isolation_level)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name())
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let mut body = call(
        stream,
        ApiKey::ListOffsets,
        7,
        RequestKind::ListOffsets(request),
    );
    let response = ListOffsetsResponse::decode(&mut body, 7).expect("a ListOffsets response");
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, NONE, "ListOffsets error");
    partition.offset
}

/// The answers that must hold before and after a restart, once the log is
/// [txn A 0..=1 (aborted), plain 2, abort marker 3, txn B 4..=5, commit
/// marker 6, txn C 7..=8 (open)].
fn assert_final_answers(stream: &mut TcpStream) {
    let committed = fetch(stream, 0, READ_COMMITTED);
    assert_eq!(committed.high_watermark, 9);
    assert_eq!(
        committed.last_stable_offset, 7,
        "held by the open transaction C"
    );
    assert_eq!(
        batches(&committed),
        vec![(0, false), (2, false), (3, true), (4, false), (6, true)]
    );
    assert_eq!(aborted(&committed), Some(vec![(PRODUCER, 0)]));
    let from_b = fetch(stream, 4, READ_COMMITTED);
    assert_eq!(
        aborted(&from_b),
        Some(vec![]),
        "A's abort lies before offset 4"
    );
    let uncommitted = fetch(stream, 0, READ_UNCOMMITTED);
    assert_eq!(uncommitted.last_stable_offset, 7);
    assert_eq!(batches(&uncommitted).len(), 6);
    assert_eq!(aborted(&uncommitted), None, "read_uncommitted gets no list");
    assert_eq!(latest(stream, READ_COMMITTED), 7);
    assert_eq!(latest(stream, READ_UNCOMMITTED), 9);
}

#[test]
fn read_committed_consumers_see_only_committed_transactions_across_a_restart() {
    let mut broker = Broker::start_with_args("transactions_data_path", &NO_VERIFICATION);
    create_topic(&broker.bootstrap(), TOPIC, 1, &[]);
    let mut stream = wire::connect(broker.address());

    // ApiVersions advertises WriteTxnMarkers v1.
    let mut body = call(
        &mut stream,
        ApiKey::ApiVersions,
        3,
        RequestKind::ApiVersions(ApiVersionsRequest::default()),
    );
    let versions = ApiVersionsResponse::decode(&mut body, 3).unwrap();
    let advertised = versions
        .api_keys
        .iter()
        .find(|api| api.api_key == ApiKey::WriteTxnMarkers as i16)
        .expect("WriteTxnMarkers advertised");
    assert_eq!((advertised.min_version, advertised.max_version), (1, 1));

    // Transaction A opens at 0; a plain batch follows at 2.
    assert_eq!(
        produce(&mut stream, transactional_batch(0, 0, 2), true),
        (NONE, 0)
    );
    assert_eq!(produce(&mut stream, plain_batch(), false), (NONE, 2));
    let open = fetch(&mut stream, 0, READ_COMMITTED);
    assert_eq!((open.high_watermark, open.last_stable_offset), (3, 0));
    assert!(batches(&open).is_empty(), "nothing is stable yet");
    assert_eq!(aborted(&open), Some(vec![]));
    assert_eq!(latest(&mut stream, READ_COMMITTED), 0);
    assert_eq!(latest(&mut stream, READ_UNCOMMITTED), 3);
    let uncommitted = fetch(&mut stream, 0, READ_UNCOMMITTED);
    assert_eq!(batches(&uncommitted), vec![(0, false), (2, false)]);

    // Abort A: the marker lands at 3 and A is listed as aborted.
    assert_eq!(write_marker(&mut stream, 0, false), NONE);
    let after_abort = fetch(&mut stream, 0, READ_COMMITTED);
    assert_eq!(
        (after_abort.high_watermark, after_abort.last_stable_offset),
        (4, 4)
    );
    assert_eq!(
        batches(&after_abort),
        vec![(0, false), (2, false), (3, true)]
    );
    assert_eq!(aborted(&after_abort), Some(vec![(PRODUCER, 0)]));

    // Transaction B at 4..=5, committed by the marker at 6.
    assert_eq!(
        produce(&mut stream, transactional_batch(0, 2, 2), true),
        (NONE, 4)
    );
    let pending = fetch(&mut stream, 4, READ_COMMITTED);
    assert_eq!(pending.last_stable_offset, 4);
    assert!(batches(&pending).is_empty());
    assert_eq!(write_marker(&mut stream, 0, true), NONE);
    let visible = fetch(&mut stream, 4, READ_COMMITTED);
    assert_eq!(visible.last_stable_offset, 7);
    assert_eq!(batches(&visible), vec![(4, false), (6, true)]);
    assert_eq!(aborted(&visible), Some(vec![]));

    // Transaction C stays open at 7..=8.
    assert_eq!(
        produce(&mut stream, transactional_batch(0, 4, 2), true),
        (NONE, 7)
    );
    assert_final_answers(&mut stream);

    // The state is rebuilt from the log.
    drop(stream);
    broker.restart();
    let mut stream = wire::connect(broker.address());
    assert_final_answers(&mut stream);

    // A marker of a newer epoch (the coordinator fenced the producer)
    // ends C and fences epoch 0 on this partition.
    assert_eq!(write_marker_from(&mut stream, 1, 3, false), NONE);
    let fenced = fetch(&mut stream, 7, READ_COMMITTED);
    assert_eq!(fenced.last_stable_offset, 10);
    assert_eq!(aborted(&fenced), Some(vec![(PRODUCER, 7)]));
    assert_eq!(
        produce(&mut stream, transactional_batch(0, 6, 1), true).0,
        INVALID_PRODUCER_EPOCH
    );
    assert_eq!(write_marker(&mut stream, 0, true), INVALID_PRODUCER_EPOCH);
    assert_eq!(
        write_marker_from(&mut stream, 1, 2, true),
        TRANSACTION_COORDINATOR_FENCED,
        "a marker of an older coordinator"
    );
    assert_eq!(
        produce(&mut stream, transactional_batch(1, 0, 1), true),
        (NONE, 10)
    );
    assert_eq!(
        fetch(&mut stream, 10, READ_COMMITTED).last_stable_offset,
        10
    );
}

/// The leader of partition 0 as the running brokers other than `except`
/// report it.
fn leader_of(cluster: &mut Cluster, except: i32) -> Option<i32> {
    for node in cluster.running() {
        if node == except {
            continue;
        }
        if let Some(state) = cluster.partition_state(node, TOPIC, 0)
            && state.error_code == 0
            && state.leader >= 0
            && state.leader != except
        {
            return Some(state.leader);
        }
    }
    None
}

/// Transactional records need a transactional id, as Kafka's
/// handleProduceRequest requires with or without an authorizer: without
/// one there is no id to check WRITE on and no coordinator to verify the
/// partition with (KIP-890, on by default here), so the batch would open a
/// transaction no coordinator can end. Refused with
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED and nothing appended; a plain
/// batch on the same connection still is.
#[test]
fn a_transactional_batch_without_a_transactional_id_is_refused_and_not_appended() {
    let broker = Broker::start("transactions_data_path_no_id");
    create_topic(&broker.bootstrap(), TOPIC, 1, &[]);
    let mut stream = wire::connect(broker.address());

    assert_eq!(
        produce(&mut stream, transactional_batch(0, 0, 2), false).0,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    let partition = fetch(&mut stream, 0, READ_UNCOMMITTED);
    assert_eq!(
        (partition.high_watermark, partition.last_stable_offset),
        (0, 0),
        "nothing appended, no transaction open"
    );
    assert!(batches(&partition).is_empty());
    assert_eq!(latest(&mut stream, READ_UNCOMMITTED), 0);

    assert_eq!(produce(&mut stream, plain_batch(), false), (NONE, 0));
}

#[test]
fn a_follower_elected_leader_keeps_the_open_and_aborted_transactions() {
    let mut cluster = Cluster::start(
        "transactions_failover",
        3,
        &[
            "--broker-heartbeat-interval-ms",
            "500",
            "--broker-session-timeout-ms",
            "3000",
            "--replica-lag-time-max-ms",
            "2000",
            "--leader-imbalance-check-interval-ms",
            "300000",
            NO_VERIFICATION[0],
            NO_VERIFICATION[1],
        ],
    );
    create_topic_replicated(
        &cluster.bootstrap(),
        TOPIC,
        1,
        3,
        &[("min.insync.replicas", "2")],
    );
    let states = cluster.wait_for_full_isr(TOPIC, 1, Duration::from_secs(60));
    let leader = states[&0].leader;
    let mut stream = wire::connect(cluster.broker(leader).address());
    // [txn A 0..=1, plain 2, abort marker 3, txn B 4..=5 (open)], all
    // acknowledged by acks=all, so every ISR member holds them.
    assert_eq!(
        produce(&mut stream, transactional_batch(0, 0, 2), true),
        (NONE, 0)
    );
    assert_eq!(produce(&mut stream, plain_batch(), false), (NONE, 2));
    assert_eq!(write_marker(&mut stream, 0, false), NONE);
    assert_eq!(
        produce(&mut stream, transactional_batch(0, 2, 2), true),
        (NONE, 4)
    );
    drop(stream);

    cluster.kill9(leader);
    let new_leader = wait_until("a new leader", Duration::from_secs(60), || {
        leader_of(&mut cluster, leader).ok_or("no leader yet".to_string())
    });
    let address = cluster.broker(new_leader).address();
    let answer = wait_until(
        "the new leader serves up to the log end",
        Duration::from_secs(60),
        || {
            let mut stream = wire::connect(address);
            let answer = try_fetch(&mut stream, 0, READ_COMMITTED);
            if answer.error_code == NONE && answer.high_watermark == 6 {
                Ok(answer)
            } else {
                Err(format!(
                    "error {}, high watermark {}",
                    answer.error_code, answer.high_watermark
                ))
            }
        },
    );
    assert_eq!(
        answer.last_stable_offset, 4,
        "B is still open on the new leader"
    );
    assert_eq!(batches(&answer), vec![(0, false), (2, false), (3, true)]);
    assert_eq!(aborted(&answer), Some(vec![(PRODUCER, 0)]));

    // The new leader ends B.
    let mut stream = wire::connect(address);
    assert_eq!(write_marker(&mut stream, 0, false), NONE);
    let after = fetch(&mut stream, 0, READ_COMMITTED);
    assert_eq!(after.last_stable_offset, 7);
    assert_eq!(aborted(&after), Some(vec![(PRODUCER, 0), (PRODUCER, 4)]));
}
