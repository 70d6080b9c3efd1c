//! The metadata controller: a Raft-replicated log of typed metadata
//! records, the in-memory image they build, and the logic that turns broker
//! and admin requests into records.
//!
//! Everything here is sans-I/O except `storage::file`: time arrives as a
//! `now_ms` argument, messages and ticks are inputs, and the outputs are
//! values (messages to send, entries to persist, records to apply). The
//! production driver (`service`: a thread per process) and the seeded
//! simulation (`server/tests/controller_sim.rs`) drive the same code.
//! Details: docs/internals/controller.md; the Raft choice:
//! docs/decisions/0006-controller-raft.md.
//!
//! | module | owns |
//! |---|---|
//! | `types` | newtypes: `BrokerId`, `BrokerEpoch`, `PartitionEpoch`, `TopicId`, `MetadataOffset`... |
//! | `codec` | little-endian writer and bounds-checked reader shared by records and snapshots |
//! | `records` | `MetadataRecord`: typed, versioned records and their stable encoding |
//! | `image` | `MetadataImage`: the state the committed records build; apply, snapshot |
//! | `placement` | replica placement for new topics and partitions |
//! | `heartbeats` | broker sessions (soft state, never logged) |
//! | `quorum_controller` | `QuorumController`: requests -> records to propose |
//! | `reassignment` | partition reassignment (KIP-455): start, replace, cancel, complete |
//! | `node` | `RaftNode`: raft-rs `RawNode` driven by inputs, producing outputs |
//! | `storage` | the durable Raft log seam: in-memory (simulation) and file-backed |
//! | `logger` | raft-rs's slog output forwarded to `tracing` |
//! | `rpc` | the controller's RPCs (broker requests, metadata fetch) and their encodings |
//! | `service` | the production driver: the control-plane thread, peer connections, `ControllerHandle` |

pub mod codec;
pub mod heartbeats;
pub mod image;
pub mod logger;
pub mod node;
pub mod placement;
pub mod quorum_controller;
pub mod reassignment;
pub mod records;
pub mod rpc;
pub mod service;
pub mod storage;
pub mod types;

pub use image::{ApplyError, MetadataImage};
pub use node::RaftNode;
pub use quorum_controller::QuorumController;
pub use records::MetadataRecord;
pub use types::{BrokerEpoch, BrokerId, MetadataOffset, PartitionEpoch, PartitionIndex, TopicId};
