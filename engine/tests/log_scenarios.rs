//! Behaviour of one partition log on the simulated disk, scenario by scenario.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use sluice_engine::batch::{self, BatchBuilder, BatchError, codec};
use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::log::SPACE_RETRY_MS;
use sluice_engine::{
    AppendError, Committer, FlushPolicy, LeaderEpoch, Log, LogConfig, LogError, Offset, ReadLimits,
    TimestampMs,
};
use support::{all, as_stored, batches_of, block_on, poll_once, tagged_batch};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;

fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 1024,
        preallocate_step_bytes: 16 << 10,
        chunk_size_bytes: 16 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(io: &SimIo, config: LogConfig) -> (Log<SimIo>, Committer<SimIo>) {
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir(), config, &committer)).unwrap();
    (log, committer)
}

/// Every batch the log in `io` holds after a crash (its `Log` dropped
/// first) and a reopen with `config`.
fn batches_after_crash(io: &SimIo, config: LogConfig) -> Vec<Vec<u8>> {
    let io = io.crash();
    let (log, _committer) = open(&io, config);
    let mut read = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let result = block_on(log.read(offset, all(log.log_end_offset()))).unwrap();
        read.extend(batches_of(&result.records));
        offset = result.next_offset;
    }
    read
}

/// Append and make durable; returns the base offset.
fn append_durable(log: &Log<SimIo>, committer: &Committer<SimIo>, batch: &bytes::Bytes) -> Offset {
    let mut appended = log.append(batch, LeaderEpoch(0)).unwrap();
    assert!(
        poll_once(&mut appended.completion).is_none(),
        "not durable before a flush"
    );
    block_on(committer.flush_round());
    poll_once(&mut appended.completion)
        .expect("durable after a flush round")
        .unwrap();
    appended.base_offset
}

#[test]
fn appended_batches_get_consecutive_offsets_and_read_back_identical() {
    let io = SimIo::new(1);
    let (log, committer) = open(&io, small_config());
    let mut expected = Vec::new();
    for tag in 0..20u64 {
        let batch = tagged_batch(tag, 1 + tag as usize % 5, 100, NOW);
        let base = append_durable(&log, &committer, &batch);
        expected.push(as_stored(&batch, base, 0));
    }
    assert_eq!(log.log_start_offset(), Offset(0));
    assert_eq!(log.log_end_offset(), log.durable_end_offset());
    let result = block_on(log.read(Offset(0), all(log.durable_end_offset()))).unwrap();
    assert_eq!(batches_of(&result.records), expected);
    assert_eq!(result.next_offset, log.log_end_offset());
}

#[test]
fn group_commit_makes_many_appends_durable_with_one_fsync() {
    let io = SimIo::new(2);
    let (log, committer) = open(&io, small_config());
    let mut completions = Vec::new();
    for tag in 0..50u64 {
        completions.push(
            log.append(&tagged_batch(tag, 2, 50, NOW), LeaderEpoch(0))
                .unwrap()
                .completion,
        );
    }
    let syncs_before = io.stats().sync_data_count;
    block_on(committer.flush_round());
    // One data fsync (one dirty file), plus possibly none for finalization.
    assert_eq!(io.stats().sync_data_count - syncs_before, 1);
    for completion in &mut completions {
        poll_once(completion).unwrap().unwrap();
    }
    assert_eq!(committer.stats().fsyncs, 1);
}

#[test]
fn a_read_from_the_middle_of_a_batch_returns_the_whole_batch() {
    let io = SimIo::new(3);
    let (log, committer) = open(&io, small_config());
    let first = tagged_batch(1, 10, 10, NOW);
    let second = tagged_batch(2, 10, 10, NOW);
    append_durable(&log, &committer, &first);
    append_durable(&log, &committer, &second);
    let result = block_on(log.read(Offset(15), all(Offset(20)))).unwrap();
    assert_eq!(
        batches_of(&result.records),
        vec![as_stored(&second, Offset(10), 0)]
    );
    assert_eq!(result.next_offset, Offset(20));
}

#[test]
fn reads_honour_max_bytes_but_always_return_a_first_batch() {
    let io = SimIo::new(4);
    let (log, committer) = open(&io, small_config());
    for tag in 0..5u64 {
        append_durable(&log, &committer, &tagged_batch(tag, 1, 1000, NOW));
    }
    let end = log.durable_end_offset();
    let one = block_on(log.read(
        Offset(0),
        ReadLimits {
            max_bytes: 10,
            min_one_batch: true,
            max_offset: end,
        },
    ));
    assert_eq!(batches_of(&one.unwrap().records).len(), 1);
    let none = block_on(log.read(
        Offset(0),
        ReadLimits {
            max_bytes: 10,
            min_one_batch: false,
            max_offset: end,
        },
    ));
    assert!(none.unwrap().records.is_empty());
    let batch_size = tagged_batch(0, 1, 1000, NOW).len();
    let two = block_on(log.read(
        Offset(0),
        ReadLimits {
            max_bytes: batch_size * 2 + 1,
            min_one_batch: false,
            max_offset: end,
        },
    ));
    assert_eq!(batches_of(&two.unwrap().records).len(), 2);
    // Only batches below max_offset (e.g. the durable end) are visible.
    let bounded = block_on(log.read(Offset(0), all(Offset(3)))).unwrap();
    assert_eq!(bounded.next_offset, Offset(3));
}

#[test]
fn reads_outside_the_log_are_out_of_range_and_the_end_is_empty() {
    let io = SimIo::new(5);
    let (log, committer) = open(&io, small_config());
    append_durable(&log, &committer, &tagged_batch(1, 3, 10, NOW));
    let beyond = block_on(log.read(Offset(4), all(Offset(3))));
    assert!(matches!(beyond, Err(LogError::OffsetOutOfRange { .. })));
    let negative = block_on(log.read(Offset(-1), all(Offset(3))));
    assert!(matches!(negative, Err(LogError::OffsetOutOfRange { .. })));
    let at_end = block_on(log.read(Offset(3), all(Offset(3)))).unwrap();
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.next_offset, Offset(3));
}

#[test]
fn undurable_appends_are_not_readable_below_the_durable_end() {
    let io = SimIo::new(6);
    let (log, _committer) = open(&io, small_config());
    let _pending = log
        .append(&tagged_batch(1, 3, 10, NOW), LeaderEpoch(0))
        .unwrap();
    assert_eq!(log.log_end_offset(), Offset(3));
    assert_eq!(log.durable_end_offset(), Offset(0));
    let durable_view = block_on(log.read(Offset(0), all(log.durable_end_offset()))).unwrap();
    assert!(durable_view.records.is_empty());
    let buffered_view = block_on(log.read(Offset(0), all(log.log_end_offset()))).unwrap();
    assert_eq!(batches_of(&buffered_view.records).len(), 1);
}

#[test]
fn invalid_batches_are_rejected_and_nothing_is_written() {
    let io = SimIo::new(7);
    let (log, _committer) = open(&io, small_config());
    let good = tagged_batch(1, 2, 10, NOW);
    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF;
    let error = log
        .append(&bytes::Bytes::from(corrupt), LeaderEpoch(0))
        .err()
        .unwrap();
    assert!(matches!(error, AppendError::InvalidBatch(_)), "{error}");
    let truncated = good.slice(..good.len() - 5);
    assert!(log.append(&truncated, LeaderEpoch(0)).is_err());
    // A good batch followed by garbage: all or nothing.
    let mut mixed = good.to_vec();
    mixed.extend_from_slice(&[1, 2, 3]);
    assert!(
        log.append(&bytes::Bytes::from(mixed), LeaderEpoch(0))
            .is_err()
    );
    let mut config = small_config();
    config.max_message_bytes = 100;
    log.set_config(config);
    let large = tagged_batch(2, 1, 500, NOW);
    let error = log.append(&large, LeaderEpoch(0)).err().unwrap();
    assert!(
        matches!(
            error,
            AppendError::InvalidBatch(BatchError::TooLarge { max: 100, .. })
        ),
        "{error}"
    );
    assert_eq!(log.log_end_offset(), Offset(0));
}

#[test]
fn segments_roll_by_size_and_the_log_reopens_with_everything() {
    let io = SimIo::new(8);
    let (log, committer) = open(&io, small_config());
    let mut expected = Vec::new();
    for tag in 0..100u64 {
        let batch = tagged_batch(tag, 4, 500, NOW + tag as i64);
        let base = append_durable(&log, &committer, &batch);
        expected.push(as_stored(&batch, base, 0));
    }
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
    let names = io.file_names(&dir());
    assert!(names.iter().any(|name| name.ends_with(".index")));
    assert!(names.iter().any(|name| name.ends_with(".timeindex")));
    let end = log.log_end_offset();
    drop(log);
    // Reopen without a clean close, as after a crash where nothing was lost.
    let io = io.crash();
    let (log, _committer) = open(&io, small_config());
    assert_eq!(log.log_end_offset(), end);
    let mut read = Vec::new();
    let mut offset = Offset(0);
    while offset < end {
        let result = block_on(log.read(offset, all(end))).unwrap();
        read.extend(batches_of(&result.records));
        offset = result.next_offset;
    }
    assert_eq!(read, expected);
}

#[test]
fn segments_roll_by_age() {
    let io = SimIo::new(9);
    let mut config = small_config();
    config.segment_ms = 1000;
    let (log, committer) = open(&io, config);
    append_durable(&log, &committer, &tagged_batch(1, 1, 10, NOW));
    append_durable(&log, &committer, &tagged_batch(2, 1, 10, NOW));
    assert_eq!(log.segment_count(), 1);
    io.advance_clock(Duration::from_millis(1500));
    append_durable(&log, &committer, &tagged_batch(3, 1, 10, NOW));
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn retention_by_size_deletes_the_oldest_segments_and_advances_the_start() {
    let io = SimIo::new(10);
    let mut config = small_config();
    config.retention_bytes = Some(100 << 10);
    let (log, committer) = open(&io, config);
    for tag in 0..200u64 {
        append_durable(&log, &committer, &tagged_batch(tag, 4, 500, NOW));
    }
    let size_before = log.size_bytes();
    let deleted = block_on(log.apply_retention(log.log_end_offset())).unwrap();
    assert!(deleted > 0);
    assert!(log.size_bytes() < size_before);
    assert!(
        log.size_bytes() >= 100 << 10,
        "keeps at least retention.bytes"
    );
    assert!(log.log_start_offset() > Offset(0));
    let start = log.log_start_offset();
    assert!(matches!(
        block_on(log.read(Offset(0), all(log.log_end_offset()))),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let first = block_on(log.read(start, all(log.log_end_offset()))).unwrap();
    assert!(!first.records.is_empty());
    // The start survives a restart.
    drop(log);
    let io = io.crash();
    let (log, _committer) = open(&io, small_config());
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn retention_by_time_deletes_expired_segments_including_a_rolled_active_one() {
    let io = SimIo::new(11);
    let mut config = small_config();
    config.retention_ms = Some(60_000);
    let (log, committer) = open(&io, config);
    for tag in 0..40u64 {
        append_durable(&log, &committer, &tagged_batch(tag, 4, 500, NOW));
    }
    assert_eq!(
        block_on(log.apply_retention(log.log_end_offset())).unwrap(),
        0,
        "nothing expired yet"
    );
    io.advance_clock(Duration::from_secs(120));
    let deleted = block_on(log.apply_retention(log.log_end_offset())).unwrap();
    assert!(deleted > 0);
    // The expired active segment was rolled: the next flush seals it, and
    // the next pass deletes it.
    append_durable(&log, &committer, &tagged_batch(99, 1, 10, NOW + 120_000));
    block_on(log.apply_retention(log.log_end_offset())).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), Offset(160));
}

/// Retention deletes only segments wholly below the committed end (the
/// high watermark), as Kafka's `deletableSegments`: the log start never
/// passes records an in-sync follower may not have yet.
#[test]
fn retention_keeps_segments_that_reach_past_the_committed_end() {
    let io = SimIo::new(13);
    let mut config = small_config();
    config.retention_ms = Some(60_000);
    let (log, committer) = open(&io, config);
    for tag in 0..200u64 {
        append_durable(&log, &committer, &tagged_batch(tag, 4, 500, NOW));
    }
    io.advance_clock(Duration::from_secs(120));
    let segments = log.segment_count();
    assert!(segments > 3, "several segments: {segments}");
    let committed = Offset(log.log_end_offset().value() / 2);
    let deleted = block_on(log.apply_retention(committed)).unwrap();
    assert!(deleted > 0, "the committed expired segments go");
    let start = log.log_start_offset();
    assert!(
        start <= committed,
        "the log start {start} stays at or below the committed end {committed}"
    );
    // Nothing more goes until the committed end moves.
    assert_eq!(block_on(log.apply_retention(committed)).unwrap(), 0);
    assert_eq!(log.log_start_offset(), start);
    assert!(block_on(log.apply_retention(log.log_end_offset())).unwrap() > 0);
    assert!(log.log_start_offset() > committed);
}

/// Records without a timestamp (-1, accepted under CreateTime) age from
/// their segment's last append, as Kafka falls back to the segment file's
/// time: counted from -1 they were deleted at the first pass. After a
/// reopen they age from the open (the simulated files keep no time).
#[test]
fn records_without_a_timestamp_age_from_their_last_append() {
    let io = SimIo::new(14);
    let mut config = small_config();
    config.retention_ms = Some(60_000);
    let (log, committer) = open(&io, config.clone());
    for tag in 0..200u64 {
        append_durable(&log, &committer, &tagged_batch(tag, 1, 2000, -1));
    }
    assert!(log.segment_count() > 3);
    let end = log.log_end_offset();
    assert_eq!(block_on(log.apply_retention(end)).unwrap(), 0);
    assert_eq!(log.log_start_offset(), Offset(0));
    drop(log);
    drop(committer);
    let io = io.crash();
    let (log, _committer) = open(&io, config);
    assert_eq!(block_on(log.apply_retention(end)).unwrap(), 0);
    assert_eq!(log.log_start_offset(), Offset(0));
    io.advance_clock(Duration::from_secs(120));
    assert!(block_on(log.apply_retention(end)).unwrap() > 0);
    assert!(log.log_start_offset() > Offset(0));
}

/// A segment's largest timestamp survives a reopen wherever its batch
/// sits between index entries: the index entry the reopen drops (the scan
/// adds it back) also held the maximum of the unindexed batches before it,
/// which the scan does not read again. Losing it let retention delete the
/// segment early and made timestamp lookups skip it.
#[test]
fn the_largest_timestamp_survives_a_reopen_wherever_it_sits() {
    const SPIKE: i64 = NOW + 1_000_000;
    let config = LogConfig {
        segment_bytes: 8 << 10,
        ..small_config()
    };
    for spike_at in 0..30u64 {
        let io = SimIo::new(100 + spike_at);
        let (log, committer) = open(&io, config.clone());
        for tag in 0..100u64 {
            let timestamp = if tag == spike_at { SPIKE } else { NOW + 10 };
            append_durable(&log, &committer, &tagged_batch(tag, 1, 200, timestamp));
        }
        assert!(log.segment_count() > 2);
        let end = log.log_end_offset();
        drop(log);
        drop(committer);
        let io = io.crash();
        let (log, _committer) = open(&io, config.clone());
        let found = block_on(log.offset_for_timestamp(TimestampMs(SPIKE), end)).unwrap();
        assert_eq!(
            found.map(|(offset, timestamp)| (offset.value(), timestamp.0)),
            Some((spike_at as i64, SPIKE)),
            "spike at {spike_at}"
        );
        let (_, largest) = block_on(log.max_timestamp(end)).unwrap().unwrap();
        assert_eq!(largest.0, SPIKE, "spike at {spike_at}");
    }
}

#[test]
fn delete_records_moves_the_start_durably() {
    let io = SimIo::new(12);
    let (log, committer) = open(&io, small_config());
    for tag in 0..10u64 {
        append_durable(&log, &committer, &tagged_batch(tag, 10, 10, NOW));
    }
    assert_eq!(
        block_on(log.delete_records_before(Offset(35))).unwrap(),
        Offset(35)
    );
    assert!(matches!(
        block_on(log.read(Offset(34), all(Offset(100)))),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let result = block_on(log.read(Offset(35), all(Offset(100)))).unwrap();
    assert!(!result.records.is_empty());
    assert!(block_on(log.delete_records_before(Offset(1000))).is_err());
    drop(log);
    let io = io.crash();
    let (log, _committer) = open(&io, small_config());
    assert_eq!(log.log_start_offset(), Offset(35));
}

/// A log of 60 durable batches of 5 records (offsets 5n..5n+4) over
/// several segments, and the stored form of those wholly below 40, which
/// a truncation to 42 keeps (the batch holding 42 goes with it).
fn sixty_batches_to_truncate(io: &SimIo) -> (Log<SimIo>, Committer<SimIo>, Vec<Vec<u8>>) {
    let (log, committer) = open(io, small_config());
    let mut kept = Vec::new();
    for tag in 0..60u64 {
        let batch = tagged_batch(tag, 5, 400, NOW);
        let base = append_durable(&log, &committer, &batch);
        if base < Offset(40) {
            kept.push(as_stored(&batch, base, 0));
        }
    }
    assert!(log.segment_bases().len() >= 2, "{:?}", log.segment_bases());
    (log, committer, kept)
}

/// Append batches of `tags` (3 records of 300 bytes: sized otherwise than
/// [`sixty_batches_to_truncate`]'s, so the log rolls at other bases) while
/// the log takes them, adding the acknowledged ones to `acknowledged`;
/// then crash and check every acknowledged batch is read back.
fn acknowledged_appends_survive_a_crash(
    io: &SimIo,
    log: Log<SimIo>,
    committer: &Committer<SimIo>,
    mut acknowledged: Vec<Vec<u8>>,
    tags: std::ops::Range<u64>,
    what: &str,
) {
    for tag in tags {
        let batch = tagged_batch(tag, 3, 300, NOW);
        let Ok(mut appended) = log.append(&batch, LeaderEpoch(0)) else {
            break;
        };
        block_on(committer.flush_round());
        if let Some(Ok(())) = poll_once(&mut appended.completion) {
            acknowledged.push(as_stored(&batch, appended.base_offset, 0));
        }
    }
    drop(log);
    let read = batches_after_crash(io, small_config());
    assert!(
        acknowledged.iter().all(|batch| read.contains(batch)),
        "{what}: {} batches acknowledged, {} read back after the reopen",
        acknowledged.len(),
        read.len()
    );
}

/// A truncation that cannot remove a segment past the cut (its removal
/// fails) must not let the log take appends: at the next open the segment
/// left behind breaks the offsets' continuity after the cut, and recovery
/// cut the log there, acknowledged appends after it included. The log is
/// poisoned instead, and nothing acknowledged is lost across a reopen.
#[test]
fn a_truncation_that_cannot_remove_a_segment_acknowledges_nothing_after_it() {
    let io = SimIo::new(25);
    let (log, committer, kept) = sixty_batches_to_truncate(&io);
    let last = *log.segment_bases().last().unwrap();
    let stuck = io
        .file_names(&dir())
        .into_iter()
        .find(|name| name.ends_with(".log") && name.starts_with(&format!("{:020}", last.value())))
        .map(|name| dir().join(name))
        .expect("the last segment's file");
    io.fail_removals_of(Some(stuck));
    let truncated = block_on(log.truncate_to(Offset(42)));
    io.fail_removals_of(None);
    // Whatever the truncation answered, every append it acknowledges
    // after it must survive a reopen.
    if truncated.is_err() {
        assert!(log.is_poisoned(), "a failed truncation stops the log");
        assert!(
            log.append(&tagged_batch(100, 1, 1, NOW), LeaderEpoch(0))
                .is_err()
        );
    }
    acknowledged_appends_survive_a_crash(&io, log, &committer, kept, 100..200, "a stuck removal");
}

#[test]
fn truncation_removes_the_batch_holding_the_offset_and_everything_after() {
    let io = SimIo::new(13);
    let (log, committer) = open(&io, small_config());
    let mut expected = Vec::new();
    for tag in 0..60u64 {
        let batch = tagged_batch(tag, 5, 400, NOW);
        let base = append_durable(&log, &committer, &batch);
        expected.push(as_stored(&batch, base, 0));
    }
    let segments_before = log.segment_count();
    assert!(segments_before > 1);
    assert_eq!(block_on(log.truncate_to(Offset(42))).unwrap(), Offset(40));
    assert_eq!(log.log_end_offset(), Offset(40));
    assert!(log.segment_count() <= segments_before);
    expected.truncate(8);
    // Appends continue from the cut, and everything survives a crash.
    let batch = tagged_batch(1000, 2, 10, NOW);
    let base = append_durable(&log, &committer, &batch);
    assert_eq!(base, Offset(40));
    expected.push(as_stored(&batch, base, 0));
    drop(log);
    let read = batches_after_crash(&io, small_config());
    assert_eq!(read, expected);
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after_the_target() {
    let io = SimIo::new(14);
    let (log, committer) = open(&io, small_config());
    // Batch n holds 5 records with timestamps NOW + 100n .. NOW + 100n + 4.
    for tag in 0..50u64 {
        append_durable(
            &log,
            &committer,
            &tagged_batch(tag, 5, 300, NOW + 100 * tag as i64),
        );
    }
    let end = log.log_end_offset();
    let found = block_on(log.offset_for_timestamp(TimestampMs(NOW + 1203), end)).unwrap();
    assert_eq!(found, Some((Offset(63), TimestampMs(NOW + 1203))));
    let found = block_on(log.offset_for_timestamp(TimestampMs(NOW + 1250), end)).unwrap();
    assert_eq!(found, Some((Offset(65), TimestampMs(NOW + 1300))));
    let found = block_on(log.offset_for_timestamp(TimestampMs(0), end)).unwrap();
    assert_eq!(found, Some((Offset(0), TimestampMs(NOW))));
    assert_eq!(
        block_on(log.offset_for_timestamp(TimestampMs(NOW + 10_000), end)).unwrap(),
        None
    );
    let latest = block_on(log.max_timestamp(end)).unwrap();
    assert_eq!(latest, Some((Offset(249), TimestampMs(NOW + 4904))));

    // The log start inside a batch (DeleteRecords): records below it do
    // not count, so no answer lies below the log start (every fetch there
    // is out of range).
    block_on(log.delete_records_before(Offset(2))).unwrap();
    let found = block_on(log.offset_for_timestamp(TimestampMs(0), end)).unwrap();
    assert_eq!(found, Some((Offset(2), TimestampMs(NOW + 2))));
    let found = block_on(log.offset_for_timestamp(TimestampMs(NOW + 3), end)).unwrap();
    assert_eq!(found, Some((Offset(3), TimestampMs(NOW + 3))));
}

/// ListOffsets by timestamp and MAX_TIMESTAMP answer a record of a
/// compressed batch, as Kafka's searchForTimestamp and
/// offsetOfMaxTimestamp decompress it: not the batch's base offset with
/// its maxTimestamp.
#[test]
fn timestamp_lookups_answer_records_inside_compressed_batches() {
    for target in [codec::Target::Lz4, codec::Target::Zstd { level: 3 }] {
        let io = SimIo::new(16);
        let (log, committer) = open(&io, small_config());
        let plain = BatchBuilder::new()
            .record(None, Some(&b"a"[..]), TimestampMs(1000))
            .record(None, Some(&b"b"[..]), TimestampMs(2000))
            .record(None, Some(&b"c"[..]), TimestampMs(3000))
            .build();
        let header = batch::validate(&plain, plain.len()).unwrap();
        let compressed = bytes::Bytes::from(codec::recompress(&plain, &header, target).unwrap());
        assert_eq!(append_durable(&log, &committer, &compressed), Offset(0));
        let end = log.log_end_offset();
        assert_eq!(
            block_on(log.offset_for_timestamp(TimestampMs(2000), end)).unwrap(),
            Some((Offset(1), TimestampMs(2000))),
            "{target:?}"
        );
        assert_eq!(
            block_on(log.max_timestamp(end)).unwrap(),
            Some((Offset(2), TimestampMs(3000))),
            "{target:?}"
        );
    }
}

#[test]
fn an_fsync_failure_poisons_the_log_and_nothing_is_acknowledged_after_it() {
    let io = SimIo::new(15);
    let (log, committer) = open(&io, small_config());
    let acknowledged = tagged_batch(1, 2, 10, NOW);
    append_durable(&log, &committer, &acknowledged);
    io.fail_sync_after(Some(0));
    let mut pending = log
        .append(&tagged_batch(2, 2, 10, NOW), LeaderEpoch(0))
        .unwrap();
    block_on(committer.flush_round());
    let error = poll_once(&mut pending.completion).unwrap().err().unwrap();
    assert!(matches!(error, AppendError::Poisoned { .. }), "{error}");
    assert!(log.is_poisoned());
    assert!(matches!(
        log.append(&tagged_batch(3, 1, 1, NOW), LeaderEpoch(0)),
        Err(AppendError::Poisoned { .. })
    ));
    // After a restart the acknowledged batch is there; appends work again.
    drop(log);
    let io = io.crash();
    let (log, committer) = open(&io, small_config());
    let result = block_on(log.read(Offset(0), all(log.log_end_offset()))).unwrap();
    assert_eq!(
        batches_of(&result.records)[0],
        as_stored(&acknowledged, Offset(0), 0)
    );
    append_durable(&log, &committer, &tagged_batch(4, 1, 1, NOW));
}

#[test]
fn a_write_failure_poisons_the_log() {
    let io = SimIo::new(16);
    let (log, committer) = open(&io, small_config());
    io.fail_write_after(Some(0));
    let mut pending = log
        .append(&tagged_batch(1, 2, 10, NOW), LeaderEpoch(0))
        .unwrap();
    block_on(committer.flush_round());
    assert!(matches!(
        poll_once(&mut pending.completion).unwrap(),
        Err(AppendError::Poisoned { .. })
    ));
}

#[test]
fn a_full_disk_fails_the_append_cleanly_and_appends_resume_when_space_returns() {
    let io = SimIo::new(17);
    let mut config = small_config();
    config.preallocate_step_bytes = 4096;
    let (log, committer) = open(&io, config.clone());
    let first = tagged_batch(1, 2, 100, NOW);
    append_durable(&log, &committer, &first);
    io.set_space_limit(Some(io.space_used_bytes()));
    let mut refused = log
        .append(&tagged_batch(2, 20, 400, NOW), LeaderEpoch(0))
        .unwrap();
    block_on(committer.flush_round());
    let error = poll_once(&mut refused.completion).unwrap().err().unwrap();
    assert!(matches!(error, AppendError::StorageFull { .. }), "{error}");
    assert!(!log.is_poisoned());
    assert_eq!(
        log.log_end_offset(),
        Offset(2),
        "the unflushed tail was rolled back"
    );
    io.set_space_limit(None);
    let second = tagged_batch(3, 2, 100, NOW);
    let base = append_durable(&log, &committer, &second);
    assert_eq!(base, Offset(2));
    drop(log);
    assert_eq!(
        batches_after_crash(&io, config),
        vec![
            as_stored(&first, Offset(0), 0),
            as_stored(&second, Offset(2), 0)
        ]
    );
}

/// `Log::keep_unflushed_when_full` (every broker replica): a flush that
/// finds no space fails its appends but keeps them at their offsets, new
/// appends are refused until a flush succeeds, and the committer tries
/// again every `SPACE_RETRY_MS` (no append needs to ask: a follower may get
/// none). No offset is ever given to a second record: a leader's followers
/// may hold the first one already.
#[test]
fn a_full_disk_keeps_the_unflushed_tail_at_its_offsets_when_asked_to() {
    let io = SimIo::new(23);
    let mut config = small_config();
    config.preallocate_step_bytes = 4096;
    let (log, committer) = open(&io, config.clone());
    log.keep_unflushed_when_full(true);
    let first = tagged_batch(1, 2, 100, NOW);
    append_durable(&log, &committer, &first);
    io.set_space_limit(Some(io.space_used_bytes()));
    let kept = tagged_batch(2, 20, 400, NOW);
    let mut failed = log.append(&kept, LeaderEpoch(0)).unwrap();
    block_on(committer.flush_round());
    let error = poll_once(&mut failed.completion).unwrap().err().unwrap();
    assert!(matches!(error, AppendError::StorageFull { .. }), "{error}");
    assert!(!log.is_poisoned());
    assert_eq!(log.log_end_offset(), Offset(22), "the tail is kept");
    assert_eq!(log.durable_end_offset(), Offset(2));
    // Refused while the kept tail is not written; the committer waits
    // before it tries again rather than spinning on ENOSPC.
    let refused = log.append(&tagged_batch(3, 2, 100, NOW), LeaderEpoch(0));
    assert!(
        matches!(refused, Err(AppendError::StorageFull { .. })),
        "an append on a full disk is refused"
    );
    let (flushed, next_due) = block_on(committer.flush_round());
    assert_eq!(flushed, 0, "not tried again at once");
    assert!(next_due.is_some(), "tried again later");
    io.advance_clock(Duration::from_millis(SPACE_RETRY_MS as u64 + 1));
    let (flushed, _) = block_on(committer.flush_round());
    assert_eq!(flushed, 1, "tried again after the pause");
    assert_eq!(log.durable_end_offset(), Offset(2), "still no space");
    // Space again: the next try writes the kept tail, with no append
    // asking; then appends go on after it.
    io.set_space_limit(None);
    io.advance_clock(Duration::from_millis(SPACE_RETRY_MS as u64 + 1));
    block_on(committer.flush_round());
    assert_eq!(log.durable_end_offset(), Offset(22));
    let last = tagged_batch(5, 2, 100, NOW);
    assert_eq!(append_durable(&log, &committer, &last), Offset(22));
    drop(log);
    assert_eq!(
        batches_after_crash(&io, config),
        vec![
            as_stored(&first, Offset(0), 0),
            as_stored(&kept, Offset(2), 0),
            as_stored(&last, Offset(22), 0)
        ]
    );
}

/// With flush.ms (acknowledged once buffered), a flush that finds no space
/// keeps what was acknowledged and writes it once space returns, with no
/// append asking; rolled back, those acknowledged records vanished while
/// the broker ran.
#[test]
fn an_interval_flushed_log_keeps_what_it_acknowledged_through_a_full_disk() {
    let io = SimIo::new(24);
    let mut config = small_config();
    config.preallocate_step_bytes = 4096;
    config.flush = FlushPolicy::Interval {
        interval_ms: 1000,
        interval_bytes: 1,
    };
    let (log, committer) = open(&io, config.clone());
    log.keep_unflushed_when_full(true);
    io.set_space_limit(Some(io.space_used_bytes()));
    let acknowledged = tagged_batch(1, 20, 400, NOW);
    let mut appended = log.append(&acknowledged, LeaderEpoch(0)).unwrap();
    poll_once(&mut appended.completion).unwrap().unwrap();
    block_on(committer.flush_round());
    assert_eq!(log.durable_end_offset(), Offset(0), "no space to write it");
    assert_eq!(log.log_end_offset(), Offset(20), "still held");
    io.set_space_limit(None);
    io.advance_clock(Duration::from_millis(SPACE_RETRY_MS as u64 + 1));
    block_on(committer.flush_round());
    assert_eq!(log.durable_end_offset(), Offset(20));
    drop(log);
    assert_eq!(
        batches_after_crash(&io, config),
        vec![as_stored(&acknowledged, Offset(0), 0)]
    );
}

#[test]
fn a_corrupted_tail_is_truncated_at_the_first_invalid_byte() {
    let io = SimIo::new(18);
    let (log, committer) = open(&io, small_config());
    for tag in 0..5u64 {
        append_durable(&log, &committer, &tagged_batch(tag, 2, 100, NOW));
    }
    drop(log);
    let path = dir().join("00000000000000000000.log");
    let batch_size = tagged_batch(0, 2, 100, NOW).len() as u64;
    // Damage the fourth batch: the first three survive, nothing after.
    io.corrupt_byte(&path, 3 * batch_size + 70);
    let io = io.crash();
    let (log, _committer) = open(&io, small_config());
    assert_eq!(log.log_end_offset(), Offset(6));
    let result = block_on(log.read(Offset(0), all(Offset(6)))).unwrap();
    assert_eq!(batches_of(&result.records).len(), 3);
}

#[test]
fn a_clean_close_lets_the_next_open_skip_the_scan() {
    let io = SimIo::new(19);
    let (log, committer) = open(&io, small_config());
    for tag in 0..30u64 {
        append_durable(&log, &committer, &tagged_batch(tag, 3, 200, NOW));
    }
    block_on(log.close()).unwrap();
    assert!(matches!(
        log.append(&tagged_batch(1, 1, 1, NOW), LeaderEpoch(0)),
        Err(AppendError::Closed { .. })
    ));
    let end = log.log_end_offset();
    drop(log);
    io.set_crash_mode(CrashMode::LoseUnsynced);
    let io = io.crash();
    let (log, committer) = open(&io, small_config());
    assert_eq!(log.log_end_offset(), end);
    append_durable(&log, &committer, &tagged_batch(100, 1, 1, NOW));
}

#[test]
fn interval_flush_acknowledges_at_once_and_flushes_when_due() {
    let io = SimIo::new(20);
    let mut config = small_config();
    config.flush = FlushPolicy::Interval {
        interval_ms: 1000,
        interval_bytes: u64::MAX,
    };
    let (log, committer) = open(&io, config);
    let mut appended = log
        .append(&tagged_batch(1, 1, 10, NOW), LeaderEpoch(0))
        .unwrap();
    poll_once(&mut appended.completion).unwrap().unwrap();
    let (flushed, next_due) = block_on(committer.flush_round());
    assert_eq!(flushed, 0);
    assert!(next_due.is_some());
    assert_eq!(log.durable_end_offset(), Offset(0));
    io.advance_clock(Duration::from_millis(1001));
    let (flushed, _) = block_on(committer.flush_round());
    assert_eq!(flushed, 1);
    assert_eq!(log.durable_end_offset(), Offset(1));
}

#[test]
fn an_expired_active_segment_is_rolled_and_deleted_without_waiting_for_an_append() {
    let io = SimIo::new(21);
    let mut config = small_config();
    config.retention_ms = Some(1000);
    let (log, committer) = open(&io, config);
    // Queued, not yet flushed, and already expired.
    let mut appended = log
        .append(&tagged_batch(1, 1, 10, NOW), LeaderEpoch(0))
        .unwrap();
    io.advance_clock(Duration::from_secs(10));
    // Retention rolls the expired active segment (as Kafka does), flushes
    // and finalizes it, and deletes it: the log is empty, offsets go on.
    assert_eq!(
        block_on(log.apply_retention(log.log_end_offset())).unwrap(),
        1
    );
    poll_once(&mut appended.completion).unwrap().unwrap();
    assert_eq!(log.log_start_offset(), Offset(1));
    assert_eq!(log.log_end_offset(), Offset(1));
    // Nothing is left for the committer.
    block_on(committer.flush_round());
    assert_eq!(committer.queued(), 0);
    append_durable(&log, &committer, &tagged_batch(2, 1, 10, NOW + 10_000));
    assert_eq!(log.log_end_offset(), Offset(2));
    // A crash now: the empty log restarts at its log start, never at 0.
    drop(log);
    let io = io.crash();
    let (reopened, _) = open(&io, small_config());
    assert_eq!(reopened.log_start_offset(), Offset(1));
    assert_eq!(reopened.log_end_offset(), Offset(2));
}

/// A log closed cleanly reopens without writing anything: its checkpoint
/// already says what recovery would write (two fsyncs per partition saved
/// at every start; 10,000 partitions made that seconds).
/// A clean close replaces its small files (indexes, checkpoint, epochs)
/// behind one directory sync; a power loss at any step of it keeps every
/// durable batch.
#[test]
fn a_clean_close_syncs_the_directory_once_and_a_crash_at_any_step_of_it_loses_nothing() {
    let mut expected = Vec::new();
    let io = SimIo::new(22);
    let (log, committer) = open(&io, small_config());
    for tag in 0..40 {
        let batch = tagged_batch(tag, 3, 300, 1_000);
        let base = append_durable(&log, &committer, &batch);
        expected.push(as_stored(&batch, base, 0));
    }
    let before = io.stats();
    block_on(log.close()).unwrap();
    let after = io.stats();
    assert_eq!(after.sync_dir_count - before.sync_dir_count, 1);
    drop(log);
    let mut steps = 0;
    for halt_after in 0.. {
        let io = SimIo::new(22);
        let (log, committer) = open(&io, small_config());
        for tag in 0..40 {
            append_durable(&log, &committer, &tagged_batch(tag, 3, 300, 1_000));
        }
        io.halt_after(Some(halt_after));
        let closed = block_on(log.close()).is_ok();
        drop(log);
        let crashed = io.crash();
        let (log, _committer) = open(&crashed, small_config());
        let result = block_on(log.read(Offset(0), all(log.log_end_offset()))).unwrap();
        let mut batches = batches_of(&result.records);
        let mut next = result.next_offset;
        while next < log.log_end_offset() {
            let result = block_on(log.read(next, all(log.log_end_offset()))).unwrap();
            batches.extend(batches_of(&result.records));
            next = result.next_offset;
        }
        assert_eq!(
            batches, expected,
            "power loss after {halt_after} steps of the close"
        );
        steps += 1;
        if closed {
            break;
        }
    }
    assert!(steps > 3, "the close took {steps} steps");
}

#[test]
fn a_cleanly_closed_log_reopens_without_a_single_sync() {
    let io = SimIo::new(21);
    let (log, committer) = open(&io, small_config());
    for tag in 0..40 {
        append_durable(&log, &committer, &tagged_batch(tag, 3, 300, 1_000));
    }
    block_on(log.close()).unwrap();
    drop(log);
    let before = io.stats();
    let (log, _committer) = open(&io, small_config());
    let after = io.stats();
    assert_eq!(
        after.sync_data_count, before.sync_data_count,
        "fdatasync at open"
    );
    assert_eq!(
        after.sync_dir_count, before.sync_dir_count,
        "directory sync at open"
    );
    assert_eq!(after.write_at_count, before.write_at_count, "write at open");
    assert!(log.log_end_offset() > Offset(100));
}

/// A removal's close on a full disk: the flush fails, and the log is closed
/// all the same. Left open, it took appends after the removal and a later
/// flush wrote them by path into whatever directory had its name by then
/// (engine/src/dir_gate.rs).
#[test]
fn a_close_for_removal_on_a_full_disk_still_closes_the_log() {
    let io = SimIo::new(23);
    let (log, committer) = open(&io, small_config());
    append_durable(&log, &committer, &tagged_batch(1, 2, 100, NOW));
    io.set_space_limit(Some(io.space_used_bytes()));
    // Past the preallocated space: the flush needs more.
    let mut pending = log
        .append(&tagged_batch(2, 20, 2000, NOW), LeaderEpoch(0))
        .unwrap();
    let closed = block_on(log.close_for_removal());
    assert!(closed.is_err(), "the flush failed: {closed:?}");
    assert!(poll_once(&mut pending.completion).unwrap().is_err());
    io.set_space_limit(None);
    let refused = log.append(&tagged_batch(3, 2, 100, NOW), LeaderEpoch(0));
    assert!(
        matches!(refused, Err(AppendError::Closed { .. })),
        "appends after the close are refused"
    );
    let before = io.space_used_bytes();
    block_on(committer.flush_round());
    assert_eq!(
        io.space_used_bytes(),
        before,
        "nothing written after the close"
    );
}

/// A truncation whose disk stops at any step (a failed fdatasync, removal,
/// directory sync...) either completes or stops the log: appends after it
/// are acknowledged only if they survive a crash. A failed directory sync
/// returned the error with the in-memory state still the old one, and
/// later appends went to a file already cut (zeros in between, cut at the
/// next open) or already removed.
#[test]
fn a_truncation_stopped_at_any_step_acknowledges_nothing_it_could_lose() {
    for halt_after in 0..12u64 {
        let io = SimIo::new(26);
        let (log, committer, kept) = sixty_batches_to_truncate(&io);
        io.halt_after(Some(halt_after));
        let truncated = block_on(log.truncate_to(Offset(42)));
        io.halt_after(None);
        if truncated.is_ok() {
            assert_eq!(log.log_end_offset(), Offset(40));
        }
        acknowledged_appends_survive_a_crash(
            &io,
            log,
            &committer,
            kept,
            100..140,
            &format!("halted after {halt_after} steps"),
        );
    }
}

/// Retention on a full disk: no space even for the checkpoint's temporary
/// file. The oldest segments still go, one at a time, each removal durable
/// before the next, so a power loss at any step leaves a suffix of the log;
/// space comes back and appends succeed again. It returned the error and
/// deleted nothing: the broker could not get out of a full disk.
#[test]
fn retention_frees_space_on_a_full_disk_and_a_power_loss_keeps_a_suffix() {
    for halt_after in [None, Some(0), Some(1), Some(2), Some(3), Some(5), Some(8)] {
        let io = SimIo::new(27);
        let mut config = small_config();
        config.retention_bytes = Some(100 << 10);
        let (log, committer) = open(&io, config.clone());
        let mut appended = Vec::new();
        for tag in 0..200u64 {
            let batch = tagged_batch(tag, 4, 500, NOW);
            let base = append_durable(&log, &committer, &batch);
            appended.push(as_stored(&batch, base, 0));
        }
        let end = log.log_end_offset();
        let segments = log.segment_count();
        io.set_space_limit(Some(io.space_used_bytes()));
        io.halt_after(halt_after);
        let deleted = block_on(log.apply_retention(end));
        if halt_after.is_none() {
            let deleted = deleted.unwrap();
            assert!(deleted > 0);
            assert_eq!(log.segment_count(), segments - deleted);
            assert!(log.log_start_offset() > Offset(0));
            // The space is back: an append succeeds.
            io.set_space_limit(Some(io.space_used_bytes() + (64 << 10)));
            let batch = tagged_batch(500, 2, 500, NOW);
            let base = append_durable(&log, &committer, &batch);
            appended.push(as_stored(&batch, base, 0));
        }
        drop(log);
        io.set_space_limit(None);
        // Whatever survives a power loss is a suffix of what was appended,
        // ending with the last batch.
        let read = batches_after_crash(&io, config);
        assert!(!read.is_empty());
        assert_eq!(
            read[..],
            appended[appended.len() - read.len()..],
            "halted after {halt_after:?}: {} batches read back",
            read.len()
        );
    }
}
