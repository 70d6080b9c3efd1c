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
    /// Segments cut at an invalid or torn batch (preallocated zeros after
    /// the last valid batch are not counted: they are no data).
    pub segments_truncated: usize,
    /// Bytes cut from those segments, from their first invalid byte to the
    /// end of the file.
    pub bytes_truncated: u64,
    /// Segments deleted: empty after a cut, or after a gap in the offsets.
    pub segments_removed: usize,
    /// Segments whose missing or damaged index files were rebuilt.
    pub indexes_rebuilt: usize,
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
             in {} segments, {} segments removed, {} indexes rebuilt, in {} ms",
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

    let interval = u64::from(config.index_interval_bytes);
    let mut segments: VecDeque<Segment<I::File>> = VecDeque::new();
    let mut active_scan_start = 0u64;
    let mut cut = false;
    let mut removed_any = false;
    // The previous kept segment is trusted and its file was wholly valid: if
    // it ends before the next base, compaction removed its last records.
    let mut previous_may_end_early = false;
    for (position_in_list, &base) in bases.iter().enumerate() {
        if cut {
            remove_segment(io, dir, base);
            removed_any = true;
            report.segments_removed += 1;
            continue;
        }
        // Only up to the checkpoint's recovery base: a successor beyond it
        // means the segment at the recovery base is missing, and its
        // offsets with it (a gap no compaction made).
        if previous_may_end_early
            && base <= checkpoint.recovery_base
            && let Some(previous) = segments.back_mut()
            && previous.next_offset < base
        {
            previous.next_offset = base;
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
        let (scan_start, indexes_loaded) =
            load_indexes(io, dir, &mut segment, trusted_size, &mut report);
        if position_in_list + 1 == bases.len() {
            active_scan_start = scan_start;
        }
        let (valid_end, stop) = scan(
            io,
            &file,
            file_len,
            &mut segment,
            scan_start,
            interval,
            trusted_size,
        )
        .await
        .map_err(|error| LogError::io(&path, error))?;
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
        // A trusted segment whose index files were valid and whose file is
        // exactly its batches is already finalized: do not rewrite anything.
        if trusted && indexes_loaded && valid_end == file_len {
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
            previous_may_end_early &= trusted && valid_end == file_len;
            continue;
        }
        previous_may_end_early = trusted && valid_end == file_len;
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
    // may end before it, or be empty).
    let last_is_sealed = segments
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
) -> (u64, bool) {
    if trusted_size == 0 {
        return (0, false);
    }
    let offsets = io
        .read_file(&segment::index_path(dir, segment.base))
        .ok()
        .and_then(|bytes| OffsetIndex::decode(&bytes, Position(trusted_size)));
    let times = io
        .read_file(&segment::time_index_path(dir, segment.base))
        .ok()
        .and_then(|bytes| TimeIndex::decode(&bytes, u32::MAX));
    let (Some(mut offsets), Some(mut times)) = (offsets, times) else {
        tracing::info!(dir = %dir.display(), base = %segment.base, "rebuilding segment indexes");
        report.indexes_rebuilt += 1;
        return (0, false);
    };
    let Some((relative, position)) = offsets.last() else {
        return (0, false);
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
    (u64::from(position), true)
}

/// Scan batches from `start` until the first invalid one; returns the end of
/// the valid prefix and why the scan stopped there. Every batch is
/// validated in full (length, magic, CRC, records) and must continue the
/// offsets.
async fn scan<I: Io, F>(
    io: &I,
    file: &I::File,
    file_len: u64,
    segment: &mut Segment<F>,
    start: u64,
    interval: u64,
    trusted_size: u64,
) -> io::Result<(u64, ScanStop)> {
    let mut position = start;
    let mut window: Option<(u64, Bytes)> = None;
    loop {
        if position >= file_len {
            return Ok((position, ScanStop::EndOfFile));
        }
        if position + BATCH_HEADER_SIZE as u64 > file_len {
            return stopped_at(io, file, file_len, &mut window, position).await;
        }
        let Some(header_bytes) =
            window_slice(io, file, file_len, &mut window, position, BATCH_HEADER_SIZE).await?
        else {
            return stopped_at(io, file, file_len, &mut window, position).await;
        };
        let Ok(header) = BatchHeader::parse(&header_bytes) else {
            return stopped_at(io, file, file_len, &mut window, position).await;
        };
        let size = header.total_size();
        if !(BATCH_HEADER_SIZE..=BATCH_SIZE_MAX).contains(&size)
            || position + size as u64 > file_len
        {
            return stopped_at(io, file, file_len, &mut window, position).await;
        }
        let Some(bytes) = window_slice(io, file, file_len, &mut window, position, size).await?
        else {
            return stopped_at(io, file, file_len, &mut window, position).await;
        };
        // Only trusted bytes can have been compacted (module docs).
        let trusted = position < trusted_size;
        let validated = if trusted {
            batch::validate_compacted(&bytes, BATCH_SIZE_MAX)
        } else {
            batch::validate(&bytes, BATCH_SIZE_MAX)
        };
        let Ok(header) = validated else {
            return stopped_at(io, file, file_len, &mut window, position).await;
        };
        let continues = if trusted {
            header.base_offset() >= segment.next_offset
        } else {
            header.base_offset() == segment.next_offset
        };
        if !continues {
            return stopped_at(io, file, file_len, &mut window, position).await;
        }
        let count = i64::from(header.last_offset_delta()) + 1;
        let next = header.base_offset().plus(count);
        segment.note_batch(
            position,
            size as u64,
            header.base_offset(),
            next,
            header.max_timestamp(),
            interval,
        );
        position += size as u64;
    }
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
    io.write_file_atomic(&index_path, segment.index.encode())
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
