//! KIP-890 on the data path: before a partition leader appends the first
//! transactional batch of a transaction to a partition, or a group
//! coordinator stores a transactional offset commit, it asks the
//! transaction coordinator about that partition:
//! - [`Membership::Verify`] (part 1, clients of transaction protocol v1,
//!   which add partitions themselves): is the partition in the producer's
//!   ongoing transaction, with this epoch? A batch that would otherwise
//!   open a transaction the coordinator does not know (a "hanging"
//!   transaction that no marker would ever end, holding the last stable
//!   offset back forever) is refused instead.
//! - [`Membership::Add`] (part 2, clients of protocol v2: Produce v12,
//!   TxnOffsetCommit v5): add the partition to the transaction on the
//!   client's behalf (starting the transaction when none is open).
//!
//! The coordinator may be this broker (called on its shard directly) or
//! another (AddPartitionsToTxn v5 to its client listener, as Kafka's
//! brokers send it). The answer is a Kafka error code as AddPartitionsToTxn
//! v5 gives it; callers map it to their own API's codes.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use kafka_protocol::protocol::StrBytes;

use crate::shard::producer_state::{ProducerId, ProducerStateTable};
use crate::shard::{PartitionReplica, Shard};
use crate::txn::coordinator;
use crate::txn::rpc;
use crate::txn::state::{TxnPartitions, TxnVersion};

/// The AddPartitionsToTxn version brokers send each other (the batched
/// form with VerifyOnly, and TRANSACTION_ABORTABLE).
pub const BROKER_ADD_VERSION: i16 = 5;
/// What AddPartitionsToTxn v5 answers for a fenced producer.
const FENCED_SINCE: i16 = 2;

/// What to ask the coordinator (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    Verify,
    Add,
}

/// Ask the coordinator of `transactional_id` about `topic`/`partition`
/// (module docs). `Err` is AddPartitionsToTxn v5's code for it.
pub async fn ensure(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topic: &str,
    partition: i32,
    how: Membership,
) -> Result<(), ResponseError> {
    let (_, state) = coordinator::coordinator_partition(shard, transactional_id).await?;
    let view = shard.metadata.snapshot();
    let Some(leader) = state.leader else {
        return Err(ResponseError::CoordinatorNotAvailable);
    };
    let mut partitions = TxnPartitions::new();
    partitions
        .entry(topic.to_string())
        .or_default()
        .insert(partition);
    if leader == view.node_id {
        let id = transactional_id.to_string();
        return coordinator::on_coordinator(
            shard,
            transactional_id,
            move |owner, state_partition| {
                local(
                    owner,
                    state_partition,
                    id,
                    producer_id,
                    producer_epoch,
                    partitions,
                    how,
                )
            },
        )
        .await
        .and_then(|answer| answer);
    }
    let Some(broker) = view.brokers.get(&leader).filter(|broker| broker.is_live()) else {
        return Err(ResponseError::CoordinatorNotAvailable);
    };
    let address = rpc::broker_address(shard, &view, broker);
    // The caller leads `topic`/`partition` (or coordinates its group), so
    // the partition exists; a coordinator that answers UNKNOWN_TOPIC_OR_PARTITION
    // has not applied the metadata that created it yet (a topic made a
    // moment ago, like `__consumer_offsets` at a group's first commit).
    // Ask again while it catches up rather than failing the transaction.
    let started = std::time::Instant::now();
    loop {
        let answer = remote(
            &address,
            transactional_id,
            producer_id,
            producer_epoch,
            topic,
            partition,
            how,
        )
        .await;
        if answer != Err(ResponseError::UnknownTopicOrPartition)
            || started.elapsed() >= METADATA_LAG_PATIENCE
        {
            return answer;
        }
        compio::time::sleep(METADATA_LAG_RETRY).await;
    }
}

/// How long a coordinator's view may lag the asking broker's about a
/// partition before the ask fails (with a code the client retries).
const METADATA_LAG_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
const METADATA_LAG_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

/// On the coordinator's shard.
async fn local(
    owner: Rc<Shard>,
    state_partition: i32,
    transactional_id: String,
    producer_id: i64,
    producer_epoch: i16,
    partitions: TxnPartitions,
    how: Membership,
) -> Result<(), ResponseError> {
    let outcome = match how {
        Membership::Verify => coordinator::verify_partitions(
            &transactional_id,
            producer_id,
            producer_epoch,
            &partitions,
        ),
        Membership::Add => {
            coordinator::add_partitions(
                &owner,
                state_partition,
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                TxnVersion::V2,
            )
            .await
        }
    };
    outcome.map_err(|error| error.code(BROKER_ADD_VERSION, FENCED_SINCE))
}

/// AddPartitionsToTxn v5 to the coordinator's broker.
async fn remote(
    address: &rpc::Target,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topic: &str,
    partition: i32,
    how: Membership,
) -> Result<(), ResponseError> {
    let mut wanted = AddPartitionsToTxnTopic::default();
    wanted.name = StrBytes::from_string(topic.to_string()).into();
    wanted.partitions = vec![partition];
    let mut transaction = AddPartitionsToTxnTransaction::default();
    transaction.transactional_id = StrBytes::from_string(transactional_id.to_string()).into();
    transaction.producer_id = producer_id.into();
    transaction.producer_epoch = producer_epoch;
    transaction.verify_only = how == Membership::Verify;
    transaction.topics = vec![wanted];
    let mut request = AddPartitionsToTxnRequest::default();
    request.transactions = vec![transaction];
    let response: AddPartitionsToTxnResponse = rpc::call(
        address,
        BROKER_ADD_VERSION,
        "sluice-partition-leader",
        &request,
    )
    .await
    .map_err(|error| {
        tracing::debug!(broker = %address, error = format!("{error:#}"), "AddPartitionsToTxn to the transaction coordinator failed");
        ResponseError::CoordinatorNotAvailable
    })?;
    rpc::warn_if_refused(address, "AddPartitionsToTxn", response.error_code);
    if response.error_code != 0 {
        return Err(code(response.error_code));
    }
    let answer = response
        .results_by_transaction
        .iter()
        .filter(|result| result.transactional_id.0.as_str() == transactional_id)
        .flat_map(|result| &result.topic_results)
        .filter(|result| result.name.0.as_str() == topic)
        .flat_map(|result| &result.results_by_partition)
        .find(|result| result.partition_index == partition)
        .map(|result| result.partition_error_code);
    if let Some(error) = answer {
        rpc::warn_if_refused(address, "AddPartitionsToTxn", error);
    }
    match answer {
        Some(0) => Ok(()),
        Some(error) => Err(code(error)),
        None => Err(ResponseError::UnknownServerError),
    }
}

fn code(error: i16) -> ResponseError {
    ResponseError::try_from_code(error).unwrap_or(ResponseError::UnknownServerError)
}

/// The error a refused membership becomes in a data API's answer.
/// `abortable`: the request version knows TRANSACTION_ABORTABLE (the
/// client aborts and goes on) rather than INVALID_TXN_STATE. A failure to
/// reach the coordinator, a transition in flight, or a coordinator whose
/// metadata does not know the partition yet, becomes `transient`,
/// a code every client retries (Kafka answers NOT_ENOUGH_REPLICAS to
/// Produce for these, so older clients retry too).
pub fn refusal(error: ResponseError, abortable: bool, transient: ResponseError) -> ResponseError {
    match error {
        ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch => {
            ResponseError::InvalidProducerEpoch
        }
        ResponseError::InvalidProducerIdMapping
        | ResponseError::InvalidTxnState
        | ResponseError::TransactionAbortable => {
            if abortable {
                ResponseError::TransactionAbortable
            } else {
                ResponseError::InvalidTxnState
            }
        }
        _ => transient,
    }
}

/// First Produce version whose clients know TRANSACTION_ABORTABLE.
const PRODUCE_ABORTABLE_SINCE: i16 = 11;
/// First Produce version of transaction protocol v2.
const PRODUCE_V2_SINCE: i16 = 12;

/// What the append of a produced batch must check (KIP-890's verification
/// guard, as Kafka's): the coordinator's answer is only good while the
/// producer's transaction has not ended on the partition since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Nothing: not transactional, or verification is off (protocol v1
    /// without `--transaction-partition-verification`).
    Off,
    /// A transactional batch that finds no transaction of its producer open
    /// on the partition may open one only while `guard` (taken before the
    /// coordinator was asked; `None` when the transaction was open then, so
    /// the coordinator was not asked) is still the producer's verification
    /// (`ProducerStateTable::holds_verification`); else it is refused with
    /// `refusal` (TRANSACTION_ABORTABLE, or INVALID_TXN_STATE for clients
    /// before Produce v11). Without it, a batch verified, then delayed past
    /// the transaction's abort (its marker changed nothing here), opened a
    /// transaction no marker would end: the partition's LSO stuck.
    On {
        guard: Option<u64>,
        refusal: ResponseError,
    },
}

impl Verified {
    /// The refusal of a transactional batch of `producer_id` at `epoch`
    /// that finds no transaction of its producer open on the partition (it
    /// would open one), judged by the partition's `producers` in the
    /// synchronous step that appends it: `None` lets it open the
    /// transaction.
    pub fn refusal_to_open(
        self,
        producers: &ProducerStateTable,
        producer_id: ProducerId,
        epoch: i16,
    ) -> Option<ResponseError> {
        match self {
            Verified::Off => None,
            Verified::On { guard, refusal } => (!guard
                .is_some_and(|guard| producers.holds_verification(producer_id, epoch, guard)))
            .then_some(refusal),
        }
    }
}

/// Before the coordinator is asked about a transactional batch of
/// `producer_id` at `epoch` starting at `first_sequence` that `replica`
/// (on this shard) is to append: the guard the append must find still
/// held ([`Verified::On`]; `ProducerStateTable::begin_verification`), or
/// `None` when a transaction of the producer at `epoch` is open there
/// already.
pub fn begin_verification(
    replica: &PartitionReplica,
    producer_id: i64,
    epoch: i16,
    first_sequence: i32,
    now_ms: i64,
) -> Option<u64> {
    let producer = ProducerId(producer_id);
    let mut producers = replica.producers.borrow_mut();
    let open = replica.txns.borrow().open_transaction(producer).is_some()
        && producers.epoch_of(producer) == Some(epoch);
    (!open).then(|| producers.begin_verification(producer, epoch, first_sequence, now_ms))
}

/// Produce: before the batch `records` of a request of `version` is
/// appended to `topic`/`partition` (owned by `owner`): when it is
/// transactional and its producer has no transaction of this epoch open
/// on the partition yet, verify (protocol v1, when
/// `--transaction-partition-verification` is on) or add (v2) the partition
/// with the coordinator. `Err` is the Produce error for the partition;
/// `Ok` says what the append must check ([`Verified`]).
/// The guard also keeps the lowest first sequence it was taken for, so a
/// later batch of the producer's pipeline is not stored before an earlier
/// one that failed (`ProducerStateTable::begin_verification`).
/// A batch already open on the partition needs no question: the
/// coordinator knew it when it was opened, and a coordinator abort since
/// then moved the producer's epoch there with its marker.
pub async fn before_produce(
    shard: &Rc<Shard>,
    version: i16,
    owner: crate::shard::ShardId,
    topic: &str,
    partition: i32,
    transactional_id: Option<&str>,
    records: Option<&bytes::Bytes>,
) -> Result<Verified, ResponseError> {
    let how = if version >= PRODUCE_V2_SINCE {
        Membership::Add
    } else if shard.config.transaction_partition_verification {
        Membership::Verify
    } else {
        return Ok(Verified::Off);
    };
    let (Some(transactional_id), Some(records)) = (transactional_id, records) else {
        return Ok(Verified::Off);
    };
    let Ok(header) = sluice_engine::batch::BatchHeader::parse(records) else {
        return Ok(Verified::Off); // refused with its own error by the append path
    };
    if !header.is_transactional() {
        return Ok(Verified::Off);
    }
    let abortable = version >= PRODUCE_ABORTABLE_SINCE;
    let verified = |guard| Verified::On {
        guard,
        refusal: refusal(
            ResponseError::InvalidTxnState,
            abortable,
            ResponseError::NotEnoughReplicas,
        ),
    };
    let producer_id = header.producer_id();
    let producer_epoch = header.producer_epoch();
    let first_sequence = header.base_sequence();
    if producer_id < 0 || producer_epoch < 0 || first_sequence < 0 {
        return Ok(Verified::Off); // refused by the append path (INVALID_RECORD)
    }
    let topic_partition = crate::shard::TopicPartition::new(topic, partition);
    // Open already (`Some(None)`), or the guard taken before the
    // coordinator is asked; `None`: not open on its shard (the append path
    // answers for it).
    let checked = shard
        .shards
        .call(owner, move |owner| async move {
            let replica = owner.partition(&topic_partition)?;
            Some(begin_verification(
                &replica,
                producer_id,
                producer_epoch,
                first_sequence,
                sluice_engine::io::Io::now_ms(&owner.io),
            ))
        })
        .await
        .ok()
        .flatten();
    let guard = match checked {
        Some(None) => return Ok(verified(None)),
        Some(Some(guard)) => Some(guard),
        None => None,
    };
    ensure(
        shard,
        transactional_id,
        producer_id,
        producer_epoch,
        topic,
        partition,
        how,
    )
    .await
    .map_err(|error| {
        tracing::debug!(%transactional_id, topic, partition, producer_id, producer_epoch, ?how, ?error, "transactional batch refused by its coordinator");
        refusal(error, abortable, ResponseError::NotEnoughReplicas)
    })?;
    Ok(verified(guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_the_coordinator_does_not_know_yet_is_retried_not_aborted() {
        let transient = ResponseError::NotEnoughReplicas;
        assert_eq!(
            refusal(ResponseError::UnknownTopicOrPartition, true, transient),
            transient
        );
        assert_eq!(
            refusal(ResponseError::InvalidTxnState, true, transient),
            ResponseError::TransactionAbortable
        );
        assert_eq!(
            refusal(ResponseError::InvalidTxnState, false, transient),
            ResponseError::InvalidTxnState
        );
        assert_eq!(
            refusal(ResponseError::ProducerFenced, true, transient),
            ResponseError::InvalidProducerEpoch
        );
        assert_eq!(
            refusal(ResponseError::CoordinatorNotAvailable, true, transient),
            transient
        );
    }
}
