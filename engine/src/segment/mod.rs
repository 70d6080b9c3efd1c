//! One segment of a partition log: a file of consecutive record batches named
//! by its base offset, with its indexes and in-memory tail.
//!
//! States: *active* (the last segment, takes appends), *sealed* (rolled; its
//! last bytes may still be flushing), *finalized* (sealed, durable, file
//! trimmed to its size, index files written). Only the active segment and
//! sealed-but-not-finalized ones hold a write buffer.
//!
//! Sizes: `size` is where the next batch goes (the logical end);
//! `durable_size <= size` is what the last successful fdatasync covered;
//! `allocated >= durable_size` is the preallocated file length.

pub mod buffer;

use std::path::{Path, PathBuf};

use crate::index::{OffsetIndex, TimeIndex};
use crate::types::{Offset, TimestampMs};
use buffer::WriteBuffer;

/// File name stem of a segment: its base offset, zero padded to 20 digits.
pub fn file_stem(base: Offset) -> String {
    format!("{:020}", base.value())
}

pub fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.log", file_stem(base)))
}

pub fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.index", file_stem(base)))
}

pub fn time_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.timeindex", file_stem(base)))
}

/// The segment's aborted-transaction index. The engine never reads or
/// writes it (the server's transaction state owns its content,
/// server/src/shard/txn_index.rs); it only removes it with the segment.
pub fn txn_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.txnindex", file_stem(base)))
}

/// Parse `00000000000000000042.log` into offset 42.
pub fn parse_log_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse::<i64>().ok().map(Offset)
}

pub struct Segment<F> {
    pub base: Offset,
    /// Offset after the last batch in the segment.
    pub next_offset: Offset,
    pub size: u64,
    pub durable_size: u64,
    pub allocated: u64,
    /// `None` until the flusher has created the file.
    pub file: Option<F>,
    /// The file's directory entry is durable (its directory was synced after
    /// it was created). Until then no flush of it may complete.
    pub entry_durable: bool,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Largest batch max-timestamp in the segment and the base offset of the
    /// batch carrying it (-1 / base when empty).
    pub max_timestamp: TimestampMs,
    pub max_timestamp_batch: Offset,
    /// Bytes appended since the last offset index entry.
    pub bytes_since_index_entry: u64,
    /// Wall-clock time of the first append (segment.ms).
    pub first_append_ms: Option<i64>,
    /// Wall-clock time of the last append, or after an open the file's
    /// modification time (-1: none yet): the segment's age when no record
    /// in it carries a timestamp (`largest_timestamp_ms`).
    pub last_append_ms: i64,
    pub buffer: WriteBuffer,
    pub sealed: bool,
    pub finalized: bool,
    /// The segment as the last successful flush made durable; a rollback
    /// after ENOSPC restores it.
    pub durable_mark: SegmentMark,
    /// Bumped each time compaction replaces the segment's file: a read that
    /// started on an older generation keeps reading the file it started with
    /// (its handle stays valid after the rename).
    pub generation: u64,
    /// Compaction has rewritten (or checked) this segment since the log was
    /// opened: it no longer counts as dirty (`Log::dirty_ratio`).
    pub cleaned: bool,
    /// When the earliest tombstone compaction kept in this segment passes
    /// delete.retention.ms: from then on the segment counts as dirty again,
    /// so a later pass removes the tombstone even if nothing new arrives.
    pub tombstone_expiry_ms: Option<i64>,
}

/// The append-derived state of a segment at one moment: enough to restore it
/// exactly when what was appended after that moment is rolled back.
#[derive(Clone, Debug)]
pub struct SegmentMark {
    pub size: u64,
    pub next_offset: Offset,
    pub index_count: usize,
    pub time_index_count: usize,
    pub max_timestamp: TimestampMs,
    pub max_timestamp_batch: Offset,
    pub bytes_since_index_entry: u64,
    pub first_append_ms: Option<i64>,
}

impl<F> Segment<F> {
    pub fn new(base: Offset, chunk_size: usize) -> Segment<F> {
        Segment {
            base,
            next_offset: base,
            size: 0,
            durable_size: 0,
            allocated: 0,
            file: None,
            entry_durable: false,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: TimestampMs(-1),
            max_timestamp_batch: base,
            bytes_since_index_entry: 0,
            first_append_ms: None,
            last_append_ms: -1,
            buffer: WriteBuffer::new(chunk_size),
            sealed: false,
            finalized: false,
            durable_mark: SegmentMark {
                size: 0,
                next_offset: base,
                index_count: 0,
                time_index_count: 0,
                max_timestamp: TimestampMs(-1),
                max_timestamp_batch: base,
                bytes_since_index_entry: 0,
                first_append_ms: None,
            },
            generation: 0,
            cleaned: false,
            tombstone_expiry_ms: None,
        }
    }

    pub fn mark(&self) -> SegmentMark {
        SegmentMark {
            size: self.size,
            next_offset: self.next_offset,
            index_count: self.index.len(),
            time_index_count: self.time_index.len(),
            max_timestamp: self.max_timestamp,
            max_timestamp_batch: self.max_timestamp_batch,
            bytes_since_index_entry: self.bytes_since_index_entry,
            first_append_ms: self.first_append_ms,
        }
    }

    /// Undo every append made after `mark` was taken (not the write buffer:
    /// the caller truncates it).
    pub fn restore(&mut self, mark: &SegmentMark) {
        assert!(mark.size <= self.size && mark.next_offset <= self.next_offset);
        self.size = mark.size;
        self.next_offset = mark.next_offset;
        self.index.truncate_count(mark.index_count);
        self.time_index.truncate_count(mark.time_index_count);
        self.max_timestamp = mark.max_timestamp;
        self.max_timestamp_batch = mark.max_timestamp_batch;
        self.bytes_since_index_entry = mark.bytes_since_index_entry;
        self.first_append_ms = mark.first_append_ms;
    }

    /// Cut the segment at `position`, where the batch with base offset
    /// `next_offset` started (replication truncation). The segment becomes
    /// the active one again. The max timestamp is kept as an upper bound
    /// unless the batch carrying it was cut.
    pub fn truncate_to(&mut self, position: u64, next_offset: Offset) {
        assert!(position <= self.size && next_offset >= self.base);
        self.size = position;
        self.durable_size = position;
        self.next_offset = next_offset;
        self.index
            .truncate_to_position(crate::types::Position(position));
        // Saturating: a cut inside a replicated offset gap may end the
        // segment beyond its 32-bit relative range (log.rs `maybe_roll`);
        // every entry lies below it then.
        let relative_end =
            u32::try_from(next_offset.value() - self.base.value()).unwrap_or(u32::MAX);
        self.time_index.truncate_to_offset(relative_end);
        if self.max_timestamp_batch >= next_offset {
            match self.time_index.last() {
                Some((timestamp, relative)) => {
                    self.max_timestamp = TimestampMs(timestamp);
                    self.max_timestamp_batch = Offset::from_relative(self.base, relative);
                }
                None => {
                    self.max_timestamp = TimestampMs(-1);
                    self.max_timestamp_batch = self.base;
                }
            }
        }
        self.bytes_since_index_entry = u64::MAX / 2;
        self.sealed = false;
        self.finalized = false;
        self.durable_mark = self.mark();
    }

    pub fn is_empty(&self) -> bool {
        self.next_offset == self.base
    }

    /// The time retention.ms, min.compaction.lag.ms and a tombstone's
    /// delete.retention.ms count from, as Kafka's
    /// `LogSegment.largestTimestamp`: the largest record timestamp, or for
    /// a segment whose records carry none (timestamp -1, accepted under
    /// CreateTime), the time of its last append (its file's modification
    /// time after an open). Counting from -1 would delete such records at
    /// the first cleaner pass.
    pub fn largest_timestamp_ms(&self) -> i64 {
        if self.max_timestamp.0 >= 0 {
            self.max_timestamp.0
        } else {
            self.last_append_ms
        }
    }

    /// Record a batch appended (or found by recovery, or kept by compaction)
    /// at `position`, updating the sparse indexes. Index entries are added
    /// for the first batch and then every `interval_bytes`. Offsets may jump
    /// forward (a compacted segment has gaps; appends assert contiguity
    /// themselves), never backward.
    pub fn note_batch(
        &mut self,
        position: u64,
        size: u64,
        base_offset: Offset,
        next_offset: Offset,
        max_timestamp: TimestampMs,
        interval_bytes: u64,
    ) {
        assert_eq!(position, self.size, "batches are contiguous");
        assert!(base_offset >= self.next_offset, "offsets only grow");
        assert!(
            next_offset > base_offset,
            "a batch holds at least one offset"
        );
        let relative = base_offset.relative_to(self.base);
        let position_u32 = u32::try_from(position).unwrap_or(u32::MAX);
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.max_timestamp_batch = base_offset;
        }
        // Both indexes are sparse: one entry for the first batch, then one per
        // `interval_bytes`. A time entry (T, o) promises that no batch up to o
        // has a timestamp above T, so skipping batches keeps lookups correct.
        if self.index.is_empty() || self.bytes_since_index_entry >= interval_bytes {
            self.index.push(relative, position_u32);
            self.bytes_since_index_entry = 0;
            let time_entry_due = self
                .time_index
                .last()
                .is_none_or(|(timestamp, _)| self.max_timestamp.0 > timestamp);
            if time_entry_due {
                self.time_index.push(self.max_timestamp, relative);
            }
        }
        self.bytes_since_index_entry += size;
        self.size = position + size;
        self.next_offset = next_offset;
    }
}
