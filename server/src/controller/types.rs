//! Newtypes for the controller's ids, epochs and offsets.
//!
//! On the wire and in the metadata log they are plain integers or UUIDs;
//! here they are distinct types, converted only through the named functions
//! below. `LeaderEpoch` is the engine's (`sluice_engine::LeaderEpoch`), so a
//! partition's leader epoch in the image is the same type as the one stamped
//! into its batches.

use std::fmt;

pub use sluice_engine::LeaderEpoch;
use uuid::Uuid;

/// A broker's (and, in combined mode, a controller voter's) node id, as
/// Kafka's `node.id`: 0 or more. Today's single-node broker is node 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BrokerId(pub i32);

/// Kafka's "no leader" (`-1`) is `Option::None` in this module; this is its
/// wire value, used only by encoders.
pub const NO_LEADER_WIRE: i32 = -1;

impl BrokerId {
    /// The raft-rs peer id of this node. raft-rs reserves 0 for "none", and
    /// Kafka node ids start at 0, so the Raft id is the node id plus one.
    pub fn raft_id(self) -> u64 {
        assert!(self.0 >= 0, "broker id {} is negative", self.0);
        u64::try_from(self.0).expect("non-negative i32 fits u64") + 1
    }

    /// The inverse of [`BrokerId::raft_id`].
    pub fn from_raft_id(raft_id: u64) -> BrokerId {
        assert!(raft_id > 0, "raft id 0 means no node");
        BrokerId(i32::try_from(raft_id - 1).expect("raft ids come from BrokerId::raft_id"))
    }
}

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Position of a committed entry in the metadata log: the Raft log index of
/// the entry that carried the record. Every record of one entry (an atomic
/// batch) shares its entry's offset; entries have strictly increasing
/// offsets. 0 is "nothing applied yet" (Raft indexes start at 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MetadataOffset(pub i64);

impl MetadataOffset {
    pub const NONE: MetadataOffset = MetadataOffset(0);

    pub fn from_raft_index(index: u64) -> MetadataOffset {
        MetadataOffset(i64::try_from(index).expect("raft index below 2^63"))
    }

    pub fn raft_index(self) -> u64 {
        u64::try_from(self.0).expect("metadata offsets are non-negative")
    }
}

impl fmt::Display for MetadataOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A broker's registration epoch: the metadata offset of its
/// RegisterBroker record (as Kafka). Heartbeats and ISR changes carry it, so
/// a request from a previous incarnation is recognised and refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BrokerEpoch(pub i64);

impl BrokerEpoch {
    pub fn from_offset(offset: MetadataOffset) -> BrokerEpoch {
        BrokerEpoch(offset.0)
    }
}

/// Bumped on every change of a partition (ISR, leader, replicas), so a
/// change proposed against a stale view is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionEpoch(pub i32);

impl PartitionEpoch {
    pub fn next(self) -> PartitionEpoch {
        PartitionEpoch(self.0.checked_add(1).expect("partition epoch overflow"))
    }
}

/// Next leader epoch (bumped on leader change or replica removal).
pub fn next_leader_epoch(epoch: LeaderEpoch) -> LeaderEpoch {
    LeaderEpoch(epoch.0.checked_add(1).expect("leader epoch overflow"))
}

/// A partition's index inside its topic (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionIndex(pub i32);

/// A topic's id (Kafka's TopicId): a random UUID fixed at creation, so a
/// topic deleted and created again under the same name is a different topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TopicId(pub Uuid);

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One process lifetime of a broker, random per start (Kafka's
/// IncarnationId): a re-registration with the same incarnation is a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IncarnationId(pub Uuid);

/// A broker's data directory (Kafka's directory id, KIP-858): a random
/// UUID written into the directory when it is first used
/// (`crate::datadir::directory_id`). A broker that registers with another
/// id than its previous registration's runs on another disk: whatever its
/// replicas held is gone, so it cannot keep a place in any ISR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DirectoryId(pub Uuid);

impl fmt::Display for DirectoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A producer id handed out by a broker (InitProducerId). The controller
/// hands brokers disjoint blocks of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProducerId(pub i64);

/// How many producer ids one ProducerIds record hands to a broker (Kafka's
/// block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn raft_ids_are_node_ids_plus_one() {
        assert_eq!(BrokerId(0).raft_id(), 1);
        assert_eq!(BrokerId::from_raft_id(3), BrokerId(2));
    }
}
