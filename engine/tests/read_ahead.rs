//! Read-ahead (engine/src/readahead.rs) on the simulated disk: a
//! sequential reader gets exactly the stored batches while its reads are
//! served from the chunk read ahead, and a truncation never lets a chunk
//! read before it stand in for the bytes written after it.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use bytes::Bytes;
use sluice_engine::io::sim::SimIo;
use sluice_engine::{Committer, LeaderEpoch, Log, LogConfig, Offset, ReadLimits};
use support::{all, batches_of, block_on, tagged_batch};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;

/// Small write chunks, so that flushed data soon leaves the write buffer
/// and is read from the file.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        chunk_size_bytes: 4 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(io: &SimIo) -> (Log<SimIo>, Committer<SimIo>) {
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(
        io.clone(),
        PathBuf::from("/data/readahead-0"),
        config(),
        &committer,
    ))
    .unwrap();
    (log, committer)
}

/// Append `count` batches tagged from `first_tag` (about 1.1 KiB each)
/// and make them durable.
fn append(log: &Log<SimIo>, committer: &Committer<SimIo>, first_tag: u64, count: u64) {
    for tag in first_tag..first_tag + count {
        let batch = tagged_batch(tag, 2, 500, NOW);
        drop(log.append(&batch, LeaderEpoch(0)).unwrap().completion);
    }
    block_on(committer.flush_round());
    assert_eq!(log.durable_end_offset(), log.log_end_offset());
}

/// Read from `from` to the end in reads of at most `max_bytes`.
fn read_in_steps(log: &Log<SimIo>, from: Offset, max_bytes: usize) -> Vec<Vec<u8>> {
    let end = log.log_end_offset();
    let mut offset = from;
    let mut out = Vec::new();
    while offset < end {
        let limits = ReadLimits {
            max_bytes,
            min_one_batch: true,
            max_offset: end,
        };
        let result = block_on(log.read(offset, limits)).unwrap();
        assert!(!result.records.is_empty(), "no progress at {offset}");
        out.extend(batches_of(&result.records));
        offset = result.next_offset;
    }
    out
}

fn read_at_once(log: &Log<SimIo>, from: Offset) -> Vec<Vec<u8>> {
    let result = block_on(log.read(from, all(log.log_end_offset()))).unwrap();
    batches_of(&result.records)
}

#[test]
fn a_sequential_reader_is_served_from_the_chunks_read_ahead() {
    let io = SimIo::new(7);
    let (log, committer) = open(&io);
    append(&log, &committer, 0, 600);
    // Reopen, so that nothing is served from the write buffer.
    drop(log);
    let (log, _committer) = open(&io);
    let whole = read_at_once(&log, Offset::ZERO);
    assert_eq!(whole.len(), 600);
    let hits_before = log.read_ahead_hits();
    // 64 KiB chunks (the smallest read), a fetch of at most 16 KiB each.
    let stepped = read_in_steps(&log, Offset::ZERO, 16 << 10);
    assert_eq!(stepped, whole, "the same batches, in order");
    let hits = log.read_ahead_hits() - hits_before;
    // ~680 KiB in 64 KiB chunks: every chunk after the first comes from a
    // read issued ahead (reads within a chunk are served from its run).
    assert!(hits >= 8, "only {hits} reads served from read-ahead");
}

#[test]
fn a_truncation_discards_the_chunk_read_ahead() {
    let io = SimIo::new(8);
    let (log, committer) = open(&io);
    append(&log, &committer, 0, 300);
    drop(log);
    let (log, committer) = open(&io);
    // A small read from the start issues a read-ahead of the next chunk
    // (from the page holding the 8th batch, at 4 KiB).
    let limits = ReadLimits {
        max_bytes: 8 << 10,
        min_one_batch: true,
        max_offset: log.log_end_offset(),
    };
    let head = block_on(log.read(Offset::ZERO, limits)).unwrap();
    assert!(head.next_offset > Offset(8));
    // Cut before that chunk (batch 1, offsets 2-3: the truncation's own
    // reads stay below it) and write other batches over the positions it
    // read.
    let cut = Offset(2);
    assert_eq!(block_on(log.truncate_to(cut)).unwrap(), cut);
    // One batch per flush: the write buffer keeps only its last chunks.
    for tag in 10_000..10_050 {
        append(&log, &committer, tag, 1);
    }
    let expected: Vec<Bytes> = (10_000..10_050)
        .map(|tag| tagged_batch(tag, 2, 500, NOW))
        .collect();
    // Read from a new batch lying inside the chunk read before the cut.
    let from = cut.plus(2 * 10);
    let hits_before = log.read_ahead_hits();
    let read = read_in_steps(&log, from, 4 << 10);
    assert_eq!(read.len(), expected.len() - 10);
    for (stored, sent) in read.iter().zip(&expected[10..]) {
        // The records part (after the 61-byte batch header) is what the
        // producer sent; the header carries the log's offsets and epoch.
        assert_eq!(&stored[61..], &sent[61..], "a batch written after the cut");
    }
    assert!(
        log.read_ahead_hits() > hits_before,
        "read-ahead serves the reads after the cut too"
    );
}

/// `ReadResult::full` says the read stopped at its byte budget, so that a
/// caller reading on (a fetch filling its partition limit) knows a read of
/// the rest would return nothing, and does not issue one: that read would
/// take the chunk the first read just set reading ahead and wait for the
/// disk, making every catch-up fetch wait for the next one's reads.
#[test]
fn a_read_says_when_its_byte_budget_stopped_it() {
    let io = SimIo::new(9);
    let (log, committer) = open(&io);
    append(&log, &committer, 0, 40);
    drop(log);
    let (log, _committer) = open(&io);
    let end = log.log_end_offset();
    let batch_bytes = read_at_once(&log, Offset::ZERO)[0].len();
    // Room for three batches and a half.
    let budget = batch_bytes * 7 / 2;
    let limits = ReadLimits {
        max_bytes: budget,
        min_one_batch: false,
        max_offset: end,
    };
    let first = block_on(log.read(Offset::ZERO, limits)).unwrap();
    assert_eq!(batches_of(&first.records).len(), 3);
    assert!(first.full, "the fourth batch did not fit");
    let rest = ReadLimits {
        max_bytes: budget - first.size,
        ..limits
    };
    let second = block_on(log.read(first.next_offset, rest)).unwrap();
    assert!(second.records.is_empty(), "what `full` promises");
    // Stopped by max_offset, or by the log's end: not full.
    let below = ReadLimits {
        max_bytes: 1 << 20,
        min_one_batch: false,
        max_offset: Offset(6),
    };
    let bounded = block_on(log.read(Offset::ZERO, below)).unwrap();
    assert_eq!(bounded.next_offset, Offset(6));
    assert!(!bounded.full);
    let whole = block_on(log.read(Offset::ZERO, all(end))).unwrap();
    assert_eq!(whole.next_offset, end);
    assert!(!whole.full);
}

/// A read whose budget is too small for the next batch returns nothing,
/// also when that batch is the last of its segment: it must not go on to
/// the next segment (which it does when nothing at or after the offset is
/// left in the segment, as compaction can leave) and answer with later
/// batches, which would make a consumer skip the one that did not fit.
#[test]
fn a_batch_too_large_for_the_budget_at_a_segment_end_is_not_skipped() {
    let io = SimIo::new(10);
    let committer = Committer::new(io.clone());
    // Two records of 3,000 bytes: about 6 KiB a batch. The first segment
    // holds exactly two, so the small batch after them starts the second.
    let big = |tag| tagged_batch(tag, 2, 3_000, NOW);
    let config = LogConfig {
        segment_bytes: 2 * big(0).len() as u64,
        ..config()
    };
    let log = block_on(Log::open(
        io.clone(),
        PathBuf::from("/data/segment-end-0"),
        config,
        &committer,
    ))
    .unwrap();
    for tag in 0..2 {
        drop(log.append(&big(tag), LeaderEpoch(0)).unwrap().completion);
    }
    // A small batch, which fits the budget below, starts the second segment.
    drop(
        log.append(&tagged_batch(2, 1, 10, NOW), LeaderEpoch(0))
            .unwrap()
            .completion,
    );
    block_on(committer.flush_round());
    assert_eq!(log.segment_bases(), vec![Offset::ZERO, Offset(4)]);
    let second = log.segment_bases()[1];
    let last_of_first = Offset(second.value() - 2);
    let limits = ReadLimits {
        max_bytes: 1_000,
        min_one_batch: false,
        max_offset: log.log_end_offset(),
    };
    let result = block_on(log.read(last_of_first, limits)).unwrap();
    assert!(
        result.records.is_empty(),
        "a later segment's batch came back: the one at {last_of_first} would be skipped"
    );
    assert!(result.full);
    assert_eq!(result.next_offset, last_of_first);
}
