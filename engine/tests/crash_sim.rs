//! Seeded crash tests on the simulated disk.
//!
//! Each seed drives one log through a random sequence of appends, group
//! commits, fsync and write failures, full disks, deletions, truncations,
//! compaction passes (which must change nothing: every key is unique) and
//! starts over past the end (a follower behind its leader's log start), and
//! crashes (torn, lost or kept unsynced writes), with an fdatasync per file
//! (even seeds) or the shard-wide filesystem sync (odd seeds). After every
//! crash the log is reopened and checked against a model of what was
//! appended (`support::crash_model`):
//!
//! - every batch read back passes validation (length, magic, CRC, records);
//! - offsets are contiguous from the log start;
//! - every batch in the log is exactly a batch that was appended at that
//!   offset (the log is a prefix of the appends);
//! - every acknowledged batch at or above the log start is present.
//!
//! `SLUICE_SIM_SEEDS=N` sets the number of seeds (default 2000);
//! `SLUICE_SIM_SEED=S` reruns one seed. A failure prints its seed.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;

use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::{
    AppendCompletion, AppendError, CleanOptions, Committer, LeaderEpoch, Log, LogConfig, Offset,
    SyncMode,
};
use support::crash_model::{Appended, Model, check_and_adopt};
use support::{Rng, as_stored, block_on, poll_once, tagged_batch};

fn dir() -> PathBuf {
    PathBuf::from("/data/orders-3")
}

fn random_config(rng: &mut Rng) -> LogConfig {
    LogConfig {
        segment_bytes: rng.pick(&[8 << 10, 20 << 10, 64 << 10, 1 << 20]),
        index_interval_bytes: rng.pick(&[128, 1024, 4096]),
        preallocate_step_bytes: rng.pick(&[4 << 10, 16 << 10, 64 << 10]),
        chunk_size_bytes: rng.pick(&[4 << 10, 8 << 10, 32 << 10]),
        retention_ms: None,
        retention_bytes: if rng.chance(20) {
            Some(rng.pick(&[16 << 10, 64 << 10]))
        } else {
            None
        },
        ..LogConfig::default()
    }
}

fn reopen(io: &SimIo, config: &LogConfig, sync: SyncMode) -> (Log<SimIo>, Committer<SimIo>) {
    let committer = Committer::with_sync_mode(io.clone(), sync);
    let log = block_on(Log::open(io.clone(), dir(), config.clone(), &committer))
        .unwrap_or_else(|error| panic!("reopen failed: {error}"));
    (log, committer)
}

fn trace_enabled() -> bool {
    std::env::var("SLUICE_SIM_TRACE").is_ok()
}

macro_rules! trace {
    ($($argument:tt)*) => {
        if trace_enabled() {
            eprintln!($($argument)*);
        }
    };
}

fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    support::set_tail_cache_budget(seed);
    let mut io = SimIo::new(seed);
    let config = random_config(&mut rng);
    // Seeds rotate through the three ways a flush makes its writes
    // durable: an fdatasync per file, the shard-wide filesystem sync, and
    // write-through writes (durable when they complete).
    let sync = match seed % 3 {
        0 => SyncMode::PerFile,
        1 => SyncMode::Filesystem,
        _ => SyncMode::WriteThrough,
    };
    let (mut log, mut committer) = reopen(&io, &config, sync);
    let mut model = Model::new();
    let mut pending: Vec<(Offset, AppendCompletion)> = Vec::new();
    let mut tag = 0u64;
    let steps = 150 + rng.below(150);
    for _ in 0..steps {
        let roll = rng.below(100);
        if roll < 55 {
            tag += 1;
            let count = 1 + rng.below(8) as usize;
            let value_size = rng.pick(&[0, 10, 100, 700, 2000]);
            let batch = tagged_batch(tag, count, value_size, 1_700_000_000_000 + tag as i64);
            match log.append(&batch, LeaderEpoch(7)) {
                Ok(appended) => {
                    let stored = as_stored(&batch, appended.base_offset, 7);
                    let end = appended.last_offset.plus(1);
                    model.batches.insert(
                        appended.base_offset,
                        Appended {
                            stored,
                            end,
                            acknowledged: false,
                        },
                    );
                    trace!(
                        "append {}..{} size {}",
                        appended.base_offset,
                        end,
                        batch.len()
                    );
                    pending.push((appended.base_offset, appended.completion));
                }
                Err(AppendError::Poisoned { .. }) => {}
                Err(error) => panic!("unexpected append error: {error}"),
            }
        } else if roll < 80 {
            block_on(committer.flush_round());
            trace!(
                "flush: durable {} end {} segments {}",
                log.durable_end_offset(),
                log.log_end_offset(),
                log.segment_count()
            );
        } else if roll < 84 {
            trace!("fault");
            support::random_fault(&mut rng, &io, 4);
        } else if roll < 86 {
            let durable = log.durable_end_offset();
            let start = log.log_start_offset();
            if durable > start {
                let target = Offset(
                    start.value() + rng.below((durable.value() - start.value()) as u64 + 1) as i64,
                );
                trace!("delete records before {target}");
                if block_on(log.delete_records_before(target)).is_ok() {
                    model.log_start = model.log_start.max(target);
                }
            }
            let deleted = block_on(log.apply_retention(log.log_end_offset()));
            trace!("retention {deleted:?} start {}", log.log_start_offset());
            if deleted.is_ok() {
                model.log_start = model.log_start.max(log.log_start_offset());
            }
        } else if roll < 87 && !log.is_poisoned() {
            let durable = log.durable_end_offset();
            let start = log.log_start_offset();
            if durable > start {
                let target = Offset(
                    start.value() + rng.below((durable.value() - start.value()) as u64) as i64,
                );
                let result = block_on(log.truncate_to(target));
                trace!("truncate to {target}: {result:?}");
                match result {
                    Ok(new_end) => {
                        assert!(new_end <= target);
                        model.forget_from(new_end);
                        model.log_start = model.log_start.min(new_end);
                        pending.retain(|(base, _)| *base < new_end);
                    }
                    Err(_) => {
                        // A failed truncation may or may not have cut the
                        // file: batches past the target are no longer owed.
                        for appended in model
                            .batches
                            .values_mut()
                            .filter(|appended| appended.end > target)
                        {
                            appended.acknowledged = false;
                        }
                        pending.retain(|(base, _)| {
                            model
                                .batches
                                .get(base)
                                .is_some_and(|appended| appended.end <= target)
                        });
                        // If it did cut, the log start may have followed the cut.
                        if let Some((&cut, _)) = model.batches.range(..=target).next_back() {
                            model.log_start = model.log_start.min(cut);
                        }
                    }
                }
            }
        } else if roll < 88 && !log.is_poisoned() {
            // Every record has its own key, so a compaction pass must
            // remove nothing: it reads the sealed segments, writes the
            // checkpoint and leaves every batch as it was, under any fault.
            let result = block_on(log.clean(&CleanOptions::default()));
            trace!("clean: {result:?}");
            if let Ok(summary) = result {
                assert_eq!(summary.records_removed, 0, "unique keys: nothing to remove");
            }
        } else if roll == 88 && !log.is_poisoned() {
            // A follower starting over past its end (its leader's log
            // start moved beyond it): nothing before is owed any more.
            // Past the end; or, when the log holds no record, anywhere.
            let end = log.log_end_offset();
            let start = if log.log_start_offset() == end && rng.chance(50) {
                Offset(rng.below(end.value() as u64 + 1) as i64)
            } else {
                end.plus(rng.below(50) as i64)
            };
            let result = block_on(log.start_over_at(start));
            trace!("start over at {start}: {result:?}");
            drop(pending.drain(..));
            for appended in model.batches.values_mut() {
                appended.acknowledged = false;
            }
            if result.is_ok() {
                assert_eq!(
                    (log.log_start_offset(), log.log_end_offset()),
                    (start, start)
                );
                model.batches.clear();
                model.log_start = start;
            } else {
                // It may have got as far as the checkpoint.
                model.log_start = model.log_start.min(start);
            }
        } else if roll < 91 || log.is_poisoned() {
            // Crash: drop the log, pick how the unsynced state survives.
            drop(pending.drain(..));
            drop(log);
            io.set_crash_mode(support::random_crash_mode(&mut rng));
            io = io.crash();
            trace!("crash");
            io.set_space_limit(None);
            (log, committer) = reopen(&io, &config, sync);
            check_and_adopt(&log, &mut model);
            continue;
        }
        // Collect completions.
        let mut rolled_back = false;
        pending.retain_mut(|(base, completion)| match poll_once(completion) {
            None => true,
            Some(Ok(())) => {
                let appended = model.batches.get_mut(base).unwrap();
                appended.acknowledged = true;
                trace!("ack {base}");
                assert!(
                    appended.end <= log.durable_end_offset(),
                    "acknowledged beyond the durable end"
                );
                false
            }
            Some(Err(AppendError::StorageFull { .. })) => {
                trace!("storage full for {base}");
                rolled_back = true;
                false
            }
            Some(Err(error)) => {
                trace!("append {base} failed: {error}");
                false
            }
        });
        if rolled_back {
            model.forget_from(log.log_end_offset());
        }
    }
    drop(pending);
    drop(log);
    io.set_crash_mode(CrashMode::Torn);
    let io = io.crash();
    // A full disk may refuse the reopen (recovery writes a checkpoint); it
    // must fail cleanly and succeed once space is back.
    let committer = Committer::with_sync_mode(io.clone(), sync);
    if let Err(error) = block_on(Log::open(io.clone(), dir(), config.clone(), &committer)) {
        assert!(
            error.to_string().contains("No space left"),
            "reopen failed: {error}"
        );
    }
    io.set_space_limit(None);
    let (log, _committer) = reopen(&io, &config, sync);
    check_and_adopt(&log, &mut model);
}

#[test]
fn after_any_crash_the_log_is_a_valid_prefix_holding_every_acknowledged_batch() {
    support::run_seeds(2000, 0, run_seed);
}
