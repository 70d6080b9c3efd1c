//! A follower's append (`Log::append_replicated`) on the simulated disk: the
//! follower stores the leader's batches byte-identical (same offsets, same
//! leader epochs), refuses batches that do not continue its log, and keeps
//! every acknowledged batch across crashes.
//!
//! `SLUICE_SIM_SEEDS=N` sets the number of crash seeds (default 300);
//! `SLUICE_SIM_SEED=S` reruns one seed. A failure prints its seed.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use sluice_engine::batch::{self, BatchError};
use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::{
    AppendCompletion, AppendError, Committer, LeaderEpoch, Log, LogConfig, Offset,
    ReplicatedAppendError, SyncMode, segment,
};
use support::{Rng, all, as_stored, batches_of, block_on, poll_once, tagged_batch};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;

fn dir() -> PathBuf {
    PathBuf::from("/data/orders-1")
}

/// Small segments, so that a few dozen batches span several of them.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        index_interval_bytes: 1024,
        preallocate_step_bytes: 4 << 10,
        chunk_size_bytes: 4 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(io: &SimIo, config: &LogConfig) -> (Log<SimIo>, Committer<SimIo>) {
    let committer = Committer::new(io.clone());
    let log = block_on(Log::open(io.clone(), dir(), config.clone(), &committer)).unwrap();
    (log, committer)
}

/// A leader log holding `epochs.len()` batches, the i-th appended under
/// `epochs[i]`, all durable.
fn leader_with(epochs: &[i32]) -> (Log<SimIo>, Committer<SimIo>) {
    let io = SimIo::new(1);
    let (log, committer) = open(&io, &small_config());
    for (tag, epoch) in epochs.iter().enumerate() {
        let batch = tagged_batch(tag as u64, 1 + tag % 4, 300, NOW);
        drop(log.append(&batch, LeaderEpoch(*epoch)).unwrap().completion);
    }
    block_on(committer.flush_round());
    assert_eq!(log.durable_end_offset(), log.log_end_offset());
    (log, committer)
}

/// Every stored batch of `log` from `from` on, one `Bytes` per batch, as
/// `read` returns them.
fn stored_batches(log: &Log<SimIo>, from: Offset) -> Vec<Bytes> {
    let end = log.log_end_offset();
    let mut offset = from;
    let mut out = Vec::new();
    while offset < end {
        let result = block_on(log.read(offset, all(end))).unwrap();
        assert!(!result.records.is_empty(), "no progress at {offset}");
        out.extend(batches_of(&result.records).into_iter().map(Bytes::from));
        offset = result.next_offset;
    }
    out
}

fn concat(batches: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    for batch_bytes in batches {
        out.extend_from_slice(batch_bytes);
    }
    out.freeze()
}

fn base_of(batch_bytes: &[u8]) -> Offset {
    batch::BatchHeader::parse(batch_bytes)
        .unwrap()
        .base_offset()
}

/// The bytes of each segment as `read` returns them, by segment base.
fn segment_contents(log: &Log<SimIo>) -> Vec<(Offset, Vec<u8>)> {
    let bases = log.segment_bases();
    let end = log.log_end_offset();
    let mut out = Vec::new();
    for (index, base) in bases.iter().enumerate() {
        let limit = bases.get(index + 1).copied().unwrap_or(end);
        let mut content = Vec::new();
        let mut offset = *base;
        while offset < limit {
            let result = block_on(log.read(offset, all(limit))).unwrap();
            if result.records.is_empty() {
                break;
            }
            for run in &result.records {
                content.extend_from_slice(run);
            }
            offset = result.next_offset;
        }
        out.push((*base, content));
    }
    out
}

/// Replicate all of `leader` into a fresh follower, `per_append` batches per
/// call; returns the follower (durable).
fn replicate_all(
    leader: &Log<SimIo>,
    io: &SimIo,
    per_append: usize,
) -> (Log<SimIo>, Committer<SimIo>) {
    let (follower, committer) = open(io, &small_config());
    let batches = stored_batches(leader, Offset::ZERO);
    let mut completions: Vec<AppendCompletion> = Vec::new();
    for chunk in batches.chunks(per_append) {
        let appended = follower
            .append_replicated(follower.log_end_offset(), &concat(chunk))
            .unwrap();
        assert_eq!(appended.base_offset, base_of(&chunk[0]));
        completions.push(appended.completion);
    }
    for completion in &mut completions {
        assert!(
            poll_once(completion).is_none(),
            "not durable before a flush"
        );
    }
    block_on(committer.flush_round());
    for completion in &mut completions {
        poll_once(completion)
            .expect("durable after a flush round")
            .unwrap();
    }
    (follower, committer)
}

#[test]
fn a_follower_stores_the_leaders_batches_byte_identical_across_segment_rolls() {
    let epochs: Vec<i32> = (0..60).map(|index| index / 15).collect();
    let (leader, _leader_committer) = leader_with(&epochs);
    assert!(leader.segment_count() > 2, "the test needs segment rolls");
    for per_append in [1, 3, 60] {
        let io = SimIo::new(2);
        let (follower, _committer) = replicate_all(&leader, &io, per_append);
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(follower.durable_end_offset(), leader.log_end_offset());
        assert_eq!(follower.last_leader_epoch(), Some(LeaderEpoch(3)));
        assert_eq!(leader.last_leader_epoch(), Some(LeaderEpoch(3)));
        assert_eq!(
            stored_batches(&follower, Offset::ZERO),
            stored_batches(&leader, Offset::ZERO)
        );
        // Same sizes, same config: the same segments with the same bytes,
        // in memory and in the files.
        assert_eq!(follower.segment_bases(), leader.segment_bases());
        let contents = segment_contents(&follower);
        assert_eq!(contents, segment_contents(&leader));
        for (base, content) in &contents {
            let file = io
                .durable_content(&segment::log_path(&dir(), *base))
                .unwrap();
            assert_eq!(&file[..content.len()], &content[..], "segment {base}");
        }
    }
}

#[test]
fn offsets_and_epochs_are_kept_not_assigned() {
    let (leader, _committer) = leader_with(&[4, 4, 9]);
    let batches = stored_batches(&leader, Offset::ZERO);
    let io = SimIo::new(3);
    let (follower, _follower_committer) = open(&io, &small_config());
    // A follower that starts at the leader's log start (here 0) keeps the
    // leader's offsets, not offsets of its own.
    for stored in &batches {
        let header = batch::BatchHeader::parse(stored).unwrap();
        let appended = follower
            .append_replicated(follower.log_end_offset(), stored)
            .unwrap();
        assert_eq!(appended.base_offset, header.base_offset());
        assert_eq!(appended.last_offset, header.last_offset());
        assert_eq!(
            follower.last_leader_epoch(),
            Some(header.partition_leader_epoch())
        );
        drop(appended.completion);
    }
    assert_eq!(follower.last_leader_epoch(), Some(LeaderEpoch(9)));
}

/// A follower takes a batch larger than its own max.message.bytes (the
/// limit was lowered after the leader accepted it): only the leader's
/// append enforces the limit.
#[test]
fn a_follower_takes_a_batch_over_its_own_size_limit() {
    let (leader, _committer) = leader_with(&[3, 3]);
    let batches = stored_batches(&leader, Offset::ZERO);
    let io = SimIo::new(4);
    let strict = LogConfig {
        max_message_bytes: 100,
        ..small_config()
    };
    let (follower, _follower_committer) = open(&io, &strict);
    assert!(batches.iter().all(|stored| stored.len() > 100));
    for stored in &batches {
        drop(
            follower
                .append_replicated(follower.log_end_offset(), stored)
                .unwrap()
                .completion,
        );
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    // A leader's append on the same log is held to it.
    let big = tagged_batch(99, 2, 300, NOW);
    assert!(matches!(
        follower.append(&big, LeaderEpoch(3)),
        Err(AppendError::InvalidBatch(BatchError::TooLarge { .. }))
    ));
}

#[test]
fn non_contiguous_or_overlapping_batches_are_refused_and_nothing_is_written() {
    let (leader, _committer) = leader_with(&[0; 8]);
    let batches = stored_batches(&leader, Offset::ZERO);
    let io = SimIo::new(4);
    let (follower, committer) = open(&io, &small_config());
    drop(
        follower
            .append_replicated(follower.log_end_offset(), &concat(&batches[..3]))
            .unwrap()
            .completion,
    );
    block_on(committer.flush_round());
    let end = follower.log_end_offset();
    assert_eq!(end, base_of(&batches[3]));
    let size = follower.size_bytes();
    // (name, where the leader read from, records, NonContiguous's fields).
    // Offsets skipped after the log end are accepted (the leader's cleaner
    // removed them: `compacted_batches_and_gaps_replicate_and_survive_a_crash`);
    // a read from elsewhere than the log end is not.
    let cases: Vec<(&str, Offset, Bytes, Offset, Offset)> = vec![
        (
            "read past the log end",
            base_of(&batches[4]),
            batches[4].clone(),
            end,
            base_of(&batches[4]),
        ),
        (
            "an overlap",
            end,
            batches[2].clone(),
            end,
            base_of(&batches[2]),
        ),
        (
            "a resent prefix",
            end,
            concat(&batches[..5]),
            end,
            base_of(&batches[0]),
        ),
        (
            "a reordering",
            end,
            concat(&[batches[4].clone(), batches[3].clone()]),
            base_of(&batches[5]),
            base_of(&batches[3]),
        ),
    ];
    for (name, from, records, expected, got) in cases {
        match follower.append_replicated(from, &records) {
            Err(ReplicatedAppendError::NonContiguous {
                expected: expected_found,
                got: got_found,
            }) => {
                assert_eq!((expected_found, got_found), (expected, got), "{name}");
            }
            Err(error) => panic!("{name}: unexpected error {error}"),
            Ok(appended) => panic!("{name}: accepted at {}", appended.base_offset),
        }
        assert_eq!(follower.log_end_offset(), end, "{name}");
        assert_eq!(follower.size_bytes(), size, "{name}");
    }
    // A damaged batch fails validation as it would in `append`.
    let mut damaged = batches[3].to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    match follower.append_replicated(follower.log_end_offset(), &Bytes::from(damaged)) {
        Err(ReplicatedAppendError::Append(AppendError::InvalidBatch(BatchError::CorruptCrc {
            ..
        }))) => {}
        Err(error) => panic!("unexpected error {error}"),
        Ok(_) => panic!("a damaged batch was accepted"),
    }
    assert_eq!(follower.size_bytes(), size);
    // Nothing was written: no flush is due and the files did not change.
    let syncs = io.stats().sync_data_count;
    block_on(committer.flush_round());
    assert_eq!(io.stats().sync_data_count, syncs);
    // The right continuation is still accepted.
    let appended = follower
        .append_replicated(follower.log_end_offset(), &concat(&batches[3..]))
        .unwrap();
    assert_eq!(appended.base_offset, end);
    block_on(committer.flush_round());
    assert_eq!(
        stored_batches(&follower, Offset::ZERO),
        stored_batches(&leader, Offset::ZERO)
    );
}

/// A leader whose cleaner rewrote its segments (batches missing records,
/// offsets skipped where whole batches went) replicates to a new follower
/// byte-identical, pushes starting at the follower's log end as the
/// leader's pushes do; the follower keeps all of it across a crash (the
/// flush moved the checkpoint past batches recovery would otherwise not
/// trust). Such batches were refused: a follower behind a compacted region
/// never caught up.
/// A leader log whose cleaner removed records (batches missing some, and
/// offsets skipped where whole batches went), and its batches.
fn compacted_leader(io: &SimIo) -> (Log<SimIo>, Committer<SimIo>, Vec<Bytes>) {
    let (leader, committer) = open(io, &small_config());
    for tag in 0..120u64 {
        let mut builder = batch::BatchBuilder::new();
        // Keys written again and again (half of them only early): most
        // batches lose records, many lose all of them, some keep all.
        let keys = if tag < 60 { 40 } else { 20 };
        for index in 0..(1 + tag % 3) {
            let key = format!("key-{}", (tag * 7 + index) % keys);
            builder.record(
                Some(key.as_bytes()),
                Some(format!("value-{tag}-{index}").as_bytes()),
                sluice_engine::TimestampMs(NOW),
            );
        }
        drop(
            leader
                .append(&builder.build(), LeaderEpoch(2))
                .unwrap()
                .completion,
        );
    }
    block_on(committer.flush_round());
    let cleaned = block_on(leader.clean(&sluice_engine::CleanOptions {
        delete_retention_ms: 1 << 40,
        min_compaction_lag_ms: 0,
    }))
    .unwrap();
    assert!(cleaned.records_removed > 0, "{cleaned:?}");
    let leader_batches = stored_batches(&leader, Offset::ZERO);
    let gaps = leader_batches
        .windows(2)
        .filter(|pair| {
            let first = batch::BatchHeader::parse(&pair[0]).unwrap();
            first.last_offset().plus(1) != base_of(&pair[1])
        })
        .count();
    let shrunk = leader_batches
        .iter()
        .filter(|stored| {
            let header = batch::BatchHeader::parse(stored).unwrap();
            i64::from(header.records_count()) != i64::from(header.last_offset_delta()) + 1
        })
        .count();
    assert!(
        gaps > 0 && shrunk > 0,
        "gaps {gaps}, batches missing records {shrunk}"
    );
    (leader, committer, leader_batches)
}

/// Push all of `leader` from `follower`'s end, as a leader's pushes do
/// (reads of a few KiB), each flushed; returns the appends' completions.
fn push_all(
    leader: &Log<SimIo>,
    follower: &Log<SimIo>,
    committer: &Committer<SimIo>,
) -> Vec<AppendCompletion> {
    let mut completions = Vec::new();
    while follower.log_end_offset() < leader.log_end_offset() {
        let from = follower.log_end_offset();
        let read = block_on(leader.read(
            from,
            sluice_engine::ReadLimits {
                max_bytes: 3000,
                min_one_batch: true,
                max_offset: leader.log_end_offset(),
            },
        ))
        .unwrap();
        let records = concat(
            &batches_of(&read.records)
                .into_iter()
                .map(Bytes::from)
                .collect::<Vec<_>>(),
        );
        completions.push(
            follower
                .append_replicated(from, &records)
                .unwrap()
                .completion,
        );
        block_on(committer.flush_round());
    }
    completions
}

#[test]
fn compacted_batches_and_gaps_replicate_and_survive_a_crash() {
    let leader_io = SimIo::new(9);
    let (leader, committer, leader_batches) = compacted_leader(&leader_io);
    let io = SimIo::new(10);
    let (follower, follower_committer) = open(&io, &small_config());
    for completion in &mut push_all(&leader, &follower, &follower_committer) {
        poll_once(completion).expect("durable").unwrap();
    }
    assert_eq!(stored_batches(&follower, Offset::ZERO), leader_batches);
    let end = follower.log_end_offset();
    drop(follower);
    drop(follower_committer);
    // Only what was made durable survives.
    io.set_crash_mode(CrashMode::LoseUnsynced);
    let io = io.crash();
    let (reopened, reopened_committer) = open(&io, &small_config());
    assert_eq!(reopened.log_end_offset(), end);
    assert_eq!(stored_batches(&reopened, Offset::ZERO), leader_batches);
    // The open keeps trusting them: an ordinary batch flushed after it (no
    // checkpoint of its own) and a second crash lose nothing either.
    drop(
        leader
            .append(&tagged_batch(1_000, 2, 100, NOW), LeaderEpoch(2))
            .unwrap()
            .completion,
    );
    block_on(committer.flush_round());
    let from = reopened.log_end_offset();
    let next = stored_batches(&leader, from);
    assert_eq!(next.len(), 1);
    let mut completion = reopened
        .append_replicated(from, &next[0])
        .unwrap()
        .completion;
    block_on(reopened_committer.flush_round());
    poll_once(&mut completion).expect("durable").unwrap();
    let end = reopened.log_end_offset();
    drop(reopened);
    drop(reopened_committer);
    io.set_crash_mode(CrashMode::LoseUnsynced);
    let io = io.crash();
    let (again, _committer) = open(&io, &small_config());
    assert_eq!(again.log_end_offset(), end);
    assert_eq!(
        stored_batches(&again, Offset::ZERO),
        stored_batches(&leader, Offset::ZERO)
    );
}

/// A truncation to an offset the leader's cleaner removed (no batch holds
/// it) ends the log there, keeping every batch before it; the log end went
/// to the next batch's base, past the offset asked, and the next truncation
/// to it failed.
#[test]
fn a_truncation_inside_an_offset_gap_ends_the_log_at_that_offset() {
    let leader_io = SimIo::new(11);
    let (leader, _committer, leader_batches) = compacted_leader(&leader_io);
    let io = SimIo::new(12);
    let (follower, committer) = open(&io, &small_config());
    push_all(&leader, &follower, &committer);
    let (before, after) = leader_batches
        .windows(2)
        .map(|pair| {
            let first = batch::BatchHeader::parse(&pair[0]).unwrap();
            (first.last_offset(), base_of(&pair[1]))
        })
        .find(|(last, next)| last.plus(1) < *next)
        .unwrap();
    let inside = before.plus(1);
    assert!(inside < after);
    assert_eq!(block_on(follower.truncate_to(inside)).unwrap(), inside);
    assert_eq!(follower.log_end_offset(), inside);
    let kept: Vec<Bytes> = leader_batches
        .iter()
        .filter(|stored| base_of(stored) < inside)
        .cloned()
        .collect();
    assert_eq!(stored_batches(&follower, Offset::ZERO), kept);
    // Again, and the rest streams back.
    assert_eq!(block_on(follower.truncate_to(inside)).unwrap(), inside);
    push_all(&leader, &follower, &committer);
    assert_eq!(stored_batches(&follower, Offset::ZERO), leader_batches);
}

#[test]
fn leader_epochs_going_backwards_are_refused() {
    // A leader's `append` refuses a lower epoch, so the regressed batch is
    // stamped by hand after the leader's three.
    let (leader, _committer) = leader_with(&[2, 5, 5]);
    let mut batches = stored_batches(&leader, Offset::ZERO);
    let regressed = as_stored(&tagged_batch(3, 1, 300, NOW), leader.log_end_offset(), 3);
    batches.push(Bytes::from(regressed));
    let io = SimIo::new(5);
    let (follower, committer) = open(&io, &small_config());
    // Within one append: refused as a whole.
    match follower.append_replicated(follower.log_end_offset(), &concat(&batches)) {
        Err(ReplicatedAppendError::EpochRegression { previous, got }) => {
            assert_eq!((previous, got), (LeaderEpoch(5), LeaderEpoch(3)));
        }
        other => panic!(
            "unexpected {:?}",
            other.map(|appended| appended.base_offset)
        ),
    }
    assert_eq!(follower.log_end_offset(), Offset::ZERO);
    assert_eq!(follower.size_bytes(), 0);
    assert_eq!(follower.last_leader_epoch(), None);
    // Equal epochs are fine; a decrease relative to the log's last batch
    // is refused.
    drop(
        follower
            .append_replicated(follower.log_end_offset(), &concat(&batches[..3]))
            .unwrap()
            .completion,
    );
    block_on(committer.flush_round());
    let end = follower.log_end_offset();
    match follower.append_replicated(follower.log_end_offset(), &batches[3]) {
        Err(ReplicatedAppendError::EpochRegression { previous, got }) => {
            assert_eq!((previous, got), (LeaderEpoch(5), LeaderEpoch(3)));
        }
        other => panic!(
            "unexpected {:?}",
            other.map(|appended| appended.base_offset)
        ),
    }
    assert_eq!(follower.log_end_offset(), end);
    assert_eq!(follower.last_leader_epoch(), Some(LeaderEpoch(5)));
}

#[test]
fn after_reopen_the_follower_ends_where_the_leader_did_and_keeps_its_last_epoch() {
    let epochs: Vec<i32> = (0..40).map(|index| 1 + index / 7).collect();
    let (leader, _committer) = leader_with(&epochs);
    let batches = stored_batches(&leader, Offset::ZERO);
    let half = batches.len() / 2;
    for mode in [CrashMode::LoseUnsynced, CrashMode::Torn] {
        let io = SimIo::new(6);
        let (follower, committer) = open(&io, &small_config());
        drop(
            follower
                .append_replicated(follower.log_end_offset(), &concat(&batches[..half]))
                .unwrap()
                .completion,
        );
        block_on(committer.flush_round());
        block_on(follower.close()).unwrap();
        drop(follower);
        io.set_crash_mode(mode);
        let io = io.crash();
        let (follower, committer) = open(&io, &small_config());
        assert_eq!(follower.log_end_offset(), base_of(&batches[half]));
        let expected_epoch = batch::BatchHeader::parse(&batches[half - 1])
            .unwrap()
            .partition_leader_epoch();
        assert_eq!(follower.last_leader_epoch(), Some(expected_epoch));
        // It continues from there.
        drop(
            follower
                .append_replicated(follower.log_end_offset(), &concat(&batches[half..]))
                .unwrap()
                .completion,
        );
        block_on(committer.flush_round());
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(
            stored_batches(&follower, Offset::ZERO),
            stored_batches(&leader, Offset::ZERO)
        );
        // An unclean stop (no close): recovery scans and finds the same.
        let io = io.crash();
        let (follower, _committer) = open(&io, &small_config());
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(follower.last_leader_epoch(), leader.last_leader_epoch());
    }
}

#[test]
fn truncation_restores_the_last_epoch_of_the_kept_prefix() {
    let (leader, _committer) = leader_with(&[1, 1, 2, 2, 3, 3]);
    let batches = stored_batches(&leader, Offset::ZERO);
    let io = SimIo::new(7);
    let (follower, committer) = open(&io, &small_config());
    drop(
        follower
            .append_replicated(follower.log_end_offset(), &concat(&batches))
            .unwrap()
            .completion,
    );
    block_on(committer.flush_round());
    let cut = base_of(&batches[4]);
    assert_eq!(block_on(follower.truncate_to(cut)).unwrap(), cut);
    assert_eq!(follower.last_leader_epoch(), Some(LeaderEpoch(2)));
    // A new leader's batches at epoch 2 or above continue the kept prefix.
    drop(
        follower
            .append_replicated(follower.log_end_offset(), &batches[4])
            .unwrap()
            .completion,
    );
    assert_eq!(follower.last_leader_epoch(), Some(LeaderEpoch(3)));
}

// ---------------------------------------------------------------------------
// Crash simulation.

/// One batch as a leader would send it.
struct Sent {
    stored: Bytes,
    base: Offset,
    end: Offset,
    epoch: i32,
}

/// The leader's batches: contiguous offsets, non-decreasing epochs.
fn leader_batches(rng: &mut Rng, count: usize) -> Vec<Sent> {
    let mut out = Vec::new();
    let mut base = Offset::ZERO;
    let mut epoch = 0;
    for tag in 0..count {
        if rng.chance(10) {
            epoch += 1 + rng.below(3) as i32;
        }
        let records = 1 + rng.below(8) as usize;
        let value_size = rng.pick(&[0, 10, 100, 700, 2000]);
        let batch = tagged_batch(tag as u64, records, value_size, NOW + tag as i64);
        let stored = Bytes::from(as_stored(&batch, base, epoch));
        let end = base.plus(records as i64);
        out.push(Sent {
            stored,
            base,
            end,
            epoch,
        });
        base = end;
    }
    out
}

fn check_follower(log: &Log<SimIo>, sent: &[Sent], acknowledged_end: Offset) {
    let end = log.log_end_offset();
    assert_eq!(
        log.durable_end_offset(),
        end,
        "everything recovered is durable"
    );
    assert!(
        end >= acknowledged_end,
        "lost acknowledged batches: end {end} < {acknowledged_end}"
    );
    let held = stored_batches(log, Offset::ZERO);
    assert!(held.len() <= sent.len());
    for (index, stored) in held.iter().enumerate() {
        assert_eq!(
            stored, &sent[index].stored,
            "batch {index} differs from the leader's"
        );
    }
    let count = held.len();
    let expected_end = count
        .checked_sub(1)
        .map_or(Offset::ZERO, |last| sent[last].end);
    assert_eq!(end, expected_end);
    let expected_epoch = count
        .checked_sub(1)
        .map(|last| LeaderEpoch(sent[last].epoch));
    assert_eq!(log.last_leader_epoch(), expected_epoch);
}

fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    let sent = leader_batches(&mut rng, 400);
    let mut io = SimIo::new(seed);
    let config = LogConfig {
        segment_bytes: rng.pick(&[8 << 10, 20 << 10, 64 << 10]),
        index_interval_bytes: rng.pick(&[128, 1024, 4096]),
        preallocate_step_bytes: rng.pick(&[4 << 10, 16 << 10]),
        chunk_size_bytes: rng.pick(&[4 << 10, 8 << 10, 32 << 10]),
        retention_ms: None,
        ..LogConfig::default()
    };
    let (mut log, mut committer) = open(&io, &config);
    let mut acknowledged_end = Offset::ZERO;
    let mut pending: Vec<(Offset, AppendCompletion)> = Vec::new();
    let steps = 100 + rng.below(100);
    for _ in 0..steps {
        let roll = rng.below(100);
        // A leader resends from the follower's log end (after a rollback
        // of the unflushed tail on a full disk, that is below `next`).
        let end = log.log_end_offset();
        let mut next = sent.partition_point(|one| one.base < end);
        if roll < 55 && next < sent.len() {
            let count = (1 + rng.below(4) as usize).min(sent.len() - next);
            let records: Vec<Bytes> = sent[next..next + count]
                .iter()
                .map(|one| one.stored.clone())
                .collect();
            match log.append_replicated(log.log_end_offset(), &concat(&records)) {
                Ok(appended) => {
                    assert_eq!(appended.base_offset, sent[next].base);
                    next += count;
                    pending.push((sent[next - 1].end, appended.completion));
                }
                Err(ReplicatedAppendError::Append(AppendError::Poisoned { .. })) => {}
                Err(error) => panic!("unexpected append error: {error}"),
            }
        } else if roll < 80 {
            block_on(committer.flush_round());
        } else if roll < 85 {
            match rng.below(3) {
                0 => io.fail_sync_after(Some(rng.below(4))),
                1 => io.fail_write_after(Some(rng.below(6))),
                _ => io.set_space_limit(Some(io.space_used_bytes() + rng.below(64 << 10))),
            }
        } else {
            // Collect what was acknowledged, then crash.
            for (end, completion) in &mut pending {
                if let Some(Ok(())) = poll_once(completion) {
                    acknowledged_end = acknowledged_end.max(*end);
                }
            }
            pending.clear();
            drop(log);
            drop(committer);
            io.set_crash_mode(support::random_crash_mode(&mut rng));
            io = io.crash();
            io.fail_sync_after(None);
            io.fail_write_after(None);
            io.set_space_limit(None);
            (log, committer) = open(&io, &config);
            check_follower(&log, &sent, acknowledged_end);
            // The follower's log is the truth now: what it lost was never
            // acknowledged, and the leader resends from its log end.
            acknowledged_end = log.log_end_offset();
        }
    }
    for (end, completion) in &mut pending {
        if let Some(Ok(())) = poll_once(completion) {
            acknowledged_end = acknowledged_end.max(*end);
        }
    }
    drop(log);
    drop(committer);
    io.set_crash_mode(CrashMode::Torn);
    let io = io.crash();
    let (log, _committer) = open(&io, &config);
    check_follower(&log, &sent, acknowledged_end);
}

#[test]
fn acknowledged_replicated_appends_survive_any_crash() {
    support::run_seeds(300, 1, run_seed);
}

// ---------------------------------------------------------------------------
// Offset gaps wider than a segment's 32-bit relative offsets: a follower of a
// compacted topic whose leader's cleaner removed billions of offsets in one
// stretch (a busy `__consumer_offsets` partition). The batch after such a
// gap starts a segment at its own base, as Kafka rolls at a batch's first
// offset; it was refused, and the follower never caught up.

/// Beyond what a segment starting at `from` can hold.
fn far_beyond(from: i64) -> i64 {
    from + i64::from(u32::MAX) + 7
}

/// Stored batches of 1-3 records at each of `bases`, under epoch 1.
fn gapped_batches(bases: &[i64]) -> Vec<Bytes> {
    bases
        .iter()
        .enumerate()
        .map(|(tag, base)| {
            let batch = tagged_batch(tag as u64, 1 + tag % 3, 200, NOW);
            Bytes::from(as_stored(&batch, Offset(*base), 1))
        })
        .collect()
}

/// Append each of `batches` as its own replicated push at the log end, then
/// flush; every append must be durable after the flush.
fn push_each(log: &Log<SimIo>, committer: &Committer<SimIo>, batches: &[Bytes]) {
    let mut completions = Vec::new();
    for stored in batches {
        let appended = log
            .append_replicated(log.log_end_offset(), stored)
            .unwrap_or_else(|error| panic!("refused at {}: {error}", base_of(stored)));
        assert_eq!(appended.base_offset, base_of(stored));
        completions.push(appended.completion);
    }
    block_on(committer.flush_round());
    for completion in &mut completions {
        poll_once(completion).expect("durable").unwrap();
    }
}

/// Drop the log, crash losing what was not synced, open again. An empty
/// first segment that never had a file is not found again: the log then
/// starts at the first batch (nothing before it was ever stored).
fn after_a_crash(
    log: Log<SimIo>,
    committer: Committer<SimIo>,
    io: SimIo,
) -> (Log<SimIo>, Committer<SimIo>, SimIo) {
    drop(log);
    drop(committer);
    io.set_crash_mode(CrashMode::LoseUnsynced);
    let io = io.crash();
    let (log, committer) = open(&io, &small_config());
    (log, committer, io)
}

/// After a crash and a reopen the log ends where it did and holds exactly
/// `expected` from its start; returns it for more.
fn assert_survives_a_crash(
    log: Log<SimIo>,
    committer: Committer<SimIo>,
    io: SimIo,
    expected: &[Bytes],
) -> (Log<SimIo>, Committer<SimIo>, SimIo) {
    let end = log.log_end_offset();
    let (log, committer, io) = after_a_crash(log, committer, io);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(stored_batches(&log, log.log_start_offset()), expected);
    (log, committer, io)
}

#[test]
fn a_gap_wider_than_a_segment_starts_a_segment_and_survives_crashes() {
    let io = SimIo::new(21);
    let (log, committer) = open(&io, &small_config());
    let far = far_beyond(3);
    let batches = gapped_batches(&[0, 3, far, far + 4]);
    push_each(&log, &committer, &batches[..2]);
    // The gap, then a batch right after it, in separate pushes.
    push_each(&log, &committer, &batches[2..]);
    assert_eq!(log.segment_bases().last(), Some(&Offset(far)));
    assert_eq!(stored_batches(&log, Offset::ZERO), batches);
    // A read inside the gap answers from the first batch after it.
    assert_eq!(
        stored_batches(&log, Offset(far - 10)),
        batches[2..].to_vec()
    );
    let end = log.log_end_offset();

    let (log, committer, io) = after_a_crash(log, committer, io);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(stored_batches(&log, Offset::ZERO), batches);
    // Another gap after the open, and a second crash.
    let further = far_beyond(end.value());
    let more = gapped_batches(&[further]);
    push_each(&log, &committer, &more);
    let end = log.log_end_offset();
    let (log, _committer, _io) = after_a_crash(log, committer, io);
    assert_eq!(log.log_end_offset(), end);
    let all_batches: Vec<Bytes> = batches.iter().chain(&more).cloned().collect();
    assert_eq!(stored_batches(&log, Offset::ZERO), all_batches);
}

#[test]
fn an_empty_log_takes_a_first_batch_past_what_a_segment_holds() {
    let io = SimIo::new(22);
    let (log, committer) = open(&io, &small_config());
    let far = far_beyond(0);
    let batches = gapped_batches(&[far, far + 2]);
    push_each(&log, &committer, &batches);
    // The empty segment rolled away from never had a file (nor index
    // files); once finalized it leaves the list and the log starts at the
    // first batch, as a reopen finds it. Kept, it stopped compaction at
    // the log's front.
    assert_eq!(log.segment_bases(), vec![Offset(far)]);
    assert_eq!(log.log_start_offset(), Offset(far));
    assert!(
        io.file_names(&dir())
            .iter()
            .all(|name| !name.starts_with("00000000000000000000.")),
        "{:?}",
        io.file_names(&dir())
    );
    assert_eq!(stored_batches(&log, Offset(far)), batches);
    let end = log.log_end_offset();
    let (log, _committer, _io) = after_a_crash(log, committer, io);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.log_start_offset(), Offset(far));
    assert_eq!(stored_batches(&log, log.log_start_offset()), batches);
}

/// The active segment is empty but has a file (a truncation to its base):
/// it is sealed and reaches up to the new segment's base.
#[test]
fn an_empty_active_segment_with_a_file_is_sealed_before_a_wide_gap() {
    let io = SimIo::new(23);
    let (log, committer) = open(&io, &small_config());
    let far = far_beyond(5);
    let batches = gapped_batches(&[0, 2, 5, far]);
    push_each(&log, &committer, &batches[..3]);
    // A truncation to the last batch's base, which a rolled segment starts
    // at when segments are small: force one by truncating to a segment base.
    let base = *log.segment_bases().last().unwrap();
    assert_eq!(block_on(log.truncate_to(base)).unwrap(), base);
    let kept: Vec<Bytes> = batches[..3]
        .iter()
        .filter(|stored| base_of(stored) < base)
        .cloned()
        .collect();
    push_each(&log, &committer, &batches[3..]);
    let expected: Vec<Bytes> = kept.iter().chain(&batches[3..]).cloned().collect();
    assert_eq!(stored_batches(&log, Offset::ZERO), expected);
    assert_survives_a_crash(log, committer, io, &expected);
}

#[test]
fn a_truncation_into_a_gap_between_segments_ends_the_log_there() {
    let io = SimIo::new(24);
    let (log, committer) = open(&io, &small_config());
    let far = far_beyond(3);
    let batches = gapped_batches(&[0, 3, far, far + 4]);
    push_each(&log, &committer, &batches);
    let inside = Offset(far - 100);
    assert_eq!(block_on(log.truncate_to(inside)).unwrap(), inside);
    assert_eq!(log.log_end_offset(), inside);
    // What is left ends before the log end: the gap's start stays empty.
    let first = block_on(log.read(Offset::ZERO, all(inside))).unwrap();
    assert_eq!(
        first
            .records
            .iter()
            .flat_map(|run| run.to_vec())
            .collect::<Vec<u8>>(),
        concat(&batches[..2]).to_vec()
    );
    let rest = block_on(log.read(first.next_offset, all(inside))).unwrap();
    assert!(rest.records.is_empty());
    // The rest streams back, and a crash keeps all of it.
    push_each(&log, &committer, &batches[2..]);
    assert_eq!(stored_batches(&log, Offset::ZERO), batches);
    assert_survives_a_crash(log, committer, io, &batches);
}

/// A flush that fails for lack of space rolls the gap back: the log ends
/// where it was durable, and the same push succeeds once there is space.
#[test]
fn a_failed_flush_rolls_back_a_segment_moved_past_a_gap() {
    let io = SimIo::new(25);
    let (log, committer) = open(&io, &small_config());
    let far = far_beyond(0);
    let batches = gapped_batches(&[far]);
    io.set_space_limit(Some(io.space_used_bytes()));
    let mut completion = log
        .append_replicated(Offset::ZERO, &batches[0])
        .unwrap()
        .completion;
    block_on(committer.flush_round());
    assert!(poll_once(&mut completion).expect("answered").is_err());
    assert_eq!(log.log_end_offset(), Offset::ZERO);
    assert_eq!(log.segment_bases(), vec![Offset::ZERO]);
    io.set_space_limit(None);
    push_each(&log, &committer, &batches);
    assert_eq!(stored_batches(&log, log.log_start_offset()), batches);
    assert_survives_a_crash(log, committer, io, &batches);
}

/// A power loss at every step of the flush that takes a batch after a wide
/// gap, its predecessor segment durable already and not yet finalized (its
/// file still holds preallocated bytes): what was acknowledged before
/// survives, and so does the batch if its append completed. Recovery
/// accepts the gap only after a predecessor it trusts whole, so that
/// predecessor is trimmed before the checkpoint moves past it.
#[test]
fn a_power_loss_anywhere_in_the_flush_after_a_wide_gap_keeps_what_was_acknowledged() {
    let far = far_beyond(3);
    let batches = gapped_batches(&[0, 3, far]);
    let mut completed_once = false;
    for halt_after in 0.. {
        let io = SimIo::new(26);
        let (log, committer) = open(&io, &small_config());
        push_each(&log, &committer, &batches[..2]);
        io.halt_after(Some(halt_after));
        let mut completion = log
            .append_replicated(log.log_end_offset(), &batches[2])
            .unwrap()
            .completion;
        block_on(committer.flush_round());
        let completed = matches!(poll_once(&mut completion), Some(Ok(())));
        let (reopened, _committer, _io) = after_a_crash(log, committer, io);
        let expected = if completed {
            &batches[..]
        } else {
            &batches[..2]
        };
        let stored = stored_batches(&reopened, reopened.log_start_offset());
        assert!(
            stored.len() >= expected.len() && stored[..expected.len()] == *expected,
            "power loss after {halt_after} steps (completed: {completed}): {} batches",
            stored.len()
        );
        if completed {
            completed_once = true;
            break;
        }
        assert!(halt_after < 100, "the flush never completed");
    }
    assert!(completed_once);
}

/// No space for the checkpoint that must vouch for a replicated offset gap
/// (its temporary file) is a full disk like any other: the appends fail
/// with StorageFull and the log takes them again once there is space. It
/// stopped the log for good (poisoned) instead.
#[test]
fn no_space_for_the_checkpoint_past_a_gap_is_a_full_disk_not_a_failure() {
    let io = SimIo::new(27);
    let (log, committer) = open(&io, &small_config());
    let batches = gapped_batches(&[0, 10, 20]);
    push_each(&log, &committer, &batches[..1]);
    io.set_space_limit(Some(io.space_used_bytes()));
    let mut completion = log
        .append_replicated(log.log_end_offset(), &batches[1])
        .unwrap()
        .completion;
    block_on(committer.flush_round());
    let outcome = poll_once(&mut completion).expect("answered");
    assert!(
        matches!(outcome, Err(AppendError::StorageFull { .. })),
        "{outcome:?}"
    );
    assert!(!log.is_poisoned());
    io.set_space_limit(None);
    // Rolled back: the same push is taken again.
    assert_eq!(log.log_end_offset(), Offset(1));
    push_each(&log, &committer, &batches[1..]);
    assert_eq!(stored_batches(&log, Offset::ZERO), batches);
    assert_survives_a_crash(log, committer, io, &batches);
}

/// A truncation to an offset inside a gap wider than a segment's 32-bit
/// relative offsets ends the log there: the segment before the gap is cut
/// at its last batch and reaches to the offset (its time index cut with a
/// saturating relative offset: an assertion aborted the broker).
#[test]
fn a_truncation_deep_inside_a_wide_gap_ends_the_log_there() {
    let io = SimIo::new(28);
    let (log, committer) = open(&io, &small_config());
    let far = far_beyond(3) + 1000;
    let batches = gapped_batches(&[0, 3, far]);
    push_each(&log, &committer, &batches);
    let inside = Offset(far - 500);
    assert!(inside.value() - 3 > i64::from(u32::MAX));
    assert_eq!(block_on(log.truncate_to(inside)).unwrap(), inside);
    assert_eq!(log.log_end_offset(), inside);
    push_each(&log, &committer, &batches[2..]);
    assert_eq!(stored_batches(&log, Offset::ZERO), batches);
    assert_survives_a_crash(log, committer, io, &batches);
}

/// A follower whose first batch lay past what a segment holds still
/// compacts: the empty segment it rolled away from (no file) blocked the
/// cleaner at the log's front for as long as the broker ran.
#[test]
fn a_follower_that_started_past_a_wide_gap_still_compacts() {
    let io = SimIo::new(29);
    let (log, committer) = open(&io, &small_config());
    let far = far_beyond(0);
    // One key, many values: every batch but the last is superseded.
    let mut batches = Vec::new();
    for index in 0..60i64 {
        let mut builder = sluice_engine::batch::BatchBuilder::new();
        builder.record(
            Some(&b"key"[..]),
            Some(format!("value {index} {}", "x".repeat(200)).as_bytes()),
            sluice_engine::TimestampMs(NOW),
        );
        batches.push(Bytes::from(as_stored(
            &builder.build(),
            Offset(far + index),
            1,
        )));
    }
    push_each(&log, &committer, &batches);
    assert!(log.segment_count() >= 3, "{:?}", log.segment_bases());
    let summary = block_on(log.clean(&sluice_engine::CleanOptions {
        delete_retention_ms: 1 << 40,
        min_compaction_lag_ms: 0,
    }))
    .unwrap();
    assert!(summary.segments_rewritten > 0, "{summary:?}");
    assert!(summary.records_removed > 0, "{summary:?}");
}

/// Starting over on a full disk (a follower behind its leader's log
/// start): once the segments are gone, no room for the checkpoint's or the
/// epoch file's temporary copy is not a failure. It stopped the log
/// (poisoned), which halts the broker, and the restarted follower did the
/// same again. A crash before they are written reopens the log empty, at
/// a start the leader is past, so the follower starts over again.
#[test]
fn starting_over_on_a_full_disk_takes_appends_at_the_new_start() {
    let io = SimIo::new(30);
    let (log, committer) = open(&io, &small_config());
    push_each(&log, &committer, &gapped_batches(&[0, 3, 6]));
    // No room for anything, even once the segments are gone.
    io.set_space_limit(Some(0));
    block_on(log.start_over_at(Offset(1_000))).unwrap();
    assert!(!log.is_poisoned());
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(1_000), Offset(1_000))
    );
    io.set_space_limit(None);
    let next = gapped_batches(&[1_000, 1_003]);
    push_each(&log, &committer, &next);
    let (log, _committer, _io) = after_a_crash(log, committer, io);
    assert_eq!(stored_batches(&log, log.log_start_offset()), next);
}

// ---------------------------------------------------------------------------
// Appends during a truncation or a start-over.

/// What runs while an append arrives.
#[derive(Clone, Copy, Debug)]
enum Rewrite {
    /// `truncate_to(10)` of a log ending at 24.
    Truncate,
    /// `start_over_at(100)` of a log ending at 24.
    StartOver,
}

/// A follower's truncation (or start-over) awaits a flush, the flush lock
/// and several fsyncs; the shard runs other work meanwhile: a view making
/// this replica the leader and a produce, or a new leader's push. Such an
/// append was buffered at the old end, the rewrite then reset the end and
/// the buffer under it, and its completion stayed queued and resolved Ok
/// once later records moved the durable end past it: acknowledged, and
/// gone (found by a read-only audit). An append that comes then must be
/// refused (retriable) or, if taken, be read back where it was
/// acknowledged. The rewrite is held part-way by the filesystem sync of
/// its flush (the simulated syncfs completes in a later poll pass).
#[test]
fn an_append_during_a_truncation_is_never_acknowledged_and_then_lost() {
    for (rewrite, replicated) in [
        (Rewrite::Truncate, false),
        (Rewrite::Truncate, true),
        (Rewrite::StartOver, false),
        (Rewrite::StartOver, true),
    ] {
        let case = format!("{rewrite:?}, replicated: {replicated}");
        let io = SimIo::new(41);
        let committer = Committer::with_sync_mode(io.clone(), SyncMode::Filesystem);
        let log = block_on(Log::open(io.clone(), dir(), small_config(), &committer)).unwrap();
        // [0, 20) durable under epoch 1; [20, 24) buffered, so that the
        // rewrite's first step, its flush, waits for a sync.
        for tag in 0..10 {
            let batch = tagged_batch(tag, 2, 100, NOW);
            drop(log.append(&batch, LeaderEpoch(1)).unwrap().completion);
        }
        block_on(committer.flush_round());
        let buffered = log
            .append(&tagged_batch(10, 4, 100, NOW), LeaderEpoch(1))
            .unwrap();
        drop(buffered.completion);
        let mut rewriting: std::pin::Pin<Box<dyn std::future::Future<Output = Offset>>> =
            match rewrite {
                Rewrite::Truncate => Box::pin(async { log.truncate_to(Offset(10)).await.unwrap() }),
                Rewrite::StartOver => Box::pin(async {
                    log.start_over_at(Offset(100)).await.unwrap();
                    Offset(100)
                }),
            };
        assert!(
            poll_once(&mut rewriting).is_none(),
            "{case}: the rewrite waits for its flush's sync"
        );
        let during = tagged_batch(20, 3, 100, NOW);
        let stored = Bytes::from(as_stored(&during, log.log_end_offset(), 2));
        let taken = if replicated {
            log.append_replicated(log.log_end_offset(), &stored)
                .map_err(|error| match error {
                    ReplicatedAppendError::Append(error) => error,
                    other => panic!("{case}: {other}"),
                })
        } else {
            log.append(&during, LeaderEpoch(2))
        };
        let new_end = block_on(rewriting);
        assert_eq!(log.log_end_offset(), new_end, "{case}");
        // Later records move the durable end past the old end and the
        // append made during the rewrite.
        let after = tagged_batch(30, 40, 10, NOW);
        let later = log.append(&after, LeaderEpoch(2)).unwrap();
        assert_eq!(
            later.base_offset, new_end,
            "{case}: appends continue at the new end"
        );
        block_on(committer.flush_round());
        assert!(log.durable_end_offset() > Offset(30), "{case}");
        match taken {
            Err(error) => assert!(
                matches!(error, AppendError::Truncating { .. }),
                "{case}: refused as retriable, not {error}"
            ),
            Ok(mut appended) => match poll_once(&mut appended.completion) {
                Some(Ok(())) => {
                    let read = block_on(log.read(appended.base_offset, all(log.log_end_offset())));
                    let first = read
                        .ok()
                        .and_then(|read| batches_of(&read.records).into_iter().next());
                    assert!(
                        first.as_deref() == Some(&stored[..]),
                        "{case}: acknowledged at {}, but the log holds other records there",
                        appended.base_offset
                    );
                }
                Some(Err(error)) => assert!(
                    matches!(error, AppendError::Truncating { .. }),
                    "{case}: failed as retriable, not {error}"
                ),
                None => panic!("{case}: the durable end is past it, yet it is still pending"),
            },
        }
    }
}

/// Drop the log, crash losing what was not synced, remove the checkpoint,
/// open again.
fn without_checkpoint_after_a_crash(
    log: Log<SimIo>,
    committer: Committer<SimIo>,
    io: SimIo,
    config: &LogConfig,
) -> (Log<SimIo>, Committer<SimIo>, SimIo) {
    drop(log);
    drop(committer);
    io.set_crash_mode(CrashMode::LoseUnsynced);
    let io = io.crash();
    sluice_engine::io::Io::remove_file(&io, &dir().join("checkpoint")).unwrap();
    let (log, committer) = open(&io, config);
    (log, committer, io)
}

/// A follower's active segment holds its leader's batches across offset
/// gaps, which only the checkpoint vouched for (flush step 3b). With the
/// checkpoint lost, recovery cut the log at the first gap: acknowledged
/// batches gone. Now each gap is kept where the batch after it confirms
/// it; the open's checkpoint vouches for them, so a second crash keeps them.
#[test]
fn a_followers_batches_across_offset_gaps_survive_a_lost_checkpoint() {
    let io = SimIo::new(41);
    let (log, committer) = open(&io, &small_config());
    // Gaps before 3, 10 and 20; the last batch continues exactly.
    let batches = gapped_batches(&[0, 3, 10, 13, 20, 22]);
    push_each(&log, &committer, &batches);
    assert_eq!(log.segment_bases(), vec![Offset::ZERO]);
    let end = log.log_end_offset();
    let (log, committer, io) =
        without_checkpoint_after_a_crash(log, committer, io, &small_config());
    let report = log.recovery().clone();
    assert!(report.checkpoint_missing, "{report}");
    assert_eq!(report.compacted_batches_kept, 3, "{report}");
    assert_eq!(report.segments_truncated, 0, "{report}");
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(stored_batches(&log, Offset::ZERO), batches);
    // Appends continue at the end, across another gap.
    let next = Bytes::from(as_stored(&tagged_batch(6, 1, 200, NOW), end.plus(5), 1));
    push_each(&log, &committer, std::slice::from_ref(&next));
    let mut expected = batches.clone();
    expected.push(next);
    assert_survives_a_crash(log, committer, io, &expected);
}

/// The same for a follower of a compacted leader: several segments, batches
/// missing records, gaps inside segments and at their starts.
#[test]
fn a_follower_of_a_compacted_leader_keeps_its_log_when_the_checkpoint_is_lost() {
    let leader_io = SimIo::new(42);
    let (leader, leader_committer, _) = compacted_leader(&leader_io);
    // A last batch that continues exactly (a gap before the very last
    // batch is not confirmed by anything: see the next test).
    drop(
        leader
            .append(&tagged_batch(1_000, 2, 100, NOW), LeaderEpoch(2))
            .unwrap()
            .completion,
    );
    block_on(leader_committer.flush_round());
    let io = SimIo::new(43);
    // Segments smaller than the leader's, so that several of the
    // follower's hold gaps.
    let config = LogConfig {
        segment_bytes: 1 << 10,
        index_interval_bytes: 256,
        ..small_config()
    };
    let (follower, committer) = open(&io, &config);
    for completion in &mut push_all(&leader, &follower, &committer) {
        poll_once(completion).expect("durable").unwrap();
    }
    assert!(
        follower.segment_count() > 2,
        "{:?}",
        follower.segment_bases()
    );
    let leader_batches = stored_batches(&leader, Offset::ZERO);
    assert_eq!(stored_batches(&follower, Offset::ZERO), leader_batches);
    let end = follower.log_end_offset();
    let (follower, _committer, _io) =
        without_checkpoint_after_a_crash(follower, committer, io, &config);
    let report = follower.recovery().clone();
    // A follower's new segment starts at its log end, so the gaps sit at
    // the start of segments and between batches, not after a last batch.
    assert!(report.compacted_batches_kept > 0, "{report}");
    assert_eq!(report.segments_truncated, 0, "{report}");
    assert_eq!(follower.log_end_offset(), end, "{report}");
    assert_eq!(stored_batches(&follower, Offset::ZERO), leader_batches);
}

/// With no checkpoint, a gap right before the last batch of the log is
/// confirmed by nothing: a damaged base offset (outside the CRC) looks the
/// same. That batch is cut, as a torn one is, and the follower fetches it
/// again; every batch before it stays.
#[test]
fn without_a_checkpoint_a_last_batch_after_a_gap_is_cut() {
    let io = SimIo::new(44);
    let (log, committer) = open(&io, &small_config());
    let batches = gapped_batches(&[0, 3, 10, 13, 20]);
    push_each(&log, &committer, &batches);
    let (log, _committer, _io) =
        without_checkpoint_after_a_crash(log, committer, io, &small_config());
    let report = log.recovery().clone();
    assert_eq!(report.segments_truncated, 1, "{report}");
    assert_eq!(log.log_end_offset(), Offset(14), "{report}");
    assert_eq!(stored_batches(&log, Offset::ZERO), batches[..4].to_vec());
}
