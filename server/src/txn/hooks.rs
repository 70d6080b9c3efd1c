//! Calls from the broker's data path into the transaction coordinator.
//! Each is cheap when transactions are not in use.

use std::rc::Rc;

use crate::shard::{PartitionReplica, Shard};

/// A local replica of `__transaction_state` started or stopped leading
/// (called on its shard before the view that says so is published, and
/// once at open for a replica that opens as leader): load or unload the
/// transactional ids of that partition.
pub fn on_leadership_change(shard: &Rc<Shard>, replica: &Rc<PartitionReplica>, leading: bool) {
    if leading {
        crate::txn::coordinator::load(shard, replica);
    } else {
        crate::txn::coordinator::unload(replica.topic_partition.partition);
    }
}

/// A transaction marker (commit when `commit`) was written to a partition
/// of `__consumer_offsets` at `offset`: the group coordinator makes the
/// producer's pending transactional offset commits visible, or drops them.
pub fn after_offsets_marker(
    shard: &Rc<Shard>,
    partition: i32,
    producer_id: i64,
    commit: bool,
    offset: i64,
) {
    crate::group::apply_txn_marker(shard, partition, producer_id, commit, offset);
}
