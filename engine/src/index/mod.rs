//! Sparse per-segment indexes: offset -> position and timestamp -> offset.
//!
//! Both live in memory for every segment and are written to disk as whole
//! files when a segment is sealed (and for the active segment at a clean
//! close). On disk each file is an 8-byte header (magic, CRC-32C of the
//! entries) followed by fixed-size big-endian entries; see
//! docs/internals/storage-format.md. A file whose header, CRC, size or
//! ordering is wrong is ignored and the index is rebuilt by scanning the
//! segment (recovery.rs).
//!
//! Invariants (asserted on insert, checked on load):
//! - offset index: relative offsets and positions strictly increase;
//! - time index: timestamps and relative offsets strictly increase.

use crate::types::{Offset, Position, TimestampMs};

const OFFSET_INDEX_MAGIC: u32 = u32::from_be_bytes(*b"SLOX");
/// The offset index of a sealed segment, written once its file is final
/// (finalize, compaction): with no valid checkpoint, recovery takes it as
/// the witness that the file ends where it should (recovery.rs, rule 2).
/// `OFFSET_INDEX_MAGIC` marks the active segment's, written at a clean
/// close, which the segment may outgrow (and files of earlier versions).
const OFFSET_INDEX_SEALED_MAGIC: u32 = u32::from_be_bytes(*b"SLOS");
const TIME_INDEX_MAGIC: u32 = u32::from_be_bytes(*b"SLTX");
const HEADER_SIZE: usize = 8;
const OFFSET_ENTRY_SIZE: usize = 8;
const TIME_ENTRY_SIZE: usize = 12;

/// Sparse map from a batch's base offset to its byte position in the segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    /// (offset relative to the segment base, byte position).
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(relative_offset > last_offset, "offset index must increase");
            assert!(
                position > last_position,
                "offset index positions must increase"
            );
        }
        self.entries.push((relative_offset, position));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Position of the last indexed batch whose base offset is <= `target`,
    /// or position 0 when none is. The batch holding `target` starts there or
    /// later.
    pub fn lookup(&self, base: Offset, target: Offset) -> Position {
        if target < base {
            return Position(0);
        }
        let relative = target.value() - base.value();
        let relative = u32::try_from(relative).unwrap_or(u32::MAX);
        let count = self
            .entries
            .partition_point(|&(offset, _)| offset <= relative);
        match count {
            0 => Position(0),
            n => Position(u64::from(self.entries[n - 1].1)),
        }
    }

    /// Every entry, as (relative offset, position), in order.
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    /// The last entry, as (relative offset, position).
    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    /// Keep only the first `count` entries (rollback).
    pub fn truncate_count(&mut self, count: usize) {
        self.entries.truncate(count);
    }

    /// Drop every entry at or beyond `position` (truncation).
    pub fn truncate_to_position(&mut self, position: Position) {
        self.entries
            .retain(|&(_, entry_position)| u64::from(entry_position) < position.value());
    }

    /// The active segment's index, which the segment may outgrow (a clean
    /// close writes it).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(OFFSET_INDEX_MAGIC)
    }

    /// A sealed segment's index, written once its file is final.
    pub fn encode_sealed(&self) -> Vec<u8> {
        self.encode_with(OFFSET_INDEX_SEALED_MAGIC)
    }

    fn encode_with(&self, magic: u32) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_SIZE);
        for &(offset, position) in &self.entries {
            body.extend_from_slice(&offset.to_be_bytes());
            body.extend_from_slice(&position.to_be_bytes());
        }
        with_header(magic, body)
    }

    /// Decode a file written by `encode` or `encode_sealed`, keeping
    /// entries whose position is below `size_limit` (the trusted part of
    /// the segment). `None` when the file is damaged in any way.
    pub fn decode(bytes: &[u8], size_limit: Position) -> Option<OffsetIndex> {
        Self::decode_marked(bytes, size_limit).map(|(index, _)| index)
    }

    /// [`OffsetIndex::decode`], and whether the file is a sealed segment's
    /// (`encode_sealed`) rather than an active segment's or an earlier
    /// version's (`encode`).
    pub fn decode_marked(bytes: &[u8], size_limit: Position) -> Option<(OffsetIndex, bool)> {
        // The header is checked whole by `decode_with`.
        let sealed = bytes.get(..4) == Some(&OFFSET_INDEX_SEALED_MAGIC.to_be_bytes()[..]);
        let index = Self::decode_with(
            &[OFFSET_INDEX_MAGIC, OFFSET_INDEX_SEALED_MAGIC],
            bytes,
            size_limit,
        )?;
        Some((index, sealed))
    }

    /// Decode a file written by `encode_sealed` only: `None` for an
    /// active segment's index (or an earlier version's) and a damaged file.
    pub fn decode_sealed(bytes: &[u8]) -> Option<OffsetIndex> {
        Self::decode_with(&[OFFSET_INDEX_SEALED_MAGIC], bytes, Position(u64::MAX))
    }

    fn decode_with(magics: &[u32], bytes: &[u8], size_limit: Position) -> Option<OffsetIndex> {
        let body = magics
            .iter()
            .find_map(|&magic| check_header(magic, bytes, OFFSET_ENTRY_SIZE))?;
        let mut index = OffsetIndex::default();
        for entry in body.chunks_exact(OFFSET_ENTRY_SIZE) {
            let offset = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let position = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
            if let Some((last_offset, last_position)) = index.last()
                && (offset <= last_offset || position <= last_position)
            {
                return None;
            }
            if u64::from(position) >= size_limit.value() {
                break;
            }
            index.entries.push((offset, position));
        }
        Some(index)
    }
}

/// Sparse map from the largest timestamp seen so far in a segment to the base
/// offset of the batch that first reached it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    /// (max timestamp so far, offset relative to the segment base).
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub fn push(&mut self, timestamp: TimestampMs, relative_offset: u32) {
        if let Some(&(last_timestamp, last_offset)) = self.entries.last() {
            assert!(timestamp.0 > last_timestamp, "time index must increase");
            assert!(
                relative_offset > last_offset,
                "time index offsets must increase"
            );
        }
        self.entries.push((timestamp.0, relative_offset));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// A relative offset from which to scan for the first record with
    /// timestamp >= `target`: the last entry whose timestamp is < `target`
    /// (every batch before it has a smaller max timestamp), or 0.
    pub fn lookup(&self, target: TimestampMs) -> u32 {
        let count = self
            .entries
            .partition_point(|&(timestamp, _)| timestamp < target.0);
        match count {
            0 => 0,
            n => self.entries[n - 1].1,
        }
    }

    /// Keep only the first `count` entries (rollback).
    pub fn truncate_count(&mut self, count: usize) {
        self.entries.truncate(count);
    }

    /// The largest timestamp of the batches up to `relative_offset`
    /// included, as far as the entries tell (the last entry at or before
    /// it).
    pub fn max_through(&self, relative_offset: u32) -> Option<i64> {
        let count = self
            .entries
            .partition_point(|&(_, offset)| offset <= relative_offset);
        count.checked_sub(1).map(|last| self.entries[last].0)
    }

    /// Drop every entry at or beyond `relative_offset` (truncation).
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        self.entries.retain(|&(_, offset)| offset < relative_offset);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.entries.len() * TIME_ENTRY_SIZE);
        for &(timestamp, offset) in &self.entries {
            body.extend_from_slice(&timestamp.to_be_bytes());
            body.extend_from_slice(&offset.to_be_bytes());
        }
        with_header(TIME_INDEX_MAGIC, body)
    }

    /// Decode a file written by `encode`, keeping entries whose offset is
    /// below `offset_limit` (relative). `None` when the file is damaged.
    pub fn decode(bytes: &[u8], offset_limit: u32) -> Option<TimeIndex> {
        let body = check_header(TIME_INDEX_MAGIC, bytes, TIME_ENTRY_SIZE)?;
        let mut index = TimeIndex::default();
        for entry in body.chunks_exact(TIME_ENTRY_SIZE) {
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&entry[..8]);
            let timestamp = i64::from_be_bytes(timestamp);
            let offset = u32::from_be_bytes([entry[8], entry[9], entry[10], entry[11]]);
            if let Some((last_timestamp, last_offset)) = index.last()
                && (timestamp <= last_timestamp || offset <= last_offset)
            {
                return None;
            }
            if offset >= offset_limit {
                break;
            }
            index.entries.push((timestamp, offset));
        }
        Some(index)
    }
}

fn with_header(magic: u32, body: Vec<u8>) -> Vec<u8> {
    let mut file = Vec::with_capacity(HEADER_SIZE + body.len());
    file.extend_from_slice(&magic.to_be_bytes());
    file.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    file.extend_from_slice(&body);
    file
}

fn check_header(magic: u32, bytes: &[u8], entry_size: usize) -> Option<&[u8]> {
    if bytes.len() < HEADER_SIZE || !(bytes.len() - HEADER_SIZE).is_multiple_of(entry_size) {
        return None;
    }
    let stored_magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let stored_crc = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let body = &bytes[HEADER_SIZE..];
    (stored_magic == magic && stored_crc == crc32c::crc32c(body)).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let mut index = OffsetIndex::default();
        index.push(0, 0);
        index.push(10, 4096);
        index.push(25, 9000);
        let base = Offset(100);
        assert_eq!(index.lookup(base, Offset(50)), Position(0));
        assert_eq!(index.lookup(base, Offset(100)), Position(0));
        assert_eq!(index.lookup(base, Offset(109)), Position(0));
        assert_eq!(index.lookup(base, Offset(110)), Position(4096));
        assert_eq!(index.lookup(base, Offset(124)), Position(4096));
        assert_eq!(index.lookup(base, Offset(125)), Position(9000));
        assert_eq!(index.lookup(base, Offset(1_000_000)), Position(9000));
    }

    #[test]
    fn time_lookup_returns_the_last_entry_below_the_target() {
        let mut index = TimeIndex::default();
        index.push(TimestampMs(1000), 0);
        index.push(TimestampMs(2000), 5);
        index.push(TimestampMs(3000), 9);
        assert_eq!(index.lookup(TimestampMs(500)), 0);
        assert_eq!(index.lookup(TimestampMs(1000)), 0);
        assert_eq!(index.lookup(TimestampMs(1500)), 0);
        assert_eq!(index.lookup(TimestampMs(2001)), 5);
        assert_eq!(index.lookup(TimestampMs(9999)), 9);
    }

    #[test]
    fn encoded_indexes_round_trip_and_damage_is_detected() {
        let mut offsets = OffsetIndex::default();
        let mut times = TimeIndex::default();
        for step in 0..100u32 {
            offsets.push(step * 3, step * 5000);
            times.push(TimestampMs(i64::from(step) * 7), step * 3);
        }
        let encoded = offsets.encode();
        assert_eq!(
            OffsetIndex::decode(&encoded, Position(u64::MAX)),
            Some(offsets.clone())
        );
        let encoded_times = times.encode();
        assert_eq!(
            TimeIndex::decode(&encoded_times, u32::MAX),
            Some(times.clone())
        );

        // Entries beyond the trusted limit are dropped, not rejected.
        let partial = OffsetIndex::decode(&encoded, Position(10_000)).map(|index| index.len());
        assert_eq!(partial, Some(2));

        for position in 0..encoded.len() {
            let mut damaged = encoded.clone();
            damaged[position] ^= 0x40;
            assert_eq!(
                OffsetIndex::decode(&damaged, Position(u64::MAX)),
                None,
                "byte {position}"
            );
        }
        assert_eq!(
            OffsetIndex::decode(&encoded[..encoded.len() - 3], Position(u64::MAX)),
            None
        );
        assert_eq!(TimeIndex::decode(&[], u32::MAX), None);
    }

    /// A sealed segment's index loads as any index does; only it is taken
    /// as the witness that the file is final (`decode_sealed`), not the
    /// one a clean close writes for the active segment.
    #[test]
    fn only_a_sealed_segments_index_decodes_as_sealed() {
        let mut offsets = OffsetIndex::default();
        offsets.push(0, 0);
        offsets.push(7, 4100);
        let sealed = offsets.encode_sealed();
        let active = offsets.encode();
        assert_eq!(&sealed[..4], b"SLOS");
        assert_eq!(&active[..4], b"SLOX");
        for bytes in [&sealed, &active] {
            assert_eq!(
                OffsetIndex::decode(bytes, Position(u64::MAX)),
                Some(offsets.clone())
            );
        }
        assert_eq!(OffsetIndex::decode_sealed(&sealed), Some(offsets.clone()));
        assert_eq!(OffsetIndex::decode_sealed(&active), None);
        let mut damaged = sealed.clone();
        damaged[9] ^= 1;
        assert_eq!(OffsetIndex::decode_sealed(&damaged), None);
        // What recovery loads tells the two apart (an earlier version's
        // sealed segments carry the active magic: rewritten at an open).
        let limit = Position(u64::MAX);
        assert_eq!(
            OffsetIndex::decode_marked(&sealed, limit),
            Some((offsets.clone(), true))
        );
        assert_eq!(
            OffsetIndex::decode_marked(&active, limit),
            Some((offsets.clone(), false))
        );
        assert_eq!(OffsetIndex::decode_marked(&damaged, limit), None);
    }

    #[test]
    fn truncation_drops_entries_at_and_after_the_cut() {
        let mut offsets = OffsetIndex::default();
        offsets.push(0, 0);
        offsets.push(4, 4096);
        offsets.push(8, 8192);
        offsets.truncate_to_position(Position(4096));
        assert_eq!(offsets.last(), Some((0, 0)));
        let mut times = TimeIndex::default();
        times.push(TimestampMs(1), 0);
        times.push(TimestampMs(2), 4);
        times.truncate_to_offset(4);
        assert_eq!(times.last(), Some((1, 0)));
    }
}
