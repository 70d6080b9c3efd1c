//! Writing a transaction's markers (commit or abort control batches) to
//! every partition of the transaction, from its coordinator.
//!
//! A partition this broker leads gets its marker through
//! `shard::txn_state::write_txn_marker` on the owning shard; the partitions
//! of another leader get one WriteTxnMarkers request (API 27, v1) on a
//! connection to that broker's client listener, as Kafka's coordinator
//! sends them. A partition whose marker fails is retried (with the view
//! then current: its leader may have moved) until it is written, its topic
//! or partition is gone (Kafka drops those too; gone means missing from
//! this broker's view for 30 s, since a view still catching up after a
//! restart does not list it yet), or this broker stops
//! coordinating the transaction (or is told it was fenced by a newer
//! coordinator).
//!
//! Partitions are named, not identified by topic id, as in Kafka's
//! transaction log: a topic deleted and created again under its name
//! before its marker is written gets the marker. That is harmless (a
//! control record for a producer with nothing open there, skipped by
//! consumers), while the other choice is not: a transactional batch the
//! producer sent after the re-creation lands in the new topic, and
//! skipping the marker there would leave that transaction open for good,
//! holding back every read_committed consumer of the partition.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::StrBytes;

use crate::shard::{Shard, ShardId, TopicPartition};
use crate::txn::rpc;

/// The WriteTxnMarkers version sent (the only one kafka-protocol decodes).
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// First pause between rounds; doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(50);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);
/// How long a partition of the transaction may be missing from the view
/// before its marker is given up (the topic was deleted) rather than waited
/// for (the view is behind).
const MISSING_PARTITION_GRACE: Duration = Duration::from_secs(30);

/// Write the markers of `(producer_id, producer_epoch)` (commit when
/// `commit`) to `partitions`. True once every partition has its marker
/// (or is gone); false as soon as `still_coordinating` says no or a
/// partition answers TRANSACTION_COORDINATOR_FENCED.
pub async fn write_markers(
    shard: &Rc<Shard>,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    partitions: Vec<(String, i32)>,
    still_coordinating: &dyn Fn() -> bool,
) -> bool {
    let mut remaining: BTreeSet<(String, i32)> = partitions.into_iter().collect();
    let mut missing_since: BTreeMap<(String, i32), std::time::Instant> = BTreeMap::new();
    let mut pause = RETRY_PAUSE_MIN;
    loop {
        if remaining.is_empty() {
            return true;
        }
        if !still_coordinating() || shard.partitions.is_closing() {
            return false;
        }
        let view = shard.metadata.snapshot();
        // Per leader: the partitions it should write, with the local shard.
        let mut by_leader: BTreeMap<i32, Vec<(String, i32, Option<usize>)>> = BTreeMap::new();
        let now = std::time::Instant::now();
        remaining.retain(|(topic, partition)| {
            let Some(state) = view
                .topics
                .get(topic)
                .and_then(|found| found.partitions.get(usize::try_from(*partition).ok()?))
            else {
                // Not in this broker's view: deleted, or not known yet (a
                // coordinator resuming after a restart may load before its
                // view has caught up). Dropped only once it stays missing.
                let since = *missing_since
                    .entry((topic.clone(), *partition))
                    .or_insert(now);
                if now.duration_since(since) < MISSING_PARTITION_GRACE {
                    return true;
                }
                tracing::info!(%topic, partition, "no marker for a partition that no longer exists");
                return false;
            };
            missing_since.remove(&(topic.clone(), *partition));
            if let Some(leader) = state.leader {
                by_leader.entry(leader).or_default().push((
                    topic.clone(),
                    *partition,
                    state.local_shard,
                ));
            }
            true
        });
        let mut written = Vec::new();
        let mut fenced = false;
        for (leader, targets) in by_leader {
            let outcomes = if leader == view.node_id {
                write_local(
                    shard,
                    producer_id,
                    producer_epoch,
                    coordinator_epoch,
                    commit,
                    &targets,
                )
                .await
            } else {
                let Some(broker) = view.brokers.get(&leader).filter(|broker| broker.is_live())
                else {
                    continue;
                };
                let address = rpc::broker_address(shard, &view, broker);
                let names: Vec<(String, i32)> = targets
                    .iter()
                    .map(|(topic, partition, _)| (topic.clone(), *partition))
                    .collect();
                write_remote(
                    address,
                    producer_id,
                    producer_epoch,
                    coordinator_epoch,
                    commit,
                    &names,
                )
                .await
            };
            for ((topic, partition), outcome) in outcomes {
                match outcome {
                    Ok(()) => written.push((topic, partition)),
                    // The partition has seen a newer epoch of the producer:
                    // this marker is stale (Kafka gives up on it too).
                    Err(ResponseError::InvalidProducerEpoch) => {
                        tracing::warn!(%topic, partition, producer_id, producer_epoch, "a transaction marker was refused as stale");
                        written.push((topic, partition));
                    }
                    // A newer coordinator has written a marker there:
                    // this one is deposed (Kafka abandons the completion).
                    Err(ResponseError::TransactionCoordinatorFenced) => {
                        tracing::warn!(%topic, partition, producer_id, coordinator_epoch, "a newer transaction coordinator fenced this one's marker");
                        fenced = true;
                    }
                    Err(error) => {
                        tracing::debug!(%topic, partition, ?error, "transaction marker not written yet; retrying");
                    }
                }
            }
        }
        if fenced {
            return false;
        }
        for done in written {
            remaining.remove(&done);
        }
        if remaining.is_empty() {
            return true;
        }
        compio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_PAUSE_MAX);
    }
}

type Outcome = ((String, i32), Result<(), ResponseError>);

/// Markers for partitions this broker leads, on their owning shards.
async fn write_local(
    shard: &Rc<Shard>,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    targets: &[(String, i32, Option<usize>)],
) -> Vec<Outcome> {
    let writes = targets.iter().map(|(topic, partition, local_shard)| {
        let topic_partition = TopicPartition::new(topic, *partition);
        async move {
            let Some(owner) = local_shard else {
                return (
                    (topic.clone(), *partition),
                    Err(ResponseError::NotLeaderOrFollower),
                );
            };
            let outcome = shard
                .shards
                .call(ShardId(*owner), move |owner| async move {
                    crate::shard::txn_state::write_txn_marker(
                        &owner,
                        &topic_partition,
                        producer_id,
                        producer_epoch,
                        coordinator_epoch,
                        commit,
                    )
                    .await
                    .map(|_| ())
                })
                .await
                .unwrap_or(Err(ResponseError::NotLeaderOrFollower));
            ((topic.clone(), *partition), outcome)
        }
    });
    join_all(writes).await
}

/// Markers for the partitions another broker leads: one WriteTxnMarkers.
async fn write_remote(
    address: rpc::Target,
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    commit: bool,
    targets: &[(String, i32)],
) -> Vec<Outcome> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in targets {
        topics.entry(topic).or_default().push(*partition);
    }
    let mut marker = WritableTxnMarker::default();
    marker.producer_id = producer_id.into();
    marker.producer_epoch = producer_epoch;
    marker.transaction_result = commit;
    marker.coordinator_epoch = coordinator_epoch;
    marker.topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            let mut out = WritableTxnMarkerTopic::default();
            out.name = StrBytes::from_string(topic.to_string()).into();
            out.partition_indexes = partitions;
            out
        })
        .collect();
    let mut request = WriteTxnMarkersRequest::default();
    request.markers = vec![marker];
    let answered: anyhow::Result<WriteTxnMarkersResponse> = rpc::call(
        &address,
        WRITE_TXN_MARKERS_VERSION,
        "sluice-transaction-coordinator",
        &request,
    )
    .await;
    let response = match answered {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(broker = %address, error = format!("{error:#}"), "WriteTxnMarkers failed");
            return failed_all(targets, ResponseError::NetworkException);
        }
    };
    let mut answered: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for marker in response.markers {
        for topic in marker.topics {
            for partition in topic.partitions {
                rpc::warn_if_refused(&address, "WriteTxnMarkers", partition.error_code);
                answered.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.error_code,
                );
            }
        }
    }
    targets
        .iter()
        .map(|key| {
            let outcome = match answered.get(key) {
                Some(0) => Ok(()),
                Some(code) => Err(ResponseError::try_from_code(*code)
                    .unwrap_or(ResponseError::UnknownServerError)),
                None => Err(ResponseError::UnknownServerError),
            };
            (key.clone(), outcome)
        })
        .collect()
}

fn failed_all(targets: &[(String, i32)], error: ResponseError) -> Vec<Outcome> {
    targets
        .iter()
        .map(|key| (key.clone(), Err(error)))
        .collect()
}
