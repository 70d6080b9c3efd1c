//! Deterministic simulation of the metadata controller: three raft-rs
//! voters and a learner broker (the real `RaftNode`, `QuorumController` and
//! `MetadataImage`), a fake clock, a fake network (loss, delay, reordering,
//! duplication, partitions), crashes that lose unsynced writes, restarts,
//! and a workload of broker registrations, heartbeats and admin requests.
//! Invariants are checked after every 10 ms step (`controller_sim/checker.rs`).
//!
//! `SLUICE_CONTROLLER_SIM_SEED=n` runs one seed; `SLUICE_CONTROLLER_SIM_SEEDS=n`
//! sets how many (default 2000) and `SLUICE_CONTROLLER_SIM_FIRST_SEED=n`
//! where they start (default 0). A failing seed is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "controller_sim/checker.rs"]
mod checker;
#[path = "controller_sim/cluster.rs"]
mod cluster;
#[path = "controller_sim/network.rs"]
mod network;
#[path = "controller_sim/prng.rs"]
mod prng;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use cluster::{Options, Simulation, Summary};
use sluice_server::controller::storage::memory::SyncPolicy;

const SEEDS_DEFAULT: u64 = 2000;

fn run_seed(seed: u64, options: Options) -> Result<Summary, String> {
    match catch_unwind(AssertUnwindSafe(|| Simulation::new(seed, options)?.run())) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {message}"))
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SLUICE_CONTROLLER_SIM_SEED") {
        return vec![
            seed.parse()
                .expect("SLUICE_CONTROLLER_SIM_SEED is a number"),
        ];
    }
    let count = std::env::var("SLUICE_CONTROLLER_SIM_SEEDS")
        .map(|count| {
            count
                .parse()
                .expect("SLUICE_CONTROLLER_SIM_SEEDS is a number")
        })
        .unwrap_or(SEEDS_DEFAULT);
    let first: u64 = std::env::var("SLUICE_CONTROLLER_SIM_FIRST_SEED")
        .map(|first| {
            first
                .parse()
                .expect("SLUICE_CONTROLLER_SIM_FIRST_SEED is a number")
        })
        .unwrap_or(0);
    (first..first + count).collect()
}

#[test]
fn the_controller_keeps_its_invariants_under_faults() {
    let started = Instant::now();
    let seeds = seeds();
    // Two threads: the machine has two cores.
    let halves: Vec<Vec<u64>> = vec![
        seeds.iter().copied().step_by(2).collect(),
        seeds.iter().copied().skip(1).step_by(2).collect(),
    ];
    let results: Vec<Vec<(u64, Result<Summary, String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = halves
            .into_iter()
            .map(|half| {
                scope.spawn(move || {
                    half.into_iter()
                        .map(|seed| (seed, run_seed(seed, Options::default())))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    let mut totals = Summary::default();
    let mut failures = Vec::new();
    for (seed, result) in results.into_iter().flatten() {
        match result {
            Ok(summary) => {
                totals.committed += summary.committed;
                totals.acknowledged += summary.acknowledged;
                totals.crashes += summary.crashes;
                totals.wipes += summary.wipes;
                totals.catching_up_restarts += summary.catching_up_restarts;
                totals.snapshots_loaded += summary.snapshots_loaded;
                totals.messages_sent += summary.messages_sent;
                totals.messages_dropped += summary.messages_dropped;
                totals.topics += summary.topics;
                totals.partitions_altered += summary.partitions_altered;
            }
            Err(error) => failures.push((seed, error)),
        }
    }
    eprintln!(
        "controller sim: {} seeds in {:.1?}: {} committed entries, {} acknowledged, {} crashes \
         ({} wiping a voter's Raft log, {} of a voter part-way through catching up), {} \
         snapshots loaded, {} messages ({} lost), {} topics at the ends, {} partitions \
         altered",
        seeds.len(),
        started.elapsed(),
        totals.committed,
        totals.acknowledged,
        totals.crashes,
        totals.wipes,
        totals.catching_up_restarts,
        totals.snapshots_loaded,
        totals.messages_sent,
        totals.messages_dropped,
        totals.topics,
        totals.partitions_altered
    );
    for (seed, error) in &failures {
        eprintln!("FAILED seed {seed} (SLUICE_CONTROLLER_SIM_SEED={seed}): {error}");
    }
    assert!(failures.is_empty(), "{} seeds failed", failures.len());
}

#[test]
fn a_seed_replays_bit_for_bit() {
    let first = run_seed(7, Options::default()).unwrap();
    let second = run_seed(7, Options::default()).unwrap();
    assert_eq!(first.trace_hash, second.trace_hash);
    assert!(first.committed > 50, "the run did something: {first:?}");
    let other = run_seed(8, Options::default()).unwrap();
    assert_ne!(first.trace_hash, other.trace_hash);
}

/// The checker catches a store whose sync makes nothing durable: crashes
/// then lose acknowledged entries.
#[test]
fn a_store_that_forgets_its_syncs_is_caught() {
    let caught = (0..200).find_map(|seed| {
        let options = Options {
            sync_policy: SyncPolicy::Forget,
            ..Options::default()
        };
        run_seed(seed, options).err().map(|error| (seed, error))
    });
    let (seed, error) = caught.expect("no seed caught a store that loses synced data");
    eprintln!("a forgetful store is caught by seed {seed}: {error}");
}
