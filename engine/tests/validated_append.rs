//! `validate_for_append`: the produce handler validates a batch and the
//! append of those very bytes that follows on the same thread skips its
//! second pass (issue 11). The note must never vouch for other bytes, nor
//! for a larger size than the log allows.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use bytes::Bytes;
use sluice_engine::batch::BatchError;
use sluice_engine::io::sim::SimIo;
use sluice_engine::{
    AppendError, Committer, LeaderEpoch, Log, LogConfig, Offset, validate_for_append,
};
use support::{all, as_stored, batches_of, block_on, poll_once, tagged_batch};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;

fn open(io: &SimIo) -> (Log<SimIo>, Committer<SimIo>) {
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
        PathBuf::from("/data/topic-0"),
        config,
        &committer,
    ))
    .unwrap();
    (log, committer)
}

fn corrupted(batch: &Bytes) -> Bytes {
    let mut bytes = batch.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    Bytes::from(bytes)
}

#[test]
fn a_validated_batch_appends_durably_and_reads_back_identical() {
    let io = SimIo::new(1);
    let (log, committer) = open(&io);
    let mut expected = Vec::new();
    for tag in 0..10u64 {
        let batch = tagged_batch(tag, 1 + tag as usize % 4, 200, NOW);
        let (header, _) = validate_for_append(&batch, 1 << 20).unwrap();
        assert_eq!(header.records_count(), 1 + tag as i32 % 4);
        let mut appended = log.append(&batch, LeaderEpoch(3)).unwrap();
        block_on(committer.flush_round());
        poll_once(&mut appended.completion).unwrap().unwrap();
        expected.push(as_stored(&batch, appended.base_offset, 3));
    }
    let result = block_on(log.read(Offset(0), all(log.durable_end_offset()))).unwrap();
    assert_eq!(batches_of(&result.records), expected);
}

#[test]
fn a_note_for_other_bytes_vouches_for_nothing() {
    let io = SimIo::new(2);
    let (log, _committer) = open(&io);
    let good = tagged_batch(1, 3, 50, NOW);
    validate_for_append(&good, 1 << 20).unwrap();
    // Same content but one byte, other memory: validated in full.
    let error = log.append(&corrupted(&good), LeaderEpoch(0)).err().unwrap();
    assert!(
        matches!(
            error,
            AppendError::InvalidBatch(BatchError::CorruptCrc { .. })
        ),
        "{error}"
    );
    // A shorter slice of the noted bytes (same address): refused.
    assert!(
        log.append(&good.slice(..good.len() - 5), LeaderEpoch(0))
            .is_err()
    );
    // A failed validation leaves no note behind.
    let bad = corrupted(&good);
    assert!(validate_for_append(&bad, 1 << 20).is_err());
    assert!(log.append(&bad, LeaderEpoch(0)).is_err());
    assert_eq!(log.log_end_offset(), Offset(0));
    // The good batch itself still appends (its note was consumed: in full).
    let appended = log.append(&good, LeaderEpoch(0)).unwrap();
    assert_eq!(appended.base_offset, Offset(0));
    assert_eq!(log.log_end_offset(), Offset(3));
}

#[test]
fn a_note_covers_only_the_first_batch_of_an_append() {
    let io = SimIo::new(3);
    let (log, _committer) = open(&io);
    let first = tagged_batch(1, 2, 50, NOW);
    let second = corrupted(&tagged_batch(2, 2, 50, NOW));
    let mut both = first.to_vec();
    both.extend_from_slice(&second);
    let both = Bytes::from(both);
    // The note names the first batch's bytes inside `both`.
    validate_for_append(&both.slice(..first.len()), 1 << 20).unwrap();
    let error = log.append(&both, LeaderEpoch(0)).err().unwrap();
    assert!(
        matches!(
            error,
            AppendError::InvalidBatch(BatchError::CorruptCrc { .. })
        ),
        "{error}"
    );
    assert_eq!(log.log_end_offset(), Offset(0), "all or nothing");
}

#[test]
fn a_note_under_a_larger_limit_does_not_lift_the_log_limit() {
    let io = SimIo::new(4);
    let (log, _committer) = open(&io);
    let mut config = log.config();
    config.max_message_bytes = 100;
    log.set_config(config);
    let large = tagged_batch(2, 1, 500, NOW);
    validate_for_append(&large, 1 << 20).unwrap();
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
