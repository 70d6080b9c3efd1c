//! The shard's budget for retained tail chunks (tail_cache.rs): which logs
//! give their flushed chunks back, that a chunk still being written is
//! never one of them, and that reads stay correct from disk afterwards.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use bytes::Bytes;
use sluice_engine::io::sim::SimIo;
use sluice_engine::{Committer, LeaderEpoch, Log, LogConfig, Offset, SyncMode, tail_cache};
use support::{all, as_stored, batches_of, block_on, poll_once, tagged_batch};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;
const CHUNK_BYTES: usize = 16 << 10;
const RETAINED: usize = 2 * CHUNK_BYTES;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 1024,
        preallocate_step_bytes: 64 << 10,
        chunk_size_bytes: CHUNK_BYTES,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(io: &SimIo, committer: &Committer<SimIo>, name: &str) -> Log<SimIo> {
    let dir = PathBuf::from(format!("/data/{name}-0"));
    block_on(Log::open(io.clone(), dir, config(), committer)).unwrap()
}

/// Three ~6 KiB batches: the first 16 KiB chunk takes two, the third
/// starts the next chunk. Once flushed both chunks are retained (the last
/// one too: it is wholly durable), [`RETAINED`] bytes.
fn fill_two_chunks(log: &Log<SimIo>, tag: u64) -> Vec<(Bytes, Offset)> {
    (0..3)
        .map(|index| {
            let batch = tagged_batch(tag * 10 + index, 6, 1000, NOW);
            let appended = log.append(&batch, LeaderEpoch(0)).unwrap();
            (batch, appended.base_offset)
        })
        .collect()
}

fn stored(written: &[(Bytes, Offset)]) -> Vec<Vec<u8>> {
    written
        .iter()
        .map(|(batch, base)| as_stored(batch, *base, 0))
        .collect()
}

fn read_all(log: &Log<SimIo>) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.durable_end_offset() {
        let result = block_on(log.read(offset, all(log.durable_end_offset()))).unwrap();
        batches.extend(batches_of(&result.records));
        offset = result.next_offset;
    }
    batches
}

#[test]
fn the_least_recently_written_or_read_logs_give_their_tail_back_first() {
    // Room for two logs' retained chunks on this thread.
    tail_cache::set_thread_budget_bytes(Some(2 * RETAINED));
    let io = SimIo::new(1);
    let committer = Committer::new(io.clone());
    let logs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| open(&io, &committer, name))
        .collect();
    let mut written: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(tag, log)| fill_two_chunks(log, tag as u64))
        .collect();
    block_on(committer.flush_all());
    // a was written first: it gave its chunk back when c's flush went over.
    let retained: Vec<_> = logs.iter().map(Log::retained_tail_bytes).collect();
    assert_eq!(retained, [0, RETAINED, RETAINED]);
    assert_eq!(tail_cache::retained_bytes(), 2 * RETAINED);

    // b is read: c is now the least recently used.
    let reads = io.stats().read_at_count;
    assert_eq!(read_all(&logs[1]), stored(&written[1]));
    assert_eq!(io.stats().read_at_count, reads, "b's tail came from memory");
    // a is written again and retains a chunk: c gives its chunk back.
    written[0].extend(fill_two_chunks(&logs[0], 3));
    block_on(committer.flush_all());
    let retained: Vec<_> = logs.iter().map(Log::retained_tail_bytes).collect();
    assert_eq!(retained[1], RETAINED, "b was read more recently than c");
    assert_eq!(retained[2], 0, "c was the least recently used");
    assert_eq!(retained[0], RETAINED);
    assert!(tail_cache::retained_bytes() <= 2 * RETAINED);

    // Reads of what was given back go to disk and return the same bytes.
    let reads = io.stats().read_at_count;
    assert_eq!(read_all(&logs[2]), stored(&written[2]));
    assert!(
        io.stats().read_at_count > reads,
        "c's first chunk came from disk"
    );
    for (log, written) in logs.iter().zip(&written) {
        assert_eq!(read_all(log), stored(written));
    }
    assert!(tail_cache::evictions() >= 2);
    drop(logs);
    assert_eq!(
        tail_cache::retained_bytes(),
        0,
        "claims end with their logs"
    );
    tail_cache::set_thread_budget_bytes(None);
}

#[test]
fn a_chunk_whose_write_is_in_flight_is_never_given_back() {
    // Room for one log's retained chunks.
    tail_cache::set_thread_budget_bytes(Some(RETAINED));
    let io = SimIo::new(2);
    // a syncs with syncfs, which takes a poll pass: its flush can be
    // caught with its writes done and their sync not.
    let committer_a = Committer::with_sync_mode(io.clone(), SyncMode::Filesystem);
    let committer_b = Committer::new(io.clone());
    let a = open(&io, &committer_a, "a");
    let b = open(&io, &committer_b, "b");
    let mut written_a = fill_two_chunks(&a, 0);
    block_on(committer_a.flush_all());
    assert_eq!(a.retained_tail_bytes(), RETAINED);
    // a's next flush starts and stops in the middle of its writes...
    written_a.extend(fill_two_chunks(&a, 1));
    let mut flush_a = Box::pin(a.flush());
    assert!(
        poll_once(&mut flush_a).is_none(),
        "the sync takes a poll pass"
    );
    // ...while b's flush takes the shard over its budget: a, the least
    // recently used, gives back its first chunk, the only one retained:
    // appends went into the second since.
    let written_b = fill_two_chunks(&b, 2);
    block_on(committer_b.flush_all());
    assert_eq!(a.retained_tail_bytes(), 0);
    assert_eq!(b.retained_tail_bytes(), RETAINED);
    // a's chunks being written were not retained, so not given back: the
    // flush completes with the bytes appended, and they survive a crash.
    block_on(flush_a).unwrap();
    assert!(tail_cache::retained_bytes() <= RETAINED);
    assert_eq!(a.durable_end_offset(), a.log_end_offset());
    assert_eq!(read_all(&a), stored(&written_a));
    assert_eq!(read_all(&b), stored(&written_b));
    let crashed = io.crash();
    let committer = Committer::new(crashed.clone());
    let reopened_a = open(&crashed, &committer, "a");
    let reopened_b = open(&crashed, &committer, "b");
    assert_eq!(read_all(&reopened_a), stored(&written_a));
    assert_eq!(read_all(&reopened_b), stored(&written_b));
    tail_cache::set_thread_budget_bytes(None);
}

#[test]
fn with_the_default_budget_a_few_logs_keep_their_tails() {
    tail_cache::set_thread_budget_bytes(None);
    let io = SimIo::new(3);
    let committer = Committer::new(io.clone());
    let logs: Vec<_> = (0..4)
        .map(|index| open(&io, &committer, &format!("t{index}")))
        .collect();
    for (tag, log) in logs.iter().enumerate() {
        fill_two_chunks(log, tag as u64);
    }
    block_on(committer.flush_all());
    for log in &logs {
        assert_eq!(log.retained_tail_bytes(), RETAINED);
    }
    assert_eq!(tail_cache::evictions(), 0);
}
