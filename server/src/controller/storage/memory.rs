//! In-memory Raft log store for the simulation.
//!
//! It keeps two copies of the log: `live` (every write, what reads see) and
//! `durable` (the state at the last `sync`, or `compact`). [`MemRaftStore::crash`]
//! keeps only the durable copy, as a power loss keeps only what was synced.
//! `SyncPolicy::Forget` is a deliberately broken store (sync does nothing)
//! that lets the simulation prove it catches lost persistence.

use raft::eraftpb::{Entry, HardState, Snapshot};

use super::{CatchUpTarget, LogCore, RaftLogStore, StoreError, storage_from_core};

/// What `sync` does: the honest store, or a broken one for negative tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    Honest,
    /// sync() returns Ok but makes nothing durable (a lying disk).
    Forget,
}

#[derive(Clone, Debug)]
pub struct MemRaftStore {
    live: LogCore,
    durable: LogCore,
    policy: SyncPolicy,
    /// Counts syncs, for tests and traces.
    sync_count: u64,
}

impl MemRaftStore {
    pub fn bootstrap(voters: &[u64]) -> MemRaftStore {
        MemRaftStore::bootstrap_with_learners(voters, &[])
    }

    pub fn bootstrap_with_learners(voters: &[u64], learners: &[u64]) -> MemRaftStore {
        let core = LogCore::bootstrap_with_learners(voters, learners);
        MemRaftStore {
            live: core.clone(),
            durable: core,
            policy: SyncPolicy::Honest,
            sync_count: 0,
        }
    }

    pub fn with_policy(mut self, policy: SyncPolicy) -> MemRaftStore {
        self.policy = policy;
        self
    }

    /// The store as a restart after a power loss finds it: unsynced writes
    /// are gone.
    pub fn crash(self) -> MemRaftStore {
        MemRaftStore {
            live: self.durable.clone(),
            durable: self.durable,
            policy: self.policy,
            sync_count: self.sync_count,
        }
    }

    /// Whether every write so far is durable.
    pub fn is_synced(&self) -> bool {
        self.live == self.durable
    }

    pub fn durable(&self) -> &LogCore {
        &self.durable
    }

    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }
}

impl RaftLogStore for MemRaftStore {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        self.live.append(entries);
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), StoreError> {
        self.live.hard_state = hard_state.clone();
        Ok(())
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.live.apply_snapshot(snapshot)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.sync_count += 1;
        if self.policy == SyncPolicy::Honest {
            self.durable = self.live.clone();
        }
        Ok(())
    }

    fn compact(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.live.compact(snapshot.clone());
        if self.policy == SyncPolicy::Honest {
            // The durable copy was synced through the snapshot's index
            // (only synced, applied entries are compacted).
            assert!(self.durable.last_index() >= snapshot.get_metadata().index);
            self.durable.compact(snapshot);
        }
        Ok(())
    }

    fn mark_catching_up(&mut self, target: CatchUpTarget) -> Result<(), StoreError> {
        self.live.catching_up = Some(target);
        if self.policy == SyncPolicy::Honest {
            // Durable on return, alone (as the file store's state file).
            self.durable.catching_up = Some(target);
        }
        Ok(())
    }

    fn clear_catching_up(&mut self) {
        self.live.catching_up = None;
    }

    fn core(&self) -> &LogCore {
        &self.live
    }
}

storage_from_core!(MemRaftStore);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut entry = Entry::default();
        entry.index = index;
        entry.term = term;
        entry.data = vec![index as u8].into();
        entry
    }

    #[test]
    fn a_crash_loses_what_was_not_synced() {
        let mut store = MemRaftStore::bootstrap(&[1, 2, 3]);
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        store.sync().unwrap();
        store.append(&[entry(3, 1)]).unwrap();
        assert!(!store.is_synced());
        let store = store.crash();
        assert_eq!(store.last_index().unwrap(), 2);
        assert_eq!(
            store.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_conflicting_append_replaces_the_suffix() {
        let mut store = MemRaftStore::bootstrap(&[1]);
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        store.append(&[entry(2, 2)]).unwrap();
        assert_eq!(store.last_index().unwrap(), 2);
        assert_eq!(store.term(2).unwrap(), 2);
    }

    #[test]
    fn the_catching_up_marker_is_durable_when_set_and_cleared_at_the_next_sync() {
        let mut store = MemRaftStore::bootstrap(&[1, 2, 3]);
        store.mark_catching_up(None).unwrap();
        let mut store = store.crash();
        assert_eq!(store.core().catching_up, Some(None), "set durably");
        // A target, durable alone: the unsynced entry and hard state stay
        // unsynced.
        store.append(&[entry(1, 1)]).unwrap();
        let mut hard_state = HardState::default();
        hard_state.term = 1;
        store.set_hard_state(&hard_state).unwrap();
        store.mark_catching_up(Some((1, 2))).unwrap();
        store.clear_catching_up();
        let mut store = store.crash();
        assert_eq!(
            store.core().catching_up,
            Some(Some((1, 2))),
            "a crash before the clear's sync keeps the marker"
        );
        assert_eq!(store.last_index().unwrap(), 0);
        assert_eq!(store.core().hard_state, HardState::default());
        store.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        store.clear_catching_up();
        store.sync().unwrap();
        let store = store.crash();
        assert_eq!(store.core().catching_up, None, "cleared with the sync");
        assert_eq!(store.last_index().unwrap(), 2);
    }

    #[test]
    fn compaction_keeps_the_tail_and_the_snapshot() {
        let mut store = MemRaftStore::bootstrap(&[1]);
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 2)])
            .unwrap();
        let mut hard_state = HardState::default();
        hard_state.commit = 3;
        store.set_hard_state(&hard_state).unwrap();
        store.sync().unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 2;
        snapshot.mut_metadata().term = 1;
        store.compact(snapshot).unwrap();
        assert_eq!(store.first_index().unwrap(), 3);
        assert_eq!(store.term(2).unwrap(), 1);
        assert!(
            store
                .entries(2, 4, None, raft::GetEntriesContext::empty(false))
                .is_err()
        );
        let store = store.crash();
        assert_eq!(store.first_index().unwrap(), 3);
        assert_eq!(store.last_index().unwrap(), 3);
    }
}
