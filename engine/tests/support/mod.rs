//! Shared helpers for the engine's crate tests: a minimal executor for the
//! simulated disk (whose futures complete when polled) and batch helpers.
#![allow(dead_code, clippy::unwrap_used)]

pub mod crash_model;

use std::future::Future;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use sluice_engine::batch::{self, BatchBuilder};
use sluice_engine::{Offset, ReadLimits, TimestampMs};

pub use sluice_engine::testing::block_on;

/// Run a seeded simulation over seeds: `SLUICE_SIM_SEED=S` runs only
/// seed S; else `SLUICE_SIM_SEEDS` seeds (default `default_count`) from
/// `SLUICE_SIM_FIRST_SEED` (default `default_first`). A failing seed panics
/// with its number and how to rerun it.
pub fn run_seeds(default_count: u64, default_first: u64, run_seed: impl Fn(u64)) {
    let variable = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
    };
    let seeds: Vec<u64> = match variable("SLUICE_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let count = variable("SLUICE_SIM_SEEDS").unwrap_or(default_count);
            let first = variable("SLUICE_SIM_FIRST_SEED").unwrap_or(default_first);
            (first..first + count).collect()
        }
    };
    let total = seeds.len();
    for seed in seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            panic!("seed {seed} failed: {message}\nrerun with SLUICE_SIM_SEED={seed}");
        }
    }
    eprintln!("{total} seeds passed");
}

/// The tail-cache budget of a seed's thread (tail_cache.rs):
/// `SLUICE_SIM_TAIL_CACHE_BYTES` if set, else none at all, 16 KiB or the
/// default in turn, so that retained chunks are given back at every flush,
/// now and then, or never.
pub fn set_tail_cache_budget(seed: u64) {
    let budget = std::env::var("SLUICE_SIM_TAIL_CACHE_BYTES")
        .ok()
        .and_then(|value| value.parse().ok())
        .or([Some(0), Some(16 << 10), None][(seed / 2 % 3) as usize]);
    sluice_engine::tail_cache::set_thread_budget_bytes(budget);
}

/// How a simulated crash treats unsynced state: torn half the time, else
/// all lost or all kept.
pub fn random_crash_mode(rng: &mut Rng) -> sluice_engine::io::sim::CrashMode {
    use sluice_engine::io::sim::CrashMode;
    rng.pick(&[
        CrashMode::Torn,
        CrashMode::Torn,
        CrashMode::LoseUnsynced,
        CrashMode::KeepUnsynced,
    ])
}

/// One random disk fault: a sync failing within `sync_after_max` calls, a
/// write failing within 6, a disk filling up within 64 KiB, or space back.
pub fn random_fault(rng: &mut Rng, io: &sluice_engine::io::sim::SimIo, sync_after_max: u64) {
    match rng.below(4) {
        0 => io.fail_sync_after(Some(rng.below(sync_after_max))),
        1 => io.fail_write_after(Some(rng.below(6))),
        2 => io.set_space_limit(Some(io.space_used_bytes() + rng.below(64 << 10))),
        _ => io.set_space_limit(None),
    }
}

/// Poll once: `Some` if ready.
pub fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    let mut context = Context::from_waker(Waker::noop());
    sluice_engine::io::sim::next_poll_pass();
    match std::pin::Pin::new(future).poll(&mut context) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// A batch of `count` records whose values are derived from `tag`, so that
/// every batch in a test is distinguishable.
pub fn tagged_batch(tag: u64, count: usize, value_size: usize, timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new();
    for index in 0..count {
        let value: Vec<u8> = (0..value_size)
            .map(|position| {
                (tag as usize)
                    .wrapping_mul(31)
                    .wrapping_add(index * 7 + position) as u8
            })
            .collect();
        let key = format!("key-{tag}-{index}");
        builder.record(
            Some(key.as_bytes()),
            Some(&value),
            TimestampMs(timestamp + index as i64),
        );
    }
    builder.build()
}

/// The batch as the log stores it: base offset and leader epoch patched.
pub fn as_stored(batch_bytes: &Bytes, base: Offset, epoch: i32) -> Vec<u8> {
    let mut stored = batch_bytes.to_vec();
    batch::patch_base_offset(&mut stored, base);
    batch::patch_leader_epoch(&mut stored, sluice_engine::LeaderEpoch(epoch));
    stored
}

pub fn all(max_offset: Offset) -> ReadLimits {
    ReadLimits {
        max_bytes: usize::MAX,
        min_one_batch: true,
        max_offset,
    }
}

/// Split read results into individual batches (copies: tests only).
pub fn batches_of(records: &[Bytes]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for run in records {
        for range in batch::split_batches(run).unwrap() {
            out.push(run[range].to_vec());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Real-disk helpers (io_uring + O_DIRECT), for the tests that run the engine
// on the real I/O path instead of the simulated disk.

/// A fresh directory on a real filesystem, unique per test and process.
/// O_DIRECT fails on tmpfs, so it lives under `SLUICE_TEST_DIR` when set,
/// else under cargo's per-crate scratch directory in the target dir (on the
/// same disk as the build). Removed on drop unless the test is failing, so
/// that a failure leaves its files for inspection (the path is printed).
pub struct RealDir {
    pub path: std::path::PathBuf,
}

impl RealDir {
    pub fn new(name: &str) -> RealDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("SLUICE_TEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        let path = base.join(format!(
            "sluice-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        RealDir { path }
    }

    /// The partition directory inside (created by `Log::open`).
    pub fn log_dir(&self) -> std::path::PathBuf {
        self.path.join("topic-0")
    }
}

impl Drop for RealDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Run `future` on a fresh compio runtime (one "process lifetime" of a log:
/// tasks still running when it returns, such as a committer, are dropped
/// with the runtime) and check that the driver really is io_uring.
pub fn run_on_uring<F: Future>(future: F) -> F::Output {
    compio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            assert!(
                sluice_engine::io::uring::UringIo::driver_is_io_uring(),
                "compio is not driven by io_uring"
            );
            future.await
        })
}

/// Spawn `committer.run()` on the current compio runtime. The task stops
/// when the returned handle is dropped (or the runtime ends).
pub fn spawn_committer(
    committer: &sluice_engine::Committer<sluice_engine::io::uring::UringIo>,
) -> compio::runtime::JoinHandle<()> {
    let committer = committer.clone();
    compio::runtime::spawn(async move { committer.run().await })
}

/// splitmix64: small, seedable, good enough for test schedules.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }

    /// Uniform-ish in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    pub fn between(&mut self, low: u64, high_inclusive: u64) -> u64 {
        low + self.below(high_inclusive - low + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
