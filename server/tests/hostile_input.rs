//! Hostile input on raw TCP sockets. After each, the broker must still be
//! running and must serve a normal metadata request from rdkafka; where
//! Kafka's behaviour is defined (close the connection, or KIP-511's answer
//! to an unknown ApiVersions version) the test checks it too.
//!
//! `SLUICE_HOSTILE_SEED=n` replays the seeded garbage of a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestKind};
use kafka_protocol::protocol::{Decodable, StrBytes};
use support::kafka::assert_serves_metadata;
use support::wire::{self, Ending};
use support::{Broker, Rng};

/// How long the broker may take to close a connection it refuses.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const UNSUPPORTED_VERSION: i16 = 35;

fn assert_closed(stream: &mut std::net::TcpStream, what: &str, broker: &Broker) {
    let ending = wire::ending(stream, CLOSE_TIMEOUT);
    assert_eq!(
        ending,
        Ending::Closed,
        "{what}: the broker should close the connection without answering\n{}",
        broker.stderr_tail()
    );
}

#[test]
fn garbage_bytes_close_the_connection_and_the_broker_keeps_serving() {
    let mut broker = Broker::start("hostile_garbage");
    // An HTTP request: its first four bytes read as a 1.2 GB frame size.
    let mut stream = wire::connect(broker.address());
    wire::write_ignoring_reset(&mut stream, b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n");
    assert_closed(&mut stream, "an HTTP request", &broker);
    // A TLS ClientHello start: 0x16030100 is 369 MB, over the frame limit.
    let mut stream = wire::connect(broker.address());
    wire::write_ignoring_reset(&mut stream, &[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00]);
    assert_closed(&mut stream, "a TLS ClientHello", &broker);
    // Seeded random garbage, raw and as the body of a correctly sized frame.
    let seed = Rng::seed_from_env("SLUICE_HOSTILE_SEED");
    println!("seed {seed} (SLUICE_HOSTILE_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    for round in 0..40 {
        let size = 1 + rng.below(4096) as usize;
        let garbage = rng.bytes(size);
        let bytes = if round % 2 == 0 {
            garbage
        } else {
            wire::framed(&garbage)
        };
        let mut stream = wire::connect(broker.address());
        wire::write_ignoring_reset(&mut stream, &bytes);
        // Whatever it does with the connection, it must not hang others or die.
        let _ = wire::ending(&mut stream, Duration::from_millis(50));
        drop(stream);
        broker.assert_running();
    }
    assert_serves_metadata(&mut broker);
}

#[test]
fn a_truncated_frame_then_close_leaves_the_broker_serving() {
    let mut broker = Broker::start("hostile_truncated");
    let request = wire::request_frame(
        ApiKey::ApiVersions,
        3,
        1,
        &RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("truncated"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        ),
    );
    for cut in [1, 3, 4, 5, 10, request.len() - 1] {
        let mut stream = wire::connect(broker.address());
        wire::write_ignoring_reset(&mut stream, &request[..cut]);
        drop(stream);
    }
    // A size prefix announcing more than ever comes, then a half-close.
    let mut stream = wire::connect(broker.address());
    wire::write_ignoring_reset(&mut stream, &[0, 0, 0, 100, 0, 18, 0, 0]);
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert_closed(&mut stream, "a truncated frame and a half-close", &broker);
    assert_serves_metadata(&mut broker);
}

#[test]
fn a_negative_frame_size_closes_the_connection() {
    let mut broker = Broker::start("hostile_negative_size");
    for size in [-1_i32, i32::MIN, -4] {
        let mut stream = wire::connect(broker.address());
        let mut bytes = size.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 1, 0, 0]);
        wire::write_ignoring_reset(&mut stream, &bytes);
        assert_closed(&mut stream, &format!("frame size {size}"), &broker);
    }
    assert_serves_metadata(&mut broker);
}

#[test]
fn a_two_gigabyte_size_prefix_closes_the_connection_without_taking_the_memory() {
    let mut broker = Broker::start("hostile_huge_size");
    let rss_before = broker.rss_bytes();
    for size in [i32::MAX, 1 << 30, (100 << 20) + 1] {
        let mut stream = wire::connect(broker.address());
        wire::write_ignoring_reset(&mut stream, &size.to_be_bytes());
        wire::write_ignoring_reset(&mut stream, &[0, 18, 0, 0, 0, 0, 0, 1]);
        assert_closed(&mut stream, &format!("frame size {size}"), &broker);
    }
    let rss_after = broker.rss_bytes();
    println!("broker RSS before {rss_before} bytes, after {rss_after} bytes");
    assert!(
        rss_after < rss_before + (64 << 20),
        "RSS grew from {rss_before} to {rss_after} bytes after refused frame sizes"
    );
    assert_serves_metadata(&mut broker);
}

#[test]
fn an_unknown_api_key_closes_the_connection() {
    let mut broker = Broker::start("hostile_unknown_api");
    // 999: no such API. 10000 and -1: not even plausible. 57 (UpdateFeatures)
    // exists in Kafka but is not served here.
    for api_key in [999_i16, 10000, -1, 57] {
        let mut stream = wire::connect(broker.address());
        let mut body = Vec::new();
        body.put_i16(api_key);
        body.put_i16(0);
        body.put_i32(77);
        body.put_i16(-1);
        wire::write_ignoring_reset(&mut stream, &wire::framed(&body));
        assert_closed(&mut stream, &format!("api key {api_key}"), &broker);
    }
    assert_serves_metadata(&mut broker);
}

/// An ApiVersions request of version `version` as a newer client would send
/// it: request header v2 (client id, tagged fields), v3-style body.
fn api_versions_request_of_unknown_version(version: i16, correlation_id: i32) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(version);
    body.put_i32(correlation_id);
    body.put_i16(6);
    body.extend_from_slice(b"future");
    body.put_u8(0); // header tagged fields
    body.put_u8(7); // compact string: "future" (length + 1)
    body.extend_from_slice(b"future");
    body.put_u8(4);
    body.extend_from_slice(b"9.9");
    body.put_u8(0); // body tagged fields
    wire::framed(&body)
}

#[test]
fn api_versions_v99_is_answered_with_unsupported_version_in_a_v0_response() {
    let mut broker = Broker::start("hostile_api_versions_v99");
    let mut stream = wire::connect(broker.address());
    stream
        .write_all(&api_versions_request_of_unknown_version(99, 4242))
        .expect("sending ApiVersions v99");
    let frame = wire::read_frame(&mut stream)
        .unwrap_or_else(|error| panic!("no answer to ApiVersions v99: {error}"));
    let mut bytes = frame.clone();
    assert_eq!(bytes.get_i32(), 4242, "correlation id (response header v0)");
    let response = ApiVersionsResponse::decode(&mut bytes, 0)
        .unwrap_or_else(|error| panic!("the answer is not a v0 ApiVersions response: {error}"));
    assert_eq!(
        bytes.remaining(),
        0,
        "v0 response with trailing bytes: {frame:02x?}"
    );
    assert_eq!(
        response.error_code, UNSUPPORTED_VERSION,
        "error code UNSUPPORTED_VERSION"
    );
    let api_versions = response
        .api_keys
        .iter()
        .find(|entry| entry.api_key == ApiKey::ApiVersions as i16)
        .expect("the v0 answer lists ApiVersions, so the client can retry");
    assert!(
        api_versions.max_version >= 3,
        "ApiVersions up to v3 at least"
    );

    // As librdkafka does: retry on the same connection with the highest
    // version the broker listed.
    let retry_version = api_versions.max_version;
    let request = wire::request_frame(
        ApiKey::ApiVersions,
        retry_version,
        4243,
        &RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("sluice-test"))
                .with_client_software_version(StrBytes::from_static_str("1.0")),
        ),
    );
    stream.write_all(&request).expect("sending the retry");
    let mut frame = wire::read_frame(&mut stream).expect("an answer to the retry");
    assert_eq!(frame.get_i32(), 4243, "retry correlation id");
    let response = ApiVersionsResponse::decode(&mut frame, retry_version)
        .expect("a valid ApiVersions response");
    assert_eq!(response.error_code, 0, "the retry succeeds");
    drop(stream);
    assert_serves_metadata(&mut broker);
}

#[test]
fn a_valid_header_with_a_garbage_body_closes_the_connection() {
    let mut broker = Broker::start("hostile_garbage_body");
    let seed = Rng::seed_from_env("SLUICE_HOSTILE_SEED");
    println!("seed {seed} (SLUICE_HOSTILE_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    // Metadata v12 header (flexible) followed by bytes that cannot be a
    // body: 0xff bytes make an unterminated varint.
    let mut bytes = wire::header_bytes(ApiKey::Metadata, 12, 5);
    bytes.extend_from_slice(&[0xff; 64]);
    let mut stream = wire::connect(broker.address());
    wire::write_ignoring_reset(&mut stream, &wire::framed(&bytes));
    assert_closed(&mut stream, "Metadata v12 with a 0xff body", &broker);
    // Random bodies behind valid headers of the served APIs: each either
    // parses (and is answered) or closes the connection; the broker lives.
    for round in 0..40 {
        let (api_key, version) = if round % 2 == 0 {
            (ApiKey::Metadata, (round % 13) as i16)
        } else {
            (ApiKey::ApiVersions, (round % 5) as i16)
        };
        let mut bytes = Vec::new();
        bytes.put_i16(api_key as i16);
        bytes.put_i16(version);
        bytes.put_i32(round);
        let garbage_size = rng.below(200) as usize;
        bytes.extend(rng.bytes(garbage_size));
        let mut stream = wire::connect(broker.address());
        wire::write_ignoring_reset(&mut stream, &wire::framed(&bytes));
        let _ = wire::ending(&mut stream, Duration::from_millis(50));
        broker.assert_running();
    }
    assert_serves_metadata(&mut broker);
}

#[test]
fn a_metadata_request_claiming_two_billion_topics_does_not_take_the_broker_down() {
    // Array lengths come off the wire; a decoder that allocates them up
    // front (Vec::with_capacity) aborts the process on a 20-byte request.
    let mut broker = Broker::start("hostile_huge_array");
    let cases: [(i16, Vec<u8>); 3] = [
        // v0: topics is a non-nullable array, i32 count.
        (0, i32::MAX.to_be_bytes().to_vec()),
        // v4: i32 count, then allow_auto_topic_creation.
        (4, [&0x4000_0000_i32.to_be_bytes()[..], &[1]].concat()),
        // v9 (flexible): compact array, unsigned varint count + 1 = 2^32 - 1.
        (9, vec![0xfe, 0xff, 0xff, 0xff, 0x0f]),
    ];
    for (version, body) in cases {
        let mut bytes = Vec::new();
        bytes.put_i16(ApiKey::Metadata as i16);
        bytes.put_i16(version);
        bytes.put_i32(9);
        bytes.put_i16(-1); // null client id
        if version >= 9 {
            bytes.put_u8(0); // header tagged fields
        }
        bytes.extend_from_slice(&body);
        let mut stream = wire::connect(broker.address());
        wire::write_ignoring_reset(&mut stream, &wire::framed(&bytes));
        let _ = wire::ending(&mut stream, CLOSE_TIMEOUT);
        std::thread::sleep(Duration::from_millis(100));
        if let Some(status) = broker.exited() {
            panic!(
                "Metadata v{version} with a huge topic count killed the broker ({status})\n{}",
                broker.stderr_tail()
            );
        }
    }
    assert_serves_metadata(&mut broker);
}

/// Pipeline ApiVersions requests on a socket that never reads, until the
/// broker stops reading them (its responses fill both socket buffers).
fn stall(broker: &Broker) -> std::net::TcpStream {
    let request: Vec<u8> = (0..64)
        .flat_map(|index| {
            wire::request_frame(
                ApiKey::ApiVersions,
                0,
                index,
                &RequestKind::ApiVersions(Default::default()),
            )
        })
        .collect();
    let mut stream = wire::connect(broker.address());
    stream.set_nonblocking(true).expect("nonblocking");
    let mut stalled_since: Option<Instant> = None;
    let mut written_bytes = 0_usize;
    let mut pending: &[u8] = &request;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the broker kept reading requests from a client that never reads \
             ({written_bytes} bytes written)"
        );
        match stream.write(pending) {
            Ok(count) => {
                written_bytes += count;
                stalled_since = None;
                pending = &pending[count..];
                if pending.is_empty() {
                    pending = &request;
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    return stream;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("writing to the broker: {error}"),
        }
    }
}

#[test]
fn a_client_that_never_reads_its_responses_does_not_stop_other_clients() {
    let mut broker = Broker::start("hostile_never_reads");
    // Several, so that every shard has one (connections spread over the
    // shards' SO_REUSEPORT listeners by hash).
    let stalled: Vec<_> = (0..8).map(|_| stall(&broker)).collect();
    for _ in 0..3 {
        assert_serves_metadata(&mut broker);
        let mut stream = wire::connect(broker.address());
        stream
            .write_all(&wire::request_frame(
                ApiKey::ApiVersions,
                0,
                1,
                &RequestKind::ApiVersions(Default::default()),
            ))
            .expect("sending ApiVersions");
        let mut frame = wire::read_frame(&mut stream)
            .expect("another client gets its answer while others are stalled");
        assert_eq!(frame.get_i32(), 1, "correlation id");
    }
    drop(stalled);
    assert_serves_metadata(&mut broker);
}

#[test]
fn frames_split_into_single_bytes_are_reassembled() {
    // Not hostile, only slow: a frame arriving one byte at a time.
    let mut broker = Broker::start("hostile_byte_by_byte");
    let mut stream = wire::connect(broker.address());
    stream.set_nodelay(true).expect("nodelay");
    let request = wire::request_frame(
        ApiKey::ApiVersions,
        0,
        31,
        &RequestKind::ApiVersions(Default::default()),
    );
    for byte in request {
        stream.write_all(&[byte]).expect("one byte");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut frame: Bytes = wire::read_frame(&mut stream).expect("an answer");
    assert_eq!(frame.get_i32(), 31, "correlation id");
    assert_serves_metadata(&mut broker);
}

/// A v2 batch header (61 bytes) with codec `codec` and `records` as its
/// records section, claiming `records_count` records; CRC correct.
fn batch_with_records(codec: i16, records_count: i32, records: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(61 + records.len());
    out.extend_from_slice(&0_i64.to_be_bytes()); // baseOffset
    out.extend_from_slice(&(49 + records.len() as i32).to_be_bytes()); // batchLength
    out.extend_from_slice(&0_i32.to_be_bytes()); // partitionLeaderEpoch
    out.push(2); // magic
    out.extend_from_slice(&0_u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&codec.to_be_bytes()); // attributes
    out.extend_from_slice(&(records_count - 1).to_be_bytes()); // lastOffsetDelta
    out.extend_from_slice(&1_700_000_000_000_i64.to_be_bytes()); // baseTimestamp
    out.extend_from_slice(&1_700_000_000_000_i64.to_be_bytes()); // maxTimestamp
    out.extend_from_slice(&(-1_i64).to_be_bytes()); // producerId
    out.extend_from_slice(&(-1_i16).to_be_bytes()); // producerEpoch
    out.extend_from_slice(&(-1_i32).to_be_bytes()); // baseSequence
    out.extend_from_slice(&records_count.to_be_bytes());
    out.extend_from_slice(records);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// One record as the records section of an uncompressed v2 batch holds it:
/// offset delta `delta`, no key, value `value`.
fn record_bytes(delta: u8, value: &[u8]) -> Vec<u8> {
    // attributes 0, timestampDelta 0, offsetDelta, keyLength -1, value,
    // no headers (zigzag varints; every length here fits one byte).
    let mut body = vec![0, 0, delta * 2, 1, (value.len() * 2) as u8];
    body.extend_from_slice(value);
    body.push(0);
    let mut out = vec![(body.len() * 2) as u8];
    out.extend_from_slice(&body);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use sluice_engine::batch::codec::{Target, compress};
    compress(Target::Gzip { level: None }, data).expect("gzip")
}

/// Produce `records` to partition 0 of `topic` (v9, acks=1): the error
/// code and base offset.
fn produce_raw(broker: &Broker, topic: &str, records: Bytes) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let mut stream = wire::connect(broker.address());
    stream
        .write_all(&wire::request_frame(
            ApiKey::Produce,
            9,
            5,
            &RequestKind::Produce(request),
        ))
        .expect("sending Produce");
    let mut frame = wire::read_frame(&mut stream).expect("a Produce answer");
    let header = kafka_protocol::messages::ResponseHeader::decode(
        &mut frame,
        ApiKey::Produce.response_header_version(9),
    )
    .expect("a response header");
    assert_eq!(header.correlation_id, 5);
    let response = ProduceResponse::decode(&mut frame, 9).expect("a Produce response");
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// Kafka decompresses every compressed batch it is given: records that do
/// not decompress, or that are not the records the header counts, are
/// refused. Stored, such a batch stopped every consumer of the
/// partition at it, and one claiming 2^31 records moved the log end by
/// that much.
#[test]
fn a_compressed_batch_whose_records_are_not_what_its_header_says_is_corrupt() {
    const CORRUPT_MESSAGE: i16 = 2;
    const INVALID_RECORD: i16 = 87;
    const GZIP: i16 = 1;
    let mut broker = Broker::start("hostile_compressed");
    support::kafka::create_topic(&broker.bootstrap(), "squeezed", 1, &[]);
    let two = [record_bytes(0, b"first"), record_bytes(1, b"second")].concat();
    // As Kafka answers them: a codec failure is CORRUPT_MESSAGE, records
    // that do not match the header INVALID_RECORD (its InvalidRecordException
    // from the compressed batch's iterator), as for an uncompressed batch.
    let cases = [
        (
            "junk instead of gzip",
            batch_with_records(GZIP, i32::MAX, &[0, 0xde, 0xad]),
            CORRUPT_MESSAGE,
        ),
        (
            "fewer records than counted",
            batch_with_records(GZIP, 3, &gzip(&two)),
            INVALID_RECORD,
        ),
        (
            "more records than counted",
            batch_with_records(GZIP, 1, &gzip(&two)),
            INVALID_RECORD,
        ),
        (
            "offset deltas out of place",
            batch_with_records(
                GZIP,
                2,
                &gzip(&[record_bytes(0, b"a"), record_bytes(5, b"b")].concat()),
            ),
            INVALID_RECORD,
        ),
    ];
    for (what, batch, expected) in cases {
        let (error_code, _) = produce_raw(&broker, "squeezed", batch);
        assert_eq!(error_code, expected, "{what}");
    }
    // The same records, counted right, are taken, at offset 0: nothing of
    // the refused batches moved the log end.
    let (error_code, base_offset) = produce_raw(
        &broker,
        "squeezed",
        batch_with_records(GZIP, 2, &gzip(&two)),
    );
    assert_eq!((error_code, base_offset), (0, 0));
    let (error_code, base_offset) = produce_raw(
        &broker,
        "squeezed",
        batch_with_records(GZIP, 2, &gzip(&two)),
    );
    assert_eq!((error_code, base_offset), (0, 2));
    assert_serves_metadata(&mut broker);
}

/// `sluice_connections_open` from the broker's /metrics, summed over its
/// listeners.
fn connections_open(broker: &Broker) -> f64 {
    let mut admin = std::net::TcpStream::connect(broker.admin_address()).expect("admin port");
    admin
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n")
        .expect("asking /metrics");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut admin, &mut text).expect("reading /metrics");
    text.lines()
        .filter(|line| line.starts_with("sluice_connections_open"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Connections idle for `--connections-max-idle-ms` are closed (Kafka's
/// connections.max.idle.ms): one that never sends anything, and one that
/// stopped reading its answers, whose buffers (zero-copy fetch answers
/// keep whole cache chunks alive) it held for as long as it stayed
/// connected. One that keeps sending requests stays.
#[test]
fn idle_connections_and_clients_that_stop_reading_are_closed() {
    let broker = Broker::start_with_args("hostile_idle", &["--connections-max-idle-ms", "1000"]);
    let mut silent = wire::connect(broker.address());
    let stalled = stall(&broker);
    let mut active = wire::connect(broker.address());
    let ask = |stream: &mut std::net::TcpStream, correlation_id: i32| {
        stream
            .write_all(&wire::request_frame(
                ApiKey::ApiVersions,
                0,
                correlation_id,
                &RequestKind::ApiVersions(Default::default()),
            ))
            .expect("sending ApiVersions");
        let mut frame = wire::read_frame(stream).expect("an answer");
        assert_eq!(frame.get_i32(), correlation_id);
    };
    let started = Instant::now();
    let mut correlation_id = 0;
    while started.elapsed() < Duration::from_millis(3_500) {
        correlation_id += 1;
        ask(&mut active, correlation_id);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        wire::ending(&mut silent, Duration::from_millis(100)),
        Ending::Closed,
        "a connection silent for 3.5 s is closed\n{}",
        broker.stderr_tail()
    );
    // Only the active client (and no stalled one) is left. The stalled
    // client stopped writing once its requests filled the socket buffers
    // for 0.5 s, but the broker may still be answering what those buffers
    // hold (tens of thousands of tiny ApiVersions requests; seconds of
    // work for a debug build on a loaded machine): it is idle, and closed,
    // only once its answers fill the client's unread receive buffer. So
    // this waits for that, while the active client keeps asking.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        correlation_id += 1;
        ask(&mut active, correlation_id);
        let open = connections_open(&broker);
        if open == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connections still open 30 s after a client stopped reading \
             (only the active one should be)\n{}",
            broker.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stalled);
}
