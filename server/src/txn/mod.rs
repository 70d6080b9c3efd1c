//! Transactions (issue 12): the transaction coordinator on the leaders of
//! `__transaction_state`, and the hooks the data path calls into.
//! docs/internals/transactions.md describes the design.
//!
//! - `state.rs`: one transactional id's state machine and its records (pure).
//! - `coordinator.rs`: the per-shard table, persistence, loading, the
//!   requests' logic, completion and the timeout check.
//! - `markers.rs`: writing a transaction's markers to its partitions'
//!   leaders (this broker's shards directly, others by WriteTxnMarkers).
//! - `membership.rs`: KIP-890 on the data path: partition leaders and group
//!   coordinators verify (protocol v1) or add (protocol v2) a partition
//!   with the transaction coordinator before a transactional write.
//! - `rpc.rs`: one Kafka request to another broker (markers, adds).
//! - `hooks.rs`: the data path's calls into the coordinators.

pub mod coordinator;
pub mod hooks;
pub mod markers;
pub mod membership;
pub mod rpc;
pub mod state;

/// The internal topic holding the transaction coordinators' state (Kafka's
/// name).
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Partitions of `__transaction_state` (Kafka's
/// transaction.state.log.num.partitions default), fixed when the topic is
/// created.
pub const TRANSACTION_STATE_PARTITIONS: i32 = 50;

/// Kafka's internal topics: written only by their coordinators, never
/// created as user topics, never deleted, listed as internal.
pub fn is_internal_topic(name: &str) -> bool {
    name == crate::group::OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC
}
