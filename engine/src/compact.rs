//! Log compaction (Kafka's cleanup.policy=compact) of one partition log.
//!
//! [`Log::clean`] rewrites the log's *cleanable* segments so that, for every
//! key, only the record with the highest offset remains. Runs on the log's
//! shard (like every `Log` operation); one pass at a time per log.
//!
//! Cleanable range: the oldest finalized segments, never the active one,
//! stopping at the first segment that is not finalized, not trusted by the
//! durable checkpoint, or (min.compaction.lag.ms) holds a batch newer than
//! the lag. The latest offset of each key is computed over that range only:
//! a newer record in the active segment does not yet remove older ones
//! (conservative; the next pass after the roll does).
//!
//! Per record of an uncompressed, non-control, non-transactional batch:
//! - null key: kept (it cannot be compacted);
//! - an older offset than the key's latest: removed;
//! - the latest, with a value: kept;
//! - the latest, a tombstone (null value): kept until delete.retention.ms
//!   has passed since the batch's maxTimestamp (without one, its
//!   segment's last append: `BatchAge`), then removed (see
//!   docs/decisions/0004-compaction.md for why this clock), unless a batch
//!   kept whole holds a record of its key at a lower offset (below).
//!
//! Compressed and control batches are kept whole and their records do not
//! supersede anything (the pass does not recompress, so it cannot remove
//! some records of a compressed batch); so are transactional batches the
//! pass cannot classify (below). Transaction markers are kept until their
//! delete horizon (below).
//!
//! Tombstones and batches kept whole: a record kept whole outlives any later
//! record of its key, so a later tombstone of the key is all that hides it
//! from a consumer replaying the log. An expired tombstone therefore stays
//! while a data batch kept whole holds a record of its key at a lower offset
//! (`Pins`: the pass reads the keys of those batches, decompressing
//! compressed ones with the produce path's bounds; a batch whose records do
//! not read may hold any key, so every tombstone after it stays). Such a
//! tombstone records no expiry: it goes in the pass that compacts that
//! record (a transaction whose marker became cleanable), or never while the
//! record is in a compressed batch. Kafka decompresses and compacts every
//! record, so there the older value goes first and the tombstone goes at its
//! horizon; here the tombstone stays instead, and the deleted key stays
//! deleted either way.
//!
//! Transactions (KIP-98): the engine does not interpret markers; the caller
//! (the server's cleaner, which owns the partition's transaction state)
//! describes them in a [`TxnCleanInput`] given to [`Log::clean_transactions`]:
//! - `stable_bound` (the last stable offset): only segments whose offsets
//!   all lie below it are cleanable, so an open transaction's batches and
//!   everything after its first offset are never touched. Below the bound
//!   every transaction has its marker in the log (it is not open), so a
//!   transactional batch there is either aborted or committed;
//! - `aborted`: a transactional data batch of an aborted transaction
//!   (producer id matches, base offset within first..=marker offset) is
//!   removed whole, whatever its keys or compression, and supersedes
//!   nothing;
//! - any other transactional data batch there is committed and compacted by
//!   key like a plain batch.
//!
//! The pass checks the caller's list against the markers it reads in the
//! range (`classify`): a batch is removed only if no commit marker of its
//! producer follows it in the range, and compacted only if a commit marker
//! does; otherwise it is kept whole. A wrong or incomplete list therefore
//! keeps data rather than letting aborted records supersede committed ones.
//!
//! Without that input ([`Log::clean`]) transactional batches are kept whole
//! and supersede nothing, as before transactions existed (and hold back the
//! later tombstones of their keys, above).
//!
//! Markers (Kafka's rule, KIP-98): a control batch may go once no data of
//! its transaction remains below it and its delete horizon has passed. The
//! engine keeps no clock for that; the caller does
//! ([`Log::clean_transactions_with_markers`]):
//! - every pass reports in [`CleanSummary::empty_markers`] the markers of
//!   the range whose transaction has no data left once the pass is done
//!   (every transactional data batch of the marker's producer since its
//!   previous marker in the range is removed as aborted, or has every record
//!   superseded by a later one of its key). The caller starts the marker's
//!   horizon (delete.retention.ms) then;
//! - a pass given a marker as removable removes it only if the range holds
//!   no data batch of its transaction at all when the pass starts (what is
//!   on disk, not a prediction), and reports it in
//!   [`CleanSummary::markers_removed`] once the rewrite is durable.
//!
//! The range starts at the log's first segment, so a transaction's data
//! cannot lie before it; a producer's data between two of its markers is
//! the later marker's transaction (a marker is only removed when that is
//! empty, so removals never merge two transactions' data).
//!
//! A batch that loses records is rewritten with [`batch::retain_records`]
//! (same base offset, lastOffsetDelta, timestamps, producer fields; kept
//! records copied byte for byte; new count, length and CRC). A batch that
//! loses all of them is dropped. Offsets never change: the log gets gaps,
//! its start and end offsets stay where they were, and a segment keeps its
//! name and offset range even when its last batches (or all of them) go.
//!
//! Crash safety (docs/internals/storage-format.md, "Compaction"): the
//! cleaned segment is written to `<base>.cleaned.tmp` and fdatasynced; then,
//! under the log's flush lock, the segment's index files are removed and the
//! directory synced, the temporary file is renamed over `<base>.log` and the
//! directory synced again, and new index files are written. A crash leaves
//! either the old or the new file under the segment's name (rename is
//! atomic); a leftover `*.tmp` is deleted at open; a segment without index
//! files is rescanned. Only segments below the checkpoint's recovery base
//! are cleaned (the checkpoint is made durable first), and recovery accepts
//! offset gaps exactly there (recovery.rs).
//!
//! Reads in flight keep reading the file they started with: a replaced
//! segment gets a new generation and cursors of the old one use their open
//! handle (log.rs, `Cursor`).

use std::collections::{HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, Compression, codec};
use crate::constants::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX};
use crate::error::LogError;
use crate::io::{AlignedBuf, Io};
use crate::log::{Log, LogInner, LogState};
use crate::recovery::window_slice;
use crate::segment::buffer::{page_ceil, page_floor};
use crate::segment::{self, Segment};
use crate::types::Offset;

/// Kafka's ControlRecordType of an abort marker (the control record's key
/// is version i16, type i16).
const CONTROL_TYPE_ABORT: i16 = 0;
/// The ControlRecordType of a commit marker.
const CONTROL_TYPE_COMMIT: i16 = 1;

/// Kafka's delete.retention.ms default: one day.
pub const DELETE_RETENTION_MS_DEFAULT: i64 = 24 * 60 * 60 * 1000;

/// A cleaned segment goes to disk in writes of about this size, so a pass
/// holds one run in memory, not a whole segment.
const WRITE_RUN_BYTES: usize = 1 << 20;

/// The topic configs that drive a compaction pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanOptions {
    /// delete.retention.ms: how long a tombstone that is the latest record
    /// of its key stays readable (measured from its batch's maxTimestamp).
    pub delete_retention_ms: i64,
    /// min.compaction.lag.ms: a segment holding a batch newer than this is
    /// not cleaned yet (nor any segment after it).
    pub min_compaction_lag_ms: i64,
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            delete_retention_ms: DELETE_RETENTION_MS_DEFAULT,
            min_compaction_lag_ms: 0,
        }
    }
}

/// One aborted transaction, as the cleaner is told of it: the transactional
/// data batches of `producer_id` whose base offset lies in
/// `first_offset..=last_offset` (`last_offset` is the abort marker's) are
/// removed whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedRange {
    pub producer_id: i64,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

/// What the partition's transaction state says, for one pass (module docs).
///
/// The caller promises: every transaction with a data batch below
/// `stable_bound` has its marker in the log, and `aborted` lists every
/// aborted one among them that still has data in the log. A transactional
/// batch below the bound that no entry covers is treated as committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnCleanInput {
    /// The first offset that may not be cleaned (the last stable offset):
    /// a segment is cleanable only if all its offsets lie below it.
    pub stable_bound: Offset,
    pub aborted: Vec<AbortedRange>,
}

/// A marker a pass removed (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovedMarker {
    pub producer_id: i64,
    pub offset: Offset,
    /// `Some(true)` commit, `Some(false)` abort, `None` unreadable.
    pub commit: Option<bool>,
}

/// [`TxnCleanInput::aborted`] by producer, and the markers of the
/// cleanable range by producer, for lookups per batch.
struct TxnIndex {
    by_producer: HashMap<i64, Vec<(Offset, Offset)>>,
    /// Control batches of the cleanable range in offset order: (base
    /// offset, Some(commit) or None when the marker does not decode).
    markers: HashMap<i64, Vec<(Offset, Option<bool>)>>,
}

impl TxnIndex {
    fn new(aborted: &[AbortedRange]) -> TxnIndex {
        let mut by_producer: HashMap<i64, Vec<(Offset, Offset)>> = HashMap::new();
        for range in aborted {
            assert!(
                range.first_offset <= range.last_offset,
                "an aborted transaction starts before its marker"
            );
            by_producer
                .entry(range.producer_id)
                .or_default()
                .push((range.first_offset, range.last_offset));
        }
        TxnIndex {
            by_producer,
            markers: HashMap::new(),
        }
    }

    /// Note a control batch of the range (fed in offset order).
    fn note_marker(&mut self, bytes: &[u8], header: &BatchHeader) {
        let commit = marker_kind(bytes, header);
        self.markers
            .entry(header.producer_id())
            .or_default()
            .push((header.base_offset(), commit));
    }

    /// The first marker of the batch's producer after it within the range:
    /// `None` if there is none, `Some(None)` if it does not decode.
    fn marker_after(&self, header: &BatchHeader) -> Option<Option<bool>> {
        let markers = self.markers.get(&header.producer_id())?;
        let base = header.base_offset();
        let index = markers.partition_point(|&(offset, _)| offset <= base);
        markers.get(index).map(|&(_, commit)| commit)
    }

    fn covers(&self, header: &BatchHeader) -> bool {
        let base = header.base_offset();
        self.by_producer
            .get(&header.producer_id())
            .is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|&(first, last)| first <= base && base <= last)
            })
    }
}

/// Whether the control batch is a commit (`Some(true)`) or an abort
/// marker; `None` when its first record is not a marker.
fn marker_kind(bytes: &[u8], header: &BatchHeader) -> Option<bool> {
    batch::records(bytes, header)
        .next()
        .and_then(Result::ok)
        .and_then(|record| record.key)
        .filter(|key| key.len() >= 4)
        .and_then(|key| match i16::from_be_bytes([key[2], key[3]]) {
            CONTROL_TYPE_ABORT => Some(false),
            CONTROL_TYPE_COMMIT => Some(true),
            _ => None,
        })
}

/// A record's key and offset.
type KeyOffset = (Vec<u8>, Offset);

/// A transactional data batch of the range, kept aside until every marker
/// is known: its header, its keyed records, whether every record of it
/// has a key (and decoded), and whether its records read at all.
struct TxnBatch {
    header: BatchHeader,
    keys: Vec<KeyOffset>,
    all_keyed: bool,
    readable: bool,
}

/// The keys of one data batch's records, as [`batch_keys`] reads them.
struct BatchKeys {
    /// The keyed records, up to the first that does not read.
    keys: Vec<KeyOffset>,
    /// Every record read has a key.
    all_keyed: bool,
    /// Every record read (a compressed batch decompressed).
    readable: bool,
}

/// The keyed records of a data batch and their offsets. A compressed batch
/// is decompressed as it streams, with the bounds of the produce path's
/// key check (`codec::walk_compressed_records`: one record and the codec's
/// window in memory, at most `DECOMPRESSED_BYTES_MAX` decompressed); it
/// must hold its records as produced (compaction never rewrites one).
fn batch_keys(bytes: &[u8], header: &BatchHeader) -> BatchKeys {
    let mut keys = Vec::new();
    let mut all_keyed = true;
    let mut note = |key: Option<&[u8]>, offset_delta: i32| match key {
        Some(key) => keys.push((key.to_vec(), record_offset(header, offset_delta))),
        None => all_keyed = false,
    };
    let readable = if header.compression() == Compression::None {
        batch::records(bytes, header)
            .map(|record| record.map(|record| note(record.key, record.offset_delta)))
            .all(|read| read.is_ok())
    } else {
        codec::walk_compressed_records(bytes, header, |_, record| {
            note(record.key, record.offset_delta);
        })
        .is_ok()
    };
    BatchKeys {
        keys,
        all_keyed,
        readable,
    }
}

/// What the records a pass keeps whole (and that supersede nothing) hold
/// back. Such a record survives the pass even when a later record of its
/// key is the latest, so a later tombstone of that key is all that hides
/// it from a consumer replaying the log: the tombstone stays while the
/// record does, whatever delete.retention.ms says (module docs). Kafka
/// needs no such rule: it decompresses and compacts every record.
#[derive(Default)]
struct Pins {
    /// Per key, the lowest offset of a record of it kept whole. Keys only,
    /// like the pass's `latest` map.
    lowest: HashMap<Vec<u8>, Offset>,
    /// The lowest base offset of a batch kept whole whose records do not
    /// read (a damaged compressed batch): it may hold any key, so every
    /// tombstone after it stays.
    unreadable_from: Option<Offset>,
}

impl Pins {
    /// Note a batch kept whole: its keyed records, and whether they all
    /// read ([`batch_keys`]).
    fn note(&mut self, header: &BatchHeader, keys: &[KeyOffset], readable: bool) {
        if !readable {
            self.note_unreadable(header);
            return;
        }
        for (key, offset) in keys {
            match self.lowest.get_mut(key) {
                Some(lowest) => *lowest = (*lowest).min(*offset),
                None => {
                    self.lowest.insert(key.clone(), *offset);
                }
            }
        }
    }

    /// Note a batch kept whole whose records do not all read.
    fn note_unreadable(&mut self, header: &BatchHeader) {
        let base = header.base_offset();
        tracing::warn!(offset = %base, compression = %header.compression(),
            "compaction cannot read a batch's records; it is kept, and so is every tombstone after it");
        self.unreadable_from = Some(self.unreadable_from.map_or(base, |known| known.min(base)));
    }

    /// Whether a record kept whole that may have `key` lies below `offset`.
    fn hides(&self, key: &[u8], offset: Offset) -> bool {
        self.unreadable_from.is_some_and(|from| from < offset)
            || self.lowest.get(key).is_some_and(|&lowest| lowest < offset)
    }
}

/// A marker of the range and the data batches of its transaction there
/// (indexes into the pass's [`TxnBatch`] list).
struct MarkerTxn {
    offset: Offset,
    data: Vec<usize>,
}

/// How a pass treats one batch (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchKind {
    /// Compacted by key; its records supersede older ones.
    Compactable,
    /// Kept whole; supersedes nothing.
    Whole,
    /// A batch of an aborted transaction: removed whole; supersedes nothing.
    Aborted,
}

/// Bytes of the cleanable range (see the module docs), and how many of them
/// are dirty: in segments no pass has cleaned since the log was opened, or
/// whose kept tombstones have since expired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirtyStats {
    pub dirty_bytes: u64,
    pub cleanable_bytes: u64,
    /// The smallest max-timestamp (ms) of the dirty cleanable segments, if
    /// any has a timestamp: a bound on how long their records have waited
    /// (max.compaction.lag.ms; Kafka uses each segment's first batch
    /// timestamp, which segments do not keep here, so this is later by at
    /// most the segment's time span).
    pub oldest_dirty_timestamp_ms: Option<i64>,
}

impl DirtyStats {
    /// dirty / cleanable (Kafka's cleanable ratio), 0 when nothing is
    /// cleanable. Compare with min.cleanable.dirty.ratio.
    pub fn ratio(&self) -> f64 {
        if self.cleanable_bytes == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / self.cleanable_bytes as f64
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanSummary {
    /// Segments in the cleanable range.
    pub segments_examined: usize,
    /// Segments whose file was replaced.
    pub segments_rewritten: usize,
    /// Segments left alone because they changed during the pass (deleted by
    /// retention or DeleteRecords, truncated); the next pass looks again.
    pub segments_skipped: usize,
    /// Sizes of the rewritten segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub batches_removed: u64,
    /// Batches of aborted transactions removed (also in `batches_removed`,
    /// their records in `records_removed`).
    pub aborted_batches_removed: u64,
    /// Markers whose transaction has no data in the log once this pass is
    /// done (module docs), in offset order; only from a pass with
    /// transaction input.
    pub empty_markers: Vec<Offset>,
    /// Markers removed (also in `batches_removed`), durably.
    pub markers_removed: Vec<RemovedMarker>,
}

/// Path of the temporary file a cleaned segment is written to. The `.tmp`
/// suffix makes recovery delete it if a crash leaves it behind.
pub fn cleaned_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{}.cleaned.tmp", segment::file_stem(base)))
}

/// A segment of the cleanable range, as the pass saw it.
struct Target<F> {
    base: Offset,
    generation: u64,
    file: F,
    size: u64,
    /// `Segment::largest_timestamp_ms`: the age of its batches that carry
    /// no timestamp.
    largest_timestamp_ms: i64,
}

/// How many segments from the front are cleanable (module docs).
fn cleanable_count<F>(
    state: &LogState<F>,
    now_ms: i64,
    min_compaction_lag_ms: i64,
    stable_bound: Option<Offset>,
) -> usize {
    let count = state.segments.len();
    state
        .segments
        .iter()
        .take(count.saturating_sub(1))
        .take_while(|segment| {
            segment.finalized
                && segment.file.is_some()
                && segment.base < state.checkpoint.recovery_base
                && stable_bound.is_none_or(|bound| segment.next_offset <= bound)
                && (min_compaction_lag_ms <= 0
                    || segment.largest_timestamp_ms()
                        <= now_ms.saturating_sub(min_compaction_lag_ms))
        })
        .count()
}

/// How a pass treats this batch (module docs). `txns` is `None` for a
/// pass without transaction input.
///
/// Defence in depth for transactional batches: the caller's list decides,
/// and the range's own markers must not contradict it. A batch is removed
/// as aborted only if the list covers it and its producer's next marker in
/// the range (if any) is not a commit; it is compacted as committed only if
/// the list does not cover it and that next marker is a commit. Anything
/// else (marker beyond the range, contradiction) is kept whole, so an
/// incomplete aborted list cannot make aborted records supersede committed
/// ones.
fn classify(header: &BatchHeader, txns: Option<&TxnIndex>) -> BatchKind {
    if header.is_control() {
        return BatchKind::Whole;
    }
    if header.is_transactional() {
        let Some(index) = txns else {
            return BatchKind::Whole;
        };
        match (index.covers(header), index.marker_after(header)) {
            (true, Some(Some(true))) => return BatchKind::Whole,
            (true, _) => return BatchKind::Aborted,
            (false, Some(Some(true))) => {}
            (false, _) => return BatchKind::Whole,
        }
    }
    if header.compression() == Compression::None {
        BatchKind::Compactable
    } else {
        BatchKind::Whole
    }
}

impl<I: Io> Log<I> {
    /// The dirty and cleanable bytes of the log for a pass with
    /// `min_compaction_lag_ms`: cheap (no I/O), for deciding whether a pass
    /// is worth it (min.cleanable.dirty.ratio).
    pub fn dirty_stats(&self, min_compaction_lag_ms: i64) -> DirtyStats {
        self.dirty_stats_within(min_compaction_lag_ms, None)
    }

    /// [`Log::dirty_stats`] for a pass of [`Log::clean_transactions`] bounded
    /// by `stable_bound`.
    pub fn dirty_stats_below(
        &self,
        min_compaction_lag_ms: i64,
        stable_bound: Offset,
    ) -> DirtyStats {
        self.dirty_stats_within(min_compaction_lag_ms, Some(stable_bound))
    }

    fn dirty_stats_within(
        &self,
        min_compaction_lag_ms: i64,
        stable_bound: Option<Offset>,
    ) -> DirtyStats {
        let inner = &self.inner;
        let now = inner.io.now_ms();
        let state = inner.state.borrow();
        let count = cleanable_count(&state, now, min_compaction_lag_ms, stable_bound);
        let mut stats = DirtyStats::default();
        for segment in state.segments.iter().take(count) {
            stats.cleanable_bytes += segment.size;
            let tombstones_due = segment
                .tombstone_expiry_ms
                .is_some_and(|expiry| expiry <= now);
            if !segment.cleaned || tombstones_due {
                stats.dirty_bytes += segment.size;
                let timestamp = segment.max_timestamp.0;
                if timestamp >= 0 {
                    stats.oldest_dirty_timestamp_ms = Some(
                        stats
                            .oldest_dirty_timestamp_ms
                            .map_or(timestamp, |oldest| oldest.min(timestamp)),
                    );
                }
            }
        }
        stats
    }

    /// One compaction pass over the cleanable range (module docs).
    ///
    /// `Ok` means every segment reported rewritten was replaced durably
    /// (data, rename and directory entry synced; the index files may still
    /// be missing, which recovery repairs). On `Err` the pass stopped; the
    /// segments already replaced stay replaced, the one in progress is left
    /// as it was (its temporary file removed), and the log keeps working.
    /// Offsets, log start and log end never change.
    ///
    /// Transactional batches are kept whole (no transaction input); see
    /// [`Log::clean_transactions`].
    pub async fn clean(&self, options: &CleanOptions) -> Result<CleanSummary, LogError> {
        self.clean_pass(options, None, &HashSet::new(), async |_| false)
            .await
    }

    /// [`Log::clean`] with the partition's transaction state (module docs):
    /// nothing at or beyond `txns.stable_bound` is cleaned, aborted
    /// transactions' batches are removed, committed ones are compacted by
    /// key, control batches are kept. Same promises as [`Log::clean`].
    pub async fn clean_transactions(
        &self,
        options: &CleanOptions,
        txns: &TxnCleanInput,
    ) -> Result<CleanSummary, LogError> {
        self.clean_pass(options, Some(txns), &HashSet::new(), async |_| false)
            .await
    }

    /// [`Log::clean_transactions`] that also removes the markers in
    /// `removable` (their delete horizon passed, by the caller's clock)
    /// whose transaction has no data left in the range (module docs). Same
    /// promises as [`Log::clean`].
    ///
    /// `forget` is called once, when the pass knows which markers it will
    /// remove and before it rewrites any segment, with those markers in
    /// offset order; it answers whether the caller has forgotten them
    /// durably (an abort's entry in the caller's aborted-transaction index:
    /// a read_committed reader handed an entry whose marker is gone skips
    /// every later transactional batch of its producer). On `false` the
    /// pass removes no marker. Not called when there is none to remove.
    pub async fn clean_transactions_with_markers(
        &self,
        options: &CleanOptions,
        txns: &TxnCleanInput,
        removable: &HashSet<Offset>,
        forget: impl AsyncFnOnce(Vec<Offset>) -> bool,
    ) -> Result<CleanSummary, LogError> {
        self.clean_pass(options, Some(txns), removable, forget)
            .await
    }

    async fn clean_pass(
        &self,
        options: &CleanOptions,
        txns: Option<&TxnCleanInput>,
        removable: &HashSet<Offset>,
        forget: impl AsyncFnOnce(Vec<Offset>) -> bool,
    ) -> Result<CleanSummary, LogError> {
        let stable_bound = txns.map(|txns| txns.stable_bound);
        let mut index = txns.map(|txns| TxnIndex::new(&txns.aborted));
        let inner = &self.inner;
        // A close waits for the pass, which stops at its next segment
        // (dir_gate.rs): its temporary files are made by path.
        let _dir = inner.enter_dir()?;
        let _pass = inner.clean_lock.lock().await;
        inner.check_not_poisoned()?;
        let now = inner.io.now_ms();
        let mut summary = CleanSummary::default();
        let has_cleanable = {
            let state = inner.state.borrow();
            cleanable_count(&state, now, options.min_compaction_lag_ms, stable_bound) > 0
        };
        if !has_cleanable {
            return Ok(summary);
        }
        // Recovery tolerates gaps only below the checkpoint's recovery base,
        // and the in-memory checkpoint may be ahead of the file (its write
        // is best effort when segments are finalized): make it durable.
        let targets: Vec<Target<I::File>> = {
            let _guard = inner.flush_lock.lock().await;
            let checkpoint = inner.state.borrow().checkpoint;
            inner.write_checkpoint_strict(checkpoint).await?;
            let state = inner.state.borrow();
            let count = cleanable_count(&state, now, options.min_compaction_lag_ms, stable_bound);
            state
                .segments
                .iter()
                .take(count)
                .filter(|segment| segment.base < checkpoint.recovery_base)
                .filter_map(|segment| {
                    Some(Target {
                        base: segment.base,
                        generation: segment.generation,
                        file: segment.file.clone()?,
                        size: segment.size,
                        largest_timestamp_ms: segment.largest_timestamp_ms(),
                    })
                })
                .collect()
        };
        summary.segments_examined = targets.len();

        // 1. The latest offset of every key in the range, the keys of the
        // records kept whole (`Pins`), and the range's markers.
        // Transactional records wait until every marker is known.
        let mut latest: HashMap<Vec<u8>, Offset> = HashMap::new();
        let mut pins = Pins::default();
        let mut transactional: Vec<TxnBatch> = Vec::new();
        // Per producer, its data batches since its last marker in the range.
        let mut since_marker: HashMap<i64, Vec<usize>> = HashMap::new();
        let mut markers: Vec<MarkerTxn> = Vec::new();
        for target in &targets {
            inner.stop_if_closing()?;
            let mut reader = BatchReader::new(inner, target);
            while let Some((_, bytes)) = reader.next().await? {
                let header = reader.header(&bytes)?;
                let pending = match index.as_mut() {
                    Some(index) if header.is_control() => {
                        index.note_marker(&bytes, &header);
                        markers.push(MarkerTxn {
                            offset: header.base_offset(),
                            data: since_marker
                                .remove(&header.producer_id())
                                .unwrap_or_default(),
                        });
                        continue;
                    }
                    Some(_) => header.is_transactional(),
                    None => false,
                };
                if pending {
                    let read = batch_keys(&bytes, &header);
                    since_marker
                        .entry(header.producer_id())
                        .or_default()
                        .push(transactional.len());
                    transactional.push(TxnBatch {
                        all_keyed: read.all_keyed
                            && read.readable
                            && header.compression() == Compression::None,
                        readable: read.readable,
                        keys: read.keys,
                        header,
                    });
                    continue;
                }
                match classify(&header, index.as_ref()) {
                    BatchKind::Compactable => {
                        let read = batch_keys(&bytes, &header);
                        if !read.readable {
                            // `decide` keeps it whole: its unread records
                            // stay like those of a compressed batch.
                            pins.note_unreadable(&header);
                        }
                        latest.extend(read.keys);
                    }
                    // Control records are markers, not data of any key.
                    BatchKind::Whole if !header.is_control() => {
                        let read = batch_keys(&bytes, &header);
                        pins.note(&header, &read.keys, read.readable);
                    }
                    BatchKind::Whole | BatchKind::Aborted => {}
                }
            }
        }
        let index = index.as_ref();
        for batch in &transactional {
            match classify(&batch.header, index) {
                BatchKind::Compactable => {
                    if !batch.readable {
                        pins.note_unreadable(&batch.header);
                    }
                    for (key, offset) in &batch.keys {
                        let known = latest.entry(key.clone()).or_insert(*offset);
                        *known = (*known).max(*offset);
                    }
                }
                BatchKind::Whole => pins.note(&batch.header, &batch.keys, batch.readable),
                BatchKind::Aborted => {}
            }
        }
        // Markers: which transactions are empty after this pass, and which
        // removable markers have no data on disk at all.
        let mut removable_now: HashSet<Offset> = HashSet::new();
        for marker in &markers {
            if marker.data.is_empty() && removable.contains(&marker.offset) {
                removable_now.insert(marker.offset);
            }
            let emptied = marker.data.iter().all(|&position| {
                let batch = &transactional[position];
                match classify(&batch.header, index) {
                    BatchKind::Aborted => true,
                    BatchKind::Compactable => {
                        batch.all_keyed
                            && batch.keys.iter().all(|(key, offset)| {
                                latest.get(key).is_some_and(|known| known > offset)
                            })
                    }
                    BatchKind::Whole => false,
                }
            });
            if emptied {
                summary.empty_markers.push(marker.offset);
            }
        }
        // The caller forgets them before the first swap can make a removal
        // durable, so no crash or fetch in between pairs its entries with a
        // log that lost their markers. Forgetting early is harmless: these
        // transactions have no data on disk left to skip.
        if !removable_now.is_empty() {
            let mut chosen: Vec<Offset> = removable_now.iter().copied().collect();
            chosen.sort_unstable();
            if !forget(chosen).await {
                removable_now.clear();
            }
        }

        // 2. Rewrite each segment that loses something.
        for target in &targets {
            inner.stop_if_closing()?;
            self.clean_segment(
                target,
                &latest,
                &pins,
                index,
                &removable_now,
                options,
                now,
                &mut summary,
            )
            .await?;
        }
        tracing::debug!(dir = %inner.dir.display(), ?summary, "compaction pass done");
        Ok(summary)
    }

    #[allow(clippy::too_many_arguments)]
    async fn clean_segment(
        &self,
        target: &Target<I::File>,
        latest: &HashMap<Vec<u8>, Offset>,
        pins: &Pins,
        txns: Option<&TxnIndex>,
        removable: &HashSet<Offset>,
        options: &CleanOptions,
        now: i64,
        summary: &mut CleanSummary,
    ) -> Result<(), LogError> {
        let inner = &self.inner;
        let (interval, chunk_size) = {
            let state = inner.state.borrow();
            (
                u64::from(state.config.index_interval_bytes),
                state.config.chunk_size_bytes,
            )
        };
        // The rewritten segment's bookkeeping, built as batches are kept.
        let mut rebuilt: Segment<I::File> = Segment::new(target.base, chunk_size);
        let mut tombstone_expiry_ms: Option<i64> = None;
        let mut output: Option<CleanedFile<I>> = None;
        let mut removed = Removed::default();
        let mut reader = BatchReader::new(inner, target);
        let result: Result<(), LogError> = async {
            while let Some((position, bytes)) = reader.next().await? {
                let header = reader.header(&bytes)?;
                let decision = if header.is_control() && removable.contains(&header.base_offset()) {
                    removed.markers.push(RemovedMarker {
                        producer_id: header.producer_id(),
                        offset: header.base_offset(),
                        commit: marker_kind(&bytes, &header),
                    });
                    Decision {
                        kept: Kept::None,
                        records_removed: 0,
                        tombstones_removed: 0,
                        tombstone_expiry_ms: None,
                        aborted: false,
                    }
                } else {
                    let kind = classify(&header, txns);
                    let age = BatchAge {
                        batch_ms: header.max_timestamp().0,
                        segment_ms: target.largest_timestamp_ms,
                    };
                    decide(&bytes, &header, kind, latest, pins, options, age, now)
                };
                if decision.aborted {
                    removed.aborted_batches += 1;
                }
                if let Some(expiry) = decision.tombstone_expiry_ms {
                    tombstone_expiry_ms =
                        Some(tombstone_expiry_ms.map_or(expiry, |known| known.min(expiry)));
                }
                let kept: Option<Vec<u8>> = match decision.kept {
                    Kept::All => None,
                    Kept::Some(ranges) => {
                        let retained = batch::retain_records(&bytes, &ranges);
                        // Pair check: what goes to disk is what recovery and
                        // readers accept.
                        assert!(
                            batch::validate_compacted(&retained, BATCH_SIZE_MAX).is_ok(),
                            "compaction produced an invalid batch at offset {}",
                            header.base_offset()
                        );
                        Some(retained)
                    }
                    Kept::None => {
                        removed.batches += 1;
                        Some(Vec::new())
                    }
                };
                removed.records += decision.records_removed;
                removed.tombstones += decision.tombstones_removed;
                if kept.is_some() && output.is_none() {
                    // First change: start the new file with the unchanged
                    // prefix of the old one.
                    let mut file = CleanedFile::create(inner, target.base).await?;
                    file.copy_prefix(&target.file, position).await?;
                    output = Some(file);
                }
                let data: &[u8] = match (&kept, &output) {
                    (Some(retained), _) => retained,
                    (None, Some(_)) => &bytes,
                    (None, None) => {
                        // Unchanged so far: the old file's bytes stand.
                        rebuilt.note_batch(
                            rebuilt.size,
                            bytes.len() as u64,
                            header.base_offset(),
                            header.next_offset(),
                            header.max_timestamp(),
                            interval,
                        );
                        continue;
                    }
                };
                if data.is_empty() {
                    continue;
                }
                let at = rebuilt.size;
                rebuilt.note_batch(
                    at,
                    data.len() as u64,
                    header.base_offset(),
                    header.next_offset(),
                    header.max_timestamp(),
                    interval,
                );
                if let Some(file) = output.as_mut() {
                    file.push(data).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            if let Some(file) = output {
                file.discard();
            }
            return Err(error);
        }
        let Some(mut file) = output else {
            // Nothing to remove: the segment is clean as it stands.
            self.mark_clean(target, tombstone_expiry_ms);
            return Ok(());
        };
        let written = match file.finish().await {
            Ok(written) => written,
            Err(error) => {
                file.discard();
                return Err(error);
            }
        };
        assert_eq!(
            written, rebuilt.size,
            "the cleaned file holds what was noted"
        );
        assert!(written <= target.size, "compaction never grows a segment");
        let replaced = self
            .replace_segment(target, file, rebuilt, tombstone_expiry_ms)
            .await?;
        if replaced {
            summary.segments_rewritten += 1;
            summary.bytes_before += target.size;
            summary.bytes_after += written;
            summary.records_removed += removed.records;
            summary.tombstones_removed += removed.tombstones;
            summary.batches_removed += removed.batches;
            summary.aborted_batches_removed += removed.aborted_batches;
            summary.markers_removed.extend(removed.markers);
        } else {
            summary.segments_skipped += 1;
        }
        Ok(())
    }

    fn mark_clean(&self, target: &Target<I::File>, tombstone_expiry_ms: Option<i64>) {
        let mut state = self.inner.state.borrow_mut();
        if let Some(segment) = state
            .segments
            .iter_mut()
            .find(|segment| segment.base == target.base && segment.generation == target.generation)
        {
            segment.cleaned = true;
            segment.tombstone_expiry_ms = tombstone_expiry_ms;
        }
    }

    /// Swap the durable cleaned file in for the segment (module docs).
    /// `Ok(false)`: the segment changed meanwhile; nothing was replaced.
    async fn replace_segment(
        &self,
        target: &Target<I::File>,
        file: CleanedFile<I>,
        rebuilt: Segment<I::File>,
        tombstone_expiry_ms: Option<i64>,
    ) -> Result<bool, LogError> {
        let inner = &self.inner;
        let io = &inner.io;
        let dir = &inner.dir;
        let _guard = inner.flush_lock.lock().await;
        let unchanged = {
            let state = inner.state.borrow();
            state.poisoned.is_none()
                && state.segments.iter().any(|segment| {
                    segment.base == target.base
                        && segment.generation == target.generation
                        && segment.finalized
                        && segment.size == target.size
                })
        };
        if !unchanged {
            file.discard();
            return Ok(false);
        }
        // Old index files describe the old file: they go first, so no crash
        // can pair them with the new file.
        for path in [
            segment::index_path(dir, target.base),
            segment::time_index_path(dir, target.base),
        ] {
            if let Err(error) = io.remove_file(&path)
                && error.kind() != io::ErrorKind::NotFound
            {
                file.discard();
                return Err(LogError::io(path, error));
            }
        }
        if let Err(error) = io.sync_dir(dir).await {
            file.discard();
            return Err(LogError::io(dir, error));
        }
        let log_path = segment::log_path(dir, target.base);
        if let Err(error) = io.rename(&file.path, &log_path).await {
            file.discard();
            return Err(LogError::io(log_path, error));
        }
        // From here the new file is the live one, and after a crash either
        // file is a valid state of the segment: a failed directory sync
        // does not undo the swap.
        if let Err(error) = io.sync_dir(dir).await {
            tracing::warn!(dir = %dir.display(), %error,
                "directory sync after replacing a compacted segment failed; recovery will find the old or the new segment");
        }
        let (index, time_index) = {
            let mut state = inner.state.borrow_mut();
            let Some(segment) = state
                .segments
                .iter_mut()
                .find(|segment| segment.base == target.base)
            else {
                unreachable!("checked under the flush lock, which is still held");
            };
            assert!(
                rebuilt.next_offset <= segment.next_offset,
                "compaction keeps the segment's offset range"
            );
            segment.file = Some(file.file.clone());
            segment.size = rebuilt.size;
            segment.durable_size = rebuilt.size;
            segment.allocated = rebuilt.size;
            segment.entry_durable = true;
            segment.index = rebuilt.index;
            segment.time_index = rebuilt.time_index;
            segment.max_timestamp = rebuilt.max_timestamp;
            segment.max_timestamp_batch = rebuilt.max_timestamp_batch;
            segment.bytes_since_index_entry = rebuilt.bytes_since_index_entry;
            segment.generation += 1;
            segment.cleaned = true;
            segment.tombstone_expiry_ms = tombstone_expiry_ms;
            segment.durable_mark = segment.mark();
            (segment.index.encode_sealed(), segment.time_index.encode())
        };
        // Index files are an optimisation: recovery rebuilds missing ones.
        for (path, data) in [
            (segment::index_path(dir, target.base), index),
            (segment::time_index_path(dir, target.base), time_index),
        ] {
            if let Err(error) = io.write_file_atomic(&path, data).await {
                tracing::warn!(path = %path.display(), %error, "could not write a segment index");
            }
        }
        Ok(true)
    }
}

#[derive(Default)]
struct Removed {
    records: u64,
    tombstones: u64,
    batches: u64,
    aborted_batches: u64,
    markers: Vec<RemovedMarker>,
}

enum Kept {
    All,
    /// Byte ranges of the kept records (not all, not none).
    Some(Vec<Range<usize>>),
    None,
}

struct Decision {
    kept: Kept,
    records_removed: u64,
    tombstones_removed: u64,
    /// When the earliest kept tombstone of the batch expires.
    tombstone_expiry_ms: Option<i64>,
    /// The batch belongs to an aborted transaction.
    aborted: bool,
}

/// The time a batch's tombstones count delete.retention.ms from: its max
/// timestamp, or when it carries none (-1) its segment's
/// (`Segment::largest_timestamp_ms`), as Kafka falls back to the segment
/// file's time.
#[derive(Clone, Copy, Debug)]
struct BatchAge {
    batch_ms: i64,
    segment_ms: i64,
}

impl BatchAge {
    fn ms(self) -> i64 {
        if self.batch_ms >= 0 {
            self.batch_ms
        } else {
            self.segment_ms
        }
    }
}

/// Which records of one batch survive (module docs).
#[allow(clippy::too_many_arguments)]
fn decide(
    bytes: &[u8],
    header: &BatchHeader,
    kind: BatchKind,
    latest: &HashMap<Vec<u8>, Offset>,
    pins: &Pins,
    options: &CleanOptions,
    age: BatchAge,
    now: i64,
) -> Decision {
    let keep_all = Decision {
        kept: Kept::All,
        records_removed: 0,
        tombstones_removed: 0,
        tombstone_expiry_ms: None,
        aborted: false,
    };
    match kind {
        BatchKind::Whole => return keep_all,
        BatchKind::Aborted => {
            return Decision {
                kept: Kept::None,
                records_removed: u64::try_from(header.records_count()).unwrap_or(0),
                tombstones_removed: 0,
                tombstone_expiry_ms: None,
                aborted: true,
            };
        }
        BatchKind::Compactable => {}
    }
    let expiry_ms = age.ms().saturating_add(options.delete_retention_ms);
    let tombstones_expired = expiry_ms <= now;
    let mut ranges = Vec::new();
    let mut total = 0u64;
    let mut records_removed = 0u64;
    let mut tombstones_removed = 0u64;
    let mut tombstone_expiry_ms = None;
    let mut walk = batch::records(bytes, header);
    loop {
        let start = walk.position();
        let Some(record) = walk.next() else { break };
        // A batch whose records do not decode stays as it is.
        let Ok(record) = record else { return keep_all };
        let end = walk.position();
        total += 1;
        let keep = match record.key {
            None => true,
            Some(key) => {
                let offset = record_offset(header, record.offset_delta);
                let is_latest = latest.get(key).is_none_or(|&known| known == offset);
                if !is_latest {
                    false
                } else if record.value.is_some() {
                    true
                } else if !tombstones_expired {
                    tombstone_expiry_ms = Some(expiry_ms);
                    true
                } else if pins.hides(key, offset) {
                    // An older record of the key is kept whole: removing
                    // the tombstone would bring the deleted key back. It
                    // waits for that record to be compacted (a pass that
                    // reads newly cleanable data), not for a clock, so it
                    // records no expiry: one would make its segment dirty
                    // for ever and the cleaner repeat passes that change
                    // nothing.
                    true
                } else {
                    tombstones_removed += 1;
                    false
                }
            }
        };
        if keep {
            ranges.push(start..end);
        } else {
            records_removed += 1;
        }
    }
    let kept = if records_removed == 0 {
        Kept::All
    } else if ranges.is_empty() {
        Kept::None
    } else {
        Kept::Some(ranges)
    };
    debug_assert!(total >= records_removed);
    Decision {
        kept,
        records_removed,
        tombstones_removed,
        tombstone_expiry_ms,
        aborted: false,
    }
}

fn record_offset(header: &BatchHeader, offset_delta: i32) -> Offset {
    Offset(
        header
            .base_offset()
            .value()
            .saturating_add(i64::from(offset_delta)),
    )
}

/// Walks the batches of a finalized segment file through read windows.
struct BatchReader<'a, I: Io> {
    inner: &'a LogInner<I>,
    base: Offset,
    file: &'a I::File,
    size: u64,
    position: u64,
    window: Option<(u64, Bytes)>,
}

impl<'a, I: Io> BatchReader<'a, I> {
    fn new(inner: &'a LogInner<I>, target: &'a Target<I::File>) -> Self {
        BatchReader {
            inner,
            base: target.base,
            file: &target.file,
            size: target.size,
            position: 0,
            window: None,
        }
    }

    /// The next batch and its position; `None` at the end of the segment.
    async fn next(&mut self) -> Result<Option<(u64, Bytes)>, LogError> {
        if self.position == self.size {
            return Ok(None);
        }
        let position = self.position;
        let header = self.slice(position, BATCH_HEADER_SIZE).await?;
        let size = self.header(&header)?.total_size();
        let bytes = self.slice(position, size).await?;
        self.position += size as u64;
        Ok(Some((position, bytes)))
    }

    async fn slice(&mut self, position: u64, length: usize) -> Result<Bytes, LogError> {
        let path = segment::log_path(&self.inner.dir, self.base);
        match window_slice(
            &self.inner.io,
            self.file,
            self.size,
            &mut self.window,
            position,
            length,
        )
        .await
        {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(self.corrupt(format!(
                "segment {} ends inside the batch at byte {position}",
                self.base
            ))),
            Err(error) => Err(LogError::io(path, error)),
        }
    }

    fn header(&self, bytes: &[u8]) -> Result<BatchHeader, LogError> {
        BatchHeader::parse(bytes).map_err(|error| {
            self.corrupt(format!(
                "segment {} holds an unreadable batch at byte {}: {error}",
                self.base, self.position
            ))
        })
    }

    fn corrupt(&self, reason: String) -> LogError {
        LogError::Corrupt {
            dir: self.inner.dir.clone(),
            reason,
        }
    }
}

/// The temporary file a cleaned segment is written to, in page-aligned runs.
struct CleanedFile<I: Io> {
    io: I,
    path: PathBuf,
    file: I::File,
    /// Bytes not yet written, starting at file position `written`.
    staged: Vec<u8>,
    written: u64,
}

impl<I: Io> CleanedFile<I> {
    async fn create(inner: &LogInner<I>, base: Offset) -> Result<CleanedFile<I>, LogError> {
        let path = cleaned_path(&inner.dir, base);
        // A leftover of a failed pass (not of a crash: recovery removes
        // those) must not contribute stale bytes.
        match inner.io.remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(LogError::io(path, error)),
        }
        let file = inner
            .io
            .open(&path, true)
            .await
            .map_err(|error| LogError::io(&path, error))?;
        Ok(CleanedFile {
            io: inner.io.clone(),
            path,
            file,
            staged: Vec::new(),
            written: 0,
        })
    }

    /// Copy the first `length` bytes of `source` (the old segment file).
    async fn copy_prefix(&mut self, source: &I::File, length: u64) -> Result<(), LogError> {
        let mut position = 0u64;
        while position < length {
            let run = (length - position).min(WRITE_RUN_BYTES as u64);
            let bytes = self
                .io
                .read_at(source, position, page_ceil(run) as usize)
                .await
                .map_err(|error| LogError::io(&self.path, error))?;
            let available = (run as usize).min(bytes.len());
            if available == 0 {
                return Err(LogError::io(
                    &self.path,
                    io::Error::from(io::ErrorKind::UnexpectedEof),
                ));
            }
            self.push(&bytes[..available]).await?;
            position += available as u64;
        }
        Ok(())
    }

    async fn push(&mut self, data: &[u8]) -> Result<(), LogError> {
        self.staged.extend_from_slice(data);
        if self.staged.len() >= WRITE_RUN_BYTES {
            let full = page_floor(self.staged.len() as u64) as usize;
            self.write_run(full, full).await?;
        }
        Ok(())
    }

    /// Write `staged[..length]` padded with zeros to `padded` bytes.
    async fn write_run(&mut self, length: usize, padded: usize) -> Result<(), LogError> {
        let mut buffer = AlignedBuf::with_capacity(padded);
        buffer.extend_from_slice(&self.staged[..length]);
        buffer.extend_from_slice(&vec![0u8; padded - length]);
        self.io
            .write_at(&self.file, self.written, buffer.into_bytes())
            .await
            .map_err(|error| LogError::io(&self.path, error))?;
        self.staged.drain(..length);
        self.written += length as u64;
        Ok(())
    }

    /// Write the rest, cut the file to its size and make it durable.
    /// Returns its size.
    async fn finish(&mut self) -> Result<u64, LogError> {
        let length = self.staged.len();
        if length > 0 {
            let padded = page_ceil(length as u64) as usize;
            self.write_run(length, padded).await?;
        }
        let size = self.written;
        self.io
            .set_len(&self.file, size)
            .await
            .map_err(|error| LogError::io(&self.path, error))?;
        self.io
            .sync_data(&self.file)
            .await
            .map_err(|error| LogError::io(&self.path, error))?;
        Ok(size)
    }

    /// Forget the file (a failed or abandoned pass).
    fn discard(self) {
        if let Err(error) = self.io.remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "could not remove a compaction temporary file");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use super::*;
    use crate::batch::BatchBuilder;
    use crate::commit::Committer;
    use crate::config::LogConfig;
    use crate::io::sim::SimIo;
    use crate::log::ReadLimits;
    use crate::testing::block_on;
    use crate::types::{LeaderEpoch, TimestampMs};

    fn data(producer_id: i64, key: &str) -> Bytes {
        BatchBuilder::new()
            .producer(producer_id, 0, 0)
            .transactional(true)
            .record(Some(key.as_bytes()), Some(&b"value"[..]), TimestampMs(0))
            .build()
    }

    fn plain(key: &str) -> Bytes {
        BatchBuilder::new()
            .record(Some(key.as_bytes()), Some(&[b'f'; 200][..]), TimestampMs(0))
            .build()
    }

    /// A transaction marker as the server writes it.
    fn marker(producer_id: i64, commit: bool) -> Bytes {
        let kind = if commit {
            CONTROL_TYPE_COMMIT
        } else {
            CONTROL_TYPE_ABORT
        };
        let mut key = [0u8; 4];
        key[2..].copy_from_slice(&kind.to_be_bytes());
        let built = BatchBuilder::new()
            .producer(producer_id, 0, -1)
            .transactional(true)
            .record(Some(&key[..]), Some(&[0u8; 6][..]), TimestampMs(0))
            .build();
        let mut bytes = built.to_vec();
        let at = batch::layout::ATTRIBUTES_AT;
        let attributes = i16::from_be_bytes([bytes[at], bytes[at + 1]]) | 0x20;
        bytes[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[batch::layout::CRC_COVERED_FROM..]);
        bytes[batch::layout::CRC_AT..batch::layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(bytes)
    }

    fn control_offsets(log: &Log<SimIo>) -> Vec<Offset> {
        let limits = ReadLimits {
            max_bytes: 1 << 20,
            min_one_batch: true,
            max_offset: log.log_end_offset(),
        };
        let mut found = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let result = block_on(log.read(offset, limits)).unwrap();
            if result.records.is_empty() {
                break;
            }
            for run in &result.records {
                for range in batch::split_batches(run).unwrap() {
                    let header = BatchHeader::parse(&run[range]).unwrap();
                    if header.is_control() {
                        found.push(header.base_offset());
                    }
                }
            }
            offset = result.next_offset;
        }
        found
    }

    #[test]
    fn markers_go_once_their_transaction_is_empty_and_they_are_removable() {
        let io = SimIo::new(41);
        let committer = Committer::new(io.clone());
        let config = LogConfig {
            segment_bytes: 1024,
            preallocate_step_bytes: 16 << 10,
            chunk_size_bytes: 16 << 10,
            retention_ms: None,
            ..LogConfig::default()
        };
        let log = block_on(Log::open(io, Path::new("/data/t-0"), config, &committer)).unwrap();
        let append = |records: Bytes| log.append(&records, LeaderEpoch(0)).unwrap().base_offset;
        // Producer 1 aborts, 2 commits, 3 commits a key written again later.
        let aborted_first = append(data(1, "a"));
        append(data(2, "b"));
        append(data(3, "c"));
        let abort = append(marker(1, false));
        let kept = append(marker(2, true));
        let superseded = append(marker(3, true));
        append(plain("c"));
        for index in 0..12 {
            append(plain(&format!("filler-{}", index % 3)));
        }
        block_on(committer.flush_round());
        assert!(log.segment_count() > 2);
        let input = TxnCleanInput {
            stable_bound: log.log_end_offset(),
            aborted: vec![AbortedRange {
                producer_id: 1,
                first_offset: aborted_first,
                last_offset: abort,
            }],
        };
        let options = CleanOptions {
            delete_retention_ms: 0,
            min_compaction_lag_ms: 0,
        };
        // Nothing removable yet: the pass reports which transactions it
        // leaves without data.
        let removable = HashSet::from([abort, kept, superseded]);
        let never = async |_: Vec<Offset>| -> bool { unreachable!("nothing is removable") };
        let summary =
            block_on(log.clean_transactions_with_markers(&options, &input, &HashSet::new(), never))
                .unwrap();
        assert_eq!(summary.empty_markers, vec![abort, superseded]);
        assert!(summary.markers_removed.is_empty());
        assert_eq!(control_offsets(&log), vec![abort, kept, superseded]);
        // The caller refuses to forget them: every marker stays.
        let summary = block_on(log.clean_transactions_with_markers(
            &options,
            &input,
            &removable,
            async |chosen| {
                assert_eq!(chosen, vec![abort, superseded]);
                false
            },
        ))
        .unwrap();
        assert!(summary.markers_removed.is_empty());
        assert_eq!(control_offsets(&log), vec![abort, kept, superseded]);
        // A marker whose data is still on disk stays even if given; the
        // others are offered to the caller before any segment changes.
        let offered = std::cell::RefCell::new(Vec::new());
        let summary = block_on(log.clean_transactions_with_markers(
            &options,
            &input,
            &removable,
            async |chosen| {
                assert_eq!(control_offsets(&log), vec![abort, kept, superseded]);
                *offered.borrow_mut() = chosen;
                true
            },
        ))
        .unwrap();
        assert_eq!(*offered.borrow(), vec![abort, superseded]);
        assert_eq!(
            summary.markers_removed,
            vec![
                RemovedMarker {
                    producer_id: 1,
                    offset: abort,
                    commit: Some(false),
                },
                RemovedMarker {
                    producer_id: 3,
                    offset: superseded,
                    commit: Some(true),
                },
            ]
        );
        assert_eq!(control_offsets(&log), vec![kept]);
        assert_eq!(log.log_end_offset(), Offset(superseded.value() + 14));
    }
}
