//! A partition log: the ordered, durable sequence of record batches of one
//! partition replica, stored as segments in `<data>/<topic>-<partition>/`.
//!
//! Runs on the shard that owns the partition (`Rc`/`RefCell`, not `Send`).
//!
//! Offsets: `log_start <= durable_end <= log_end`. `log_end` is the offset the
//! next append gets; `durable_end` is the end of what the last fdatasync
//! covered; everything in `[log_start, durable_end)` survives a crash.
//!
//! Appends are synchronous: validate, assign offsets, copy into the active
//! segment's aligned write buffer. Durability is asynchronous: the shard's
//! [`Committer`] flushes dirty logs (one write per dirty segment, one
//! fdatasync per file) and completes every append the flush covered.
//!
//! Failure policy (docs/internals/storage-format.md):
//! - ENOSPC in a flush: fail its appends with `StorageFull`, and either
//!   roll the unflushed tail back (the default; later appends take its
//!   offsets) or keep it for the next flush, retried every
//!   `SPACE_RETRY_MS`, refusing appends until one succeeds
//!   ([`Log::keep_unflushed_when_full`], every broker replica).
//! - any other write or fsync error: poison. Every pending and later append
//!   fails; the log must be reopened (recovery) to accept writes again.
//!
//! Truncation and start-over (`truncate_to`, `start_over_at`) await I/O
//! while the shard runs other work. An append in that time is refused
//! (`AppendError::Truncating`): buffered at the old end, the rewrite threw
//! it away and its completion resolved Ok once later records moved the
//! durable end past it. Invariant, asserted where completions resolve: an
//! append completes Ok only while its records are in the log (every step
//! that removes records from the end fails the completions waiting for
//! them: `LogState::forget_records_from`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{Either, join_all};
use futures_util::lock::Mutex;

use crate::batch::{self, BatchHeader};
use crate::commit::{Committer, SyncMode};
use crate::config::{FlushPolicy, LogConfig};
use crate::constants::{
    BATCH_HEADER_SIZE, PAGE_SIZE, PREALLOCATE_FIRST_BYTES, TAIL_CHUNKS_RETAINED,
};
use crate::dir_gate::{DirGate, DirUse};
use crate::epochs::{self, LeaderEpochCache, SegmentSource};
use crate::error::{AppendError, LogError, ReplicatedAppendError};
use crate::io::{Io, is_storage_full};
use crate::readahead::ReadAhead;
use crate::recovery::{self, Checkpoint, RecoveryReport};
use crate::segment::buffer::{page_ceil, page_floor};
use crate::segment::{self, Segment, SegmentMark};
use crate::tail_cache::{self, TailEntry, TailHolder};
use crate::types::{LeaderEpoch, Offset, TimestampMs};

/// A batch [`validate_for_append`] checked on this thread, waiting for the
/// append that follows it. The `Bytes` clone keeps the checked memory alive
/// and immutable, so an append of a slice with the same address and length
/// appends exactly the bytes that were checked.
struct Validated {
    bytes: Bytes,
    max_batch_bytes: usize,
    header: BatchHeader,
}

thread_local! {
    static VALIDATED: RefCell<Option<Validated>> = const { RefCell::new(None) };
}

/// [`batch::validate`] for a caller about to append the same `Bytes` on this
/// thread (the produce handler, which needs the header for its own checks
/// first). Besides the header, it leaves a note that the next append on
/// this thread takes: when that append's batch is these very bytes (same
/// address and length, kept alive by the note) and the log's
/// max.message.bytes is no smaller, the append does not compute the CRC and
/// walk the records a second time (issue 11: the double pass was 4-5 % of
/// the broker's CPU at max-rate ingest). Any other append validates in full,
/// as always; the note is dropped by the next append or validation either
/// way, so it never vouches for anything but the bytes it checked.
///
/// Like [`batch::validate_with_max_timestamp`], it also answers the
/// maxTimestamp the records of an uncompressed batch give (`None` for a
/// compressed one), read on the same pass.
pub fn validate_for_append(
    records: &Bytes,
    max_batch_bytes: usize,
) -> Result<(BatchHeader, Option<TimestampMs>), batch::BatchError> {
    let result = batch::validate_with_max_timestamp(records, max_batch_bytes);
    VALIDATED.with(|note| {
        *note.borrow_mut() = result.as_ref().ok().map(|(header, _)| Validated {
            bytes: records.clone(),
            max_batch_bytes,
            header: *header,
        });
    });
    result
}

/// The header [`validate_for_append`] found for exactly `batch` under a
/// limit no larger than `max_batch_bytes`, if the note is about it; the
/// note is consumed either way.
fn take_validated(batch: &[u8], max_batch_bytes: usize) -> Option<BatchHeader> {
    let validated = VALIDATED.with(|note| note.borrow_mut().take())?;
    let same_bytes = std::ptr::eq(validated.bytes.as_ptr(), batch.as_ptr())
        && validated.bytes.len() == batch.len();
    (same_bytes && validated.max_batch_bytes <= max_batch_bytes).then_some(validated.header)
}

/// A partition log. Cheap to clone (a handle).
pub struct Log<I: Io> {
    pub(crate) inner: Rc<LogInner<I>>,
}

impl<I: Io> Clone for Log<I> {
    fn clone(&self) -> Self {
        Log {
            inner: Rc::clone(&self.inner),
        }
    }
}

pub(crate) struct LogInner<I: Io> {
    pub(crate) io: I,
    pub(crate) dir: PathBuf,
    /// What `open` found and repaired.
    recovery: RecoveryReport,
    pub(crate) state: RefCell<LogState<I::File>>,
    /// Serializes flushes and the operations that rewrite files behind the
    /// flusher's back (truncation, checkpoints, close, the swap of a
    /// compacted segment).
    pub(crate) flush_lock: Mutex<()>,
    /// One compaction pass at a time (compact.rs); held for the whole pass,
    /// unlike `flush_lock`, so appends keep flowing while a pass reads and
    /// writes.
    pub(crate) clean_lock: Mutex<()>,
    /// The work that uses the directory by path (all but the flush, which
    /// checks `closed`); a close waits for it (dir_gate.rs).
    pub(crate) dir_gate: Rc<DirGate>,
    committer: Committer<I>,
    /// The read issued ahead of a sequential reader (readahead.rs).
    read_ahead: ReadAhead,
    /// This log's place in the shard's tail-cache order (tail_cache.rs).
    tail: TailEntry,
    /// Bumped when a truncation, a start-over or a deletion changes or
    /// removes files under readers, and again once the state is the new
    /// one (`Log::read` reads again when it moved during a read).
    rewrites: std::cell::Cell<u64>,
    /// Truncations and start-overs in progress ([`Rewriting`]): appends are
    /// refused while there is one.
    rewriting: std::cell::Cell<u32>,
}

/// A truncation or start-over in progress, from its first step (the flush
/// before it) to its return, whatever way it returns: appends are refused
/// meanwhile (`AppendError::Truncating`), since the rewrite resets the log
/// end and the write buffer under them.
struct Rewriting<'a>(&'a std::cell::Cell<u32>);

impl<'a> Rewriting<'a> {
    fn begin(count: &'a std::cell::Cell<u32>) -> Rewriting<'a> {
        count.set(count.get() + 1);
        Rewriting(count)
    }
}

impl Drop for Rewriting<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// An append waiting for the flush that makes it durable.
pub(crate) struct Waiter {
    /// The end (exclusive) of the append's records.
    pub end: Offset,
    /// `LogState::end_cuts` when its records were last known to be in the
    /// log (buffered, or below a later cut).
    pub cuts: u64,
    pub sender: oneshot::Sender<Result<(), AppendError>>,
}

impl<I: Io> TailHolder for LogInner<I> {
    fn release_retained(&self) -> Option<usize> {
        let mut state = self.state.try_borrow_mut().ok()?;
        let released = state
            .segments
            .iter_mut()
            .map(|segment| segment.buffer.release_retained(segment.durable_size))
            .sum();
        self.tail.unlist();
        Some(released)
    }
}

pub(crate) struct LogState<F> {
    pub config: LogConfig,
    /// Ordered by base offset; the last one is active. Never empty.
    pub segments: VecDeque<Segment<F>>,
    pub log_start: Offset,
    pub log_end: Offset,
    pub durable_end: Offset,
    /// Pending `BeforeAck` appends, in offset order.
    pub waiters: VecDeque<Waiter>,
    /// How many times records were removed from the end of the log
    /// (truncation, start-over, a rolled-back tail): a waiter completes Ok
    /// only if no removal reached its records since it was buffered.
    pub end_cuts: u64,
    pub poisoned: Option<String>,
    pub closed: bool,
    /// In the committer's queue.
    pub queued: bool,
    pub unflushed_bytes: u64,
    pub last_flush_ms: i64,
    /// What the checkpoint file says (segments below `recovery_point.0` are
    /// trusted by recovery).
    pub checkpoint: Checkpoint,
    /// partitionLeaderEpoch of the last batch appended (`None`: the log holds
    /// no batch, or its last batch was removed by retention or compaction
    /// and the log was reopened since). Read from disk at open and after a
    /// truncation; kept by appends.
    pub last_epoch: Option<LeaderEpoch>,
    /// `last_epoch` as of `durable_end`: what a rollback of the unflushed
    /// tail restores.
    pub durable_last_epoch: Option<LeaderEpoch>,
    /// Leader epoch -> start offset (epochs.rs), covering `[log_start,
    /// log_end)`.
    pub epochs: LeaderEpochCache,
    /// The `epochs` generation the checkpoint file holds (`None`: unknown).
    /// The flush rewrites the file when it differs.
    pub epochs_persisted: Option<u64>,
    /// A flush failed for want of space and none has succeeded since: the
    /// warning is logged once per such episode, not at every flush (a full
    /// disk under thousands of partitions logged thousands of lines a
    /// second).
    pub out_of_space: bool,
    /// [`Log::keep_unflushed_when_full`].
    pub keep_when_full: bool,
    /// Keeping its tail out of space: when the next flush is tried.
    pub space_retry_at_ms: i64,
    /// The log end after the last replicated batch only the checkpoint can
    /// vouch for (a compacted batch, or one after an offset gap: the
    /// leader's cleaner removed records), while no flush has made it
    /// trusted yet. Recovery holds batches past the checkpoint to
    /// [`batch::validate`] and contiguous offsets (a torn write looks like
    /// neither), so the flush that makes such batches durable moves the
    /// checkpoint past them before it completes their appends.
    pub untrusted_through: Option<Offset>,
}

impl<F> LogState<F> {
    /// Records from `from` on leave the log (a truncation, a start-over,
    /// a rolled-back unflushed tail): the appends waiting for any of them
    /// can never complete Ok, so they are taken out and returned, for the
    /// caller to fail. The waiters kept end at or below `from`: their
    /// records stay, which their stamp now says.
    pub(crate) fn forget_records_from(
        &mut self,
        from: Offset,
    ) -> Vec<oneshot::Sender<Result<(), AppendError>>> {
        self.end_cuts += 1;
        let kept = self.waiters.partition_point(|waiter| waiter.end <= from);
        let removed = self.waiters.split_off(kept);
        for waiter in &mut self.waiters {
            waiter.cuts = self.end_cuts;
        }
        removed.into_iter().map(|waiter| waiter.sender).collect()
    }
}

/// How an append stamps the two header fields outside the CRC.
#[derive(Clone, Copy, Debug)]
enum Stamp {
    /// A leader's append: baseOffset from the log end, partitionLeaderEpoch
    /// from the caller.
    Assign(LeaderEpoch),
    /// A follower's append: both fields are kept as the leader wrote them and
    /// must continue the log (see [`check_replicated`]).
    Keep,
}

/// What an accepted append was given. `completion` resolves `Ok` once the
/// batch is durable (or at once under `FlushPolicy::Interval`).
#[must_use = "an append is not durable until its completion resolves"]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker time used for the append (LogAppendTime topics).
    pub append_time: TimestampMs,
    pub completion: AppendCompletion,
}

/// Resolves when the append is durable, or with the reason it never will be.
pub struct AppendCompletion {
    receiver: Option<oneshot::Receiver<Result<(), AppendError>>>,
    dir: PathBuf,
}

impl Future for AppendCompletion {
    type Output = Result<(), AppendError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(receiver).poll(context) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(AppendError::Closed {
                dir: self.dir.clone(),
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Bounds of a read.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// Stop before a batch that would take the result above this size...
    pub max_bytes: usize,
    /// ...unless it is the first batch and this is true (Kafka returns the
    /// first batch of a fetch whole so consumers always progress).
    pub min_one_batch: bool,
    /// Exclusive: only batches wholly below this offset (e.g. the durable
    /// end or the high watermark).
    pub max_offset: Offset,
}

/// Stored batches, as the bytes on disk or in the write buffer. Each `Bytes`
/// holds one or more whole batches; none was copied.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub records: Vec<Bytes>,
    pub size: usize,
    /// Offset after the last returned batch (the requested offset if none).
    pub next_offset: Offset,
    /// The read stopped because the next batch would not fit in
    /// `max_bytes`: a read for the rest of that budget returns nothing.
    /// (Otherwise it stopped at `max_offset`, the log's end, or the end of
    /// a segment, and a caller may read on from `next_offset`.)
    pub full: bool,
}

impl<I: Io> Log<I> {
    /// Open (or create) the log in `dir`, recovering from any crash: scan
    /// what the checkpoint does not cover, check every batch, truncate at the
    /// first invalid byte, rebuild missing or damaged indexes.
    pub async fn open(
        io: I,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        committer: &Committer<I>,
    ) -> Result<Log<I>, LogError> {
        let dir = dir.into();
        let (state, recovery) = recovery::recover(&io, &dir, config).await?;
        let log = Log {
            inner: Rc::new(LogInner {
                io,
                dir,
                recovery,
                state: RefCell::new(state),
                flush_lock: Mutex::new(()),
                clean_lock: Mutex::new(()),
                dir_gate: Rc::default(),
                committer: committer.clone(),
                read_ahead: ReadAhead::default(),
                tail: TailEntry::default(),
                rewrites: std::cell::Cell::new(0),
                rewriting: std::cell::Cell::new(0),
            }),
        };
        let last_epoch = log.inner.read_last_epoch().await?;
        {
            let mut state = log.inner.state.borrow_mut();
            state.last_epoch = last_epoch;
            state.durable_last_epoch = last_epoch;
        }
        log.inner.load_epochs(last_epoch).await?;
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Permission to use the log's directory by path (files kept next to
    /// the segments, such as the server's transaction snapshots) until the
    /// returned guard drops; a close waits for it. `Err(Closed)` once a
    /// close has begun: the directory may then belong to another log
    /// (dir_gate.rs).
    pub fn enter_dir(&self) -> Result<DirUse, LogError> {
        self.inner.enter_dir()
    }

    /// Whether a close of this log has begun.
    pub fn is_closed(&self) -> bool {
        self.inner.dir_gate.is_shut()
    }

    /// The I/O the log uses, for the files its owner keeps next to the
    /// segments (the server's transaction index and snapshots), so that
    /// they go through the same seam (and the simulated disk in tests).
    pub fn io(&self) -> &I {
        &self.inner.io
    }

    /// What opening this log found and repaired (nothing much after a clean
    /// close; see [`RecoveryReport::was_needed`]).
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    pub fn log_start_offset(&self) -> Offset {
        self.inner.state.borrow().log_start
    }

    pub fn log_end_offset(&self) -> Offset {
        self.inner.state.borrow().log_end
    }

    pub fn durable_end_offset(&self) -> Offset {
        self.inner.state.borrow().durable_end
    }

    /// What a flush that finds no space (ENOSPC) does with the appends it
    /// was writing. `false` (the default): roll them back, fail their
    /// appends, and give their offsets to the next appends. `true`: fail
    /// the appends waiting on them but keep them, at their offsets, for the
    /// next flush, tried again every [`SPACE_RETRY_MS`], and refuse new
    /// appends (StorageFull) until a flush succeeds.
    ///
    /// A replicated log must keep them: a leader sends its appends to its
    /// followers before they are durable on its own disk, so after a
    /// rollback the followers hold other records at offsets the leader
    /// reuses under the same leader epoch, which no comparison of epochs
    /// can see (replication_sim `leaders_whose_disk_fills_lose_nothing`).
    /// A log with `FlushPolicy::Interval` keeps what it acknowledged
    /// instead of dropping it. The price: a record whose append failed may
    /// still be written later (Kafka's "may have been written" for a failed
    /// produce); an idempotent producer's retry of it is answered as a
    /// duplicate, at the kept record's offset, once that is written.
    pub fn keep_unflushed_when_full(&self, keep: bool) {
        self.inner.state.borrow_mut().keep_when_full = keep;
    }

    pub fn config(&self) -> LogConfig {
        self.inner.state.borrow().config.clone()
    }

    /// Replace the configuration (topic config change). Takes effect for the
    /// next append, roll and retention pass.
    pub fn set_config(&self, config: LogConfig) {
        self.inner.state.borrow_mut().config = config;
    }

    /// Number of segments (for tests, metrics and admin).
    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Base offsets of the segments, oldest first; the last is the active
    /// one (for tests, metrics and admin).
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.inner
            .state
            .borrow()
            .segments
            .iter()
            .map(|segment| segment.base)
            .collect()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .iter()
            .map(|segment| segment.size)
            .sum()
    }

    pub fn is_poisoned(&self) -> bool {
        self.inner.state.borrow().poisoned.is_some()
    }

    /// The partitionLeaderEpoch of the last batch in the log (appended, not
    /// necessarily durable), or `None` when the log holds no batch. Followers
    /// compare it with the leader's epochs (KIP-101 truncation).
    pub fn last_leader_epoch(&self) -> Option<LeaderEpoch> {
        self.inner.state.borrow().last_epoch
    }

    /// The leader-epoch cache: for each epoch that appended to the log, the
    /// offset of its first batch (raised to the log start for the oldest),
    /// oldest first. Covers the appended log, not only its durable part.
    pub fn leader_epoch_entries(&self) -> Vec<(LeaderEpoch, Offset)> {
        self.inner
            .state
            .borrow()
            .epochs
            .entries()
            .iter()
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect()
    }

    /// OffsetForLeaderEpoch (KIP-279): for `requested` at or above the
    /// latest epoch, (latest epoch, log end offset); otherwise the largest
    /// epoch at or below `requested` and the offset where it ended (the
    /// start of the next epoch). `None` when no epoch is cached or
    /// `requested` is below all of them (Kafka's UNDEFINED_EPOCH_OFFSET).
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let state = self.inner.state.borrow();
        state.epochs.end_offset_for(requested, state.log_end)
    }

    /// OffsetForLeaderEpoch as Kafka answers a client
    /// ([`crate::epochs::LeaderEpochCache::end_offset_for_client`]).
    pub fn end_offset_for_epoch_client(
        &self,
        requested: LeaderEpoch,
    ) -> Option<(LeaderEpoch, Offset)> {
        let state = self.inner.state.borrow();
        state.epochs.end_offset_for_client(requested, state.log_end)
    }

    /// The leader epoch of the batch holding `offset`, from the epoch
    /// cache (`None` below its first entry: Kafka's UNDEFINED epoch).
    pub fn epoch_for_offset(&self, offset: Offset) -> Option<LeaderEpoch> {
        self.inner.state.borrow().epochs.epoch_for_offset(offset)
    }

    /// The first offset appended under exactly `epoch`, if it is cached.
    pub fn epoch_start_offset(&self, epoch: LeaderEpoch) -> Option<Offset> {
        self.inner.state.borrow().epochs.start_offset_of(epoch)
    }

    /// The leader-epoch entries a scan of the durable batch headers gives
    /// (what `open` rebuilds from when the checkpoint file is unusable), for
    /// tests that compare it with [`Log::leader_epoch_entries`].
    #[doc(hidden)]
    pub async fn leader_epoch_entries_by_scan(
        &self,
    ) -> Result<Vec<(LeaderEpoch, Offset)>, LogError> {
        let cache = self.inner.scan_epochs().await?;
        Ok(cache
            .entries()
            .iter()
            .map(|entry| (entry.epoch, entry.start_offset))
            .collect())
    }

    /// Validate `records` (one or more record batches v2), assign their
    /// offsets and buffer them. `Ok` means accepted and ordered, not durable:
    /// await `completion` for that. On `Err` nothing was appended.
    ///
    /// An `epoch` below the log's latest leader epoch is refused with
    /// `EpochRegression` (a stale leader).
    pub fn append(&self, records: &Bytes, epoch: LeaderEpoch) -> Result<Appended, AppendError> {
        self.append_batches(records, Stamp::Assign(epoch), |_, _, latest| match latest {
            Some(latest) if epoch < latest => Err(AppendError::EpochRegression {
                dir: self.inner.dir.clone(),
                latest,
                got: epoch,
            }),
            _ => Ok(()),
        })
    }

    /// A follower's append: store the leader's batches byte-identical, with
    /// the baseOffset and partitionLeaderEpoch the leader gave them.
    ///
    /// Validation is `append`'s (framing, magic, CRC-32C, records, size),
    /// or for a batch the leader's cleaner rewrote, recovery's for trusted
    /// segments (`batch::validate_compacted`: records missing, offsets
    /// kept). `from` is the offset the leader read `records` from: it must
    /// be the log end, and the batches must start at or after it, each at
    /// or after the previous one's end (`NonContiguous` otherwise). An
    /// offset skipped is one the leader's cleaner removed (as Kafka's
    /// followers, which need offsets to grow, not to be contiguous); the
    /// flush that makes such batches durable moves the checkpoint past
    /// them (`LogState::untrusted_through`). Epochs must not decrease,
    /// across the batches nor relative to [`Log::last_leader_epoch`]
    /// (`EpochRegression`). A follower whose log diverges truncates first
    /// (`truncate_to`). Durability and completion as `append`: `Ok` means
    /// accepted and ordered; `completion` resolves after the fdatasync
    /// covering the batches. On `Err` nothing was appended.
    pub fn append_replicated(
        &self,
        from: Offset,
        records: &Bytes,
    ) -> Result<Appended, ReplicatedAppendError> {
        self.append_batches(records, Stamp::Keep, |headers, log_end, last_epoch| {
            check_replicated(from, headers, log_end, last_epoch)
        })
    }

    /// The shared body of both appends: refuse on a stopped log, validate
    /// every batch, run `check` on the headers (before anything changes),
    /// then buffer the batches stamped as `stamp` says and register the
    /// completion with the group commit.
    fn append_batches<E: From<AppendError>>(
        &self,
        records: &Bytes,
        stamp: Stamp,
        check: impl FnOnce(&[BatchHeader], Offset, Option<LeaderEpoch>) -> Result<(), E>,
    ) -> Result<Appended, E> {
        let inner = &self.inner;
        let mut state = inner.state.borrow_mut();
        if let Some(reason) = &state.poisoned {
            return Err(AppendError::Poisoned {
                dir: inner.dir.clone(),
                reason: reason.clone(),
            }
            .into());
        }
        if state.closed {
            return Err(AppendError::Closed {
                dir: inner.dir.clone(),
            }
            .into());
        }
        if state.keep_when_full && state.out_of_space {
            // Refused until the appends kept from the failed flush are
            // written (the committer tries again: flush_due).
            return Err(AppendError::StorageFull {
                dir: inner.dir.clone(),
            }
            .into());
        }
        if inner.rewriting.get() > 0 {
            // Buffered at the old end, the truncation would drop it.
            return Err(AppendError::Truncating {
                dir: inner.dir.clone(),
            }
            .into());
        }
        // Validate everything before changing anything: all or nothing. A
        // follower takes what its leader accepted whatever its own
        // max.message.bytes (as Kafka's followers do): a limit lowered
        // while it is behind must not stop it (the peer frame bounds the
        // size).
        let max_bytes = match stamp {
            Stamp::Assign(_) => state.config.max_message_bytes as usize,
            Stamp::Keep => usize::MAX,
        };
        let ranges = batch::split_batches(records).map_err(AppendError::from)?;
        let mut headers = Vec::with_capacity(ranges.len());
        // The note names at most one batch; only the first can be it.
        let mut validated = ranges
            .first()
            .and_then(|first| take_validated(&records[first.clone()], max_bytes));
        // A follower also takes what its leader's cleaner left: batches
        // that lost records (Kafka's followers append the leader's bytes
        // as they are).
        let mut untrusted = false;
        for range in &ranges {
            let header = match validated.take() {
                Some(header) => header,
                None => match (stamp, batch::validate(&records[range.clone()], max_bytes)) {
                    (_, Ok(header)) => header,
                    (Stamp::Keep, Err(_)) => {
                        untrusted = true;
                        batch::validate_compacted(&records[range.clone()], max_bytes)
                            .map_err(AppendError::from)?
                    }
                    (Stamp::Assign(_), Err(error)) => return Err(AppendError::from(error).into()),
                },
            };
            headers.push(header);
        }
        // The cache's latest epoch can be above the last batch's (the
        // batches of the latest epoch were compacted away).
        let latest_epoch = state.last_epoch.max(state.epochs.latest_epoch());
        check(&headers, state.log_end, latest_epoch)?;
        let now = inner.io.now_ms();
        let base_offset = match (stamp, headers.first()) {
            (Stamp::Keep, Some(first)) => first.base_offset(),
            _ => state.log_end,
        };
        let interval = u64::from(state.config.index_interval_bytes);
        let mut appended_bytes = 0u64;
        for (range, header) in ranges.iter().zip(&headers) {
            let size = range.len() as u64;
            let count = record_count(header);
            let offset = match stamp {
                Stamp::Assign(_) => state.log_end,
                // check_replicated: at or past the log end.
                Stamp::Keep => header.base_offset(),
            };
            maybe_roll(&mut state, size, offset, count, now);
            untrusted |= offset != state.log_end;
            assert!(
                state
                    .segments
                    .back()
                    .is_some_and(|active| active.next_offset <= offset)
                    && offset >= state.log_end,
                "appends continue the active segment's offsets"
            );
            let mut patched = [0u8; BATCH_HEADER_SIZE];
            patched.copy_from_slice(&records[range.start..range.start + BATCH_HEADER_SIZE]);
            match stamp {
                Stamp::Assign(epoch) => {
                    batch::patch_base_offset(&mut patched, offset);
                    batch::patch_leader_epoch(&mut patched, epoch);
                }
                Stamp::Keep => {}
            }
            let body = &records[range.start + BATCH_HEADER_SIZE..range.end];
            let Some(active) = state.segments.back_mut() else {
                unreachable!("a log always has an active segment");
            };
            let position = active.buffer.append(&[&patched, body]);
            active.note_batch(
                position,
                size,
                offset,
                offset.plus(count),
                max_timestamp(header),
                interval,
            );
            active.first_append_ms.get_or_insert(now);
            active.last_append_ms = now;
            state.log_end = offset.plus(count);
            let epoch = match stamp {
                Stamp::Assign(epoch) => epoch,
                Stamp::Keep => header.partition_leader_epoch(),
            };
            state.last_epoch = Some(epoch);
            // The only cost on the hot path: one comparison per batch.
            if state
                .epochs
                .latest_epoch()
                .is_none_or(|latest| epoch > latest)
            {
                state.epochs.assign(epoch, offset);
            }
            appended_bytes += size;
        }
        state.unflushed_bytes += appended_bytes;
        if untrusted {
            state.untrusted_through = Some(state.log_end);
        }
        let last_offset = Offset(state.log_end.value() - 1);
        let completion = match state.config.flush {
            FlushPolicy::BeforeAck => {
                let (sender, receiver) = oneshot::channel();
                let end = state.log_end;
                let cuts = state.end_cuts;
                state.waiters.push_back(Waiter { end, cuts, sender });
                AppendCompletion {
                    receiver: Some(receiver),
                    dir: inner.dir.clone(),
                }
            }
            FlushPolicy::Interval { .. } => AppendCompletion {
                receiver: None,
                dir: inner.dir.clone(),
            },
        };
        let enqueue = !state.queued;
        state.queued = true;
        drop(state);
        inner.tail.touch();
        if enqueue {
            inner.committer.enqueue(Rc::downgrade(inner));
        }
        Ok(Appended {
            base_offset,
            last_offset,
            append_time: TimestampMs(now),
            completion,
        })
    }

    /// Bytes of this log's retained tail chunks: flushed data kept in memory
    /// for reads until the shard's budget wants it back (tail_cache.rs).
    pub fn retained_tail_bytes(&self) -> usize {
        let state = self.inner.state.borrow();
        state
            .segments
            .iter()
            .map(|segment| segment.buffer.retained_bytes())
            .sum()
    }

    /// Reads served from a read issued ahead (readahead.rs) so far.
    pub fn read_ahead_hits(&self) -> u64 {
        self.inner.read_ahead.taken()
    }

    /// Make everything appended so far durable (waits for a running flush).
    pub async fn flush(&self) -> Result<(), AppendError> {
        self.inner.flush().await
    }

    /// Read stored batches starting with the one holding `offset`.
    ///
    /// `Err(OffsetOutOfRange)` below the log start or beyond the log end; an
    /// empty result at the end (or at `limits.max_offset`). Returns batches
    /// of one segment at most; callers read again from `next_offset`.
    ///
    /// A read whose disk reads were in flight while a truncation cut the
    /// file they read (the same inode, cut in place) and appends after it
    /// were written there could join bytes of both: it reads again, on
    /// the log as it is now.
    pub async fn read(&self, offset: Offset, limits: ReadLimits) -> Result<ReadResult, LogError> {
        loop {
            let rewrites = self.inner.rewrites.get();
            let result = self.read_once(offset, limits).await;
            if self.inner.rewrites.get() == rewrites {
                return result;
            }
        }
    }

    async fn read_once(&self, offset: Offset, limits: ReadLimits) -> Result<ReadResult, LogError> {
        let inner = &self.inner;
        let mut result = ReadResult {
            next_offset: offset,
            ..ReadResult::default()
        };
        // Compaction leaves offset gaps, also at the end of a segment: when
        // nothing at or after `offset` is left in its segment, the answer is
        // the next segment's first batch (Kafka returns the next batch after
        // a compacted-away offset).
        let mut from = offset;
        loop {
            let (segment_base, generation, start_position, limit, next_base) = {
                let state = inner.state.borrow();
                if from < state.log_start || from > state.log_end {
                    return Err(LogError::OffsetOutOfRange {
                        offset: from,
                        start: state.log_start,
                        end: state.log_end,
                    });
                }
                let limit = limits.max_offset.min(state.log_end);
                if from >= limit {
                    return Ok(result);
                }
                let count = state
                    .segments
                    .partition_point(|segment| segment.base <= from);
                let Some(segment) = count.checked_sub(1).and_then(|at| state.segments.get(at))
                else {
                    return Ok(result);
                };
                (
                    segment.base,
                    segment.generation,
                    segment.index.lookup(segment.base, from).value(),
                    limit,
                    state.segments.get(count).map(|next| next.base),
                )
            };
            inner.tail.touch();
            self.read_segment(
                segment_base,
                generation,
                start_position,
                offset,
                limit,
                limits,
                &mut result,
            )
            .await?;
            match next_base {
                // Nothing at or after `offset` was left in the segment. Not
                // when the budget stopped the read: the batch that did not
                // fit would be skipped.
                Some(next_base)
                    if result.records.is_empty() && !result.full && next_base < limit =>
                {
                    from = next_base;
                }
                _ => return Ok(result),
            }
        }
    }

    /// The batches of one segment holding offsets from `offset` on, below
    /// `limit`, from `start_position` (at or before the first of them).
    #[allow(clippy::too_many_arguments)]
    async fn read_segment(
        &self,
        segment_base: Offset,
        generation: u64,
        start_position: u64,
        offset: Offset,
        limit: Offset,
        limits: ReadLimits,
        result: &mut ReadResult,
    ) -> Result<(), LogError> {
        let mut cursor = Cursor::new(&self.inner, segment_base, generation, limits.max_bytes);
        let mut pending: Option<(Bytes, usize, usize)> = None;
        let mut position = start_position;
        loop {
            // Decide on a batch from its header, so that the batch that
            // ends the read (past the limits) is never read whole, and no
            // read goes further than the bytes this one may still return.
            let remaining = limits.max_bytes.saturating_sub(result.size);
            cursor.want(remaining.saturating_add(BATCH_HEADER_SIZE));
            let Some(span) = cursor.span_at(position).await? else {
                break;
            };
            if span.last < offset {
                position += span.size as u64;
                continue;
            }
            if span.last >= limit {
                break;
            }
            let first = result.records.is_empty() && pending.is_none();
            if result.size + span.size > limits.max_bytes && !(first && limits.min_one_batch) {
                result.full = true;
                break;
            }
            let Some((run, at)) = cursor.batch_at(position).await? else {
                break;
            };
            // Coalesce consecutive batches of one run into one slice.
            pending = match pending.take() {
                Some((pending_run, start, end))
                    if pending_run.as_ptr() == run.as_ptr() && end == at =>
                {
                    Some((pending_run, start, at + span.size))
                }
                Some((pending_run, start, end)) => {
                    result.records.push(pending_run.slice(start..end));
                    Some((run.clone(), at, at + span.size))
                }
                None => Some((run.clone(), at, at + span.size)),
            };
            result.size += span.size;
            result.next_offset = span.last.plus(1);
            position += span.size as u64;
        }
        if let Some((run, start, end)) = pending {
            result.records.push(run.slice(start..end));
        }
        // A reader that came from disk is likely to come back for what
        // follows: read it now (readahead.rs).
        // The segment's state now, not as the cursor last saw it: a
        // truncation during this read must not leave a slot vouching for
        // bytes past the new end (no await between this and the slot).
        let returned = result.next_offset > offset;
        if returned {
            self.inner.read_ahead.note_reader_bytes(cursor.read_ahead);
        } else if let Some((clears, start, valid_end, bytes)) = cursor.took.take() {
            // This read took the chunk read ahead and returned nothing (its
            // budget ended at the first batch): the next read starts there.
            self.inner.read_ahead.put_back(
                clears,
                segment_base,
                generation,
                start,
                valid_end,
                bytes,
            );
            return Ok(());
        }
        let current = cursor.from_disk.then(|| {
            let state = self.inner.state.borrow();
            state
                .segments
                .iter()
                .find(|segment| segment.base == segment_base && segment.generation == generation)
                .and_then(|segment| Some((segment.file.clone()?, segment.durable_size)))
        });
        if let Some(Some((file, durable_size))) = current {
            self.inner
                .read_ahead
                .issue(
                    &self.inner.io,
                    &file,
                    segment_base,
                    generation,
                    position,
                    // The next read returns up to as many bytes from the
                    // page holding `position`, and peeks at one more header.
                    self.inner.read_ahead.length_for(cursor.read_ahead) + 2 * PAGE_SIZE,
                    durable_size,
                )
                .await;
        }
        Ok(())
    }

    /// The first record whose timestamp is >= `target`, as Kafka's
    /// ListOffsets by timestamp: its offset and timestamp; `None` when no
    /// record below `max_offset` is that recent. The records of compressed
    /// batches are decompressed to find it, as Kafka does
    /// ([`batch::first_offset_with_timestamp_at_least_from`]).
    pub async fn offset_for_timestamp(
        &self,
        target: TimestampMs,
        max_offset: Offset,
    ) -> Result<Option<(Offset, TimestampMs)>, LogError> {
        let (start, log_start) = {
            let state = self.inner.state.borrow();
            let found = state
                .segments
                .iter()
                .find(|segment| segment.max_timestamp >= target);
            let Some(segment) = found else {
                return Ok(None);
            };
            let relative = segment.time_index.lookup(target);
            (
                Offset::from_relative(segment.base, relative).max(state.log_start),
                state.log_start,
            )
        };
        // Only records at or after the log start count (it may lie inside
        // the first batch read): an answer below it is one every fetch
        // refuses as out of range.
        self.scan_batches(start, max_offset, |batch_bytes, header| {
            if max_timestamp(header) < target {
                return None;
            }
            // `None`: its qualifying records all lie below the log start
            // (or do not decode): the next batch may hold the answer.
            batch::first_offset_with_timestamp_at_least_from(batch_bytes, target, log_start)
        })
        .await
    }

    /// The record with the largest timestamp (ListOffsets MAX_TIMESTAMP):
    /// its offset and timestamp, `None` for an empty log.
    pub async fn max_timestamp(
        &self,
        max_offset: Offset,
    ) -> Result<Option<(Offset, TimestampMs)>, LogError> {
        let (batch_offset, timestamp) = {
            let state = self.inner.state.borrow();
            let best = state
                .segments
                .iter()
                .filter(|segment| !segment.is_empty())
                .max_by_key(|segment| segment.max_timestamp);
            let Some(segment) = best else { return Ok(None) };
            (
                segment.max_timestamp_batch.max(state.log_start),
                segment.max_timestamp,
            )
        };
        if timestamp.0 < 0 {
            return Ok(None);
        }
        self.offset_for_timestamp(timestamp, max_offset)
            .await
            .map(|found| found.or(Some((batch_offset, timestamp))))
    }

    async fn scan_batches<T>(
        &self,
        mut offset: Offset,
        max_offset: Offset,
        mut visit: impl FnMut(&[u8], &BatchHeader) -> Option<T>,
    ) -> Result<Option<T>, LogError> {
        let limits = ReadLimits {
            max_bytes: 1 << 20,
            min_one_batch: true,
            max_offset,
        };
        loop {
            let result = match self.read(offset, limits).await {
                Ok(result) => result,
                Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(error) => return Err(error),
            };
            if result.records.is_empty() {
                return Ok(None);
            }
            for run in &result.records {
                for range in batch::split_batches(run).map_err(|error| LogError::Corrupt {
                    dir: self.inner.dir.clone(),
                    reason: error.to_string(),
                })? {
                    let bytes = &run[range];
                    let Ok(header) = BatchHeader::parse(bytes) else {
                        continue;
                    };
                    if let Some(found) = visit(bytes, &header) {
                        return Ok(Some(found));
                    }
                }
            }
            offset = result.next_offset;
        }
    }

    /// Remove every batch at or after the batch holding `offset`; the log end
    /// becomes that batch's base offset, or `offset` itself when no batch
    /// holds it (an offset the leader's cleaner removed: a gap in a
    /// follower's copy of compacted batches). Used by replication to drop a
    /// divergent tail. Durable when it returns Ok.
    ///
    /// Appends are refused (`AppendError::Truncating`) from the call to
    /// its return.
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset, LogError> {
        let inner = &self.inner;
        let _dir = inner.enter_dir()?;
        let _rewriting = Rewriting::begin(&inner.rewriting);
        inner
            .flush()
            .await
            .map_err(|error| inner.append_error_to_log_error(error))?;
        let _guard = inner.flush_lock.lock().await;
        let (base, generation, file) = {
            let state = inner.state.borrow();
            if offset >= state.log_end {
                return Ok(state.log_end);
            }
            if offset < state.log_start {
                return Err(LogError::InvalidArgument(format!(
                    "cannot truncate to {offset}, below the log start {}",
                    state.log_start
                )));
            }
            let Some(segment) = segment_for(&state.segments, offset) else {
                return Err(inner.corrupt(format!("no segment holds offset {offset}")));
            };
            (segment.base, segment.generation, segment.file.clone())
        };
        // Find the batch holding `offset`: its position is the new end.
        let start = {
            let state = inner.state.borrow();
            segment_for(&state.segments, offset)
                .map(|segment| segment.index.lookup(segment.base, offset).value())
                .unwrap_or(0)
        };
        let mut cursor = Cursor::new(inner, base, generation, PAGE_SIZE);
        let mut position = start;
        let mut cut = None;
        let mut whole = true;
        while let Some((run, at)) = cursor.batch_at(position).await? {
            let Some(span) = span_of(&run[at..]) else {
                whole = false;
                break;
            };
            if span.last >= offset {
                // Inside a gap before this batch: the end is the offset.
                cut = Some((position, span.base.min(offset)));
                break;
            }
            position += span.size as u64;
        }
        // Every batch of the segment ends before `offset`: it lies in the
        // gap after the segment's last batch, which all stay.
        if cut.is_none() && whole {
            cut = Some((position, offset));
        }
        let Some((cut_position, new_end)) = cut else {
            return Err(inner.corrupt(format!("offset {offset} not found while truncating")));
        };
        // A segment without a file is empty: one rolled away from before a
        // replicated offset gap (maybe_roll); nothing to cut on disk.
        if file.is_none() && cut_position > 0 {
            return Err(inner.corrupt(format!("segment {base} has data but no file")));
        }
        let io = &inner.io;
        let removed: Vec<Offset> = {
            let state = inner.state.borrow();
            state
                .segments
                .iter()
                .filter(|segment| segment.base > base)
                .map(|segment| segment.base)
                .collect()
        };
        let tail_start = page_floor(cut_position);
        let tail_page = if let Some(file) = file.as_ref().filter(|_| cut_position > tail_start) {
            let page = io
                .read_at(file, tail_start, PAGE_SIZE)
                .await
                .map_err(|error| inner.io_error(base, error))?;
            page.slice(..(cut_position - tail_start) as usize)
        } else {
            Bytes::new()
        };
        // Withdraw the checkpoint's trust in what is about to change before
        // changing it: a checkpoint must never vouch for bytes or segments
        // that are gone (recovery accepts offset gaps in trusted segments,
        // which only compaction may create).
        let lowered = {
            let state = inner.state.borrow();
            Checkpoint {
                log_start: state.log_start,
                recovery_base: base.min(state.checkpoint.recovery_base),
                recovery_position: match base.cmp(&state.checkpoint.recovery_base) {
                    std::cmp::Ordering::Less => cut_position,
                    std::cmp::Ordering::Equal => {
                        cut_position.min(state.checkpoint.recovery_position)
                    }
                    std::cmp::Ordering::Greater => state.checkpoint.recovery_position,
                },
            }
        };
        if lowered != inner.state.borrow().checkpoint {
            inner.write_checkpoint_strict(lowered).await?;
            inner.state.borrow_mut().checkpoint = lowered;
        }
        // From the cut on, the files and the log's state disagree until the
        // state is updated below: any failure in between stops the log
        // (poisoned; the next open's recovery finds what is on disk). Left
        // taking appends, it wrote them at the old end into a file already
        // cut (zeros between, which recovery cuts at, with every append
        // after them) or into a segment already removed. A segment past
        // the cut left behind would be found again at the next open, after
        // segments appended from the cut on: its offsets break the
        // continuity there, and recovery cuts the log at it.
        inner.rewrites.set(inner.rewrites.get() + 1);
        let cut = async {
            if let Some(file) = &file {
                io.set_len(file, cut_position)
                    .await
                    .map_err(|error| ("cutting", inner.io_error(base, error)))?;
                io.sync_data(file)
                    .await
                    .map_err(|error| ("syncing", inner.io_error(base, error)))?;
            }
            for removed_base in &removed {
                remove_segment_files(io, &inner.dir, *removed_base)
                    .await
                    .map_err(|error| {
                        ("removing a segment", inner.io_error(*removed_base, error))
                    })?;
            }
            for path in [
                segment::index_path(&inner.dir, base),
                segment::time_index_path(&inner.dir, base),
            ] {
                if let Err(error) = io.remove_file(&path)
                    && error.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), %error, "could not remove a stale index");
                }
            }
            io.sync_dir(&inner.dir)
                .await
                .map_err(|error| ("syncing the directory", LogError::io(&inner.dir, error)))
        };
        if let Err((step, error)) = cut.await {
            inner.poison(&format!("truncation stopped while {step}: {error}"));
            return Err(error);
        }
        let (checkpoint, cut_appends) = {
            let mut state = inner.state.borrow_mut();
            state.segments.retain(|segment| segment.base <= base);
            let Some(segment) = state.segments.back_mut() else {
                unreachable!("the truncated segment remains");
            };
            segment.truncate_to(cut_position, new_end);
            segment.allocated = cut_position;
            inner.read_ahead.clear();
            segment.buffer.reset(cut_position, &tail_page);
            state.log_end = new_end;
            state.durable_end = new_end;
            // None: the flush above completed every append before the cut
            // and later ones were refused.
            let cut_appends = state.forget_records_from(new_end);
            // Cutting the batch that straddles the log start empties the log.
            state.log_start = state.log_start.min(new_end);
            // The kept prefix is durable (flushed above, file synced at its
            // new length): trust it, which also keeps trusting the offset
            // gaps a compacted segment may hold (recovery.rs).
            state.checkpoint = Checkpoint {
                log_start: state.log_start,
                recovery_base: base,
                recovery_position: cut_position,
            };
            (state.checkpoint, cut_appends)
        };
        inner.fail_cut_appends(cut_appends);
        // Again once the state is the new one: a read that started during
        // the cut saw the first bump already.
        inner.rewrites.set(inner.rewrites.get() + 1);
        inner.write_checkpoint(checkpoint).await;
        let last_epoch = inner.read_last_epoch().await?;
        let epochs = {
            let mut state = inner.state.borrow_mut();
            state.last_epoch = last_epoch;
            state.durable_last_epoch = last_epoch;
            state.epochs.truncate_to_end(new_end);
            (state.epochs.generation(), state.epochs.encode())
        };
        // Durable on return, like the truncation itself. Had this failed,
        // the file would hold entries past the end, which open drops, and
        // the next flush rewrites it before any data it covers.
        inner
            .persist_epochs(epochs)
            .await
            .map_err(|error| LogError::io(epochs::checkpoint_path(&inner.dir), error))?;
        Ok(new_end)
    }

    /// Drop the whole log and continue, empty, at `start` (Kafka's
    /// truncateFullyAndStartAt): for a follower whose log ends before its
    /// leader's log start (retention or DeleteRecords removed the records
    /// it would need next, or it is a new replica of such a partition).
    /// `start` is at or past the log end, or anywhere when the log holds
    /// no record (its start is its end): then nothing readable is dropped.
    /// Durable when it returns Ok: the log is empty, its start and end
    /// `start`, its leader-epoch cache empty.
    ///
    /// Order, so that a crash anywhere recovers a valid log holding no
    /// record it should not: the segment files go first, from the first on
    /// (what remains is a suffix of the old log), then the directory sync
    /// (recovery without segments gives an empty log at the old start),
    /// then the checkpoint naming `start`, then the empty epoch cache. Old
    /// records can never reappear under a lower log start. The new active
    /// segment's file is created by its first flush, as after a roll.
    /// Appends are refused (`AppendError::Truncating`) from the call to its
    /// return.
    pub async fn start_over_at(&self, start: Offset) -> Result<(), LogError> {
        let inner = &self.inner;
        let _dir = inner.enter_dir()?;
        let _rewriting = Rewriting::begin(&inner.rewriting);
        inner
            .flush()
            .await
            .map_err(|error| inner.append_error_to_log_error(error))?;
        let _guard = inner.flush_lock.lock().await;
        let bases: Vec<Offset> = {
            let state = inner.state.borrow();
            if start < state.log_end && state.log_start < state.log_end {
                return Err(LogError::InvalidArgument(format!(
                    "cannot start over at {start}, below the log end {} of a log holding records",
                    state.log_end
                )));
            }
            debug_assert!(state.waiters.is_empty(), "flushed under the flush lock");
            state.segments.iter().map(|segment| segment.base).collect()
        };
        // Once a file is gone, a failure leaves the log between the two: it
        // is poisoned (no append to a segment that may be gone) and a
        // reopen recovers it.
        inner.rewrites.set(inner.rewrites.get() + 1);
        let changed: Result<(), LogError> = async {
            for base in bases {
                remove_segment_files(&inner.io, &inner.dir, base)
                    .await
                    .map_err(|error| inner.io_error(base, error))?;
            }
            inner
                .io
                .sync_dir(&inner.dir)
                .await
                .map_err(|error| LogError::io(&inner.dir, error))?;
            let checkpoint = Checkpoint {
                log_start: start,
                recovery_base: start,
                recovery_position: 0,
            };
            // With no segment left, a full disk (no room for the small
            // files' temporary copies) is not a failure: a crash before
            // they are written reopens the log empty at its old start,
            // below the leader's, and the follower starts over again. The
            // next checkpoint and epoch writes carry the new state.
            let full = |error: &LogError| {
                matches!(error, LogError::Io { source, .. } if crate::io::is_storage_full(source))
            };
            match inner.write_checkpoint_strict(checkpoint).await {
                Err(error) if full(&error) => {
                    tracing::warn!(dir = %inner.dir.display(), %error, "starting over without its checkpoint (no space); written later");
                }
                written => written?,
            }
            inner.state.borrow_mut().checkpoint = checkpoint;
            let epochs = {
                let mut state = inner.state.borrow_mut();
                state.epochs.truncate_to_end(Offset::ZERO);
                (state.epochs.generation(), state.epochs.encode())
            };
            match inner
                .persist_epochs(epochs)
                .await
                .map_err(|error| LogError::io(epochs::checkpoint_path(&inner.dir), error))
            {
                Err(error) if full(&error) => {
                    tracing::warn!(dir = %inner.dir.display(), %error, "starting over without its leader-epoch file (no space); written by the next flush");
                    Ok(())
                }
                persisted => persisted,
            }
        }
        .await;
        if let Err(error) = changed {
            inner.poison(&format!("starting over at {start} failed: {error}"));
            return Err(error);
        }
        let cut_appends = {
            let mut state = inner.state.borrow_mut();
            // Every record goes: so do the appends waiting for any (none:
            // flushed first, later ones refused).
            let log_start = state.log_start;
            let cut_appends = state.forget_records_from(log_start);
            let mut segment = Segment::new(start, state.config.chunk_size_bytes);
            segment.buffer.reset(0, &[]);
            state.segments.clear();
            state.segments.push_back(segment);
            state.log_start = start;
            state.log_end = start;
            state.durable_end = start;
            state.unflushed_bytes = 0;
            state.last_epoch = None;
            state.durable_last_epoch = None;
            cut_appends
        };
        inner.fail_cut_appends(cut_appends);
        inner.read_ahead.clear();
        inner.rewrites.set(inner.rewrites.get() + 1);
        Ok(())
    }

    /// Advance the log start offset to `offset` (Kafka DeleteRecords):
    /// earlier records become unreadable at once; whole segments below it
    /// are deleted. Durable when it returns Ok. Returns the new log start.
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let inner = &self.inner;
        let _dir = inner.enter_dir()?;
        inner.check_not_poisoned()?;
        {
            let _guard = inner.flush_lock.lock().await;
            let checkpoint = {
                let state = inner.state.borrow();
                if offset > state.durable_end {
                    return Err(LogError::OffsetOutOfRange {
                        offset,
                        start: state.log_start,
                        end: state.durable_end,
                    });
                }
                if offset <= state.log_start {
                    return Ok(state.log_start);
                }
                Checkpoint {
                    log_start: offset,
                    ..state.checkpoint
                }
            };
            // Durable first, visible second: a failed write changes nothing.
            inner.write_checkpoint_strict(checkpoint).await?;
            let mut state = inner.state.borrow_mut();
            state.log_start = state.log_start.max(offset);
            state.checkpoint.log_start = state.log_start;
            // Not persisted here: open raises the loaded entries to the
            // checkpoint's log start the same way.
            let log_start = state.log_start;
            state.epochs.truncate_to_start(log_start);
        }
        self.delete_segments(|state, segment| segment.next_offset <= state.log_start)
            .await?;
        Ok(self.log_start_offset())
    }

    /// Apply retention.ms and retention.bytes: delete the oldest whole
    /// segments that are past them (never the active one; an expired active
    /// segment is rolled so a later pass can delete it). Returns how many
    /// segments were deleted.
    ///
    /// Only segments wholly below `committed_end` (the partition's high
    /// watermark) go, as Kafka's `deletableSegments`: the log start never
    /// passes records a lagging in-sync follower may still need, and a
    /// replica never deletes what it has not seen committed.
    pub async fn apply_retention(&self, committed_end: Offset) -> Result<usize, LogError> {
        let _dir = self.inner.enter_dir()?;
        self.inner.check_not_poisoned()?;
        let now = self.inner.io.now_ms();
        let rolled = {
            let mut state = self.inner.state.borrow_mut();
            let retention_ms = state.config.retention_ms;
            let expired = if let (Some(retention_ms), Some(active)) =
                (retention_ms, state.segments.back_mut())
                && !active.is_empty()
                && active.largest_timestamp_ms() < now - retention_ms
            {
                active.sealed = true;
                true
            } else {
                false
            };
            // Roll now, as Kafka does, so that the expired segment can go
            // without waiting for the next append; the new active segment
            // is empty (its file is created by its first flush).
            if expired {
                let log_end = state.log_end;
                maybe_roll(&mut state, 0, log_end, 0, now);
            }
            expired
        };
        if rolled {
            // Finalize the sealed segment (the committer's flush does it).
            // On a full disk the older segments still go: freeing space is
            // what retention is for; the sealed one waits for a flush.
            match self.flush().await {
                Ok(()) | Err(AppendError::StorageFull { .. }) => {}
                Err(AppendError::Poisoned { dir, reason }) => {
                    return Err(LogError::Poisoned { dir, reason });
                }
                Err(other) => {
                    return Err(LogError::io(
                        self.dir(),
                        io::Error::other(other.to_string()),
                    ));
                }
            }
        }
        let mut total: u64 = self.size_bytes();
        self.delete_segments(move |state, segment| {
            let expired_by_time = state
                .config
                .retention_ms
                .is_some_and(|retention_ms| segment.largest_timestamp_ms() < now - retention_ms);
            let expired_by_size = state.config.retention_bytes.is_some_and(|retention_bytes| {
                total.saturating_sub(segment.size) >= retention_bytes
            });
            let below_start = segment.next_offset <= state.log_start;
            let committed = segment.next_offset <= committed_end;
            let delete = (committed && (expired_by_time || expired_by_size)) || below_start;
            if delete {
                total -= segment.size;
            }
            delete
        })
        .await
    }

    /// Delete oldest finalized segments while `predicate` holds, in order.
    async fn delete_segments(
        &self,
        mut predicate: impl FnMut(&LogState<I::File>, &Segment<I::File>) -> bool,
    ) -> Result<usize, LogError> {
        let inner = &self.inner;
        let _guard = inner.flush_lock.lock().await;
        // Decide first, without changing anything.
        let (count, new_start, checkpoint) = {
            let state = inner.state.borrow();
            let mut count = 0;
            while count + 1 < state.segments.len() {
                let oldest = &state.segments[count];
                if !oldest.finalized || !predicate(&state, oldest) {
                    break;
                }
                count += 1;
            }
            let new_start = state.log_start.max(state.segments[count].base);
            (
                count,
                new_start,
                Checkpoint {
                    log_start: new_start,
                    ..state.checkpoint
                },
            )
        };
        if count == 0 {
            return Ok(0);
        }
        // The new log start is durable before any file goes: recovery then
        // ignores whatever is left below it, in whatever order the
        // removals reach the disk. With no space for the checkpoint's
        // temporary file (a full disk, which retention is there to relieve)
        // the segments go one at a time instead, each removal durable
        // before the next, so the disk always holds a suffix of the log
        // (recovery starts it at its first segment).
        match inner.write_checkpoint_strict(checkpoint).await {
            Ok(()) => {}
            Err(LogError::Io { source, .. }) if crate::io::is_storage_full(&source) => {
                return self.delete_segments_one_by_one(count).await;
            }
            Err(error) => return Err(error),
        }
        let removed: Vec<Offset> = {
            let mut state = inner.state.borrow_mut();
            state.log_start = state.log_start.max(new_start);
            state.checkpoint.log_start = state.log_start;
            let log_start = state.log_start;
            state.epochs.truncate_to_start(log_start);
            // A read in flight on a segment about to go reads again, at
            // the new log start (OFFSET_OUT_OF_RANGE below it), rather
            // than moving on from a file emptied under it.
            inner.rewrites.set(inner.rewrites.get() + 1);
            state
                .segments
                .drain(..count)
                .map(|segment| segment.base)
                .collect()
        };
        for base in &removed {
            // Logged if it fails: a segment left below the durable log
            // start holds nothing a reader reaches (recovery keeps it as a
            // gap below the log start) and the next pass removes it.
            let _ = remove_segment_files(&inner.io, &inner.dir, *base).await;
        }
        inner
            .io
            .sync_dir(&inner.dir)
            .await
            .map_err(|error| LogError::io(&inner.dir, error))?;
        tracing::debug!(dir = %inner.dir.display(), count = removed.len(), "deleted segments");
        Ok(removed.len())
    }

    /// [`Log::delete_segments`] on a full disk: remove the `count` oldest
    /// segments in order, each removal and its directory sync done before
    /// the next, and stop at the first that fails (a segment left behind
    /// with later ones gone would end the log there at the next open). The
    /// log start moves past what went; the checkpoint follows once there
    /// is space. Called under the flush lock.
    async fn delete_segments_one_by_one(&self, count: usize) -> Result<usize, LogError> {
        let inner = &self.inner;
        let bases: Vec<Offset> = {
            let state = inner.state.borrow();
            state
                .segments
                .iter()
                .take(count)
                .map(|segment| segment.base)
                .collect()
        };
        let mut removed = 0;
        let mut failure = None;
        inner.rewrites.set(inner.rewrites.get() + 1);
        for base in bases {
            let gone = match remove_segment_files(&inner.io, &inner.dir, base).await {
                Ok(()) => inner
                    .io
                    .sync_dir(&inner.dir)
                    .await
                    .map_err(|error| LogError::io(&inner.dir, error)),
                Err(error) => Err(inner.io_error(base, error)),
            };
            if let Err(error) = gone {
                failure = Some(error);
                break;
            }
            removed += 1;
        }
        if removed > 0 {
            let checkpoint = {
                let mut state = inner.state.borrow_mut();
                let Some(next) = state.segments.get(removed) else {
                    unreachable!("the active segment is never deleted");
                };
                let new_start = state.log_start.max(next.base);
                inner.rewrites.set(inner.rewrites.get() + 1);
                state.segments.drain(..removed);
                state.log_start = new_start;
                state.checkpoint.log_start = new_start;
                state.epochs.truncate_to_start(new_start);
                state.checkpoint
            };
            // Not needed for safety (the disk holds a suffix): a failure
            // only means the next open starts the log at its first segment.
            inner.write_checkpoint(checkpoint).await;
            tracing::info!(dir = %inner.dir.display(), count = removed, "deleted segments one at a time on a full disk");
        }
        match failure {
            Some(error) if removed == 0 => Err(error),
            _ => Ok(removed),
        }
    }

    /// Close a log whose directory is about to be removed (its topic or
    /// replica deleted): flush what was appended and refuse further
    /// appends, as [`Log::close`], but without trimming the active
    /// segment's preallocation or writing index files and the checkpoint,
    /// all of which the removal throws away (the trim frees up to a
    /// preallocation step per partition, which a filesystem with online
    /// discard trims on the spot). If the removal does not happen after
    /// all, the log recovers at its next open as after a kill -9.
    ///
    /// The log is closed even when the flush fails (the error is returned
    /// after): its directory goes either way, and a log left open would
    /// take appends and flush them into whatever directory has its path by
    /// then (dir_gate.rs).
    pub async fn close_for_removal(&self) -> Result<(), LogError> {
        let inner = &self.inner;
        let (_guard, flushed) = match self.flush_then_lock().await {
            Ok(guard) => (guard, Ok(())),
            Err(error) => (inner.flush_lock.lock().await, Err(error)),
        };
        if !std::mem::replace(&mut inner.state.borrow_mut().closed, true) {
            inner.fail_waiters(|dir| AppendError::Closed { dir });
        }
        flushed
    }

    /// Wait for the work using the directory by path and refuse more
    /// (dir_gate.rs), flush what was appended, then hold the flush lock: no
    /// flush runs until the guard drops (the start of both closes).
    async fn flush_then_lock(&self) -> Result<futures_util::lock::MutexGuard<'_, ()>, LogError> {
        let inner = &self.inner;
        inner.dir_gate.shut().await;
        inner
            .flush()
            .await
            .map_err(|error| inner.append_error_to_log_error(error))?;
        Ok(inner.flush_lock.lock().await)
    }

    /// Flush, write the active segment's indexes and a checkpoint covering
    /// everything (so the next open scans nothing), and refuse later appends.
    pub async fn close(&self) -> Result<(), LogError> {
        let inner = &self.inner;
        let _guard = self.flush_then_lock().await?;
        if std::mem::replace(&mut inner.state.borrow_mut().closed, true) {
            // Closed before (for removal, maybe): its directory is not
            // this log's to write any more.
            return Ok(());
        }
        // Appends are refused from here on; those that came during the
        // flush above are failed whether or not the files below are
        // written (a flush of a closed log writes nothing).
        let written = self.write_close_files().await;
        inner.fail_waiters(|dir| AppendError::Closed { dir });
        written
    }

    /// The files of a clean close ([`Log::close`], which holds the flush
    /// lock): the active segment trimmed, its indexes, the checkpoint
    /// covering everything, a stale leader-epoch checkpoint.
    async fn write_close_files(&self) -> Result<(), LogError> {
        let inner = &self.inner;
        // Trim the active segment's preallocation (fallocated zeros past its
        // end), so that the next open finds the file exactly its batches
        // and has nothing to cut and sync.
        let trim = {
            let state = inner.state.borrow();
            state.segments.back().and_then(|active| {
                let file = active.file.clone()?;
                (active.allocated > active.size).then_some((file, active.size))
            })
        };
        if let Some((file, size)) = trim {
            let path = segment::log_path(
                &inner.dir,
                inner
                    .state
                    .borrow()
                    .segments
                    .back()
                    .map_or(Offset::ZERO, |active| active.base),
            );
            inner
                .io
                .set_len(&file, size)
                .await
                .map_err(|error| LogError::io(&path, error))?;
            inner
                .io
                .sync_data(&file)
                .await
                .map_err(|error| LogError::io(&path, error))?;
            if let Some(active) = inner.state.borrow_mut().segments.back_mut() {
                active.allocated = size;
            }
        }
        let (checkpoint, writes) = {
            let state = inner.state.borrow();
            let Some(active) = state.segments.back() else {
                unreachable!("a log always has an active segment");
            };
            let writes = [
                (
                    segment::index_path(&inner.dir, active.base),
                    active.index.encode(),
                ),
                (
                    segment::time_index_path(&inner.dir, active.base),
                    active.time_index.encode(),
                ),
            ];
            let checkpoint = Checkpoint {
                log_start: state.log_start,
                recovery_base: active.base,
                recovery_position: active.durable_size,
            };
            (checkpoint, writes)
        };
        // The small files are replaced each with its own fsync and made
        // durable together by one directory sync (it was one per file: a
        // clean stop of 10,000 partitions spent most of its time in them).
        // Any subset of them may be durable after a crash meanwhile, and
        // every subset recovers: each is whole (old or new), an older index
        // is a valid prefix of the newer one, recovery keeps only index
        // entries below the checkpoint's trusted size, and the data and the
        // trim they describe were made durable above.
        let stale_epochs = inner.stale_epochs();
        let mut writes = writes.to_vec();
        writes.push((recovery::checkpoint_path(&inner.dir), checkpoint.encode()));
        if let Some((_, bytes)) = &stale_epochs {
            writes.push((epochs::checkpoint_path(&inner.dir), bytes.clone()));
        }
        for (path, data) in writes {
            inner
                .io
                .replace_file(&path, data)
                .await
                .map_err(|error| LogError::io(&path, error))?;
        }
        inner
            .io
            .sync_dir(&inner.dir)
            .await
            .map_err(|error| LogError::io(&inner.dir, error))?;
        if let Some((generation, _)) = stale_epochs {
            inner.state.borrow_mut().epochs_persisted = Some(generation);
        }
        Ok(())
    }
}

impl<I: Io> LogInner<I> {
    /// Whether the committer should flush this log now, and if not, the
    /// wall-clock time at which it becomes due.
    pub(crate) fn flush_due(&self, now: i64) -> Result<(), i64> {
        let state = self.state.borrow();
        // Keeping a tail no flush could write: tried again after a pause,
        // not at every round (which would spin on ENOSPC).
        if state.keep_when_full
            && state.out_of_space
            && !state.closed
            && now < state.space_retry_at_ms
        {
            return Err(state.space_retry_at_ms);
        }
        match state.config.flush {
            FlushPolicy::BeforeAck => Ok(()),
            FlushPolicy::Interval {
                interval_ms,
                interval_bytes,
            } => {
                let due_at = state.last_flush_ms.saturating_add(interval_ms);
                if state.unflushed_bytes >= interval_bytes || now >= due_at || state.closed {
                    Ok(())
                } else {
                    Err(due_at)
                }
            }
        }
    }

    /// Called by the committer after a flush: still dirty means queue again.
    pub(crate) fn take_requeue(&self) -> bool {
        let mut state = self.state.borrow_mut();
        // A sealed segment waits for finalization only once a successor
        // exists (retention may seal the active segment before the next
        // append rolls); counting it earlier would requeue the log forever.
        let count = state.segments.len();
        let finalizable = state
            .segments
            .iter()
            .take(count.saturating_sub(1))
            .any(|segment| segment.sealed && !segment.finalized);
        let dirty = state.poisoned.is_none()
            && !state.closed
            && (state.durable_end < state.log_end || finalizable);
        state.queued = dirty;
        dirty
    }

    pub(crate) fn mark_unqueued(&self) {
        self.state.borrow_mut().queued = false;
    }

    /// One group-commit flush of this log: create and grow files as needed,
    /// write every dirty segment's new pages, fdatasync each written file,
    /// then complete the appends covered. See the module docs for failures.
    pub(crate) async fn flush(self: &Rc<Self>) -> Result<(), AppendError> {
        let _guard = self.flush_lock.lock().await;
        let plan = {
            let mut state = self.state.borrow_mut();
            if let Some(reason) = &state.poisoned {
                return Err(AppendError::Poisoned {
                    dir: self.dir.clone(),
                    reason: reason.clone(),
                });
            }
            if state.closed {
                // The close flushed everything it acknowledged and failed
                // the appends after it; the directory may be another log's
                // by now (dir_gate.rs).
                return Ok(());
            }
            FlushPlan::take(&mut state)
        };
        let Some(plan) = plan else {
            return self.finalize_sealed().await;
        };
        let io = &self.io;
        // 0. The leader-epoch checkpoint first, whenever it changed: a batch
        // must never be durable while the file lacks its epoch (epochs.rs).
        // Nothing of this flush is written yet, so ENOSPC rolls back.
        if let Some(epochs) = plan.epochs.clone()
            && let Err(error) = self.persist_epochs(epochs).await
        {
            return Err(self.fail_flush(error, "writing the leader-epoch checkpoint"));
        }
        // 1. Create and grow files. ENOSPC here means nothing was written.
        let mut unsynced_entries = false;
        let mut files = Vec::with_capacity(plan.segments.len());
        for planned in &plan.segments {
            let file = match &planned.file {
                Some(file) => file.clone(),
                None => {
                    let path = segment::log_path(&self.dir, planned.base);
                    match io.open(&path, true).await {
                        Ok(file) => {
                            self.with_segment(planned.base, |segment| {
                                segment.file = Some(file.clone())
                            });
                            file
                        }
                        Err(error) => return Err(self.fail_flush(error, "creating a segment")),
                    }
                }
            };
            unsynced_entries |= !planned.entry_durable;
            if planned.allocate_to > planned.allocated {
                if let Err(error) = io.allocate(&file, planned.allocate_to).await {
                    return Err(self.fail_flush(error, "preallocating a segment"));
                }
                self.with_segment(planned.base, |segment| {
                    segment.allocated = planned.allocate_to
                });
            }
            files.push(file);
        }
        if unsynced_entries {
            if let Err(error) = io.sync_dir(&self.dir).await {
                return Err(self.fail_flush(error, "syncing the log directory"));
            }
            for planned in &plan.segments {
                self.with_segment(planned.base, |segment| segment.entry_durable = true);
            }
        }
        // 2. Write every dirty page range, all in flight at once; with
        // `SyncMode::WriteThrough` each write is durable when it completes.
        let write_through = self.committer.sync_mode() == SyncMode::WriteThrough;
        // Wall time, for the statistics only (never a decision).
        let writes_started = std::time::Instant::now();
        // Collected first: `join_all` over an iterator of unknown length
        // (a flat_map) runs its futures as tasks of a FuturesOrdered (an
        // allocation and a waker per write, two more per flush); over a
        // Vec of up to 30 (futures-util's bound; a flush rarely has more
        // than a few writes) it polls them in place.
        let writes: Vec<_> = plan
            .segments
            .iter()
            .zip(&files)
            .flat_map(|(planned, file)| {
                planned.writes.iter().map(move |(position, bytes)| {
                    if write_through {
                        Either::Left(io.write_durable_at(file, *position, bytes.clone()))
                    } else {
                        Either::Right(io.write_at(file, *position, bytes.clone()))
                    }
                })
            })
            .collect();
        let write_count = writes.len();
        let bytes_written: u64 = plan
            .segments
            .iter()
            .flat_map(|planned| &planned.writes)
            .map(|(_, bytes)| bytes.len() as u64)
            .sum();
        for result in join_all(writes).await {
            if let Err(error) = result {
                return Err(self.fail_flush(error, "writing a segment"));
            }
        }
        // 3. Durability: one fdatasync per written file, or this log joins
        // the shard's next filesystem sync (commit.rs, SyncMode), or the
        // writes already were (write-through). Never retried: an error
        // poisons.
        let sync_started = if write_through {
            writes_started
        } else {
            std::time::Instant::now()
        };
        let fsyncs = match self.committer.sync_mode() {
            SyncMode::WriteThrough => 0,
            SyncMode::PerFile => {
                for result in join_all(files.iter().map(|file| io.sync_data(file))).await {
                    if let Err(error) = result {
                        self.poison(&format!("fdatasync failed: {error}"));
                        return Err(self.poisoned_error());
                    }
                }
                files.len() as u64
            }
            SyncMode::Filesystem => {
                if let Some(file) = files.first()
                    && let Err(error) = self.committer.sync_filesystem(file).await
                {
                    self.poison(&format!("syncfs failed: {error}"));
                    return Err(self.poisoned_error());
                }
                0
            }
        };
        // 3b. Replicated batches only the checkpoint can vouch for
        // (`LogState::untrusted_through`): the checkpoint moves past
        // everything this flush made durable before any of it completes.
        // A failure poisons, as a failed fdatasync does: the data is on
        // disk, but a crash would now cut it.
        if plan.untrusted_through.is_some()
            && let Some((last, earlier)) = plan.segments.split_last()
        {
            // The segments before the last one go below the recovery base:
            // recovery then trusts their whole files, so they are cut to
            // their final size first (as finalize_sealed does next), not
            // left with preallocated or stale bytes past it.
            // So are sealed segments this flush did not write (durable
            // already, not yet finalized): a new segment rolled at a
            // replicated batch's base after an offset gap (maybe_roll) is
            // accepted by recovery only after a predecessor it trusts whole.
            let unwritten: Vec<(I::File, u64)> = {
                let state = self.state.borrow();
                state
                    .segments
                    .iter()
                    .filter(|segment| {
                        segment.base < last.base
                            && segment.sealed
                            && !segment.finalized
                            && !earlier.iter().any(|planned| planned.base == segment.base)
                    })
                    .filter_map(|segment| Some((segment.file.clone()?, segment.durable_size)))
                    .collect()
            };
            let trims = earlier
                .iter()
                .zip(&files)
                .map(|(planned, file)| (file, planned.mark.size))
                .chain(unwritten.iter().map(|(file, size)| (file, *size)));
            for (file, size) in trims {
                let trimmed = match io.set_len(file, size).await {
                    Ok(()) => io.sync_data(file).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = trimmed {
                    self.poison(&format!(
                        "trimming a sealed segment before trusting it: {error}"
                    ));
                    return Err(self.poisoned_error());
                }
            }
            let (checkpoint, behind) = {
                let state = self.state.borrow();
                let checkpoint = Checkpoint {
                    recovery_base: last.base,
                    recovery_position: last.mark.size,
                    ..state.checkpoint
                };
                let behind = (checkpoint.recovery_base, checkpoint.recovery_position)
                    > (
                        state.checkpoint.recovery_base,
                        state.checkpoint.recovery_position,
                    );
                (checkpoint, behind)
            };
            // No space for it (its temporary file) is a full disk like a
            // data write's: the appends fail (or are kept), nothing is
            // vouched for, and the next flush writes the same bytes again.
            if behind
                && let Err(error) = io
                    .write_file_atomic(&recovery::checkpoint_path(&self.dir), checkpoint.encode())
                    .await
            {
                return Err(self.fail_flush(
                    error,
                    "writing the checkpoint past replicated compacted batches",
                ));
            }
            let mut state = self.state.borrow_mut();
            if behind {
                state.checkpoint.recovery_base = checkpoint.recovery_base;
                state.checkpoint.recovery_position = checkpoint.recovery_position;
            }
            if state
                .untrusted_through
                .is_some_and(|through| through <= plan.end)
            {
                state.untrusted_through = None;
            }
        }
        let sync_nanos = u64::try_from(sync_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let durable_writes = if write_through { write_count as u64 } else { 0 };
        self.committer
            .note_flush(fsyncs, durable_writes, bytes_written, sync_nanos);
        // 4. Publish durability and complete the covered appends.
        let mut retained = 0;
        {
            let mut state = self.state.borrow_mut();
            for planned in &plan.segments {
                if let Some(segment) = state
                    .segments
                    .iter_mut()
                    .find(|segment| segment.base == planned.base)
                {
                    assert!(
                        planned.mark.size >= segment.durable_size,
                        "durability only grows"
                    );
                    segment.durable_mark = planned.mark.clone();
                    segment.durable_size = planned.mark.size;
                    segment
                        .buffer
                        .release_durable(segment.durable_size, TAIL_CHUNKS_RETAINED);
                    retained += segment.buffer.retain_durable(segment.durable_size);
                }
            }
            assert!(plan.end >= state.durable_end, "durable end only grows");
            if std::mem::take(&mut state.out_of_space) {
                tracing::info!(dir = %self.dir.display(), "space again: a flush succeeded");
            }
            state.durable_end = plan.end;
            state.durable_last_epoch = plan.last_epoch;
            state.unflushed_bytes = state.unflushed_bytes.saturating_sub(plan.bytes);
            state.last_flush_ms = io.now_ms();
            while let Some(waiter) = state.waiters.front() {
                if waiter.end > plan.end {
                    break;
                }
                if let Some(waiter) = state.waiters.pop_front() {
                    // Paired with `forget_records_from`: Ok only for
                    // records that are in the log, never for records a
                    // truncation removed whose offsets later records took.
                    assert!(
                        waiter.cuts == state.end_cuts && waiter.end <= state.log_end,
                        "{}: an append ending at {} would complete after its records were \
                         removed (log end {})",
                        self.dir.display(),
                        waiter.end,
                        state.log_end
                    );
                    // The appender may have stopped waiting; that is fine.
                    let _ = waiter.sender.send(Ok(()));
                }
            }
        }
        // 5. The retained chunks count against the shard's budget.
        if retained > 0 {
            let holder: Rc<dyn TailHolder> = self.clone();
            self.tail.list(Rc::downgrade(&holder));
            tail_cache::enforce();
        }
        self.finalize_sealed().await
    }

    /// For every sealed segment that is fully durable: trim the file to its
    /// size, write its index files, advance the checkpoint past it.
    async fn finalize_sealed(self: &Rc<Self>) -> Result<(), AppendError> {
        loop {
            let next = {
                let state = self.state.borrow();
                let count = state.segments.len();
                state
                    .segments
                    .iter()
                    .enumerate()
                    .find_map(|(position, segment)| {
                        let ready = segment.sealed
                            && !segment.finalized
                            && segment.durable_size == segment.size
                            && position + 1 < count;
                        let next_base = state.segments.get(position + 1).map(|next| next.base);
                        ready.then(|| {
                            (
                                segment.base,
                                segment.file.clone(),
                                segment.size,
                                segment.index.encode_sealed(),
                                segment.time_index.encode(),
                                next_base,
                            )
                        })
                    })
            };
            let Some((base, file, size, index, time_index, next_base)) = next else {
                return Ok(());
            };
            if let Some(file) = &file {
                if let Err(error) = self.io.set_len(file, size).await {
                    self.poison(&format!("trimming segment {base} failed: {error}"));
                    return Err(self.poisoned_error());
                }
                if let Err(error) = self.io.sync_data(file).await {
                    self.poison(&format!(
                        "fdatasync failed while sealing segment {base}: {error}"
                    ));
                    return Err(self.poisoned_error());
                }
            }
            // Index files are an optimisation: recovery rebuilds them when
            // missing, so failing to write them is logged, not fatal. A
            // segment that never had a file (empty, rolled away from before
            // a replicated offset gap: maybe_roll) gets none either.
            let indexes = file.as_ref().map(|_| {
                [
                    (segment::index_path(&self.dir, base), index),
                    (segment::time_index_path(&self.dir, base), time_index),
                ]
            });
            for (path, data) in indexes.into_iter().flatten() {
                if let Err(error) = self.io.write_file_atomic(&path, data).await {
                    tracing::warn!(path = %path.display(), %error, "could not write a segment index");
                }
            }
            let checkpoint = {
                let mut state = self.state.borrow_mut();
                if let Some(segment) = state
                    .segments
                    .iter_mut()
                    .find(|segment| segment.base == base)
                {
                    segment.finalized = true;
                    segment.allocated = size;
                    segment.buffer.clear();
                }
                if let Some(next_base) = next_base
                    && next_base > state.checkpoint.recovery_base
                {
                    state.checkpoint.recovery_base = next_base;
                    state.checkpoint.recovery_position = 0;
                }
                if file.is_none() {
                    forget_fileless_segment(&mut state, base);
                }
                state.checkpoint
            };
            self.write_checkpoint(checkpoint).await;
        }
    }

    /// Write the checkpoint; a failure only means recovery will scan more.
    async fn write_checkpoint(&self, checkpoint: Checkpoint) {
        let path = recovery::checkpoint_path(&self.dir);
        if let Err(error) = self.io.write_file_atomic(&path, checkpoint.encode()).await {
            tracing::warn!(path = %path.display(), %error, "could not write the log checkpoint");
        }
    }

    /// Write the checkpoint when it carries a promise (a new log start).
    pub(crate) async fn write_checkpoint_strict(
        &self,
        checkpoint: Checkpoint,
    ) -> Result<(), LogError> {
        let path = recovery::checkpoint_path(&self.dir);
        self.io
            .write_file_atomic(&path, checkpoint.encode())
            .await
            .map_err(|error| LogError::io(path, error))
    }

    fn with_segment(&self, base: Offset, update: impl FnOnce(&mut Segment<I::File>)) {
        let mut state = self.state.borrow_mut();
        if let Some(segment) = state
            .segments
            .iter_mut()
            .find(|segment| segment.base == base)
        {
            update(segment);
        }
    }

    /// Handle an error of a flush: `ENOSPC` fails its appends and rolls the
    /// tail back or keeps it ([`Log::keep_unflushed_when_full`]); anything
    /// else poisons.
    fn fail_flush(&self, error: io::Error, doing: &str) -> AppendError {
        if is_storage_full(&error) {
            let first = !std::mem::replace(&mut self.state.borrow_mut().out_of_space, true);
            let keep = self.state.borrow().keep_when_full;
            let outcome = if keep {
                "keeping the unflushed tail for the next flush"
            } else {
                "rolling back the unflushed tail"
            };
            if first {
                tracing::warn!(dir = %self.dir.display(), "no space left while {doing}; {outcome} (appends to this log fail until a flush succeeds; said once)");
            } else {
                tracing::debug!(dir = %self.dir.display(), "no space left while {doing}; {outcome}");
            }
            if keep {
                // The plan changed nothing that a later flush does not
                // redo: it writes again from each segment's durable size,
                // creates or grows what is still missing, and rewrites
                // the leader-epoch checkpoint if it is still behind.
                self.state.borrow_mut().space_retry_at_ms =
                    self.io.now_ms().saturating_add(SPACE_RETRY_MS);
                self.fail_waiters(|dir| AppendError::StorageFull { dir });
            } else {
                self.roll_back_unflushed(|dir| AppendError::StorageFull { dir });
            }
            AppendError::StorageFull {
                dir: self.dir.clone(),
            }
        } else {
            self.poison(&format!("{doing} failed: {error}"));
            self.poisoned_error()
        }
    }

    /// Forget everything not yet durable and fail its appends. Only valid
    /// when none of it was written to a file (or only beyond the durable
    /// size, where the next flush overwrites it from the durable size on).
    fn roll_back_unflushed(&self, error: impl Fn(PathBuf) -> AppendError) {
        let mut state = self.state.borrow_mut();
        let durable_end = state.durable_end;
        let mut removed = Vec::new();
        while state.segments.len() > 1 {
            let Some(last) = state.segments.back() else {
                break;
            };
            if last.base <= durable_end {
                break;
            }
            removed.push(last.file.is_some().then_some(last.base));
            state.segments.pop_back();
        }
        let Some(last) = state.segments.back_mut() else {
            unreachable!("a log always has an active segment");
        };
        let mark = last.durable_mark.clone();
        last.restore(&mark);
        last.buffer.truncate(mark.size);
        if !last.finalized {
            last.sealed = false;
        }
        state.log_end = durable_end;
        let cut_appends = state.forget_records_from(durable_end);
        state.last_epoch = state.durable_last_epoch;
        state.epochs.truncate_to_end(durable_end);
        state.unflushed_bytes = 0;
        drop(state);
        for sender in cut_appends {
            let _ = sender.send(Err(error(self.dir.clone())));
        }
        // Segments this failed flush created: new and small, removed at
        // once (this runs inside the failing flush, which is not async here).
        for base in removed.into_iter().flatten() {
            for path in segment_file_paths(&self.dir, base) {
                remove_quietly(&self.io, &path);
            }
        }
        self.fail_waiters(error);
    }

    fn poison(&self, reason: &str) {
        tracing::error!(dir = %self.dir.display(), reason, "log stopped after an I/O error");
        let newly = {
            let mut state = self.state.borrow_mut();
            let newly = state.poisoned.is_none();
            if newly {
                state.poisoned = Some(reason.to_string());
            }
            newly
        };
        let owned = reason.to_string();
        self.fail_waiters(|dir| AppendError::Poisoned {
            dir,
            reason: owned.clone(),
        });
        if newly {
            crate::failure::report(&self.dir, reason);
        }
    }

    /// Operations that change files refuse to run on a poisoned log: what
    /// is on disk is unknown until recovery has looked.
    pub(crate) fn check_not_poisoned(&self) -> Result<(), LogError> {
        match &self.state.borrow().poisoned {
            Some(reason) => Err(LogError::Poisoned {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poisoned_error(&self) -> AppendError {
        let reason = self.state.borrow().poisoned.clone().unwrap_or_default();
        AppendError::Poisoned {
            dir: self.dir.clone(),
            reason,
        }
    }

    /// Fail the appends whose records a truncation or start-over removed
    /// (`LogState::forget_records_from`).
    fn fail_cut_appends(&self, senders: Vec<oneshot::Sender<Result<(), AppendError>>>) {
        for sender in senders {
            let _ = sender.send(Err(AppendError::Truncating {
                dir: self.dir.clone(),
            }));
        }
    }

    fn fail_waiters(&self, error: impl Fn(PathBuf) -> AppendError) {
        let waiters = std::mem::take(&mut self.state.borrow_mut().waiters);
        for Waiter { sender, .. } in waiters {
            let _ = sender.send(Err(error(self.dir.clone())));
        }
    }

    fn corrupt(&self, reason: String) -> LogError {
        LogError::Corrupt {
            dir: self.dir.clone(),
            reason,
        }
    }

    fn io_error(&self, base: Offset, error: io::Error) -> LogError {
        LogError::io(segment::log_path(&self.dir, base), error)
    }

    fn append_error_to_log_error(&self, error: AppendError) -> LogError {
        match error {
            AppendError::Poisoned { dir, reason } => LogError::Poisoned { dir, reason },
            other => LogError::Io {
                path: self.dir.clone(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

/// How long a log keeping a tail that found no space waits before the
/// committer tries to write it again.
pub const SPACE_RETRY_MS: i64 = 250;

/// What one flush of one log will do, captured under the borrow.
struct FlushPlan<F> {
    segments: Vec<PlannedSegment<F>>,
    /// `log_end` at the snapshot: the durable end once the flush succeeds.
    end: Offset,
    /// `last_epoch` at the snapshot: the epoch of the last durable batch
    /// once the flush succeeds.
    last_epoch: Option<LeaderEpoch>,
    /// The leader-epoch checkpoint to write first (generation, file bytes),
    /// when the cache changed since the file was last written.
    epochs: Option<(u64, Vec<u8>)>,
    bytes: u64,
    /// `LogState::untrusted_through` at the snapshot: the checkpoint must
    /// cover this flush before its appends complete.
    untrusted_through: Option<Offset>,
}

struct PlannedSegment<F> {
    base: Offset,
    file: Option<F>,
    entry_durable: bool,
    allocated: u64,
    allocate_to: u64,
    writes: Vec<(u64, Bytes)>,
    mark: SegmentMark,
}

impl<F: Clone> FlushPlan<F> {
    fn take(state: &mut LogState<F>) -> Option<FlushPlan<F>> {
        if state.durable_end == state.log_end {
            return None;
        }
        let step = state.config.preallocate_step_bytes.max(PAGE_SIZE as u64);
        let segment_bytes = state.config.segment_bytes;
        let mut segments = Vec::new();
        for segment in state.segments.iter_mut() {
            if segment.durable_size == segment.size {
                continue;
            }
            let needed = page_ceil(segment.size);
            // Grow geometrically from PREALLOCATE_FIRST_BYTES up to `step`:
            // a small partition reserves little disk, a busy one soon
            // allocates in large extents.
            let growth = segment.allocated.max(PREALLOCATE_FIRST_BYTES).min(step);
            let allocate_to = if needed > segment.allocated {
                page_ceil(needed.max(segment.allocated.saturating_add(growth).min(segment_bytes)))
            } else {
                segment.allocated
            };
            segments.push(PlannedSegment {
                base: segment.base,
                file: segment.file.clone(),
                entry_durable: segment.entry_durable,
                allocated: segment.allocated,
                allocate_to,
                writes: segment.buffer.flush_writes(segment.durable_size),
                mark: segment.mark(),
            });
        }
        let epochs = (state.epochs_persisted != Some(state.epochs.generation()))
            .then(|| (state.epochs.generation(), state.epochs.encode()));
        Some(FlushPlan {
            segments,
            end: state.log_end,
            last_epoch: state.last_epoch,
            epochs,
            bytes: state.unflushed_bytes,
            untrusted_through: state.untrusted_through,
        })
    }
}

/// Reads batches of one segment from memory or disk, one run at a time.
///
/// A cursor reads one generation of its segment. If compaction replaces the
/// segment (or retention deletes it) while the cursor is between reads, it
/// keeps reading the file it saw first: the open handle still names the old
/// file, whose bytes never change, so positions taken from the old index
/// stay meaningful.
struct Cursor<'a, I: Io> {
    inner: &'a Rc<LogInner<I>>,
    base: Offset,
    generation: u64,
    /// The segment's file and durable size as of the last fetch that found
    /// the segment at `generation`.
    seen: Option<(I::File, u64)>,
    run: Option<(u64, Bytes)>,
    read_ahead: usize,
    /// How many bytes a fetch reads at least (at most `read_ahead`).
    wanted: usize,
    /// The last bytes fetched came from the segment file (not the write
    /// buffer).
    from_disk: bool,
    /// The chunk this cursor took from the read-ahead slot: the slot's
    /// truncation count, file position, valid end and bytes.
    took: Option<(u64, u64, u64, Bytes)>,
}

impl<'a, I: Io> Cursor<'a, I> {
    fn new(inner: &'a Rc<LogInner<I>>, base: Offset, generation: u64, read_ahead: usize) -> Self {
        Cursor {
            inner,
            base,
            generation,
            seen: None,
            run: None,
            read_ahead: read_ahead.clamp(64 << 10, 8 << 20),
            wanted: read_ahead.clamp(64 << 10, 8 << 20),
            from_disk: false,
            took: None,
        }
    }

    /// Read no more than `bytes` (page rounded, at most the read-ahead
    /// size) on the next fetches, beyond what a batch needs.
    fn want(&mut self, bytes: usize) {
        self.wanted = bytes.clamp(PAGE_SIZE, self.read_ahead);
    }

    /// The span of the batch at `position` from its header alone; `None`
    /// at the end of the segment.
    async fn span_at(&mut self, position: u64) -> Result<Option<Span>, LogError> {
        for _ in 0..2 {
            if let Some((run_start, run)) = &self.run
                && position >= *run_start
                && position - run_start + BATCH_HEADER_SIZE as u64 <= run.len() as u64
            {
                return Ok(span_of(&run[(position - run_start) as usize..]));
            }
            match self.fetch(position, BATCH_HEADER_SIZE).await? {
                Some(run) => self.run = Some((position, run)),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The run holding the whole batch at `position` and the batch's index
    /// in it; `None` at the end of the segment.
    async fn batch_at(&mut self, position: u64) -> Result<Option<(Bytes, usize)>, LogError> {
        let mut need = BATCH_HEADER_SIZE;
        for _ in 0..3 {
            if let Some((run_start, run)) = &self.run
                && position >= *run_start
                && position - run_start + need as u64 <= run.len() as u64
            {
                let at = (position - run_start) as usize;
                match span_of(&run[at..]) {
                    Some(span) if at + span.size <= run.len() => {
                        return Ok(Some((run.clone(), at)));
                    }
                    Some(span) => need = span.size,
                    None => return Ok(None),
                }
            }
            match self.fetch(position, need).await? {
                Some(run) => self.run = Some((position, run)),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Bytes from `position` on: from the write buffer when it holds them,
    /// else one O_DIRECT read of at least `need` bytes.
    async fn fetch(&mut self, position: u64, need: usize) -> Result<Option<Bytes>, LogError> {
        let (file, disk_end) = {
            let state = self.inner.state.borrow();
            let current = state
                .segments
                .iter()
                .find(|segment| segment.base == self.base && segment.generation == self.generation);
            match current {
                Some(segment) => {
                    if position >= segment.size {
                        return Ok(None);
                    }
                    if segment
                        .buffer
                        .start()
                        .is_some_and(|start| position >= start)
                    {
                        self.from_disk = false;
                        return Ok(segment.buffer.read_run(position));
                    }
                    if let Some(file) = &segment.file {
                        self.seen = Some((file.clone(), segment.durable_size));
                    }
                    (segment.file.clone(), segment.durable_size)
                }
                // Replaced or deleted since the read started: finish on the
                // file it started with (only finalized segments are replaced
                // or deleted, and they are read from their file).
                None => match &self.seen {
                    Some((file, durable_size)) => (Some(file.clone()), *durable_size),
                    None => return Ok(None),
                },
            }
        };
        let Some(file) = file else { return Ok(None) };
        if position >= disk_end {
            return Ok(None);
        }
        self.from_disk = true;
        let prefetched = self
            .inner
            .read_ahead
            .take(self.base, self.generation, position, need)
            .filter(|_| self.seen.is_some());
        let (read_start, disk_end, bytes) = match prefetched {
            Some(prefetched) => match prefetched.read.await {
                Ok(bytes) => {
                    self.took = Some((
                        prefetched.clears,
                        prefetched.start,
                        prefetched.valid_end,
                        bytes.clone(),
                    ));
                    (prefetched.start, disk_end.min(prefetched.valid_end), bytes)
                }
                Err(error) => return Err(self.inner.io_error(self.base, error)),
            },
            None => {
                let read_start = page_floor(position);
                let wanted_end = disk_end.min(position + need.max(self.wanted) as u64);
                let length = (page_ceil(wanted_end) - read_start) as usize;
                let bytes = self
                    .inner
                    .io
                    .read_at(&file, read_start, length)
                    .await
                    .map_err(|error| self.inner.io_error(self.base, error))?;
                (read_start, disk_end, bytes)
            }
        };
        let skip = (position - read_start) as usize;
        let available = ((disk_end - read_start) as usize).min(bytes.len());
        if skip >= available {
            return Ok(None);
        }
        Ok(Some(bytes.slice(skip..available)))
    }
}

/// Offsets and size of a stored batch, from its header.
struct Span {
    base: Offset,
    last: Offset,
    size: usize,
}

///
/// Reads check no CRC (recovery did, up to what the checkpoint trusts), so
/// a header damaged on disk inside the trusted part reaches here: offsets
/// that cannot be a batch's (a negative base or delta, a last offset at
/// the end of the range) end the segment's data like an unparsable
/// header instead of failing an assertion, which aborted the broker at
/// every read of that offset, restart after restart.
fn span_of(bytes: &[u8]) -> Option<Span> {
    let header = BatchHeader::parse(bytes).ok()?;
    let base = header_base(&header);
    let delta = i64::from(header.last_offset_delta());
    if base.value() < 0 || delta < 0 {
        return None;
    }
    let last = base
        .value()
        .checked_add(delta)
        .filter(|last| *last < i64::MAX)?;
    Some(Span {
        base,
        last: Offset(last),
        size: header.total_size(),
    })
}

fn header_base(header: &BatchHeader) -> Offset {
    header.base_offset()
}

fn record_count(header: &BatchHeader) -> i64 {
    i64::from(header.last_offset_delta()) + 1
}

fn max_timestamp(header: &BatchHeader) -> TimestampMs {
    header.max_timestamp()
}

/// The segment holding `offset`: the last one whose base is <= it.
fn segment_for<F>(segments: &VecDeque<Segment<F>>, offset: Offset) -> Option<&Segment<F>> {
    let count = segments.partition_point(|segment| segment.base <= offset);
    segments.get(count.checked_sub(1)?)
}

/// Roll to a new segment when the batch would overflow the active one, the
/// active one is too old, or relative offsets would overflow.
/// Roll before a batch of `size` bytes and `count` offsets at `offset`
/// (the log end, or past it for a follower's copy of compacted batches).
///
/// A new segment starts at the log end, except when the batch's offsets do
/// not fit the active segment's 32-bit relative offsets: a follower's copy
/// of a compacted region can skip billions of offsets (a busy compacted
/// topic, `__consumer_offsets`), and then the new segment starts at the
/// batch's own base, as Kafka rolls at a batch's first offset. The offsets
/// between belong to the sealed segment, which reaches up to its
/// successor's base as a segment emptied by compaction does (recovery.rs),
/// even when it is empty (Kafka too keeps the empty active segment it rolls
/// away from; one with no file never gets one). Only replicated appends
/// skip offsets, and their flush moves the checkpoint past them before
/// they complete (`LogState::untrusted_through`, flush step 3b), which is
/// what lets recovery accept the gap.
fn maybe_roll<F>(state: &mut LogState<F>, size: u64, offset: Offset, count: i64, now: i64) {
    let config = &state.config;
    let log_end = state.log_end;
    let Some(active) = state.segments.back_mut() else {
        unreachable!("a log always has an active segment");
    };
    let offsets_overflow = offset.value() + count - active.base.value() > i64::from(u32::MAX);
    if active.is_empty() && !active.sealed && !offsets_overflow {
        return;
    }
    let too_big =
        active.size + size > config.segment_bytes || active.size + size > u64::from(u32::MAX);
    let too_old = active
        .first_append_ms
        .is_some_and(|first| now - first >= config.segment_ms);
    if active.sealed || too_big || too_old || offsets_overflow {
        active.sealed = true;
        let base = if offsets_overflow {
            active.next_offset = offset;
            offset
        } else {
            log_end
        };
        let mut segment = Segment::new(base, config.chunk_size_bytes);
        segment.buffer.reset(0, &[]);
        state.segments.push_back(segment);
    }
}

/// A sealed segment that never had a file holds nothing (an empty active
/// segment rolled away from before a replicated offset gap: `maybe_roll`).
/// Once finalized it leaves the list, as recovery drops it (it finds no
/// file): its predecessor reaches up to its successor's base, or, first,
/// the log starts there. Kept, it stopped compaction at the log's front
/// for good (only segments with files are cleaned).
fn forget_fileless_segment<F>(state: &mut LogState<F>, base: Offset) {
    let Some(position) = state
        .segments
        .iter()
        .position(|segment| segment.base == base)
    else {
        return;
    };
    if position + 1 >= state.segments.len() {
        return;
    }
    let Some(removed) = state.segments.remove(position) else {
        return;
    };
    debug_assert!(removed.size == 0 && removed.file.is_none());
    match position
        .checked_sub(1)
        .and_then(|previous| state.segments.get_mut(previous))
    {
        Some(previous) => previous.next_offset = previous.next_offset.max(removed.next_offset),
        None => {
            let start = state.log_start.max(removed.next_offset);
            state.log_start = start;
            state.checkpoint.log_start = start;
            state.epochs.truncate_to_start(start);
        }
    }
}

/// A segment's files: the log file first, then its indexes.
fn segment_file_paths(dir: &Path, base: Offset) -> [PathBuf; 4] {
    [
        segment::log_path(dir, base),
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
        segment::txn_index_path(dir, base),
    ]
}

/// Remove a segment's files, the (large) log file off the shard thread
/// (`Io::remove_large_file`). Removal is durable after a `sync_dir`. An
/// error removing the log file is logged and returned (the index files
/// are rebuilt by recovery if they stay).
async fn remove_segment_files<I: Io>(io: &I, dir: &Path, base: Offset) -> io::Result<()> {
    let [log_file, indexes @ ..] = segment_file_paths(dir, base);
    let removed = match io.remove_large_file(&log_file).await {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        removed => removed,
    };
    if let Err(error) = &removed {
        tracing::warn!(path = %log_file.display(), %error, "could not remove a segment file");
    }
    for path in indexes {
        remove_quietly(io, &path);
    }
    removed
}

fn remove_quietly<I: Io>(io: &I, path: &Path) {
    warn_unless_gone(path, io.remove_file(path));
}

fn warn_unless_gone(path: &Path, result: io::Result<()>) {
    if let Err(error) = result
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not remove a segment file");
    }
}

impl<I: Io> LogInner<I> {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A use of the directory by path (dir_gate.rs), or `Closed`.
    pub(crate) fn enter_dir(&self) -> Result<DirUse, LogError> {
        self.dir_gate.enter().ok_or_else(|| LogError::Closed {
            dir: self.dir.clone(),
        })
    }

    /// `Closed` once a close has begun: a long use of the directory (a
    /// compaction pass) stops at its next step.
    pub(crate) fn stop_if_closing(&self) -> Result<(), LogError> {
        if self.dir_gate.is_shut() {
            return Err(LogError::Closed {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Write the leader-epoch checkpoint `(generation, bytes)` and remember
    /// that the file holds that generation. Callers hold `flush_lock`, so
    /// writes of the file never overlap.
    async fn persist_epochs(&self, (generation, bytes): (u64, Vec<u8>)) -> io::Result<()> {
        self.io
            .write_file_atomic(&epochs::checkpoint_path(&self.dir), bytes)
            .await?;
        self.state.borrow_mut().epochs_persisted = Some(generation);
        Ok(())
    }

    /// The leader-epoch checkpoint to write when the file is behind the
    /// cache.
    fn stale_epochs(&self) -> Option<(u64, Vec<u8>)> {
        let state = self.state.borrow();
        (state.epochs_persisted != Some(state.epochs.generation()))
            .then(|| (state.epochs.generation(), state.epochs.encode()))
    }

    /// Rebuild the leader-epoch cache from the batch headers of the durable
    /// part of every segment (epochs.rs), limited to the log's range.
    async fn scan_epochs(&self) -> Result<LeaderEpochCache, LogError> {
        let (sources, log_start, log_end) = {
            let state = self.state.borrow();
            let sources: Vec<SegmentSource<I::File>> = state
                .segments
                .iter()
                .map(|segment| SegmentSource {
                    file: segment.file.clone(),
                    size: segment.durable_size,
                    batch_positions: segment
                        .index
                        .entries()
                        .iter()
                        .map(|&(_, position)| u64::from(position))
                        .collect(),
                })
                .collect();
            (sources, state.log_start, state.durable_end)
        };
        let mut cache = epochs::rebuild(&self.io, &sources)
            .await
            .map_err(|error| LogError::io(&self.dir, error))?;
        cache.truncate_to_end(log_end);
        cache.truncate_to_start(log_start);
        Ok(cache)
    }

    /// At open: load the leader-epoch checkpoint, keep what lies inside the
    /// recovered log, and rebuild it from the batch headers when it is
    /// missing, damaged or older than the last batch (`last_epoch`). A bad
    /// file is logged, never fatal; only reading the segments can fail.
    async fn load_epochs(&self, last_epoch: Option<LeaderEpoch>) -> Result<(), LogError> {
        let path = epochs::checkpoint_path(&self.dir);
        let (log_start, log_end) = {
            let state = self.state.borrow();
            (state.log_start, state.log_end)
        };
        let mut missing = false;
        let loaded = match self.io.read_file(&path) {
            Ok(bytes) => match epochs::decode(&bytes) {
                Ok(cache) => Some((cache, bytes)),
                Err(reason) => {
                    tracing::warn!(path = %path.display(), reason,
                        "damaged leader-epoch checkpoint; rebuilding it from the log");
                    None
                }
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                missing = true;
                if log_end > log_start {
                    tracing::info!(path = %path.display(),
                        "no leader-epoch checkpoint; building it from the log");
                }
                None
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error,
                    "unreadable leader-epoch checkpoint; rebuilding it from the log");
                None
            }
        };
        let (cache, on_disk) = match loaded {
            Some((mut cache, bytes)) => {
                // Entries past the recovered end were written ahead of data
                // that did not survive; entries before the start describe
                // deleted records.
                cache.truncate_to_end(log_end);
                cache.truncate_to_start(log_start);
                if last_epoch > cache.latest_epoch() {
                    // Only a broken durability rule (a bug) gets here.
                    tracing::error!(path = %path.display(),
                        last_batch_epoch = ?last_epoch, latest_entry = ?cache.latest(),
                        "leader-epoch checkpoint lacks the last batch's epoch; rebuilding it");
                    (self.scan_epochs().await?, None)
                } else {
                    (cache, Some(bytes))
                }
            }
            None => (self.scan_epochs().await?, None),
        };
        let encoded = cache.encode();
        let generation = cache.generation();
        // A missing file reads as an empty cache (it is rebuilt from the
        // batches, which hold no epoch either): a new log writes none until
        // its first entry, which its first flush persists before the data
        // (step 0 of `flush`). Creating a partition used to write it at
        // once: a file created, synced and renamed per partition, a third of
        // what creating a 10,000-partition topic cost.
        let implied = missing && cache.latest().is_none();
        let current = on_disk.as_deref() == Some(&encoded[..]) || implied;
        {
            let mut state = self.state.borrow_mut();
            state.epochs = cache;
            state.epochs_persisted = current.then_some(generation);
        }
        if !current && let Err(error) = self.persist_epochs((generation, encoded)).await {
            // The next flush writes it before any data it covers.
            tracing::warn!(path = %path.display(), %error,
                "could not write the leader-epoch checkpoint");
        }
        Ok(())
    }

    /// The partitionLeaderEpoch of the last batch of the last non-empty
    /// segment, read from the write buffer or the file.
    async fn read_last_epoch(self: &Rc<Self>) -> Result<Option<LeaderEpoch>, LogError> {
        let (base, generation, start, last) = {
            let state = self.state.borrow();
            let Some(segment) = state
                .segments
                .iter()
                .rev()
                .find(|segment| !segment.is_empty())
            else {
                return Ok(None);
            };
            let last = Offset(segment.next_offset.value() - 1);
            (
                segment.base,
                segment.generation,
                segment.index.lookup(segment.base, last).value(),
                last,
            )
        };
        let mut cursor = Cursor::new(self, base, generation, PAGE_SIZE);
        let mut position = start;
        let mut epoch = None;
        while let Some((run, at)) = cursor.batch_at(position).await? {
            let Ok(header) = BatchHeader::parse(&run[at..]) else {
                break;
            };
            epoch = Some(header.partition_leader_epoch());
            if header.last_offset() >= last {
                break;
            }
            position += header.total_size() as u64;
        }
        Ok(epoch)
    }
}

/// The follower's contiguity and epoch rules for `batches` (already
/// validated) about to be appended at `log_end` to a log whose last batch
/// has `last_epoch`.
fn check_replicated(
    from: Offset,
    batches: &[BatchHeader],
    log_end: Offset,
    last_epoch: Option<LeaderEpoch>,
) -> Result<(), ReplicatedAppendError> {
    if from != log_end {
        return Err(ReplicatedAppendError::NonContiguous {
            expected: log_end,
            got: from,
        });
    }
    let mut expected = log_end;
    let mut previous = last_epoch;
    for header in batches {
        // Past the expected offset: the leader's cleaner removed the
        // batches between (their offsets stay unused, as on the leader).
        if header.base_offset() < expected {
            return Err(ReplicatedAppendError::NonContiguous {
                expected,
                got: header.base_offset(),
            });
        }
        // A gap wider than a segment's 32-bit relative offsets is taken
        // too: the batch then starts a segment of its own (maybe_roll).
        let epoch = header.partition_leader_epoch();
        if let Some(previous) = previous
            && epoch < previous
        {
            return Err(ReplicatedAppendError::EpochRegression {
                previous,
                got: epoch,
            });
        }
        expected = header_base(header).plus(record_count(header));
        previous = Some(epoch);
    }
    Ok(())
}

/// Keep `Weak` in scope for the committer's queue type.
pub(crate) type LogRef<I> = Weak<LogInner<I>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::simple_batch;

    /// The header of a one-batch buffer with `count` records at `base`,
    /// stamped with `epoch`.
    fn header(base: i64, count: usize, epoch: i32) -> BatchHeader {
        let mut bytes = simple_batch(count, 4, TimestampMs(0)).to_vec();
        batch::patch_base_offset(&mut bytes, Offset(base));
        batch::patch_leader_epoch(&mut bytes, LeaderEpoch(epoch));
        BatchHeader::parse(&bytes).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn replicated_batches_continue_from_the_log_end_and_only_grow() {
        let batches = [header(10, 2, 1), header(12, 3, 1), header(15, 1, 2)];
        let at = Offset(10);
        assert!(check_replicated(at, &batches, at, Some(LeaderEpoch(1))).is_ok());
        assert!(check_replicated(at, &[], at, None).is_ok());
        // Read from elsewhere than the log end.
        match check_replicated(Offset(9), &batches, at, None) {
            Err(ReplicatedAppendError::NonContiguous { expected, got }) => {
                assert_eq!((expected, got), (at, Offset(9)));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Offsets the leader's cleaner removed: before the first batch and
        // between batches.
        let gaps = [header(11, 1, 1), header(13, 1, 1)];
        assert!(check_replicated(at, &gaps, at, None).is_ok());
        // Overlaps never.
        match check_replicated(at, &[header(9, 2, 1)], at, None) {
            Err(ReplicatedAppendError::NonContiguous { expected, got }) => {
                assert_eq!((expected, got), (at, Offset(9)));
            }
            other => panic!("unexpected {other:?}"),
        }
        // A gap wider than a segment's relative offsets hold is taken (the
        // batch starts a segment: maybe_roll).
        let far = 10 + i64::from(u32::MAX);
        assert!(check_replicated(at, &[header(far, 1, 1)], at, None).is_ok());
        let overlap = [header(10, 3, 1), header(12, 1, 1)];
        match check_replicated(at, &overlap, at, None) {
            Err(ReplicatedAppendError::NonContiguous { expected, got }) => {
                assert_eq!((expected, got), (Offset(13), Offset(12)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn replicated_epochs_must_not_decrease() {
        let batches = [header(0, 1, 3), header(1, 1, 2)];
        match check_replicated(Offset(0), &batches, Offset(0), None) {
            Err(ReplicatedAppendError::EpochRegression { previous, got }) => {
                assert_eq!((previous, got), (LeaderEpoch(3), LeaderEpoch(2)));
            }
            other => panic!("unexpected {other:?}"),
        }
        match check_replicated(
            Offset(5),
            &[header(5, 1, 4)],
            Offset(5),
            Some(LeaderEpoch(6)),
        ) {
            Err(ReplicatedAppendError::EpochRegression { previous, got }) => {
                assert_eq!((previous, got), (LeaderEpoch(6), LeaderEpoch(4)));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            check_replicated(
                Offset(5),
                &[header(5, 1, 6)],
                Offset(5),
                Some(LeaderEpoch(6))
            )
            .is_ok()
        );
    }
}
