//! Fetch and ListOffsets on real shards (io_uring runtimes, temporary data
//! directories), and the hand-framed response against kafka-protocol's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::auth::authorizer::Access;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use bytes::Buf;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_engine::batch::build::{BatchBuilder, simple_batch};
use sluice_engine::io::uring::UringIo;
use sluice_engine::{Committer, LeaderEpoch, TimestampMs};

use super::*;
use crate::cli::BrokerConfig;
use crate::handlers::list_offsets;
use crate::metadata::Metadata;
use crate::net::FETCH_RECORD_BYTES_COPIED;
use crate::protocol::encode_response;
use crate::shard::Shards;
use crate::shard::topics::create_topic;

// ---------------------------------------------------------------------------
// Harness: `count` shards, the first on the test thread.

fn new_shard(
    index: usize,
    config: Arc<BrokerConfig>,
    shards: Arc<Shards>,
    metadata: Arc<Metadata>,
) -> Rc<Shard> {
    let io = UringIo::new();
    Rc::new(Shard {
        id: ShardId(index),
        io,
        committer: Committer::new(io),
        config,
        shards,
        metadata,
        partitions: Default::default(),
        groups: Default::default(),
        replication_links: Default::default(),
    })
}

fn serve(shard: &Rc<Shard>, inbox: flume::Receiver<crate::shard::Job>) {
    let committer = shard.committer.clone();
    compio::runtime::spawn(async move { committer.run().await }).detach();
    crate::shard::serve_inbox(shard, inbox);
}

fn with_shards<F, Fut>(name: &str, count: usize, test: F)
where
    F: FnOnce(Rc<Shard>) -> Fut,
    Fut: Future<Output = ()>,
{
    with_shards_configured(name, count, |_| {}, test);
}

/// `with_shards` with the broker's settings changed by `configure` first.
fn with_shards_configured<F, Fut>(
    name: &str,
    count: usize,
    configure: impl FnOnce(&mut BrokerConfig),
    test: F,
) where
    F: FnOnce(Rc<Shard>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sluice-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = BrokerConfig::single_node(dir.clone(), count);
    configure(&mut config);
    let config = Arc::new(config);
    let (shards, mut inboxes) = Shards::new(count);
    let (metadata, follower) =
        crate::shard::follower::in_memory_single_node(&dir, &shards).unwrap();
    let controller = metadata.controller().clone();
    let first_inbox = inboxes.remove(0);
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for (offset, inbox) in inboxes.into_iter().enumerate() {
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        let (config, shards, metadata) = (
            Arc::clone(&config),
            Arc::clone(&shards),
            Arc::clone(&metadata),
        );
        threads.push(std::thread::spawn(move || {
            let runtime = compio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let shard = new_shard(offset + 1, config, shards, metadata);
                serve(&shard, inbox);
                let _ = stopped.await;
                shard.close_all().await;
            });
        }));
    }
    let runtime = compio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let shard = new_shard(0, config, shards, metadata);
        serve(&shard, first_inbox);
        test(Rc::clone(&shard)).await;
        shard.close_all().await;
    });
    follower.stop();
    controller.stop();
    for stop in stops {
        let _ = stop.send(());
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Create `topic` and return its partitions' shards.
async fn topic(shard: &Rc<Shard>, name: &str, partitions: i32) -> Vec<ShardId> {
    let topic = create_topic(shard, name, partitions, BTreeMap::new(), false)
        .await
        .unwrap();
    topic
        .partitions
        .iter()
        .map(|assignment| ShardId(assignment.local_shard.unwrap()))
        .collect()
}

/// Append `batch` to `topic`-`partition` wherever it lives, wait until it is
/// durable, return its base offset. `notify`: through the notifying wrapper.
async fn append(shard: &Rc<Shard>, name: &str, partition: i32, batch: Bytes, notify: bool) -> i64 {
    let owner = {
        let snapshot = shard.metadata.snapshot();
        ShardId(
            snapshot.topics[name].partitions[partition as usize]
                .local_shard
                .unwrap(),
        )
    };
    let topic_partition = TopicPartition::new(name, partition);
    on_shard(shard, owner, move |owner| async move {
        let replica = owner.partition(&topic_partition).unwrap();
        if notify {
            let appended = replica.append(&batch).unwrap();
            appended.completion.await.unwrap();
            appended.base_offset.value()
        } else {
            let appended = replica.log.append(&batch, LeaderEpoch(0)).unwrap();
            appended.completion.await.unwrap();
            appended.base_offset.value()
        }
    })
    .await
    .unwrap()
}

/// The id of topic `name` in the shard's view.
fn topic_id(shard: &Shard, name: &str) -> uuid::Uuid {
    shard.metadata.snapshot().topics[name].id
}

/// A topic to fetch: name, id, (partition, offset) pairs.
type TopicFetch<'a> = (&'a str, uuid::Uuid, Vec<(i32, i64)>);

fn fetch_request(version: i16, topics: Vec<TopicFetch<'_>>) -> FetchRequest {
    let topics = topics
        .into_iter()
        .map(|(name, id, partitions)| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                .with_topic_id(id)
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(partition, offset)| {
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )
        })
        .collect();
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(if version >= 7 { -1 } else { 0 })
        .with_topics(topics)
}

async fn fetch_frame(shard: &Rc<Shard>, version: i16, request: FetchRequest) -> ResponseFrame {
    match handle(
        shard,
        version,
        7,
        request,
        "PLAINTEXT",
        &Access::unrestricted(),
    )
    .await
    .unwrap()
    {
        Reply::Frame(frame) => frame,
        _ => panic!("fetch answers with a frame"),
    }
}

fn decode(version: i16, frame: &ResponseFrame) -> FetchResponse {
    let mut bytes: Vec<u8> = Vec::new();
    for part in &frame.parts {
        bytes.extend_from_slice(part);
    }
    let mut bytes = Bytes::from(bytes);
    let size = bytes.get_i32();
    assert_eq!(size as usize, bytes.len(), "size prefix");
    let header =
        ResponseHeader::decode(&mut bytes, ApiKey::Fetch.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    let response = FetchResponse::decode(&mut bytes, version).unwrap();
    assert!(bytes.is_empty(), "trailing bytes after the response");
    response
}

async fn fetch(shard: &Rc<Shard>, version: i16, request: FetchRequest) -> FetchResponse {
    let frame = fetch_frame(shard, version, request).await;
    decode(version, &frame)
}

fn only_partition(response: &FetchResponse) -> &PartitionData {
    assert_eq!(response.responses.len(), 1);
    assert_eq!(response.responses[0].partitions.len(), 1);
    &response.responses[0].partitions[0]
}

/// Base offsets of the batches in `records`.
fn batch_offsets(records: &Option<Bytes>) -> Vec<i64> {
    let records = records.as_ref().expect("records are never null");
    let mut offsets = Vec::new();
    let mut position = 0;
    while let Some(size) = batch_size_at(records, position) {
        let base = &records[position..position + 8];
        offsets.push(i64::from_be_bytes(base.try_into().unwrap()));
        position += size;
    }
    assert_eq!(position, records.len(), "whole batches only");
    offsets
}

// ---------------------------------------------------------------------------
// Framing against kafka-protocol.

fn sample_answer(read_committed: bool, session_id: i32, error_code: i16) -> FetchAnswer {
    let batch_a = simple_batch(3, 10, TimestampMs(1_000));
    let batch_b = simple_batch(1, 300, TimestampMs(2_000));
    let batch_c = simple_batch(2, 20, TimestampMs(3_000));
    let with_records = PartitionAnswer {
        current_leader: None,
        error_code: 0,
        high_watermark: 42,
        last_stable_offset: 42,
        log_start_offset: 3,
        records_size: batch_a.len() + batch_b.len(),
        records: vec![batch_a, batch_b],
        aborted_transactions: Vec::new(),
    };
    let empty = PartitionAnswer {
        current_leader: None,
        error_code: 0,
        high_watermark: 7,
        last_stable_offset: 7,
        log_start_offset: 0,
        records: Vec::new(),
        records_size: 0,
        aborted_transactions: Vec::new(),
    };
    let one_batch = PartitionAnswer {
        current_leader: None,
        records_size: batch_c.len(),
        records: vec![batch_c],
        ..empty.clone()
    };
    FetchAnswer {
        throttle_time_ms: 0,
        error_code,
        session_id,
        read_committed,
        node_endpoints: Vec::new(),
        topics: vec![
            TopicAnswer {
                name: Arc::from("orders"),
                topic_id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1122_3344_5566_7788),
                partitions: vec![
                    (0, with_records),
                    (1, PartitionAnswer::error(ResponseError::OffsetOutOfRange)),
                    (2, empty),
                ],
            },
            TopicAnswer {
                name: Arc::from("a-topic-with-a-much-longer-name-than-the-first-one"),
                topic_id: uuid::Uuid::from_u128(7),
                partitions: vec![(5, one_batch)],
            },
            TopicAnswer {
                name: Arc::from("empty"),
                topic_id: uuid::Uuid::nil(),
                partitions: Vec::new(),
            },
        ],
    }
}

/// The same answer as kafka-protocol's types (records concatenated).
fn as_kafka_protocol(version: i16, answer: &FetchAnswer) -> FetchResponse {
    let responses = answer
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|(index, partition)| {
                    let mut records = Vec::new();
                    for buffer in &partition.records {
                        records.extend_from_slice(buffer);
                    }
                    let current_leader = partition.current_leader.map_or_else(
                        LeaderIdAndEpoch::default,
                        |(leader_id, leader_epoch)| {
                            LeaderIdAndEpoch::default()
                                .with_leader_id(leader_id.into())
                                .with_leader_epoch(leader_epoch)
                        },
                    );
                    PartitionData::default()
                        .with_current_leader(current_leader)
                        .with_partition_index(*index)
                        .with_error_code(partition.error_code)
                        .with_high_watermark(partition.high_watermark)
                        .with_last_stable_offset(partition.last_stable_offset)
                        .with_log_start_offset(partition.log_start_offset)
                        .with_aborted_transactions(answer.read_committed.then(Vec::new))
                        .with_preferred_read_replica((-1).into())
                        .with_records(Some(Bytes::from(records)))
                })
                .collect();
            let mut response = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= TOPIC_ID_VERSION_MIN {
                response = response.with_topic_id(topic.topic_id);
            } else {
                response =
                    response.with_topic(TopicName(StrBytes::from_string(topic.name.to_string())));
            }
            response
        })
        .collect();
    let node_endpoints = answer
        .node_endpoints
        .iter()
        .map(|endpoint| {
            NodeEndpoint::default()
                .with_node_id(endpoint.id.into())
                .with_host(StrBytes::from_string(endpoint.host.clone()))
                .with_port(endpoint.port)
                .with_rack(endpoint.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    FetchResponse::default()
        .with_node_endpoints(node_endpoints)
        .with_throttle_time_ms(answer.throttle_time_ms)
        .with_error_code(answer.error_code)
        .with_session_id(answer.session_id)
        .with_responses(responses)
}

fn concatenated(frame: &ResponseFrame) -> Vec<u8> {
    frame
        .parts
        .iter()
        .flat_map(|part| part.iter().copied())
        .collect()
}

#[test]
fn the_hand_framed_response_matches_kafka_protocol_byte_for_byte_in_every_version() {
    for version in 4..=17 {
        for read_committed in [false, true] {
            let (session_id, error_code) = if version >= 7 { (99, 0) } else { (0, 0) };
            let answer = sample_answer(read_committed, session_id, error_code);
            let expected = encode_response(
                ApiKey::Fetch,
                version,
                7,
                &ResponseKind::Fetch(as_kafka_protocol(version, &answer)),
            )
            .unwrap();
            let framed = encode_fetch_response(version, 7, answer).unwrap();
            assert_eq!(
                concatenated(&framed),
                concatenated(&expected),
                "Fetch v{version}, read_committed {read_committed}"
            );
        }
        if version >= 7 {
            // A top-level session error with no topics.
            let answer = FetchAnswer {
                throttle_time_ms: 0,
                error_code: ResponseError::FetchSessionIdNotFound.code(),
                session_id: 0,
                topics: Vec::new(),
                read_committed: false,
                node_endpoints: Vec::new(),
            };
            let expected = encode_response(
                ApiKey::Fetch,
                version,
                7,
                &ResponseKind::Fetch(as_kafka_protocol(version, &answer)),
            )
            .unwrap();
            let framed = encode_fetch_response(version, 7, answer).unwrap();
            assert_eq!(
                concatenated(&framed),
                concatenated(&expected),
                "v{version} error"
            );
        }
    }
}

#[test]
fn leader_hints_are_framed_as_kafka_protocol_does_from_v16() {
    for version in 16..=17 {
        let mut answer = sample_answer(false, 99, 0);
        let mut not_leader = PartitionAnswer::error(ResponseError::NotLeaderOrFollower);
        not_leader.current_leader = Some((2, 7));
        answer.topics[0].partitions.push((3, not_leader));
        let mut fenced = PartitionAnswer::error(ResponseError::FencedLeaderEpoch);
        fenced.current_leader = Some((3, 1));
        answer.topics[1].partitions.push((6, fenced));
        answer.node_endpoints = vec![
            LeaderEndpoint {
                id: 2,
                host: "broker-two".to_string(),
                port: 9093,
                rack: Some("rack-b".to_string()),
            },
            LeaderEndpoint {
                id: 3,
                host: "127.0.0.1".to_string(),
                port: 19094,
                rack: None,
            },
        ];
        let expected = encode_response(
            ApiKey::Fetch,
            version,
            7,
            &ResponseKind::Fetch(as_kafka_protocol(version, &answer)),
        )
        .unwrap();
        let framed = encode_fetch_response(version, 7, answer).unwrap();
        assert_eq!(
            concatenated(&framed),
            concatenated(&expected),
            "Fetch v{version}"
        );
    }
}

#[test]
fn record_buffers_are_frame_parts_of_their_own() {
    let answer = sample_answer(false, 0, 0);
    let records: Vec<Bytes> = answer
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .flat_map(|(_, partition)| partition.records.iter().cloned())
        .collect();
    let frame = encode_fetch_response(12, 7, answer).unwrap();
    for buffer in &records {
        assert!(
            frame
                .parts
                .iter()
                .any(|part| part.as_ptr() == buffer.as_ptr() && part.len() == buffer.len()),
            "a record buffer was copied"
        );
    }
    // size, pieces around 3 record buffers (two partitions with records).
    assert_eq!(frame.parts.len(), 1 + 3 + 3);
}

#[test]
fn varints_are_kafkas() {
    for (value, expected) in [
        (0u32, vec![0u8]),
        (1, vec![1]),
        (127, vec![0x7f]),
        (128, vec![0x80, 0x01]),
        (300, vec![0xac, 0x02]),
        (u32::MAX, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
    ] {
        let mut buffer = BytesMut::new();
        put_unsigned_varint(&mut buffer, value);
        assert_eq!(&buffer[..], &expected[..], "{value}");
    }
}

// ---------------------------------------------------------------------------
// Response limits.

fn batches(sizes: &[usize]) -> (Vec<Bytes>, Vec<usize>) {
    // One buffer holding batches of roughly the given value sizes.
    let mut buffer = Vec::new();
    let mut actual = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        let batch = simple_batch(1, *size, TimestampMs(index as i64));
        actual.push(batch.len());
        buffer.extend_from_slice(&batch);
    }
    (vec![Bytes::from(buffer)], actual)
}

#[test]
fn take_batches_cuts_at_batch_boundaries_and_keeps_a_large_first_batch_whole() {
    let (records, sizes) = batches(&[100, 200, 300]);
    let all: usize = sizes.iter().sum();
    let (kept, size) = take_batches(records.clone(), all, false);
    assert_eq!((kept.len(), size), (1, all));
    assert_eq!(
        kept[0].as_ptr(),
        records[0].as_ptr(),
        "kept without copying"
    );
    let (kept, size) = take_batches(records.clone(), sizes[0] + sizes[1] + 10, false);
    assert_eq!(size, sizes[0] + sizes[1]);
    assert_eq!(
        kept[0].as_ptr(),
        records[0].as_ptr(),
        "a slice of the same buffer"
    );
    let (kept, size) = take_batches(records.clone(), 10, false);
    assert_eq!((kept.len(), size), (0, 0));
    let (_, size) = take_batches(records.clone(), 10, true);
    assert_eq!(size, sizes[0], "the first batch whole, nothing more");
    let (_, size) = take_batches(records, 0, true);
    assert_eq!(size, sizes[0]);
}

fn partition_fetch(partition_max_bytes: i32) -> PartitionFetch {
    PartitionFetch {
        key: PartitionKey {
            topic: TopicKey::Name(Arc::from("t")),
            partition: 0,
        },
        fetch_offset: 0,
        partition_max_bytes,
        current_leader_epoch: -1,
    }
}

fn answer_of(records: Vec<Bytes>) -> PartitionAnswer {
    PartitionAnswer {
        current_leader: None,
        records_size: records.iter().map(Bytes::len).sum(),
        records,
        ..PartitionAnswer::default()
    }
}

#[test]
fn response_limits_apply_across_partitions_with_one_oversized_first_batch() {
    let (first, first_sizes) = batches(&[1000, 10]);
    let (second, second_sizes) = batches(&[10, 10]);
    let (third, _) = batches(&[10]);
    let mut answers = vec![
        PartitionAnswer::default(),
        answer_of(first),
        answer_of(second),
        answer_of(third),
    ];
    let fetches = vec![partition_fetch(1 << 20); 4];
    // max_bytes smaller than the first batch: it comes whole, alone.
    let total = apply_response_limits(&mut answers, &fetches, 100);
    assert_eq!(total, first_sizes[0]);
    assert_eq!(answers[1].records_size, first_sizes[0]);
    assert_eq!(answers[2].records_size, 0);
    assert_eq!(answers[3].records_size, 0);

    // Partition limits apply to every partition but the first with data.
    let (first, _) = batches(&[1000]);
    let (second, _) = batches(&[10, 10]);
    let mut answers = vec![answer_of(first), answer_of(second)];
    let fetches = vec![partition_fetch(10), partition_fetch(second_sizes[0] as i32)];
    let total = apply_response_limits(&mut answers, &fetches, 1 << 20);
    assert_eq!(answers[1].records_size, second_sizes[0]);
    assert_eq!(total, answers[0].records_size + second_sizes[0]);
}

#[test]
fn a_response_never_needs_more_iovecs_than_the_kernel_takes() {
    let mut answers: Vec<PartitionAnswer> = (0..2000)
        .map(|index| answer_of(vec![simple_batch(1, 1, TimestampMs(index))]))
        .collect();
    let fetches = vec![partition_fetch(1 << 20); answers.len()];
    apply_response_limits(&mut answers, &fetches, usize::MAX);
    let topics = vec![TopicAnswer {
        name: Arc::from("t"),
        topic_id: uuid::Uuid::nil(),
        partitions: answers
            .into_iter()
            .enumerate()
            .map(|(index, answer)| (index as i32, answer))
            .collect(),
    }];
    let answer = FetchAnswer {
        throttle_time_ms: 0,
        error_code: 0,
        session_id: 0,
        topics,
        read_committed: false,
        node_endpoints: Vec::new(),
    };
    let frame = encode_fetch_response(12, 1, answer).unwrap();
    assert!(
        frame.parts.len() <= RESPONSE_PARTS_MAX,
        "{}",
        frame.parts.len()
    );
    assert!(frame.parts.len() > RESPONSE_PARTS_MAX - 10);
}

// ---------------------------------------------------------------------------
// Fetch on shards.

#[test]
fn fetched_records_are_the_logs_own_buffers_never_copies() {
    with_shards("zero_copy", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        for index in 0..5 {
            append(
                &shard,
                "t",
                0,
                simple_batch(10, 100, TimestampMs(index)),
                true,
            )
            .await;
        }
        let replica = shard.partition(&TopicPartition::new("t", 0)).unwrap();
        let direct = replica
            .log
            .read(
                Offset(0),
                ReadLimits {
                    max_bytes: 1 << 20,
                    min_one_batch: true,
                    max_offset: replica.log.durable_end_offset(),
                },
            )
            .await
            .unwrap();
        assert!(!direct.records.is_empty());
        let copied_before = FETCH_RECORD_BYTES_COPIED.load(Ordering::Relaxed);
        let frame = fetch_frame(
            &shard,
            12,
            fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0)])]),
        )
        .await;
        for buffer in &direct.records {
            assert!(
                frame
                    .parts
                    .iter()
                    .any(|part| part.as_ptr() == buffer.as_ptr() && part.len() == buffer.len()),
                "the frame holds the log's buffer itself"
            );
        }
        assert_eq!(FETCH_RECORD_BYTES_COPIED.load(Ordering::Relaxed), 0);
        assert_eq!(copied_before, 0);
        let response = decode(12, &frame);
        let partition = only_partition(&response);
        assert_eq!(batch_offsets(&partition.records), vec![0, 10, 20, 30, 40]);
        assert_eq!(partition.high_watermark, 50);
        assert_eq!(partition.last_stable_offset, 50);
        assert_eq!(partition.log_start_offset, 0);
    });
}

#[test]
fn the_read_path_hands_the_frame_the_buffers_it_read() {
    with_shards("read_path", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        for index in 0..3 {
            append(
                &shard,
                "t",
                0,
                simple_batch(5, 50, TimestampMs(index)),
                true,
            )
            .await;
        }
        let partitions = vec![partition_fetch(1 << 20)];
        let resolved = resolve(
            &shard,
            12,
            &partitions,
            "PLAINTEXT",
            &Access::unrestricted(),
        );
        let (mut answers, _) = read_all(
            &shard,
            &partitions,
            &resolved,
            1 << 20,
            false,
            true,
            Pass::Read,
        )
        .await;
        apply_response_limits(&mut answers, &partitions, 1 << 20);
        let read: Vec<(usize, usize)> = answers[0]
            .records
            .iter()
            .map(|buffer| (buffer.as_ptr() as usize, buffer.len()))
            .collect();
        assert!(!read.is_empty());
        let frame = encode_fetch_response(
            12,
            1,
            FetchAnswer {
                throttle_time_ms: 0,
                error_code: 0,
                session_id: 0,
                topics: vec![TopicAnswer {
                    name: Arc::from("t"),
                    topic_id: uuid::Uuid::nil(),
                    partitions: vec![(0, answers.remove(0))],
                }],
                read_committed: false,
                node_endpoints: Vec::new(),
            },
        )
        .unwrap();
        let parts: Vec<(usize, usize)> = frame
            .parts
            .iter()
            .map(|part| (part.as_ptr() as usize, part.len()))
            .collect();
        for buffer in read {
            assert!(parts.contains(&buffer));
        }
        assert_eq!(FETCH_RECORD_BYTES_COPIED.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn a_fetch_outside_the_log_is_offset_out_of_range_and_reports_the_offsets() {
    with_shards("out_of_range", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        append(&shard, "t", 0, simple_batch(4, 10, TimestampMs(1)), true).await;
        for version in [4, 11, 12, 16, 17] {
            let id = shard.metadata.snapshot().topics["t"].id;
            for offset in [5, 1000, -1] {
                let request = fetch_request(version, vec![("t", id, vec![(0, offset)])]);
                let response = fetch(&shard, version, request).await;
                let partition = only_partition(&response);
                assert_eq!(
                    partition.error_code,
                    ResponseError::OffsetOutOfRange.code(),
                    "v{version} offset {offset}"
                );
                assert_eq!(partition.high_watermark, 4);
                assert_eq!(
                    partition.log_start_offset,
                    if version >= 5 { 0 } else { -1 }
                );
                assert_eq!(partition.records.as_ref().map(Bytes::len), Some(0));
            }
        }
    });
}

#[test]
fn a_fetch_at_the_log_end_waits_for_max_wait_and_answers_empty() {
    with_shards("at_end", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        append(&shard, "t", 0, simple_batch(4, 10, TimestampMs(1)), true).await;
        let request =
            fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 4)])]).with_max_wait_ms(300);
        let started = Instant::now();
        let response = fetch(&shard, 12, request).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(290),
            "waited only {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "waited {waited:?}");
        let partition = only_partition(&response);
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.high_watermark, 4);
        assert_eq!(batch_offsets(&partition.records), Vec::<i64>::new());
    });
}

/// A fetch waiting at the end of `t`-`partition` answers soon after another
/// task appends (through the notifying wrapper or straight to the log).
async fn long_poll_wakes_on_append(shard: Rc<Shard>, partition: i32, notify: bool) {
    let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(partition, 0)])])
        .with_max_wait_ms(10_000);
    let appender = Rc::clone(&shard);
    compio::runtime::spawn(async move {
        compio::time::sleep(Duration::from_millis(100)).await;
        append(
            &appender,
            "t",
            partition,
            simple_batch(3, 10, TimestampMs(1)),
            notify,
        )
        .await;
    })
    .detach();
    let started = Instant::now();
    let response = fetch(&shard, 12, request).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(90),
        "answered before the append: {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "not woken: {waited:?}");
    let partition = only_partition(&response);
    assert_eq!(batch_offsets(&partition.records), vec![0]);
    assert_eq!(partition.high_watermark, 3);
}

/// A fetch waiting at the end of `t`-0 (max_wait 10 s) while two batches
/// are appended, 50 and 750 ms after it starts: the batches it answers
/// with, and how long it took.
async fn fetch_beside_two_appends(shard: Rc<Shard>) -> (Vec<i64>, Duration) {
    let request =
        fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0)])]).with_max_wait_ms(10_000);
    let appender = Rc::clone(&shard);
    compio::runtime::spawn(async move {
        compio::time::sleep(Duration::from_millis(50)).await;
        append(&appender, "t", 0, simple_batch(3, 10, TimestampMs(1)), true).await;
        compio::time::sleep(Duration::from_millis(700)).await;
        append(&appender, "t", 0, simple_batch(2, 10, TimestampMs(1)), true).await;
    })
    .detach();
    let started = Instant::now();
    let response = fetch(&shard, 12, request).await;
    let waited = started.elapsed();
    (batch_offsets(&only_partition(&response).records), waited)
}

#[test]
fn a_woken_fetch_answers_with_the_appends_of_its_debounce() {
    let debounce = Duration::from_millis(1200);
    with_shards_configured(
        "debounce",
        1,
        |config| config.fetch_debounce = debounce,
        |shard| async move {
            topic(&shard, "t", 1).await;
            let (batches, waited) = fetch_beside_two_appends(shard).await;
            assert_eq!(batches, vec![0, 3], "the second append joins the answer");
            assert!(
                waited >= Duration::from_millis(1240),
                "answered after {waited:?}"
            );
            assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
        },
    );
    // Without it the first append is answered at once, alone.
    with_shards_configured(
        "no_debounce",
        1,
        |config| config.fetch_debounce = Duration::ZERO,
        |shard| async move {
            topic(&shard, "t", 1).await;
            let (batches, waited) = fetch_beside_two_appends(shard).await;
            assert_eq!(batches, vec![0]);
            assert!(
                waited < Duration::from_millis(700),
                "answered after {waited:?}"
            );
        },
    );
}

#[test]
fn a_debounce_ends_at_max_wait_and_never_delays_data_at_hand() {
    with_shards_configured(
        "debounce_bounds",
        1,
        |config| config.fetch_debounce = Duration::from_secs(30),
        |shard| async move {
            topic(&shard, "t", 1).await;
            // Woken 50 ms in, the fetch still answers at its max_wait.
            let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0)])])
                .with_max_wait_ms(400);
            let appender = Rc::clone(&shard);
            compio::runtime::spawn(async move {
                compio::time::sleep(Duration::from_millis(50)).await;
                append(&appender, "t", 0, simple_batch(3, 10, TimestampMs(1)), true).await;
            })
            .detach();
            let started = Instant::now();
            let response = fetch(&shard, 12, request).await;
            let waited = started.elapsed();
            assert_eq!(batch_offsets(&only_partition(&response).records), vec![0]);
            assert!(
                waited >= Duration::from_millis(390),
                "answered after {waited:?}"
            );
            assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
            // Data already there: answered at once, no debounce.
            let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0)])])
                .with_max_wait_ms(10_000);
            let started = Instant::now();
            let response = fetch(&shard, 12, request).await;
            assert_eq!(batch_offsets(&only_partition(&response).records), vec![0]);
            assert!(started.elapsed() < Duration::from_secs(5));
        },
    );
}

/// A fetch of `t`-0 and `t`-1 (on two shards) waiting at their ends,
/// `ends` (max_wait 10 s): partition `first` is appended to 50 ms in, the
/// other 1,550 ms in. Returns the base offsets answered per partition and the
/// wait.
async fn fetch_beside_appends_on_two_shards(
    shard: Rc<Shard>,
    ends: (i64, i64),
    first: i32,
) -> (Vec<Vec<i64>>, Duration) {
    let request = fetch_request(
        12,
        vec![("t", uuid::Uuid::nil(), vec![(0, ends.0), (1, ends.1)])],
    )
    .with_max_wait_ms(10_000);
    let appender = Rc::clone(&shard);
    compio::runtime::spawn(async move {
        compio::time::sleep(Duration::from_millis(50)).await;
        append(
            &appender,
            "t",
            first,
            simple_batch(3, 10, TimestampMs(1)),
            true,
        )
        .await;
        compio::time::sleep(Duration::from_millis(1500)).await;
        append(
            &appender,
            "t",
            1 - first,
            simple_batch(2, 10, TimestampMs(1)),
            true,
        )
        .await;
    })
    .detach();
    let started = Instant::now();
    let response = fetch(&shard, 12, request).await;
    let waited = started.elapsed();
    let mut partitions: Vec<_> = response.responses[0].partitions.iter().collect();
    partitions.sort_by_key(|partition| partition.partition_index);
    let batches = partitions
        .iter()
        .map(|partition| batch_offsets(&partition.records))
        .collect();
    (batches, waited)
}

/// Each owner waits on its own shard and the first to answer wakes the
/// others, which read at once: the answer holds both shards' appends and
/// comes when the first owner's debounce ends (~2.05 s), not the second's
/// (~3.55 s), whichever shard changed first.
#[test]
fn a_fetch_waiting_on_two_shards_answers_with_both_when_the_first_owner_answers() {
    with_shards_configured(
        "two_shard_wait",
        2,
        |config| config.fetch_debounce = Duration::from_millis(2000),
        |shard| async move {
            let shards = topic(&shard, "t", 2).await;
            assert_eq!(shards, vec![ShardId(0), ShardId(1)]);
            // The other shard's partition changes first, then this one's.
            let (batches, waited) =
                fetch_beside_appends_on_two_shards(Rc::clone(&shard), (0, 0), 1).await;
            assert_eq!(batches, vec![vec![0], vec![0]]);
            assert!(
                waited >= Duration::from_millis(2040) && waited < Duration::from_millis(3400),
                "answered after {waited:?}"
            );
            // This shard's first, then the other's.
            let (batches, waited) = fetch_beside_appends_on_two_shards(shard, (2, 3), 0).await;
            assert_eq!(batches, vec![vec![2], vec![3]]);
            assert!(
                waited >= Duration::from_millis(2040) && waited < Duration::from_millis(3400),
                "answered after {waited:?}"
            );
        },
    );
}

/// Partitions set aside before the read (here: one the topic does not
/// have, and a topic id nobody knows) do not cut the long poll of the
/// others short, as Kafka's `erroneous` partitions: a consumer whose
/// session holds one would fetch at round-trip speed. The answer comes at
/// max_wait and holds their errors.
#[test]
fn a_long_poll_beside_an_unknown_partition_waits_and_answers_its_error() {
    with_shards("unknown_beside", 2, |shard| async move {
        topic(&shard, "t", 2).await;
        let id = topic_id(&shard, "t");
        let stranger = uuid::Uuid::from_u128(42);
        let by_name = fetch_request(
            12,
            vec![("t", uuid::Uuid::nil(), vec![(0, 0), (1, 0), (7, 0)])],
        );
        let by_id = fetch_request(
            13,
            vec![("", id, vec![(0, 0), (1, 0)]), ("", stranger, vec![(0, 0)])],
        );
        for (version, request) in [(12, by_name), (13, by_id)] {
            let started = Instant::now();
            let response = fetch(&shard, version, request.with_max_wait_ms(300)).await;
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(290),
                "v{version}: answered after {waited:?}"
            );
            assert!(waited < Duration::from_secs(3), "v{version}: {waited:?}");
            let errors: Vec<Vec<(i32, i16)>> = response
                .responses
                .iter()
                .map(|topic| {
                    topic
                        .partitions
                        .iter()
                        .map(|partition| (partition.partition_index, partition.error_code))
                        .collect()
                })
                .collect();
            let expected = if version == 12 {
                let unknown = ResponseError::UnknownTopicOrPartition.code();
                vec![vec![(0, 0), (1, 0), (7, unknown)]]
            } else {
                let unknown = ResponseError::UnknownTopicId.code();
                vec![vec![(0, 0), (1, 0)], vec![(0, unknown)]]
            };
            assert_eq!(errors, expected, "v{version}");
        }
    });
}

/// Errors of the read itself answer at once, as Kafka's fetchMessages
/// (errorReadingData): an offset out of range and a leader epoch this
/// broker has not seen, beside a caught-up partition that would wait.
#[test]
fn a_long_poll_with_a_read_error_answers_at_once() {
    with_shards("read_error_at_once", 2, |shard| async move {
        topic(&shard, "t", 2).await;
        let out_of_range =
            fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0), (1, 1000)])]);
        let mut newer_epoch =
            fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0), (1, 0)])]);
        newer_epoch.topics[0].partitions[1].current_leader_epoch = 5;
        for (request, error) in [
            (out_of_range, ResponseError::OffsetOutOfRange),
            (newer_epoch, ResponseError::UnknownLeaderEpoch),
        ] {
            let started = Instant::now();
            let response = fetch(&shard, 12, request.with_max_wait_ms(10_000)).await;
            let waited = started.elapsed();
            assert!(waited < Duration::from_secs(5), "{error:?}: {waited:?}");
            let errors: Vec<(i32, i16)> = response.responses[0]
                .partitions
                .iter()
                .map(|partition| (partition.partition_index, partition.error_code))
                .collect();
            assert_eq!(errors, vec![(0, 0), (1, error.code())]);
        }
    });
}

/// A fetch of only partitions set aside has nothing to wait for: it
/// answers at once (Kafka: `interesting` is empty).
#[test]
fn a_long_poll_of_only_unknown_partitions_answers_at_once() {
    with_shards("only_unknown", 1, |shard| async move {
        topic(&shard, "t", 2).await;
        let request = fetch_request(
            12,
            vec![
                ("t", uuid::Uuid::nil(), vec![(7, 0)]),
                ("missing", uuid::Uuid::nil(), vec![(0, 0)]),
            ],
        )
        .with_max_wait_ms(10_000);
        let started = Instant::now();
        let response = fetch(&shard, 12, request).await;
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(response.responses.len(), 2);
        assert!(
            response
                .responses
                .iter()
                .all(|topic| topic.partitions[0].error_code == unknown)
        );
    });
}

/// A fetch resolves its topic once, when it begins, and reads on the
/// owning shard after a hop or a long poll. The topic deleted and created
/// again under its name meanwhile is another topic: the fetch answers as
/// for a deleted one, never with the new topic's records at the old
/// topic's offset. Through the handler, a long poll across the deletion;
/// then the owner's read itself with the old topic's id (the deletion
/// wakes a long poll before the new topic exists, so the handler alone
/// rarely reaches the read with the new replica in place).
#[test]
fn a_fetch_never_reads_a_topic_created_again_under_its_name() {
    with_shards("recreated", 2, |shard| async move {
        topic(&shard, "t", 1).await;
        append(&shard, "t", 0, simple_batch(3, 10, TimestampMs(1)), true).await;
        let old_id = topic_id(&shard, "t");
        let request = fetch_request(13, vec![("t", old_id, vec![(0, 3)])]).with_max_wait_ms(10_000);
        let recreator = Rc::clone(&shard);
        let recreated = compio::runtime::spawn(async move {
            compio::time::sleep(Duration::from_millis(100)).await;
            crate::shard::topics::delete_topic(&recreator, "t")
                .await
                .unwrap();
            let owner = topic(&recreator, "t", 1).await[0];
            append(
                &recreator,
                "t",
                0,
                simple_batch(5, 10, TimestampMs(1)),
                true,
            )
            .await;
            owner
        });
        let started = Instant::now();
        let response = fetch(&shard, 13, request).await;
        let waited = started.elapsed();
        let owner = recreated.await.unwrap();
        assert_ne!(topic_id(&shard, "t"), old_id);
        assert!(
            waited >= Duration::from_millis(90),
            "answered before the deletion: {waited:?}"
        );
        let partition = only_partition(&response);
        assert_eq!(
            partition.error_code,
            ResponseError::UnknownTopicOrPartition.code(),
            "answered {partition:?}"
        );
        assert_eq!(batch_offsets(&partition.records), Vec::<i64>::new());

        let spec = ReadSpec {
            slot: 0,
            topic_partition: TopicPartition::new("t", 0),
            topic_id: old_id,
            fetch_offset: 3,
            partition_max_bytes: 1 << 20,
            read_committed: false,
        };
        let answer = on_shard(&shard, owner, move |owner| async move {
            read_partition(&owner, &spec, spec.partition_max_bytes, true).await
        })
        .await
        .unwrap();
        assert_eq!(
            (answer.error_code, answer.records_size),
            (ResponseError::UnknownTopicOrPartition.code(), 0),
            "the new topic's high watermark is {}",
            answer.high_watermark
        );
    });
}

#[test]
fn a_long_poll_wakes_when_an_append_becomes_durable() {
    with_shards("wake_notify", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        long_poll_wakes_on_append(shard, 0, true).await;
    });
}

#[test]
fn a_long_poll_wakes_even_when_the_append_does_not_notify() {
    with_shards("wake_poll", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        long_poll_wakes_on_append(shard, 0, false).await;
    });
}

#[test]
fn a_long_poll_on_an_interval_flushed_topic_answers_after_the_flush() {
    with_shards("wake_interval", 1, |shard| async move {
        let mut configs = BTreeMap::new();
        configs.insert("flush.ms".to_string(), "300".to_string());
        create_topic(&shard, "t", 1, configs, false).await.unwrap();
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0)])])
            .with_max_wait_ms(10_000);
        let appender = Rc::clone(&shard);
        compio::runtime::spawn(async move {
            compio::time::sleep(Duration::from_millis(50)).await;
            // Acknowledged at once, visible (durable) only after the flush.
            append(&appender, "t", 0, simple_batch(2, 10, TimestampMs(1)), true).await;
        })
        .detach();
        let started = Instant::now();
        let response = fetch(&shard, 12, request).await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200),
            "answered before the flush: {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "not woken: {waited:?}");
        assert_eq!(batch_offsets(&only_partition(&response).records), vec![0]);
    });
}

#[test]
fn a_long_poll_wakes_for_a_partition_on_another_shard() {
    with_shards("wake_remote", 2, |shard| async move {
        let shards = topic(&shard, "t", 2).await;
        let remote = shards
            .iter()
            .position(|owner| *owner != shard.id)
            .expect("a partition on the other shard") as i32;
        long_poll_wakes_on_append(Rc::clone(&shard), remote, true).await;
    });
}

#[test]
fn min_bytes_keeps_waiting_until_enough_data_arrived() {
    with_shards("min_bytes", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        let small = simple_batch(1, 10, TimestampMs(1));
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0)])])
            .with_max_wait_ms(10_000)
            .with_min_bytes((small.len() * 3) as i32);
        let appender = Rc::clone(&shard);
        compio::runtime::spawn(async move {
            for _ in 0..3 {
                compio::time::sleep(Duration::from_millis(50)).await;
                append(&appender, "t", 0, simple_batch(1, 10, TimestampMs(1)), true).await;
            }
        })
        .detach();
        let started = Instant::now();
        let response = fetch(&shard, 12, request).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            batch_offsets(&only_partition(&response).records),
            vec![0, 1, 2]
        );
    });
}

#[test]
fn a_fetch_from_the_middle_of_a_batch_returns_the_whole_batch() {
    with_shards("middle", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        append(&shard, "t", 0, simple_batch(10, 10, TimestampMs(1)), true).await;
        append(&shard, "t", 0, simple_batch(10, 10, TimestampMs(2)), true).await;
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 15)])]);
        let response = fetch(&shard, 12, request).await;
        assert_eq!(batch_offsets(&only_partition(&response).records), vec![10]);
    });
}

#[test]
fn max_bytes_bounds_the_response_but_the_first_batch_comes_whole() {
    with_shards("max_bytes", 2, |shard| async move {
        topic(&shard, "t", 2).await;
        let large = simple_batch(1, 5000, TimestampMs(1));
        let small = simple_batch(1, 10, TimestampMs(2));
        append(&shard, "t", 0, large.clone(), true).await;
        append(&shard, "t", 0, small.clone(), true).await;
        append(&shard, "t", 1, small.clone(), true).await;
        // max_bytes below the first batch: that batch, nothing else.
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0), (1, 0)])])
            .with_max_bytes(100);
        let response = fetch(&shard, 12, request).await;
        let partitions = &response.responses[0].partitions;
        assert_eq!(batch_offsets(&partitions[0].records), vec![0]);
        assert_eq!(batch_offsets(&partitions[1].records), Vec::<i64>::new());
        // Room for everything.
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0), (1, 0)])]);
        let response = fetch(&shard, 12, request).await;
        let partitions = &response.responses[0].partitions;
        assert_eq!(batch_offsets(&partitions[0].records), vec![0, 1]);
        assert_eq!(batch_offsets(&partitions[1].records), vec![0]);
        // partition_max_bytes below the first batch of the second partition.
        let mut request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(1, 0), (0, 0)])]);
        request.topics[0].partitions[1].partition_max_bytes = 100;
        let response = fetch(&shard, 12, request).await;
        let partitions = &response.responses[0].partitions;
        assert_eq!(partitions[0].partition_index, 1);
        assert_eq!(batch_offsets(&partitions[0].records), vec![0]);
        assert_eq!(batch_offsets(&partitions[1].records), Vec::<i64>::new());
    });
}

/// Fetches of every partition of "s" from offset 0, each allowed `limit`.
fn fetches_of(partitions: i32, limit: i32) -> Vec<PartitionFetch> {
    (0..partitions)
        .map(|partition| PartitionFetch {
            key: PartitionKey {
                topic: TopicKey::Name(Arc::from("s")),
                partition,
            },
            fetch_offset: 0,
            partition_max_bytes: limit,
            current_leader_epoch: -1,
        })
        .collect()
}

#[test]
fn each_shard_reads_within_its_share_of_max_bytes() {
    with_shards("shares", 2, |shard| async move {
        const PARTITIONS: i32 = 8;
        let owners = topic(&shard, "s", PARTITIONS).await;
        assert!(owners.contains(&ShardId(0)) && owners.contains(&ShardId(1)));
        let batch = simple_batch(1, 1000, TimestampMs(1));
        for partition in 0..PARTITIONS {
            for _ in 0..4 {
                append(&shard, "s", partition, batch.clone(), true).await;
            }
        }
        // Each partition may return all of its 4 batches; max_bytes holds
        // 6 of the 32: less than either shard's partitions hold.
        let partitions = fetches_of(PARTITIONS, 1 << 20);
        let max_bytes = 6 * batch.len();
        let resolved = resolve(
            &shard,
            12,
            &partitions,
            "PLAINTEXT",
            &Access::unrestricted(),
        );
        let read_bytes = |answers: &[PartitionAnswer]| -> usize {
            answers.iter().map(|answer| answer.records_size).sum()
        };
        // Each shard reading up to max_bytes read the response twice over.
        let (answers, _) = read_all(
            &shard,
            &partitions,
            &resolved,
            max_bytes,
            false,
            false,
            Pass::Read,
        )
        .await;
        assert_eq!(read_bytes(&answers), 2 * max_bytes);
        // Within shares, nothing read is thrown away by the response limits.
        let (mut answers, held_back) = read_all(
            &shard,
            &partitions,
            &resolved,
            max_bytes,
            false,
            true,
            Pass::Read,
        )
        .await;
        assert!(held_back);
        let read = read_bytes(&answers);
        assert_eq!(read, max_bytes);
        assert_eq!(
            apply_response_limits(&mut answers, &partitions, max_bytes),
            read
        );
        // At the end of every partition (a consumer's long poll), a share
        // below the partition limits holds nothing back.
        let at_end: Vec<PartitionFetch> = fetches_of(PARTITIONS, 1 << 20)
            .into_iter()
            .map(|fetch| PartitionFetch {
                fetch_offset: 4,
                ..fetch
            })
            .collect();
        let (answers, held_back) =
            read_all(&shard, &at_end, &resolved, 4096, false, true, Pass::Read).await;
        assert!(!held_back);
        assert_eq!(read_bytes(&answers), 0);
        // Limits that add up within max_bytes: no shares, nothing held back.
        let partitions = fetches_of(PARTITIONS, (2 * batch.len()) as i32);
        let (answers, held_back) = read_all(
            &shard,
            &partitions,
            &resolved,
            1 << 20,
            false,
            true,
            Pass::Read,
        )
        .await;
        assert!(!held_back);
        assert_eq!(read_bytes(&answers), 16 * batch.len());
    });
}

#[test]
fn a_share_that_held_back_data_min_bytes_wanted_is_read_again_in_order() {
    with_shards("shares_min", 2, |shard| async move {
        const PARTITIONS: i32 = 4;
        let owners = topic(&shard, "s", PARTITIONS).await;
        let batch = simple_batch(1, 1000, TimestampMs(1));
        // Data on one shard only: its share (half of max_bytes) holds 2 of
        // the 4 batches, min_bytes wants 3.
        let loaded: Vec<i32> = (0..PARTITIONS)
            .filter(|&partition| owners[partition as usize] == owners[0])
            .collect();
        for _ in 0..4 {
            append(&shard, "s", loaded[0], batch.clone(), true).await;
        }
        let offsets = (0..PARTITIONS).map(|partition| (partition, 0)).collect();
        let mut request = fetch_request(12, vec![("s", uuid::Uuid::nil(), offsets)])
            .with_max_bytes((4 * batch.len()) as i32)
            .with_min_bytes((3 * batch.len()) as i32)
            .with_max_wait_ms(10_000);
        for partition in &mut request.topics[0].partitions {
            partition.partition_max_bytes = (4 * batch.len()) as i32;
        }
        let started = Instant::now();
        let response = fetch(&shard, 12, request).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited for more data"
        );
        let answered = &response.responses[0].partitions[loaded[0] as usize];
        assert_eq!(batch_offsets(&answered.records), vec![0, 1, 2, 3]);
    });
}

#[test]
fn partitions_after_one_whose_batch_no_longer_fits_are_not_read() {
    with_shards("fills", 1, |shard| async move {
        topic(&shard, "t", 3).await;
        let first = simple_batch(1, 1000, TimestampMs(1));
        append(&shard, "t", 0, first.clone(), true).await;
        append(&shard, "t", 1, simple_batch(1, 5000, TimestampMs(1)), true).await;
        append(&shard, "t", 2, simple_batch(1, 10, TimestampMs(1)), true).await;
        // Room for the first batch and 2,000 bytes more: the second
        // partition's batch does not fit, and the third is not read.
        let request = fetch_request(
            12,
            vec![("t", uuid::Uuid::nil(), vec![(0, 0), (1, 0), (2, 0)])],
        )
        .with_max_bytes((first.len() + 2000) as i32);
        let response = fetch(&shard, 12, request).await;
        let partitions = &response.responses[0].partitions;
        assert_eq!(batch_offsets(&partitions[0].records), vec![0]);
        assert_eq!(batch_offsets(&partitions[1].records), Vec::<i64>::new());
        assert_eq!(batch_offsets(&partitions[2].records), Vec::<i64>::new());
        // Its high watermark is still answered; the next fetch reads it.
        assert_eq!(partitions[2].high_watermark, 1);
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(2, 0), (1, 0)])])
            .with_max_bytes((first.len() + 2000) as i32);
        let response = fetch(&shard, 12, request).await;
        let partitions = &response.responses[0].partitions;
        assert_eq!(batch_offsets(&partitions[0].records), vec![0]);
    });
}

#[test]
fn unknown_topics_and_partitions_are_reported_per_partition() {
    with_shards("unknown", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        let request = fetch_request(
            12,
            vec![
                ("t", uuid::Uuid::nil(), vec![(0, 0), (3, 0)]),
                ("missing", uuid::Uuid::nil(), vec![(0, 0)]),
            ],
        );
        let response = fetch(&shard, 12, request).await;
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(response.responses[0].partitions[0].error_code, 0);
        assert_eq!(response.responses[0].partitions[1].error_code, unknown);
        assert_eq!(response.responses[0].partitions[1].high_watermark, -1);
        assert_eq!(response.responses[1].topic.0.as_str(), "missing");
        assert_eq!(response.responses[1].partitions[0].error_code, unknown);
        // v13+: topics by id.
        let id = shard.metadata.snapshot().topics["t"].id;
        let stranger = uuid::Uuid::from_u128(42);
        let request = fetch_request(
            13,
            vec![("", id, vec![(0, 0)]), ("", stranger, vec![(0, 0)])],
        );
        let response = fetch(&shard, 13, request).await;
        assert_eq!(response.responses[0].topic_id, id);
        assert_eq!(response.responses[0].partitions[0].error_code, 0);
        assert_eq!(response.responses[1].topic_id, stranger);
        assert_eq!(
            response.responses[1].partitions[0].error_code,
            ResponseError::UnknownTopicId.code()
        );
    });
}

#[test]
fn topics_are_fetched_by_id_from_v13() {
    with_shards("by_id", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        append(&shard, "t", 0, simple_batch(2, 10, TimestampMs(1)), true).await;
        let id = shard.metadata.snapshot().topics["t"].id;
        for version in 13..=17 {
            let request = fetch_request(version, vec![("", id, vec![(0, 0)])]);
            let response = fetch(&shard, version, request).await;
            assert_eq!(response.responses[0].topic_id, id);
            assert_eq!(batch_offsets(&only_partition(&response).records), vec![0]);
        }
    });
}

#[test]
fn a_newer_leader_epoch_is_refused() {
    with_shards("epoch", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        let mut request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0)])]);
        request.topics[0].partitions[0].current_leader_epoch = 5;
        let response = fetch(&shard, 12, request).await;
        assert_eq!(
            only_partition(&response).error_code,
            ResponseError::UnknownLeaderEpoch.code()
        );
    });
}

#[test]
fn a_replica_held_here_checks_the_epoch_before_leadership() {
    let view = ClusterMetadata {
        node_id: 1,
        ..ClusterMetadata::default()
    };
    let follower = PartitionMetadata {
        replicas: vec![1, 2],
        isr: vec![1, 2],
        leader: Some(2),
        leader_epoch: 4,
        partition_epoch: 4,
        local_shard: Some(0),
    };
    assert_eq!(
        serving(&view, &follower, 3),
        Err(ResponseError::FencedLeaderEpoch)
    );
    assert_eq!(
        serving(&view, &follower, 4),
        Err(ResponseError::NotLeaderOrFollower)
    );
    let not_held = PartitionMetadata {
        local_shard: None,
        ..follower.clone()
    };
    assert_eq!(
        serving(&view, &not_held, 3),
        Err(ResponseError::NotLeaderOrFollower)
    );
    let leader = PartitionMetadata {
        leader: Some(1),
        ..follower
    };
    assert_eq!(serving(&view, &leader, -1), Ok(ShardId(0)));
    assert_eq!(
        serving(&view, &leader, 5),
        Err(ResponseError::UnknownLeaderEpoch)
    );
}

#[test]
fn reads_continue_across_segments() {
    with_shards("segments", 1, |shard| async move {
        let mut configs = BTreeMap::new();
        configs.insert("segment.bytes".to_string(), "16384".to_string());
        create_topic(&shard, "t", 1, configs, false).await.unwrap();
        for index in 0..20 {
            append(
                &shard,
                "t",
                0,
                simple_batch(1, 3000, TimestampMs(index)),
                true,
            )
            .await;
        }
        let segments = shard
            .partition(&TopicPartition::new("t", 0))
            .unwrap()
            .log
            .segment_count();
        assert!(segments > 2, "{segments} segments");
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0)])]);
        let response = fetch(&shard, 12, request).await;
        assert_eq!(
            batch_offsets(&only_partition(&response).records),
            (0..20).collect::<Vec<_>>()
        );
    });
}

#[test]
fn a_session_answers_only_partitions_with_news() {
    with_shards("sessions", 1, |shard| async move {
        topic(&shard, "t", 2).await;
        append(&shard, "t", 0, simple_batch(2, 10, TimestampMs(1)), true).await;
        // Full fetch opening a session.
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 0), (1, 0)])])
            .with_session_id(0)
            .with_session_epoch(0);
        let response = fetch(&shard, 12, request).await;
        assert_eq!(response.error_code, 0);
        let session_id = response.session_id;
        assert!(session_id > 0);
        assert_eq!(response.responses[0].partitions.len(), 2);
        // Incremental: t-0 moved to offset 2; nothing new anywhere.
        let request = fetch_request(12, vec![("t", uuid::Uuid::nil(), vec![(0, 2)])])
            .with_session_id(session_id)
            .with_session_epoch(1)
            .with_max_wait_ms(50);
        let response = fetch(&shard, 12, request).await;
        assert_eq!(response.session_id, session_id);
        assert!(response.responses.is_empty(), "{response:?}");
        // New data on t-1: only t-1 is answered.
        append(&shard, "t", 1, simple_batch(1, 10, TimestampMs(1)), true).await;
        let request = fetch_request(12, vec![])
            .with_session_id(session_id)
            .with_session_epoch(2);
        let response = fetch(&shard, 12, request).await;
        let partition = only_partition(&response);
        assert_eq!(partition.partition_index, 1);
        assert_eq!(batch_offsets(&partition.records), vec![0]);
        // Forget t-1; a stale epoch and an unknown session are refused.
        let request = fetch_request(12, vec![])
            .with_session_id(session_id)
            .with_session_epoch(3)
            .with_forgotten_topics_data(vec![
                ForgottenTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![1]),
            ]);
        let response = fetch(&shard, 12, request).await;
        assert_eq!(response.error_code, 0);
        let request = fetch_request(12, vec![])
            .with_session_id(session_id)
            .with_session_epoch(3);
        let response = fetch(&shard, 12, request).await;
        assert_eq!(
            response.error_code,
            ResponseError::InvalidFetchSessionEpoch.code()
        );
        assert_eq!(response.session_id, 0);
        assert!(response.responses.is_empty());
        let request = fetch_request(12, vec![])
            .with_session_id(session_id.wrapping_add(1))
            .with_session_epoch(1);
        let response = fetch(&shard, 12, request).await;
        assert_eq!(
            response.error_code,
            ResponseError::FetchSessionIdNotFound.code()
        );
        with_shard_sessions(|cache| {
            assert_eq!(cache.expected_epoch(session_id), Some(4));
        });
    });
}

#[test]
fn sessions_work_with_topic_ids_from_v13() {
    with_shards("sessions_by_id", 1, |shard| async move {
        topic(&shard, "t", 2).await;
        let id = shard.metadata.snapshot().topics["t"].id;
        append(&shard, "t", 1, simple_batch(2, 10, TimestampMs(1)), true).await;
        let request = fetch_request(16, vec![("", id, vec![(0, 0), (1, 0)])])
            .with_session_id(0)
            .with_session_epoch(0);
        let response = fetch(&shard, 16, request).await;
        let session_id = response.session_id;
        assert!(session_id > 0);
        assert_eq!(response.responses[0].topic_id, id);
        // t-1 consumed up to 2: nothing new, nothing answered.
        let request = fetch_request(16, vec![("", id, vec![(1, 2)])])
            .with_session_id(session_id)
            .with_session_epoch(1);
        let response = fetch(&shard, 16, request).await;
        assert!(response.responses.is_empty(), "{response:?}");
        // A v12 request (names) on a session of ids is refused.
        let request = fetch_request(12, vec![])
            .with_session_id(session_id)
            .with_session_epoch(2);
        let response = fetch(&shard, 12, request).await;
        assert_eq!(
            response.error_code,
            ResponseError::FetchSessionTopicIdError.code()
        );
        // Forget both partitions by id: the session closes.
        let request = fetch_request(16, vec![])
            .with_session_id(session_id)
            .with_session_epoch(2)
            .with_forgotten_topics_data(vec![
                ForgottenTopic::default()
                    .with_topic_id(id)
                    .with_partitions(vec![0, 1]),
            ]);
        let response = fetch(&shard, 16, request).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(response.session_id, 0);
        with_shard_sessions(|cache| assert!(!cache.contains(session_id)));
    });
}

// ---------------------------------------------------------------------------
// ListOffsets.

/// ListOffsets of topic `name` for each (partition, timestamp) query, each
/// in a request of its own (a partition named twice in one request is
/// INVALID_REQUEST): (error, timestamp, offset, leader epoch) each.
async fn list_offsets(
    shard: &Rc<Shard>,
    version: i16,
    name: &str,
    queries: &[(i32, i64)],
) -> Vec<(i16, i64, i64, i32)> {
    let mut answers = Vec::with_capacity(queries.len());
    for query in queries {
        answers.extend(list_offsets_at_once(shard, version, name, &[*query]).await);
    }
    answers
}

/// [`list_offsets`] with every query in one request.
async fn list_offsets_at_once(
    shard: &Rc<Shard>,
    version: i16,
    name: &str,
    queries: &[(i32, i64)],
) -> Vec<(i16, i64, i64, i32)> {
    let request = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_partitions(
                    queries
                        .iter()
                        .map(|(partition, timestamp)| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*partition)
                                .with_timestamp(*timestamp)
                        })
                        .collect(),
                ),
        ]);
    let Reply::Body(body) = list_offsets::handle(shard, version, request, &Access::unrestricted())
        .await
        .unwrap()
    else {
        panic!("list offsets answers with a body");
    };
    // Every version must encode (fields outside a version stay at defaults).
    encode_response(ApiKey::ListOffsets, version, 1, &body).unwrap();
    let ResponseKind::ListOffsets(ListOffsetsResponse { topics, .. }) = *body else {
        panic!("not a ListOffsets response");
    };
    topics[0]
        .partitions
        .iter()
        .map(|partition| {
            (
                partition.error_code,
                partition.timestamp,
                partition.offset,
                partition.leader_epoch,
            )
        })
        .collect()
}

#[test]
fn list_offsets_finds_earliest_latest_max_timestamp_and_by_time() {
    with_shards("list_offsets", 2, |shard| async move {
        topic(&shard, "t", 2).await;
        // Offsets 0..3 at 1000, 1001, 1002; 3..5 at 5000 and 900 (max 5000
        // at offset 3); 5 at 3000.
        let first = BatchBuilder::new()
            .record(None, Some(&b"a"[..]), TimestampMs(1000))
            .record(None, Some(&b"b"[..]), TimestampMs(1001))
            .record(None, Some(&b"c"[..]), TimestampMs(1002))
            .build();
        let second = BatchBuilder::new()
            .record(None, Some(&b"d"[..]), TimestampMs(5000))
            .record(None, Some(&b"e"[..]), TimestampMs(900))
            .build();
        let third = BatchBuilder::new()
            .record(None, Some(&b"f"[..]), TimestampMs(3000))
            .build();
        for batch in [first, second, third] {
            append(&shard, "t", 1, batch, true).await;
        }
        let answers = list_offsets(
            &shard,
            7,
            "t",
            &[
                (1, -2),
                (1, -1),
                (1, -3),
                (1, 1001),
                (1, 1003),
                (1, 4000),
                (1, 6000),
                (0, -1),
                (0, -3),
                (9, -1),
            ],
        )
        .await;
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            answers,
            vec![
                (0, -1, 0, 0),
                (0, -1, 6, 0),
                (0, 5000, 3, 0),
                (0, 1001, 1, 0),
                (0, 5000, 3, 0),
                (0, 5000, 3, 0),
                (0, -1, -1, -1),
                (0, -1, 0, 0),
                (0, -1, -1, -1),
                (unknown, -1, -1, -1),
            ]
        );
        let answers = list_offsets(&shard, 1, "missing", &[(0, -1)]).await;
        assert_eq!(answers, vec![(unknown, -1, -1, -1)]);
        for version in 1..=10 {
            let answers = list_offsets(&shard, version, "t", &[(1, -1), (1, 1001)]).await;
            let epoch = if version >= 4 { 0 } else { -1 };
            assert_eq!(
                answers,
                vec![(0, -1, 6, epoch), (0, 1001, 1, epoch)],
                "v{version}"
            );
        }
    });
}

/// A partition named twice is answered INVALID_REQUEST at each occurrence,
/// whether in one topic entry or in two of the same name, as Kafka answers
/// its `duplicatePartitions`; the other partitions are answered as usual.
#[test]
fn list_offsets_answers_a_duplicated_partition_invalid_request() {
    with_shards("list_offsets_duplicates", 1, |shard| async move {
        topic(&shard, "t", 3).await;
        append(&shard, "t", 0, simple_batch(2, 10, TimestampMs(1)), true).await;
        let answers = list_offsets_at_once(&shard, 7, "t", &[(1, -1), (0, -1), (1, -2)]).await;
        let invalid = ResponseError::InvalidRequest.code();
        assert_eq!(
            answers,
            vec![(invalid, -1, -1, -1), (0, -1, 2, 0), (invalid, -1, -1, -1)]
        );

        let entry = |partitions: &[i32]| {
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|partition| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*partition)
                                .with_timestamp(-1)
                        })
                        .collect(),
                )
        };
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![entry(&[0, 2]), entry(&[2])]);
        let Reply::Body(body) = list_offsets::handle(&shard, 7, request, &Access::unrestricted())
            .await
            .unwrap()
        else {
            panic!("list offsets answers with a body");
        };
        let ResponseKind::ListOffsets(ListOffsetsResponse { topics, .. }) = *body else {
            panic!("not a ListOffsets response");
        };
        let errors: Vec<Vec<(i32, i16)>> = topics
            .iter()
            .map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|partition| (partition.partition_index, partition.error_code))
                    .collect()
            })
            .collect();
        assert_eq!(errors, vec![vec![(0, 0), (2, invalid)], vec![(2, invalid)]]);
    });
}

/// A compressed batch is decompressed for ListOffsets as Kafka's
/// searchForTimestamp and offsetOfMaxTimestamp do: the answers are records
/// inside it, not its base offset with its maxTimestamp.
#[test]
fn list_offsets_answers_records_inside_compressed_batches() {
    with_shards("list_offsets_compressed", 1, |shard| async move {
        topic(&shard, "z", 1).await;
        let plain = BatchBuilder::new()
            .record(None, Some(&b"a"[..]), TimestampMs(1000))
            .record(None, Some(&b"b"[..]), TimestampMs(2000))
            .record(None, Some(&b"c"[..]), TimestampMs(3000))
            .build();
        let header = sluice_engine::batch::validate(&plain, plain.len()).unwrap();
        let target = sluice_engine::batch::codec::Target::Zstd { level: 3 };
        let compressed = sluice_engine::batch::codec::recompress(&plain, &header, target).unwrap();
        append(&shard, "z", 0, Bytes::from(compressed), true).await;
        let answers = list_offsets(&shard, 7, "z", &[(0, 2000), (0, 2001), (0, -3)]).await;
        assert_eq!(
            answers,
            vec![(0, 2000, 1, 0), (0, 3000, 2, 0), (0, 3000, 2, 0)]
        );
    });
}

/// `read_on_owner` reads windows of partitions at once; its answer must be
/// the one reading them one after the other gives, for any mix of data
/// sizes, oversized first batches, partition limits and response limits.
#[test]
fn concurrent_reads_answer_what_reading_in_order_answers() {
    with_shards("windows", 1, |shard| async move {
        const PARTITIONS: i32 = 64; // windows of more than JOIN_GROUP_MAX
        topic(&shard, "w", PARTITIONS).await;
        // xorshift64*: a fixed sequence, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u64| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
        };
        let mut ends = Vec::new();
        for partition in 0..PARTITIONS {
            let batches = 1 + next(5);
            for index in 0..batches {
                let size = [100, 900, 3000, 9000][next(4) as usize];
                append(
                    &shard,
                    "w",
                    partition,
                    simple_batch(1 + next(3) as usize, size, TimestampMs(index as i64)),
                    true,
                )
                .await;
            }
            let end = shard
                .partition(&TopicPartition::new("w", partition))
                .unwrap()
                .log
                .log_end_offset()
                .value();
            ends.push(end);
        }
        let mut differing_windows = 0;
        for round in 0..300 {
            let max_bytes = [2_000, 8_000, 20_000, 60_000, 1 << 20][next(5) as usize];
            let specs = || {
                let mut state = round as u64 + 1;
                (0..PARTITIONS)
                    .map(|partition| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1);
                        let end = ends[partition as usize];
                        ReadSpec {
                            slot: partition as usize,
                            topic_partition: TopicPartition::new("w", partition),
                            topic_id: topic_id(&shard, "w"),
                            // Mostly inside the log, one in six at its end.
                            fetch_offset: if (state >> 20).is_multiple_of(6) {
                                end
                            } else {
                                (state >> 33) as i64 % end
                            },
                            partition_max_bytes: [1_000, 4_000, 10_000][(state >> 40) as usize % 3],
                            read_committed: false,
                        }
                    })
                    .collect::<Vec<_>>()
            };
            let (windowed, _) = read_on_owner(&shard, &specs(), max_bytes).await;
            let in_order = read_in_order(Rc::clone(&shard), specs(), max_bytes).await;
            assert_eq!(windowed, in_order, "round {round}, max_bytes {max_bytes}");
            let limits: usize = specs().iter().map(|spec| spec.partition_max_bytes).sum();
            if limits > max_bytes {
                differing_windows += 1;
            }
        }
        // Most rounds need more than one window (the limits exceed max_bytes).
        assert!(differing_windows > 100, "{differing_windows}");
    });
}

/// A fetch of many partitions answered from memory lets the shard's other
/// tasks run between its windows: reads that complete without suspending
/// would otherwise hold the shard for the whole fetch (milliseconds at
/// thousands of partitions), and every produce whose append waits in this
/// shard's inbox would wait behind it (at 10,000 partitions this halved a
/// producer's throughput beside a consumer).
#[test]
fn a_fetch_of_many_windows_lets_other_tasks_run_between_them() {
    with_shards("yield", 1, |shard| async move {
        const PARTITIONS: i32 = 8;
        topic(&shard, "y", PARTITIONS).await;
        for partition in 0..PARTITIONS {
            append(
                &shard,
                "y",
                partition,
                simple_batch(1, 100, TimestampMs(0)),
                true,
            )
            .await;
        }
        // Limits of 1,000 bytes within 2,500: windows of two partitions.
        let specs: Vec<ReadSpec> = (0..PARTITIONS)
            .map(|partition| ReadSpec {
                slot: partition as usize,
                topic_partition: TopicPartition::new("y", partition),
                topic_id: topic_id(&shard, "y"),
                fetch_offset: 0,
                partition_max_bytes: 1_000,
                read_committed: false,
            })
            .collect();
        let ran = Rc::new(std::cell::Cell::new(false));
        let flag = Rc::clone(&ran);
        compio::runtime::spawn(async move { flag.set(true) }).detach();
        // The spawned task runs only once this one suspends.
        assert!(!ran.get());
        let (answers, _) = read_on_owner(&shard, &specs, 2_500).await;
        assert_eq!(answers.len(), PARTITIONS as usize);
        assert!(
            answers.iter().all(|(_, answer)| answer.records_size > 0),
            "every partition answered with its batch"
        );
        assert!(
            ran.get(),
            "the fetch held the shard from its first window to its last"
        );
    });
}

/// A consumer catching up from disk: each fetch fills its partition limit
/// with whole batches and stops, taking the chunk read ahead for it once.
/// It used to read again for the rest of the limit, which took the chunk
/// the first read had just set reading for the next fetch, waited for the
/// disk, and put it back: every catch-up fetch then waited for the next
/// one's disk reads (docs/benchmarks.md, "Catch-up reads that waited for
/// the next fetch's read-ahead").
#[test]
fn a_catch_up_fetch_takes_the_read_ahead_once_and_does_not_wait_for_the_next() {
    with_shards("catch-up", 1, |shard| async move {
        // No tail cache: what was flushed is read from the segment file.
        sluice_engine::tail_cache::set_thread_budget_bytes(Some(0));
        topic(&shard, "c", 1).await;
        let mut sent = Vec::new();
        for index in 0..96 {
            let batch = simple_batch(1, 16_000, TimestampMs(index));
            append(&shard, "c", 0, batch.clone(), true).await;
            sent.push(batch);
        }
        let replica = shard.partition(&TopicPartition::new("c", 0)).unwrap();
        let end = replica.log.log_end_offset().value();
        assert_eq!(end, 96);
        let hits_before = replica.log.read_ahead_hits();
        let (mut offset, mut fetches, mut received) = (0_i64, 0_u64, 0_usize);
        while offset < end {
            let spec = ReadSpec {
                slot: 0,
                topic_partition: TopicPartition::new("c", 0),
                topic_id: topic_id(&shard, "c"),
                fetch_offset: offset,
                // Three batches and a half.
                partition_max_bytes: 57_000,
                read_committed: false,
            };
            let answer = read_partition(&shard, &spec, spec.partition_max_bytes, true).await;
            assert_eq!(answer.error_code, 0);
            let records: Vec<u8> = answer.records.iter().flat_map(|run| run.to_vec()).collect();
            let mut at = 0;
            while at < records.len() {
                let length = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap());
                let batch = &records[at..at + 12 + length as usize];
                // The records part (after the 61-byte batch header) is
                // what was sent; the header carries the log's offsets.
                assert!(batch[61..] == sent[received][61..], "batch {received}");
                received += 1;
                at += batch.len();
            }
            assert!(received as i64 > offset, "no progress at {offset}");
            offset = received as i64;
            fetches += 1;
        }
        assert_eq!(received, 96);
        let hits = replica.log.read_ahead_hits() - hits_before;
        sluice_engine::tail_cache::set_thread_budget_bytes(None);
        // Most fetches were served from the chunk read ahead (the first
        // read, and those the tail holds, are not), and none took it twice.
        assert!(
            hits >= fetches / 2,
            "{hits} read-ahead hits in {fetches} fetches"
        );
        assert!(
            hits <= fetches,
            "{hits} read-ahead takes in {fetches} fetches"
        );
    });
}

/// Work routed for a topic that is then deleted and created again under its
/// name (a coordinator's verification or a shard's inbox can sit between the
/// routing and the owner) never touches the new topic: Produce, ListOffsets,
/// OffsetForLeaderEpoch and DeleteRecords find the replica by the routed
/// topic's id.
#[test]
fn requests_routed_for_a_topic_created_again_never_touch_the_new_one() {
    with_shards("routed-recreated", 2, |shard| async move {
        topic(&shard, "t", 1).await;
        append(&shard, "t", 0, simple_batch(3, 10, TimestampMs(1)), true).await;
        let old_id = topic_id(&shard, "t");
        crate::shard::topics::delete_topic(&shard, "t")
            .await
            .unwrap();
        let owner = topic(&shard, "t", 1).await[0];
        append(&shard, "t", 0, simple_batch(5, 10, TimestampMs(1)), true).await;
        assert_ne!(topic_id(&shard, "t"), old_id);

        let produced = crate::handlers::produce::route(
            &shard,
            owner,
            TopicPartition::new("t", 0),
            old_id,
            Some(simple_batch(2, 10, TimestampMs(1))),
            crate::txn::membership::Verified::Off,
            crate::handlers::produce::Durability {
                acks: 1,
                timeout: Duration::from_secs(5),
                min_insync: 1,
            },
        )
        .await
        .await;
        assert_eq!(produced.error, Some(ResponseError::UnknownTopicOrPartition));

        let query = list_offsets::Query {
            slot: 0,
            topic_partition: TopicPartition::new("t", 0),
            topic_id: old_id,
            timestamp: -1,
            current_leader_epoch: -1,
            read_committed: false,
        };
        let listed = on_shard(&shard, owner, move |owner| async move {
            list_offsets::answer_on_owner(&owner, &query)
                .await
                .error_code
        })
        .await
        .unwrap();
        assert_eq!(listed, ResponseError::UnknownTopicOrPartition.code());

        let query = crate::handlers::offset_for_leader_epoch::Query {
            slot: 0,
            topic_partition: TopicPartition::new("t", 0),
            topic_id: old_id,
            current_leader_epoch: -1,
            leader_epoch: 0,
        };
        let epochs = on_shard(&shard, owner, move |owner| async move {
            crate::handlers::offset_for_leader_epoch::answer_on_owner(&owner, &query).error_code
        })
        .await
        .unwrap();
        assert_eq!(epochs, ResponseError::NotLeaderOrFollower.code());

        let deleted = crate::handlers::delete_records::delete_on_owner(
            &shard,
            owner,
            TopicPartition::new("t", 0),
            old_id,
            3,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(deleted, Err(ResponseError::UnknownTopicOrPartition));

        // The new topic: its five records from offset 0, nothing more.
        let offsets = list_offsets(&shard, 7, "t", &[(0, -2), (0, -1)]).await;
        assert_eq!((offsets[0].0, offsets[0].2), (0, 0), "{offsets:?}");
        assert_eq!((offsets[1].0, offsets[1].2), (0, 5), "{offsets:?}");
    });
}

/// ListOffsets and DeleteRecords routed with a view that still names this
/// broker leader check the replica's own role and epoch on the owning
/// shard, as OffsetForLeaderEpoch does: the metadata follower makes a
/// replica a follower before it publishes the view that says so. A
/// follower's high watermark is never answered as LATEST, its log start
/// never moves.
#[test]
fn list_offsets_and_delete_records_on_the_owner_need_a_leading_replica() {
    with_shards("owner-checks-role", 2, |shard| async move {
        let owner = topic(&shard, "t", 1).await[0];
        append(&shard, "t", 0, simple_batch(3, 10, TimestampMs(1)), true).await;
        let id = topic_id(&shard, "t");
        let list = |timestamp: i64, current_leader_epoch: i32| {
            let query = list_offsets::Query {
                slot: 0,
                topic_partition: TopicPartition::new("t", 0),
                topic_id: id,
                timestamp,
                current_leader_epoch,
                read_committed: false,
            };
            on_shard(&shard, owner, move |owner| async move {
                let answer = list_offsets::answer_on_owner(&owner, &query).await;
                (answer.error_code, answer.offset, answer.leader_epoch)
            })
        };
        let epoch = on_shard(&shard, owner, |owner| async move {
            let replica = owner.partition(&TopicPartition::new("t", 0)).unwrap();
            replica.state().leader_epoch.0
        })
        .await
        .unwrap();
        assert_eq!(list(-1, -1).await.unwrap(), (0, 3, epoch));
        assert_eq!(list(-1, epoch).await.unwrap(), (0, 3, epoch));
        assert_eq!(
            list(-1, epoch + 1).await.unwrap().0,
            ResponseError::UnknownLeaderEpoch.code()
        );

        // The follower thread made it a follower in the next epoch and has
        // not published that view yet.
        on_shard(&shard, owner, move |owner| async move {
            let follower = crate::shard::ReplicaState {
                role: crate::shard::ReplicaRole::Follower,
                leader_epoch: LeaderEpoch(epoch + 1),
            };
            assert!(owner.set_replica_state(&TopicPartition::new("t", 0), follower));
        })
        .await
        .unwrap();
        let not_leader = ResponseError::NotLeaderOrFollower.code();
        assert_eq!(list(-1, -1).await.unwrap().0, not_leader);
        assert_eq!(list(-2, -1).await.unwrap().0, not_leader);
        assert_eq!(
            list(-1, epoch).await.unwrap().0,
            ResponseError::FencedLeaderEpoch.code()
        );
        let deleted = crate::handlers::delete_records::delete_on_owner(
            &shard,
            owner,
            TopicPartition::new("t", 0),
            id,
            2,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(deleted, Err(ResponseError::NotLeaderOrFollower));
        let log_start = on_shard(&shard, owner, |owner| async move {
            let replica = owner.partition(&TopicPartition::new("t", 0)).unwrap();
            replica.log.log_start_offset().value()
        })
        .await
        .unwrap();
        assert_eq!(log_start, 0, "a follower's log start moved");
    });
}

/// DeleteTopics v6 by topic id: the topic of that id goes; an id no topic
/// has (a topic deleted and created again under its name has a new one)
/// answers UNKNOWN_TOPIC_ID and deletes nothing (the controller checks the
/// id: `Request::DeleteTopicWithId`).
#[test]
fn delete_topics_by_id_deletes_only_the_topic_of_that_id() {
    use kafka_protocol::messages::DeleteTopicsRequest;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    with_shards("delete-by-id", 1, |shard| async move {
        topic(&shard, "t", 1).await;
        let old_id = topic_id(&shard, "t");
        crate::shard::topics::delete_topic(&shard, "t")
            .await
            .unwrap();
        topic(&shard, "t", 1).await;
        let new_id = topic_id(&shard, "t");
        let delete = |id: uuid::Uuid| {
            DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_topic_id(id)])
                .with_timeout_ms(5_000)
        };
        // Straight to the controller with the old id, as a broker whose
        // view lags would send it: the new topic stays.
        let refused = shard
            .metadata
            .delete_topic_with_id("t", old_id)
            .await
            .unwrap_err();
        assert!(
            matches!(refused, crate::metadata::MetadataError::UnknownTopic(_)),
            "{refused:?}"
        );
        assert_eq!(topic_id(&shard, "t"), new_id);
        let answer = |reply: Reply| {
            let Reply::Body(body) = reply else {
                panic!("a body")
            };
            let ResponseKind::DeleteTopics(response) = *body else {
                panic!("a DeleteTopics response")
            };
            response.responses[0].error_code
        };
        let reply = crate::handlers::delete_topics::handle(
            &shard,
            6,
            delete(old_id),
            &Access::unrestricted(),
        )
        .await
        .unwrap();
        assert_eq!(answer(reply), ResponseError::UnknownTopicId.code());
        assert_eq!(topic_id(&shard, "t"), new_id);
        let reply = crate::handlers::delete_topics::handle(
            &shard,
            6,
            delete(new_id),
            &Access::unrestricted(),
        )
        .await
        .unwrap();
        assert_eq!(answer(reply), 0);
        assert!(!shard.metadata.snapshot().topics.contains_key("t"));
    });
}
