//! Transaction state of one partition (the data path of issue 12): which
//! producers have a transaction open here and from which offset, which
//! transactions were aborted (for read_committed fetches), and the last
//! stable offset (LSO) that bounds read_committed reads.
//!
//! Lives in [`PartitionReplica::txns`] on the partition's owning shard:
//! single-threaded, no locks. It is fed in append order by every path that
//! appends to the log:
//! - a leader's appends, all made through `PartitionReplica::append`
//!   ([`observe_leader_append`], synchronously with the append): the
//!   produce path's transactional batches, [`write_txn_marker`]'s control
//!   batches, the group coordinator's transactional offset commits;
//! - a follower's replicated appends ([`observe_replicated`]), so a
//!   follower that becomes leader already holds the same state;
//! - at open, the newest trustworthy snapshot, the segments' aborted-
//!   transaction indexes and a scan of the log after the snapshot
//!   ([`TxnState::open_replay`], in the same read of the log as the
//!   producer table's, tail_replay.rs; the whole log when there is no
//!   usable snapshot).
//!
//! Rules (Kafka's ProducerStateManager):
//! - a transactional data batch opens a transaction for its producer unless
//!   one is open; the transaction's first offset is that batch's base
//!   offset;
//! - a control batch ends the producer's open transaction (a marker for a
//!   producer without one is written and changes nothing here). An abort
//!   records (producer, first offset, marker offset) in the aborted list;
//! - the LSO is the smallest of the high watermark, the first offset of
//!   every open transaction, and the first offset of every ended
//!   transaction whose marker the high watermark does not cover yet (Kafka's
//!   "unreplicated" transactions: until the marker is committed, a new
//!   leader might not have it, so the transaction is not stable).
//!
//! Truncation (a follower cutting a divergent tail, or the engine rolling
//! back an unflushed tail): [`TxnState::reconcile`] with the new log end
//! forgets what lies at or beyond it and reopens a transaction whose
//! marker was cut but whose first batch was not. Truncation never goes
//! below the high watermark, so the ended transactions kept for this are
//! those not yet stable.
//!
//! Retention: aborted entries whose marker lies below the log start are
//! dropped ([`TxnState::drop_aborted_below`]); the engine deletes a
//! segment's index file with the segment.
//!
//! Compaction (cleaner.rs): markers whose transaction has no data left are
//! remembered with the time the cleaner first saw that
//! ([`TxnState::note_empty_markers`]); once delete.retention.ms has passed
//! they are given to the next pass as removable ([`TxnState::markers_due`]),
//! and a removed abort marker's entry leaves the aborted list
//! ([`TxnState::marker_removed`]). The clock is in memory: a restart starts
//! it again, which only keeps markers longer.
//!
//! Persistence (txn_index.rs for the files and their invariants): the
//! aborted list stays whole in memory (24 bytes per aborted transaction
//! still in the log; fetches read it as before) and is also kept in one
//! `.txnindex` file per segment. Every shard cleaner interval,
//! [`persist`] captures the state (without the aborted list) at the log
//! end, and on a later interval, once the log is durable up to there,
//! rewrites the index files whose entries changed and then writes the
//! capture as `<offset>.txnsnapshot`. A clean stop does the same at the
//! flushed log end ([`save_snapshot`]). An open reads the newest snapshot
//! it can trust and the index files it vouches for, then scans only the
//! log after it. A truncation deletes the snapshots at or above the cut
//! ([`prune_truncated`], run by the append paths right after the state is
//! reconciled, before the regrown tail can be flushed).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use sluice_engine::batch::{self, BatchBuilder, BatchHeader, Compression};
use sluice_engine::io::Io;
use sluice_engine::{LeaderEpoch, Log, LogError, Offset, TimestampMs, segment};

use crate::shard::partition::CommitWaitError;
use crate::shard::producer_state::{ProducerId, ProducerStateTable};
use crate::shard::tail_replay::{TailReplay, replay_tail};
use crate::shard::txn_index::{self, TxnSnapshot};
use crate::shard::{PartitionReplica, ReplicaAppendError, Shard, TopicPartition};

/// How long a marker waits for the in-sync replicas (Kafka's coordinator
/// uses request.timeout.ms, 30 s by default).
pub const MARKER_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The control record type of an abort marker (Kafka's ControlRecordType).
pub const CONTROL_TYPE_ABORT: i16 = 0;
/// The control record type of a commit marker.
pub const CONTROL_TYPE_COMMIT: i16 = 1;

/// The attribute bit of a control batch.
const CONTROL_ATTRIBUTE: i16 = 0x20;

/// An aborted transaction: read_committed consumers skip this producer's
/// transactional records from `first_offset` up to its abort marker at
/// `last_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: ProducerId,
    pub first_offset: Offset,
    pub last_offset: Offset,
}

/// A transaction whose marker is in the log but not yet known committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndedTxn {
    pub producer_id: ProducerId,
    pub first_offset: Offset,
    pub marker_offset: Offset,
}

/// Bookkeeping of the state's files (txn_index.rs); no meaning for reads.
#[derive(Clone, Debug, Default)]
struct Storage {
    /// partitionLeaderEpoch of the last batch fed (`None`: unknown, after
    /// a truncation until the next batch).
    last_epoch: Option<LeaderEpoch>,
    /// Offsets (abort markers added or removed, truncation cuts) whose
    /// segment's index file is stale.
    dirty: BTreeSet<Offset>,
    /// The lowest log end a truncation left since the snapshot files were
    /// last pruned for it.
    truncated_to: Option<Offset>,
    /// Bumped by every truncation: a capture older than one is dropped.
    truncations: u64,
    /// Snapshot files on disk, by offset.
    snapshots: BTreeSet<Offset>,
    /// The state captured for the next snapshot (and the truncation count
    /// then), waiting for the log to be durable up to its end.
    pending: Option<(TxnSnapshot, u64)>,
    /// Markers the cleaner found without data, and when it first did.
    empty_markers: BTreeMap<Offset, i64>,
}

/// The transaction state of one partition. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct TxnState {
    /// Open transactions: producer id -> the offset of its first batch.
    open: BTreeMap<ProducerId, Offset>,
    /// Ended transactions whose marker may not be committed yet, in marker
    /// order (dropped once the high watermark passes their marker).
    unstable: VecDeque<EndedTxn>,
    /// Aborted transactions in marker order.
    aborted: VecDeque<AbortedTxn>,
    /// One past the last offset fed (0 when nothing was).
    end_offset: Offset,
    storage: Storage,
}

impl TxnState {
    pub fn new() -> TxnState {
        TxnState::default()
    }

    /// The first offset of `producer_id`'s open transaction, if any.
    pub fn open_transaction(&self, producer_id: ProducerId) -> Option<Offset> {
        self.open.get(&producer_id).copied()
    }

    /// One past the last offset fed.
    pub fn end_offset(&self) -> Offset {
        self.end_offset
    }

    /// Number of open transactions.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The aborted transactions known, oldest marker first.
    pub fn aborted(&self) -> impl Iterator<Item = &AbortedTxn> {
        self.aborted.iter()
    }

    /// Forget everything at or beyond `log_end` (the log lost it: a
    /// truncation or a rolled-back append). A transaction whose marker is
    /// lost but whose first batch is not is open again. Cheap when nothing
    /// was lost.
    pub fn reconcile(&mut self, log_end: Offset) {
        if log_end >= self.end_offset {
            return;
        }
        self.open.retain(|_, first| *first < log_end);
        while let Some(ended) = self.unstable.back().copied() {
            if ended.marker_offset < log_end {
                break;
            }
            self.unstable.pop_back();
            if ended.first_offset < log_end {
                self.open.insert(ended.producer_id, ended.first_offset);
            }
        }
        while self
            .aborted
            .back()
            .is_some_and(|aborted| aborted.last_offset >= log_end)
        {
            self.aborted.pop_back();
        }
        self.end_offset = log_end;
        let storage = &mut self.storage;
        storage.last_epoch = None;
        storage.dirty.insert(log_end);
        storage.truncated_to = Some(storage.truncated_to.map_or(log_end, |cut| cut.min(log_end)));
        storage.truncations += 1;
        storage.pending = None;
        storage.empty_markers.split_off(&log_end);
        tracing::debug!(%log_end, open = self.open.len(), "transaction state reconciled after the log end moved back");
    }

    /// A transactional data batch of `producer_id` at
    /// `base_offset..=last_offset`: opens its transaction unless one is open.
    pub fn record_data(
        &mut self,
        producer_id: ProducerId,
        base_offset: Offset,
        last_offset: Offset,
    ) {
        assert!(base_offset <= last_offset);
        assert!(
            base_offset >= self.end_offset,
            "transactional batch at {base_offset} fed below {} (reconcile first)",
            self.end_offset
        );
        self.open.entry(producer_id).or_insert(base_offset);
        self.end_offset = last_offset.plus(1);
    }

    /// A marker of `producer_id` at `marker_offset`: ends its open
    /// transaction. Returns the ended transaction's first offset (`None`
    /// when it had none open: nothing changes then).
    pub fn record_marker(
        &mut self,
        producer_id: ProducerId,
        marker_offset: Offset,
        commit: bool,
    ) -> Option<Offset> {
        assert!(
            marker_offset >= self.end_offset,
            "marker at {marker_offset} fed below {} (reconcile first)",
            self.end_offset
        );
        self.end_offset = marker_offset.plus(1);
        let first_offset = self.open.remove(&producer_id)?;
        self.unstable.push_back(EndedTxn {
            producer_id,
            first_offset,
            marker_offset,
        });
        if !commit {
            self.aborted.push_back(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: marker_offset,
            });
            self.storage.dirty.insert(marker_offset);
        }
        Some(first_offset)
    }

    /// The last stable offset under `high_watermark` of a log starting at
    /// `log_start` (see the module docs): never below the log start (as
    /// Kafka raises its first unstable offset), else a transaction whose
    /// first batch retention or DeleteRecords removed made read_committed
    /// LATEST answer an offset every fetch refuses as out of range.
    /// Forgets the ended transactions the high watermark covers.
    pub fn last_stable_offset(&mut self, high_watermark: Offset, log_start: Offset) -> Offset {
        self.forget_stable(high_watermark);
        let open = self.open.values().copied();
        let unstable = self.unstable.iter().map(|ended| ended.first_offset);
        let first_unstable = open
            .chain(unstable)
            .fold(high_watermark, |lowest, first| lowest.min(first));
        first_unstable.max(log_start.min(high_watermark))
    }

    /// Forget the ended transactions whose marker `high_watermark` covers:
    /// they hold no offset unstable any more (Kafka's
    /// removeUnreplicatedTransactions, run as its high watermark moves).
    pub fn forget_stable(&mut self, high_watermark: Offset) {
        while self
            .unstable
            .front()
            .is_some_and(|ended| ended.marker_offset < high_watermark)
        {
            self.unstable.pop_front();
        }
    }

    /// How many ended transactions are kept until the high watermark
    /// covers their markers.
    #[cfg(test)]
    pub fn ended_unstable(&self) -> usize {
        self.unstable.len()
    }

    /// The aborted transactions overlapping `from..upper` (their marker at
    /// or after `from`, their first offset before `upper`), as Kafka's
    /// collectAbortedTxns: what a read_committed fetch of that range needs.
    pub fn aborted_between(&self, from: Offset, upper: Offset) -> Vec<AbortedTxn> {
        let start = self
            .aborted
            .partition_point(|aborted| aborted.last_offset < from);
        self.aborted
            .range(start..)
            .filter(|aborted| aborted.first_offset < upper)
            .copied()
            .collect()
    }

    /// Retention: forget aborted transactions whose marker lies below
    /// `log_start` (no fetch can overlap them). Their segment's index file
    /// is rewritten with the next snapshot, which counts without them: an
    /// index still holding them (DeleteRecords inside a segment) would
    /// make every later snapshot fail its check at open.
    pub fn drop_aborted_below(&mut self, log_start: Offset) {
        while let Some(aborted) = self
            .aborted
            .front()
            .filter(|aborted| aborted.last_offset < log_start)
        {
            self.storage.dirty.insert(aborted.last_offset);
            self.aborted.pop_front();
        }
    }

    /// Feed one stored batch (its offsets are the log's): a transactional
    /// data batch opens, a control batch ends. Other batches only move the
    /// end. Used by the rebuild at open and by followers.
    pub fn observe_batch(&mut self, stored: &[u8], header: &BatchHeader) {
        let base_offset = header.base_offset();
        if base_offset < self.end_offset {
            return;
        }
        self.storage.last_epoch = Some(header.partition_leader_epoch());
        if !header.is_transactional() || !header.has_producer_id() {
            self.end_offset = header.last_offset().plus(1);
            return;
        }
        let producer_id = ProducerId(header.producer_id());
        if header.is_control() {
            match marker_of(stored, header) {
                Some(commit) => {
                    let _ = self.record_marker(producer_id, base_offset, commit);
                }
                None => {
                    tracing::warn!(offset = %base_offset, "a control batch without a readable marker record; ignored");
                    self.end_offset = header.last_offset().plus(1);
                }
            }
        } else {
            self.record_data(producer_id, base_offset, header.last_offset());
        }
    }

    /// Feed every batch of a run of stored batches.
    pub fn observe_run(&mut self, run: &[u8]) {
        let Ok(ranges) = batch::split_batches(run) else {
            return;
        };
        for range in ranges {
            let stored = &run[range];
            if let Ok(header) = BatchHeader::parse(stored) {
                self.observe_batch(stored, &header);
            }
        }
    }

    /// Rebuild the state from the whole log (see the module docs).
    pub async fn rebuild<I: Io>(log: &Log<I>) -> Result<TxnState, LogError> {
        let mut replay = TxnReplay {
            state: TxnState::new(),
            source: "none",
            from: log.log_start_offset(),
            scanned_bytes: 0,
            failed: None,
            producers: None,
        };
        replay_tail(log, &mut [&mut replay]).await?;
        let mut state = replay.state;
        state.end_offset = state.end_offset.max(log.log_end_offset());
        Ok(state)
    }

    /// The state of a partition being opened, alone ([`Self::open_replay`]
    /// and its scan), also saying where the scan started and how many
    /// bytes it read (tests).
    #[cfg(test)]
    async fn recover<I: Io>(log: &Log<I>) -> (TxnState, Recovered) {
        let mut replay = Self::open_replay(log).await;
        let _ = replay_tail(log, &mut [&mut replay]).await;
        replay.finish(log)
    }

    /// The state of a partition being opened (module docs): from the
    /// legacy clean-stop file if there is one, else from the newest
    /// snapshot that passes its checks and the index files it vouches for,
    /// else from nothing; and the replay of the log after that which
    /// completes it ([`replay_tail`], which shares its read with the
    /// producer table's). A read failure leaves the state empty (logged,
    /// [`TxnReplay::finish`]) rather than the partition offline: the same
    /// error surfaces on reads.
    pub async fn open_replay<I: Io>(log: &Log<I>) -> TxnReplay {
        let log_end = log.log_end_offset();
        let mut producers = None;
        let (state, source) = match take_snapshot(log.dir()) {
            // A clean stop of an older version: the whole aborted list.
            Some(mut state) if state.end_offset <= log_end => {
                state.drop_aborted_below(log.log_start_offset());
                let offsets: Vec<Offset> = state
                    .aborted
                    .iter()
                    .map(|entry| entry.last_offset)
                    .collect();
                state.storage.dirty.extend(offsets);
                let known = list_state_files(log).snapshots;
                remove_snapshots(log, &known).await;
                (state, "legacy snapshot")
            }
            _ => match load_snapshot(log).await {
                (Some((state, table)), _) => {
                    producers = table.map(|table| (state.end_offset, table));
                    (state, "snapshot")
                }
                (None, known) => {
                    let mut state = TxnState::new();
                    state.storage.snapshots = known;
                    (state, "none")
                }
            },
        };
        let from = if source == "none" {
            log.log_start_offset()
        } else {
            state.end_offset
        };
        TxnReplay {
            state,
            source,
            from,
            scanned_bytes: 0,
            failed: None,
            producers,
        }
    }

    /// Markers the cleaner found without data, first seen at `now_ms`
    /// (earlier sightings keep their time).
    pub fn note_empty_markers(&mut self, markers: &[Offset], now_ms: i64) {
        for marker in markers {
            self.storage.empty_markers.entry(*marker).or_insert(now_ms);
        }
    }

    /// The markers whose delete horizon (first seen empty +
    /// `delete_retention_ms`) has passed at `now_ms`.
    pub fn markers_due(&self, now_ms: i64, delete_retention_ms: i64) -> Vec<Offset> {
        self.storage
            .empty_markers
            .iter()
            .filter(|(_, seen)| seen.saturating_add(delete_retention_ms) <= now_ms)
            .map(|(marker, _)| *marker)
            .collect()
    }

    /// Forget a due marker that a pass did not remove: the cleaner's next
    /// sighting starts its horizon again.
    pub fn forget_empty_marker(&mut self, marker: Offset) {
        self.storage.empty_markers.remove(&marker);
    }

    /// The cleaner removed the marker at `offset` (its transaction had no
    /// data left): an abort's entry leaves the aborted list.
    pub fn marker_removed(&mut self, offset: Offset) {
        self.storage.empty_markers.remove(&offset);
        let index = self
            .aborted
            .partition_point(|aborted| aborted.last_offset < offset);
        if self
            .aborted
            .get(index)
            .is_some_and(|aborted| aborted.last_offset == offset)
        {
            self.aborted.remove(index);
            self.storage.dirty.insert(offset);
        }
    }

    /// The state as a snapshot at its end offset, with the producer table
    /// of a log ending at `log_end` when that is the same offset (both are
    /// fed synchronously with the appends that concern them, so they agree
    /// whenever the state is current) and the table is complete. `None`
    /// when the epoch of the last batch is unknown (after a truncation).
    fn capture(&self, producers: &ProducerStateTable, log_end: Offset) -> Option<TxnSnapshot> {
        if self.end_offset > Offset::ZERO && self.storage.last_epoch.is_none() {
            return None;
        }
        Some(TxnSnapshot {
            end_offset: self.end_offset,
            last_epoch: self.storage.last_epoch,
            open: self.open.clone(),
            unstable: self.unstable.iter().copied().collect(),
            covered: Vec::new(),
            producers: (self.end_offset == log_end && !producers.is_incomplete())
                .then(|| producers.encode_persisted()),
        })
    }

    /// The index files to rewrite for the dirty points (path, content;
    /// `None`: remove it, no entries left), given the log's segment
    /// `bases`, and the dirty points taken: the caller puts them back if
    /// the writes fail.
    fn take_index_writes(&mut self, dir: &std::path::Path, bases: &[Offset]) -> IndexWrites {
        let dirty = std::mem::take(&mut self.storage.dirty);
        let aborted = self.aborted.make_contiguous();
        let dirty_bases: BTreeSet<Offset> = dirty
            .iter()
            .filter_map(|point| txn_index::segment_of(bases, *point))
            .collect();
        let files = bases
            .iter()
            .enumerate()
            .filter(|(_, base)| dirty_bases.contains(base))
            .map(|(index, base)| {
                let entries = txn_index::entries_of_segment(aborted, bases, index);
                let content =
                    (!entries.is_empty()).then(|| txn_index::encode_index(*base, entries));
                (segment::txn_index_path(dir, *base), content)
            })
            .collect();
        IndexWrites { files, dirty }
    }

    /// A snapshot's `covered` list for an end at `end`: per segment below
    /// it, how many of its index entries lie below `end`.
    fn covered(&mut self, bases: &[Offset], end: Offset) -> Vec<(Offset, u32)> {
        let aborted = self.aborted.make_contiguous();
        bases
            .iter()
            .enumerate()
            .take_while(|(_, base)| **base < end)
            .map(|(index, base)| {
                let below = txn_index::entries_of_segment(aborted, bases, index)
                    .iter()
                    .filter(|entry| entry.last_offset < end)
                    .count();
                (*base, u32::try_from(below).unwrap_or(u32::MAX))
            })
            .collect()
    }
}

/// What [`TxnState::take_index_writes`] decided: the index files to
/// rewrite (path and content; `None`: remove it, no entries left) and the
/// dirty points taken (put back if a write fails).
struct IndexWrites {
    files: Vec<(std::path::PathBuf, Option<Vec<u8>>)>,
    dirty: BTreeSet<Offset>,
}

/// How an open rebuilt the state: from what (`"snapshot"`, `"legacy
/// snapshot"`, `"none"`), and the scan of the log after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered {
    source: &'static str,
    from: Offset,
    scanned_bytes: u64,
}

/// The rebuild of a partition's transaction state at open, fed by
/// [`replay_tail`] from where its files leave off.
pub struct TxnReplay {
    state: TxnState,
    source: &'static str,
    from: Offset,
    scanned_bytes: u64,
    /// Why the read of its range failed, if it did.
    failed: Option<String>,
    /// The trusted snapshot's producer table (encoded) and offset.
    producers: Option<(Offset, Vec<u8>)>,
}

impl TxnReplay {
    /// The producer table the trusted snapshot holds, with its offset: the
    /// producer table's rebuild starts there (tail_replay.rs).
    pub fn take_producers(&mut self) -> Option<(Offset, Vec<u8>)> {
        self.producers.take()
    }

    /// The rebuilt state, or an empty one if the read failed (logged).
    pub fn finish<I: Io>(self, log: &Log<I>) -> (TxnState, Recovered) {
        let TxnReplay {
            mut state,
            source,
            from,
            scanned_bytes,
            failed,
            producers: _,
        } = self;
        if let Some(error) = failed {
            tracing::error!(dir = %log.dir().display(), %error, "could not rebuild the transaction state; starting empty");
            let recovered = Recovered {
                source: "failed",
                from,
                scanned_bytes: 0,
            };
            return (TxnState::new(), recovered);
        }
        let log_end = log.log_end_offset();
        state.end_offset = state.end_offset.max(log_end);
        let end = state.end_offset;
        if end > Offset::ZERO {
            let entries = log.leader_epoch_entries();
            state.storage.last_epoch = txn_index::epoch_at(&entries, Offset(end.value() - 1));
        }
        if scanned_bytes > 0 {
            tracing::info!(
                dir = %log.dir().display(),
                source,
                %from,
                end = %log_end,
                scanned_bytes,
                log_bytes = log.size_bytes(),
                open = state.open_count(),
                aborted = state.aborted.len(),
                "transaction state recovered"
            );
        }
        let recovered = Recovered {
            source,
            from,
            scanned_bytes,
        };
        (state, recovered)
    }
}

impl TailReplay for TxnReplay {
    fn from(&self) -> Offset {
        self.from
    }

    fn replay(&mut self, stored: &Bytes, header: &BatchHeader) {
        self.scanned_bytes += stored.len() as u64;
        self.state.observe_batch(stored, header);
    }

    fn fail(&mut self, error: &LogError) {
        self.failed = Some(error.to_string());
    }
}

/// The snapshot and index files in a partition directory.
struct StateFiles {
    snapshots: Vec<Offset>,
    indexes: Vec<Offset>,
}

fn list_state_files<I: Io>(log: &Log<I>) -> StateFiles {
    let names = match log.io().list_dir(log.dir()) {
        Ok(names) => names,
        Err(error) => {
            tracing::warn!(dir = %log.dir().display(), %error, "could not list the transaction state files");
            Vec::new()
        }
    };
    StateFiles {
        snapshots: names
            .iter()
            .filter_map(|name| txn_index::parse_snapshot_name(name))
            .collect(),
        indexes: names
            .iter()
            .filter_map(|name| txn_index::parse_index_name(name))
            .collect(),
    }
}

fn remove_quietly<I: Io>(io: &I, path: &std::path::Path) {
    if let Err(error) = io.remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not remove a transaction state file");
    }
}

async fn remove_snapshots<I: Io>(log: &Log<I>, offsets: &[Offset]) {
    if offsets.is_empty() {
        return;
    }
    for offset in offsets {
        remove_quietly(log.io(), &txn_index::snapshot_path(log.dir(), *offset));
    }
    if let Err(error) = log.io().sync_dir(log.dir()).await {
        tracing::warn!(dir = %log.dir().display(), %error, "directory sync after removing transaction snapshots failed");
    }
}

/// The state of the newest snapshot that passes its checks, with the
/// aborted entries below it from the index files (txn_index.rs module
/// docs). Removes snapshots beyond the log end or failing their checks
/// (never trusted later either) and index files without a segment. `None`:
/// no usable snapshot (the log is scanned from its start); with it, the
/// snapshots left on disk. The loaded snapshot's producer table comes
/// with it, still encoded.
async fn load_snapshot<I: Io>(
    log: &Log<I>,
) -> (Option<(TxnState, Option<Vec<u8>>)>, BTreeSet<Offset>) {
    let files = list_state_files(log);
    let (log_start, log_end) = (log.log_start_offset(), log.log_end_offset());
    let bases = log.segment_bases();
    let (stale, kept): (Vec<Offset>, Vec<Offset>) = files
        .snapshots
        .iter()
        .partition(|offset| **offset > log_end);
    remove_snapshots(log, &stale).await;
    for base in files.indexes.iter().filter(|base| !bases.contains(base)) {
        remove_quietly(log.io(), &segment::txn_index_path(log.dir(), *base));
    }
    let entries = log.leader_epoch_entries();
    let mut known: BTreeSet<Offset> = kept.iter().copied().collect();
    for candidate in txn_index::snapshot_candidates(&kept, log_start, log_end) {
        match load_one_snapshot(log, candidate, &bases, &entries) {
            Ok((mut state, producers)) => {
                state.drop_aborted_below(log_start);
                state.storage.snapshots = known.clone();
                return (Some((state, producers)), known);
            }
            Err(reason) => {
                tracing::warn!(dir = %log.dir().display(), snapshot = %candidate, reason, "transaction snapshot not used; removing it");
                remove_snapshots(log, &[candidate]).await;
                known.remove(&candidate);
            }
        }
    }
    (None, known)
}

fn load_one_snapshot<I: Io>(
    log: &Log<I>,
    offset: Offset,
    bases: &[Offset],
    epochs: &[(LeaderEpoch, Offset)],
) -> Result<(TxnState, Option<Vec<u8>>), String> {
    let io = log.io();
    let bytes = io
        .read_file(&txn_index::snapshot_path(log.dir(), offset))
        .map_err(|error| error.to_string())?;
    let snapshot = txn_index::decode_snapshot(offset, &bytes).map_err(|error| error.to_string())?;
    if !txn_index::epoch_matches(&snapshot, epochs) {
        return Err(format!(
            "its leader epoch {:?} is not the log's at {offset} (truncated and regrown since)",
            snapshot.last_epoch
        ));
    }
    let oldest = bases.first().copied().unwrap_or(Offset::ZERO);
    for base in bases.iter().filter(|base| **base < offset) {
        if !snapshot.covered.iter().any(|(covered, _)| covered == base) {
            return Err(format!("segment {base} is not covered by it"));
        }
    }
    let mut aborted: VecDeque<AbortedTxn> = VecDeque::new();
    for (base, count) in &snapshot.covered {
        if !bases.contains(base) {
            if *base < oldest {
                continue; // deleted by retention since
            }
            return Err(format!(
                "it covers segment {base}, which the log does not hold"
            ));
        }
        if *count == 0 {
            continue;
        }
        let path = segment::txn_index_path(log.dir(), *base);
        let bytes = match io.read_file(&path) {
            Ok(bytes) => bytes,
            // Every entry it vouched for left since (the cleaner removed
            // their markers): fewer entries are always allowed, below.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(format!("index {}: {error}", path.display())),
        };
        let entries = txn_index::decode_index(*base, &bytes)
            .map_err(|error| format!("index {}: {error}", path.display()))?;
        let below: Vec<AbortedTxn> = entries
            .into_iter()
            .filter(|entry| entry.last_offset < offset)
            .collect();
        // Entries only ever leave a segment (markers removed, retention)
        // after the snapshot was taken, never join it below its end.
        if below.len() > *count as usize {
            return Err(format!(
                "index {} holds more entries than it vouched for",
                path.display()
            ));
        }
        if let (Some(last), Some(first)) = (aborted.back(), below.first())
            && last.last_offset >= first.last_offset
        {
            return Err(format!(
                "index {} overlaps the previous one",
                path.display()
            ));
        }
        aborted.extend(below);
    }
    let state = TxnState {
        open: snapshot.open,
        unstable: snapshot.unstable.into_iter().collect(),
        aborted,
        end_offset: offset,
        storage: Storage {
            last_epoch: snapshot.last_epoch,
            ..Storage::default()
        },
    };
    Ok((state, snapshot.producers))
}

/// Delete the snapshot files at or above the lowest truncation point
/// since the last call (no directory sync: the caller syncs, or a crash
/// leaves a snapshot that the epoch check refuses). Returns whether any
/// went. Run right after a reconcile that cut the state.
pub fn prune_truncated<I: Io>(log: &Log<I>, state: &mut TxnState) -> bool {
    let Some(cut) = state.storage.truncated_to.take() else {
        return false;
    };
    let stale: Vec<Offset> = state.storage.snapshots.range(cut..).copied().collect();
    for offset in &stale {
        remove_quietly(log.io(), &txn_index::snapshot_path(log.dir(), *offset));
        state.storage.snapshots.remove(offset);
    }
    if !stale.is_empty() {
        tracing::debug!(dir = %log.dir().display(), %cut, removed = stale.len(), "transaction snapshots above a truncation removed");
    }
    !stale.is_empty()
}

/// The partition's directory was removed meanwhile (its topic deleted):
/// nothing to persist, nothing to warn about.
fn gone(dir: &std::path::Path, error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::NotFound && !dir.exists()
}

/// The periodic step of the state's persistence (module docs), run by the
/// shard's cleaner for every partition: prune snapshots after a
/// truncation; write the pending capture once the log is durable up to its
/// end (index files first, then the snapshot, then the oldest snapshots
/// beyond [`txn_index::SNAPSHOTS_RETAINED`] go); else capture the state if
/// the log grew since the newest snapshot.
///
/// Failures are logged: they only make a later open scan more of the log.
pub async fn persist<I: Io>(
    log: &Log<I>,
    txns: &RefCell<TxnState>,
    producers: &RefCell<ProducerStateTable>,
) {
    // Its files are written by path: not once the log is closing, when the
    // directory may be renamed away and another topic's take its name
    // (engine dir_gate.rs); a close waits for a step in progress.
    let Ok(_dir) = log.enter_dir() else {
        return;
    };
    let io = log.io();
    let dir = log.dir();
    let pruned = {
        let mut state = txns.borrow_mut();
        state.reconcile(log.log_end_offset());
        prune_truncated(log, &mut state)
    };
    if pruned && let Err(error) = io.sync_dir(dir).await {
        tracing::warn!(dir = %dir.display(), %error, "directory sync after removing transaction snapshots failed");
    }
    let ready = {
        let state = txns.borrow();
        state
            .storage
            .pending
            .as_ref()
            .and_then(|(snapshot, truncations)| {
                (*truncations == state.storage.truncations
                    && snapshot.end_offset <= log.durable_end_offset())
                .then(|| (snapshot.clone(), *truncations))
            })
    };
    let Some((mut snapshot, truncations)) = ready else {
        let mut state = txns.borrow_mut();
        let newest = state.storage.snapshots.last().copied();
        let log_end = log.log_end_offset();
        let mut producers = producers.borrow_mut();
        producers.reconcile(log_end);
        if state.storage.pending.is_none()
            && state.end_offset > Offset::ZERO
            && newest.is_none_or(|newest| state.end_offset > newest)
            && let Some(capture) = state.capture(&producers, log_end)
        {
            let truncations = state.storage.truncations;
            state.storage.pending = Some((capture, truncations));
        }
        return;
    };
    let bases = log.segment_bases();
    snapshot.covered = txns.borrow_mut().covered(&bases, snapshot.end_offset);
    if !write_dirty_indexes(log, txns, &bases).await {
        return; // no snapshot this time
    }
    let offset = snapshot.end_offset;
    let path = txn_index::snapshot_path(dir, offset);
    if let Err(error) = io
        .write_file_atomic(&path, txn_index::encode_snapshot(&snapshot))
        .await
    {
        if gone(dir, &error) {
            return;
        }
        tracing::warn!(path = %path.display(), %error, "could not write a transaction snapshot");
        return;
    }
    let retired: Vec<Offset> = {
        let mut state = txns.borrow_mut();
        if state.storage.truncations != truncations {
            // Cut while it was written: it may describe a lost tail.
            remove_quietly(io, &path);
            return;
        }
        state.storage.pending = None;
        state.storage.snapshots.insert(offset);
        let mut retired = Vec::new();
        while state.storage.snapshots.len() > txn_index::SNAPSHOTS_RETAINED {
            retired.extend(state.storage.snapshots.pop_first());
        }
        retired
    };
    tracing::debug!(dir = %dir.display(), %offset, "transaction snapshot written");
    remove_snapshots(log, &retired).await;
}

/// Rewrite, durably, the index files of the segments whose aborted
/// entries changed (`TxnState::take_index_writes`); `bases` are the log's
/// segments. False if a write failed (logged; the points stay dirty) or
/// the directory is gone.
async fn write_dirty_indexes<I: Io>(
    log: &Log<I>,
    txns: &RefCell<TxnState>,
    bases: &[Offset],
) -> bool {
    let io = log.io();
    let dir = log.dir();
    let IndexWrites { files, dirty } = txns.borrow_mut().take_index_writes(dir, bases);
    let mut removed = false;
    let mut failed = None;
    for (path, content) in files {
        let result = match content {
            Some(bytes) => io.write_file_atomic(&path, bytes).await,
            None => {
                removed = true;
                match io.remove_file(&path) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
                    _ => Ok(()),
                }
            }
        };
        if let Err(error) = result {
            failed = Some((path, error));
            break;
        }
    }
    // A removal is durable only with its directory.
    if failed.is_none()
        && removed
        && let Err(error) = io.sync_dir(dir).await
    {
        failed = Some((dir.to_path_buf(), error));
    }
    let Some((path, error)) = failed else {
        return true;
    };
    if !gone(dir, &error) {
        tracing::warn!(path = %path.display(), %error, "could not write a transaction index");
        txns.borrow_mut().storage.dirty.extend(dirty);
    }
    false
}

/// The cleaner's pass is about to remove the markers at `offsets`, whose
/// transactions have no data left (`Log::clean_transactions_with_markers`):
/// forget their aborted entries, in memory and then durably in their
/// segments' index files, before any segment loses them. An entry that
/// outlived its marker (a fetch during the pass, a failed pass, a crash
/// before the next snapshot rewrote the index) made read_committed readers
/// skip every later transactional batch of its producer. Returns whether
/// the index files are written: only then may the markers go.
pub async fn forget_removed_markers<I: Io>(
    log: &Log<I>,
    txns: &RefCell<TxnState>,
    offsets: &[Offset],
) -> bool {
    let Ok(_dir) = log.enter_dir() else {
        return false;
    };
    {
        let mut state = txns.borrow_mut();
        state.reconcile(log.log_end_offset());
        for offset in offsets {
            state.marker_removed(*offset);
        }
    }
    write_dirty_indexes(log, txns, &log.segment_bases()).await
}

/// The legacy clean-stop file of earlier versions (the whole state at the
/// log end, consumed by the open that reads it). Read, never written.
pub const SNAPSHOT_FILE_NAME: &str = "transactions.snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLTX";
const SNAPSHOT_VERSION: u16 = 0;

/// Clean stop (after the log is flushed): write the stale index files and a
/// snapshot at `state`'s end, with `producers` (the producer table of the
/// log ending there), so that the next open scans nothing, with the
/// standard library (the shard's I/O is done with the log). A failure only
/// costs the next open a longer scan.
pub fn save_snapshot(
    dir: &std::path::Path,
    state: &TxnState,
    producers: &ProducerStateTable,
) -> std::io::Result<()> {
    let mut state = state.clone();
    let mut bases: Vec<Offset> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            segment::parse_log_file_name(name.to_str()?)
        })
        .collect();
    bases.sort_unstable();
    if let Some(cut) = state.storage.truncated_to.take() {
        for offset in state.storage.snapshots.split_off(&cut) {
            remove_std(&txn_index::snapshot_path(dir, offset))?;
        }
    }
    let Some(mut snapshot) = state.capture(producers, state.end_offset) else {
        return Ok(());
    };
    snapshot.covered = state.covered(&bases, snapshot.end_offset);
    let IndexWrites { files, .. } = state.take_index_writes(dir, &bases);
    for (path, content) in files {
        match content {
            Some(bytes) => txn_index::write_durably(&path, &bytes)?,
            None => remove_std(&path)?,
        }
    }
    let offset = snapshot.end_offset;
    txn_index::write_durably(
        &txn_index::snapshot_path(dir, offset),
        &txn_index::encode_snapshot(&snapshot),
    )?;
    state.storage.snapshots.insert(offset);
    while state.storage.snapshots.len() > txn_index::SNAPSHOTS_RETAINED {
        if let Some(oldest) = state.storage.snapshots.pop_first() {
            remove_std(&txn_index::snapshot_path(dir, oldest))?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

fn remove_std(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Read and remove `dir`'s legacy snapshot; `None` when there is none, or
/// it is damaged (logged), or it cannot be removed durably (then it must
/// not be trusted by a later open either).
pub fn take_snapshot(dir: &std::path::Path) -> Option<TxnState> {
    let path = dir.join(SNAPSHOT_FILE_NAME);
    let bytes = std::fs::read(&path).ok()?;
    let removed = std::fs::remove_file(&path)
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .is_ok();
    let state = decode_legacy_snapshot(&bytes);
    if state.is_none() {
        tracing::warn!(path = %path.display(), "damaged transaction state snapshot; reading the log instead");
    }
    if !removed {
        tracing::warn!(path = %path.display(), "could not remove the transaction state snapshot; reading the log instead");
        return None;
    }
    state
}

fn decode_legacy_snapshot(bytes: &[u8]) -> Option<TxnState> {
    let (magic, rest) = bytes.split_first_chunk::<4>()?;
    let (crc, payload) = rest.split_first_chunk::<4>()?;
    if magic != SNAPSHOT_MAGIC || u32::from_le_bytes(*crc) != crc32c::crc32c(payload) {
        return None;
    }
    let mut reader = crate::controller::codec::Reader::new(payload);
    if reader.u16().ok()? != SNAPSHOT_VERSION {
        return None;
    }
    let mut state = TxnState {
        end_offset: Offset(reader.i64().ok()?),
        ..TxnState::default()
    };
    for _ in 0..reader.count(16).ok()? {
        let producer = ProducerId(reader.i64().ok()?);
        state.open.insert(producer, Offset(reader.i64().ok()?));
    }
    for _ in 0..reader.count(24).ok()? {
        state.unstable.push_back(EndedTxn {
            producer_id: ProducerId(reader.i64().ok()?),
            first_offset: Offset(reader.i64().ok()?),
            marker_offset: Offset(reader.i64().ok()?),
        });
    }
    for _ in 0..reader.count(24).ok()? {
        state.aborted.push_back(AbortedTxn {
            producer_id: ProducerId(reader.i64().ok()?),
            first_offset: Offset(reader.i64().ok()?),
            last_offset: Offset(reader.i64().ok()?),
        });
    }
    reader.finish().ok()?;
    Some(state)
}

/// Whether the control batch `stored` is a commit (`Some(true)`) or an
/// abort marker; `None` when its first record is not a marker.
pub fn marker_of(stored: &[u8], header: &BatchHeader) -> Option<bool> {
    read_marker(stored, header).map(|marker| marker.commit)
}

/// The content of a transaction marker record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    /// -1 when the value does not carry one.
    pub coordinator_epoch: i32,
}

/// The marker in the control batch `stored`; `None` when its first record
/// is not a transaction marker.
pub fn read_marker(stored: &[u8], header: &BatchHeader) -> Option<Marker> {
    if header.compression() != Compression::None || stored.len() < header.total_size() {
        return None;
    }
    let record = batch::records(stored, header).next()?.ok()?;
    let key = record.key?;
    if key.len() < 4 {
        return None;
    }
    let commit = match i16::from_be_bytes([key[2], key[3]]) {
        CONTROL_TYPE_ABORT => false,
        CONTROL_TYPE_COMMIT => true,
        _ => return None,
    };
    let coordinator_epoch = match record.value {
        Some(value) if value.len() >= 6 => {
            i32::from_be_bytes([value[2], value[3], value[4], value[5]])
        }
        _ => -1,
    };
    Some(Marker {
        commit,
        coordinator_epoch,
    })
}

/// A transaction marker as Kafka writes it: a control batch (transactional
/// and control attributes, the producer's id and epoch, base sequence -1)
/// of one record, key `version 0, type` (0 abort, 1 commit), value
/// `version 0, coordinator_epoch`.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    timestamp_ms: i64,
) -> Bytes {
    let kind = if commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut key = [0u8; 4];
    key[2..].copy_from_slice(&kind.to_be_bytes());
    let mut value = [0u8; 6];
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let built = BatchBuilder::new()
        .producer(producer_id, producer_epoch, -1)
        .transactional(true)
        .record(Some(&key[..]), Some(&value[..]), TimestampMs(timestamp_ms))
        .build();
    let mut batch = BytesMut::from(&built[..]);
    let at = batch::layout::ATTRIBUTES_AT;
    let attributes = i16::from_be_bytes([batch[at], batch[at + 1]]) | CONTROL_ATTRIBUTE;
    batch[at..at + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&batch[batch::layout::CRC_COVERED_FROM..]);
    batch[batch::layout::CRC_AT..batch::layout::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    batch.freeze()
}

impl PartitionReplica {
    /// The last stable offset: what read_committed consumers may read
    /// (see the module docs). At most the high watermark.
    pub fn last_stable_offset(&self) -> Offset {
        let high_watermark = self.high_watermark();
        let mut txns = self.txns.borrow_mut();
        txns.reconcile(self.log.log_end_offset());
        txns.last_stable_offset(high_watermark, self.log.log_start_offset())
    }

    /// Write the transaction state's snapshot and index files
    /// ([`persist`]), first forgetting the ended transactions the high
    /// watermark covers. Only the last stable offset's lookups forgot them
    /// otherwise, and a follower serves none: every transaction a follower
    /// replicated stayed in its memory and in each snapshot it wrote,
    /// without bound (found by a read-only review); so did a leader's while
    /// nothing fetched from it.
    pub async fn persist_txn_state(&self) {
        let high_watermark = self.high_watermark();
        self.txns.borrow_mut().forget_stable(high_watermark);
        persist(&self.log, &self.txns, &self.producers).await;
    }

    /// The aborted transactions a read_committed fetch of `from..upper`
    /// needs (dropping those retention made unreachable first).
    pub fn aborted_transactions(&self, from: Offset, upper: Offset) -> Vec<AbortedTxn> {
        let mut txns = self.txns.borrow_mut();
        txns.reconcile(self.log.log_end_offset());
        txns.drop_aborted_below(self.log.log_start_offset());
        txns.aborted_between(from, upper)
    }
}

/// The leader appended `records` (the caller's bytes: their base offsets
/// are not the log's) at `base_offset` (`PartitionReplica::append`, for
/// every writer: produce, markers, the group coordinator's transactional
/// offset commits): feed their batches to the transaction state, at the
/// offsets the log assigned them.
pub fn observe_leader_append(replica: &PartitionReplica, records: &Bytes, base_offset: Offset) {
    let Ok(ranges) = batch::split_batches(records) else {
        return;
    };
    let mut txns = replica.txns.borrow_mut();
    // Whatever the state knew from this offset on was lost (rolled back);
    // its snapshots go before the new tail can be flushed.
    txns.reconcile(base_offset);
    prune_truncated(&replica.log, &mut txns);
    let mut next = base_offset;
    for range in ranges {
        let Ok(header) = BatchHeader::parse(&records[range.clone()]) else {
            return;
        };
        // The epoch the log stamped on it (PartitionReplica::append).
        txns.storage.last_epoch = Some(replica.state().leader_epoch);
        let first = next;
        let last = first.plus(i64::from(header.last_offset_delta()));
        next = last.plus(1);
        if !header.is_transactional() || !header.has_producer_id() {
            txns.end_offset = next;
            continue;
        }
        let producer_id = ProducerId(header.producer_id());
        if header.is_control() {
            match marker_of(&records[range], &header) {
                Some(commit) => {
                    let _ = txns.record_marker(producer_id, first, commit);
                }
                None => txns.end_offset = next,
            }
        } else {
            txns.record_data(producer_id, first, last);
        }
    }
}

/// A follower appended `records` (stored bytes, the leader's offsets):
/// feed their batches to the replica's transaction state and producer
/// table.
pub fn observe_replicated(replica: &PartitionReplica, records: &Bytes) {
    let Ok(ranges) = batch::split_batches(records) else {
        return;
    };
    let first = ranges
        .first()
        .and_then(|first| BatchHeader::parse(&records[first.clone()]).ok());
    let mut txns = replica.txns.borrow_mut();
    let mut producers = replica.producers.borrow_mut();
    if let Some(header) = &first {
        // Whatever the states knew from this offset on was truncated away;
        // the transaction snapshots go before the new tail can be flushed.
        txns.reconcile(header.base_offset());
        prune_truncated(&replica.log, &mut txns);
        producers.reconcile(header.base_offset());
    }
    txns.observe_run(records);
    drop(txns);
    // The producer table follows the leader's (sequences, and the epochs
    // markers carry): a follower that starts leading detects the
    // duplicates and fences the zombies its leader did, however long ago
    // their last batch was written.
    let now = now_ms();
    for range in ranges {
        let stored = &records[range];
        if let Ok(header) = BatchHeader::parse(stored) {
            producers.replay_batch(stored, &header, now);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Write a transaction marker (commit when `commit`) for `producer_id` to
/// `topic_partition`, on its owning shard (this one), as its leader.
///
/// `Ok(offset)`: the marker is at `offset`, committed (the high watermark
/// covers it, with min.insync.replicas in sync: acks=all), and the
/// producer's transaction on this partition has ended (on abort, it is in
/// the aborted list read_committed fetches get). A marker for a producer
/// without an open transaction is written too (Kafka does).
///
/// Errors (Kafka codes, per partition of WriteTxnMarkers):
/// UNKNOWN_TOPIC_OR_PARTITION (not open here), NOT_LEADER_OR_FOLLOWER,
/// COORDINATOR_LOAD_IN_PROGRESS (an offsets partition whose groups are
/// loading; nothing written),
/// INVALID_PRODUCER_EPOCH (older than the producer's current epoch; nothing
/// written), TRANSACTION_COORDINATOR_FENCED (a coordinator epoch older than
/// the producer's last marker's; nothing written), NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT,
/// KAFKA_STORAGE_ERROR.
pub async fn write_txn_marker(
    shard: &Rc<Shard>,
    topic_partition: &TopicPartition,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
) -> Result<Offset, ResponseError> {
    let Some(replica) = shard.partition(topic_partition) else {
        return Err(ResponseError::UnknownTopicOrPartition);
    };
    let state = replica.state();
    if !state.is_leader() {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    // An offsets partition whose groups are loading: its load reads the
    // log only up to where it started, and the marker's hook
    // (`group::apply_txn_marker`) finds no group yet, so a marker appended
    // now would leave the transaction's offsets pending for good. The
    // transaction coordinator retries (txn/markers.rs), as Kafka's does on
    // COORDINATOR_LOAD_IN_PROGRESS. Only while a load runs: one that failed
    // must not hold every transaction with offsets there forever. Checked
    // in the same synchronous step as the append below.
    if topic_partition.topic.as_ref() == crate::group::OFFSETS_TOPIC
        && crate::group::is_loading(shard, topic_partition.partition)
    {
        return Err(ResponseError::CoordinatorLoadInProgress);
    }
    let min_insync = {
        let snapshot = shard.metadata.snapshot();
        let configs = snapshot
            .topics
            .get(topic_partition.topic.as_ref())
            .map(|topic| topic.configs.clone())
            .unwrap_or_default();
        crate::handlers::produce::min_insync_replicas(shard, &snapshot, &configs)
    };
    if let Some(isr) = replica.isr_size()
        && isr < min_insync
    {
        return Err(ResponseError::NotEnoughReplicas);
    }
    let now = shard.io.now_ms();
    let id = ProducerId(producer_id);
    // One synchronous step: check, append, record (as produce.rs).
    let appended = {
        let log_end = replica.log.log_end_offset();
        let mut producers = replica.producers.borrow_mut();
        producers.reconcile(log_end);
        if let Some(current) = producers.epoch_of(id)
            && producer_epoch < current
        {
            tracing::debug!(partition = %topic_partition, producer_id, producer_epoch, current, "marker with an old producer epoch refused");
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if let Some(known) = producers.coordinator_epoch_of(id)
            && coordinator_epoch < known
        {
            tracing::debug!(partition = %topic_partition, producer_id, coordinator_epoch, known, "marker of an older coordinator refused");
            return Err(ResponseError::TransactionCoordinatorFenced);
        }
        let batch = control_batch(producer_id, producer_epoch, coordinator_epoch, commit, now);
        let appended = replica.append(&batch).map_err(|error| match error {
            ReplicaAppendError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
            ReplicaAppendError::Append(error) => {
                tracing::warn!(partition = %topic_partition, %error, "appending a transaction marker failed");
                ResponseError::KafkaStorageError
            }
        })?;
        // The replica's append ended the transaction (observe_leader_append).
        producers.record_marker(id, producer_epoch, coordinator_epoch, now);
        tracing::debug!(partition = %topic_partition, producer_id, commit, offset = %appended.base_offset, "transaction marker appended");
        appended
    };
    let offset = appended.base_offset;
    if let Err(error) = appended.completion.await {
        tracing::warn!(partition = %topic_partition, %error, "a transaction marker was not made durable");
        return Err(ResponseError::KafkaStorageError);
    }
    replica
        .wait_committed(
            offset.plus(1),
            state.leader_epoch,
            || min_insync,
            MARKER_COMMIT_TIMEOUT,
        )
        .await
        .map_err(|error| match error {
            CommitWaitError::NotLeader => ResponseError::NotLeaderOrFollower,
            CommitWaitError::NotEnoughReplicasAfterAppend => {
                ResponseError::NotEnoughReplicasAfterAppend
            }
            CommitWaitError::TimedOut => ResponseError::RequestTimedOut,
        })?;
    if topic_partition.topic.as_ref() == crate::group::OFFSETS_TOPIC {
        crate::txn::hooks::after_offsets_marker(
            shard,
            topic_partition.partition,
            producer_id,
            commit,
            offset.value(),
        );
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;
    use std::path::Path;

    use sluice_engine::io::sim::SimIo;
    use sluice_engine::testing::block_on;
    use sluice_engine::{Committer, LeaderEpoch, LogConfig};

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    /// The file earlier versions wrote at a clean stop.
    fn legacy_snapshot_bytes(state: &TxnState) -> Vec<u8> {
        let mut writer = crate::controller::codec::Writer::new();
        writer.u16(SNAPSHOT_VERSION);
        writer.i64(state.end_offset.value());
        writer.count(state.open.len());
        for (producer, first) in &state.open {
            writer.i64(producer.0);
            writer.i64(first.value());
        }
        writer.count(state.unstable.len());
        for ended in &state.unstable {
            writer.i64(ended.producer_id.0);
            writer.i64(ended.first_offset.value());
            writer.i64(ended.marker_offset.value());
        }
        writer.count(state.aborted.len());
        for aborted in &state.aborted {
            writer.i64(aborted.producer_id.0);
            writer.i64(aborted.first_offset.value());
            writer.i64(aborted.last_offset.value());
        }
        let payload = writer.into_bytes();
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        bytes
    }

    #[test]
    fn a_legacy_snapshot_is_read_once_and_a_damaged_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("txn-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut state = TxnState::new();
        state.record_data(ProducerId(7), Offset(10), Offset(12));
        state.record_data(ProducerId(8), Offset(13), Offset(13));
        let _ = state.record_marker(ProducerId(8), Offset(14), false);
        state.end_offset = Offset(15);
        let path = dir.join(SNAPSHOT_FILE_NAME);
        std::fs::write(&path, legacy_snapshot_bytes(&state)).unwrap();
        let loaded = take_snapshot(&dir).unwrap();
        assert_eq!(loaded.open, state.open);
        assert_eq!(loaded.aborted, state.aborted);
        assert_eq!(loaded.unstable, state.unstable);
        assert_eq!(loaded.end_offset, Offset(15));
        assert!(
            take_snapshot(&dir).is_none(),
            "consumed by the open that read it"
        );
        let mut bytes = legacy_snapshot_bytes(&state);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(take_snapshot(&dir).is_none());
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 2048,
            preallocate_step_bytes: 16 << 10,
            chunk_size_bytes: 16 << 10,
            retention_ms: None,
            ..LogConfig::default()
        }
    }

    /// A log in `dir` with [`small_segments`], and its committer.
    fn open_small(io: &SimIo, dir: &Path) -> (Committer<SimIo>, Log<SimIo>) {
        let committer = Committer::new(io.clone());
        let log = block_on(Log::open(io.clone(), dir, small_segments(), &committer)).unwrap();
        (committer, log)
    }

    const DIR: &str = "/data/topic-0";

    /// A log in [`DIR`] holding 30 rounds of [`transactions`], durable, and
    /// the state they fed.
    fn durable_transactions(seed: u64) -> (SimIo, Committer<SimIo>, Log<SimIo>, RefCell<TxnState>) {
        let io = SimIo::new(seed);
        let (committer, log) = open_small(&io, Path::new(DIR));
        let txns = RefCell::new(TxnState::new());
        transactions(&log, &txns, 0..30);
        block_on(committer.flush_round());
        (io, committer, log, txns)
    }

    /// Append `records` as the leader at `epoch` and feed the stored batch
    /// to `txns`, as `PartitionReplica::append` does.
    fn append_fed(
        log: &Log<SimIo>,
        txns: &RefCell<TxnState>,
        records: &Bytes,
        epoch: LeaderEpoch,
    ) -> Offset {
        let appended = log.append(records, epoch).unwrap();
        let mut stored = BytesMut::from(&records[..]);
        batch::patch_base_offset(&mut stored, appended.base_offset);
        batch::patch_leader_epoch(&mut stored, epoch);
        let header = BatchHeader::parse(&stored).unwrap();
        let mut state = txns.borrow_mut();
        state.reconcile(appended.base_offset);
        state.observe_batch(&stored, &header);
        appended.base_offset
    }

    /// Transactions of three producers, every third one aborted.
    fn transactions(log: &Log<SimIo>, txns: &RefCell<TxnState>, rounds: std::ops::Range<i32>) {
        for round in rounds {
            let producer = i64::from(round % 3) + 1;
            append_fed(
                log,
                txns,
                &data_batch(producer, round * 2, true),
                LeaderEpoch(0),
            );
            append_fed(log, txns, &data_batch(-1, -1, false), LeaderEpoch(0));
            let commit = round % 3 != 0;
            append_fed(
                log,
                txns,
                &control_batch(producer, 0, 0, commit, NOW),
                LeaderEpoch(0),
            );
        }
    }

    fn files(io: &SimIo, dir: &Path, suffix: &str) -> Vec<String> {
        let mut names: Vec<String> = io
            .list_dir(dir)
            .unwrap()
            .into_iter()
            .filter(|name| name.ends_with(suffix))
            .collect();
        names.sort();
        names
    }

    fn assert_same_state(left: &TxnState, right: &TxnState) {
        assert_eq!(left.open, right.open);
        assert_eq!(left.aborted, right.aborted);
        assert_eq!(left.end_offset, right.end_offset);
    }

    /// The open reads the log once for the producer table and the
    /// transaction state (tail_replay.rs). With a snapshot both start from
    /// it and the producer table comes out whole, as a replay of the whole
    /// log makes it, however small the producer window (producers whose
    /// last batch lies before the window are known). Without one the
    /// transaction scan reads the whole log, and the producer table is fed
    /// from its start too, so it also comes out whole (with the window
    /// alone, a producer further back was unknown after a kill -9 before
    /// the first snapshot); the read is the wider of the two ranges, not
    /// their sum.
    #[test]
    fn one_read_at_open_rebuilds_what_the_separate_rebuilds_do() {
        use crate::shard::tail_replay::rebuild_with;
        for (seed, with_snapshot) in [(41, true), (42, false)] {
            let (io, committer, log, txns) = durable_transactions(seed);
            let dir = Path::new(DIR);
            if with_snapshot {
                // The live table at the log end (a replay of the whole log),
                // its producers active now (the open expires idle ones by
                // the wall clock).
                let producers = RefCell::new(
                    block_on(ProducerStateTable::recover_tail(&log, now_ms(), u64::MAX)).unwrap(),
                );
                block_on(persist(&log, &txns, &producers));
                block_on(persist(&log, &txns, &producers));
                assert_eq!(files(&io, dir, ".txnsnapshot").len(), 1);
            }
            append_fed(&log, &txns, &data_batch(9, 0, true), LeaderEpoch(0));
            transactions(&log, &txns, 30..40);
            block_on(committer.flush_round());
            let live = txns.borrow().clone();
            drop(log);

            let io = io.crash();
            let (_committer, log) = open_small(&io, dir);
            let end = log.log_end_offset();
            let (alone, recovered) = block_on(TxnState::recover(&log));
            assert_same_state(&alone, &live);
            assert_eq!(
                recovered.source,
                if with_snapshot { "snapshot" } else { "none" }
            );
            let whole = block_on(ProducerStateTable::recover_tail(&log, NOW, u64::MAX)).unwrap();
            // A window of a few batches (it starts after the snapshot), and
            // one wider than the log (it starts before).
            for scan_bytes in [600, 1 << 20] {
                let (producers, state, read) = block_on(rebuild_with(&io, &log, scan_bytes));
                let read = read.unwrap();
                assert_same_state(&state, &live);
                let window =
                    block_on(ProducerStateTable::recover_tail(&log, NOW, scan_bytes)).unwrap();
                assert_ne!(window.len(), 0);
                assert_eq!(
                    producers.encode_snapshot(end, 0),
                    whole.encode_snapshot(end, 0),
                    "scan_bytes {scan_bytes}, snapshot {with_snapshot}"
                );
                if scan_bytes < log.size_bytes() {
                    assert_ne!(window.len(), whole.len(), "the window misses producers");
                }
                let expected = if with_snapshot || scan_bytes < log.size_bytes() {
                    recovered.scanned_bytes
                } else {
                    log.size_bytes()
                };
                assert_eq!(
                    read, expected,
                    "scan_bytes {scan_bytes}, snapshot {with_snapshot}"
                );
            }
        }
    }

    #[test]
    fn a_crash_reopens_from_the_newest_snapshot_and_scans_only_the_tail() {
        let (io, committer, log, txns) = durable_transactions(31);
        let dir = Path::new(DIR);
        // The first step captures, the next writes once durable.
        block_on(persist(&log, &txns, &RefCell::default()));
        assert!(files(&io, dir, ".txnsnapshot").is_empty());
        block_on(persist(&log, &txns, &RefCell::default()));
        let snapshot_end = txns.borrow().end_offset;
        assert_eq!(
            files(&io, dir, ".txnsnapshot"),
            vec![format!("{:020}.txnsnapshot", snapshot_end.value())]
        );
        let indexes = files(&io, dir, ".txnindex");
        assert!(
            indexes.len() > 1,
            "one index per segment with aborts: {indexes:?}"
        );
        assert!(log.segment_count() >= indexes.len());
        // An open transaction spanning the snapshot, then a tail.
        append_fed(&log, &txns, &data_batch(9, 0, true), LeaderEpoch(0));
        transactions(&log, &txns, 30..36);
        block_on(committer.flush_round());
        let live = txns.borrow().clone();
        assert!(live.open_transaction(ProducerId(9)).is_some());
        drop(log);

        let io = io.crash();
        let (_committer, log) = open_small(&io, dir);
        let (state, recovered) = block_on(TxnState::recover(&log));
        assert_same_state(&state, &live);
        assert_eq!(recovered.source, "snapshot");
        assert_eq!(recovered.from, snapshot_end);
        assert!(
            recovered.scanned_bytes > 0 && recovered.scanned_bytes < log.size_bytes() / 3,
            "only the tail is read: {recovered:?} of {} bytes",
            log.size_bytes()
        );
        let full = block_on(TxnState::rebuild(&log)).unwrap();
        assert_same_state(&state, &full);
    }

    /// The input a compaction pass gets from the state (cleaner.rs
    /// `txn_clean_input`), with the whole log stable.
    fn clean_input(log: &Log<SimIo>, txns: &RefCell<TxnState>) -> sluice_engine::TxnCleanInput {
        let end = log.log_end_offset();
        sluice_engine::TxnCleanInput {
            stable_bound: end,
            aborted: txns
                .borrow()
                .aborted_between(Offset::ZERO, end)
                .into_iter()
                .map(|aborted| sluice_engine::AbortedRange {
                    producer_id: aborted.producer_id.0,
                    first_offset: aborted.first_offset,
                    last_offset: aborted.last_offset,
                })
                .collect(),
        }
    }

    /// The offsets of the log's control batches.
    fn marker_offsets(log: &Log<SimIo>) -> BTreeSet<Offset> {
        let mut found = BTreeSet::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let limits = sluice_engine::ReadLimits {
                max_bytes: 1 << 20,
                min_one_batch: true,
                max_offset: log.log_end_offset(),
            };
            let read = block_on(log.read(offset, limits)).unwrap();
            for run in &read.records {
                for range in batch::split_batches(run).unwrap() {
                    let header = BatchHeader::parse(&run[range]).unwrap();
                    if header.is_control() {
                        found.insert(header.base_offset());
                    }
                }
            }
            offset = read.next_offset;
        }
        found
    }

    /// Abort markers the cleaner removed (their transactions' data gone
    /// first) leave no entry behind, in memory during the pass nor on disk
    /// after a crash. A read_committed reader handed an entry whose marker
    /// is gone skips every later transactional batch of its producer until
    /// an abort marker of it: committed records lost to it. The entries
    /// used to leave memory when the pass ended and the index files with
    /// the next snapshot, which an idle partition never takes: a crash
    /// reopened the stale index files, vouched for by the older snapshot.
    #[test]
    fn markers_the_cleaner_removes_leave_no_aborted_entry_even_after_a_crash() {
        let (io, committer, log, txns) = durable_transactions(37);
        let dir = Path::new(DIR);
        block_on(persist(&log, &txns, &RefCell::default()));
        block_on(persist(&log, &txns, &RefCell::default()));
        assert_eq!(files(&io, dir, ".txnsnapshot").len(), 1);
        let aborted_before = txns.borrow().aborted.len();
        assert!(aborted_before > 5);
        let options = sluice_engine::CleanOptions {
            delete_retention_ms: 0,
            min_compaction_lag_ms: 0,
        };
        // The first pass removes the aborted transactions' data; the second
        // their markers, handed over as due.
        let first = block_on(log.clean_transactions_with_markers(
            &options,
            &clean_input(&log, &txns),
            &HashSet::new(),
            async |_| false,
        ))
        .unwrap();
        assert!(first.aborted_batches_removed > 0);
        let due: HashSet<Offset> = first.empty_markers.iter().copied().collect();
        let markers = marker_offsets(&log);
        let offered = RefCell::new(Vec::new());
        let second = block_on(log.clean_transactions_with_markers(
            &options,
            &clean_input(&log, &txns),
            &due,
            async |chosen: Vec<Offset>| {
                // No segment has lost a marker yet; the entries go first.
                assert_eq!(marker_offsets(&log), markers);
                let forgotten = forget_removed_markers(&log, &txns, &chosen).await;
                for entry in &txns.borrow().aborted {
                    assert!(!chosen.contains(&entry.last_offset));
                }
                *offered.borrow_mut() = chosen;
                forgotten
            },
        ))
        .unwrap();
        let removed: Vec<Offset> = second
            .markers_removed
            .iter()
            .map(|marker| marker.offset)
            .collect();
        assert!(!removed.is_empty());
        assert_eq!(*offered.borrow(), removed);
        let markers = marker_offsets(&log);
        let live = txns.borrow().clone();
        assert!(live.aborted.len() < aborted_before);
        assert!(
            live.aborted
                .iter()
                .all(|entry| markers.contains(&entry.last_offset)),
            "every entry's marker is in the log"
        );
        // The log did not grow: no new snapshot comes to rewrite anything.
        block_on(persist(&log, &txns, &RefCell::default()));
        block_on(persist(&log, &txns, &RefCell::default()));
        assert_eq!(files(&io, dir, ".txnsnapshot").len(), 1);
        block_on(committer.flush_round());
        drop(log);

        let io = io.crash();
        let (_committer, log) = open_small(&io, dir);
        let (state, recovered) = block_on(TxnState::recover(&log));
        assert_eq!(recovered.source, "snapshot");
        assert_same_state(&state, &live);
        let markers = marker_offsets(&log);
        assert!(
            state
                .aborted
                .iter()
                .all(|entry| markers.contains(&entry.last_offset)),
            "every entry's marker is in the log after the crash"
        );
    }

    /// DeleteRecords inside a segment drops the aborted entries below the
    /// new log start from memory; the segment's index file is rewritten
    /// with the next snapshot. It was not: every later snapshot counted
    /// fewer entries for that segment than its file held, and was refused
    /// at open (the whole log scanned, producers known only from the
    /// snapshot forgotten).
    #[test]
    fn delete_records_inside_a_segment_keeps_the_later_snapshots_usable() {
        let (io, committer, log, txns) = durable_transactions(39);
        let dir = Path::new(DIR);
        block_on(persist(&log, &txns, &RefCell::default()));
        block_on(persist(&log, &txns, &RefCell::default()));
        // Just past an abort marker that is not its segment's last batch.
        let bases = log.segment_bases();
        let marker = txns
            .borrow()
            .aborted
            .iter()
            .map(|entry| entry.last_offset)
            .find(|marker| {
                let segment = txn_index::segment_of(&bases, *marker).unwrap();
                txn_index::segment_of(&bases, Offset(marker.value() + 1)) == Some(segment)
                    && *marker > bases[1]
            })
            .unwrap();
        let start = Offset(marker.value() + 1);
        block_on(log.delete_records_before(start)).unwrap();
        assert!(
            log.segment_bases()
                .contains(&txn_index::segment_of(&bases, marker).unwrap())
        );
        // A read_committed fetch drops the entries below the new start.
        txns.borrow_mut().drop_aborted_below(log.log_start_offset());
        transactions(&log, &txns, 30..33);
        block_on(committer.flush_round());
        block_on(persist(&log, &txns, &RefCell::default()));
        block_on(persist(&log, &txns, &RefCell::default()));
        let newest = txns.borrow().end_offset;
        let live = txns.borrow().clone();
        drop(log);

        let io = io.crash();
        let (_committer, log) = open_small(&io, dir);
        let (state, recovered) = block_on(TxnState::recover(&log));
        assert_eq!(recovered.source, "snapshot");
        assert_eq!(recovered.from, newest);
        assert_same_state(&state, &live);
    }

    /// A partition removed while the cleaner's pass held it: its directory
    /// is renamed away once the close returns, and may be another topic's
    /// by the time the pass gets to it (engine dir_gate.rs).
    #[test]
    fn a_log_closed_for_removal_gets_no_transaction_files() {
        let (io, _committer, log, txns) = durable_transactions(35);
        let dir = Path::new(DIR);
        // Captured, and durable: the next step would write it.
        block_on(persist(&log, &txns, &RefCell::default()));
        assert!(txns.borrow().storage.pending.is_some());
        block_on(log.close_for_removal()).unwrap();
        block_on(persist(&log, &txns, &RefCell::default()));
        assert!(files(&io, dir, ".txnsnapshot").is_empty());
        assert!(files(&io, dir, ".txnindex").is_empty());
    }

    #[test]
    fn index_entries_beyond_the_recovered_log_end_are_dropped_and_the_tail_rescanned() {
        let io = SimIo::new(34);
        let dir = Path::new("/data/topic-0");
        let (committer, log) = open_small(&io, dir);
        let txns = RefCell::new(TxnState::new());
        transactions(&log, &txns, 0..12);
        block_on(committer.flush_round());
        block_on(persist(&log, &txns, &RefCell::default()));
        let captured = txns.borrow().end_offset;
        // Durable aborts after the capture, then aborts never flushed: the
        // index files written next hold both.
        transactions(&log, &txns, 12..18);
        block_on(committer.flush_round());
        let durable = txns.borrow().clone();
        transactions(&log, &txns, 18..24);
        block_on(persist(&log, &txns, &RefCell::default()));
        assert_eq!(files(&io, dir, ".txnsnapshot").len(), 1);
        let written: Vec<AbortedTxn> = files(&io, dir, ".txnindex")
            .iter()
            .flat_map(|name| {
                let base = txn_index::parse_index_name(name).unwrap();
                txn_index::decode_index(base, &io.read_file(&dir.join(name)).unwrap()).unwrap()
            })
            .collect();
        assert!(
            written
                .iter()
                .any(|entry| entry.last_offset >= durable.end_offset),
            "the index files hold entries the crash loses"
        );
        drop(log);

        let io = io.crash();
        let (_committer, log) = open_small(&io, dir);
        assert_eq!(log.log_end_offset(), durable.end_offset);
        let (state, recovered) = block_on(TxnState::recover(&log));
        assert_eq!((recovered.source, recovered.from), ("snapshot", captured));
        assert_same_state(&state, &durable);
    }

    #[test]
    fn a_damaged_index_falls_back_to_reading_the_whole_log() {
        let io = SimIo::new(32);
        let dir = Path::new("/data/topic-0");
        let (committer, log) = open_small(&io, dir);
        let txns = RefCell::new(TxnState::new());
        transactions(&log, &txns, 0..20);
        block_on(committer.flush_round());
        block_on(persist(&log, &txns, &RefCell::default()));
        block_on(persist(&log, &txns, &RefCell::default()));
        let live = txns.borrow().clone();
        let index = files(&io, dir, ".txnindex").remove(0);
        let path = dir.join(&index);
        let mut bytes = io.read_file(&path).unwrap();
        bytes[20] ^= 0x40;
        block_on(io.write_file_atomic(&path, bytes)).unwrap();
        let (state, recovered) = block_on(TxnState::recover(&log));
        assert_eq!(recovered.source, "none");
        assert_eq!(recovered.from, log.log_start_offset());
        assert_same_state(&state, &live);
        assert!(
            files(&io, dir, ".txnsnapshot").is_empty(),
            "a snapshot that failed its checks is removed"
        );
    }

    #[test]
    fn a_truncation_removes_the_snapshots_at_or_above_the_cut() {
        let io = SimIo::new(33);
        let dir = Path::new("/data/topic-0");
        let (committer, log) = open_small(&io, dir);
        let txns = RefCell::new(TxnState::new());
        transactions(&log, &txns, 0..10);
        block_on(committer.flush_round());
        block_on(persist(&log, &txns, &RefCell::default()));
        block_on(persist(&log, &txns, &RefCell::default()));
        let first = txns.borrow().end_offset;
        transactions(&log, &txns, 10..20);
        block_on(committer.flush_round());
        block_on(persist(&log, &txns, &RefCell::default()));
        block_on(persist(&log, &txns, &RefCell::default()));
        let second = txns.borrow().end_offset;
        assert_eq!(files(&io, dir, ".txnsnapshot").len(), 2);
        // A follower cuts its log between the two snapshots.
        let cut = block_on(log.truncate_to(Offset(first.value() + 4))).unwrap();
        assert!(cut > first && cut < second);
        {
            let mut state = txns.borrow_mut();
            state.reconcile(cut);
            assert!(prune_truncated(&log, &mut state));
        }
        assert_eq!(
            files(&io, dir, ".txnsnapshot"),
            vec![format!("{:020}.txnsnapshot", first.value())]
        );
        // The regrown tail comes from a new leader epoch.
        for round in 20..26 {
            let producer = i64::from(round % 3) + 1;
            append_fed(&log, &txns, &data_batch(producer, 0, true), LeaderEpoch(1));
            append_fed(
                &log,
                &txns,
                &control_batch(producer, 0, 0, round % 2 == 0, NOW),
                LeaderEpoch(1),
            );
        }
        block_on(committer.flush_round());
        let live = txns.borrow().clone();
        let (state, recovered) = block_on(TxnState::recover(&log));
        assert_eq!((recovered.source, recovered.from), ("snapshot", first));
        assert_same_state(&state, &live);
    }

    #[test]
    fn a_clean_stop_leaves_a_snapshot_at_the_log_end() {
        let dir = std::env::temp_dir().join(format!("txn-clean-stop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{:020}.log", 0)), b"").unwrap();
        std::fs::write(dir.join(format!("{:020}.log", 10)), b"").unwrap();
        let mut state = TxnState::new();
        state.record_data(ProducerId(7), Offset(2), Offset(3));
        state.record_marker(ProducerId(7), Offset(12), false);
        state.record_data(ProducerId(8), Offset(13), Offset(13));
        state.storage.last_epoch = Some(LeaderEpoch(2));
        save_snapshot(&dir, &state, &ProducerStateTable::new()).unwrap();
        let bytes = std::fs::read(txn_index::snapshot_path(&dir, Offset(14))).unwrap();
        let snapshot = txn_index::decode_snapshot(Offset(14), &bytes).unwrap();
        assert_eq!(snapshot.open, BTreeMap::from([(ProducerId(8), Offset(13))]));
        assert_eq!(snapshot.covered, vec![(Offset(0), 0), (Offset(10), 1)]);
        assert_eq!(snapshot.last_epoch, Some(LeaderEpoch(2)));
        let index = std::fs::read(segment::txn_index_path(&dir, Offset(10))).unwrap();
        assert_eq!(
            txn_index::decode_index(Offset(10), &index).unwrap(),
            state.aborted.iter().copied().collect::<Vec<_>>()
        );
        assert!(!segment::txn_index_path(&dir, Offset(0)).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_removed_abort_marker_leaves_the_aborted_list_after_its_horizon() {
        let mut state = TxnState::new();
        state.record_data(A, Offset(0), Offset(1));
        state.record_marker(A, Offset(2), false);
        state.note_empty_markers(&[Offset(2)], 1_000);
        state.note_empty_markers(&[Offset(2)], 5_000);
        assert!(state.markers_due(1_999, 1_000).is_empty());
        assert_eq!(state.markers_due(2_000, 1_000), vec![Offset(2)]);
        state.marker_removed(Offset(2));
        assert_eq!(state.aborted().count(), 0);
        assert!(state.markers_due(i64::MAX, 0).is_empty());
    }

    const A: ProducerId = ProducerId(7);
    const B: ProducerId = ProducerId(8);

    #[test]
    fn an_open_transaction_holds_the_lso_at_its_first_offset() {
        let mut state = TxnState::new();
        state.record_data(A, Offset(10), Offset(12));
        state.record_data(A, Offset(13), Offset(13));
        assert_eq!(state.open_transaction(A), Some(Offset(10)));
        assert_eq!(
            state.last_stable_offset(Offset(14), Offset::ZERO),
            Offset(10)
        );
        assert_eq!(
            state.last_stable_offset(Offset(5), Offset::ZERO),
            Offset(5),
            "never above the high watermark"
        );
        state.record_data(B, Offset(14), Offset(14));
        assert_eq!(
            state.last_stable_offset(Offset(15), Offset::ZERO),
            Offset(10)
        );
        // Its first batch deleted (retention, DeleteRecords): never below
        // the log start (read_committed LATEST stays fetchable), never
        // above the high watermark.
        assert_eq!(state.last_stable_offset(Offset(15), Offset(12)), Offset(12));
        assert_eq!(state.last_stable_offset(Offset(11), Offset(12)), Offset(11));
    }

    #[test]
    fn a_commit_frees_the_lso_once_its_marker_is_committed() {
        let mut state = TxnState::new();
        state.record_data(A, Offset(0), Offset(4));
        assert_eq!(state.record_marker(A, Offset(5), true), Some(Offset(0)));
        assert_eq!(state.open_transaction(A), None);
        // The marker at 5 is not committed yet: still unstable.
        assert_eq!(state.last_stable_offset(Offset(5), Offset::ZERO), Offset(0));
        assert_eq!(state.last_stable_offset(Offset(6), Offset::ZERO), Offset(6));
        assert_eq!(state.aborted().count(), 0);
    }

    #[test]
    fn an_abort_is_listed_for_read_committed_fetches() {
        let mut state = TxnState::new();
        state.record_data(A, Offset(3), Offset(4));
        state.record_data(B, Offset(5), Offset(5));
        state.record_marker(A, Offset(6), false);
        assert_eq!(
            state.last_stable_offset(Offset(7), Offset::ZERO),
            Offset(5),
            "B is still open"
        );
        let aborted = AbortedTxn {
            producer_id: A,
            first_offset: Offset(3),
            last_offset: Offset(6),
        };
        assert_eq!(state.aborted_between(Offset(0), Offset(7)), vec![aborted]);
        assert_eq!(state.aborted_between(Offset(6), Offset(7)), vec![aborted]);
        assert!(state.aborted_between(Offset(7), Offset(9)).is_empty());
        assert!(state.aborted_between(Offset(0), Offset(3)).is_empty());
        state.drop_aborted_below(Offset(6));
        assert_eq!(state.aborted().count(), 1);
        state.drop_aborted_below(Offset(7));
        assert_eq!(state.aborted().count(), 0);
    }

    #[test]
    fn a_marker_without_an_open_transaction_changes_nothing() {
        let mut state = TxnState::new();
        assert_eq!(state.record_marker(A, Offset(0), false), None);
        assert_eq!(state.aborted().count(), 0);
        assert_eq!(state.last_stable_offset(Offset(1), Offset::ZERO), Offset(1));
    }

    #[test]
    fn truncation_forgets_the_lost_tail_and_reopens_a_cut_transaction() {
        let mut state = TxnState::new();
        state.record_data(A, Offset(0), Offset(1));
        state.record_marker(A, Offset(2), false);
        state.record_data(B, Offset(3), Offset(3));
        // Cut at 3: B's batch is gone, A's marker stays.
        state.reconcile(Offset(3));
        assert_eq!(state.open_transaction(B), None);
        assert_eq!(state.aborted().count(), 1);
        // Cut at 2: A's marker is gone, its transaction is open again.
        state.reconcile(Offset(2));
        assert_eq!(state.open_transaction(A), Some(Offset(0)));
        assert_eq!(state.aborted().count(), 0);
        assert_eq!(state.last_stable_offset(Offset(2), Offset::ZERO), Offset(0));
        // The state accepts the batches written after the cut.
        state.record_marker(A, Offset(2), true);
        assert_eq!(state.last_stable_offset(Offset(3), Offset::ZERO), Offset(3));
    }

    #[test]
    fn control_batches_parse_back_as_markers() {
        for commit in [false, true] {
            let built = control_batch(9, 3, 17, commit, NOW);
            let header = batch::validate(&built, 1 << 20).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(
                (
                    header.producer_id(),
                    header.producer_epoch(),
                    header.base_sequence()
                ),
                (9, 3, -1)
            );
            assert_eq!(marker_of(&built, &header), Some(commit));
            assert_eq!(
                read_marker(&built, &header),
                Some(Marker {
                    commit,
                    coordinator_epoch: 17,
                })
            );
            let record = batch::records(&built, &header).next().unwrap().unwrap();
            assert_eq!(record.value, Some(&[0, 0, 0, 0, 0, 17][..]));
        }
    }

    fn data_batch(producer_id: i64, sequence: i32, transactional: bool) -> Bytes {
        BatchBuilder::new()
            .producer(producer_id, 0, sequence)
            .transactional(transactional)
            .record(None, Some(&b"v"[..]), TimestampMs(NOW))
            .record(None, Some(&b"w"[..]), TimestampMs(NOW))
            .build()
    }

    #[test]
    fn the_state_is_rebuilt_from_the_log() {
        let io = SimIo::new(21);
        let committer = Committer::new(io.clone());
        let config = LogConfig {
            segment_bytes: 64 << 10,
            preallocate_step_bytes: 16 << 10,
            chunk_size_bytes: 16 << 10,
            retention_ms: None,
            ..LogConfig::default()
        };
        let dir = Path::new("/data/topic-0");
        let log = block_on(Log::open(io.clone(), dir, config.clone(), &committer)).unwrap();
        let mut live = TxnState::new();
        let mut append = |records: Bytes| {
            let appended = log.append(&records, LeaderEpoch(0)).unwrap();
            let mut stored = BytesMut::from(&records[..]);
            batch::patch_base_offset(&mut stored, appended.base_offset);
            let header = BatchHeader::parse(&stored).unwrap();
            live.observe_batch(&stored, &header);
            appended.base_offset
        };
        append(data_batch(1, 0, true)); // 0..=1, A opens
        append(data_batch(-1, -1, false)); // 2..=3 plain
        append(data_batch(2, 0, true)); // 4..=5, B opens
        append(control_batch(1, 0, 0, false, NOW)); // 6: A aborts
        append(data_batch(1, 2, true)); // 7..=8: A opens again
        append(control_batch(1, 0, 0, true, NOW)); // 9: A commits
        block_on(committer.flush_round());
        assert_eq!(live.open_transaction(ProducerId(2)), Some(Offset(4)));
        assert_eq!(live.open_transaction(ProducerId(1)), None);
        block_on(log.close()).unwrap();

        let io = io.crash();
        let committer = Committer::new(io.clone());
        let log = block_on(Log::open(io.clone(), dir, config, &committer)).unwrap();
        let mut rebuilt = block_on(TxnState::rebuild(&log)).unwrap();
        assert_eq!(rebuilt.open, live.open);
        assert_eq!(rebuilt.aborted, live.aborted);
        assert_eq!(
            rebuilt.aborted().copied().collect::<Vec<_>>(),
            vec![AbortedTxn {
                producer_id: ProducerId(1),
                first_offset: Offset(0),
                last_offset: Offset(6),
            }]
        );
        assert_eq!(
            rebuilt.last_stable_offset(Offset(10), Offset::ZERO),
            Offset(4)
        );
    }
}
