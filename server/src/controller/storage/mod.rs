//! The durable Raft log seam.
//!
//! [`RaftLogStore`] is what [`super::node::RaftNode`] needs from storage:
//! raft-rs's read-only `Storage` trait plus the writes a `Ready` asks for.
//! Writes are visible to reads at once but durable only after `sync`;
//! `compact` is durable when it returns. Two implementations:
//! - `memory::MemRaftStore`: for the simulation; keeps a live and a durable
//!   copy, and a crash keeps only the durable one.
//! - `file::FileRaftStore`: production; an append-only file of CRC-32C framed
//!   records, a hard-state file and a snapshot file replaced atomically.
//!
//! Both keep the same in-memory view, [`LogCore`]: the latest snapshot
//! (metadata + image bytes), then the entries after it, contiguous; and
//! the catching-up marker of a voter that started with an empty log
//! ([`RaftLogStore::mark_catching_up`]).

// raft-rs's protobuf structs are built by assigning fields to a default, as
// raft-rs itself does.
#![allow(clippy::field_reassign_with_default)]

pub mod file;
pub mod memory;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use thiserror::Error;

pub use file::FileRaftStore;
pub use memory::MemRaftStore;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("raft log corrupt: {0}")]
    Corrupt(String),
    #[error("snapshot at {given} is not after the current one at {current}")]
    SnapshotOutOfDate { given: u64, current: u64 },
    #[error("the storage failed earlier and is stopped")]
    Stopped,
}

/// Durable storage for one Raft node's log, hard state and snapshot.
pub trait RaftLogStore: raft::Storage {
    /// Appends entries; an entry at an index the log already holds replaces
    /// it and everything after it (a new leader's log wins). Not durable
    /// until `sync`.
    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError>;

    /// Records term, vote and commit. Not durable until `sync`.
    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StoreError>;

    /// Installs a snapshot sent by the leader: the log restarts after it.
    /// Not durable until `sync`.
    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// Makes every earlier write durable. An error is fatal: the node stops
    /// (fsync is never retried).
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Replaces the log up to `snapshot`'s index (which must be applied and
    /// synced) by the snapshot. Durable when it returns.
    fn compact(&mut self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// Sets the catching-up marker ([`LogCore::catching_up`]), or its
    /// target. Durable when it returns, with the hard state and conf state
    /// last synced (later writes stay unsynced). Set on an empty log, it
    /// precedes every entry: a crash never leaves entries in a log that
    /// started empty without the marker. A target set before the entries
    /// of the append that brought it precedes them likewise.
    fn mark_catching_up(&mut self, target: CatchUpTarget) -> Result<(), StoreError>;

    /// Clears the catching-up marker. Not durable until `sync`, which
    /// makes every entry and snapshot written before it durable first: a
    /// crash keeps the marker, or the log the voter caught up with.
    fn clear_catching_up(&mut self);

    /// The in-memory view (what reads see).
    fn core(&self) -> &LogCore;
}

/// The log as raft-rs reads it: the latest snapshot and the entries after.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogCore {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    pub snapshot: Snapshot,
    pub entries: Vec<Entry>,
    /// Set when a voter started on this store with an empty log (a first
    /// start, or a wiped disk) and has not caught up with the cluster
    /// since: it gives no vote to a candidate with a log until it has
    /// (`RaftNode::abstains_from`). Kept across restarts, so that a voter
    /// that restarts part-way through catching up does not vote with the
    /// part it holds, with the target it was catching up to.
    pub catching_up: Option<CatchUpTarget>,
}

/// What a voter catching up catches up to: the term and commit index of
/// the first append (or snapshot) a leader of the newest term seen sent
/// it; `None` before any.
pub type CatchUpTarget = Option<(u64, u64)>;

impl LogCore {
    /// A fresh log for a cluster of `voters` (raft ids).
    pub fn bootstrap(voters: &[u64]) -> LogCore {
        LogCore::bootstrap_with_learners(voters, &[])
    }

    /// A fresh log for `voters` and `learners` (brokers that follow the
    /// log without voting).
    pub fn bootstrap_with_learners(voters: &[u64], learners: &[u64]) -> LogCore {
        let mut core = LogCore::default();
        core.conf_state.voters = voters.to_vec();
        core.conf_state.learners = learners.to_vec();
        core.snapshot
            .mut_metadata()
            .set_conf_state(core.conf_state.clone());
        core
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        assert!(
            first.index >= self.first_index() && first.index <= self.last_index() + 1,
            "append at {} to a log of [{}, {}]",
            first.index,
            self.first_index(),
            self.last_index()
        );
        for pair in entries.windows(2) {
            assert_eq!(
                pair[0].index + 1,
                pair[1].index,
                "appended entries are contiguous"
            );
        }
        let keep = usize::try_from(first.index - self.first_index()).expect("log fits memory");
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let index = snapshot.get_metadata().index;
        if index <= self.snapshot_index() {
            return Err(StoreError::SnapshotOutOfDate {
                given: index,
                current: self.snapshot_index(),
            });
        }
        self.snapshot = snapshot.clone();
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(index);
        if self.hard_state.term < snapshot.get_metadata().term {
            // A new term: no vote cast in it yet.
            self.hard_state.term = snapshot.get_metadata().term;
            self.hard_state.vote = 0;
        }
        self.conf_state = snapshot.get_metadata().get_conf_state().clone();
        Ok(())
    }

    pub fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        assert!(
            index > self.snapshot_index() && index <= self.last_index(),
            "compact to {index} outside ({}, {}]",
            self.snapshot_index(),
            self.last_index()
        );
        assert!(
            index <= self.hard_state.commit,
            "only committed entries are compacted"
        );
        let drop = usize::try_from(index - self.snapshot_index()).expect("log fits memory");
        self.entries.drain(..drop);
        self.snapshot = snapshot;
    }

    // raft::Storage, shared by both stores.

    pub fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    pub fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first_index();
        let from = usize::try_from(low - offset).expect("log fits memory");
        let to = usize::try_from(high - offset).expect("log fits memory");
        let mut entries = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    pub fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.snapshot_index() {
            return Ok(self.snapshot.get_metadata().term);
        }
        if index < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let position = usize::try_from(index - self.first_index()).expect("log fits memory");
        Ok(self.entries[position].term)
    }

    pub fn snapshot(&self, request_index: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// `impl raft::Storage` for a store whose `core()` is its view.
macro_rules! storage_from_core {
    ($store:ty) => {
        impl raft::Storage for $store {
            fn initial_state(&self) -> raft::Result<raft::RaftState> {
                self.core().initial_state()
            }

            fn entries(
                &self,
                low: u64,
                high: u64,
                max_size: impl Into<Option<u64>>,
                context: raft::GetEntriesContext,
            ) -> raft::Result<Vec<raft::eraftpb::Entry>> {
                self.core().entries(low, high, max_size, context)
            }

            fn term(&self, index: u64) -> raft::Result<u64> {
                self.core().term(index)
            }

            fn first_index(&self) -> raft::Result<u64> {
                Ok(self.core().first_index())
            }

            fn last_index(&self) -> raft::Result<u64> {
                Ok(self.core().last_index())
            }

            fn snapshot(
                &self,
                request_index: u64,
                _to: u64,
            ) -> raft::Result<raft::eraftpb::Snapshot> {
                self.core().snapshot(request_index)
            }
        }
    };
}
pub(crate) use storage_from_core;
