//! Stable twin of the fuzz target `server/fuzz/fuzz_targets/request_decode.rs`:
//! `decode_request` on seeded mutations of real requests (encoded with
//! kafka-protocol at every version it knows, for the APIs Sluice serves or
//! will) and on random bytes. It must never panic, and never abort: a length
//! prefix read off the wire that becomes a multi-gigabyte
//! `Vec::with_capacity` aborts the process (the broker's allocator,
//! `sluice_server::alloc`, maps such reservations lazily; this binary links
//! it too, so an abort here means that defence failed).
//!
//! `SLUICE_DECODE_SEED=s` replays a run, `SLUICE_DECODE_CASES=n` sets the
//! number of mutated frames, `SLUICE_DECODE_TRACE=1` prints every frame
//! before decoding it (the last one printed is the culprit of an abort).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::panic::AssertUnwindSafe;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_server::protocol::decode_request;
use support::Rng;
use support::wire::try_request_bytes;

const MUTATED_CASES_DEFAULT: u64 = 50_000;
const RANDOM_CASES_DEFAULT: u64 = 5000;

/// Decode `frame` as case `case`; on a panic, print the frame and fail.
fn decode_checked(frame: &[u8], case: u64, seed: u64) {
    if std::env::var_os("SLUICE_DECODE_TRACE").is_some() {
        // Straight to stderr, not through the test harness's capture, so
        // that the last case shows even when decoding aborts the process.
        let _ = writeln!(std::io::stderr(), "case {case}: {frame:02x?}");
    }
    let bytes = Bytes::copy_from_slice(frame);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = decode_request(bytes);
    }));
    if let Err(panic) = outcome {
        eprintln!(
            "decode_request panicked on case {case} of seed {seed} ({} bytes): {frame:02x?}",
            frame.len()
        );
        std::panic::resume_unwind(panic);
    }
}

fn name(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

fn topic(text: &'static str) -> TopicName {
    TopicName(name(text))
}

fn record_batch() -> Bytes {
    let records: Vec<Record> = (0..3)
        .map(|index| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: index,
            sequence: index as i32,
            timestamp: 1_700_000_000_000 + index,
            key: Some(Bytes::from(format!("key-{index}"))),
            value: Some(Bytes::from(vec![index as u8; 20])),
            headers: [(name("header"), Some(Bytes::from_static(b"value")))]
                .into_iter()
                .collect(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buffer,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encoding a record batch");
    buffer.freeze()
}

/// Requests with content, for the APIs the broker serves or is about to.
fn rich_requests() -> Vec<(ApiKey, RequestKind)> {
    let two_partitions_produce = vec![
        produce_request::PartitionProduceData::default()
            .with_index(0)
            .with_records(Some(record_batch())),
        produce_request::PartitionProduceData::default()
            .with_index(1)
            .with_records(Some(record_batch())),
    ];
    vec![
        (
            ApiKey::ApiVersions,
            RequestKind::ApiVersions(
                ApiVersionsRequest::default()
                    .with_client_software_name(name("fuzz"))
                    .with_client_software_version(name("1.0")),
            ),
        ),
        (
            ApiKey::Metadata,
            RequestKind::Metadata(
                MetadataRequest::default()
                    .with_topics(Some(vec![
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(topic("alpha"))),
                        metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(topic("beta"))),
                    ]))
                    .with_allow_auto_topic_creation(true),
            ),
        ),
        (
            ApiKey::Produce,
            RequestKind::Produce(
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(30000)
                    .with_topic_data(vec![
                        produce_request::TopicProduceData::default()
                            .with_name(topic("alpha"))
                            .with_partition_data(two_partitions_produce),
                    ]),
            ),
        ),
        (
            ApiKey::Fetch,
            RequestKind::Fetch(
                FetchRequest::default()
                    .with_max_wait_ms(500)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![
                        fetch_request::FetchTopic::default()
                            .with_topic(topic("alpha"))
                            .with_partitions(vec![
                                fetch_request::FetchPartition::default()
                                    .with_partition(0)
                                    .with_fetch_offset(42)
                                    .with_partition_max_bytes(65536),
                                fetch_request::FetchPartition::default()
                                    .with_partition(1)
                                    .with_fetch_offset(0)
                                    .with_partition_max_bytes(65536),
                            ]),
                    ]),
            ),
        ),
        (
            ApiKey::ListOffsets,
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(topic("alpha"))
                        .with_partitions(vec![
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1),
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_partition_index(1)
                                .with_timestamp(1_700_000_000_000),
                        ]),
                ])),
        ),
        (
            ApiKey::CreateTopics,
            RequestKind::CreateTopics(
                CreateTopicsRequest::default()
                    .with_timeout_ms(30000)
                    .with_topics(vec![
                        create_topics_request::CreatableTopic::default()
                            .with_name(topic("alpha"))
                            .with_num_partitions(6)
                            .with_replication_factor(1)
                            .with_configs(vec![
                                create_topics_request::CreatableTopicConfig::default()
                                    .with_name(name("retention.ms"))
                                    .with_value(Some(name("3600000"))),
                            ]),
                        create_topics_request::CreatableTopic::default()
                            .with_name(topic("beta"))
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                            .with_assignments(vec![
                                create_topics_request::CreatableReplicaAssignment::default()
                                    .with_partition_index(0)
                                    .with_broker_ids(vec![BrokerId(0)]),
                            ]),
                    ]),
            ),
        ),
        (
            ApiKey::DeleteTopics,
            RequestKind::DeleteTopics(
                DeleteTopicsRequest::default()
                    .with_topic_names(vec![topic("alpha"), topic("beta")])
                    .with_timeout_ms(30000),
            ),
        ),
        (
            ApiKey::CreatePartitions,
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic("alpha"))
                        .with_count(12)
                        .with_assignments(Some(vec![
                            create_partitions_request::CreatePartitionsAssignment::default()
                                .with_broker_ids(vec![BrokerId(0)]),
                        ])),
                ])),
        ),
        (
            ApiKey::DescribeConfigs,
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(name("alpha"))
                    .with_configuration_keys(Some(vec![name("retention.ms")])),
            ])),
        ),
        (
            ApiKey::AlterConfigs,
            RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(name("alpha"))
                    .with_configs(vec![
                        alter_configs_request::AlterableConfig::default()
                            .with_name(name("retention.ms"))
                            .with_value(Some(name("1000"))),
                    ]),
            ])),
        ),
        (
            ApiKey::IncrementalAlterConfigs,
            RequestKind::IncrementalAlterConfigs(
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(name("alpha"))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(name("retention.ms"))
                                .with_config_operation(0)
                                .with_value(Some(name("1000"))),
                        ]),
                ]),
            ),
        ),
        (
            ApiKey::DeleteRecords,
            RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(topic("alpha"))
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(0)
                                .with_offset(10),
                        ]),
                ])),
        ),
        (
            ApiKey::InitProducerId,
            RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(name("txn"))))
                    .with_transaction_timeout_ms(60000),
            ),
        ),
    ]
}

/// Default (mostly empty) requests of many more APIs.
macro_rules! default_requests {
    ($($api:ident),* $(,)?) => {
        vec![$((ApiKey::$api, RequestKind::$api(Default::default()))),*]
    };
}

fn seed_frames() -> Vec<Vec<u8>> {
    let mut requests = rich_requests();
    requests.extend(default_requests![
        ApiVersions,
        Metadata,
        Produce,
        Fetch,
        ListOffsets,
        CreateTopics,
        DeleteTopics,
        CreatePartitions,
        DescribeConfigs,
        AlterConfigs,
        IncrementalAlterConfigs,
        DeleteRecords,
        DescribeCluster,
        InitProducerId,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        ListGroups,
        DescribeGroups,
        DeleteGroups,
        SaslHandshake,
        SaslAuthenticate,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        OffsetForLeaderEpoch,
        DescribeProducers,
        DescribeTransactions,
        ListTransactions,
        DescribeLogDirs,
        DescribeTopicPartitions,
        ConsumerGroupHeartbeat,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        OffsetDelete,
        ElectLeaders,
    ]);
    let mut frames = Vec::new();
    for (correlation_id, (api_key, body)) in requests.iter().enumerate() {
        let versions = api_key.valid_versions();
        for version in versions.min..=versions.max {
            // A field set on a version that lacks it does not encode: skip.
            match try_request_bytes(*api_key, version, correlation_id as i32, body) {
                Ok(frame) => frames.push(frame),
                Err(error) if std::env::var_os("SLUICE_DECODE_DEBUG").is_some() => {
                    eprintln!("{api_key:?} v{version}: {error}")
                }
                Err(_) => {}
            }
        }
    }
    frames
}

/// Values that make length prefixes and counts interesting.
const INTERESTING_I32: [i32; 10] = [
    0,
    -1,
    1,
    i32::MAX,
    i32::MIN,
    0x4000_0000,
    0x0100_0000,
    0xffff,
    -2,
    127,
];

fn mutate(frame: &mut Vec<u8>, rng: &mut Rng, frames: &[Vec<u8>]) {
    // Mostly leave the api key and version alone, so bodies get decoded.
    let protected = if rng.below(5) == 0 {
        0
    } else {
        4.min(frame.len())
    };
    let position = |rng: &mut Rng, frame: &Vec<u8>| {
        protected + rng.below((frame.len() - protected).max(1) as u64) as usize
    };
    for _ in 0..1 + rng.below(4) {
        if frame.len() <= protected {
            let count = 1 + rng.below(8) as usize;
            frame.extend(rng.bytes(count));
            continue;
        }
        match rng.below(9) {
            0 => {
                let at = position(rng, frame);
                frame[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = position(rng, frame);
                frame[at] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff][rng.below(6) as usize];
            }
            2 => {
                let at = position(rng, frame).min(frame.len().saturating_sub(4));
                let value = INTERESTING_I32[rng.below(INTERESTING_I32.len() as u64) as usize];
                let end = (at + 4).min(frame.len());
                frame[at..end].copy_from_slice(&value.to_be_bytes()[..end - at]);
            }
            3 => {
                // A huge unsigned varint (compact lengths in flexible versions).
                let at = position(rng, frame);
                let varint = [0xfe, 0xff, 0xff, 0xff, 0x0f];
                for (offset, byte) in varint.iter().enumerate() {
                    if at + offset < frame.len() {
                        frame[at + offset] = *byte;
                    }
                }
            }
            4 => {
                let keep = protected + rng.below((frame.len() - protected) as u64 + 1) as usize;
                frame.truncate(keep);
            }
            5 => {
                let at = position(rng, frame);
                let count = 1 + rng.below(16) as usize;
                let inserted = rng.bytes(count);
                frame.splice(at..at, inserted);
            }
            6 => {
                let at = position(rng, frame);
                let end = (at + 1 + rng.below(16) as usize).min(frame.len());
                frame.drain(at..end);
            }
            7 => {
                let at = position(rng, frame);
                let end = (at + 1 + rng.below(32) as usize).min(frame.len());
                let copy = frame[at..end].to_vec();
                frame.splice(at..at, copy);
            }
            _ => {
                let other = &frames[rng.below(frames.len() as u64) as usize];
                let at = position(rng, frame);
                let from = rng.below(other.len() as u64) as usize;
                frame.truncate(at);
                frame.extend_from_slice(&other[from..]);
            }
        }
    }
}

fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

#[test]
fn decode_request_survives_mutated_real_requests_and_random_bytes() {
    let seed = Rng::seed_from_env("SLUICE_DECODE_SEED");
    // Not captured by the harness: shown even if decoding aborts the process.
    let _ = writeln!(
        std::io::stderr(),
        "request_decode_twin: seed {seed} (SLUICE_DECODE_SEED={seed} replays it, \
         SLUICE_DECODE_TRACE=1 prints each frame before decoding it)"
    );
    let mut rng = Rng::new(seed);
    let frames = seed_frames();
    assert!(
        frames.len() >= 250,
        "only {} seed frames encoded",
        frames.len()
    );
    let mut case = 0;
    for frame in &frames {
        decode_checked(frame, case, seed);
        case += 1;
    }
    let mutated_cases = env_count("SLUICE_DECODE_CASES", MUTATED_CASES_DEFAULT);
    for _ in 0..mutated_cases {
        let mut frame = frames[rng.below(frames.len() as u64) as usize].clone();
        mutate(&mut frame, &mut rng, &frames);
        decode_checked(&frame, case, seed);
        case += 1;
    }
    for _ in 0..RANDOM_CASES_DEFAULT {
        let size = rng.below(300) as usize;
        let frame = rng.bytes(size);
        decode_checked(&frame, case, seed);
        case += 1;
    }
    println!(
        "{case} frames decoded ({} seeds) without a panic",
        frames.len()
    );
}

#[test]
fn decode_request_refuses_a_metadata_request_claiming_two_billion_topics() {
    // api key 3, v0, correlation id 9, null client id, topic count i32::MAX.
    let frame = [0, 3, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff];
    decode_checked(&frame, 0, 0);
    assert!(
        decode_request(Bytes::copy_from_slice(&frame)).is_err(),
        "a request with two billion topics and no bytes for them decodes"
    );
}
