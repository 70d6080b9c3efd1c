//! Idempotent producer state of one partition: for each producer id, its
//! current epoch and its last [`BATCHES_RETAINED`] appended batches, as
//! Kafka's ProducerStateManager keeps them (without transactions).
//!
//! Lives in [`PartitionReplica::producers`](crate::shard::PartitionReplica)
//! on the partition's owning shard: single-threaded, no locks.
//!
//! Protocol (handlers/produce.rs): for a batch with a producer id,
//! [`ProducerStateTable::check`] it, append it to the log, then
//! [`ProducerStateTable::record`] it, all in one synchronous step on the
//! owning shard. The state therefore advances in append order even when
//! several requests are in flight and their durability is awaited
//! concurrently, and a batch whose append fails is never recorded. An append
//! the engine accepted but later dropped (a truncation; or a rollback on
//! ENOSPC, which the broker's logs do not do: they keep the tail,
//! `Log::keep_unflushed_when_full`) is forgotten by
//! [`ProducerStateTable::reconcile`], which
//! the produce path runs with the log end before every append: it drops the
//! recorded batches at or beyond the log end, so a retry of a rolled-back
//! batch is appended again rather than acknowledged as a duplicate of
//! records that no longer exist.
//!
//! Rules (Kafka's ProducerAppendInfo):
//! - unknown producer id: any sequence is accepted (KIP-360; its state may
//!   have expired, or lie before the recovery scan window);
//! - epoch lower than the producer's current one: INVALID_PRODUCER_EPOCH;
//! - higher epoch: the first sequence must be 0; the retained batches of the
//!   old epoch are dropped;
//! - same epoch: a batch whose sequence range equals one of the retained
//!   batches is a duplicate, acknowledged with the original offsets and not
//!   appended; otherwise its first sequence must follow the last one
//!   (wrapping from `i32::MAX` to 0), or OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - while the producer's KIP-890 verification of the batch's epoch holds
//!   (taken before its coordinator was asked, spent by the append that
//!   opens the transaction here, removed by a marker): a batch whose first
//!   sequence comes after the lowest one verified is
//!   OUT_OF_ORDER_SEQUENCE_NUMBER (duplicates are still acknowledged), as
//!   Kafka since 3.6: an earlier batch of the producer's pipeline failed
//!   before its append, and for an unknown producer nothing else would
//!   keep the later one from being stored first.
//!
//! Transaction markers (shard/txn_state.rs) carry the producer's epoch too:
//! [`ProducerStateTable::record_marker`] moves a producer to a newer epoch
//! with no batches (Kafka's appendEndTxnMarker), so a zombie of the fenced
//! epoch is refused here even if it never wrote to this partition since.
//!
//! Invariants (asserted): every entry retains 0..=[`BATCHES_RETAINED`]
//! batches in offset order (none only after a marker); recorded batches arrive in offset order;
//! `end_offset` is above every retained batch.
//!
//! Who feeds it: a leader's produce path ([`ProducerStateTable::record`],
//! synchronously with the append) and its marker writes; a follower's
//! replicated appends (`txn_state::observe_replicated`, the same batches
//! through [`ProducerStateTable::replay_batch`]), so a follower that starts
//! leading already knows every producer its leader knew, however long ago
//! their last batch was written; a follower's truncation reconciles it.
//!
//! Persistence: the table rides in the partition's transaction snapshots
//! (`<offset>.txnsnapshot`, txn_index.rs; [`Self::encode_persisted`]):
//! every cleaner interval the state is captured at the log end, table
//! included, and written once the log is durable there; a clean stop
//! writes one at the flushed end. An open takes the table of the newest
//! snapshot it trusts (checked against the log's leader epochs) and
//! replays the log after it, in the same read as the transaction state's
//! (tail_replay.rs): the table comes out as it was, whatever the log's
//! size, after a kill -9 too. Each producer's last activity is kept, and
//! a load drops the producers idle past [`PRODUCER_ID_EXPIRATION_MS`]. A
//! failed read fails the partition's open (tail_replay.rs), and a table
//! rebuilt empty after one is never persisted. Not covered:
//! a snapshot at the log start is not trusted (no leader epoch below it to
//! check it against), so a partition whose records were all deleted
//! (DeleteRecords, retention) past its newest snapshot reopens with the
//! tail rule below. Compaction does not change it: what a
//! snapshot recorded stays known even once the batches are compacted away
//! (as Kafka's producer snapshots). Without any snapshot the transaction
//! state's scan reads the whole log, and the table is fed from its start in
//! the same read (`tail_replay::rebuild_with`). With a snapshot but no
//! usable table in it (a log written before version 1 snapshots, or a
//! table that failed its checks) the table is rebuilt from about the last
//! [`RECOVERY_SCAN_BYTES`] of the log ([`ProducerReplay::new`]); producers
//! whose last batch lies before that window are unknown there, and their
//! next batch is accepted whatever its sequence (as Kafka does for expired
//! producers). An earlier version's clean-stop file
//! (`producer-state.snapshot`, [`decode_snapshot`]) is still read when it
//! describes the log exactly (same end, same last batch CRC).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use sluice_engine::batch::{self, BatchHeader};
use sluice_engine::io::Io;
use sluice_engine::{Log, LogError, Offset, ReadLimits};

use crate::shard::tail_replay::{TailReplay, replay_tail};

/// Batches retained per producer for duplicate detection: Kafka's
/// NUM_BATCHES_TO_RETAIN, matching the clients' max.in.flight limit of 5
/// for idempotent producers.
pub const BATCHES_RETAINED: usize = 5;

/// A producer idle for this long is forgotten (Kafka's
/// producer.id.expiration.ms default, one day). Bounds the memory that
/// short-lived producers leave behind.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

/// Expired producers are looked for at most this often.
const EXPIRATION_CHECK_INTERVAL_MS: i64 = 60 * 1000;

/// How much of the log's tail recovery replays: enough for the last batches
/// of every producer active shortly before a restart at high produce rates,
/// small enough that opening many partitions stays fast.
pub const RECOVERY_SCAN_BYTES: u64 = 16 << 20;

/// The name of an earlier version's clean-stop file in the partition
/// directory (read, never written; module docs).
pub const SNAPSHOT_FILE: &str = "producer-state.snapshot";
const SNAPSHOT_MAGIC: u32 = u32::from_be_bytes(*b"SLPS");
const SNAPSHOT_VERSION: u32 = 1;

/// Decode a clean-stop file: `(log end, last batch CRC, table)`, `None`
/// when the bytes are not a whole, intact file. Layout, big-endian: magic
/// u32, version u32, log end i64, last batch CRC u32, the table
/// ([`ProducerStateTable::encode_persisted`]'s layout), then CRC-32C u32
/// of all before it. Every producer's last activity becomes `now_ms`.
pub fn decode_snapshot(bytes: &[u8], now_ms: i64) -> Option<(Offset, u32, ProducerStateTable)> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    let mut reader = Reader(body);
    if reader.u32()? != SNAPSHOT_MAGIC || reader.u32()? != SNAPSHOT_VERSION {
        return None;
    }
    let end = Offset(reader.i64()?);
    let last_crc = reader.u32()?;
    let table = ProducerStateTable::decode_table(reader.0, now_ms, Layout::Legacy)?;
    Some((end, last_crc, table))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

/// The CRC of the batch that ends `log` (`None` for an empty log or when
/// it cannot be read).
async fn last_batch_crc<I: Io>(log: &Log<I>) -> Option<u32> {
    let end = log.log_end_offset();
    if end <= log.log_start_offset() {
        return None;
    }
    let limits = ReadLimits {
        max_bytes: 1,
        min_one_batch: true,
        max_offset: end,
    };
    let result = log.read(Offset(end.value() - 1), limits).await.ok()?;
    let run = result.records.first()?;
    let last = batch::split_batches(run).ok()?.pop()?;
    let header = BatchHeader::parse(&run[last]).ok()?;
    (header.next_offset() == end).then(|| header.crc())
}

/// Write the clean-stop file of earlier versions for `table` and `log`
/// (flushed: its end is durable); the tests' stand-in for an older
/// broker's stop. Nothing is written for an empty log.
#[cfg(test)]
pub async fn save_snapshot<I: Io>(
    io: &I,
    log: &Log<I>,
    table: &ProducerStateTable,
) -> std::io::Result<()> {
    let path = log.dir().join(SNAPSHOT_FILE);
    let Some(last_crc) = last_batch_crc(log).await else {
        return match io.remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        };
    };
    let bytes = table.encode_snapshot(log.log_end_offset(), last_crc);
    io.replace_file(&path, bytes).await
}

/// The snapshot's table if it describes `log` as it is: the same end and
/// the same last batch. A crash after the stop, appends or a truncation
/// since, or a damaged file: `None` (the caller scans the log).
async fn load_snapshot<I: Io>(io: &I, log: &Log<I>, now_ms: i64) -> Option<ProducerStateTable> {
    let bytes = io.read_file(&log.dir().join(SNAPSHOT_FILE)).ok()?;
    let (end, last_crc, table) = decode_snapshot(&bytes, now_ms)?;
    if end != log.log_end_offset() || table.end_offset > end {
        return None;
    }
    (last_batch_crc(log).await? == last_crc).then_some(table)
}

/// The two layouts of a persisted table ([`ProducerStateTable::encode_persisted`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Earlier versions' clean-stop file: no last activity.
    Legacy,
    /// Transaction snapshots: with each producer's last activity.
    Timed,
}

/// Remove an earlier version's clean-stop file (module docs), if any.
fn remove_legacy_snapshot<I: Io>(io: &I, log: &Log<I>) {
    let path = log.dir().join(SNAPSHOT_FILE);
    if let Err(error) = io.remove_file(&path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not remove an earlier version's producer state file");
    }
}

/// An idempotent producer's id (the batch header's producerId, >= 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerId(pub i64);

/// The producer fields of one batch, checked to be usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: ProducerId,
    pub epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
}

impl ProducerBatch {
    /// The producer fields of `header`: `None` for a batch without a
    /// producer id (not idempotent), an error for a producer id with a
    /// negative epoch or base sequence (INVALID_RECORD, as Kafka's
    /// LogValidator).
    pub fn of(header: &BatchHeader) -> Result<Option<ProducerBatch>, ProducerStateError> {
        if !header.has_producer_id() {
            return Ok(None);
        }
        let producer_id = ProducerId(header.producer_id());
        let epoch = header.producer_epoch();
        let base_sequence = header.base_sequence();
        if epoch < 0 || base_sequence < 0 {
            return Err(ProducerStateError::InvalidProducerFields {
                producer_id,
                epoch,
                base_sequence,
            });
        }
        Ok(Some(ProducerBatch {
            producer_id,
            epoch,
            first_sequence: base_sequence,
            last_sequence: last_sequence(base_sequence, header.last_offset_delta()),
        }))
    }
}

/// The sequence of the last record of a batch whose first record has
/// `base_sequence`: sequences wrap from `i32::MAX` to 0 (Kafka's
/// DefaultRecordBatch.incrementSequence).
pub fn last_sequence(base_sequence: i32, last_offset_delta: i32) -> i32 {
    assert!(base_sequence >= 0 && last_offset_delta >= 0);
    if base_sequence > i32::MAX - last_offset_delta {
        last_offset_delta - (i32::MAX - base_sequence) - 1
    } else {
        base_sequence + last_offset_delta
    }
}

/// Whether `next` is the sequence right after `last`.
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// Whether sequence `earlier` comes before `later`, sequences wrapping from
/// `i32::MAX` to 0: `later` lies less than half the sequence space (2^30)
/// after `earlier`. A producer's batches in flight are far closer than that.
fn sequence_precedes(earlier: i32, later: i32) -> bool {
    let distance = (i64::from(later) - i64::from(earlier)).rem_euclid(1 << 31);
    distance != 0 && distance < 1 << 30
}

fn sequence_after(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

/// One retained batch: what a duplicate is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker time written into the batch on a LogAppendTime topic,
    /// -1 otherwise (the produce response's log_append_time_ms).
    pub log_append_time_ms: i64,
}

#[derive(Clone, Debug)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first; 0..=BATCHES_RETAINED of them, all of `epoch`.
    batches: VecDeque<BatchMetadata>,
    last_append_ms: i64,
    /// The coordinator epoch of the producer's last transaction marker
    /// (-1 before any): an older coordinator's marker is fenced.
    coordinator_epoch: i32,
}

/// What to do with a batch that passed the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it, then [`ProducerStateTable::record`] it.
    Append,
    /// Already appended: acknowledge with these offsets, do not append.
    Duplicate(BatchMetadata),
}

/// Why a batch is refused. Kafka error codes: see
/// [`ProducerStateError::kafka_error_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerStateError {
    #[error(
        "batch of producer {} has epoch {epoch} and base sequence {base_sequence}; \
         an idempotent batch needs both non-negative",
        producer_id.0
    )]
    InvalidProducerFields {
        producer_id: ProducerId,
        epoch: i16,
        base_sequence: i32,
    },
    #[error(
        "producer {} epoch {epoch} is older than its current epoch {current_epoch}",
        producer_id.0
    )]
    InvalidProducerEpoch {
        producer_id: ProducerId,
        epoch: i16,
        current_epoch: i16,
    },
    #[error(
        "out of order sequence number for producer {} epoch {epoch}: \
         expected {expected}, got {first_sequence}",
        producer_id.0
    )]
    OutOfOrderSequence {
        producer_id: ProducerId,
        epoch: i16,
        first_sequence: i32,
        expected: i32,
    },
}

impl ProducerStateError {
    pub fn kafka_error_name(&self) -> &'static str {
        match self {
            ProducerStateError::InvalidProducerFields { .. } => "INVALID_RECORD",
            ProducerStateError::InvalidProducerEpoch { .. } => "INVALID_PRODUCER_EPOCH",
            ProducerStateError::OutOfOrderSequence { .. } => "OUT_OF_ORDER_SEQUENCE_NUMBER",
        }
    }
}

/// One producer as DescribeProducers shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: ProducerId,
    pub epoch: i16,
    /// The last sequence of its last retained batch (-1: none retained).
    pub last_sequence: i32,
    pub last_append_ms: i64,
    /// Of its last transaction marker (-1 before any).
    pub coordinator_epoch: i32,
}

/// The idempotent producer state of one partition. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<ProducerId, ProducerEntry>,
    /// One past the last offset of the last recorded batch (0 when none).
    end_offset: Offset,
    last_expiration_check_ms: i64,
    /// Rebuilt empty after a failed read of the log: it lacks producers it
    /// should know, so it is never persisted as the log's table.
    incomplete: bool,
    /// KIP-890 verifications (Kafka's VerificationStateEntry): per producer
    /// whose transactional batch is being verified with (or added by) its
    /// coordinator before it opens a transaction here ([`Verification`]).
    /// A marker of the producer removes it, so a batch verified before its
    /// transaction ended cannot open a new one afterwards
    /// ([`Self::holds_verification`]); so does the transactional append
    /// that opens the transaction ([`Self::end_verification`]). In memory
    /// only.
    verifications: HashMap<ProducerId, Verification>,
    /// The last guard handed out; guards start at 1 ([`NO_GUARD`] is none).
    next_guard: u64,
}

/// A verification guard no verification ever holds.
const NO_GUARD: u64 = 0;

/// A producer's verification on the partition (Kafka's
/// VerificationStateEntry).
#[derive(Clone, Copy, Debug)]
struct Verification {
    epoch: i16,
    guard: u64,
    /// The lowest first sequence of the batches of `epoch` verified under
    /// it. While it holds, a batch of `epoch` whose first sequence comes
    /// after it is refused ([`ProducerStateTable::check`]): an earlier
    /// batch of the producer's pipeline failed before its append, and
    /// storing a later one first would leave a gap (for a producer
    /// unknown here, nothing else checks its first sequence).
    lowest_sequence: i32,
    taken_ms: i64,
}

impl ProducerStateTable {
    pub fn new() -> ProducerStateTable {
        ProducerStateTable::default()
    }

    /// An empty table whose first expiration check counts from `now_ms`.
    fn empty_at(now_ms: i64) -> ProducerStateTable {
        ProducerStateTable {
            last_expiration_check_ms: now_ms,
            ..ProducerStateTable::default()
        }
    }

    /// Number of producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Whether the table may lack producers the log holds (its rebuild
    /// failed to read the log): not to be persisted.
    pub fn is_incomplete(&self) -> bool {
        self.incomplete
    }

    /// Every known producer, by id (DescribeProducers).
    pub fn describe(&self) -> Vec<ProducerSummary> {
        let mut summaries: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(producer_id, entry)| ProducerSummary {
                producer_id: *producer_id,
                epoch: entry.epoch,
                last_sequence: entry.batches.back().map_or(-1, |batch| batch.last_sequence),
                last_append_ms: entry.last_append_ms,
                coordinator_epoch: entry.coordinator_epoch,
            })
            .collect();
        summaries.sort_by_key(|summary| summary.producer_id.0);
        summaries
    }

    /// The current epoch of `producer_id`, if known.
    pub fn epoch_of(&self, producer_id: ProducerId) -> Option<i16> {
        self.producers.get(&producer_id).map(|entry| entry.epoch)
    }

    /// Forget recorded batches at or beyond `log_end`: the log lost them
    /// (truncated, or rolled back after ENOSPC by a log that does not keep
    /// its tail). A producer left without
    /// batches is forgotten entirely, so its next batch is accepted as from
    /// an unknown producer. Cheap when nothing was lost; the produce path
    /// runs it before every append.
    pub fn reconcile(&mut self, log_end: Offset) {
        if log_end >= self.end_offset {
            return;
        }
        self.producers.retain(|_, entry| {
            // An entry a marker left without batches keeps its epoch.
            let had_batches = !entry.batches.is_empty();
            while entry
                .batches
                .back()
                .is_some_and(|batch| batch.base_offset >= log_end)
            {
                entry.batches.pop_back();
            }
            !had_batches || !entry.batches.is_empty()
        });
        self.end_offset = self
            .producers
            .values()
            .filter_map(|entry| entry.batches.back())
            .map(|batch| batch.last_offset.plus(1))
            .max()
            .unwrap_or(Offset::ZERO);
        tracing::debug!(%log_end, producers = self.producers.len(), "producer state reconciled after the log end moved back");
    }

    /// Check `batch` against the state, after [`Self::reconcile`] with the
    /// current `log_end`. Changes nothing else: an `Append` must be followed
    /// by [`Self::record`] once the log accepted the batch.
    pub fn check(
        &mut self,
        batch: &ProducerBatch,
        log_end: Offset,
    ) -> Result<SequenceCheck, ProducerStateError> {
        self.reconcile(log_end);
        self.check_epoch(batch.producer_id, batch.epoch)?;
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            self.check_verified_sequence(batch)?;
            return Ok(SequenceCheck::Append);
        };
        if batch.epoch > entry.epoch {
            self.check_verified_sequence(batch)?;
            if batch.first_sequence != 0 {
                return Err(ProducerStateError::OutOfOrderSequence {
                    producer_id: batch.producer_id,
                    epoch: batch.epoch,
                    first_sequence: batch.first_sequence,
                    expected: 0,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        if let Some(original) = entry.batches.iter().find(|retained| {
            retained.first_sequence == batch.first_sequence
                && retained.last_sequence == batch.last_sequence
        }) {
            return Ok(SequenceCheck::Duplicate(*original));
        }
        self.check_verified_sequence(batch)?;
        let last = entry
            .batches
            .back()
            .map_or(-1, |retained| retained.last_sequence);
        if !in_sequence(last, batch.first_sequence) {
            return Err(ProducerStateError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                first_sequence: batch.first_sequence,
                expected: sequence_after(last),
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Refuse a batch of `producer_id` at `epoch` older than the producer's
    /// current epoch here (Kafka's ProducerAppendInfo.checkProducerEpoch):
    /// its producer was fenced, by a newer instance's batch or by a marker
    /// of its coordinator. The only check a group coordinator's
    /// transactional batch gets (TxnOffsetCommit, group/mod.rs
    /// `append_as_now`; Kafka's AppendOrigin.COORDINATOR): its sequences
    /// are the coordinator's, not the producer's. Call after
    /// [`Self::reconcile`].
    pub fn check_epoch(
        &self,
        producer_id: ProducerId,
        epoch: i16,
    ) -> Result<(), ProducerStateError> {
        match self.producers.get(&producer_id) {
            Some(entry) if epoch < entry.epoch => Err(ProducerStateError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current_epoch: entry.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// KIP-890 (Kafka's ProducerAppendInfo.checkSequence since 3.6): while
    /// the producer's verification of this epoch holds, a batch whose first
    /// sequence comes after the lowest one verified is out of order. Kafka
    /// compares the two as plain integers; here the order follows the
    /// wrap from `i32::MAX` to 0 ([`sequence_precedes`]), so a pipeline
    /// straddling the wrap is held back too.
    fn check_verified_sequence(&self, batch: &ProducerBatch) -> Result<(), ProducerStateError> {
        match self.verifications.get(&batch.producer_id) {
            Some(verification)
                if verification.epoch == batch.epoch
                    && sequence_precedes(verification.lowest_sequence, batch.first_sequence) =>
            {
                Err(ProducerStateError::OutOfOrderSequence {
                    producer_id: batch.producer_id,
                    epoch: batch.epoch,
                    first_sequence: batch.first_sequence,
                    expected: verification.lowest_sequence,
                })
            }
            _ => Ok(()),
        }
    }

    /// Record `batch`, appended at `base_offset..=last_offset`. Also used
    /// by recovery, where the log is the truth: a different epoch (higher,
    /// or lower in a log written by an older broker) replaces the old one.
    pub fn record(
        &mut self,
        batch: &ProducerBatch,
        base_offset: Offset,
        last_offset: Offset,
        log_append_time_ms: i64,
        now_ms: i64,
    ) {
        assert!(
            base_offset <= last_offset,
            "batch offsets {base_offset}..={last_offset}"
        );
        assert!(
            base_offset >= self.end_offset,
            "producer batch at {base_offset} recorded below {} (reconcile first)",
            self.end_offset
        );
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                batches: VecDeque::with_capacity(BATCHES_RETAINED),
                last_append_ms: now_ms,
                coordinator_epoch: -1,
            });
        if entry.epoch != batch.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_RETAINED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMetadata {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            base_offset,
            last_offset,
            log_append_time_ms,
        });
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        self.end_offset = last_offset.plus(1);
        self.expire(now_ms);
    }

    /// A transaction marker of `producer_id` with `epoch`, written by the
    /// coordinator of `coordinator_epoch`, was appended: a newer epoch
    /// replaces the producer's (its batches are dropped; its next batch
    /// must start at sequence 0), as Kafka's appendEndTxnMarker. The caller
    /// refused markers older than the current epoch or coordinator epoch.
    pub fn record_marker(
        &mut self,
        producer_id: ProducerId,
        epoch: i16,
        coordinator_epoch: i32,
        now_ms: i64,
    ) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(BATCHES_RETAINED),
                last_append_ms: now_ms,
                coordinator_epoch,
            });
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        // The transaction the guard was taken for has ended.
        self.verifications.remove(&producer_id);
    }

    /// Take (or find, for the same epoch) the verification guard of
    /// `producer_id` at `epoch`, before asking its coordinator about a
    /// transactional batch starting at `first_sequence` that would open a
    /// transaction here; the verification keeps the lowest such sequence
    /// (Kafka's maybeUpdateLowestSequenceAndEpoch), whatever the answer.
    pub fn begin_verification(
        &mut self,
        producer_id: ProducerId,
        epoch: i16,
        first_sequence: i32,
        now_ms: i64,
    ) -> u64 {
        assert!(first_sequence >= 0, "sequence {first_sequence}");
        if let Some(held) = self.verifications.get_mut(&producer_id) {
            if held.epoch == epoch {
                if sequence_precedes(first_sequence, held.lowest_sequence) {
                    held.lowest_sequence = first_sequence;
                }
                return held.guard;
            }
            if held.epoch > epoch {
                // A fenced zombie's request: it must not take the current
                // producer's verification away (Kafka's entry only moves
                // forward). A guard no verification holds.
                return NO_GUARD;
            }
        }
        self.next_guard += 1;
        let guard = self.next_guard;
        self.verifications.insert(
            producer_id,
            Verification {
                epoch,
                guard,
                lowest_sequence: first_sequence,
                taken_ms: now_ms,
            },
        );
        guard
    }

    /// Whether `guard` is still `producer_id`'s verification at `epoch`: no
    /// marker of the producer was appended since it was taken.
    pub fn holds_verification(&self, producer_id: ProducerId, epoch: i16, guard: u64) -> bool {
        self.verifications
            .get(&producer_id)
            .is_some_and(|held| held.epoch == epoch && held.guard == guard)
    }

    /// The verified batch opened its transaction: the guard is spent.
    pub fn end_verification(&mut self, producer_id: ProducerId) {
        self.verifications.remove(&producer_id);
    }

    /// The coordinator epoch of `producer_id`'s last marker, if any.
    pub fn coordinator_epoch_of(&self, producer_id: ProducerId) -> Option<i32> {
        self.producers
            .get(&producer_id)
            .map(|entry| entry.coordinator_epoch)
            .filter(|epoch| *epoch >= 0)
    }

    /// Forget producers idle for [`PRODUCER_ID_EXPIRATION_MS`] (checked at
    /// most every [`EXPIRATION_CHECK_INTERVAL_MS`]).
    pub fn expire(&mut self, now_ms: i64) {
        if now_ms - self.last_expiration_check_ms < EXPIRATION_CHECK_INTERVAL_MS {
            return;
        }
        self.last_expiration_check_ms = now_ms;
        let before = self.producers.len();
        self.producers
            .retain(|_, entry| now_ms - entry.last_append_ms < PRODUCER_ID_EXPIRATION_MS);
        self.verifications
            .retain(|_, held| now_ms - held.taken_ms < PRODUCER_ID_EXPIRATION_MS);
        let expired = before - self.producers.len();
        if expired > 0 {
            tracing::debug!(expired, "expired idle producers");
        }
    }

    /// An open without a transaction snapshot ([`Self::open_replay`] and
    /// its replay), at the wall-clock time (tests). A read failure leaves
    /// the table empty (every producer unknown, so none is refused;
    /// duplicates of batches from before the failure are not detected)
    /// rather than keeping the partition offline: the same error will
    /// surface on reads.
    #[cfg(test)]
    pub async fn recover_at_open<I: Io>(io: &I, log: &Log<I>) -> ProducerStateTable {
        match Self::open_replay(io, log, RECOVERY_SCAN_BYTES, None).await {
            Ok(table) => table,
            Err(mut replay) => {
                // A failure is recorded in the replay (`TailReplay::fail`).
                let _ = replay_tail(log, &mut [&mut replay]).await;
                replay.finish(log)
            }
        }
    }

    /// At open: an earlier version's clean-stop file if it still describes
    /// the log (the table, nothing to read); else the replay that rebuilds
    /// it ([`replay_tail`], which can share its read with other rebuilds):
    /// from `snapshot`, the table the transaction state's trusted snapshot
    /// holds with its offset (txn_state.rs), replayed from there to the
    /// log end, exact; without one, about the last `scan_bytes` of the log
    /// (producers older than that are unknown).
    pub async fn open_replay<I: Io>(
        io: &I,
        log: &Log<I>,
        scan_bytes: u64,
        snapshot: Option<(Offset, Vec<u8>)>,
    ) -> Result<ProducerStateTable, ProducerReplay> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            });
        if let Some((from, bytes)) = snapshot {
            match Self::decode_persisted(&bytes, now_ms) {
                Some(table) if table.end_offset <= from && from <= log.log_end_offset() => {
                    // Older than any snapshot holding a table: never used
                    // again, and it could describe a log cut back to its end.
                    remove_legacy_snapshot(io, log);
                    return Err(ProducerReplay::resume(table, from, now_ms));
                }
                _ => {
                    tracing::warn!(dir = %log.dir().display(), snapshot = %from, "the producer table of a transaction snapshot does not decode; reading the log's tail instead");
                }
            }
        }
        if let Some(table) = load_snapshot(io, log, now_ms).await {
            tracing::debug!(dir = %log.dir().display(), producers = table.len(), "producer state loaded from the clean-stop file of an earlier version");
            return Ok(table);
        }
        Err(ProducerReplay::new(log, now_ms, scan_bytes))
    }

    /// The table as an earlier version's clean-stop file valid for a log
    /// ending at `end` whose last batch has CRC `last_crc` (layout:
    /// [`decode_snapshot`]; tests).
    #[cfg(test)]
    pub fn encode_snapshot(&self, end: Offset, last_crc: u32) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(32 + self.producers.len() * 48);
        bytes.extend_from_slice(&SNAPSHOT_MAGIC.to_be_bytes());
        bytes.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&end.value().to_be_bytes());
        bytes.extend_from_slice(&last_crc.to_be_bytes());
        bytes.extend_from_slice(&self.encode_table(Layout::Legacy));
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// The table as it is persisted inside the transaction snapshots
    /// (txn_index.rs). Layout, big-endian: table end offset i64, producer
    /// count u32, then per producer by id: id i64, epoch i16, coordinator
    /// epoch i32, last activity (ms since the epoch) i64, batch count u8,
    /// per batch first and last sequence i32, base and last offset i64,
    /// log-append time i64. The clean-stop file of earlier versions has
    /// the same layout without the last activity.
    pub fn encode_persisted(&self) -> Vec<u8> {
        self.encode_table(Layout::Timed)
    }

    fn encode_table(&self, layout: Layout) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(12 + self.producers.len() * (15 + 5 * 32));
        bytes.extend_from_slice(&self.end_offset.value().to_be_bytes());
        let mut producers: Vec<_> = self.producers.iter().collect();
        producers.sort_by_key(|(producer_id, _)| **producer_id);
        bytes.extend_from_slice(&(producers.len() as u32).to_be_bytes());
        for (producer_id, entry) in producers {
            bytes.extend_from_slice(&producer_id.0.to_be_bytes());
            bytes.extend_from_slice(&entry.epoch.to_be_bytes());
            bytes.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
            if layout == Layout::Timed {
                bytes.extend_from_slice(&entry.last_append_ms.to_be_bytes());
            }
            bytes.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                bytes.extend_from_slice(&batch.first_sequence.to_be_bytes());
                bytes.extend_from_slice(&batch.last_sequence.to_be_bytes());
                bytes.extend_from_slice(&batch.base_offset.value().to_be_bytes());
                bytes.extend_from_slice(&batch.last_offset.value().to_be_bytes());
                bytes.extend_from_slice(&batch.log_append_time_ms.to_be_bytes());
            }
        }
        bytes
    }

    /// Decode [`Self::encode_persisted`]'s bytes at wall-clock `now_ms`:
    /// producers idle for [`PRODUCER_ID_EXPIRATION_MS`] are dropped, as
    /// Kafka drops expired producers when it loads a snapshot. `None`
    /// unless the bytes are exactly one table that keeps the invariants
    /// (module docs): at most [`BATCHES_RETAINED`] batches per producer, in
    /// offset order, all below the table's end offset.
    pub fn decode_persisted(bytes: &[u8], now_ms: i64) -> Option<ProducerStateTable> {
        Self::decode_table(bytes, now_ms, Layout::Timed)
    }

    /// Decode a table of `layout`; a legacy table's producers are last
    /// active at `now_ms`.
    fn decode_table(bytes: &[u8], now_ms: i64, layout: Layout) -> Option<ProducerStateTable> {
        let mut reader = Reader(bytes);
        let mut table = ProducerStateTable {
            end_offset: Offset(reader.i64()?),
            ..ProducerStateTable::empty_at(now_ms)
        };
        for _ in 0..reader.u32()? {
            let producer_id = ProducerId(reader.i64()?);
            let epoch = i16::from_be_bytes(reader.take()?);
            let coordinator_epoch = reader.u32()? as i32;
            let last_append_ms = match layout {
                Layout::Timed => reader.i64()?,
                Layout::Legacy => now_ms,
            };
            let count = usize::from(reader.take::<1>()?[0]);
            if count > BATCHES_RETAINED {
                return None;
            }
            let mut batches: VecDeque<BatchMetadata> = VecDeque::with_capacity(count);
            for _ in 0..count {
                let batch = BatchMetadata {
                    first_sequence: reader.u32()? as i32,
                    last_sequence: reader.u32()? as i32,
                    base_offset: Offset(reader.i64()?),
                    last_offset: Offset(reader.i64()?),
                    log_append_time_ms: reader.i64()?,
                };
                let ordered = batch.base_offset <= batch.last_offset
                    && batch.last_offset < table.end_offset
                    && batches
                        .back()
                        .is_none_or(|previous| previous.last_offset < batch.base_offset);
                if !ordered {
                    return None;
                }
                batches.push_back(batch);
            }
            let entry = ProducerEntry {
                epoch,
                batches,
                last_append_ms,
                coordinator_epoch,
            };
            if now_ms - last_append_ms >= PRODUCER_ID_EXPIRATION_MS {
                continue;
            }
            if table.producers.insert(producer_id, entry).is_some() {
                return None;
            }
        }
        reader.0.is_empty().then_some(table)
    }

    /// Rebuild the table from the tail of `log` (about
    /// [`RECOVERY_SCAN_BYTES`]); `now_ms` becomes every found producer's
    /// last activity. Reads only durable data when called right after
    /// `Log::open`.
    pub async fn recover<I: Io>(log: &Log<I>, now_ms: i64) -> Result<ProducerStateTable, LogError> {
        Self::recover_tail(log, now_ms, RECOVERY_SCAN_BYTES).await
    }

    /// [`Self::recover`] with an explicit window ([`ProducerReplay::new`]).
    pub async fn recover_tail<I: Io>(
        log: &Log<I>,
        now_ms: i64,
        scan_bytes: u64,
    ) -> Result<ProducerStateTable, LogError> {
        let mut replay = ProducerReplay::new(log, now_ms, scan_bytes);
        replay_tail(log, &mut [&mut replay]).await?;
        Ok(replay.done(log))
    }

    /// Replay one stored batch (recovery, and a follower's replicated
    /// appends, txn_state.rs); returns whether it had a producer id and
    /// was recorded as a data batch. A batch below the table's end offset
    /// is skipped: reconcile first where the log may have been cut.
    pub fn replay_batch(&mut self, stored: &[u8], header: &BatchHeader, now_ms: i64) -> bool {
        if header.base_offset() < self.end_offset {
            return false;
        }
        if header.is_control() {
            if header.has_producer_id() {
                self.record_marker(
                    ProducerId(header.producer_id()),
                    header.producer_epoch(),
                    crate::shard::txn_state::read_marker(stored, header)
                        .map_or(-1, |marker| marker.coordinator_epoch),
                    now_ms,
                );
            }
            return false;
        }
        let Ok(Some(batch)) = ProducerBatch::of(header) else {
            return false;
        };
        let log_append_time_ms = if header.timestamp_type() == batch::TimestampType::LogAppendTime {
            header.max_timestamp().0
        } else {
            -1
        };
        self.record(
            &batch,
            header.base_offset(),
            header.last_offset(),
            log_append_time_ms,
            now_ms,
        );
        true
    }
}

/// The rebuild of a producer table from the log's tail, fed by
/// [`replay_tail`].
pub struct ProducerReplay {
    table: ProducerStateTable,
    from: Offset,
    now_ms: i64,
    replayed: usize,
    /// Where the table it continues came from ("snapshot"), or "log tail".
    source: &'static str,
    /// Why the read of its range failed, if it did.
    failed: Option<String>,
}

impl ProducerReplay {
    /// A replay of about the last `scan_bytes` of `log`: its start offset
    /// is estimated from the log's average bytes per offset, and the replay
    /// runs to the log end, so it covers more than `scan_bytes` when the
    /// tail's batches are larger than average. `now_ms` becomes every found
    /// producer's last activity.
    pub fn new<I: Io>(log: &Log<I>, now_ms: i64, scan_bytes: u64) -> ProducerReplay {
        let start = log.log_start_offset();
        let end = log.log_end_offset();
        let size = log.size_bytes().max(1);
        let from = if end <= start || size <= scan_bytes {
            start
        } else {
            // Offsets in the last `scan_bytes`, at the average density.
            let span = end.value() - start.value();
            let tail_offsets = i128::from(span) * i128::from(scan_bytes) / i128::from(size);
            let tail_offsets = i64::try_from(tail_offsets).unwrap_or(span).clamp(1, span);
            Offset(end.value() - tail_offsets)
        };
        ProducerReplay {
            table: ProducerStateTable::empty_at(now_ms),
            from,
            now_ms,
            replayed: 0,
            source: "log tail",
            failed: None,
        }
    }

    /// A replay that continues `table`, a snapshot of the table with
    /// every batch below `from` fed, from `from` to the log end.
    pub fn resume(table: ProducerStateTable, from: Offset, now_ms: i64) -> ProducerReplay {
        ProducerReplay {
            table,
            from,
            now_ms,
            replayed: 0,
            source: "snapshot",
            failed: None,
        }
    }

    /// The rebuilt table, or an empty one if the read failed
    /// (every producer unknown, so none is refused, rather than keeping the
    /// partition offline: the same error will surface on reads).
    pub fn finish<I: Io>(self, log: &Log<I>) -> ProducerStateTable {
        let Some(error) = &self.failed else {
            return self.done(log);
        };
        tracing::error!(
            dir = %log.dir().display(),
            %error,
            "could not rebuild the idempotent producer state; starting empty"
        );
        ProducerStateTable {
            incomplete: true,
            ..ProducerStateTable::empty_at(self.now_ms)
        }
    }

    fn done<I: Io>(self, log: &Log<I>) -> ProducerStateTable {
        tracing::debug!(
            dir = %log.dir().display(),
            source = self.source,
            from = %self.from,
            end = %log.log_end_offset(),
            replayed = self.replayed,
            producers = self.table.len(),
            "producer state recovered"
        );
        self.table
    }
}

impl TailReplay for ProducerReplay {
    fn from(&self) -> Offset {
        self.from
    }

    fn replay(&mut self, stored: &Bytes, header: &BatchHeader) {
        if self.table.replay_batch(stored, header, self.now_ms) {
            self.replayed += 1;
        }
    }

    fn fail(&mut self, error: &LogError) {
        self.failed = Some(error.to_string());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use sluice_engine::batch::BatchBuilder;
    use sluice_engine::io::sim::SimIo;
    use sluice_engine::testing::block_on;
    use sluice_engine::{Committer, LeaderEpoch, LogConfig, TimestampMs};

    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const PRODUCER: ProducerId = ProducerId(7);

    fn batch(epoch: i16, first_sequence: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: PRODUCER,
            epoch,
            first_sequence,
            last_sequence: last_sequence(first_sequence, count - 1),
        }
    }

    /// Check and record like the produce path; returns the check outcome.
    fn produce(
        table: &mut ProducerStateTable,
        log_end: &mut Offset,
        batch: ProducerBatch,
    ) -> Result<SequenceCheck, ProducerStateError> {
        let outcome = table.check(&batch, *log_end)?;
        if outcome == SequenceCheck::Append {
            // Sequences wrap modulo 2^31.
            let span = i64::from(batch.last_sequence) - i64::from(batch.first_sequence);
            let count = span.rem_euclid(1 << 31) + 1;
            let base = *log_end;
            let last = base.plus(count - 1);
            table.record(&batch, base, last, -1, NOW);
            *log_end = last.plus(1);
        }
        Ok(outcome)
    }

    fn duplicate_base(outcome: SequenceCheck) -> Offset {
        match outcome {
            SequenceCheck::Duplicate(original) => original.base_offset,
            SequenceCheck::Append => panic!("expected a duplicate"),
        }
    }

    #[test]
    fn an_unknown_producer_starts_at_any_sequence() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset(100);
        assert_eq!(
            produce(&mut table, &mut end, batch(3, 42, 2)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(end, Offset(102));
        assert_eq!(table.epoch_of(PRODUCER), Some(3));
        assert_eq!(
            produce(&mut table, &mut end, batch(3, 44, 1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn a_duplicate_of_any_of_the_last_five_batches_gets_its_original_offsets() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        let mut bases = Vec::new();
        for index in 0..7 {
            bases.push(end);
            produce(&mut table, &mut end, batch(0, index * 3, 3)).unwrap();
        }
        let end_before = end;
        // The last five (indexes 2..7) are retained.
        for index in 2..7 {
            let outcome = produce(&mut table, &mut end, batch(0, index * 3, 3)).unwrap();
            assert_eq!(duplicate_base(outcome), bases[index as usize]);
            if let SequenceCheck::Duplicate(original) = outcome {
                assert_eq!(original.last_offset, bases[index as usize].plus(2));
            }
        }
        assert_eq!(end, end_before, "duplicates are not appended");
        // Older ones are out of order, not duplicates.
        for index in 0..2 {
            assert_eq!(
                produce(&mut table, &mut end, batch(0, index * 3, 3)),
                Err(ProducerStateError::OutOfOrderSequence {
                    producer_id: PRODUCER,
                    epoch: 0,
                    first_sequence: index * 3,
                    expected: 21,
                })
            );
        }
    }

    #[test]
    fn a_partial_overlap_is_out_of_order_not_a_duplicate() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(0, 0, 5)).unwrap();
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 0, 3)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 5, .. })
        ));
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 2, 5)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 5, .. })
        ));
    }

    #[test]
    fn a_gap_in_sequences_is_out_of_order() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(0, 0, 5)).unwrap();
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 6, 1)),
            Err(ProducerStateError::OutOfOrderSequence {
                producer_id: PRODUCER,
                epoch: 0,
                first_sequence: 6,
                expected: 5,
            })
        );
        assert_eq!(end, Offset(5), "a refused batch changes nothing");
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 5, 1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn an_older_epoch_is_fenced() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(2, 0, 1)).unwrap();
        assert_eq!(
            produce(&mut table, &mut end, batch(1, 1, 1)),
            Err(ProducerStateError::InvalidProducerEpoch {
                producer_id: PRODUCER,
                epoch: 1,
                current_epoch: 2,
            })
        );
    }

    #[test]
    fn a_new_epoch_starts_at_sequence_zero_and_forgets_the_old_batches() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(0, 0, 4)).unwrap();
        produce(&mut table, &mut end, batch(0, 4, 4)).unwrap();
        assert!(matches!(
            produce(&mut table, &mut end, batch(1, 8, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            produce(&mut table, &mut end, batch(1, 0, 4)),
            Ok(SequenceCheck::Append),
            "the same range in a new epoch is a new batch, not a duplicate"
        );
        assert_eq!(end, Offset(12));
        assert_eq!(table.epoch_of(PRODUCER), Some(1));
        // The old epoch's batches are gone and the old epoch is fenced.
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 4, 4)),
            Err(ProducerStateError::InvalidProducerEpoch { .. })
        ));
        assert_eq!(
            duplicate_base(produce(&mut table, &mut end, batch(1, 0, 4)).unwrap()),
            Offset(8)
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(0, 0), 0);
        assert_eq!(last_sequence(10, 4), 14);
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 2, 4), 1);
        assert!(in_sequence(i32::MAX, 0));
        assert!(!in_sequence(i32::MAX, 1));
        assert!(in_sequence(-1, 0));

        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(0, i32::MAX - 9, 5)).unwrap();
        // Ends exactly at i32::MAX: the next starts at 0.
        produce(&mut table, &mut end, batch(0, i32::MAX - 4, 5)).unwrap();
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 0, 3)),
            Ok(SequenceCheck::Append)
        );
        // A batch straddling the wrap.
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        let straddling = batch(0, i32::MAX - 1, 4);
        assert_eq!(straddling.last_sequence, 1);
        produce(&mut table, &mut end, straddling).unwrap();
        assert_eq!(
            duplicate_base(produce(&mut table, &mut end, straddling).unwrap()),
            Offset(0)
        );
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 3, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 2, .. })
        ));
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 2, 1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn producers_are_independent() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        let other = |first_sequence| ProducerBatch {
            producer_id: ProducerId(8),
            ..batch(0, first_sequence, 1)
        };
        produce(&mut table, &mut end, batch(0, 0, 1)).unwrap();
        produce(&mut table, &mut end, other(100)).unwrap();
        produce(&mut table, &mut end, batch(0, 1, 1)).unwrap();
        assert_eq!(
            produce(&mut table, &mut end, other(101)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn batches_lost_by_a_rollback_are_forgotten_and_their_retry_is_appended() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(0, 0, 10)).unwrap();
        produce(&mut table, &mut end, batch(0, 10, 10)).unwrap();
        produce(&mut table, &mut end, batch(0, 20, 10)).unwrap();
        // The engine rolls back the unflushed tail: offsets 10.. are gone.
        end = Offset(10);
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 10, 10)),
            Ok(SequenceCheck::Append),
            "the retry is appended again, not acknowledged as a duplicate"
        );
        assert_eq!(end, Offset(20));
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 30, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 20, .. })
        ));
        // Losing every batch of a producer forgets it.
        let mut end = Offset::ZERO;
        let mut table = ProducerStateTable::new();
        produce(&mut table, &mut end, batch(0, 0, 10)).unwrap();
        table.reconcile(Offset::ZERO);
        assert!(table.is_empty());
        let mut end = Offset::ZERO;
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 5, 1)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn a_marker_of_a_newer_epoch_fences_the_old_one_and_restarts_sequences() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(0, 0, 3)).unwrap();
        table.record_marker(PRODUCER, 1, 4, NOW);
        assert_eq!(table.epoch_of(PRODUCER), Some(1));
        assert_eq!(table.coordinator_epoch_of(PRODUCER), Some(4));
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 3, 1)),
            Err(ProducerStateError::InvalidProducerEpoch { .. })
        ));
        assert!(matches!(
            produce(&mut table, &mut end, batch(1, 5, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            produce(&mut table, &mut end, batch(1, 0, 1)),
            Ok(SequenceCheck::Append)
        );
        // A marker of the same epoch keeps the retained batches.
        table.record_marker(PRODUCER, 1, 4, NOW);
        assert_eq!(
            duplicate_base(produce(&mut table, &mut end, batch(1, 0, 1)).unwrap()),
            Offset(3)
        );
    }

    /// A fenced epoch's request leaves the current producer's verification
    /// (and its lowest sequence) alone.
    #[test]
    fn a_zombie_epoch_leaves_the_current_verification_alone() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        let guard = table.begin_verification(PRODUCER, 3, 0, NOW);
        table.begin_verification(PRODUCER, 3, 5, NOW);
        // A request of the fenced epoch 2 arrives meanwhile.
        let zombie = table.begin_verification(PRODUCER, 2, 9, NOW);
        assert!(!table.holds_verification(PRODUCER, 2, zombie));
        assert!(table.holds_verification(PRODUCER, 3, guard));
        // The current producer's pipeline is still held to its lowest.
        assert!(matches!(
            produce(&mut table, &mut end, batch(3, 5, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 0, .. })
        ));
    }

    /// KIP-890 (Kafka's VerificationStateEntry, checked since 3.6): the
    /// first batch of a producer's pipeline (sequence 0) fails before its
    /// append while the next (sequence 5) is verified too. The producer is
    /// unknown here, so its sequence alone let the second be stored first;
    /// the lowest sequence verified holds it back until the first is
    /// stored, after which the verification is spent and the usual rules
    /// apply.
    #[test]
    fn a_batch_after_the_lowest_verified_sequence_waits_for_the_earlier_ones() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        let guard = table.begin_verification(PRODUCER, 0, 0, NOW);
        // The first batch fails before its append; the second is verified
        // under the same guard, which keeps the lowest sequence.
        assert_eq!(table.begin_verification(PRODUCER, 0, 5, NOW), guard);
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 5, 3)),
            Err(ProducerStateError::OutOfOrderSequence {
                first_sequence: 5,
                expected: 0,
                ..
            })
        ));
        assert!(table.is_empty(), "nothing recorded");
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 0, 5)),
            Ok(SequenceCheck::Append)
        );
        // The produce path spends the guard with the transaction's first
        // append; the retried second batch follows in sequence.
        table.end_verification(PRODUCER);
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 5, 3)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(end, Offset(8));

        // A lower sequence verified later lowers it.
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        table.begin_verification(PRODUCER, 0, 5, NOW);
        table.begin_verification(PRODUCER, 0, 0, NOW);
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 5, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 0, .. })
        ));

        // A verification of a newer epoch starts its lowest sequence again;
        // other producers are not held by it.
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        table.begin_verification(PRODUCER, 1, 3, NOW);
        table.begin_verification(PRODUCER, 2, 4, NOW);
        assert!(matches!(
            produce(&mut table, &mut end, batch(2, 6, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 4, .. })
        ));
        let other = ProducerBatch {
            producer_id: ProducerId(8),
            ..batch(2, 6, 1)
        };
        assert_eq!(
            produce(&mut table, &mut end, other),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(
            produce(&mut table, &mut end, batch(2, 4, 2)),
            Ok(SequenceCheck::Append)
        );

        // A marker ends the verification (its transaction ended).
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        table.begin_verification(PRODUCER, 0, 0, NOW);
        table.record_marker(PRODUCER, 0, 0, NOW);
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 0, 1)),
            Ok(SequenceCheck::Append)
        );

        // A producer known here: duplicates are still acknowledged, a
        // batch after the lowest verified sequence waits all the same.
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(0, 0, 2)).unwrap();
        table.begin_verification(PRODUCER, 0, 2, NOW);
        table.begin_verification(PRODUCER, 0, 4, NOW);
        assert_eq!(
            duplicate_base(produce(&mut table, &mut end, batch(0, 0, 2)).unwrap()),
            Offset(0)
        );
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 4, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected: 2, .. })
        ));
        assert_eq!(
            produce(&mut table, &mut end, batch(0, 2, 2)),
            Ok(SequenceCheck::Append)
        );
    }

    /// The lowest verified sequence follows the wrap from `i32::MAX` to 0:
    /// a pipeline straddling it is held back like any other (Kafka's plain
    /// comparison let the batch after the wrap through first).
    #[test]
    fn the_lowest_verified_sequence_follows_the_wrap() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        let before_wrap = i32::MAX - 1;
        table.begin_verification(PRODUCER, 0, before_wrap, NOW);
        table.begin_verification(PRODUCER, 0, 1, NOW);
        assert!(matches!(
            produce(&mut table, &mut end, batch(0, 1, 1)),
            Err(ProducerStateError::OutOfOrderSequence { expected, .. }) if expected == before_wrap
        ));
        assert_eq!(
            produce(&mut table, &mut end, batch(0, before_wrap, 3)),
            Ok(SequenceCheck::Append)
        );
        assert!(sequence_precedes(0, 1));
        assert!(sequence_precedes(i32::MAX, 0));
        assert!(!sequence_precedes(1, 0));
        assert!(!sequence_precedes(3, 3));
        assert!(!sequence_precedes(0, i32::MAX));
    }

    #[test]
    fn idle_producers_expire() {
        let mut table = ProducerStateTable::new();
        let mut end = Offset::ZERO;
        produce(&mut table, &mut end, batch(0, 0, 1)).unwrap();
        table.expire(NOW + PRODUCER_ID_EXPIRATION_MS - 1);
        assert_eq!(table.len(), 1);
        table.expire(NOW + PRODUCER_ID_EXPIRATION_MS + EXPIRATION_CHECK_INTERVAL_MS);
        assert!(table.is_empty());
    }

    #[test]
    fn producer_fields_come_from_the_batch_header() {
        let plain = BatchBuilder::new()
            .record(None, Some(&b"v"[..]), TimestampMs(NOW))
            .build();
        let header = BatchHeader::parse(&plain).unwrap();
        assert_eq!(ProducerBatch::of(&header), Ok(None));

        let idempotent = BatchBuilder::new()
            .producer(9, 2, i32::MAX)
            .record(None, Some(&b"a"[..]), TimestampMs(NOW))
            .record(None, Some(&b"b"[..]), TimestampMs(NOW))
            .build();
        let header = BatchHeader::parse(&idempotent).unwrap();
        assert_eq!(
            ProducerBatch::of(&header),
            Ok(Some(ProducerBatch {
                producer_id: ProducerId(9),
                epoch: 2,
                first_sequence: i32::MAX,
                last_sequence: 0,
            }))
        );

        let no_sequence = BatchBuilder::new()
            .producer(9, 2, -1)
            .record(None, Some(&b"a"[..]), TimestampMs(NOW))
            .build();
        let header = BatchHeader::parse(&no_sequence).unwrap();
        let error = ProducerBatch::of(&header).unwrap_err();
        assert_eq!(error.kafka_error_name(), "INVALID_RECORD");
    }

    fn open_log(io: &SimIo) -> (Log<SimIo>, Committer<SimIo>) {
        let committer = Committer::new(io.clone());
        let config = LogConfig {
            segment_bytes: 64 << 10,
            preallocate_step_bytes: 16 << 10,
            chunk_size_bytes: 16 << 10,
            retention_ms: None,
            ..LogConfig::default()
        };
        let log = block_on(Log::open(
            io.clone(),
            Path::new("/data/topic-0"),
            config,
            &committer,
        ))
        .unwrap();
        (log, committer)
    }

    fn producer_batch(producer_id: i64, epoch: i16, sequence: i32, count: usize) -> Bytes {
        let mut builder = BatchBuilder::new();
        builder.producer(producer_id, epoch, sequence);
        for index in 0..count {
            builder.record(None, Some(&[index as u8; 100][..]), TimestampMs(NOW));
        }
        builder.build()
    }

    #[test]
    fn recovery_replays_the_log_and_detects_duplicates_after_a_restart() {
        let io = SimIo::new(11);
        let (log, committer) = open_log(&io);
        let mut live = ProducerStateTable::new();
        let mut sequences = [0i32; 3];
        for round in 0..30 {
            let producer = round % 3;
            let records = if round % 4 == 0 {
                BatchBuilder::new()
                    .record(None, Some(&b"plain"[..]), TimestampMs(NOW))
                    .build()
            } else {
                let data = producer_batch(producer as i64, 0, sequences[producer], 3);
                sequences[producer] += 3;
                data
            };
            let header = BatchHeader::parse(&records).unwrap();
            let fields = ProducerBatch::of(&header).unwrap();
            if let Some(fields) = &fields {
                assert_eq!(
                    live.check(fields, log.log_end_offset()),
                    Ok(SequenceCheck::Append)
                );
            }
            let appended = log.append(&records, LeaderEpoch(0)).unwrap();
            if let Some(fields) = &fields {
                live.record(fields, appended.base_offset, appended.last_offset, -1, NOW);
            }
        }
        block_on(committer.flush_round());
        block_on(log.close()).unwrap();

        let io = io.crash();
        let (log, _committer) = open_log(&io);
        let mut recovered = block_on(ProducerStateTable::recover(&log, NOW)).unwrap();
        assert_eq!(recovered.len(), 3);
        for producer in 0..3 {
            let id = ProducerId(producer);
            let live_entry = &live.producers[&id];
            let recovered_entry = &recovered.producers[&id];
            assert_eq!(recovered_entry.epoch, live_entry.epoch);
            assert_eq!(recovered_entry.batches, live_entry.batches);
            // The last batch, retried, is a duplicate with its offsets.
            let last = *live_entry.batches.back().unwrap();
            let retry = ProducerBatch {
                producer_id: id,
                epoch: 0,
                first_sequence: last.first_sequence,
                last_sequence: last.last_sequence,
            };
            assert_eq!(
                recovered.check(&retry, log.log_end_offset()),
                Ok(SequenceCheck::Duplicate(last))
            );
        }
    }

    /// A clean stop's snapshot is loaded without reading the log when the
    /// log still ends where it did with the same last batch; after another
    /// append (or with a damaged file) it is ignored and the tail scan
    /// rebuilds the table.
    #[test]
    fn the_clean_stop_snapshot_is_used_only_for_the_log_it_describes() {
        let io = SimIo::new(13);
        let (log, committer) = open_log(&io);
        let mut live = ProducerStateTable::new();
        for round in 0..12_i32 {
            let producer = i64::from(round % 2);
            let records = producer_batch(producer, 1, (round / 2) * 4, 4);
            let header = BatchHeader::parse(&records).unwrap();
            let fields = ProducerBatch::of(&header).unwrap().unwrap();
            let appended = log.append(&records, LeaderEpoch(0)).unwrap();
            live.record(&fields, appended.base_offset, appended.last_offset, -1, NOW);
        }
        live.record_marker(ProducerId(1), 2, 5, NOW);
        block_on(committer.flush_round());
        block_on(save_snapshot(&io, &log, &live)).unwrap();
        let bytes = io.read_file(&log.dir().join(SNAPSHOT_FILE)).unwrap();

        let loaded = block_on(load_snapshot(&io, &log, NOW + 5)).expect("a valid snapshot");
        assert_eq!(loaded.describe().len(), 2);
        for (id, entry) in &live.producers {
            let restored = &loaded.producers[id];
            assert_eq!(restored.epoch, entry.epoch);
            assert_eq!(restored.batches, entry.batches);
            assert_eq!(restored.coordinator_epoch, entry.coordinator_epoch);
            assert_eq!(restored.last_append_ms, NOW + 5);
        }
        assert_eq!(loaded.end_offset, live.end_offset);
        // recover_at_open takes the same table.
        let opened = block_on(ProducerStateTable::recover_at_open(&io, &log));
        assert_eq!(
            opened.producers[&ProducerId(0)].batches,
            live.producers[&ProducerId(0)].batches
        );

        // Every single damaged byte is refused.
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert!(decode_snapshot(&damaged, NOW).is_none(), "byte {at}");
        }
        assert!(decode_snapshot(&bytes[..bytes.len() - 1], NOW).is_none());

        // One more append: the snapshot no longer describes the log.
        let records = producer_batch(0, 1, 24, 4);
        let _appended = log.append(&records, LeaderEpoch(0)).unwrap();
        block_on(committer.flush_round());
        assert!(block_on(load_snapshot(&io, &log, NOW)).is_none());
        let rebuilt = block_on(ProducerStateTable::recover_at_open(&io, &log));
        assert_eq!(
            rebuilt.producers[&ProducerId(0)]
                .batches
                .back()
                .unwrap()
                .last_sequence,
            27
        );
    }

    /// The snapshot keeps each producer's last activity: a load drops the
    /// producers idle past the expiration, as Kafka's does, so restarts do
    /// not keep every producer ever seen; a failed rebuild is never
    /// persisted as the log's table.
    #[test]
    fn a_persisted_table_keeps_last_activity_and_expires_at_load() {
        let mut table = ProducerStateTable::new();
        let batch = |producer_id| ProducerBatch {
            producer_id: ProducerId(producer_id),
            epoch: 0,
            first_sequence: 0,
            last_sequence: 0,
        };
        table.record(&batch(1), Offset(0), Offset(0), -1, NOW);
        table.record(&batch(2), Offset(1), Offset(1), -1, NOW + 1000);
        let bytes = table.encode_persisted();
        let later = NOW + PRODUCER_ID_EXPIRATION_MS + 500;
        let loaded = ProducerStateTable::decode_persisted(&bytes, later).unwrap();
        assert_eq!(loaded.epoch_of(ProducerId(1)), None, "expired");
        assert_eq!(loaded.producers[&ProducerId(2)].last_append_ms, NOW + 1000);
        assert_eq!(loaded.end_offset, Offset(2));
        let soon = ProducerStateTable::decode_persisted(&bytes, NOW + 5).unwrap();
        assert_eq!(soon.len(), 2);
        for cut in 0..bytes.len() {
            assert!(ProducerStateTable::decode_persisted(&bytes[..cut], NOW).is_none());
        }
        assert!(!table.is_incomplete());
        let failed = ProducerReplay {
            failed: Some("read error".to_string()),
            ..ProducerReplay::resume(ProducerStateTable::new(), Offset(0), NOW)
        };
        let io = SimIo::new(3);
        let (log, _committer) = open_log(&io);
        assert!(failed.finish(&log).is_incomplete());
    }

    #[test]
    fn recovery_reads_only_the_tail_of_a_large_log() {
        let io = SimIo::new(12);
        let (log, committer) = open_log(&io);
        // Producer 1 writes early, producer 2 at the end.
        for sequence in 0..10 {
            let records = producer_batch(1, 0, sequence * 3, 3);
            let _appended = log.append(&records, LeaderEpoch(0)).unwrap();
        }
        for _ in 0..200 {
            let records = BatchBuilder::new()
                .record(None, Some(&[0u8; 1000][..]), TimestampMs(NOW))
                .build();
            let _appended = log.append(&records, LeaderEpoch(0)).unwrap();
        }
        for sequence in 0..3 {
            let records = producer_batch(2, 0, sequence, 1);
            let _appended = log.append(&records, LeaderEpoch(0)).unwrap();
        }
        block_on(committer.flush_round());
        let tail = block_on(ProducerStateTable::recover_tail(&log, NOW, 16 << 10)).unwrap();
        assert_eq!(tail.epoch_of(ProducerId(2)), Some(0));
        assert_eq!(tail.epoch_of(ProducerId(1)), None, "outside the window");
        let whole = block_on(ProducerStateTable::recover(&log, NOW)).unwrap();
        assert_eq!(whole.len(), 2);
        assert_eq!(
            whole.producers[&ProducerId(1)].batches.len(),
            BATCHES_RETAINED
        );
    }
}
