//! Deterministic simulation of partition replication: three brokers, each
//! with a real engine `Log` on its own simulated disk, the production
//! replication decisions (`replication::progress`: sync by leader epoch,
//! follower progress, high watermark, ISR wishes) driven as
//! `replication::leader` and `replication::follower` drive them, a model
//! of the controller's decisions (fencing on session timeout, election
//! from the live ISR, AlterPartition with epoch checks, restarts as new
//! incarnations), a fake clock and network (loss, delay, partitions),
//! crashes that lose unsynced writes, and an acks=all producer. Invariants
//! are checked after every 10 ms step (`replication_sim/checker.rs`).
//!
//! Partition reassignment: half the seeds start the partition on two of
//! the three brokers, and the controller model takes AlterPartitionReassignments
//! requests at random times (a move to another pair, a growth to three, a
//! shrink to two, a replaced target, a cancellation), decided and
//! completed on its tick as `controller/reassignment.rs` does. Leaders
//! follow each new replica list through `LeaderState::apply_committed`
//! and start pushers for added followers; a broker that stops being a
//! replica deletes its copy and starts from an empty log if added back.
//! `reassignments_under_faults_lose_nothing` runs them often; it found four
//! production bugs, fixed since (three reproduced on the production
//! functions alone in `replication_sim/known_bugs.rs`).
//!
//! The ISR task is modelled as production's `isr_loop` runs it since the
//! two bugs this simulation found were fixed: a late AlterPartition answer
//! no longer moves the partition epoch back (`LeaderState::apply_committed`
//! ignores older epochs; checked with the model's own guard off), and an
//! unanswered change stays pending (a negative control shows the checker
//! catches the old behaviour, `Options::timeout_clears_pending`).
//!
//! A refusal as stale (another leader, leader epoch or partition epoch)
//! keeps the change pending here as in production (`propose_isr`: newer
//! metadata says how it ended); dropping it was bug 4 of
//! `reassignments_under_faults_lose_nothing`.
//!
//! `SLUICE_SIM_SEED=n` runs one seed; `SLUICE_SIM_SEEDS=n` sets how many
//! and `SLUICE_SIM_FIRST_SEED=n` where they start (default 2000 from 0;
//! the whole binary then takes about two minutes on two cores, three of
//! CPU). Long campaigns, about 45 minutes each:
//! `SLUICE_SIM_SEEDS=50000 cargo test -p sluice-server --test
//! replication_sim replication_keeps`, and the same with
//! `reassignments_under`. A failing seed is printed
//! with a trace; `SLUICE_SIM_TRACE=1` prints all of it, `=messages` every
//! message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "replication_sim/broker.rs"]
mod broker;
#[path = "replication_sim/checker.rs"]
mod checker;
#[path = "replication_sim/cluster.rs"]
mod cluster;
#[path = "replication_sim/controller.rs"]
mod controller;
#[path = "replication_sim/known_bugs.rs"]
mod known_bugs;
#[path = "replication_sim/network.rs"]
mod network;
#[path = "replication_sim/prng.rs"]
mod prng;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use broker::Bug;
use cluster::{Options, Simulation, Summary};
use controller::ControllerBug;

/// Seeds per run in CI (the issue asks for thousands).
const SEEDS_DEFAULT: u64 = 2000;

fn run_seed(seed: u64, options: Options) -> Result<Summary, String> {
    match catch_unwind(AssertUnwindSafe(|| Simulation::new(seed, options).run())) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            Err(format!("seed {seed}: panicked: {message}"))
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SLUICE_SIM_SEED") {
        return vec![seed.parse().expect("SLUICE_SIM_SEED is a number")];
    }
    let count = std::env::var("SLUICE_SIM_SEEDS")
        .map(|count| count.parse().expect("SLUICE_SIM_SEEDS is a number"))
        .unwrap_or(SEEDS_DEFAULT);
    let first: u64 = std::env::var("SLUICE_SIM_FIRST_SEED")
        .map(|first| first.parse().expect("SLUICE_SIM_FIRST_SEED is a number"))
        .unwrap_or(0);
    (first..first + count).collect()
}

/// Run `seeds` on two threads (the machine has two cores).
fn run_all(seeds: &[u64], options: Options) -> Vec<(u64, Result<Summary, String>)> {
    let halves: Vec<Vec<u64>> = vec![
        seeds.iter().copied().step_by(2).collect(),
        seeds.iter().copied().skip(1).step_by(2).collect(),
    ];
    let mut results: Vec<(u64, Result<Summary, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = halves
            .into_iter()
            .map(|half| {
                scope.spawn(move || {
                    half.into_iter()
                        .map(|seed| (seed, run_seed(seed, options)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap())
            .collect()
    });
    results.sort_by_key(|(seed, _)| *seed);
    results
}

#[test]
fn replication_keeps_every_acknowledged_write_under_faults() {
    let started = Instant::now();
    let seeds = seeds();
    let results = run_all(&seeds, Options::default());
    let mut totals = Summary::default();
    let mut failures = Vec::new();
    for (seed, result) in results {
        match result {
            Ok(summary) => {
                totals.acknowledged += summary.acknowledged;
                totals.produced += summary.produced;
                totals.crashes += summary.crashes;
                totals.partitions += summary.partitions;
                totals.leader_epochs += summary.leader_epochs;
                totals.isr_changes += summary.isr_changes;
                totals.isr_refusals += summary.isr_refusals;
                totals.messages += summary.messages;
                totals.lost += summary.lost;
                totals.reassignments += summary.reassignments;
                totals.cancellations += summary.cancellations;
                totals.completions += summary.completions;
                totals.deletions += summary.deletions;
            }
            Err(error) => failures.push((seed, error)),
        }
    }
    eprintln!(
        "replication simulation: {} seeds in {:.1?}: {totals:?}",
        seeds.len(),
        started.elapsed()
    );
    if let Some((seed, error)) = failures.first() {
        panic!(
            "{} of {} seeds failed; first, seed {seed} (rerun with SLUICE_SIM_SEED={seed}):\n{error}",
            failures.len(),
            seeds.len()
        );
    }
    assert!(totals.acknowledged > 0, "the workload acknowledged nothing");
}

/// Leaders whose disk fills now and then (crashes and every other fault
/// as usual). A leader sends its appends to its followers before they are
/// durable on its own disk; a flush that then finds no space fails those
/// appends, and the log keeps them at their offsets for the next flush
/// (`Log::keep_unflushed_when_full`). Rolled back instead, the same
/// offsets take other records under the same leader epoch, and replicas
/// diverge below the high watermark
/// (`the_checker_catches_offsets_reused_after_a_full_disk`).
#[test]
fn leaders_whose_disk_fills_lose_nothing() {
    let options = Options {
        disk_full_per_million: DISK_FULL_PER_MILLION,
        ..Options::default()
    };
    let seeds: Vec<u64> = if std::env::var_os("SLUICE_SIM_SEEDS").is_some() {
        seeds()
    } else {
        seeds().into_iter().take(DISK_FULL_SEEDS).collect()
    };
    let mut totals = Summary::default();
    let mut failures = Vec::new();
    for (seed, result) in run_all(&seeds, options) {
        match result {
            Ok(summary) => {
                totals.acknowledged += summary.acknowledged;
                totals.disk_fills += summary.disk_fills;
                totals.failed_writes += summary.failed_writes;
            }
            Err(error) => failures.push((seed, error)),
        }
    }
    eprintln!(
        "full disks: {} seeds: {} fills, {} writes failed, {} acknowledged",
        seeds.len(),
        totals.disk_fills,
        totals.failed_writes,
        totals.acknowledged
    );
    if let Some((seed, error)) = failures.first() {
        panic!(
            "{} of {} seeds failed; first, seed {seed} (rerun with SLUICE_SIM_SEED={seed}):\n{error}",
            failures.len(),
            seeds.len()
        );
    }
    assert!(
        totals.failed_writes > 0,
        "no append failed for want of space"
    );
    assert!(totals.acknowledged > 0, "the workload acknowledged nothing");
}

/// Per step, the chance that the leader's disk fills.
const DISK_FULL_PER_MILLION: u64 = 5_000;
/// Seeds of `leaders_whose_disk_fills_lose_nothing` by default
/// (`SLUICE_SIM_SEEDS` sets the count for it too).
const DISK_FULL_SEEDS: usize = 400;

/// Logs that roll back on a full disk (and reuse the offsets) must be
/// caught.
#[test]
fn the_checker_catches_offsets_reused_after_a_full_disk() {
    assert_options_caught(
        "offsets reused after a full disk",
        Options {
            bug: Bug::RollBackOnFullDisk,
            disk_full_per_million: DISK_FULL_PER_MILLION,
            ..Options::default()
        },
    );
}

/// The fixed ISR task (see `an_unanswered_alter_partition_keeps_the_change_pending`)
/// under many lost AlterPartition answers and slow metadata.
#[test]
fn lost_alter_partition_answers_and_slow_metadata_lose_nothing() {
    let options = Options {
        answer_loss_per_million: 300_000,
        metadata_stall_per_million: 10_000,
        ..Options::default()
    };
    let seeds: Vec<u64> = seeds().into_iter().take(50).collect();
    let failures: Vec<(u64, String)> = run_all(&seeds, options)
        .into_iter()
        .filter_map(|(seed, result)| result.err().map(|error| (seed, error)))
        .collect();
    if let Some((seed, error)) = failures.first() {
        panic!(
            "{} of {} seeds failed; first, seed {seed}:\n{error}",
            failures.len(),
            seeds.len()
        );
    }
}

/// Reassignments every few seconds (moves, growth, shrinks, replaced
/// targets, cancellations) under the usual faults, with lost
/// AlterPartition answers and slow metadata: the leader must follow each
/// new replica list, removed brokers delete their copies, and no
/// acknowledged write is lost.
///
/// It found four production bugs, fixed since (`replication_sim/known_bugs.rs`
/// reproduces three on the production functions alone):
/// 1. seed 96: a replica removed and added back while the leader's view
///    skipped the removal is counted with its deleted copy's durable end
///    and joins the ISR empty (`LeaderState::apply_committed`);
/// 2. seed 144: a cancellation can empty a leaderless partition's ISR
///    (`reassignment::alter`);
/// 3. seed 1096: a current-state AlterPartition answer hides a new replica
///    list from the leader, and the reassignment never completes
///    (`isr_loop` with `LeaderState::apply_committed`);
/// 4. seed 1076: `isr_loop` drops a pending ISR change refused as "not the
///    leader" after an earlier attempt of it committed, and the deposed
///    leader acknowledges writes its successor's ISR lacks.
///
/// The fixes: `LeaderState::apply_committed` restarts the progress of
/// followers outside the ISR when the partition epoch jumps (a missed
/// change) and takes a view's replica list at the epoch it already has;
/// `reassignment::alter` never empties an ISR (so does the model's
/// `Controller::reassign`); `replication::propose_isr` keeps a change
/// refused as stale pending (so does the model's `Broker::on_alter_answer`).
#[test]
fn reassignments_under_faults_lose_nothing() {
    let options = Options {
        reassign_per_million: 5_000,
        answer_loss_per_million: 150_000,
        metadata_stall_per_million: 5_000,
        ..Options::default()
    };
    let seeds: Vec<u64> = if std::env::var_os("SLUICE_SIM_SEEDS").is_some() {
        seeds()
    } else {
        seeds().into_iter().take(REASSIGNMENT_SEEDS).collect()
    };
    let results = run_all(&seeds, options);
    let mut totals = Summary::default();
    let mut failures = Vec::new();
    for (seed, result) in results {
        match result {
            Ok(summary) => {
                totals.acknowledged += summary.acknowledged;
                totals.reassignments += summary.reassignments;
                totals.cancellations += summary.cancellations;
                totals.completions += summary.completions;
                totals.deletions += summary.deletions;
            }
            Err(error) => failures.push((seed, error)),
        }
    }
    eprintln!("reassignment simulation: {} seeds: {totals:?}", seeds.len());
    for (_, error) in &failures {
        eprintln!("{}", error.lines().next().unwrap_or_default());
    }
    if let Some((seed, error)) = failures.first() {
        panic!(
            "{} of {} seeds failed; first, seed {seed}:\n{error}",
            failures.len(),
            seeds.len()
        );
    }
    assert!(totals.completions > 0, "no reassignment completed");
}

/// Seeds of `reassignments_under_faults_lose_nothing` by default
/// (`SLUICE_SIM_SEEDS` sets the count for it too; `SLUICE_SIM_SEED` picks
/// one).
const REASSIGNMENT_SEEDS: usize = 400;

/// The negative controls: with a deliberately broken follower, the
/// checker must find a violation within the CI seed count.
fn assert_caught(bug: Bug) {
    assert_options_caught(
        &format!("{bug:?}"),
        Options {
            bug,
            ..Options::default()
        },
    );
}

/// The checker must find a violation with `options` within the CI seed
/// count.
fn assert_options_caught(what: &str, options: Options) {
    for seed in 0..SEEDS_DEFAULT {
        if let Err(error) = run_seed(seed, options) {
            eprintln!(
                "{what} caught at seed {seed}: {}",
                error.lines().next().unwrap_or_default()
            );
            return;
        }
    }
    panic!("the checker missed {what} in {SEEDS_DEFAULT} seeds");
}

/// A controller that completes a reassignment before its new replicas are
/// in sync (counting them in the ISR) must be caught.
#[test]
fn the_checker_catches_a_reassignment_completed_before_the_new_replicas_are_in_sync() {
    assert_options_caught(
        "completing a reassignment before the new replicas are in sync",
        Options {
            controller_bug: ControllerBug::CompleteBeforeInSync,
            ..Options::default()
        },
    );
}

#[test]
fn the_checker_catches_followers_that_answer_before_fsync() {
    assert_caught(Bug::AnswerBeforeFsync);
}

#[test]
fn the_checker_catches_truncation_to_the_high_watermark() {
    assert_caught(Bug::TruncateToHighWatermark);
}

/// Regression (seed 95 failed before the fix): an AlterPartition answer
/// that arrives after newer metadata must not move the leader's partition
/// epoch back, or every later AlterPartition is refused as stale and the
/// ISR never changes again. The model's own guard is off here, so
/// production's `LeaderState::apply_committed` alone must ignore it.
#[test]
fn a_stale_alter_partition_answer_does_not_roll_back_the_partition_epoch() {
    // With reassignments (seed 29 of these found bug 3 of
    // `replication_sim/known_bugs.rs` before its fix).
    let options = Options {
        guard_stale_answers: false,
        answer_delay_ms_max: 600,
        ..Options::default()
    };
    let seeds: Vec<u64> = (0..REGRESSION_SEEDS).collect();
    let failures: Vec<(u64, String)> = run_all(&seeds, options)
        .into_iter()
        .filter_map(|(seed, result)| result.err().map(|error| (seed, error)))
        .collect();
    if let Some((seed, error)) = failures.first() {
        panic!(
            "{} of {} seeds failed; first, seed {seed}:\n{error}",
            failures.len(),
            seeds.len()
        );
    }
}

/// Seeds of the regression test (its failing seed, 95, among them).
const REGRESSION_SEEDS: u64 = 120;

/// Negative control for the second bug the simulation found: an ISR task
/// that drops its pending change when the AlterPartition answer is lost
/// (production's first version) lets the high watermark pass a member the
/// controller counts in the ISR. The checker must catch it.
#[test]
fn the_checker_catches_dropping_an_unanswered_isr_change() {
    assert_options_caught(
        "dropping an unanswered ISR change",
        Options {
            timeout_clears_pending: true,
            answer_loss_per_million: 300_000,
            metadata_stall_per_million: 10_000,
            ..Options::default()
        },
    );
}
