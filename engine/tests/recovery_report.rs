//! What `Log::recovery` reports after each kind of stop: nothing to do after
//! a clean close; the bytes written past the checkpoint after a crash; the
//! cut after a damaged batch. The broker logs the report at info when the
//! open needed recovery.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::{Committer, LeaderEpoch, Log, LogConfig, Offset};
use support::{block_on, poll_once, tagged_batch};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;

fn dir() -> PathBuf {
    PathBuf::from("/data/topic-0")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 1024,
        preallocate_step_bytes: 16 << 10,
        chunk_size_bytes: 16 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(io: &SimIo) -> (Log<SimIo>, Committer<SimIo>) {
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir(), config(), &committer)).unwrap();
    (log, committer)
}

/// Append `count` batches of 2 records and make them durable; returns the
/// bytes appended.
fn append_durable(log: &Log<SimIo>, committer: &Committer<SimIo>, count: u64) -> u64 {
    let mut bytes = 0;
    for tag in 0..count {
        let batch = tagged_batch(tag, 2, 100, NOW);
        bytes += batch.len() as u64;
        let mut appended = log.append(&batch, LeaderEpoch(0)).unwrap();
        block_on(committer.flush_round());
        poll_once(&mut appended.completion).unwrap().unwrap();
    }
    bytes
}

#[test]
fn a_new_log_and_a_cleanly_closed_one_report_no_recovery() {
    let io = SimIo::new(1);
    let (log, committer) = open(&io);
    assert!(!log.recovery().was_needed(), "{}", log.recovery());
    assert_eq!(log.recovery().segments, 0);
    append_durable(&log, &committer, 10);
    block_on(log.close()).unwrap();
    drop(log);
    io.set_crash_mode(CrashMode::LoseUnsynced);
    let io = io.crash();
    let (log, _committer) = open(&io);
    let report = log.recovery();
    assert!(!report.was_needed(), "{report}");
    assert_eq!(report.segments, 1);
    assert_eq!(report.bytes_past_checkpoint, 0);
    assert_eq!(report.segments_truncated, 0);
    assert_eq!(log.log_end_offset(), Offset(20));
}

#[test]
fn a_crash_reports_the_bytes_scanned_past_the_checkpoint() {
    let io = SimIo::new(2);
    let (log, committer) = open(&io);
    let bytes = append_durable(&log, &committer, 10);
    drop(log);
    let io = io.crash();
    let (log, _committer) = open(&io);
    let report = log.recovery();
    assert!(report.was_needed(), "{report}");
    assert_eq!(report.bytes_past_checkpoint, bytes, "{report}");
    assert_eq!(report.bytes_scanned, bytes, "{report}");
    // What follows the last batch is preallocated zeros: no data was cut.
    assert_eq!(report.segments_truncated, 0, "{report}");
    assert_eq!(report.bytes_truncated, 0, "{report}");
    assert_eq!(log.log_end_offset(), Offset(20));
}

#[test]
fn a_damaged_batch_reports_the_cut() {
    let io = SimIo::new(3);
    let (log, committer) = open(&io);
    let bytes = append_durable(&log, &committer, 5);
    drop(log);
    let batch_size = tagged_batch(0, 2, 100, NOW).len() as u64;
    io.corrupt_byte(&dir().join("00000000000000000000.log"), 3 * batch_size + 70);
    let io = io.crash();
    let (log, _committer) = open(&io);
    let report = log.recovery();
    assert!(report.was_needed(), "{report}");
    assert_eq!(report.segments_truncated, 1, "{report}");
    assert_eq!(report.bytes_past_checkpoint, 3 * batch_size, "{report}");
    assert!(
        report.bytes_truncated >= bytes - 3 * batch_size,
        "the damaged batch and the one after it are cut: {report}"
    );
    assert_eq!(log.log_end_offset(), Offset(6));
}
