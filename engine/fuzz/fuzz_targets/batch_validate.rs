//! Fuzz target: the record batch validator on arbitrary bytes.
//!
//! `validate`, `split_batches`, header parsing and the timestamp lookup must
//! never panic, whatever the input; what `validate` accepts must be
//! self-consistent (CRC, size, offsets, records). The unit test
//! `batch::tests::mutated_batches_never_panic_and_accepted_ones_are_consistent`
//! runs the same checks on seeded mutations with stable Rust.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_engine::batch::{self, BatchHeader, Compression, layout};
use sluice_engine::constants::BATCH_SIZE_MAX;
use sluice_engine::types::TimestampMs;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes (when present) pick a lookup target; the rest is
    // the batch, so inputs that are whole batches stay easy to find.
    let (target, bytes) = match data.split_first_chunk::<8>() {
        Some((target, rest)) => (i64::from_be_bytes(*target), rest),
        None => (0, data),
    };
    let target = TimestampMs(target);

    let _ = BatchHeader::parse(bytes);
    let _ = batch::first_offset_with_timestamp_at_least(bytes, target);
    if let Ok(ranges) = batch::split_batches(bytes) {
        let mut end = 0;
        for range in ranges {
            assert_eq!(range.start, end, "ranges are contiguous");
            end = range.end;
            let _ = batch::validate(&bytes[range], BATCH_SIZE_MAX);
        }
        assert_eq!(end, bytes.len(), "ranges cover the buffer");
    }

    let Ok(header) = batch::validate(bytes, BATCH_SIZE_MAX) else {
        return;
    };
    assert_eq!(header.total_size(), bytes.len());
    assert_eq!(header.crc(), crc32c_of(&bytes[layout::CRC_COVERED_FROM..]));
    assert_eq!(
        i64::from(header.last_offset_delta()) + 1,
        i64::from(header.records_count())
    );
    if header.compression() == Compression::None {
        let mut count = 0_i64;
        for record in batch::records(bytes, &header) {
            let record = record.expect("validate accepted the records");
            assert_eq!(i64::from(record.offset_delta), count);
            let _ = record.headers().count();
            count += 1;
        }
        assert_eq!(count, i64::from(header.records_count()));
    }
    if let Some((offset, timestamp)) = batch::first_offset_with_timestamp_at_least(bytes, target) {
        assert!(timestamp >= target);
        assert!(offset >= header.base_offset() && offset <= header.last_offset());
    }
});

/// CRC-32C bit by bit, so the check does not trust the code under test.
fn crc32c_of(data: &[u8]) -> u32 {
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
