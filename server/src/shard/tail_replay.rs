//! One read of a partition's log for everything an open rebuilds from it:
//! the transaction state and the idempotent producer table, both from the
//! newest trusted transaction snapshot (which holds the producer table
//! too) to the log end; without a snapshot, the whole log for the
//! transaction state and the last
//! [`RECOVERY_SCAN_BYTES`](crate::shard::producer_state::RECOVERY_SCAN_BYTES)
//! for the producer table. Before they shared it, each read its part of
//! the log on its own: a partition's tail
//! was read twice after the engine's recovery scan had read it once
//! (docs/benchmarks.md, "One read of the tail at open").
//!
//! Invariant: each replay is given exactly the batches a read of the log
//! from its own start would have returned, in log order: every batch whose
//! last offset is at or above that start (a read from an offset inside a
//! batch returns that whole batch). The read starts at the earliest start,
//! so sharing it changes nothing a replay sees.

use bytes::Bytes;
use sluice_engine::batch::{self, BatchHeader};
use sluice_engine::io::Io;
use sluice_engine::{Log, LogError, Offset, ReadLimits};

use crate::shard::producer_state::{ProducerStateTable, RECOVERY_SCAN_BYTES};
use crate::shard::txn_state::TxnState;

/// Bytes per read.
const READ_BYTES: usize = 1 << 20;

/// A rebuild fed by [`replay_tail`].
pub trait TailReplay {
    /// Where the replay starts: batches whose last offset lies below it are
    /// not given to it.
    fn from(&self) -> Offset;

    /// One stored batch (its bytes and parsed header), in log order.
    fn replay(&mut self, stored: &Bytes, header: &BatchHeader);

    /// A read of its range failed: what it rebuilt is incomplete. Nothing
    /// more is given to it.
    fn fail(&mut self, error: &LogError);
}

/// Read `log` once, from the earliest start of `replays` to its end, and
/// give each replay its batches (module docs). Returns the bytes read, or
/// the first read error. A read that fails fails only the replays whose
/// range it was reading (their start at or below the offset read); the
/// others are read again from their own start, so each replay fails
/// exactly when a read of its own range would have. Batches that do not
/// parse are skipped (the engine validated them at append and at
/// recovery).
pub async fn replay_tail<I: Io>(
    log: &Log<I>,
    replays: &mut [&mut dyn TailReplay],
) -> Result<u64, LogError> {
    let mut pending: Vec<usize> = (0..replays.len()).collect();
    let mut read = 0u64;
    let mut first_error = None;
    while let Some(start) = pending.iter().map(|&index| replays[index].from()).min() {
        match read_to_end(log, replays, &pending, start, &mut read).await {
            Ok(()) => break,
            Err((at, error)) => {
                // Every batch given so far ends below `at`: a replay that
                // starts above it has been given nothing yet.
                pending.retain(|&index| {
                    let failed = replays[index].from() <= at;
                    if failed {
                        replays[index].fail(&error);
                    }
                    !failed
                });
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(read),
    }
}

/// Feed the `pending` replays from `start` to the log end; a failed read
/// says the offset it was reading from.
async fn read_to_end<I: Io>(
    log: &Log<I>,
    replays: &mut [&mut dyn TailReplay],
    pending: &[usize],
    start: Offset,
    read: &mut u64,
) -> Result<(), (Offset, LogError)> {
    let end = log.log_end_offset();
    let limits = ReadLimits {
        max_bytes: READ_BYTES,
        min_one_batch: true,
        max_offset: end,
    };
    let mut offset = start.max(log.log_start_offset());
    while offset < end {
        let result = log
            .read(offset, limits)
            .await
            .map_err(|error| (offset, error))?;
        if result.records.is_empty() || result.next_offset <= offset {
            break;
        }
        for run in &result.records {
            *read += run.len() as u64;
            let Ok(ranges) = batch::split_batches(run) else {
                continue;
            };
            for range in ranges {
                let Ok(header) = BatchHeader::parse(&run[range.clone()]) else {
                    continue;
                };
                let stored = run.slice(range);
                for &index in pending {
                    if header.last_offset() >= replays[index].from() {
                        replays[index].replay(&stored, &header);
                    }
                }
            }
        }
        offset = result.next_offset;
    }
    Ok(())
}

/// The producer table and the transaction state of a partition being
/// opened: from their clean-stop files where those hold, the rest from one
/// read of the log ([`replay_tail`]). A read failure fails the open (the
/// caller tries again later), as Kafka takes a log directory it cannot
/// read offline: a state rebuilt without the records it could not read
/// is wrong, not partial. An empty transaction state served read_committed
/// consumers aborted and still-open transactions' records; an empty
/// producer table appended a retried batch a second time.
pub async fn rebuild_at_open<I: Io>(
    io: &I,
    log: &Log<I>,
) -> Result<(ProducerStateTable, TxnState), LogError> {
    let (producers, txns, read) = rebuild_with(io, log, RECOVERY_SCAN_BYTES).await;
    read.map(|_| (producers, txns))
}

/// [`rebuild_at_open`] with the producer table's window, also returning
/// the bytes read, or the read error (when the states it returns are
/// incomplete).
pub(crate) async fn rebuild_with<I: Io>(
    io: &I,
    log: &Log<I>,
    scan_bytes: u64,
) -> (ProducerStateTable, TxnState, Result<u64, LogError>) {
    let mut txns = TxnState::open_replay(log).await;
    let snapshot = txns.take_producers();
    // Without a snapshot the transaction state reads the log from its
    // start, and the one read serves both: the producer table reads it
    // all too. With the window alone, a producer whose batches all lay
    // further back (a kill -9 before the first snapshot) was unknown, and
    // its retried batch was refused (OUT_OF_ORDER_SEQUENCE_NUMBER) or
    // appended twice.
    let window = if snapshot.is_none() && txns.from() <= log.log_start_offset() {
        u64::MAX
    } else {
        scan_bytes
    };
    let mut producers = ProducerStateTable::open_replay(io, log, window, snapshot).await;
    // A failure is recorded by the replays it fails (`TailReplay::fail`).
    let result = match &mut producers {
        Ok(_) => replay_tail(log, &mut [&mut txns]).await,
        Err(replay) => replay_tail(log, &mut [replay, &mut txns]).await,
    };
    let producers = match producers {
        Ok(table) => table,
        Err(replay) => replay.finish(log),
    };
    let (txns, _) = txns.finish(log);
    (producers, txns, result)
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

    /// The base offsets of the batches it was given.
    struct Recorder {
        from: Offset,
        bases: Vec<i64>,
        failed: bool,
    }

    impl TailReplay for Recorder {
        fn from(&self) -> Offset {
            self.from
        }

        fn replay(&mut self, stored: &Bytes, header: &BatchHeader) {
            assert!(!self.failed, "a failed replay is given nothing more");
            assert_eq!(stored.len(), header.total_size());
            self.bases.push(header.base_offset().value());
        }

        fn fail(&mut self, _error: &LogError) {
            self.failed = true;
        }
    }

    const DIR: &str = "/data/t-0";

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 4 << 10,
            preallocate_step_bytes: 16 << 10,
            chunk_size_bytes: 16 << 10,
            retention_ms: None,
            ..LogConfig::default()
        }
    }

    /// A log of 20 durable batches of 3 records (offsets 3n..3n+2) over
    /// several segments, reopened after a crash so that reads go to the
    /// disk.
    fn twenty_batches(seed: u64) -> (SimIo, Committer<SimIo>, Log<SimIo>) {
        let io = SimIo::new(seed);
        let committer = Committer::new(io.clone());
        let log = block_on(Log::open(io.clone(), Path::new(DIR), config(), &committer)).unwrap();
        for _ in 0..20 {
            let mut builder = BatchBuilder::new();
            for _ in 0..3 {
                builder.record(None, Some(&[7u8; 300][..]), TimestampMs(1));
            }
            let _appended = log.append(&builder.build(), LeaderEpoch(0)).unwrap();
        }
        block_on(committer.flush_round());
        drop(log);
        let io = io.crash();
        let committer = Committer::new(io.clone());
        let log = block_on(Log::open(io.clone(), Path::new(DIR), config(), &committer)).unwrap();
        assert_eq!(log.log_end_offset(), Offset(60));
        assert!(log.segment_count() > 2);
        (io, committer, log)
    }

    fn recorders(froms: &[i64]) -> Vec<Recorder> {
        froms
            .iter()
            .map(|&from| Recorder {
                from: Offset(from),
                bases: Vec::new(),
                failed: false,
            })
            .collect()
    }

    fn replay_all(log: &Log<SimIo>, recorders: &mut [Recorder]) -> Result<u64, LogError> {
        let mut replays: Vec<&mut dyn TailReplay> = recorders
            .iter_mut()
            .map(|recorder| recorder as &mut dyn TailReplay)
            .collect();
        block_on(replay_tail(log, &mut replays))
    }

    /// A read that fails fails only the replays whose range it was in: one
    /// starting past the bad segment gets all its batches, as when it read
    /// its own range alone.
    #[test]
    fn a_failed_read_fails_only_the_replays_whose_range_it_was_in() {
        let (io, _committer, log) = twenty_batches(52);
        let first = sluice_engine::segment::log_path(Path::new(DIR), Offset(0));
        io.fail_reads_of(Some(first));
        let mut alone = recorders(&[45]);
        assert!(replay_all(&log, &mut alone).is_ok());
        assert_eq!(alone[0].bases, vec![45, 48, 51, 54, 57]);

        let mut shared = recorders(&[0, 7, 45]);
        assert!(replay_all(&log, &mut shared).is_err());
        assert!(shared[0].failed && shared[1].failed);
        assert!(!shared[2].failed);
        assert_eq!(shared[2].bases, alone[0].bases);

        // A bad segment under both starts fails both (the one from 45 when
        // its own read from there fails too).
        let bases = log.segment_bases();
        let holding = bases
            .iter()
            .copied()
            .filter(|base| base.value() <= 45)
            .max()
            .unwrap();
        assert!(
            holding < *bases.last().unwrap(),
            "a sealed segment: {bases:?}"
        );
        io.fail_reads_of(Some(sluice_engine::segment::log_path(
            Path::new(DIR),
            holding,
        )));
        let mut shared = recorders(&[0, 45]);
        assert!(replay_all(&log, &mut shared).is_err());
        assert!(shared.iter().all(|recorder| recorder.failed));
    }

    /// An open whose rebuild cannot read the log fails (and is tried again)
    /// rather than serving an empty transaction state and producer table:
    /// with no snapshot, the transaction state needs the whole log, and a
    /// read error in its first segment left it empty (read_committed
    /// consumers got aborted records); the read succeeds again later.
    #[test]
    fn a_rebuild_that_cannot_read_the_log_fails_the_open() {
        let (io, _committer, log) = twenty_batches(53);
        let first = sluice_engine::segment::log_path(Path::new(DIR), Offset(0));
        io.fail_reads_of(Some(first));
        assert!(block_on(rebuild_at_open(&io, &log)).is_err());
        io.fail_reads_of(None);
        assert!(block_on(rebuild_at_open(&io, &log)).is_ok());
    }

    /// Each replay gets what a read from its own start returns: the batch
    /// holding that offset, then every later one; the shared read covers
    /// the earliest start once.
    #[test]
    fn each_replay_gets_the_batches_a_read_from_its_start_returns() {
        let (_io, _committer, log) = twenty_batches(51);

        // From inside a batch (twice), at a batch's start, at the end.
        let mut recorders = recorders(&[31, 45, 60, 7]);
        let read = replay_all(&log, &mut recorders).unwrap();
        for recorder in &recorders {
            let expected: Vec<i64> = (0..20_i64)
                .map(|batch| batch * 3)
                .filter(|base| base + 2 >= recorder.from.value())
                .collect();
            assert_eq!(recorder.bases, expected, "from {}", recorder.from);
            if let Some(&first) = expected.first() {
                let limits = ReadLimits {
                    max_bytes: 1,
                    min_one_batch: true,
                    max_offset: log.log_end_offset(),
                };
                let direct = block_on(log.read(recorder.from, limits)).unwrap();
                let header = BatchHeader::parse(&direct.records[0]).unwrap();
                assert_eq!(header.base_offset().value(), first);
            }
        }
        // One read from offset 6 (the batch holding 7) to the end.
        let batch_bytes = log.size_bytes() / 20;
        assert_eq!(read, log.size_bytes() - 2 * batch_bytes);
        assert_eq!(block_on(replay_tail(&log, &mut [])).unwrap(), 0);
    }
}
