//! Seeded crash tests of the shard-wide filesystem sync
//! (`SyncMode::Filesystem`) on the simulated disk.
//!
//! Each seed drives two to five logs of one shard (one committer, one
//! disk) through appends to random logs, flush rounds that run to the end
//! or are interrupted while a filesystem sync is in progress (appends
//! continue meanwhile and join a later sync), sync and write failures, full
//! disks, and crashes at any of these points, including in the middle of a
//! sync. The simulated sync covers what completed before it started and
//! takes time (it yields once), so logs of one round join one sync, logs
//! whose writes complete while it runs wait for the next one, and a crash
//! during a sync keeps any part of what it had not finished.
//!
//! After every crash each log is reopened and checked against its model
//! (`support::crash_model`): a valid prefix of what was appended, holding
//! every acknowledged batch. A batch acknowledged by a sync that started
//! before its write completed would be lost by some crash and fail here.
//!
//! `SLUICE_SIM_SEEDS=N` sets the number of seeds (default 400; run
//! thousands outside CI);
//! `SLUICE_SIM_SEED=S` reruns one seed. A failure prints its seed.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::pin::pin;

use sluice_engine::io::sim::{CrashMode, SimIo};
use sluice_engine::{
    AppendCompletion, AppendError, Committer, LeaderEpoch, Log, LogConfig, Offset, SyncMode,
};
use support::crash_model::{Appended, Model, check_and_adopt};
use support::{Rng, as_stored, block_on, poll_once, tagged_batch};

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

fn dir(log: usize) -> PathBuf {
    PathBuf::from(format!("/data/events-{log}"))
}

fn random_config(rng: &mut Rng) -> LogConfig {
    LogConfig {
        segment_bytes: rng.pick(&[8 << 10, 20 << 10, 1 << 20]),
        index_interval_bytes: rng.pick(&[128, 4096]),
        preallocate_step_bytes: rng.pick(&[4 << 10, 64 << 10]),
        chunk_size_bytes: rng.pick(&[4 << 10, 32 << 10]),
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The shard's logs, reopened on `io` with one filesystem-sync committer.
fn reopen(io: &SimIo, config: &LogConfig, count: usize) -> (Vec<Log<SimIo>>, Committer<SimIo>) {
    let committer = Committer::with_sync_mode(io.clone(), SyncMode::Filesystem);
    let logs = (0..count)
        .map(|log| {
            block_on(Log::open(io.clone(), dir(log), config.clone(), &committer))
                .unwrap_or_else(|error| panic!("reopen of log {log} failed: {error}"))
        })
        .collect();
    (logs, committer)
}

/// An appended batch not yet completed: its log and base offset.
struct Pending {
    log: usize,
    base: Offset,
    completion: AppendCompletion,
}

fn append(
    rng: &mut Rng,
    tag: &mut u64,
    logs: &[Log<SimIo>],
    models: &mut [Model],
    pending: &mut Vec<Pending>,
) {
    *tag += 1;
    let log = rng.below(logs.len() as u64) as usize;
    let count = 1 + rng.below(6) as usize;
    let value_size = rng.pick(&[0, 100, 700, 3000]);
    let batch = tagged_batch(*tag, count, value_size, 1_700_000_000_000 + *tag as i64);
    match logs[log].append(&batch, LeaderEpoch(3)) {
        Ok(appended) => {
            models[log].batches.insert(
                appended.base_offset,
                Appended {
                    stored: as_stored(&batch, appended.base_offset, 3),
                    end: appended.last_offset.plus(1),
                    acknowledged: false,
                },
            );
            trace!(
                "append log {log} {}..={}",
                appended.base_offset, appended.last_offset
            );
            pending.push(Pending {
                log,
                base: appended.base_offset,
                completion: appended.completion,
            });
        }
        Err(AppendError::Poisoned { .. }) => {}
        Err(error) => panic!("unexpected append error: {error}"),
    }
}

/// Record the completions that are ready: acknowledged batches must be
/// within their log's durable end; a full disk rolls the log's tail back.
fn collect(logs: &[Log<SimIo>], models: &mut [Model], pending: &mut Vec<Pending>) {
    let mut rolled_back = vec![false; logs.len()];
    pending.retain_mut(|entry| match poll_once(&mut entry.completion) {
        None => true,
        Some(Ok(())) => {
            trace!("ack log {} {}", entry.log, entry.base);
            let appended = models[entry.log].batches.get_mut(&entry.base).unwrap();
            appended.acknowledged = true;
            assert!(
                appended.end <= logs[entry.log].durable_end_offset(),
                "acknowledged beyond the durable end of log {}",
                entry.log
            );
            false
        }
        Some(Err(AppendError::StorageFull { .. })) => {
            trace!("storage full log {} {}", entry.log, entry.base);
            rolled_back[entry.log] = true;
            false
        }
        Some(Err(error)) => {
            trace!("failed log {} {}: {error}", entry.log, entry.base);
            false
        }
    });
    for (log, rolled) in rolled_back.into_iter().enumerate() {
        if rolled {
            trace!("log {log} rolled back to {}", logs[log].log_end_offset());
            models[log].forget_from(logs[log].log_end_offset());
        }
    }
}

fn run_seed(seed: u64) {
    let mut rng = Rng(seed);
    support::set_tail_cache_budget(seed);
    let mut io = SimIo::new(seed);
    let config = random_config(&mut rng);
    let count = 2 + rng.below(4) as usize;
    let (mut logs, mut committer) = reopen(&io, &config, count);
    let mut models: Vec<Model> = (0..count).map(|_| Model::new()).collect();
    let mut pending: Vec<Pending> = Vec::new();
    let mut tag = 0u64;
    let mut syncs_before = 0;
    for _ in 0..150 + rng.below(150) {
        let roll = rng.below(100);
        let mut crash = false;
        if roll < 50 {
            append(&mut rng, &mut tag, &logs, &mut models, &mut pending);
        } else if roll < 70 {
            trace!("round");
            block_on(committer.flush_round());
        } else if roll < 85 {
            // A round interrupted while its sync runs: appends (to logs in
            // the round or not) arrive meanwhile, maybe a crash comes.
            trace!("interrupted round");
            let mut round = pin!(committer.flush_round());
            // Completions are collected after every poll and before the
            // next append: a full disk rolls a log's tail back, and an
            // append after that reuses the offsets.
            let mut finished = poll_once(&mut round).is_some();
            collect(&logs, &mut models, &mut pending);
            for _ in 0..rng.below(4) {
                append(&mut rng, &mut tag, &logs, &mut models, &mut pending);
                if !finished {
                    finished = poll_once(&mut round).is_some();
                }
                collect(&logs, &mut models, &mut pending);
            }
            if rng.chance(30) {
                crash = true;
            } else if !finished {
                block_on(round);
            }
        } else if roll < 88 {
            trace!("fault");
            support::random_fault(&mut rng, &io, 3);
        } else if roll < 92 {
            crash = true;
        }
        crash |= logs.iter().any(Log::is_poisoned);
        if crash {
            trace!("crash");
            pending.clear();
            let syncs = io.stats().sync_filesystem_count;
            assert!(syncs >= syncs_before, "sync counter went back");
            drop(logs);
            drop(committer);
            io.set_crash_mode(support::random_crash_mode(&mut rng));
            io = io.crash();
            syncs_before = io.stats().sync_filesystem_count;
            io.set_space_limit(None);
            if trace_enabled() {
                for log in 0..count {
                    for name in io.file_names(&dir(log)) {
                        let path = dir(log).join(&name);
                        trace!("  log {log} {name} {:?}", io.live_len(&path));
                    }
                }
            }
            (logs, committer) = reopen(&io, &config, count);
            for (index, (log, model)) in logs.iter().zip(models.iter_mut()).enumerate() {
                trace!(
                    "  log {index} reopened {}..{} segments {}",
                    log.log_start_offset(),
                    log.log_end_offset(),
                    log.segment_count()
                );
                check_and_adopt(log, model);
            }
            continue;
        }
        collect(&logs, &mut models, &mut pending);
    }
    // Whatever was left unfinished, a last crash keeps every acknowledged
    // batch of every log.
    drop(pending);
    drop(logs);
    drop(committer);
    io.set_crash_mode(CrashMode::Torn);
    let io = io.crash();
    io.set_space_limit(None);
    let (logs, _committer) = reopen(&io, &config, count);
    for (log, model) in logs.iter().zip(models.iter_mut()) {
        check_and_adopt(log, model);
    }
}

/// Logs of one round share syncs: the simulated disk counts fewer
/// filesystem syncs than log flushes, and more than zero.
#[test]
fn four_logs_flushed_in_one_round_share_two_filesystem_syncs() {
    let io = SimIo::new(1);
    let config = LogConfig::default();
    let (logs, committer) = reopen(&io, &config, 4);
    let mut completions = Vec::new();
    for round in 0..3_u64 {
        for (index, log) in logs.iter().enumerate() {
            let batch = tagged_batch(round * 10 + index as u64, 3, 200, 1_700_000_000_000);
            completions.push(log.append(&batch, LeaderEpoch(1)).unwrap().completion);
        }
        let before = io.stats();
        block_on(committer.flush_round());
        let after = io.stats();
        // The first log to finish writing starts a sync; the others, done
        // while it runs, share the next one.
        assert_eq!(
            after.sync_filesystem_count - before.sync_filesystem_count,
            2
        );
        assert_eq!(
            after.sync_data_count, before.sync_data_count,
            "no per-file fdatasync"
        );
    }
    for completion in completions {
        block_on(completion).unwrap();
    }
    let stats = committer.stats();
    assert_eq!(stats.filesystem_syncs, 6);
    assert_eq!(stats.log_flushes, 12);
}

#[test]
fn after_any_crash_every_log_of_the_shard_holds_its_acknowledged_batches() {
    support::run_seeds(400, 0, run_seed);
}
