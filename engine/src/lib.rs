//! sluice-engine: the storage engine of Sluice.
//!
//! A partition is a [`log::Log`]: an append-only sequence of Kafka RecordBatch
//! v2 batches stored in segment files, with sparse offset and time indexes.
//! Appends are made durable by a per-shard [`commit::Committer`] (group
//! commit); reads return the stored bytes without copying. All I/O goes
//! through the [`io::Io`] trait so that a simulated disk can drive the same
//! code in crash tests. See docs/ARCHITECTURE.md and
//! docs/internals/storage-format.md.
//!
//! Threading: a log and its committer live on one shard thread (they use
//! `Rc`/`RefCell`); only `Bytes` handed out by reads cross threads.

pub mod batch;
pub mod commit;
pub mod compact;
pub mod config;
pub mod constants;
mod dir_gate;
pub mod epochs;
pub mod error;
pub mod failure;
pub mod index;
pub mod io;
pub mod log;
pub mod readahead;
pub mod recovery;
pub mod segment;
pub mod tail_cache;
#[doc(hidden)]
pub mod testing;
pub mod types;

pub use commit::{CommitStats, Committer, FLUSH_BYTES_BOUNDS, SYNC_BOUNDS_NANOS, SyncMode};
pub use compact::{AbortedRange, CleanOptions, CleanSummary, DirtyStats, TxnCleanInput};
pub use config::{FlushPolicy, LogConfig};
pub use dir_gate::DirUse;
pub use epochs::{EpochEntry, LeaderEpochCache};
pub use error::{AppendError, LogError, ReplicatedAppendError};
pub use log::{AppendCompletion, Appended, Log, ReadLimits, ReadResult, validate_for_append};
pub use recovery::RecoveryReport;
pub use types::{LeaderEpoch, Offset, Position, TimestampMs};
