//! Opening a log: checkpoint, segment scan, torn-tail truncation, index
//! rebuild.
//!
//! The checkpoint file promises: every segment whose base offset is below
//! `recovery_base` was fully durable, trimmed to its size and indexed when the
//! checkpoint was written, so recovery trusts its length and (if valid) its
//! index files; the segment at `recovery_base` is trusted up to
//! `recovery_position`. Everything else is scanned batch by batch: length,
//! magic, CRC-32C, record framing and offset continuity. The first batch that
//! fails ends the log: the file is truncated there (and synced), later
//! segments are deleted. Only bytes that were never acknowledged can be lost
//! this way, because an append is acknowledged only after the fdatasync that
//! covers it, and a durable batch scans valid.
//!
//! Compaction (compact.rs) rewrites only trusted segments, so only trusted
//! bytes may hold offset gaps and batches with missing records: there
//! batches may skip offsets (`batch::validate_compacted`), and a
//! wholly valid trusted segment may end before its successor's base (its
//! last records were compacted away; its offsets reach up to that base).
//! Everything after the trusted prefix must continue exactly, as before.
//!
//! ## No valid checkpoint
//!
//! A missing or damaged checkpoint (bit rot, an operator removing it)
//! vouches for nothing, yet the segments may hold what compaction or a
//! leader's cleaner left (a follower's copies). Held to the strict rules,
//! the first such gap ended the log and every later segment was deleted:
//! acknowledged records of every compacted topic lost. So, with no valid
//! checkpoint:
//!
//! 1. every batch is validated in the compacted form, and a batch may start
//!    past its predecessor's end only when the offsets after it confirm
//!    it: the next batch of the segment starts at or after its end (or, for
//!    the last batch of a sealed whole segment, the successor's base does).
//!    The last batch of a segment after a gap that nothing confirms is cut,
//!    as a torn one is;
//! 2. a segment that is not the last one is *sealed whole* when its file is
//!    valid in that form to its exact end and its offset index file is a
//!    sealed segment's (magic "SLOS": written by finalize or compaction once
//!    the file was final; not the "SLOX" one a clean close writes for the
//!    active segment, which the segment may outgrow) and names exactly the
//!    batches found (each entry a batch start with its offset, none left
//!    over). Such a segment may end before its successor's base, or be
//!    empty, as a trusted one may. If it ends before a successor that is
//!    then removed (empty), it stays sealed and the log goes on at that
//!    base in a fresh segment;
//! 3. everything else keeps the strict rules: a segment that is not sealed
//!    whole must end exactly at its successor's base, or the log ends there.
//!
//! Why this accepts nothing the strict rules exist to cut:
//! - a torn write fails the CRC or reads as zeros, in either form; the
//!   compacted form only relaxes the record count and offsetDeltas, which
//!   the CRC covers;
//! - the base offset lies outside the CRC, so offset continuity was also
//!   the only check of it: rule 1 keeps that check, since a damaged base
//!   offset is confirmed by the batch after it only if it moved by no more
//!   than a compaction gap there was room for (never in a contiguous run);
//! - stale bytes past the valid data: preallocated space is zeros, a
//!   truncation syncs its cut before anything is written after it, and
//!   recovery cuts and syncs at the first invalid byte. Only a flush whose
//!   write failed for want of space, with its tail rolled back (not the
//!   broker's mode, `Log::keep_unflushed_when_full`), leaves batches past
//!   the durable size; rule 1 can then keep some of them after a gap where
//!   the new data happens to end exactly at one of their boundaries and a
//!   second one confirms it: records whose appends failed (Kafka's "may
//!   have been written"), never an acknowledged one lost;
//! - a segment ends at a batch boundary before its successor's base in two
//!   ways: trimmed (finalize, flush step 3b, a truncation, compaction's
//!   rename), each after its data was durable; or untrimmed, its length
//!   extension lost with the tail behind it (the simulated disk extends a
//!   file by the sectors that land; a real one when the preallocation a
//!   clean close trimmed off was not made durable again). The second was
//!   never finalized, so it has no sealed segment's index file (at most the
//!   active one's from a clean close, naming a prefix of its batches) and
//!   rule 2 does not apply: the successor, whose records were never
//!   acknowledged, goes as before. Segments sealed by an earlier version
//!   carry the active magic too: the first open with a valid checkpoint,
//!   which vouches for them, rewrites their index files sealed (once), and
//!   until then rule 2 does not apply to them.
//!
//! What stays strict, by choice: the last batch of the log after a gap (a
//! follower fetches it again); a sealed segment whose index file is missing
//! (a crash between compaction's rename and its index write) or does not
//! match. What rule 2 could accept that was never meant to stay: a
//! truncation that stopped after its cut but before the removal of the
//! segments after it was durable, when its checkpoint (written first) was
//! lost too, and the cut lay after the cut segment's last index entry.
//! The open then writes a checkpoint that vouches for the sealed segments
//! and, when it kept compacted batches in it, for the whole active segment
//! (synced first), so the next crash keeps them.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::{self, BatchHeader};
use crate::config::LogConfig;
use crate::constants::{BATCH_HEADER_SIZE, BATCH_SIZE_MAX, PAGE_SIZE};
use crate::epochs::LeaderEpochCache;
use crate::error::LogError;
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::Io;
use crate::log::LogState;
use crate::segment::buffer::{page_ceil, page_floor};
use crate::segment::{self, Segment};
use crate::types::{Offset, Position, TimestampMs};

const CHECKPOINT_MAGIC: u32 = u32::from_be_bytes(*b"SLCP");
const CHECKPOINT_VERSION: u32 = 1;
const CHECKPOINT_SIZE: usize = 36;
const SCAN_WINDOW_BYTES: usize = 1 << 20;

/// What a new log's checkpoint says, and what a missing one with no
/// segment reads as: start at 0, nothing to trust.
const NEW_LOG_CHECKPOINT: Checkpoint = Checkpoint {
    log_start: Offset::ZERO,
    recovery_base: Offset::ZERO,
    recovery_position: 0,
};

/// The durable promise described in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub log_start: Offset,
    pub recovery_base: Offset,
    pub recovery_position: u64,
}

impl Checkpoint {
    /// magic u32, version u32, log_start i64, recovery_base i64,
    /// recovery_position u64, CRC-32C u32 of the preceding 32 bytes; all
    /// big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(CHECKPOINT_SIZE);
        bytes.extend_from_slice(&CHECKPOINT_MAGIC.to_be_bytes());
        bytes.extend_from_slice(&CHECKPOINT_VERSION.to_be_bytes());
        bytes.extend_from_slice(&self.log_start.value().to_be_bytes());
        bytes.extend_from_slice(&self.recovery_base.value().to_be_bytes());
        bytes.extend_from_slice(&self.recovery_position.to_be_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        if bytes.len() != CHECKPOINT_SIZE {
            return None;
        }
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let long = |at: usize| {
            let mut value = [0u8; 8];
            value.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(value)
        };
        if word(0) != CHECKPOINT_MAGIC
            || word(4) != CHECKPOINT_VERSION
            || word(32) != crc32c::crc32c(&bytes[..32])
        {
            return None;
        }
        Some(Checkpoint {
            log_start: Offset(long(8) as i64),
            recovery_base: Offset(long(16) as i64),
            recovery_position: long(24),
        })
    }
}

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoint")
}

/// What opening a log found and repaired (`Log::recovery`). After a clean
/// close everything is covered by the checkpoint and only the last indexed
/// batch of the active segment is re-read; anything more means the previous
/// process stopped without closing the log (a crash, kill -9, power loss)
/// or the files were damaged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments: usize,
    /// Segments existed but no valid checkpoint: every one was scanned.
    pub checkpoint_missing: bool,
    /// Bytes validated batch by batch (CRC, framing, offsets).
    pub bytes_scanned: u64,
    /// Of those, valid bytes the checkpoint did not cover: data written
    /// after the last checkpoint, kept.
    pub bytes_past_checkpoint: u64,
    /// Segments cut at an invalid or torn batch, or (no valid checkpoint)
    /// before a last batch after an offset gap nothing confirms
    /// (preallocated zeros after the last valid batch are not counted:
    /// they are no data).
    pub segments_truncated: usize,
    /// Bytes cut from those segments, from their first invalid byte to the
    /// end of the file.
    pub bytes_truncated: u64,
    /// Segments deleted: empty after a cut, or after a gap in the offsets.
    pub segments_removed: usize,
    /// Segments whose missing or damaged index files were rebuilt.
    pub indexes_rebuilt: usize,
    /// With no valid checkpoint: batches kept in the compacted form (after
    /// an offset gap the offsets after them confirm, or with records
    /// missing), as compaction or a leader's cleaner leaves them. The
    /// strict rules would have ended the log at the first.
    pub compacted_batches_kept: u64,
    /// With no valid checkpoint: sealed segments kept although they end
    /// before their successor's base (compaction removed their last
    /// records, or retention their successor), each valid to its exact end
    /// and named batch by batch by its offset index file. The strict rules
    /// would have removed every segment after the first.
    pub segments_ending_early_kept: usize,
    /// Wall time of the whole open.
    pub duration: Duration,
}

impl RecoveryReport {
    /// True when the open had to do more than after a clean close.
    pub fn was_needed(&self) -> bool {
        (self.checkpoint_missing && self.segments > 0)
            || self.bytes_past_checkpoint > 0
            || self.segments_truncated > 0
            || self.segments_removed > 0
            || self.indexes_rebuilt > 0
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} segments, {} bytes scanned ({} past the checkpoint{}), {} bytes truncated \
             in {} segments, {} segments removed, {} indexes rebuilt, {} compacted batches \
             and {} segments ending early kept without a checkpoint, in {} ms",
            self.segments,
            self.bytes_scanned,
            self.bytes_past_checkpoint,
            if self.checkpoint_missing {
                "; no valid checkpoint"
            } else {
                ""
            },
            self.bytes_truncated,
            self.segments_truncated,
            self.segments_removed,
            self.indexes_rebuilt,
            self.compacted_batches_kept,
            self.segments_ending_early_kept,
            self.duration.as_millis()
        )
    }
}

/// Where a segment scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScanStop {
    /// At the end of the file.
    EndOfFile,
    /// At zeros: preallocated space never written.
    Zeros,
    /// At a batch that is torn, damaged, or does not continue the offsets.
    Invalid,
}

/// Open the log directory (creating it if needed) and rebuild the log's
/// in-memory state. See the module docs.
pub(crate) async fn recover<I: Io>(
    io: &I,
    dir: &Path,
    config: LogConfig,
) -> Result<(LogState<I::File>, RecoveryReport), LogError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let names = match io.list_dir(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            io.create_dir_all(dir)
                .map_err(|error| LogError::io(dir, error))?;
            // Make the new directory (and any new parents) durable: sync
            // every ancestor, since we do not know which ones were created.
            for ancestor in dir
                .ancestors()
                .skip(1)
                .filter(|path| !path.as_os_str().is_empty())
            {
                io.sync_dir(ancestor)
                    .await
                    .map_err(|error| LogError::io(ancestor, error))?;
            }
            Vec::new()
        }
        Err(error) => return Err(LogError::io(dir, error)),
    };
    let mut bases: Vec<Offset> = names
        .iter()
        .filter_map(|name| segment::parse_log_file_name(name))
        .collect();
    bases.sort();
    report.segments = bases.len();
    for name in names.iter().filter(|name| name.ends_with(".tmp")) {
        remove_quietly(io, &dir.join(name));
    }
    let on_disk = match io.read_file(&checkpoint_path(dir)) {
        Ok(bytes) => Checkpoint::decode(&bytes),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(LogError::io(checkpoint_path(dir), error)),
    };
    let checkpoint = on_disk.unwrap_or_else(|| {
        if !bases.is_empty() {
            // A log whose only segment starts at 0 may never have written
            // one (a new log writes it at its first seal or clean close):
            // scanning it is what the checkpoint would have said.
            if bases[..] != [Offset::ZERO] {
                tracing::warn!(dir = %dir.display(), "no valid checkpoint: scanning every segment");
            }
            report.checkpoint_missing = true;
        }
        Checkpoint {
            log_start: bases.first().copied().unwrap_or(Offset::ZERO),
            recovery_base: bases.first().copied().unwrap_or(Offset::ZERO),
            recovery_position: 0,
        }
    });

    // Nothing vouches for any segment: the rules for the compacted form
    // change (module docs).
    let unvouched = on_disk.is_none();
    let interval = u64::from(config.index_interval_bytes);
    let mut segments: VecDeque<Segment<I::File>> = VecDeque::new();
    let mut active_scan_start = 0u64;
    let mut cut = false;
    let mut removed_any = false;
    // The previous kept segment is sealed whole (trusted and its file wholly
    // valid, or with no valid checkpoint, `sealed_whole` below): if it ends
    // before the next base, compaction removed its last records.
    let mut previous_may_end_early = false;
    // The last kept segment holds batches in the compacted form that no
    // checkpoint vouched for.
    let mut last_kept_compacted = false;
    // The last kept segment's offsets were raised to a successor's base,
    // past its last batch (it ends early). If that successor is then
    // removed (empty), the segment stays sealed and a fresh active segment
    // starts at that base: appended to, the log would hold a gap after its
    // last batch that nothing vouches for, which the next crash's strict
    // scan cuts with everything appended since.
    let mut last_raised = false;
    for (position_in_list, &base) in bases.iter().enumerate() {
        if cut {
            remove_segment(io, dir, base);
            removed_any = true;
            report.segments_removed += 1;
            continue;
        }
        // Only up to the checkpoint's recovery base: a successor beyond it
        // means the segment at the recovery base is missing, and its
        // offsets with it (a gap no compaction made). With no valid
        // checkpoint there is no such bound; a missing segment between two
        // kept ones was removed (retention removes from the front, and its
        // removals may land in any order).
        if previous_may_end_early
            && (base <= checkpoint.recovery_base || unvouched)
            && let Some(previous) = segments.back_mut()
            && previous.next_offset < base
        {
            previous.next_offset = base;
            if unvouched && !last_raised {
                report.segments_ending_early_kept += 1;
            }
            last_raised = true;
        }
        if let Some(previous) = segments.back()
            && previous.next_offset != base
        {
            tracing::error!(dir = %dir.display(), %base, expected = %previous.next_offset,
                "segment offsets are not contiguous; dropping this and later segments");
            cut = true;
            remove_segment(io, dir, base);
            removed_any = true;
            report.segments_removed += 1;
            continue;
        }
        let path = segment::log_path(dir, base);
        let file = io
            .open(&path, false)
            .await
            .map_err(|error| LogError::io(&path, error))?;
        let file_len = io
            .file_len(&file)
            .map_err(|error| LogError::io(&path, error))?;
        let mut segment = Segment::new(base, config.chunk_size_bytes);
        segment.last_append_ms = io.modified_ms(&file).unwrap_or_else(|_| io.now_ms());
        let trusted = base < checkpoint.recovery_base;
        let trusted_size = if trusted {
            file_len
        } else if base == checkpoint.recovery_base {
            checkpoint.recovery_position.min(file_len)
        } else {
            0
        };
        // Indexes from disk, limited to the trusted part; then scan from the
        // last indexed batch on (re-indexing it).
        let loaded = load_indexes(io, dir, &mut segment, trusted_size, &mut report);
        let scan_start = loaded.scan_start;
        let next_base = bases.get(position_in_list + 1).copied();
        if next_base.is_none() {
            active_scan_start = scan_start;
        }
        // With no valid checkpoint, a sealed segment's offset index file is
        // the witness that its file is final (`sealed_whole` below).
        let index_entries = if unvouched && next_base.is_some() {
            io.read_file(&segment::index_path(dir, base))
                .ok()
                .and_then(|bytes| OffsetIndex::decode_sealed(&bytes))
                .map(|index| index.entries().to_vec())
        } else {
            None
        };
        let rules = ScanRules {
            interval,
            trusted_size,
            unvouched,
            index_entries,
        };
        let scanned = scan(io, &file, file_len, &mut segment, scan_start, &rules)
            .await
            .map_err(|error| LogError::io(&path, error))?;
        let (mut valid_end, mut stop) = (scanned.end, scanned.stop);
        let mut compacted_here = scanned.compacted_kept;
        // Whether this segment may end before its successor's base, or be
        // empty, with its predecessor reaching up to that base. Trusted and
        // wholly valid; or, with no valid checkpoint: not the last segment,
        // its file valid in the compacted form to its exact end (a sealed
        // segment is trimmed to its size before anything trusts it; a
        // torn or unfinished one ends in zeros or garbage) and its offset
        // index file naming exactly the batches found (written only once
        // the file was final: a segment whose tail was lost never had one).
        let mut sealed_whole = if unvouched {
            next_base.is_some() && stop == ScanStop::EndOfFile && scanned.index_matches
        } else {
            trusted && valid_end == file_len
        };
        if let Some(batch) = scanned.unconfirmed {
            if sealed_whole && next_base.is_some_and(|next| batch.next <= next) {
                // The successor's base confirms the offsets of the last batch.
                batch.note_in(&mut segment, interval);
                compacted_here += 1;
            } else {
                // Nothing confirms where this batch's offsets lie: a damaged
                // base offset (outside the CRC) looks the same. The strict
                // rule holds: the segment ends before it.
                tracing::warn!(dir = %dir.display(), %base, position = batch.position,
                    batch_base = %batch.base, expected = %segment.next_offset,
                    "no valid checkpoint: cutting a last batch after an offset gap that nothing confirms");
                valid_end = batch.position;
                stop = ScanStop::Invalid;
                sealed_whole = false;
            }
        }
        report.compacted_batches_kept += compacted_here;
        report.bytes_scanned += valid_end.saturating_sub(scan_start);
        report.bytes_past_checkpoint += valid_end.saturating_sub(scan_start.max(trusted_size));
        if stop == ScanStop::Invalid {
            report.segments_truncated += 1;
            report.bytes_truncated += file_len - valid_end;
        }
        if valid_end < file_len {
            if valid_end < trusted_size {
                tracing::error!(dir = %dir.display(), %base, valid_end, trusted_size,
                    "invalid data inside the checkpointed part of a segment; truncating");
            }
            // A torn or unacknowledged tail, or preallocated zeros: cut the
            // file at the first invalid byte so no stale bytes remain past it.
            io.set_len(&file, valid_end)
                .await
                .map_err(|error| LogError::io(&path, error))?;
            io.sync_data(&file)
                .await
                .map_err(|error| LogError::io(&path, error))?;
            // A sealed segment may legitimately end in preallocated zeros
            // (crash before it was trimmed); whether later segments still
            // follow on is decided by the continuity check of the next one.
        }
        // A trusted segment whose index files were valid, its offset index
        // a sealed segment's, and whose file is exactly its batches is
        // already finalized: do not rewrite anything. One sealed by an
        // earlier version has the active segment's magic: finalize rewrites
        // its index files once, so that a later open without a valid
        // checkpoint can take them as the witness that its file is final
        // (rule 2 of the module docs).
        if trusted && loaded.loaded && loaded.sealed && valid_end == file_len {
            segment.sealed = true;
            segment.finalized = true;
        }
        segment.durable_size = segment.size;
        segment.allocated = segment.size;
        segment.file = Some(file);
        // A segment holding records has a durable directory entry: every
        // writer syncs the directory before writing records into a new file
        // (a flush's step 1, compaction, starting over). An empty one may
        // not (created by a flush that stopped before its directory sync,
        // e.g. no space to preallocate, and found again after a process
        // kill, not a machine crash): its next flush syncs the directory
        // before any record in it is acknowledged.
        segment.entry_durable = !segment.is_empty();
        segment.durable_mark = segment.mark();
        if segment.is_empty() && !segments.is_empty() {
            // An empty segment after others holds nothing: drop it (a
            // trusted one was emptied by compaction; its predecessor then
            // reaches up to the next base). An untrusted one lost its
            // content: whatever follows must continue exactly.
            remove_segment(io, dir, base);
            removed_any = true;
            report.segments_removed += 1;
            previous_may_end_early &= sealed_whole;
            continue;
        }
        previous_may_end_early = sealed_whole;
        last_kept_compacted = compacted_here > 0;
        last_raised = false;
        segments.push_back(segment);
    }

    // Every segment but the last is sealed; make sure each is finalized.
    let count = segments.len();
    for (position, segment) in segments.iter_mut().enumerate() {
        if position + 1 == count {
            break;
        }
        finalize(io, dir, segment).await?;
    }

    let mut log_start = checkpoint.log_start;
    // The last file is a finalized segment when its successor was rolled but
    // never created: keep it sealed and start a fresh active segment at the
    // successor's base, which the checkpoint names (a compacted last segment
    // may end before it, or be empty). Likewise when it ends early before a
    // successor found empty and removed (`last_raised`).
    let last_is_sealed = last_raised
        || segments
            .back()
            .is_some_and(|last| last.base < checkpoint.recovery_base);
    if last_is_sealed
        && previous_may_end_early
        && let Some(last) = segments.back_mut()
        && last.next_offset < checkpoint.recovery_base
    {
        last.next_offset = checkpoint.recovery_base;
    }
    if let Some(last) = segments.back_mut()
        && last_is_sealed
    {
        finalize(io, dir, last).await?;
    }
    let next_base = match segments.back() {
        None => Some(log_start),
        Some(last) if last_is_sealed => Some(last.next_offset),
        Some(_) => None,
    };
    if let Some(base) = next_base {
        let mut segment = Segment::new(base, config.chunk_size_bytes);
        segment.buffer.reset(0, &[]);
        segments.push_back(segment);
        active_scan_start = 0;
    }
    let Some(active) = segments.back_mut() else {
        unreachable!("an active segment was just ensured");
    };
    if next_base.is_none() {
        let tail_start = page_floor(active.size);
        let tail_page = match &active.file {
            Some(file) if active.size > tail_start => {
                let page = io
                    .read_at(file, tail_start, PAGE_SIZE)
                    .await
                    .map_err(|error| LogError::io(segment::log_path(dir, active.base), error))?;
                page.slice(..(active.size - tail_start) as usize)
            }
            _ => Bytes::new(),
        };
        active.buffer.reset(active.size, &tail_page);
        active.sealed = false;
        active.finalized = false;
    }
    let active_base = active.base;
    // What recovery trusted of the active segment stays trusted (bounded by
    // what the scan found valid): it may hold batches only the checkpoint
    // vouches for (a follower's copy of its leader's compacted batches,
    // LogState::untrusted_through), which a later crash's strict scan would
    // cut. Lowering it to the last index entry lost them at the next crash.
    let active_trusted = if active_base < checkpoint.recovery_base {
        active.size
    } else if active_base == checkpoint.recovery_base {
        checkpoint.recovery_position.min(active.size)
    } else {
        0
    };
    // With no valid checkpoint, the compacted batches this open kept in the
    // active segment need the new one to vouch for them, or the next
    // crash's strict scan cuts them. What the scan read back is made
    // durable first (a kill -9 leaves it in the page cache only).
    let active_trusted = match &active.file {
        Some(file) if unvouched && last_kept_compacted => {
            io.sync_data(file)
                .await
                .map_err(|error| LogError::io(segment::log_path(dir, active_base), error))?;
            active.size
        }
        _ => active_trusted,
    };
    let active_scan_start = active_scan_start.max(active_trusted);
    if removed_any {
        io.sync_dir(dir)
            .await
            .map_err(|error| LogError::io(dir, error))?;
    }
    if let Some(first) = segments.front() {
        log_start = log_start.max(first.base);
    }
    let log_end = segments
        .back()
        .map(|segment| segment.next_offset)
        .unwrap_or(log_start);
    log_start = log_start.min(log_end);
    let checkpoint = Checkpoint {
        log_start,
        recovery_base: active_base,
        recovery_position: active_scan_start,
    };
    // After a clean close the file already says exactly this: rewriting it
    // would cost two fsyncs per partition at every start. A new log (no
    // segment, no checkpoint) writes none either: a missing checkpoint with
    // no segment reads as exactly this one (start 0, nothing to trust), so
    // the file is first written when something changes it (a seal, a new
    // log start, a clean close). Writing it at creation was a file created,
    // synced and renamed per partition.
    let implied = on_disk.is_none() && bases.is_empty() && checkpoint == NEW_LOG_CHECKPOINT;
    if on_disk != Some(checkpoint) && !implied {
        io.write_file_atomic(&checkpoint_path(dir), checkpoint.encode())
            .await
            .map_err(|error| LogError::io(checkpoint_path(dir), error))?;
    }
    report.duration = started.elapsed();
    if unvouched && (report.compacted_batches_kept > 0 || report.segments_ending_early_kept > 0) {
        tracing::warn!(dir = %dir.display(), batches = report.compacted_batches_kept,
            segments = report.segments_ending_early_kept,
            "no valid checkpoint: kept batches in the compacted form and sealed segments ending \
             before their successor's base (what compaction or a leader's cleaner leaves); \
             a gap is kept only where the offsets after it confirm it");
    }
    if report.was_needed() {
        tracing::info!(dir = %dir.display(), %log_start, %log_end, "recovered log: {report}");
    }
    let state = LogState {
        last_flush_ms: io.now_ms(),
        config,
        segments,
        log_start,
        log_end,
        durable_end: log_end,
        waiters: VecDeque::new(),
        end_cuts: 0,
        poisoned: None,
        closed: false,
        queued: false,
        unflushed_bytes: 0,
        checkpoint,
        // Log::open reads it from the last batch.
        last_epoch: None,
        durable_last_epoch: None,
        // Log::open loads or rebuilds it.
        epochs: LeaderEpochCache::default(),
        epochs_persisted: None,
        out_of_space: false,
        keep_when_full: false,
        space_retry_at_ms: 0,
        untrusted_through: None,
    };
    Ok((state, report))
}

/// Load the segment's index files keeping entries below `trusted_size`, drop
/// the last offset entry (the scan re-adds it) and return where to scan from,
/// and whether valid index files were found.
fn load_indexes<I: Io, F>(
    io: &I,
    dir: &Path,
    segment: &mut Segment<F>,
    trusted_size: u64,
    report: &mut RecoveryReport,
) -> LoadedIndexes {
    let none = LoadedIndexes {
        scan_start: 0,
        loaded: false,
        sealed: false,
    };
    if trusted_size == 0 {
        return none;
    }
    let offsets = io
        .read_file(&segment::index_path(dir, segment.base))
        .ok()
        .and_then(|bytes| OffsetIndex::decode_marked(&bytes, Position(trusted_size)));
    let times = io
        .read_file(&segment::time_index_path(dir, segment.base))
        .ok()
        .and_then(|bytes| TimeIndex::decode(&bytes, u32::MAX));
    let (Some((mut offsets, sealed)), Some(mut times)) = (offsets, times) else {
        tracing::info!(dir = %dir.display(), base = %segment.base, "rebuilding segment indexes");
        report.indexes_rebuilt += 1;
        return none;
    };
    let Some((relative, position)) = offsets.last() else {
        return none;
    };
    // The entry at `relative` goes with its offset entry (the scan adds it
    // back), but the maximum it holds also covers the unindexed batches
    // before it, which the scan does not read again: keep it as the
    // segment's max timestamp.
    let max_timestamp = times.max_through(relative);
    offsets.truncate_count(offsets.len() - 1);
    times.truncate_to_offset(relative);
    segment.index = offsets;
    segment.time_index = times;
    if let Some(timestamp) = max_timestamp {
        segment.max_timestamp = TimestampMs(timestamp);
    }
    segment.size = u64::from(position);
    segment.next_offset = Offset::from_relative(segment.base, relative);
    // Make the scan's first batch get its index entry back.
    segment.bytes_since_index_entry = u64::MAX / 2;
    LoadedIndexes {
        scan_start: u64::from(position),
        loaded: true,
        sealed,
    }
}

/// What [`load_indexes`] found.
struct LoadedIndexes {
    /// Where the scan starts: the last indexed batch (0 when nothing loaded).
    scan_start: u64,
    /// Both index files were valid and loaded.
    loaded: bool,
    /// The offset index file is a sealed segment's (magic "SLOS"), not an
    /// active segment's or an earlier version's ("SLOX").
    sealed: bool,
}

/// How [`scan`] validates a segment.
struct ScanRules {
    /// Bytes between index entries.
    interval: u64,
    /// The checkpoint vouches for the segment up to here: batches in the
    /// compacted form and offset gaps are accepted as they come.
    trusted_size: u64,
    /// No valid checkpoint vouches for anything: the compacted form is
    /// accepted everywhere, and an offset gap once the offsets after it
    /// confirm it (module docs).
    unvouched: bool,
    /// The segment's offset index file, as (relative offset, position)
    /// entries, to check against the batches found (`Scanned::index_matches`).
    index_entries: Option<Vec<(u32, u32)>>,
}

/// A batch after an offset gap that no later batch has confirmed yet: not
/// noted in the segment.
#[derive(Clone, Copy, Debug)]
struct Unconfirmed {
    position: u64,
    size: u64,
    base: Offset,
    next: Offset,
    max_timestamp: TimestampMs,
}

impl Unconfirmed {
    /// Its offsets are confirmed: the segment holds it.
    fn note_in<F>(self, segment: &mut Segment<F>, interval: u64) {
        segment.note_batch(
            self.position,
            self.size,
            self.base,
            self.next,
            self.max_timestamp,
            interval,
        );
    }
}

/// What [`scan`] found.
#[derive(Debug)]
struct Scanned {
    /// Where the scan stopped (after `unconfirmed`, if any).
    end: u64,
    stop: ScanStop,
    /// The last batch found, after an offset gap nothing in the segment
    /// confirms (`ScanRules::unvouched` only). The caller notes it or cuts
    /// the file before it.
    unconfirmed: Option<Unconfirmed>,
    /// Batches noted in the compacted form (records missing, or an offset
    /// gap before them) that no checkpoint vouched for.
    compacted_kept: u64,
    /// `ScanRules::index_entries` was given and every entry names a batch
    /// found (at its position, with its base offset), none left over.
    index_matches: bool,
}

/// Scan batches from `start` until the first invalid one; returns where it
/// stopped and why. Every batch is validated in full (length, magic, CRC,
/// records) and must continue the offsets: exactly, except where
/// `ScanRules` accepts the compacted form.
async fn scan<I: Io, F>(
    io: &I,
    file: &I::File,
    file_len: u64,
    segment: &mut Segment<F>,
    start: u64,
    rules: &ScanRules,
) -> io::Result<Scanned> {
    let mut position = start;
    let mut window: Option<(u64, Bytes)> = None;
    let mut unconfirmed: Option<Unconfirmed> = None;
    let mut compacted_kept = 0u64;
    let mut index_cursor = 0usize;
    let mut index_agrees = true;
    let (end, stop) = loop {
        if position >= file_len {
            break (position, ScanStop::EndOfFile);
        }
        if position + BATCH_HEADER_SIZE as u64 > file_len {
            break stopped_at(io, file, file_len, &mut window, position).await?;
        }
        let Some(header_bytes) =
            window_slice(io, file, file_len, &mut window, position, BATCH_HEADER_SIZE).await?
        else {
            break stopped_at(io, file, file_len, &mut window, position).await?;
        };
        let Ok(header) = BatchHeader::parse(&header_bytes) else {
            break stopped_at(io, file, file_len, &mut window, position).await?;
        };
        let size = header.total_size();
        if !(BATCH_HEADER_SIZE..=BATCH_SIZE_MAX).contains(&size)
            || position + size as u64 > file_len
        {
            break stopped_at(io, file, file_len, &mut window, position).await?;
        }
        let Some(bytes) = window_slice(io, file, file_len, &mut window, position, size).await?
        else {
            break stopped_at(io, file, file_len, &mut window, position).await?;
        };
        // Only trusted bytes can have been compacted (module docs); with no
        // valid checkpoint, nothing says which are.
        let vouched = position < rules.trusted_size;
        let relaxed = vouched || rules.unvouched;
        let validated = if relaxed {
            batch::validate_compacted(&bytes, BATCH_SIZE_MAX)
        } else {
            batch::validate(&bytes, BATCH_SIZE_MAX)
        };
        let Ok(header) = validated else {
            break stopped_at(io, file, file_len, &mut window, position).await?;
        };
        let expected = unconfirmed.map_or(segment.next_offset, |batch| batch.next);
        let continues = if relaxed {
            // Within the segment's 32-bit relative offsets: a damaged
            // base offset (it lies outside the CRC) may point anywhere.
            header.base_offset() >= expected
                && header.last_offset().value() - segment.base.value() <= i64::from(u32::MAX)
        } else {
            header.base_offset() == expected
        };
        if !continues {
            break stopped_at(io, file, file_len, &mut window, position).await?;
        }
        // This batch starts at or after the unconfirmed one's end: that
        // one's offsets are confirmed.
        if let Some(batch) = unconfirmed.take() {
            batch.note_in(segment, rules.interval);
            compacted_kept += 1;
        }
        if let Some(entries) = &rules.index_entries {
            while let Some(&(relative, entry_position)) = entries.get(index_cursor)
                && u64::from(entry_position) <= position
            {
                index_agrees &= u64::from(entry_position) == position
                    && i64::from(relative) == header.base_offset().value() - segment.base.value();
                index_cursor += 1;
            }
        }
        let count = i64::from(header.last_offset_delta()) + 1;
        let next = header.base_offset().plus(count);
        let gap = header.base_offset() > expected;
        if gap && !vouched {
            unconfirmed = Some(Unconfirmed {
                position,
                size: size as u64,
                base: header.base_offset(),
                next,
                max_timestamp: header.max_timestamp(),
            });
        } else {
            if !vouched && i64::from(header.records_count()) != count {
                compacted_kept += 1;
            }
            segment.note_batch(
                position,
                size as u64,
                header.base_offset(),
                next,
                header.max_timestamp(),
                rules.interval,
            );
        }
        position += size as u64;
    };
    let index_matches = rules
        .index_entries
        .as_ref()
        .is_some_and(|entries| index_agrees && index_cursor == entries.len());
    Ok(Scanned {
        end,
        stop,
        unconfirmed,
        compacted_kept,
        index_matches,
    })
}

/// The scan stopped at `position` (before the end of the file): zeros there
/// are preallocated space never written, anything else a torn or damaged
/// batch.
async fn stopped_at<I: Io>(
    io: &I,
    file: &I::File,
    file_len: u64,
    window: &mut Option<(u64, Bytes)>,
    position: u64,
) -> io::Result<(u64, ScanStop)> {
    let length = (file_len - position).min(BATCH_HEADER_SIZE as u64) as usize;
    let zeros = window_slice(io, file, file_len, window, position, length)
        .await?
        .is_some_and(|bytes| bytes.iter().all(|&byte| byte == 0));
    let stop = if zeros {
        ScanStop::Zeros
    } else {
        ScanStop::Invalid
    };
    Ok((position, stop))
}

/// `length` bytes at `position`, reading a new window when the current one
/// does not hold them. `None` if the file ends first.
pub(crate) async fn window_slice<I: Io>(
    io: &I,
    file: &I::File,
    file_len: u64,
    window: &mut Option<(u64, Bytes)>,
    position: u64,
    length: usize,
) -> io::Result<Option<Bytes>> {
    let end = position + length as u64;
    let covered = window
        .as_ref()
        .is_some_and(|(start, bytes)| position >= *start && end <= *start + bytes.len() as u64);
    if !covered {
        let read_start = page_floor(position);
        let read_end =
            page_ceil(end.max(position + SCAN_WINDOW_BYTES as u64)).min(page_ceil(file_len));
        let bytes = io
            .read_at(file, read_start, (read_end - read_start) as usize)
            .await?;
        *window = Some((read_start, bytes));
    }
    let Some((start, bytes)) = window.as_ref() else {
        return Ok(None);
    };
    let from = (position - start) as usize;
    let to = (end - start) as usize;
    if to > bytes.len() {
        return Ok(None);
    }
    Ok(Some(bytes.slice(from..to)))
}

/// Seal a non-active segment: trim it to its size, write its indexes.
async fn finalize<I: Io>(
    io: &I,
    dir: &Path,
    segment: &mut Segment<I::File>,
) -> Result<(), LogError> {
    segment.sealed = true;
    if segment.finalized {
        return Ok(());
    }
    let path = segment::log_path(dir, segment.base);
    if let Some(file) = &segment.file {
        let file_len = io
            .file_len(file)
            .map_err(|error| LogError::io(&path, error))?;
        if file_len != segment.size {
            io.set_len(file, segment.size)
                .await
                .map_err(|error| LogError::io(&path, error))?;
            io.sync_data(file)
                .await
                .map_err(|error| LogError::io(&path, error))?;
        }
    }
    let index_path = segment::index_path(dir, segment.base);
    io.write_file_atomic(&index_path, segment.index.encode_sealed())
        .await
        .map_err(|error| LogError::io(&index_path, error))?;
    let time_path = segment::time_index_path(dir, segment.base);
    io.write_file_atomic(&time_path, segment.time_index.encode())
        .await
        .map_err(|error| LogError::io(&time_path, error))?;
    segment.allocated = segment.size;
    segment.finalized = true;
    segment.buffer.clear();
    Ok(())
}

fn remove_segment<I: Io>(io: &I, dir: &Path, base: Offset) {
    for path in [
        segment::log_path(dir, base),
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
    ] {
        remove_quietly(io, &path);
    }
}

fn remove_quietly<I: Io>(io: &I, path: &Path) {
    if let Err(error) = io.remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not remove a file during recovery");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let checkpoint = Checkpoint {
            log_start: Offset(17),
            recovery_base: Offset(4000),
            recovery_position: 123_456,
        };
        let bytes = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&bytes), Some(checkpoint));
        for position in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 1;
            assert_eq!(Checkpoint::decode(&damaged), None);
        }
        assert_eq!(Checkpoint::decode(&bytes[..20]), None);
    }
}
