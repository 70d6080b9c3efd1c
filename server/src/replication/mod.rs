//! Data replication between brokers (issue 10): a partition's leader
//! pushes its new batches to its followers, which store them
//! byte-identical, fsync, and answer with their durable log end; the
//! leader's high watermark is the smallest durable end over the ISR, and
//! the ISR follows the followers' progress through the controller.
//! docs/internals/replication.md explains the protocol and why no
//! acknowledged write is lost.
//!
//! | module | owns |
//! |---|---|
//! | `messages` | the peer protocol's replication messages (sans-I/O codec) |
//! | `progress` | the decisions: sync by leader epoch (KIP-101/279), follower progress, high watermark, ISR wishes (sans-I/O) |
//! | `link` | the leader's connections, one per (shard, follower broker) |
//! | `leader` | the leader's pusher and ISR tasks |
//! | `follower` | the replication listener and the follower's apply |

pub mod follower;
pub mod leader;
pub mod link;
pub mod messages;
pub mod progress;

use std::rc::Rc;

use sluice_engine::LeaderEpoch;

use crate::shard::{PartitionReplica, Shard};

/// An ISR change the controller committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedIsr {
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
}

/// Why an ISR change was not made.
#[derive(Clone, Debug, thiserror::Error)]
pub enum IsrChangeError {
    /// The controller refused it: nothing changed.
    #[error("refused by the controller: {0}")]
    Refused(String),
    /// No answer (timeout, no active controller, stopping): it may or may
    /// not have committed.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// Ask the controller to make `wanted` the ISR (Kafka's AlterPartition),
/// as leader under `epoch` of the partition at `partition_epoch`.
pub async fn propose_isr(
    shard: &Rc<Shard>,
    replica: &PartitionReplica,
    epoch: LeaderEpoch,
    partition_epoch: i32,
    wanted: Vec<i32>,
) -> Result<CommittedIsr, IsrChangeError> {
    use crate::controller::types::{BrokerId, PartitionEpoch, PartitionIndex, TopicId};
    let reply = shard
        .metadata
        .controller()
        .alter_partition(
            TopicId(replica.topic_id),
            PartitionIndex(replica.topic_partition.partition),
            epoch,
            PartitionEpoch(partition_epoch),
            wanted.into_iter().map(BrokerId).collect(),
        )
        .await
        .map_err(|error| {
            use crate::controller::rpc::{ErrorKind, RequestError};
            match error {
                // Refused as stale (another leader, leader epoch or
                // partition epoch): an earlier attempt of this very change
                // whose answer was lost may have committed before the state
                // moved on, so the outcome is unknown and the change stays
                // pending until a view settles it (as Kafka keeps it).
                RequestError::Rejected {
                    kind:
                        ErrorKind::NotLeaderOrFollower
                        | ErrorKind::FencedLeaderEpoch
                        | ErrorKind::InvalidUpdateVersion,
                    ..
                } => IsrChangeError::Unknown(format!("refused as stale: {error}")),
                RequestError::Rejected { .. } => IsrChangeError::Refused(error.to_string()),
                other => IsrChangeError::Unknown(other.to_string()),
            }
        })?;
    Ok(CommittedIsr {
        isr: reply.isr.into_iter().map(|broker| broker.0).collect(),
        partition_epoch: reply.partition_epoch.0,
    })
}
