//! InitProducerId (v0..=5): producer ids for idempotent producers.
//!
//! Without a transactional id Kafka always hands out a fresh producer id
//! with epoch 0, whatever producer id and epoch the request carries
//! (KIP-360 fields, v3+): a non-transactional id has no owner the broker
//! could check, so bumping the epoch of a client-named id would let one
//! client fence another. Sluice does the same. Idempotent clients bump
//! their epoch locally instead (librdkafka, Java), which the partitions
//! accept (shard/producer_state.rs).
//!
//! Ids are unique across the cluster and across restarts: they come from
//! blocks the controller hands out (KIP-730's AllocateProducerIds; each
//! block is a committed metadata record, so no two brokers, and no restart,
//! get the same ids). The current block is process-wide behind a mutex
//! (keyed by node id, so brokers started in one process for tests stay
//! apart); when it runs out, the next request fetches a new one from the
//! controller. While the controller cannot be reached the answer is
//! COORDINATOR_LOAD_IN_PROGRESS, as Kafka's broker answers then: both
//! librdkafka and the Java client retry it.
//!
//! With a transactional id the request goes to the id's transaction
//! coordinator (txn/coordinator.rs): a new id gets a producer id from the
//! same blocks and epoch 0; a known one gets its epoch bumped (fencing the
//! producer that had it), after its ongoing transaction, if any, is aborted
//! (CONCURRENT_TRANSACTIONS meanwhile: the client retries). A
//! transaction timeout above transaction.max.timeout.ms is
//! INVALID_TRANSACTION_TIMEOUT.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock, PoisonError};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ResponseKind};

use crate::handlers::Reply;
use crate::shard::Shard;

/// Blocks fetched from the controller before giving up on this request.
const BLOCK_FETCHES_MAX: usize = 3;

pub async fn handle(shard: &Rc<Shard>, version: i16, request: &InitProducerIdRequest) -> Reply {
    let refused = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
    };
    let response = if let Some(transactional_id) = &request.transactional_id {
        let transactional_id = transactional_id.0.to_string();
        let timeout_ms = request.transaction_timeout_ms;
        // KIP-360 (v3+): the producer id and epoch the client holds, when
        // it re-initializes to bump its epoch.
        let expected = (version >= 3 && request.producer_id.0 >= 0)
            .then_some((request.producer_id.0, request.producer_epoch));
        let answer = crate::txn::coordinator::on_coordinator(
            shard,
            &transactional_id.clone(),
            move |owner, partition| async move {
                crate::txn::coordinator::init_producer_id(
                    &owner,
                    partition,
                    transactional_id,
                    timeout_ms,
                    expected,
                )
                .await
                .map_err(|error| error.code(version, 4))
            },
        )
        .await
        .and_then(|answer| answer);
        match answer {
            Ok((producer_id, producer_epoch)) => InitProducerIdResponse::default()
                .with_producer_id(producer_id.into())
                .with_producer_epoch(producer_epoch),
            Err(error) => refused(error),
        }
    } else {
        match allocate_producer_id(shard).await {
            Some(producer_id) => InitProducerIdResponse::default()
                .with_producer_id(producer_id.into())
                .with_producer_epoch(0),
            // Retriable for both librdkafka and the Java client.
            None => refused(ResponseError::CoordinatorLoadInProgress),
        }
    };
    Reply::Body(Box::new(ResponseKind::InitProducerId(response)))
}

/// The ids not handed out yet of the blocks this broker holds, in order:
/// each range is `next..end`.
#[derive(Debug, Default)]
struct ProducerIds {
    ranges: VecDeque<(i64, i64)>,
}

impl ProducerIds {
    /// The next unused id, if any is left.
    fn take(&mut self) -> Option<i64> {
        while let Some((next, end)) = self.ranges.front_mut() {
            if *next < *end {
                let id = *next;
                *next += 1;
                return Some(id);
            }
            self.ranges.pop_front();
        }
        None
    }

    /// Add a block the controller handed out (`count` ids from `first`).
    fn add(&mut self, first: i64, count: i64) {
        assert!(
            first >= 0 && count > 0,
            "bad producer id block {first}+{count}"
        );
        self.ranges.push_back((first, first.saturating_add(count)));
    }
}

static BLOCKS: OnceLock<Mutex<HashMap<i32, ProducerIds>>> = OnceLock::new();

fn with_ids<R>(node_id: i32, work: impl FnOnce(&mut ProducerIds) -> R) -> R {
    let blocks = BLOCKS.get_or_init(Mutex::default);
    // A panic while holding the lock leaves the ranges consistent.
    let mut blocks = blocks.lock().unwrap_or_else(PoisonError::into_inner);
    work(blocks.entry(node_id).or_default())
}

/// A producer id never handed out before in the cluster; None when the
/// controller hands out no block.
pub async fn allocate_producer_id(shard: &Shard) -> Option<i64> {
    let node_id = shard.config.node_id;
    for _ in 0..BLOCK_FETCHES_MAX {
        if let Some(id) = with_ids(node_id, ProducerIds::take) {
            return Some(id);
        }
        // Not holding the lock: shards needing ids at once may each fetch a
        // block; the extra ones are used later.
        match shard.metadata.controller().allocate_producer_ids().await {
            Ok(block) => with_ids(node_id, |ids| ids.add(block.first, block.count)),
            Err(error) => {
                tracing::warn!(%error, "the controller handed out no producer id block");
                return None;
            }
        }
    }
    with_ids(node_id, ProducerIds::take)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_blocks_in_order_and_run_out() {
        let mut ids = ProducerIds::default();
        assert_eq!(ids.take(), None);
        ids.add(1000, 2);
        ids.add(5000, 1);
        let taken: Vec<Option<i64>> = (0..4).map(|_| ids.take()).collect();
        assert_eq!(taken, vec![Some(1000), Some(1001), Some(5000), None]);
        ids.add(6000, 1000);
        assert_eq!(ids.take(), Some(6000));
    }
}
