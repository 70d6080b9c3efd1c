//! Per-log configuration: the Kafka topic configs the engine enforces.

use crate::constants::{
    CHUNK_SIZE_BYTES, INDEX_INTERVAL_BYTES_DEFAULT, MAX_MESSAGE_BYTES_DEFAULT,
    PREALLOCATE_STEP_BYTES, SEGMENT_BYTES_DEFAULT, SEGMENT_MS_DEFAULT,
};

/// When appends are acknowledged relative to fdatasync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Default: an append completes only after the fdatasync covering it.
    BeforeAck,
    /// Like Kafka's flush.ms / flush.messages: an append completes once it
    /// is buffered; the committer flushes when `interval_ms` has passed since
    /// the last flush or `interval_bytes` are pending. A crash may lose the
    /// unflushed tail (never corrupt it).
    Interval {
        interval_ms: i64,
        interval_bytes: u64,
    },
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// segment.bytes: roll to a new segment before exceeding this size.
    pub segment_bytes: u64,
    /// segment.ms: roll when the active segment's first append is older.
    pub segment_ms: i64,
    /// retention.bytes (`None` = unlimited): delete oldest segments while the
    /// log stays above this size without them.
    pub retention_bytes: Option<u64>,
    /// retention.ms (`None` = forever): delete segments whose newest record
    /// timestamp is older than this.
    pub retention_ms: Option<i64>,
    /// index.interval.bytes: spacing of sparse index entries.
    pub index_interval_bytes: u32,
    /// max.message.bytes: the largest record batch accepted.
    pub max_message_bytes: u32,
    pub flush: FlushPolicy,
    /// fallocate step for growing segment files.
    pub preallocate_step_bytes: u64,
    /// Size of the in-memory write chunks.
    pub chunk_size_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 60 * 60 * 1000),
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            flush: FlushPolicy::BeforeAck,
            preallocate_step_bytes: PREALLOCATE_STEP_BYTES,
            chunk_size_bytes: CHUNK_SIZE_BYTES,
        }
    }
}
