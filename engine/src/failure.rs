//! What the process does when a log stops after an I/O error.
//!
//! A log that met an error it cannot retry (a failed fdatasync, a write or
//! a file creation failing with anything but ENOSPC, a truncation stopped
//! half-way) is poisoned: it refuses every operation until it is opened
//! again, because what is on disk is known only to recovery. The engine
//! reports each newly poisoned log here. A library user decides what that
//! means: the `sluice` server halts (as Kafka halts a broker whose only log
//! directory failed, and Redpanda stops on a storage error), so that its
//! partitions' leadership moves to healthy replicas and a restart runs
//! recovery; a test or another embedder that sets nothing keeps the
//! poisoned log (every append then fails with `AppendError::Poisoned`).

use std::path::Path;
use std::sync::OnceLock;

/// Called with the log's directory and the reason it stopped.
pub type StorageFailureHook = fn(&Path, &str);

static HOOK: OnceLock<StorageFailureHook> = OnceLock::new();

/// Set what a storage failure does, once per process; false if it was
/// set before.
pub fn on_storage_failure(hook: StorageFailureHook) -> bool {
    HOOK.set(hook).is_ok()
}

/// Report a storage failure of the log (or store) in `dir`.
pub fn report(dir: &Path, reason: &str) {
    if let Some(hook) = HOOK.get() {
        hook(dir, reason);
    }
}
