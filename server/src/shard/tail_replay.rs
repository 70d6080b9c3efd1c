//! One read of a partition's log for everything an open rebuilds from it:
//! the idempotent producer table (the log's last
//! [`RECOVERY_SCAN_BYTES`](crate::shard::producer_state::RECOVERY_SCAN_BYTES))
//! and the transaction state (the log after its newest snapshot, the whole
//! log without one). After a kill -9 neither has a clean-stop file to start
//! from, and each read its part of the log on its own: a partition's tail
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
}

/// Read `log` once, from the earliest start of `replays` to its end, and
/// give each replay its batches (module docs). Returns the bytes read.
/// Batches that do not parse are skipped (the engine validated them at
/// append and at recovery).
pub async fn replay_tail<I: Io>(
    log: &Log<I>,
    replays: &mut [&mut dyn TailReplay],
) -> Result<u64, LogError> {
    let Some(start) = replays.iter().map(|replay| replay.from()).min() else {
        return Ok(0);
    };
    let end = log.log_end_offset();
    let limits = ReadLimits {
        max_bytes: READ_BYTES,
        min_one_batch: true,
        max_offset: end,
    };
    let mut offset = start.max(log.log_start_offset());
    let mut read = 0u64;
    while offset < end {
        let result = log.read(offset, limits).await?;
        if result.records.is_empty() || result.next_offset <= offset {
            break;
        }
        for run in &result.records {
            read += run.len() as u64;
            let Ok(ranges) = batch::split_batches(run) else {
                continue;
            };
            for range in ranges {
                let Ok(header) = BatchHeader::parse(&run[range.clone()]) else {
                    continue;
                };
                let stored = run.slice(range);
                for replay in replays.iter_mut() {
                    if header.last_offset() >= replay.from() {
                        replay.replay(&stored, &header);
                    }
                }
            }
        }
        offset = result.next_offset;
    }
    Ok(read)
}

/// The producer table and the transaction state of a partition being
/// opened: from their clean-stop files where those hold, the rest from one
/// read of the log ([`replay_tail`]). A read failure leaves both empty
/// (logged), as each did on its own before.
pub async fn rebuild_at_open<I: Io>(io: &I, log: &Log<I>) -> (ProducerStateTable, TxnState) {
    let (producers, txns, _) = rebuild_with(io, log, RECOVERY_SCAN_BYTES).await;
    (producers, txns)
}

/// [`rebuild_at_open`] with the producer table's window, also returning
/// the bytes read (tests).
pub(crate) async fn rebuild_with<I: Io>(
    io: &I,
    log: &Log<I>,
    scan_bytes: u64,
) -> (ProducerStateTable, TxnState, u64) {
    let mut producers = ProducerStateTable::open_replay(io, log, scan_bytes).await;
    let mut txns = TxnState::open_replay(log).await;
    let result = match &mut producers {
        Ok(_) => replay_tail(log, &mut [&mut txns]).await,
        Err(replay) => replay_tail(log, &mut [replay, &mut txns]).await,
    };
    let failure = result.as_ref().err();
    let producers = match producers {
        Ok(table) => table,
        Err(replay) => replay.finish(log, failure),
    };
    let (txns, _) = txns.finish(log, failure);
    (producers, txns, result.unwrap_or(0))
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
    }

    impl TailReplay for Recorder {
        fn from(&self) -> Offset {
            self.from
        }

        fn replay(&mut self, stored: &Bytes, header: &BatchHeader) {
            assert_eq!(stored.len(), header.total_size());
            self.bases.push(header.base_offset().value());
        }
    }

    /// Each replay gets what a read from its own start returns: the batch
    /// holding that offset, then every later one; the shared read covers
    /// the earliest start once.
    #[test]
    fn each_replay_gets_the_batches_a_read_from_its_start_returns() {
        let io = SimIo::new(51);
        let committer = Committer::new(io.clone());
        let config = LogConfig {
            segment_bytes: 4 << 10,
            preallocate_step_bytes: 16 << 10,
            chunk_size_bytes: 16 << 10,
            retention_ms: None,
            ..LogConfig::default()
        };
        let log = block_on(Log::open(io, Path::new("/data/t-0"), config, &committer)).unwrap();
        // 20 batches of 3 records: offsets 3n..3n+2, over several segments.
        for _ in 0..20 {
            let mut builder = BatchBuilder::new();
            for _ in 0..3 {
                builder.record(None, Some(&[7u8; 300][..]), TimestampMs(1));
            }
            let _appended = log.append(&builder.build(), LeaderEpoch(0)).unwrap();
        }
        block_on(committer.flush_round());
        assert!(log.segment_count() > 2);

        // From inside a batch, at a batch's start, at the end.
        let mut recorders: Vec<Recorder> = [31, 45, 60, 7]
            .into_iter()
            .map(|from| Recorder {
                from: Offset(from),
                bases: Vec::new(),
            })
            .collect();
        let mut replays: Vec<&mut dyn TailReplay> = recorders
            .iter_mut()
            .map(|recorder| recorder as &mut dyn TailReplay)
            .collect();
        let read = block_on(replay_tail(&log, &mut replays)).unwrap();
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
