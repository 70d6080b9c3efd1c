//! The leader-epoch cache of a log (engine/src/epochs.rs) on the simulated
//! disk: entries follow appends, truncations and log start moves; KIP-279
//! answers; the checkpoint file survives reopens and crashes and is rebuilt
//! from the batch headers when missing or damaged; a stale leader's append
//! is refused.
//!
//! `SLUICE_SIM_SEEDS=N` sets the number of crash seeds (default 200);
//! `SLUICE_SIM_SEED=S` reruns one seed. A failure prints its seed.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use sluice_engine::epochs::{self, CHECKPOINT_FILE_NAME};
use sluice_engine::io::Io;
use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::{
    AppendCompletion, AppendError, Committer, LeaderEpoch, Log, LogConfig, Offset,
};
use support::{Rng, all, batches_of, block_on, poll_once, tagged_batch};

const NOW: i64 = SimIo::NOW_MS_START_DEFAULT;

fn dir() -> PathBuf {
    PathBuf::from("/data/events-3")
}

fn checkpoint() -> PathBuf {
    dir().join(CHECKPOINT_FILE_NAME)
}

/// Small segments and a dense index, so that a few dozen batches span
/// several segments and the rebuild bisects over many index entries.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        index_interval_bytes: 256,
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

fn epoch_pairs(entries: &[(LeaderEpoch, Offset)]) -> Vec<(i32, i64)> {
    entries
        .iter()
        .map(|(epoch, offset)| (epoch.0, offset.value()))
        .collect()
}

/// Append one batch per epoch (the i-th with `1 + i % 3` records) and make
/// them durable; returns each batch's base offset.
fn append_epochs(log: &Log<SimIo>, committer: &Committer<SimIo>, epochs: &[i32]) -> Vec<i64> {
    let mut bases = Vec::new();
    for (tag, epoch) in epochs.iter().enumerate() {
        let batch = tagged_batch(tag as u64, 1 + tag % 3, 200, NOW);
        let appended = log.append(&batch, LeaderEpoch(*epoch)).unwrap();
        bases.push(appended.base_offset.value());
        drop(appended.completion);
    }
    block_on(committer.flush_round());
    assert_eq!(log.durable_end_offset(), log.log_end_offset());
    bases
}

/// The entries the durable checkpoint file holds.
fn durable_file_entries(io: &SimIo) -> Vec<(i32, i64)> {
    let bytes = io.durable_content(&checkpoint()).expect("checkpoint file");
    let cache = epochs::decode(&bytes).unwrap();
    cache
        .entries()
        .iter()
        .map(|entry| (entry.epoch.0, entry.start_offset.value()))
        .collect()
}

/// (base offset, epoch) of every batch in the log.
fn batch_epochs(log: &Log<SimIo>) -> Vec<(i64, i32)> {
    let end = log.log_end_offset();
    let mut offset = log.log_start_offset();
    let mut out = Vec::new();
    while offset < end {
        let result = block_on(log.read(offset, all(end))).unwrap();
        assert!(!result.records.is_empty(), "no progress at {offset}");
        for stored in batches_of(&result.records) {
            let header = sluice_engine::batch::BatchHeader::parse(&stored).unwrap();
            out.push((
                header.base_offset().value(),
                header.partition_leader_epoch().0,
            ));
        }
        offset = result.next_offset;
    }
    out
}

/// Every batch's epoch has an entry starting at or before it, and the
/// entries are exactly what a scan of the batch headers gives.
fn check_consistent(log: &Log<SimIo>) {
    let entries = log.leader_epoch_entries();
    for (base, epoch) in batch_epochs(log) {
        assert!(
            entries
                .iter()
                .any(|(entry_epoch, start)| entry_epoch.0 == epoch && start.value() <= base),
            "batch at {base} of epoch {epoch} not covered by {entries:?}"
        );
    }
    let scanned = block_on(log.leader_epoch_entries_by_scan()).unwrap();
    assert_eq!(entries, scanned, "loaded entries differ from a scan");
}

#[test]
fn appends_record_the_first_offset_of_each_new_epoch() {
    let io = SimIo::new(1);
    let (log, committer) = open(&io, &small_config());
    assert_eq!(log.leader_epoch_entries(), vec![]);
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);
    let bases = append_epochs(&log, &committer, &[0, 0, 1, 1, 3]);
    let (x, y) = (bases[2], bases[4]);
    assert_eq!(
        epoch_pairs(&log.leader_epoch_entries()),
        vec![(0, 0), (1, x), (3, y)]
    );
    let end = log.log_end_offset();
    let answer = |epoch: i32| {
        log.end_offset_for_epoch(LeaderEpoch(epoch))
            .map(|(epoch, offset)| (epoch.0, offset.value()))
    };
    assert_eq!(answer(0), Some((0, x)));
    assert_eq!(answer(1), Some((1, y)));
    assert_eq!(answer(2), Some((1, y)));
    assert_eq!(answer(3), Some((3, end.value())));
    assert_eq!(answer(4), Some((3, end.value())));
    assert_eq!(answer(-1), None);
    assert_eq!(log.epoch_start_offset(LeaderEpoch(1)), Some(Offset(x)));
    assert_eq!(log.epoch_start_offset(LeaderEpoch(2)), None);
    // Durable data implies a durable file covering it.
    assert_eq!(durable_file_entries(&io), vec![(0, 0), (1, x), (3, y)]);
    check_consistent(&log);
}

#[test]
fn a_stale_leaders_append_is_refused_and_appends_nothing() {
    let io = SimIo::new(2);
    let (log, committer) = open(&io, &small_config());
    append_epochs(&log, &committer, &[4, 6]);
    let end = log.log_end_offset();
    let size = log.size_bytes();
    match log.append(&tagged_batch(9, 2, 10, NOW), LeaderEpoch(5)) {
        Err(AppendError::EpochRegression { latest, got, .. }) => {
            assert_eq!((latest, got), (LeaderEpoch(6), LeaderEpoch(5)));
        }
        Err(error) => panic!("unexpected error {error}"),
        Ok(appended) => panic!("accepted at {}", appended.base_offset),
    }
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.last_leader_epoch(), Some(LeaderEpoch(6)));
    // The same or a later epoch is accepted.
    drop(
        log.append(&tagged_batch(10, 1, 10, NOW), LeaderEpoch(6))
            .unwrap(),
    );
    drop(
        log.append(&tagged_batch(11, 1, 10, NOW), LeaderEpoch(7))
            .unwrap(),
    );
    assert_eq!(
        epoch_pairs(&log.leader_epoch_entries()),
        vec![(4, 0), (6, 1), (7, end.value() + 1)]
    );
}

#[test]
fn truncation_removes_entries_and_is_durable_on_return() {
    let io = SimIo::new(3);
    let (log, committer) = open(&io, &small_config());
    let bases = append_epochs(&log, &committer, &[1, 2, 2, 5, 5, 7]);
    block_on(log.truncate_to(Offset(bases[4]))).unwrap();
    let expected = vec![(1, 0), (2, bases[1]), (5, bases[3])];
    assert_eq!(epoch_pairs(&log.leader_epoch_entries()), expected);
    assert_eq!(durable_file_entries(&io), expected);
    block_on(log.truncate_to(Offset(bases[3]))).unwrap();
    assert_eq!(
        epoch_pairs(&log.leader_epoch_entries()),
        vec![(1, 0), (2, bases[1])]
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(5)),
        Some((LeaderEpoch(2), Offset(bases[3])))
    );
    // A crash right after keeps the truncated entries.
    drop(log);
    drop(committer);
    let io = io.crash();
    let (log, _committer) = open(&io, &small_config());
    assert_eq!(
        epoch_pairs(&log.leader_epoch_entries()),
        vec![(1, 0), (2, bases[1])]
    );
    check_consistent(&log);
}

#[test]
fn entries_survive_a_reopen_and_an_unclean_stop() {
    let epochs: Vec<i32> = (0..80).map(|index| index / 9 * 2).collect();
    let io = SimIo::new(4);
    let (log, committer) = open(&io, &small_config());
    append_epochs(&log, &committer, &epochs);
    assert!(log.segment_count() > 3, "the test needs several segments");
    let entries = log.leader_epoch_entries();
    assert_eq!(entries.len(), 9);
    block_on(log.close()).unwrap();
    drop(log);
    let (log, committer) = open(&io, &small_config());
    assert_eq!(log.leader_epoch_entries(), entries);
    check_consistent(&log);
    drop(log);
    drop(committer);
    let io = io.crash();
    let (log, _committer) = open(&io, &small_config());
    assert_eq!(log.leader_epoch_entries(), entries);
    check_consistent(&log);
}

#[test]
fn a_missing_or_damaged_file_is_rebuilt_from_the_batch_headers() {
    let epochs: Vec<i32> = (0..120).map(|index| index / 7 + index / 50).collect();
    let io = SimIo::new(5);
    let (log, committer) = open(&io, &small_config());
    append_epochs(&log, &committer, &epochs);
    let entries = log.leader_epoch_entries();
    assert!(entries.len() > 10);
    block_on(log.close()).unwrap();
    drop(log);
    drop(committer);
    // Missing: a log written before the file existed.
    io.remove_file(&checkpoint()).unwrap();
    let (log, committer) = open(&io, &small_config());
    assert_eq!(log.leader_epoch_entries(), entries);
    assert_eq!(
        epoch_pairs(&entries),
        durable_file_entries(&io),
        "the rebuilt file is written"
    );
    drop(log);
    drop(committer);
    let damaged: [&[u8]; 4] = [b"", b"0\n3\n0 0\n", b"7\n0\n", b"0\n2\n5 10\n4 20\n"];
    for bytes in damaged {
        block_on(io.write_file_atomic(&checkpoint(), bytes.to_vec())).unwrap();
        let (log, _committer) = open(&io, &small_config());
        assert_eq!(log.leader_epoch_entries(), entries, "{bytes:?}");
    }
    // A file that lacks the last epochs (a broken durability rule) is
    // rebuilt too.
    let stale = epochs::encode_entries(&[sluice_engine::EpochEntry {
        epoch: LeaderEpoch(0),
        start_offset: Offset::ZERO,
    }]);
    block_on(io.write_file_atomic(&checkpoint(), stale)).unwrap();
    let (log, _committer) = open(&io, &small_config());
    assert_eq!(log.leader_epoch_entries(), entries);
}

#[test]
fn a_moving_log_start_trims_the_first_entries() {
    let io = SimIo::new(6);
    let (log, committer) = open(&io, &small_config());
    let bases = append_epochs(&log, &committer, &[0, 0, 2, 2, 2, 4, 4]);
    let start = Offset(bases[3] + 1);
    block_on(log.delete_records_before(start)).unwrap();
    let expected = vec![(2, start.value()), (4, bases[5])];
    assert_eq!(epoch_pairs(&log.leader_epoch_entries()), expected);
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), None);
    drop(log);
    drop(committer);
    let io = io.crash();
    let (log, _committer) = open(&io, &small_config());
    assert_eq!(epoch_pairs(&log.leader_epoch_entries()), expected);
    check_consistent(&log);
}

// ---------------------------------------------------------------------------
// Crash simulation.

fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
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
    let mut epoch = 0i32;
    // (base offset, epoch, completion) of appends not yet known durable.
    let mut pending: Vec<(i64, i32, AppendCompletion)> = Vec::new();
    let mut acknowledged: Vec<(i64, i32)> = Vec::new();
    let steps = 100 + rng.below(150);
    for tag in 0..steps {
        let roll = rng.below(100);
        if roll < 55 {
            if rng.chance(15) {
                epoch += 1 + rng.below(3) as i32;
            }
            let records = 1 + rng.below(6) as usize;
            let value_size = rng.pick(&[0, 10, 100, 700, 2000]);
            let batch = tagged_batch(tag, records, value_size, NOW);
            match log.append(&batch, LeaderEpoch(epoch)) {
                Ok(appended) => {
                    pending.push((appended.base_offset.value(), epoch, appended.completion))
                }
                Err(AppendError::Poisoned { .. }) => {}
                Err(error) => panic!("unexpected append error: {error}"),
            }
        } else if roll < 78 {
            block_on(committer.flush_round());
        } else if roll < 82 && !log.is_poisoned() {
            let end = log.durable_end_offset().value();
            if end > 0 {
                let cut = Offset(rng.below(end as u64) as i64);
                let result = block_on(log.truncate_to(cut));
                // Its flush may have completed pending appends it then cut.
                collect(&mut pending, &mut acknowledged);
                // A failure may come after the cut reached the file (then
                // the log end in memory did not move): only batches wholly
                // below `cut` (at most 6 records each) are sure to stay.
                let kept_end = match result {
                    Ok(new_end) => new_end.value(),
                    Err(_) => cut.value() - 6,
                };
                acknowledged.retain(|(base, _)| *base < kept_end);
            }
        } else if roll < 86 {
            match rng.below(3) {
                0 => io.fail_sync_after(Some(rng.below(4))),
                1 => io.fail_write_after(Some(rng.below(6))),
                _ => io.set_space_limit(Some(io.space_used_bytes() + rng.below(64 << 10))),
            }
        } else {
            collect(&mut pending, &mut acknowledged);
            check_durable_file(&io, &acknowledged);
            drop(log);
            drop(committer);
            io.set_crash_mode(support::random_crash_mode(&mut rng));
            io = io.crash();
            io.fail_sync_after(None);
            io.fail_write_after(None);
            io.set_space_limit(None);
            (log, committer) = open(&io, &config);
            check_after_crash(&log, &acknowledged);
            // Epochs never go back, even when the log lost its tail.
            let latest = log
                .leader_epoch_entries()
                .last()
                .map_or(0, |entry| entry.0.0);
            epoch = epoch.max(latest);
            let end = log.log_end_offset().value();
            acknowledged.retain(|(base, _)| *base < end);
        }
    }
    collect(&mut pending, &mut acknowledged);
    check_durable_file(&io, &acknowledged);
    drop(log);
    drop(committer);
    io.set_crash_mode(CrashMode::Torn);
    let io = io.crash();
    let (log, _committer) = open(&io, &config);
    check_after_crash(&log, &acknowledged);
}

/// Move appends whose completion resolved Ok to `acknowledged`.
fn collect(pending: &mut Vec<(i64, i32, AppendCompletion)>, acknowledged: &mut Vec<(i64, i32)>) {
    for (base, epoch, completion) in pending.iter_mut() {
        if let Some(Ok(())) = poll_once(completion) {
            acknowledged.push((*base, *epoch));
        }
    }
    pending.clear();
    acknowledged.sort();
    acknowledged.dedup();
}

/// The durability rule: the durable file covers every acknowledged batch.
fn check_durable_file(io: &SimIo, acknowledged: &[(i64, i32)]) {
    if acknowledged.is_empty() {
        return;
    }
    let entries = durable_file_entries(io);
    for (base, epoch) in acknowledged {
        assert!(
            entries
                .iter()
                .any(|(entry_epoch, start)| entry_epoch == epoch && start <= base),
            "acknowledged batch at {base} of epoch {epoch} not covered by the durable file \
             {entries:?}"
        );
    }
}

fn check_after_crash(log: &Log<SimIo>, acknowledged: &[(i64, i32)]) {
    let held = batch_epochs(log);
    for (base, epoch) in acknowledged {
        assert!(
            held.contains(&(*base, *epoch)),
            "lost acknowledged batch at {base}"
        );
    }
    check_consistent(log);
}

#[test]
fn after_any_crash_the_entries_cover_every_batch_and_match_a_scan() {
    support::run_seeds(200, 1, run_seed);
}
