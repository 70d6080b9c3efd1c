//! Record batches v2 as the bench's native client writes and reads them.
//!
//! Written by hand rather than with kafka-protocol's `RecordBatchEncoder`
//! (which builds a `Record` struct per record and goes through its generic
//! compression path) or sluice-engine's `BatchBuilder` (which copies every
//! key and value into its own `Vec` first): the producer appends each record
//! straight into the batch buffer, so the hot path is one varint-prefixed
//! copy of the value per record and one CRC-32C per batch. The unit tests
//! check every batch against the engine's validator.
//!
//! Every value starts with the 8-byte big-endian wall-clock time (ns since
//! the UNIX epoch) at which the record was due to be sent; consumers subtract
//! it from their receive time for the end-to-end latency.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of a batch header before the first record.
pub const BATCH_HEADER_SIZE: usize = 61;
/// Bytes at the start of each value that carry the send timestamp.
pub const TIMESTAMP_SIZE: usize = 8;
const CRC_START: usize = 21;
const ATTRIBUTES_OFFSET: usize = 21;
const RECORDS_COUNT_OFFSET: usize = 57;
const COMPRESSION_MASK: i16 = 0x07;
const CONTROL_FLAG: i16 = 0x20;

/// One uncompressed batch being filled.
#[derive(Debug)]
pub struct BatchWriter {
    buffer: BytesMut,
    count: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchWriter {
    /// An empty batch with room for `capacity_bytes` (it grows if needed).
    pub fn new(capacity_bytes: usize) -> BatchWriter {
        let mut buffer = BytesMut::with_capacity(capacity_bytes.max(BATCH_HEADER_SIZE));
        buffer.put_bytes(0, BATCH_HEADER_SIZE);
        BatchWriter {
            buffer,
            count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
        }
    }

    /// Bytes the batch has so far, header included.
    pub fn size_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Bytes one record adds: its body and its length prefix.
    pub fn record_size_bytes(key: Option<&[u8]>, value_size: usize) -> usize {
        // The deltas are at most a few bytes; count them at their upper
        // bound so this stays a pure function of the record.
        let body = record_body_size(key, value_size, 3, 3);
        body + varint_size(i64::try_from(body).unwrap_or(i64::MAX))
    }

    /// Append one record: `key`, then a value of `value_size` bytes (at
    /// least [`TIMESTAMP_SIZE`]) made of `sent_wall_ns` followed by
    /// `filler` (repeated as needed).
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        sent_wall_ns: u64,
        value_size: usize,
        filler: &[u8],
        timestamp_ms: i64,
    ) {
        assert!(value_size >= TIMESTAMP_SIZE, "values carry a timestamp");
        if self.count == 0 {
            self.base_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let timestamp_delta = timestamp_ms - self.base_timestamp_ms;
        let offset_delta = i64::from(self.count);
        let timestamp_delta_size = varint_size(timestamp_delta);
        let offset_delta_size = varint_size(offset_delta);
        let body = record_body_size(key, value_size, timestamp_delta_size, offset_delta_size);
        let buffer = &mut self.buffer;
        buffer.reserve(body + 5);
        put_varint(buffer, i64::try_from(body).unwrap_or(i64::MAX));
        buffer.put_u8(0);
        put_varint(buffer, timestamp_delta);
        put_varint(buffer, offset_delta);
        match key {
            Some(key) => {
                put_varint(buffer, i64::try_from(key.len()).unwrap_or(i64::MAX));
                buffer.put_slice(key);
            }
            None => put_varint(buffer, -1),
        }
        put_varint(buffer, i64::try_from(value_size).unwrap_or(i64::MAX));
        buffer.put_u64(sent_wall_ns);
        let mut remaining = value_size - TIMESTAMP_SIZE;
        while remaining > 0 {
            let take = remaining.min(filler.len());
            assert!(take > 0, "the filler is not empty");
            buffer.put_slice(&filler[..take]);
            remaining -= take;
        }
        buffer.put_u8(0);
        self.count += 1;
    }

    /// Close the batch: fill in the header and the CRC.
    pub fn finish(mut self) -> Bytes {
        assert!(self.count > 0, "an empty batch is never sent");
        let batch_length = i32::try_from(self.buffer.len() - 12).unwrap_or(i32::MAX);
        let mut header = &mut self.buffer[..BATCH_HEADER_SIZE];
        header.put_i64(0); // baseOffset: assigned by the broker
        header.put_i32(batch_length);
        header.put_i32(-1); // partitionLeaderEpoch
        header.put_i8(2); // magic
        header.put_u32(0); // crc, below
        header.put_i16(0); // attributes: no compression, CreateTime
        header.put_i32(self.count - 1); // lastOffsetDelta
        header.put_i64(self.base_timestamp_ms);
        header.put_i64(self.max_timestamp_ms);
        header.put_i64(-1); // producerId
        header.put_i16(-1); // producerEpoch
        header.put_i32(-1); // baseSequence
        header.put_i32(self.count);
        let crc = crc32c::crc32c(&self.buffer[CRC_START..]);
        self.buffer[17..21].copy_from_slice(&crc.to_be_bytes());
        self.buffer.freeze()
    }
}

fn record_body_size(
    key: Option<&[u8]>,
    value_size: usize,
    timestamp_delta_size: usize,
    offset_delta_size: usize,
) -> usize {
    let key_size = match key {
        Some(key) => varint_size(i64::try_from(key.len()).unwrap_or(i64::MAX)) + key.len(),
        None => 1,
    };
    1 + timestamp_delta_size
        + offset_delta_size
        + key_size
        + varint_size(i64::try_from(value_size).unwrap_or(i64::MAX))
        + value_size
        + 1
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn varint_size(value: i64) -> usize {
    let mut encoded = zigzag(value);
    let mut size = 1;
    while encoded >= 0x80 {
        encoded >>= 7;
        size += 1;
    }
    size
}

fn put_varint(buffer: &mut BytesMut, value: i64) {
    let mut encoded = zigzag(value);
    while encoded >= 0x80 {
        buffer.put_u8((encoded as u8 & 0x7f) | 0x80);
        encoded >>= 7;
    }
    buffer.put_u8(encoded as u8);
}

/// Read a zigzag varint at `input[*position..]`, advancing `position`.
fn get_varint(input: &[u8], position: &mut usize) -> Option<i64> {
    let mut encoded = 0_u64;
    for shift in (0..70).step_by(7) {
        let byte = *input.get(*position)?;
        *position += 1;
        encoded |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((encoded >> 1) as i64) ^ -((encoded & 1) as i64));
        }
    }
    None
}

/// What [`read_batches`] found in a fetched records field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    /// Data records (control batches excluded).
    pub records: u64,
    /// Bytes of the whole batches read.
    pub bytes: u64,
    /// The offset after the last whole batch, if there was one.
    pub next_offset: Option<i64>,
}

/// Walk the whole batches in `input` (a Fetch response's records field; a
/// trailing partial batch is ignored, as clients do) and call `on_value`
/// with the value of every record of every uncompressed data batch.
/// Compressed batches count their records without reading them. Stops
/// without error at the first batch it cannot parse.
pub fn read_batches(input: &[u8], mut on_value: impl FnMut(&[u8])) -> ReadSummary {
    let mut summary = ReadSummary::default();
    let mut start = 0_usize;
    while let Some(header) = input.get(start..start + BATCH_HEADER_SIZE) {
        let field = |range: std::ops::Range<usize>| -> i64 {
            header[range]
                .iter()
                .fold(0_i64, |value, byte| (value << 8) | i64::from(*byte))
        };
        let base_offset = field(0..8);
        let Ok(batch_length) = usize::try_from(field(8..12) as i32) else {
            break;
        };
        let end = start + 12 + batch_length;
        let Some(batch) = input.get(start..end) else {
            break;
        };
        if batch_length + 12 < BATCH_HEADER_SIZE {
            break;
        }
        let attributes = field(ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2) as i16;
        let last_offset_delta = field(23..27) as i32;
        let records_count = field(RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4) as i32;
        summary.next_offset = Some(base_offset + i64::from(last_offset_delta) + 1);
        summary.bytes += batch.len() as u64;
        start = end;
        if attributes & CONTROL_FLAG != 0 {
            continue;
        }
        summary.records += u64::try_from(records_count).unwrap_or(0);
        if attributes & COMPRESSION_MASK != 0 {
            continue;
        }
        walk_values(batch, records_count, &mut on_value);
    }
    summary
}

fn walk_values(batch: &[u8], records_count: i32, on_value: &mut impl FnMut(&[u8])) {
    let mut position = BATCH_HEADER_SIZE;
    for _ in 0..records_count {
        let Some(length) = get_varint(batch, &mut position) else {
            return;
        };
        let Ok(length) = usize::try_from(length) else {
            return;
        };
        let record_end = position + length;
        let mut cursor = position + 1; // attributes
        let parsed = (|| {
            get_varint(batch, &mut cursor)?; // timestampDelta
            get_varint(batch, &mut cursor)?; // offsetDelta
            let key_length = get_varint(batch, &mut cursor)?;
            cursor += usize::try_from(key_length.max(0)).ok()?;
            let value_length = get_varint(batch, &mut cursor)?;
            let value_length = usize::try_from(value_length).ok()?;
            batch.get(cursor..cursor + value_length)
        })();
        if let Some(value) = parsed {
            on_value(value);
        }
        position = record_end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::batch::{records, validate};

    fn sample_batch(count: usize, key: Option<&[u8]>, value_size: usize) -> Bytes {
        let mut writer = BatchWriter::new(1024);
        for index in 0..count {
            writer.push(
                key,
                1_000 + index as u64,
                value_size,
                b"abc",
                1_700_000_000_000 + index as i64,
            );
        }
        writer.finish()
    }

    #[test]
    fn batches_pass_the_engine_validator_and_decode_back() {
        let batch = sample_batch(300, Some(b"key-1"), 100);
        let header = validate(&batch, 1 << 20).expect("a valid batch");
        assert_eq!(header.records_count(), 300);
        let mut values = Vec::new();
        for record in records(&batch, &header) {
            let record = record.expect("a valid record");
            assert_eq!(record.key, Some(&b"key-1"[..]));
            values.push(record.value.expect("a value").to_vec());
        }
        assert_eq!(values.len(), 300);
        assert_eq!(values[7][..8], 1_007_u64.to_be_bytes());
        assert_eq!(&values[7][8..14], b"abcabc");
        assert_eq!(values[7].len(), 100);
    }

    #[test]
    fn null_keys_and_minimal_values_are_valid() {
        let batch = sample_batch(1, None, TIMESTAMP_SIZE);
        let header = validate(&batch, 1 << 20).expect("a valid batch");
        assert_eq!(header.records_count(), 1);
    }

    #[test]
    fn reading_counts_records_and_skips_a_partial_tail() {
        let first = sample_batch(10, None, 64);
        let second = sample_batch(5, Some(b"k"), 64);
        let mut fetched = BytesMut::new();
        fetched.extend_from_slice(&first);
        // The broker assigns offsets; pretend the second batch starts at 10.
        let mut second = BytesMut::from(&second[..]);
        second[..8].copy_from_slice(&10_i64.to_be_bytes());
        fetched.extend_from_slice(&second);
        fetched.extend_from_slice(&first[..30]);
        let mut stamps = Vec::new();
        let summary = read_batches(&fetched, |value| {
            stamps.push(u64::from_be_bytes(value[..8].try_into().expect("8 bytes")));
        });
        assert_eq!(summary.records, 15);
        assert_eq!(summary.next_offset, Some(15));
        assert_eq!(summary.bytes, (first.len() + second.len()) as u64);
        assert_eq!(stamps.len(), 15);
        assert_eq!(stamps[0], 1_000);
        assert_eq!(stamps[14], 1_004);
    }

    #[test]
    fn record_size_is_an_upper_bound() {
        let mut writer = BatchWriter::new(0);
        let before = writer.size_bytes();
        writer.push(Some(b"key"), 0, 1024, b"x", 0);
        let added = writer.size_bytes() - before;
        assert!(added <= BatchWriter::record_size_bytes(Some(b"key"), 1024));
        assert!(added + 4 >= BatchWriter::record_size_bytes(Some(b"key"), 1024));
    }
}
