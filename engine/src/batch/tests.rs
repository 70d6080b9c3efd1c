//! Unit tests of the batch module: builder round trips, one test per error,
//! patching, timestamp lookup, byte-exact encodings checked against hand
//! written bytes and against another client's encoder (sarama), and a seeded
//! mutation test that stands in for the fuzzer on stable Rust.

#![allow(clippy::unwrap_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;

use super::varint::put_varint;
use super::*;

const LIMIT: usize = 1 << 20;
const T0: TimestampMs = TimestampMs(1_700_000_000_000);

/// CRC-32C bit by bit, independent of the crc32c crate: reflected
/// Castagnoli polynomial 0x82F63B78, initial value and final xor all ones.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn read_i32(batch: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(batch[at..at + 4].try_into().unwrap())
}

fn write_i32(batch: &mut [u8], at: usize, value: i32) {
    batch[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn write_i16(batch: &mut [u8], at: usize, value: i16) {
    batch[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn stored_crc(batch: &[u8]) -> u32 {
    u32::from_be_bytes(
        batch[layout::CRC_AT..layout::CRC_AT + 4]
            .try_into()
            .unwrap(),
    )
}

/// Recompute the CRC after editing covered bytes, so a test reaches the
/// checks after the CRC check.
fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[layout::CRC_COVERED_FROM..]);
    batch[layout::CRC_AT..layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Set batchLength from the slice length and fix the CRC.
fn fix_framing(batch: &mut [u8]) {
    let batch_length = i32::try_from(batch.len() - layout::LOG_OVERHEAD).unwrap();
    write_i32(batch, layout::BATCH_LENGTH_AT, batch_length);
    fix_crc(batch);
}

/// A batch whose records section is `records_section` verbatim, with the
/// given count fields and correct framing and CRC.
fn batch_with_raw_records(
    records_count: i32,
    last_offset_delta: i32,
    records_section: &[u8],
) -> Vec<u8> {
    let mut batch = simple_batch(1, 1, T0)[..BATCH_HEADER_SIZE].to_vec();
    batch.extend_from_slice(records_section);
    write_i32(&mut batch, layout::RECORDS_COUNT_AT, records_count);
    write_i32(&mut batch, layout::LAST_OFFSET_DELTA_AT, last_offset_delta);
    fix_framing(&mut batch);
    batch
}

/// A record: its length varint followed by `body`.
fn raw_record(body: &[u8]) -> Vec<u8> {
    let mut record = Vec::new();
    put_varint(&mut record, i32::try_from(body.len()).unwrap());
    record.extend_from_slice(body);
    record
}

/// A well-formed record body: attributes 0, timestampDelta 0, the given
/// offsetDelta, null key, value "v", no headers.
fn record_body(offset_delta: i32) -> Vec<u8> {
    let mut body = vec![0, 0];
    put_varint(&mut body, offset_delta);
    body.extend_from_slice(&[0x01, 0x02, b'v', 0x00]);
    body
}

fn mixed_batch() -> Bytes {
    BatchBuilder::new()
        .producer(4242, 3, 17)
        .record(Some(&b"key-0"[..]), Some(&b"value-0"[..]), T0)
        .record(None, Some(&b"value-1"[..]), TimestampMs(T0.0 + 7))
        .record(Some(&b""[..]), None, TimestampMs(T0.0 - 5))
        .record_with_headers(
            Some(&b"key-3"[..]),
            Some(&[0xff; 300][..]),
            &[
                ("trace-id", Some(&b"abc"[..])),
                ("empty", Some(&b""[..])),
                ("null", None),
            ],
            TimestampMs(T0.0 + 1_000_000),
        )
        .build()
}

#[test]
fn the_builder_round_trips_through_validate() {
    let batch = mixed_batch();
    let header = validate(&batch, LIMIT).unwrap();
    assert_eq!(header.base_offset(), Offset(0));
    assert_eq!(header.partition_leader_epoch(), LeaderEpoch(-1));
    assert_eq!(header.magic(), 2);
    assert_eq!(header.records_count(), 4);
    assert_eq!(header.last_offset_delta(), 3);
    assert_eq!(header.last_offset(), Offset(3));
    assert_eq!(header.next_offset(), Offset(4));
    assert_eq!(header.total_size(), batch.len());
    assert_eq!(header.base_timestamp(), T0);
    assert_eq!(header.max_timestamp(), TimestampMs(T0.0 + 1_000_000));
    assert_eq!(header.compression(), Compression::None);
    assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
    assert!(!header.is_transactional());
    assert!(!header.is_control());
    assert!(!header.has_delete_horizon());
    assert!(header.has_producer_id());
    assert_eq!(
        (
            header.producer_id(),
            header.producer_epoch(),
            header.base_sequence()
        ),
        (4242, 3, 17)
    );
    assert_eq!(
        header.crc(),
        crc32c_bitwise(&batch[layout::CRC_COVERED_FROM..])
    );

    let decoded: Vec<Record<'_>> = records(&batch, &header).collect::<Result<_, _>>().unwrap();
    assert_eq!(decoded.len(), 4);
    assert_eq!(decoded[0].key, Some(&b"key-0"[..]));
    assert_eq!(decoded[1].key, None);
    assert_eq!(decoded[2].key, Some(&b""[..]));
    assert_eq!(decoded[2].value, None);
    assert_eq!(decoded[2].timestamp_delta, -5);
    assert_eq!(decoded[3].value, Some(&[0xff; 300][..]));
    assert_eq!(decoded[3].timestamp_delta, 1_000_000);
    let headers: Vec<_> = decoded[3].headers().collect();
    assert_eq!(
        headers,
        vec![
            (&b"trace-id"[..], Some(&b"abc"[..])),
            (&b"empty"[..], Some(&b""[..])),
            (&b"null"[..], None),
        ]
    );
    assert_eq!(decoded[3].headers_count(), 3);
    for (index, record) in (0..).zip(&decoded) {
        assert_eq!(record.offset_delta, index);
        assert_eq!(record.attributes, 0);
    }
}

#[test]
fn builder_defaults_and_flags() {
    let batch = simple_batch(3, 10, T0);
    let header = validate(&batch, LIMIT).unwrap();
    assert_eq!(
        (
            header.producer_id(),
            header.producer_epoch(),
            header.base_sequence()
        ),
        (-1, -1, -1)
    );
    assert!(!header.has_producer_id());

    let batch = BatchBuilder::new()
        .base_offset(Offset(500))
        .partition_leader_epoch(LeaderEpoch(9))
        .producer(1, 0, 0)
        .transactional(true)
        .log_append_time(TimestampMs(42))
        .record(None, Some(&b"x"[..]), T0)
        .build();
    let header = validate(&batch, LIMIT).unwrap();
    assert_eq!(header.base_offset(), Offset(500));
    assert_eq!(header.partition_leader_epoch(), LeaderEpoch(9));
    assert!(header.is_transactional());
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp(), TimestampMs(42));
    assert_eq!(header.base_timestamp(), T0);
}

#[test]
fn simple_batches_of_many_sizes_validate() {
    for records_count in [1, 2, 63, 64, 65, 1000] {
        for value_size in [0, 1, 63, 64, 8191, 8192] {
            let batch = simple_batch(records_count, value_size, T0);
            let header = validate(&batch, BATCH_SIZE_MAX).unwrap();
            assert_eq!(
                header.records_count(),
                i32::try_from(records_count).unwrap()
            );
            for record in records(&batch, &header) {
                assert_eq!(record.unwrap().value.unwrap().len(), value_size);
            }
        }
    }
}

#[test]
#[should_panic(expected = "at least one record")]
fn the_builder_refuses_an_empty_batch() {
    BatchBuilder::new().build();
}

/// One record, key "k", value "v", timestamp delta 0, default producer
/// fields, written out byte by byte.
#[test]
fn a_hand_written_batch_matches_the_builder_byte_for_byte() {
    #[rustfmt::skip]
    let mut expected: Vec<u8> = vec![
        0, 0, 0, 0, 0, 0, 0, 0,             // baseOffset 0
        0, 0, 0, 58,                        // batchLength: 70 - 12
        0xff, 0xff, 0xff, 0xff,             // partitionLeaderEpoch -1
        2,                                  // magic
        0, 0, 0, 0,                         // crc, filled in below
        0, 0,                               // attributes
        0, 0, 0, 0,                         // lastOffsetDelta 0
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // baseTimestamp 1_700_000_000_000
        0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, // maxTimestamp
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producerId -1
        0xff, 0xff,                         // producerEpoch -1
        0xff, 0xff, 0xff, 0xff,             // baseSequence -1
        0, 0, 0, 1,                         // recordsCount 1
        0x10,                               // record length 8 (zigzag 16)
        0x00,                               // attributes
        0x00,                               // timestampDelta 0
        0x00,                               // offsetDelta 0
        0x02, b'k',                         // keyLength 1, key
        0x02, b'v',                         // valueLength 1, value
        0x00,                               // headersCount 0
    ];
    assert_eq!(expected.len(), 70);
    let crc = crc32c_bitwise(&expected[21..]);
    // Computed once with an independent (Python) CRC-32C over bytes 21..70.
    assert_eq!(crc, 0xe99b_8dd8);
    assert_eq!(crc, crc32c::crc32c(&expected[21..]));
    expected[17..21].copy_from_slice(&crc.to_be_bytes());

    let built = BatchBuilder::new()
        .record(Some(&b"k"[..]), Some(&b"v"[..]), T0)
        .build();
    assert_eq!(&built[..], &expected[..]);
    validate(&expected, LIMIT).unwrap();
}

/// From IBM/sarama record_test.go ("uncompressed record"): an encoding by
/// another Kafka client, CRC included. Its maxTimestamp is 0 (the test
/// fixture leaves it unset) and its producer fields are 0.
#[rustfmt::skip]
const SARAMA_UNCOMPRESSED: [u8; 82] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 70, 0, 0, 0, 0, 2, 84, 121, 97, 253, 0, 0, 0, 0, 0, 0,
    0, 0, 1, 88, 141, 205, 89, 56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 1,
    40, 0, 10, 0, 8, 1, 2, 3, 4, 6, 5, 6, 7, 2, 6, 8, 9, 10, 4, 11, 12,
];

/// From IBM/sarama record_test.go ("gzipped record").
#[rustfmt::skip]
const SARAMA_GZIP: [u8; 107] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 95, 0, 0, 0, 0, 2, 231, 74, 206, 165, 0, 1, 0, 0, 0, 0,
    0, 0, 1, 88, 141, 205, 89, 56, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 1,
    31, 139, 8, 0, 0, 9, 110, 136, 0, 255, 0, 21, 0, 234, 255, 40, 0, 10, 0, 8, 1, 2,
    3, 4, 6, 5, 6, 7, 2, 6, 8, 9, 10, 4, 11, 12, 3, 0, 173, 201, 88, 103, 21, 0, 0, 0,
];

#[test]
fn batches_encoded_by_another_client_validate() {
    let header = validate(&SARAMA_UNCOMPRESSED, LIMIT).unwrap();
    let record = records(&SARAMA_UNCOMPRESSED, &header)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(record.timestamp_delta, 5);
    assert_eq!(record.key, Some(&[1, 2, 3, 4][..]));
    assert_eq!(record.value, Some(&[5, 6, 7][..]));
    assert_eq!(
        record.headers().collect::<Vec<_>>(),
        vec![(&[8, 9, 10][..], Some(&[11, 12][..]))]
    );

    let header = validate(&SARAMA_GZIP, LIMIT).unwrap();
    assert_eq!(header.compression(), Compression::Gzip);
    // Its one record, decompressed: baseTimestamp + timestampDelta 5.
    assert_eq!(
        first_offset_with_timestamp_at_least(&SARAMA_GZIP, TimestampMs(0)),
        Some((Offset(0), TimestampMs(1_479_847_795_005)))
    );
}

#[test]
fn the_builder_encodes_records_like_sarama() {
    let base_timestamp = TimestampMs(1_479_847_795_000);
    let built = BatchBuilder::new()
        .partition_leader_epoch(LeaderEpoch(0))
        .producer(0, 0, 0)
        .record_with_headers(
            Some(&[1, 2, 3, 4][..]),
            Some(&[5, 6, 7][..]),
            &[("\u{8}\u{9}\u{a}", Some(&[11, 12][..]))],
            TimestampMs(base_timestamp.0 + 5),
        )
        .build();
    // Identical except that sarama's fixture has baseTimestamp 5 ms earlier
    // (recorded in the delta instead) and maxTimestamp 0; patch those
    // covered fields to sarama's values and the CRCs agree too.
    let mut built = built.to_vec();
    built[layout::BASE_TIMESTAMP_AT..layout::BASE_TIMESTAMP_AT + 8]
        .copy_from_slice(&base_timestamp.0.to_be_bytes());
    built[layout::MAX_TIMESTAMP_AT..layout::MAX_TIMESTAMP_AT + 8].copy_from_slice(&[0; 8]);
    let timestamp_delta_at = BATCH_HEADER_SIZE + 2;
    assert_eq!(built[timestamp_delta_at], 0);
    built[timestamp_delta_at] = 10; // zigzag 5
    fix_crc(&mut built);
    assert_eq!(built, SARAMA_UNCOMPRESSED);
}

#[test]
fn a_too_short_slice_is_rejected() {
    let batch = simple_batch(1, 0, T0);
    for size in [0, 1, 12, 60] {
        let error = validate(&batch[..size], LIMIT).unwrap_err();
        assert_eq!(error, BatchError::TooShort { size });
        assert_eq!(error.kafka_error_name(), "CORRUPT_MESSAGE");
        assert_eq!(BatchHeader::parse(&batch[..size]), Err(error));
    }
}

#[test]
fn a_batch_length_smaller_than_a_header_is_rejected() {
    for batch_length in [i32::MIN, -1, 0, 48] {
        let mut batch = simple_batch(1, 0, T0).to_vec();
        write_i32(&mut batch, layout::BATCH_LENGTH_AT, batch_length);
        let error = validate(&batch, LIMIT).unwrap_err();
        assert_eq!(error, BatchError::InvalidBatchLength { batch_length });
        assert_eq!(error.kafka_error_name(), "CORRUPT_MESSAGE");
        assert_eq!(split_batches(&batch), Err(error));
    }
}

#[test]
fn a_batch_length_that_disagrees_with_the_slice_is_rejected() {
    let batch = simple_batch(2, 10, T0);
    let size = batch.len();
    // Truncated slice.
    let error = validate(&batch[..size - 1], LIMIT).unwrap_err();
    assert_eq!(
        error,
        BatchError::LengthMismatch {
            declared_size: size,
            actual_size: size - 1
        }
    );
    assert_eq!(error.kafka_error_name(), "CORRUPT_MESSAGE");
    // Extra bytes after the batch (two batches are not one).
    let mut longer = batch.to_vec();
    longer.extend_from_slice(&batch);
    let error = validate(&longer, LIMIT).unwrap_err();
    assert_eq!(
        error,
        BatchError::LengthMismatch {
            declared_size: size,
            actual_size: 2 * size
        }
    );
}

#[test]
fn an_oversized_batch_is_rejected() {
    let batch = simple_batch(10, 100, T0);
    let size = batch.len();
    validate(&batch, size).unwrap();
    let error = validate(&batch, size - 1).unwrap_err();
    assert_eq!(
        error,
        BatchError::TooLarge {
            size,
            max: size - 1
        }
    );
    assert_eq!(error.kafka_error_name(), "MESSAGE_TOO_LARGE");
    assert_eq!(
        error.to_string(),
        format!(
            "record batch of {size} bytes exceeds the limit of {} bytes",
            size - 1
        )
    );
}

#[test]
fn the_engine_limit_caps_the_configured_limit() {
    // A batch one byte over BATCH_SIZE_MAX. Only its batchLength matters:
    // the size check comes before the CRC and the records.
    let mut batch = simple_batch(1, 0, T0).to_vec();
    batch.resize(BATCH_SIZE_MAX + 1, 0);
    let batch_length = i32::try_from(batch.len() - layout::LOG_OVERHEAD).unwrap();
    write_i32(&mut batch, layout::BATCH_LENGTH_AT, batch_length);
    let error = validate(&batch, usize::MAX).unwrap_err();
    assert_eq!(
        error,
        BatchError::TooLarge {
            size: BATCH_SIZE_MAX + 1,
            max: BATCH_SIZE_MAX
        }
    );
}

#[test]
fn other_magic_values_are_unsupported() {
    for magic in [0_i8, 1, 3, -1] {
        let mut batch = simple_batch(1, 0, T0).to_vec();
        batch[layout::MAGIC_AT] = magic.to_be_bytes()[0];
        let error = validate(&batch, LIMIT).unwrap_err();
        assert_eq!(error, BatchError::UnsupportedMagic { magic });
        assert_eq!(error.kafka_error_name(), "UNSUPPORTED_FOR_MESSAGE_FORMAT");
    }
}

#[test]
fn undefined_compression_codes_are_rejected() {
    for code in 5..=7 {
        let mut batch = simple_batch(1, 0, T0).to_vec();
        write_i16(&mut batch, layout::ATTRIBUTES_AT, i16::from(code));
        fix_crc(&mut batch);
        let error = validate(&batch, LIMIT).unwrap_err();
        assert_eq!(error, BatchError::UnknownCompression { code });
        assert_eq!(error.kafka_error_name(), "CORRUPT_MESSAGE");
    }
}

#[test]
fn every_single_bit_flip_in_the_covered_region_breaks_the_crc() {
    let batch = mixed_batch();
    for position in layout::CRC_COVERED_FROM..batch.len() {
        for bit in 0..8 {
            let mut flipped = batch.to_vec();
            flipped[position] ^= 1 << bit;
            let error = validate(&flipped, LIMIT).unwrap_err();
            // Flipping compression bits into 5..7 is caught by parse first.
            if let BatchError::UnknownCompression { .. } = error {
                assert_eq!(position, layout::ATTRIBUTES_AT + 1);
                continue;
            }
            assert_eq!(
                error,
                BatchError::CorruptCrc {
                    expected: stored_crc(&batch),
                    actual: crc32c::crc32c(&flipped[21..])
                },
                "flip of bit {bit} at byte {position}"
            );
            assert_eq!(error.kafka_error_name(), "CORRUPT_MESSAGE");
        }
    }
    let mut flipped = batch.to_vec();
    flipped[layout::CRC_AT] ^= 0x80;
    let error = validate(&flipped, LIMIT).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "record batch CRC mismatch: stored {:#010x}, computed {:#010x}",
            stored_crc(&flipped),
            stored_crc(&batch)
        )
    );
}

#[test]
fn a_batch_without_records_is_invalid() {
    let batch = batch_with_raw_records(0, -1, &[]);
    let error = validate(&batch, LIMIT).unwrap_err();
    assert_eq!(error, BatchError::InvalidRecordsCount { records_count: 0 });
    assert_eq!(error.kafka_error_name(), "INVALID_RECORD");
    let batch = batch_with_raw_records(-3, -4, &[]);
    assert_eq!(
        validate(&batch, LIMIT),
        Err(BatchError::InvalidRecordsCount { records_count: -3 })
    );
}

#[test]
fn last_offset_delta_must_match_the_count() {
    let mut batch = simple_batch(3, 1, T0).to_vec();
    write_i32(&mut batch, layout::LAST_OFFSET_DELTA_AT, 5);
    fix_crc(&mut batch);
    let error = validate(&batch, LIMIT).unwrap_err();
    assert_eq!(
        error,
        BatchError::OffsetDeltaMismatch {
            last_offset_delta: 5,
            records_count: 3
        }
    );
    assert_eq!(error.kafka_error_name(), "INVALID_RECORD");
    // Extreme values do not overflow the comparison.
    write_i32(&mut batch, layout::LAST_OFFSET_DELTA_AT, i32::MAX);
    write_i32(&mut batch, layout::RECORDS_COUNT_AT, i32::MIN);
    fix_crc(&mut batch);
    assert!(matches!(
        validate(&batch, LIMIT),
        Err(BatchError::InvalidRecordsCount { .. })
    ));
}

#[test]
fn a_base_offset_that_would_overflow_is_invalid() {
    let mut batch = simple_batch(2, 1, T0).to_vec();
    patch_base_offset(&mut batch, Offset(i64::MAX));
    let error = validate(&batch, LIMIT).unwrap_err();
    assert_eq!(
        error,
        BatchError::OffsetOverflow {
            base_offset: i64::MAX,
            last_offset_delta: 1
        }
    );
    assert_eq!(error.kafka_error_name(), "INVALID_RECORD");
    let header = BatchHeader::parse(&batch).unwrap();
    assert_eq!(header.last_offset(), Offset(i64::MAX));
    assert_eq!(header.next_offset(), Offset(i64::MAX));
}

#[test]
fn record_offset_deltas_must_count_up_from_zero() {
    let mut section = raw_record(&record_body(0));
    section.extend(raw_record(&record_body(2)));
    let batch = batch_with_raw_records(2, 1, &section);
    let error = validate(&batch, LIMIT).unwrap_err();
    assert_eq!(
        error,
        BatchError::RecordOffsetDeltaMismatch {
            index: 1,
            offset_delta: 2
        }
    );
    assert_eq!(error.kafka_error_name(), "INVALID_RECORD");

    let mut section = raw_record(&record_body(0));
    section.extend(raw_record(&record_body(1)));
    validate(&batch_with_raw_records(2, 1, &section), LIMIT).unwrap();
}

#[test]
fn fewer_records_than_declared_are_invalid() {
    let batch = batch_with_raw_records(2, 1, &raw_record(&record_body(0)));
    let error = validate(&batch, LIMIT).unwrap_err();
    assert_eq!(
        error,
        BatchError::RecordsMissing {
            records_count: 2,
            found: 1
        }
    );
    assert_eq!(error.kafka_error_name(), "INVALID_RECORD");
}

#[test]
fn bytes_after_the_declared_records_are_invalid() {
    let mut section = raw_record(&record_body(0));
    section.extend(raw_record(&record_body(1)));
    let batch = batch_with_raw_records(1, 0, &section);
    let error = validate(&batch, LIMIT).unwrap_err();
    assert_eq!(
        error,
        BatchError::TrailingBytes {
            records_count: 1,
            trailing_bytes: 8
        }
    );
    assert_eq!(error.kafka_error_name(), "INVALID_RECORD");
}

fn record_problem(section: &[u8]) -> RecordProblem {
    let batch = batch_with_raw_records(1, 0, section);
    match validate(&batch, LIMIT) {
        Err(
            error @ BatchError::MalformedRecord {
                index: 0,
                position: 61,
                problem,
            },
        ) => {
            assert_eq!(error.kafka_error_name(), "CORRUPT_MESSAGE");
            problem
        }
        other => panic!("expected a malformed record, got {other:?}"),
    }
}

#[test]
fn malformed_records_name_the_field() {
    use RecordField::*;
    use RecordProblem::*;

    // The record's length runs past the end of the batch.
    assert_eq!(
        record_problem(&[0x20, 0, 0, 0]),
        Truncated {
            field: Body,
            needed: 16,
            available: 3
        }
    );
    // The length itself is negative, cut off, or overlong.
    assert_eq!(
        record_problem(&[0x01]),
        NegativeLength {
            field: Length,
            length: -1
        }
    );
    assert_eq!(record_problem(&[0x80]), VarintTruncated { field: Length });
    assert_eq!(
        record_problem(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        VarintOverlong { field: Length }
    );
    // An empty body has no attributes byte.
    assert_eq!(
        record_problem(&raw_record(&[])),
        Truncated {
            field: Attributes,
            needed: 1,
            available: 0
        }
    );
    // A timestampDelta varint cut off by the end of the record (not of the
    // batch: the next bytes must not be read).
    let mut section = raw_record(&[0, 0x80]);
    section.extend_from_slice(&[0x00; 8]);
    assert_eq!(
        record_problem(&section),
        VarintTruncated {
            field: TimestampDelta
        }
    );
    // keyLength -2.
    assert_eq!(
        record_problem(&raw_record(&[0, 0, 0, 0x03, 0x02, b'v', 0])),
        NegativeLength {
            field: KeyLength,
            length: -2
        }
    );
    // A key longer than the record.
    assert_eq!(
        record_problem(&raw_record(&[0, 0, 0, 0x0a, b'k', 0x01, 0])),
        Truncated {
            field: Key,
            needed: 5,
            available: 3
        }
    );
    // Negative headersCount.
    assert_eq!(
        record_problem(&raw_record(&[0, 0, 0, 0x01, 0x01, 0x01])),
        NegativeLength {
            field: HeadersCount,
            length: -1
        }
    );
    // A header with a null key.
    assert_eq!(
        record_problem(&raw_record(&[0, 0, 0, 0x01, 0x01, 0x02, 0x01, 0x01])),
        NegativeLength {
            field: HeaderKeyLength,
            length: -1
        }
    );
    // More headers declared than fit: huge count, few bytes.
    assert_eq!(
        record_problem(&raw_record(&[
            0, 0, 0, 0x01, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x01
        ])),
        VarintTruncated {
            field: HeaderKeyLength
        }
    );
    // Declared length longer than the fields.
    let mut body = record_body(0);
    body.push(0xaa);
    assert_eq!(
        record_problem(&raw_record(&body)),
        SizeMismatch {
            declared: 8,
            consumed: 7
        }
    );

    let error = BatchError::MalformedRecord {
        index: 3,
        position: 99,
        problem: Truncated {
            field: Key,
            needed: 5,
            available: 3,
        },
    };
    assert_eq!(
        error.to_string(),
        "record 3 (at byte 99 of the batch) is malformed: key needs 5 bytes but only 3 remain"
    );
}

#[test]
fn compressed_records_are_not_walked() {
    // Garbage after the header is a compressed stream as far as validate
    // knows; decompression is the reader's business.
    let mut batch = batch_with_raw_records(3, 2, &[0xde, 0xad, 0xbe, 0xef]);
    write_i16(&mut batch, layout::ATTRIBUTES_AT, 4); // zstd
    fix_crc(&mut batch);
    let header = validate(&batch, LIMIT).unwrap();
    assert_eq!(header.compression(), Compression::Zstd);
}

#[test]
fn split_batches_finds_each_batch() {
    assert_eq!(split_batches(&[]), Ok(vec![]));
    let sizes = [1, 5, 100];
    let batches: Vec<Bytes> = sizes
        .iter()
        .map(|&count| simple_batch(count, 20, T0))
        .collect();
    let buffer: Vec<u8> = batches
        .iter()
        .flat_map(|batch| batch.iter().copied())
        .collect();
    let ranges = split_batches(&buffer).unwrap();
    assert_eq!(ranges.len(), 3);
    for (range, batch) in ranges.iter().zip(&batches) {
        assert_eq!(&buffer[range.clone()], &batch[..]);
        validate(&buffer[range.clone()], LIMIT).unwrap();
    }

    let total = buffer.len();
    let last_start = ranges[2].start;
    // A tail cut inside the last batch's records.
    let error = split_batches(&buffer[..total - 1]).unwrap_err();
    assert_eq!(
        error,
        BatchError::Truncated {
            position: last_start,
            declared_size: batches[2].len(),
            available: batches[2].len() - 1,
        }
    );
    assert_eq!(error.kafka_error_name(), "CORRUPT_MESSAGE");
    // A tail cut inside the last batch's header.
    let error = split_batches(&buffer[..last_start + 20]).unwrap_err();
    assert_eq!(
        error,
        BatchError::Truncated {
            position: last_start,
            declared_size: 61,
            available: 20
        }
    );
}

#[test]
fn patching_offset_and_epoch_keeps_the_crc_valid() {
    let original = mixed_batch();
    let mut batch = original.to_vec();
    patch_base_offset(&mut batch, Offset(1_234_567_890_123));
    patch_leader_epoch(&mut batch, LeaderEpoch(77));
    // The covered bytes and the stored CRC are untouched...
    assert_eq!(&batch[layout::CRC_AT..], &original[layout::CRC_AT..]);
    // ...so the batch still validates, with the new values.
    let header = validate(&batch, LIMIT).unwrap();
    assert_eq!(header.base_offset(), Offset(1_234_567_890_123));
    assert_eq!(header.partition_leader_epoch(), LeaderEpoch(77));
    assert_eq!(header.last_offset(), Offset(1_234_567_890_126));
    assert_eq!(
        header.crc(),
        crc32c::crc32c(&batch[layout::CRC_COVERED_FROM..])
    );
}

#[test]
#[should_panic(expected = "patching a 60-byte batch")]
fn patching_a_fragment_is_a_bug() {
    let mut fragment = [0; 60];
    patch_base_offset(&mut fragment, Offset(1));
}

#[test]
fn timestamp_lookup_returns_the_first_record_at_or_after_the_target() {
    // CreateTime timestamps need not be ordered; the lookup answers in
    // offset order, as Kafka's ListOffsets does.
    let mut batch = BatchBuilder::new()
        .record(None, Some(&b"a"[..]), TimestampMs(100))
        .record(None, Some(&b"b"[..]), TimestampMs(300))
        .record(None, Some(&b"c"[..]), TimestampMs(200))
        .record(None, Some(&b"d"[..]), TimestampMs(400))
        .build()
        .to_vec();
    patch_base_offset(&mut batch, Offset(1000));
    validate(&batch, LIMIT).unwrap();
    let lookup = |target| first_offset_with_timestamp_at_least(&batch, TimestampMs(target));
    assert_eq!(lookup(i64::MIN), Some((Offset(1000), TimestampMs(100))));
    assert_eq!(lookup(100), Some((Offset(1000), TimestampMs(100))));
    assert_eq!(lookup(101), Some((Offset(1001), TimestampMs(300))));
    assert_eq!(lookup(250), Some((Offset(1001), TimestampMs(300))));
    assert_eq!(lookup(301), Some((Offset(1003), TimestampMs(400))));
    assert_eq!(lookup(400), Some((Offset(1003), TimestampMs(400))));
    assert_eq!(lookup(401), None);

    // A timestamp before the first one is a negative delta.
    let batch = BatchBuilder::new()
        .record(None, None, TimestampMs(200))
        .record(None, None, TimestampMs(50))
        .build();
    assert_eq!(
        first_offset_with_timestamp_at_least(&batch, TimestampMs(10)),
        Some((Offset(0), TimestampMs(200)))
    );
}

#[test]
fn timestamp_lookup_uses_the_append_time_for_log_append_time_batches() {
    let mut batch = BatchBuilder::new()
        .record(None, Some(&b"a"[..]), TimestampMs(100))
        .record(None, Some(&b"b"[..]), TimestampMs(900))
        .log_append_time(TimestampMs(500))
        .build()
        .to_vec();
    patch_base_offset(&mut batch, Offset(40));
    validate(&batch, LIMIT).unwrap();
    assert_eq!(
        first_offset_with_timestamp_at_least(&batch, TimestampMs(300)),
        Some((Offset(40), TimestampMs(500)))
    );
    assert_eq!(
        first_offset_with_timestamp_at_least(&batch, TimestampMs(500)),
        Some((Offset(40), TimestampMs(500)))
    );
    // The record timestamp 900 does not count: the append time does.
    assert_eq!(
        first_offset_with_timestamp_at_least(&batch, TimestampMs(600)),
        None
    );
}

/// Kafka's searchForTimestamp iterates the records of a compressed batch
/// too: the answer is the first record at or after the target, not the
/// batch's base offset with its maxTimestamp.
#[test]
fn timestamp_lookup_reads_the_records_of_compressed_batches() {
    let mut plain = BatchBuilder::new()
        .record(None, Some(&b"a"[..]), TimestampMs(1000))
        .record(None, Some(&b"b"[..]), TimestampMs(2000))
        .record(None, Some(&b"c"[..]), TimestampMs(3000))
        .build()
        .to_vec();
    patch_base_offset(&mut plain, Offset(10));
    let header = validate(&plain, LIMIT).unwrap();
    for target in [
        codec::Target::Lz4,
        codec::Target::Zstd { level: 3 },
        codec::Target::Gzip { level: None },
        codec::Target::Snappy,
    ] {
        let batch = codec::recompress(&plain, &header, target).unwrap();
        assert_eq!(
            validate(&batch, LIMIT).unwrap().compression(),
            target.compression()
        );
        let lookup = |target| first_offset_with_timestamp_at_least(&batch, TimestampMs(target));
        assert_eq!(
            lookup(0),
            Some((Offset(10), TimestampMs(1000))),
            "{target:?}"
        );
        assert_eq!(
            lookup(2000),
            Some((Offset(11), TimestampMs(2000))),
            "{target:?}"
        );
        assert_eq!(
            lookup(2001),
            Some((Offset(12), TimestampMs(3000))),
            "{target:?}"
        );
        assert_eq!(lookup(3001), None, "{target:?}");
        // Records below `from` (the log start) do not count.
        assert_eq!(
            first_offset_with_timestamp_at_least_from(&batch, TimestampMs(0), Offset(12)),
            Some((Offset(12), TimestampMs(3000))),
            "{target:?}"
        );
    }
    // LogAppendTime: every record has the append time, nothing to decode.
    let plain = BatchBuilder::new()
        .record(None, None, TimestampMs(1000))
        .record(None, None, TimestampMs(2000))
        .log_append_time(TimestampMs(5000))
        .build();
    let header = validate(&plain, LIMIT).unwrap();
    let batch = codec::recompress(&plain, &header, codec::Target::Lz4).unwrap();
    assert_eq!(
        first_offset_with_timestamp_at_least_from(&batch, TimestampMs(4000), Offset(1)),
        Some((Offset(1), TimestampMs(5000)))
    );
}

#[test]
fn timestamp_lookup_gives_up_on_undecodable_and_broken_batches() {
    // Marked snappy, its records are not snappy data.
    let mut batch = simple_batch(3, 1, T0).to_vec();
    write_i16(&mut batch, layout::ATTRIBUTES_AT, 2); // snappy
    fix_crc(&mut batch);
    validate(&batch, LIMIT).unwrap();
    assert_eq!(
        first_offset_with_timestamp_at_least(&batch, TimestampMs(0)),
        None
    );
    assert_eq!(
        first_offset_with_timestamp_at_least(&[], TimestampMs(0)),
        None
    );
    let whole = simple_batch(3, 1, T0);
    assert_eq!(
        first_offset_with_timestamp_at_least(&whole[..whole.len() - 1], T0),
        None
    );
}

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap()).unwrap()
    }
}

/// Apply one random mutation. Some mutations fix the CRC afterwards so the
/// record walk is exercised, not only the CRC check.
fn mutate(prng: &mut Prng, batch: &mut Vec<u8>) {
    let records_from = BATCH_HEADER_SIZE.min(batch.len());
    match prng.below(9) {
        0 => {
            let position = prng.below(batch.len());
            batch[position] ^= 1 << prng.below(8);
        }
        1 => {
            let length = prng.below(batch.len());
            batch.truncate(length);
        }
        2 => {
            for _ in 0..1 + prng.below(16) {
                batch.push(prng.next() as u8);
            }
        }
        3 => {
            let current = read_i32(batch, layout::BATCH_LENGTH_AT);
            let value = match prng.below(3) {
                0 => current.wrapping_add(i32::try_from(prng.below(17)).unwrap() - 8),
                1 => prng.next() as i32,
                _ => [i32::MIN, -1, 0, 48, 49, i32::MAX][prng.below(6)],
            };
            write_i32(batch, layout::BATCH_LENGTH_AT, value);
        }
        4 => {
            let count = [0, 1, 2, 3, 5, -1, i32::MAX, i32::MIN][prng.below(8)];
            write_i32(batch, layout::RECORDS_COUNT_AT, count);
            if prng.below(2) == 0 {
                write_i32(batch, layout::LAST_OFFSET_DELTA_AT, count.wrapping_sub(1));
            }
            fix_crc(batch);
        }
        5 | 6 => {
            for _ in 0..1 + prng.below(3) {
                let position = records_from + prng.below(batch.len() - records_from);
                if position < batch.len() {
                    batch[position] = prng.next() as u8;
                }
            }
            fix_crc(batch);
        }
        7 => {
            let position = records_from + prng.below(batch.len() - records_from + 1);
            if prng.below(2) == 0 || position >= batch.len() {
                batch.insert(position, prng.next() as u8);
            } else {
                batch.remove(position);
            }
            fix_framing(batch);
        }
        _ => {
            let bytes = [0x00, 0x01, 0x7f, 0x80, 0xff][prng.below(5)];
            let position = records_from + prng.below(batch.len() - records_from);
            if position < batch.len() {
                batch[position] = bytes;
            }
            fix_crc(batch);
        }
    }
}

/// The stable-Rust stand-in for the cargo-fuzz target: validate never
/// panics on mutated batches, and whatever it accepts is consistent.
#[test]
fn mutated_batches_never_panic_and_accepted_ones_are_consistent() {
    const SEED: u64 = 0x5EED_BA7C_4D17_0001;
    const ITERATIONS: usize = 20_000;
    let mut prng = Prng(SEED);
    let seeds: Vec<Bytes> = vec![
        simple_batch(1, 0, T0),
        simple_batch(7, 3, T0),
        mixed_batch(),
        BatchBuilder::new()
            .log_append_time(TimestampMs(5))
            .record(Some(&b"k"[..]), None, T0)
            .record(None, Some(&b"v"[..]), T0)
            .build(),
        Bytes::from_static(&SARAMA_UNCOMPRESSED),
        Bytes::from_static(&SARAMA_GZIP),
    ];
    let (mut accepted, mut malformed) = (0, 0);
    for iteration in 0..ITERATIONS {
        let mut batch = seeds[prng.below(seeds.len())].to_vec();
        for _ in 0..1 + prng.below(3) {
            if batch.len() >= BATCH_HEADER_SIZE {
                mutate(&mut prng, &mut batch);
            }
        }
        let target = TimestampMs(T0.0 + i64::try_from(prng.below(20)).unwrap() - 10);
        let context = format!("seed {SEED:#x}, iteration {iteration}, batch {batch:02x?}");
        let result = catch_unwind(AssertUnwindSafe(|| {
            let _ = split_batches(&batch);
            let _ = first_offset_with_timestamp_at_least(&batch, target);
            validate(&batch, LIMIT)
        }))
        .unwrap_or_else(|_| panic!("panicked on {context}"));
        match result {
            Ok(header) => {
                accepted += 1;
                assert_eq!(header.crc(), crc32c_bitwise(&batch[21..]), "{context}");
                assert_eq!(header.total_size(), batch.len(), "{context}");
                let ranges = split_batches(&batch).unwrap();
                assert_eq!(ranges.len(), 1, "{context}");
                assert_eq!(ranges[0], 0..batch.len(), "{context}");
                assert_eq!(
                    header.last_offset().value() - header.base_offset().value(),
                    i64::from(header.records_count()) - 1,
                    "{context}"
                );
                if header.compression() == Compression::None {
                    assert_eq!(
                        records(&batch, &header).count(),
                        header.records_count() as usize
                    );
                    assert!(
                        records(&batch, &header).all(|record| record.is_ok()),
                        "{context}"
                    );
                }
            }
            Err(BatchError::MalformedRecord { .. }) => malformed += 1,
            Err(_) => {}
        }
    }
    // The mutations must reach both outcomes and the record walk, or the
    // test proves little.
    assert!(accepted > ITERATIONS / 50, "only {accepted} accepted");
    assert!(malformed > ITERATIONS / 50, "only {malformed} malformed");
}

#[test]
fn setting_log_append_time_keeps_the_batch_valid_and_marks_it() {
    let mut bytes = simple_batch(3, 20, TimestampMs(1_000)).to_vec();
    set_log_append_time(&mut bytes, TimestampMs(5_000));
    let header = validate(&bytes, usize::MAX).unwrap();
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp(), TimestampMs(5_000));
}

/// A producer's batch whose header claims `claimed` as its maxTimestamp,
/// CRC fixed: what a client with a wrong clock or a bug sends.
fn claiming_max_timestamp(batch: &[u8], claimed: TimestampMs) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    set_max_timestamp(&mut bytes, TimestampType::CreateTime, claimed);
    bytes
}

#[test]
fn validation_reads_the_records_max_timestamp_whatever_the_header_claims() {
    let built = BatchBuilder::new()
        .record(None, Some(&b"a"[..]), TimestampMs(T0.0 + 5))
        .record(None, Some(&b"b"[..]), TimestampMs(T0.0 + 9))
        .record(None, Some(&b"c"[..]), T0)
        .build();
    for claimed in [
        TimestampMs(T0.0 - 1_000),
        TimestampMs(i64::MAX),
        NO_TIMESTAMP,
    ] {
        let lying = claiming_max_timestamp(&built, claimed);
        let (header, max_timestamp) = validate_with_max_timestamp(&lying, LIMIT).unwrap();
        assert_eq!(header.max_timestamp(), claimed);
        assert_eq!(max_timestamp, Some(TimestampMs(T0.0 + 9)), "{claimed:?}");
    }
    // Records without timestamps (or older than the epoch) give
    // NO_TIMESTAMP, as Kafka's LogValidator starts from it.
    let untimed = BatchBuilder::new()
        .record(None, Some(&b"a"[..]), TimestampMs(-1))
        .record(None, Some(&b"b"[..]), TimestampMs(-5))
        .build();
    let (_, max_timestamp) = validate_with_max_timestamp(&untimed, LIMIT).unwrap();
    assert_eq!(max_timestamp, Some(NO_TIMESTAMP));
    // A compressed batch's records are not read by validation.
    let header = validate(&built, LIMIT).unwrap();
    let compressed = codec::recompress(&built, &header, codec::Target::Lz4).unwrap();
    let (_, max_timestamp) = validate_with_max_timestamp(&compressed, LIMIT).unwrap();
    assert_eq!(max_timestamp, None);
    // Recompression reads them, and keeps the header's claim.
    let lying = claiming_max_timestamp(&compressed, TimestampMs(i64::MAX));
    let lying_header = validate(&lying, LIMIT).unwrap();
    for target in [codec::Target::None, codec::Target::Gzip { level: None }] {
        let (rebuilt, max_timestamp) =
            codec::recompress_with_max_timestamp(&lying, &lying_header, target).unwrap();
        assert_eq!(max_timestamp, TimestampMs(T0.0 + 9));
        let rebuilt_header = validate(&rebuilt, LIMIT).unwrap();
        assert_eq!(rebuilt_header.max_timestamp(), TimestampMs(i64::MAX));
    }
}

#[test]
fn setting_the_max_timestamp_keeps_the_batch_valid_and_leaves_a_right_one_alone() {
    let built = simple_batch(3, 20, TimestampMs(1_000));
    let header = validate(&built, LIMIT).unwrap();
    let mut same = built.to_vec();
    set_max_timestamp(&mut same, TimestampType::CreateTime, header.max_timestamp());
    assert_eq!(same, built.to_vec(), "nothing to change, nothing changed");
    let mut lowered = built.to_vec();
    set_max_timestamp(&mut lowered, TimestampType::CreateTime, TimestampMs(7));
    let lowered_header = validate(&lowered, LIMIT).unwrap();
    assert_eq!(lowered_header.max_timestamp(), TimestampMs(7));
    assert_eq!(lowered_header.timestamp_type(), TimestampType::CreateTime);
    // A LogAppendTime batch made CreateTime again: the bit is cleared.
    let mut appended = built.to_vec();
    set_log_append_time(&mut appended, TimestampMs(5_000));
    set_max_timestamp(&mut appended, TimestampType::CreateTime, TimestampMs(5_000));
    let header = validate(&appended, LIMIT).unwrap();
    assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
    assert_eq!(header.max_timestamp(), TimestampMs(5_000));
}

#[test]
fn every_record_of_a_log_append_time_batch_has_its_max_timestamp() {
    let mut bytes = BatchBuilder::new()
        .record(None, Some(&b"a"[..]), TimestampMs(3))
        .record(None, Some(&b"b"[..]), TimestampMs(9))
        .build()
        .to_vec();
    set_log_append_time(&mut bytes, TimestampMs(5_000));
    let (header, max_timestamp) = validate_with_max_timestamp(&bytes, LIMIT).unwrap();
    for record in records(&bytes, &header) {
        assert_eq!(
            header.record_timestamp(&record.unwrap()),
            TimestampMs(5_000)
        );
    }
    assert_eq!(max_timestamp, Some(TimestampMs(5_000)));
}
