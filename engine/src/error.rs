//! Errors at the engine's boundary.
//!
//! `AppendError` is what a producer's append can fail with; `LogError` is
//! everything else (open, read, admin operations). Both carry structured
//! fields; mapping to Kafka error codes happens in the server.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::batch::BatchError;
use crate::types::{LeaderEpoch, Offset};

/// Why an append was refused or failed. Only `Ok` of the append's completion
/// means "durable"; every error here means "not acknowledged".
#[derive(Debug, Error, Clone)]
pub enum AppendError {
    /// The batch failed validation; nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),

    /// The device is full. The unflushed tail was rolled back, nothing was
    /// written; appends succeed again once space is freed.
    #[error("no space left on device while appending to {dir}")]
    StorageFull { dir: PathBuf },

    /// A write or fsync failed earlier. The log accepts no more appends and
    /// acknowledges nothing until it is reopened (which runs recovery).
    #[error("log {dir} is stopped after an I/O error: {reason}")]
    Poisoned { dir: PathBuf, reason: String },

    /// The log was closed while the append was pending.
    #[error("log {dir} was closed before the append became durable")]
    Closed { dir: PathBuf },

    /// A truncation or a start-over (`Log::truncate_to`,
    /// `Log::start_over_at`: a follower syncing with its leader) was in
    /// progress: the append was refused and nothing was written, or its
    /// records were cut before they became durable. Retriable once the
    /// rewrite is done (the replica's role may have changed meanwhile).
    #[error("log {dir} was being truncated; the append was not taken")]
    Truncating { dir: PathBuf },

    /// A leader's append (`Log::append`) under an epoch below the latest
    /// epoch of the log: the caller is a stale leader. Nothing was written.
    #[error(
        "log {dir}: append under leader epoch {}, below the log's latest epoch {}",
        .got.0,
        .latest.0
    )]
    EpochRegression {
        dir: PathBuf,
        latest: LeaderEpoch,
        got: LeaderEpoch,
    },
}

/// Why a follower's append (`Log::append_replicated`) was refused or
/// failed: everything an append can fail with, plus the two ways a leader's
/// batches can fail to continue the follower's log. A separate type so that
/// code matching on `AppendError` (the produce path) is not affected.
#[derive(Debug, Error, Clone)]
pub enum ReplicatedAppendError {
    #[error(transparent)]
    Append(#[from] AppendError),

    /// The batch at `got` came where `expected` was due (an overlap, a
    /// reordering, or a read that did not start at the log end). Nothing
    /// was written.
    #[error("replicated batch at offset {got} does not continue the log at {expected}")]
    NonContiguous { expected: Offset, got: Offset },

    /// A batch whose leader epoch is below that of the batch before it (in
    /// the log or in the same append). Nothing was written.
    #[error(
        "replicated batch has leader epoch {}, below the previous {}",
        .got.0,
        .previous.0
    )]
    EpochRegression {
        previous: LeaderEpoch,
        got: LeaderEpoch,
    },
}

impl From<BatchError> for ReplicatedAppendError {
    fn from(error: BatchError) -> Self {
        ReplicatedAppendError::Append(AppendError::InvalidBatch(error))
    }
}

/// Errors of opening, reading and administering a log.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },

    /// A fetch outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        offset: Offset,
        start: Offset,
        end: Offset,
    },

    /// The log is poisoned by an earlier I/O error (see `AppendError::Poisoned`).
    #[error("log {dir} is stopped after an I/O error: {reason}")]
    Poisoned { dir: PathBuf, reason: String },

    /// The on-disk state cannot be understood (not a torn tail, which
    /// recovery repairs, but e.g. a checkpoint naming a missing segment).
    #[error("log {dir} is corrupt: {reason}")]
    Corrupt { dir: PathBuf, reason: String },

    /// A caller asked for something the log cannot do (bad argument).
    #[error("invalid request: {0}")]
    InvalidArgument(String),

    /// The log was closed (its partition stopped or removed); its directory
    /// may already belong to another log (engine/src/dir_gate.rs).
    #[error("log {dir} is closed")]
    Closed { dir: PathBuf },
}

impl LogError {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io {
            path: path.into(),
            source,
        }
    }
}
