//! The engine on the real I/O path: io_uring through compio, O_DIRECT segment
//! files on a real filesystem (set `SLUICE_TEST_DIR` when the target dir is
//! on tmpfs, where O_DIRECT fails).
//!
//! The scenarios mirror log_scenarios.rs, which runs on the simulated disk,
//! but here every byte goes through the kernel. Each scenario runs its
//! "process lifetimes" as separate compio runtimes: a log is opened, used and
//! closed (or just dropped) inside one runtime, and the next runtime reopens
//! the directory. Segments are small (256 KiB) and write chunks tiny (16 KiB)
//! so rolls, finalization and the release of flushed chunks all happen, and
//! reads after a reopen come from disk through O_DIRECT except for the tail
//! page of the active segment.
//!
//! Besides reading through the log, the tests parse the segment files
//! themselves (through the page cache, `std::fs`): what the kernel holds must
//! be exactly the stored batches, followed by nothing but preallocated zeros.
#![allow(clippy::unwrap_used)]

// The support module re-exports helpers that this crate does not use.
#[allow(unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use futures_util::future::join_all;
use sluice_engine::batch;
use sluice_engine::io::uring::UringIo;
use sluice_engine::{
    AppendError, CleanOptions, Committer, LeaderEpoch, Log, LogConfig, LogError, Offset,
    ReadLimits, SyncMode,
};
use support::{RealDir, as_stored, batches_of, run_on_uring, spawn_committer, tagged_batch};

const NOW: i64 = 1_700_000_000_000;
const EPOCH: i32 = 3;
/// Appends issued before awaiting their completions: enough for group
/// commits of several appends per fdatasync.
const IN_FLIGHT_MAX: usize = 16;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 10,
        index_interval_bytes: 4096,
        preallocate_step_bytes: 64 << 10,
        chunk_size_bytes: 16 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// One open log with its committer running in the background.
struct Session {
    log: Log<UringIo>,
    committer: Committer<UringIo>,
    _committer_task: compio::runtime::JoinHandle<()>,
}

async fn open(dir: &Path, config: LogConfig) -> Session {
    open_with(dir, config, SyncMode::PerFile).await
}

async fn open_with(dir: &Path, config: LogConfig, sync: SyncMode) -> Session {
    let io = UringIo::new();
    let committer = Committer::with_sync_mode(io, sync);
    let log = Log::open(io, dir, config, &committer)
        .await
        .unwrap_or_else(|error| panic!("opening {} failed: {error}", dir.display()));
    assert_eq!(
        log.durable_end_offset(),
        log.log_end_offset(),
        "everything found on open is durable"
    );
    let task = spawn_committer(&committer);
    Session {
        log,
        committer,
        _committer_task: task,
    }
}

/// What the test expects the log to hold: stored bytes by base offset.
type Expected = BTreeMap<Offset, Vec<u8>>;

/// A batch of varied shape: 1 to 7 records of 0 to ~3 KiB each.
fn varied_batch(tag: u64) -> Bytes {
    let count = 1 + (tag % 7) as usize;
    let value_size = ((tag * 997) % 3000) as usize;
    tagged_batch(tag, count, value_size, NOW + tag as i64)
}

/// Append the batches of `tags`, at most `IN_FLIGHT_MAX` awaiting
/// durability at a time, and await every completion (the committer task
/// flushes them). Adds what was acknowledged to `expected`.
async fn append_durably(log: &Log<UringIo>, tags: std::ops::Range<u64>, expected: &mut Expected) {
    let tags: Vec<u64> = tags.collect();
    for group in tags.chunks(IN_FLIGHT_MAX) {
        let mut completions = Vec::new();
        for &tag in group {
            let batch = varied_batch(tag);
            let appended = log.append(&batch, LeaderEpoch(EPOCH)).unwrap();
            let records = i64::from(batch::validate(&batch, usize::MAX).unwrap().records_count());
            assert_eq!(appended.last_offset, appended.base_offset.plus(records - 1));
            let stored = as_stored(&batch, appended.base_offset, EPOCH);
            completions.push((appended.base_offset, stored, appended.completion));
        }
        let (stored, waits): (Vec<_>, Vec<_>) = completions
            .into_iter()
            .map(|(base, stored, completion)| ((base, stored), completion))
            .unzip();
        for result in join_all(waits).await {
            result.unwrap();
        }
        expected.extend(stored);
    }
    assert_eq!(log.durable_end_offset(), log.log_end_offset());
}

/// Read `[log start, log end)` through the log in pieces of at most
/// `max_bytes` (one batch at least), checking every batch and the offsets.
async fn read_all(log: &Log<UringIo>, max_bytes: usize) -> Expected {
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut read = Expected::new();
    while offset < end {
        let limits = ReadLimits {
            max_bytes,
            min_one_batch: true,
            max_offset: end,
        };
        let result = log.read(offset, limits).await.unwrap();
        assert!(
            !result.records.is_empty(),
            "no progress reading at {offset} (end {end})"
        );
        assert_eq!(
            result.size,
            result.records.iter().map(Bytes::len).sum::<usize>()
        );
        for stored in batches_of(&result.records) {
            let header = batch::validate(&stored, usize::MAX)
                .unwrap_or_else(|error| panic!("batch read back at {offset} is invalid: {error}"));
            if read.is_empty() {
                assert!(header.base_offset() <= offset);
            } else {
                assert_eq!(header.base_offset(), offset, "offsets are not contiguous");
            }
            offset = header.next_offset();
            read.insert(header.base_offset(), stored);
        }
        assert_eq!(result.next_offset, offset);
    }
    assert_eq!(offset, end);
    read
}

/// The part of `expected` at or above `start`.
fn from_start(expected: &Expected, start: Offset) -> Expected {
    expected
        .range(start..)
        .map(|(base, stored)| (*base, stored.clone()))
        .collect()
}

/// Read both ways, with large and with small reads (a small `max_bytes`
/// also makes every read start mid-segment, through the offset index), and
/// compare with `expected`.
async fn check_reads(log: &Log<UringIo>, expected: &Expected) {
    let wanted = from_start(expected, log.log_start_offset());
    let large = read_all(log, 4 << 20).await;
    assert!(large == wanted, "large reads differ from what was appended");
    let small = read_all(log, 1).await;
    assert!(small == wanted, "small reads differ from what was appended");
}

/// One segment file as the kernel holds it.
struct SegmentFile {
    base: Offset,
    length: u64,
    /// End of the last whole valid batch.
    data_end: u64,
    batches: Vec<(Offset, Vec<u8>)>,
}

/// Parse every `.log` file of `dir` through the page cache: the batches
/// from position 0 on, each valid and continuing the offsets from the base
/// in the file name, then only zeros (preallocated space) to the end.
fn segment_files(dir: &Path) -> Vec<SegmentFile> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".log"))
        .collect();
    names.sort();
    let mut files = Vec::new();
    for name in names {
        let base = Offset(name.trim_end_matches(".log").parse().unwrap());
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        let mut position = 0usize;
        let mut next = base;
        let mut batches = Vec::new();
        while bytes.len() - position >= batch::layout::LOG_OVERHEAD {
            let length_at = position + batch::layout::BATCH_LENGTH_AT;
            let length = i32::from_be_bytes(bytes[length_at..length_at + 4].try_into().unwrap());
            if length <= 0 {
                break;
            }
            let size = batch::layout::LOG_OVERHEAD + length as usize;
            assert!(
                position + size <= bytes.len(),
                "{name}: batch at {position} runs past the end of the file"
            );
            let stored = &bytes[position..position + size];
            let header = batch::validate(stored, usize::MAX)
                .unwrap_or_else(|error| panic!("{name}: invalid batch at {position}: {error}"));
            assert_eq!(header.base_offset(), next, "{name}: offsets at {position}");
            next = header.next_offset();
            batches.push((header.base_offset(), stored.to_vec()));
            position += size;
        }
        assert!(
            bytes[position..].iter().all(|&byte| byte == 0),
            "{name}: non-zero bytes after the last batch at {position}"
        );
        files.push(SegmentFile {
            base,
            length: bytes.len() as u64,
            data_end: position as u64,
            batches,
        });
    }
    files
}

/// Check the files of a cleanly closed log: contiguous segments holding
/// exactly `expected` from the first segment on; every segment but the
/// last trimmed to its data; index files next to every segment.
fn check_files_after_close(dir: &Path, expected: &Expected) {
    let files = segment_files(dir);
    assert!(!files.is_empty());
    let mut on_disk = Expected::new();
    for (position, file) in files.iter().enumerate() {
        if let Some(next) = files.get(position + 1) {
            assert_eq!(
                file.batches.last().map(|(base, stored)| {
                    let header = batch::validate(stored, usize::MAX).unwrap();
                    assert_eq!(*base, header.base_offset());
                    header.next_offset()
                }),
                Some(next.base),
                "segment {} does not end where {} starts",
                file.base,
                next.base
            );
            assert_eq!(
                file.length, file.data_end,
                "sealed segment {} was not trimmed",
                file.base
            );
        }
        for suffix in ["index", "timeindex"] {
            let index = dir.join(format!("{:020}.{suffix}", file.base.value()));
            assert!(index.exists(), "{} is missing", index.display());
        }
        on_disk.extend(file.batches.iter().cloned());
    }
    assert!(
        on_disk == from_start(expected, files[0].base),
        "the segment files do not hold what was appended"
    );
}

#[test]
fn batches_appended_across_segments_read_back_identical_before_and_after_a_clean_reopen() {
    let dir = RealDir::new("uring-roundtrip");
    let log_dir = dir.log_dir();
    let mut expected = Expected::new();
    let end = run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        append_durably(&session.log, 0..400, &mut expected).await;
        let segments = session.log.segment_count();
        assert!(segments >= 4, "only {segments} segments");
        let stats = session.committer.stats();
        assert!(stats.fsyncs > 0 && stats.bytes_written >= session.log.size_bytes());
        assert!(
            stats.log_flushes < 400,
            "no group commit: {} flushes for 400 appends",
            stats.log_flushes
        );
        // Sealed segments were finalized (buffers dropped), and the active
        // one kept only its last chunks: most of this comes from disk.
        check_reads(&session.log, &expected).await;
        session.log.close().await.unwrap();
        let refused = session
            .log
            .append(&varied_batch(1), LeaderEpoch(EPOCH))
            .err();
        assert!(matches!(refused, Some(AppendError::Closed { .. })));
        session.log.log_end_offset()
    });
    check_files_after_close(&log_dir, &expected);

    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        assert_eq!(session.log.log_end_offset(), end);
        assert_eq!(session.log.log_start_offset(), Offset(0));
        // Everything but the active segment's tail page is read from disk.
        check_reads(&session.log, &expected).await;
        // Appends continue after the recovered end, rewriting its tail page.
        append_durably(&session.log, 400..460, &mut expected).await;
        check_reads(&session.log, &expected).await;
        session.log.close().await.unwrap();
    });
    check_files_after_close(&log_dir, &expected);

    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        check_reads(&session.log, &expected).await;
    });
}

#[test]
fn write_through_flushes_make_appends_durable_without_an_fdatasync() {
    let dir = RealDir::new("uring-write-through");
    let log_dir = dir.log_dir();
    let mut expected = Expected::new();
    let end = run_on_uring(async {
        let session = open_with(&log_dir, small_config(), SyncMode::WriteThrough).await;
        append_durably(&session.log, 0..300, &mut expected).await;
        assert!(session.log.segment_count() >= 3);
        let stats = session.committer.stats();
        assert_eq!(
            stats.fsyncs, 0,
            "write-through flushes call no fdatasync: {stats:?}"
        );
        assert!(
            stats.durable_writes >= stats.log_flushes && stats.log_flushes > 0,
            "every flush wrote durably: {stats:?}"
        );
        assert!(stats.bytes_written >= session.log.size_bytes());
        check_reads(&session.log, &expected).await;
        let end = session.log.log_end_offset();
        // No close: the process stops as after kill -9.
        drop(session);
        end
    });
    run_on_uring(async {
        let session = open_with(&log_dir, small_config(), SyncMode::WriteThrough).await;
        assert!(
            session.log.log_end_offset() >= end,
            "acknowledged data was lost"
        );
        check_reads(&session.log, &expected).await;
        // Appends continue after the recovered end, rewriting its tail page
        // durably.
        append_durably(&session.log, 300..340, &mut expected).await;
        check_reads(&session.log, &expected).await;
        session.log.close().await.unwrap();
    });
    check_files_after_close(&log_dir, &expected);
}

#[test]
fn a_log_closed_for_removal_refuses_appends_and_reopens_like_after_a_kill() {
    let dir = RealDir::new("uring-close-for-removal");
    let log_dir = dir.log_dir();
    let mut expected = Expected::new();
    let end = run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        append_durably(&session.log, 0..120, &mut expected).await;
        let pending = session
            .log
            .append(&varied_batch(1_000), LeaderEpoch(EPOCH))
            .unwrap();
        session.log.close_for_removal().await.unwrap();
        // Flushed before the close: acknowledged.
        pending.completion.await.unwrap();
        let refused = session
            .log
            .append(&varied_batch(1_001), LeaderEpoch(EPOCH))
            .err();
        assert!(matches!(refused, Some(AppendError::Closed { .. })));
        session.log.log_end_offset()
    });
    // No index files or checkpoint were written for the active segment:
    // if the removal never happens, the log recovers as after a kill -9.
    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        assert_eq!(session.log.log_end_offset(), end);
        let read = read_all(&session.log, 1 << 20).await;
        assert_eq!(
            read.len(),
            expected.len() + 1,
            "the 120 batches and the pending one"
        );
        for (offset, bytes) in &expected {
            assert_eq!(read.get(offset), Some(bytes), "batch at {offset}");
        }
    });
}

/// Every file of `dir` and its bytes.
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// `before == after`, or a panic naming the files that differ.
fn assert_same_files(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    let differing: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|name| before.get(*name) != after.get(*name))
        .collect();
    assert!(differing.is_empty(), "{what}: {differing:?}");
}

/// A topic deleted and created again under its name: the old log is closed
/// for removal and its directory renamed away, and the new topic's log
/// opens at the same path. Work that still held the old log (a cleaner
/// pass, a DeleteRecords, a follower, a compaction) used to act on the
/// path: retention removed the new log's first segment file and wrote the
/// old log start into its checkpoint (dir_gate.rs).
#[test]
fn a_closed_log_never_touches_the_directory_that_took_its_name() {
    let dir = RealDir::new("uring-closed-dir-reused");
    let log_dir = dir.log_dir();
    let moved = log_dir.with_extension("old-delete");
    let mut old_expected = Expected::new();
    let mut expected = Expected::new();
    run_on_uring(async {
        let old = open(&log_dir, small_config()).await;
        append_durably(&old.log, 0..300, &mut old_expected).await;
        assert!(
            old.log.segment_count() > 2,
            "retention has segments to delete"
        );
        old.log.set_config(LogConfig {
            retention_bytes: Some(1),
            ..small_config()
        });
        old.log.close_for_removal().await.unwrap();
        std::fs::rename(&log_dir, &moved).unwrap();

        let new = open(&log_dir, small_config()).await;
        append_durably(&new.log, 1_000..1_040, &mut expected).await;
        // The committer completes the appends before it finalizes a sealed
        // segment (its indexes, the checkpoint): a flush waits for that.
        new.log.flush().await.unwrap();
        let files = files_of(&log_dir);

        let closed = |result: Result<(), LogError>, what: &str| {
            assert!(
                matches!(result, Err(LogError::Closed { .. })),
                "{what} on the closed log: {result:?}"
            );
        };
        closed(
            old.log
                .apply_retention(old.log.log_end_offset())
                .await
                .map(drop),
            "retention",
        );
        closed(
            old.log.delete_records_before(Offset(50)).await.map(drop),
            "DeleteRecords",
        );
        closed(
            old.log.truncate_to(Offset(10)).await.map(drop),
            "truncation",
        );
        closed(old.log.start_over_at(Offset(5_000)).await, "a start-over");
        closed(
            old.log.clean(&CleanOptions::default()).await.map(drop),
            "compaction",
        );
        closed(old.log.enter_dir().map(drop), "a use of the directory");
        old.log.flush().await.unwrap();
        old.log.close().await.unwrap();
        assert_same_files(
            &files,
            &files_of(&log_dir),
            "the closed log changed the new log's directory",
        );
        check_reads(&new.log, &expected).await;
        new.log.close().await.unwrap();
    });
    run_on_uring(async {
        let new = open(&log_dir, small_config()).await;
        assert_eq!(new.log.log_start_offset(), Offset::ZERO);
        check_reads(&new.log, &expected).await;
        // The old log's files are where the removal put them.
        let old = open(&moved, small_config()).await;
        check_reads(&old.log, &old_expected).await;
    });
}

/// A close waits for the work using the directory by path (a compaction
/// pass, the server's transaction files) and no new such work starts.
#[test]
fn a_close_waits_for_the_uses_of_the_directory_in_progress() {
    let dir = RealDir::new("uring-close-waits-for-dir-uses");
    let log_dir = dir.log_dir();
    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        let mut expected = Expected::new();
        append_durably(&session.log, 0..20, &mut expected).await;
        let in_progress = session.log.enter_dir().unwrap();
        let mut close = Box::pin(session.log.close_for_removal());
        assert!(
            support::poll_once(&mut close).is_none(),
            "waits for the use"
        );
        assert!(session.log.is_closed());
        assert!(matches!(
            session.log.enter_dir(),
            Err(LogError::Closed { .. })
        ));
        drop(in_progress);
        close.await.unwrap();
    });
}

/// Appends that come while a close for removal flushes are failed, and no
/// later flush writes them: once the close has returned, the directory may
/// be another log's (dir_gate.rs). They used to stay buffered, and the
/// committer's next flush created the rolled segment's file and wrote index
/// files and a checkpoint by path.
#[test]
fn appends_during_a_close_for_removal_are_failed_and_never_written() {
    let dir = RealDir::new("uring-appends-during-close");
    let log_dir = dir.log_dir();
    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        let mut expected = Expected::new();
        append_durably(&session.log, 0..20, &mut expected).await;
        let pending = session
            .log
            .append(&varied_batch(20), LeaderEpoch(EPOCH))
            .unwrap();
        let mut close = Box::pin(session.log.close_for_removal());
        assert!(
            support::poll_once(&mut close).is_none(),
            "the close's flush writes the pending batch"
        );
        // Enough to roll past the 256 KiB segment, under a new epoch.
        let segments = session.log.segment_count();
        let late: Vec<_> = (0..200)
            .map(|tag| {
                session
                    .log
                    .append(&varied_batch(100 + tag), LeaderEpoch(EPOCH + 1))
            })
            .collect();
        assert!(
            late.iter().all(Result::is_ok),
            "accepted before the close ends"
        );
        assert!(session.log.segment_count() > segments, "a segment rolled");
        close.await.unwrap();
        pending.completion.await.unwrap();
        let files = files_of(&log_dir);
        session.log.flush().await.unwrap();
        // The committer's own rounds run meanwhile.
        compio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_same_files(&files, &files_of(&log_dir), "written after the close");
        for appended in late {
            assert!(matches!(
                appended.unwrap().completion.await,
                Err(AppendError::Closed { .. })
            ));
        }
    });
}

/// A close that comes during a compaction pass ends after the pass, which
/// stops at its next segment: the pass makes its temporary files and swaps
/// segments by path (dir_gate.rs). (The close here comes while the pass
/// writes its checkpoint; that the close also waits for a pass it finds
/// reading is the gate's own test, `a_close_waits_for_the_uses_of_the_directory_in_progress`.)
#[test]
fn a_close_during_a_compaction_pass_waits_for_the_pass() {
    let dir = RealDir::new("uring-close-during-compaction");
    let log_dir = dir.log_dir();
    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        let mut expected = Expected::new();
        append_durably(&session.log, 0..1_500, &mut expected).await;
        session.log.close().await.unwrap();
    });
    run_on_uring(async {
        // Reopened: the pass reads every segment from the disk.
        let session = open(&log_dir, small_config()).await;
        assert!(session.log.segment_count() > 4, "segments to clean");
        let order = std::cell::RefCell::new(Vec::new());
        let mut pass = Box::pin(async {
            let result = session.log.clean(&CleanOptions::default()).await;
            order.borrow_mut().push("pass");
            result
        });
        assert!(
            support::poll_once(&mut pass).is_none(),
            "the pass is in progress"
        );
        let close = async {
            session.log.close_for_removal().await.unwrap();
            order.borrow_mut().push("close");
        };
        let (result, ()) = futures_util::join!(pass, close);
        assert_eq!(*order.borrow(), ["pass", "close"]);
        assert!(
            matches!(result, Ok(_) | Err(LogError::Closed { .. })),
            "{result:?}"
        );
    });
}

#[test]
fn a_log_dropped_without_close_reopens_with_every_acknowledged_batch() {
    let dir = RealDir::new("uring-drop");
    let log_dir = dir.log_dir();
    let mut expected = Expected::new();
    for round in 0..3u64 {
        let end = run_on_uring(async {
            let session = open(&log_dir, small_config()).await;
            check_reads(&session.log, &expected).await;
            append_durably(&session.log, round * 150..round * 150 + 150, &mut expected).await;
            // Leave an unflushed append behind too: it was never
            // acknowledged, so it may or may not survive; nothing else may
            // depend on it.
            let _unacknowledged = session
                .log
                .append(&varied_batch(10_000 + round), LeaderEpoch(EPOCH))
                .unwrap();
            let durable_end = session.log.durable_end_offset();
            // Dropping the runtime stops the committer; the log is dropped
            // without a close, as by a process that exits abruptly.
            drop(session);
            durable_end
        });
        run_on_uring(async {
            let io = UringIo::new();
            let committer = Committer::new(io);
            let log = Log::open(io, &log_dir, small_config(), &committer)
                .await
                .unwrap();
            assert!(log.log_end_offset() >= end, "acknowledged data was lost");
            // Forget the unacknowledged batch if it survived: read what the
            // log holds below the acknowledged end, then cut it there.
            if log.log_end_offset() > end {
                assert_eq!(log.truncate_to(end).await.unwrap(), end);
            }
            check_reads(&log, &expected).await;
        });
    }
    let files = segment_files(&log_dir);
    assert!(files.len() >= 3, "only {} segments", files.len());
}

#[test]
fn truncation_cuts_later_segments_durably_and_appends_continue_from_the_cut() {
    let dir = RealDir::new("uring-truncate");
    let log_dir = dir.log_dir();
    let mut expected = Expected::new();
    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        append_durably(&session.log, 0..300, &mut expected).await;
        let segments_before = session.log.segment_count();
        assert!(segments_before >= 3);
        // A cut in the middle of a batch of the second segment: that batch
        // and everything after it go, including whole later segments.
        let second = segment_files(&log_dir)[1].base;
        let (&cut_base, cut_stored) = expected.range(second.plus(20)..).next().unwrap();
        let records = batch::validate(cut_stored, usize::MAX)
            .unwrap()
            .records_count();
        let target = if records > 1 {
            cut_base.plus(1)
        } else {
            cut_base
        };
        assert_eq!(session.log.truncate_to(target).await.unwrap(), cut_base);
        assert_eq!(session.log.log_end_offset(), cut_base);
        assert_eq!(session.log.durable_end_offset(), cut_base);
        assert_eq!(session.log.segment_count(), 2);
        expected.retain(|base, _| *base < cut_base);
        check_reads(&session.log, &expected).await;
        let files = segment_files(&log_dir);
        assert_eq!(files.len(), 2, "later segment files were not removed");
        assert_eq!(
            files[1].length, files[1].data_end,
            "the cut file was not cut"
        );
        // Appends continue at the cut, in the cut segment, and roll on.
        append_durably(&session.log, 1000..1150, &mut expected).await;
        assert_eq!(
            expected.range(cut_base..).next().map(|(base, _)| *base),
            Some(cut_base)
        );
        check_reads(&session.log, &expected).await;
        // Truncating at the end changes nothing.
        let end = session.log.log_end_offset();
        assert_eq!(session.log.truncate_to(end).await.unwrap(), end);
        // No close: the next open must find the cut as it was made.
    });
    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        check_reads(&session.log, &expected).await;
        session.log.close().await.unwrap();
    });
    check_files_after_close(&log_dir, &expected);
}

#[test]
fn delete_records_before_moves_the_start_durably_and_removes_whole_segments() {
    let dir = RealDir::new("uring-delete-records");
    let log_dir = dir.log_dir();
    let mut expected = Expected::new();
    let new_start = run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        append_durably(&session.log, 0..300, &mut expected).await;
        let files = segment_files(&log_dir);
        assert!(files.len() >= 4);
        // A start inside the third segment: the first two go entirely.
        let new_start = files[2].base.plus(3);
        assert_eq!(
            session.log.delete_records_before(new_start).await.unwrap(),
            new_start
        );
        assert_eq!(session.log.log_start_offset(), new_start);
        let below = session
            .log
            .read(
                Offset(new_start.value() - 1),
                support::all(session.log.log_end_offset()),
            )
            .await;
        assert!(matches!(below, Err(LogError::OffsetOutOfRange { .. })));
        let first = session
            .log
            .read(new_start, support::all(session.log.log_end_offset()))
            .await
            .unwrap();
        let first_batch = &batches_of(&first.records)[0];
        let header = batch::validate(first_batch, usize::MAX).unwrap();
        assert!(header.base_offset() <= new_start && new_start < header.next_offset());
        let remaining = segment_files(&log_dir);
        assert_eq!(
            remaining[0].base, files[2].base,
            "whole segments not removed"
        );
        // Beyond the durable end is out of range, and nothing changes.
        let beyond = session
            .log
            .delete_records_before(session.log.log_end_offset().plus(1))
            .await;
        assert!(beyond.is_err());
        assert_eq!(session.log.log_start_offset(), new_start);
        append_durably(&session.log, 300..330, &mut expected).await;
        new_start
    });
    run_on_uring(async {
        let session = open(&log_dir, small_config()).await;
        assert_eq!(session.log.log_start_offset(), new_start);
        // The batch holding the start is returned whole; reads begin there.
        let first_base = *expected.range(..=new_start).next_back().unwrap().0;
        expected.retain(|base, _| *base >= first_base);
        let read = read_all(&session.log, 4 << 20).await;
        assert!(read == expected, "reads after the new start differ");
    });
}

#[test]
fn retention_by_bytes_deletes_the_oldest_segments_on_disk() {
    let dir = RealDir::new("uring-retention");
    let log_dir = dir.log_dir();
    let retention_bytes = 600 << 10;
    let mut config = small_config();
    config.retention_bytes = Some(retention_bytes);
    let mut expected = Expected::new();
    let start = run_on_uring(async {
        let session = open(&log_dir, config.clone()).await;
        append_durably(&session.log, 0..500, &mut expected).await;
        let size_before = session.log.size_bytes();
        let segments_before = session.log.segment_count();
        assert!(size_before > 2 * retention_bytes);
        let deleted = session
            .log
            .apply_retention(session.log.log_end_offset())
            .await
            .unwrap();
        assert!(deleted > 0);
        assert_eq!(session.log.segment_count(), segments_before - deleted);
        let size = session.log.size_bytes();
        assert!(size >= retention_bytes, "keeps at least retention.bytes");
        assert!(
            size < retention_bytes + config.segment_bytes,
            "kept {size} bytes, more than one segment above retention"
        );
        let start = session.log.log_start_offset();
        assert!(start > Offset(0));
        let files = segment_files(&log_dir);
        assert_eq!(files.len(), session.log.segment_count());
        assert_eq!(files[0].base, start);
        assert_eq!(
            files.iter().map(|file| file.data_end).sum::<u64>(),
            size,
            "the files hold what the log counts"
        );
        check_reads(&session.log, &expected).await;
        // A second pass finds nothing more to delete.
        assert_eq!(
            session
                .log
                .apply_retention(session.log.log_end_offset())
                .await
                .unwrap(),
            0
        );
        start
    });
    run_on_uring(async {
        let session = open(&log_dir, config).await;
        assert_eq!(session.log.log_start_offset(), start);
        check_reads(&session.log, &expected).await;
    });
}

#[test]
fn one_committer_makes_several_logs_durable() {
    let dir = RealDir::new("uring-shared-committer");
    let dirs: Vec<_> = (0..3)
        .map(|index| dir.path.join(format!("topic-{index}")))
        .collect();
    let mut expected = vec![Expected::new(); dirs.len()];
    run_on_uring(async {
        let io = UringIo::new();
        let committer = Committer::new(io);
        let mut logs = Vec::new();
        for log_dir in &dirs {
            logs.push(
                Log::open(io, log_dir, small_config(), &committer)
                    .await
                    .unwrap(),
            );
        }
        let _task = spawn_committer(&committer);
        let mut completions = Vec::new();
        for tag in 0..120u64 {
            let index = (tag % 3) as usize;
            let batch = varied_batch(tag);
            let appended = logs[index].append(&batch, LeaderEpoch(EPOCH)).unwrap();
            expected[index].insert(
                appended.base_offset,
                as_stored(&batch, appended.base_offset, EPOCH),
            );
            completions.push(appended.completion);
            if completions.len() == 3 * IN_FLIGHT_MAX {
                for result in join_all(completions.drain(..)).await {
                    result.unwrap();
                }
            }
        }
        for result in join_all(completions).await {
            result.unwrap();
        }
        // Group commit: appends issued in bursts share fdatasyncs. (How the
        // committer interleaves the logs' flushes is timing, not asserted.)
        let stats = committer.stats();
        assert!(
            stats.fsyncs > 0 && stats.fsyncs < 120,
            "no fdatasync covered several appends: {stats:?}"
        );
        for (log, expected) in logs.iter().zip(&expected) {
            check_reads(log, expected).await;
        }
    });
    run_on_uring(async {
        for (log_dir, expected) in dirs.iter().zip(&expected) {
            let session = open(log_dir, small_config()).await;
            check_reads(&session.log, expected).await;
        }
    });
}

#[test]
fn reads_see_buffered_batches_only_below_the_bound_asked_for() {
    let dir = RealDir::new("uring-buffered-reads");
    let log_dir = dir.log_dir();
    let mut expected = Expected::new();
    run_on_uring(async {
        // No committer task: flushes happen only when the test asks.
        let io = UringIo::new();
        let committer = Committer::new(io);
        let log = Log::open(io, &log_dir, small_config(), &committer)
            .await
            .unwrap();
        let mut completions = Vec::new();
        for tag in 0..60u64 {
            let batch = varied_batch(tag);
            let appended = log.append(&batch, LeaderEpoch(EPOCH)).unwrap();
            expected.insert(
                appended.base_offset,
                as_stored(&batch, appended.base_offset, EPOCH),
            );
            completions.push(appended.completion);
        }
        assert_eq!(log.durable_end_offset(), Offset(0));
        let durable_view = log
            .read(Offset(0), support::all(log.durable_end_offset()))
            .await
            .unwrap();
        assert!(durable_view.records.is_empty());
        // Up to the log end, the buffered batches are served from memory.
        check_reads(&log, &expected).await;
        committer.flush_round().await;
        assert_eq!(log.durable_end_offset(), log.log_end_offset());
        for result in join_all(completions).await {
            result.unwrap();
        }
        check_reads(&log, &expected).await;
        log.close().await.unwrap();
    });
    check_files_after_close(&log_dir, &expected);
}

/// A quiet partition reserves little disk: the first preallocation of a
/// segment is small and later ones double (up to the configured step), so
/// 50 `__consumer_offsets` partitions do not reserve 50 x 64 MiB.
#[test]
fn preallocation_starts_small_and_grows_with_the_segment() {
    use std::os::unix::fs::MetadataExt;
    let dir = RealDir::new("uring-preallocation");
    let log_dir = dir.log_dir();
    let config = LogConfig {
        segment_bytes: 1 << 30,
        preallocate_step_bytes: 64 << 20,
        retention_ms: None,
        ..LogConfig::default()
    };
    let allocated = |path: &Path| std::fs::metadata(path).unwrap().blocks() * 512;
    run_on_uring(async {
        let session = open(&log_dir, config).await;
        let mut expected = Expected::new();
        append_durably(&session.log, 0..1, &mut expected).await;
        let file = log_dir.join("00000000000000000000.log");
        let first = allocated(&file);
        assert!(
            first <= 2 << 20,
            "one small batch reserved {first} bytes (first step is 1 MiB)"
        );
        // Enough data to need several steps: each step at most doubles.
        let mut tag = 1;
        while session.log.size_bytes() < 6 << 20 {
            append_durably(&session.log, tag..tag + 50, &mut expected).await;
            tag += 50;
        }
        let size = session.log.size_bytes();
        let later = allocated(&file);
        assert!(
            later >= size,
            "{later} bytes allocated for {size} bytes of data"
        );
        assert!(
            later <= 2 * size + (2 << 20),
            "{later} bytes allocated for {size} bytes of data: growth is not geometric"
        );
        check_reads(&session.log, &expected).await;
    });
}
