//! The state of one transactional id (Kafka's `TransactionMetadata`), sans
//! I/O: the checks and transitions of the coordinator's requests, and the
//! record layout of `__transaction_state`.
//!
//! A transition never changes the state in place: it returns the state to
//! write ([`TxnMetadata::prepare_*`]); the coordinator (txn/coordinator.rs)
//! marks the id as having a transition in flight, writes the new state to
//! `__transaction_state`, waits until it is committed, and only then
//! installs it ([`TxnMetadata::complete_transition`]). While a transition
//! is in flight every other request about the id gets
//! CONCURRENT_TRANSACTIONS (retriable for every client), as in Kafka.
//!
//! Records (Kafka's own layouts, so Kafka tooling that reads the topic
//! agrees): big-endian, strings with an i16 length.
//!
//! | part | layout |
//! |---|---|
//! | key v0 | i16 version 0, string transactional id |
//! | value v0 | i16 version 0, i64 producer id, i16 producer epoch, i32 timeout ms, i8 state (Kafka's codes: Empty 0, Ongoing 1, PrepareCommit 2, PrepareAbort 3, CompleteCommit 4, CompleteAbort 5, Dead 6, PrepareEpochFence 7), i32 count of topics then per topic a string name and an i32 count of i32 partitions, i64 last update ms, i64 start ms |
//!
//! | value v1 (Sluice's, not Kafka's: written only for a transaction of protocol v2) | the v0 fields, then i16 client transaction version, i64 previous producer id, i64 next producer id, i16 last producer epoch |
//!
//! A null value is a tombstone: the id expired
//! (transactional.id.expiration.ms, [`TxnMetadata::is_expired`]).
//!
//! ## Transaction protocol v2 (KIP-890 part 2)
//! A client that negotiated transaction.version 2 (EndTxn v5, Produce v12,
//! TxnOffsetCommit v5) never sends AddPartitionsToTxn or AddOffsetsToTxn:
//! partition leaders and the group coordinator add partitions on its behalf
//! ([`TxnMetadata::prepare_add`] with [`TxnVersion::V2`]). Every EndTxn bumps
//! the producer epoch when it writes PrepareCommit / PrepareAbort: the
//! markers carry the new epoch, so a late write of the ended transaction
//! (old epoch) is fenced on every partition, and the EndTxn answer gives
//! the client its new epoch (or, once the epoch is exhausted, a new
//! producer id with epoch 0: `next_producer_id` while the markers are
//! written, `previous_producer_id` afterwards). A retried EndTxn (the
//! answer was lost) is recognised by the pre-bump identity
//! (`last_producer_epoch`) and answered with the current one. An abort
//! with no transaction open is allowed and bumps the epoch (it fences
//! writes still in flight).

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;

/// Kafka's transaction.max.timeout.ms (default 15 minutes).
pub const TRANSACTION_TIMEOUT_MAX_MS: i32 = 900_000;
/// No producer epoch yet (a new id before its first InitProducerId write).
pub const NO_EPOCH: i16 = -1;

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;
/// Sluice's value layout for transactions of protocol v2 (module docs).
const VALUE_VERSION_V2: i16 = 1;
/// No producer id (previous / next).
pub const NO_PRODUCER_ID: i64 = -1;

/// The transaction protocol a client speaks (Kafka's transaction.version
/// feature, as the request versions show it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TxnVersion {
    /// AddPartitionsToTxn / AddOffsetsToTxn by the client, one epoch per
    /// producer session.
    V1,
    /// KIP-890 part 2: partitions added by the brokers, an epoch per
    /// transaction.
    V2,
}

impl TxnVersion {
    fn code(self) -> i16 {
        match self {
            TxnVersion::V1 => 1,
            TxnVersion::V2 => 2,
        }
    }

    fn from_code(code: i16) -> TxnVersion {
        if code >= 2 {
            TxnVersion::V2
        } else {
            TxnVersion::V1
        }
    }
}

/// Kafka's TransactionState, with its codes in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        (0..=7)
            .filter_map(TxnState::from_code)
            .find(|state| state.name() == name)
    }

    /// Markers are being written (or must be, after a load).
    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// The partitions of a transaction, by topic.
pub type TxnPartitions = BTreeMap<String, BTreeSet<i32>>;

/// One transactional id's state (what is written to the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: TxnPartitions,
    /// Wall-clock ms of the last transition.
    pub last_update_ms: i64,
    /// Wall-clock ms the ongoing transaction started (-1 when none).
    pub start_ms: i64,
    /// The protocol of the ongoing (or last) transaction.
    pub client_version: TxnVersion,
    /// v2: the producer id before the last rotation (an exhausted epoch),
    /// so a retried EndTxn of the old id is recognised.
    pub previous_producer_id: i64,
    /// v2: the producer id the client gets once the markers of an
    /// exhausted epoch are written.
    pub next_producer_id: i64,
    /// v2: the epoch the client ended its last transaction with (before
    /// the bump); -1 when none.
    pub last_producer_epoch: i16,
}

/// What an EndTxn of protocol v2 does ([`TxnMetadata::prepare_end_v2`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndV2 {
    /// Write this PrepareX; answer with [`TxnMetadata::client_identity`]
    /// once it is committed.
    Write(TxnMetadata),
    /// A retry of an EndTxn that completed: answer with this producer id
    /// and epoch at once.
    Done(i64, i16),
}

/// Why a request about a transactional id is refused (Kafka's codes at the
/// protocol edge, see [`TxnError::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("the producer id does not match the transactional id's")]
    InvalidProducerIdMapping,
    #[error("the producer epoch is older than the transactional id's: fenced")]
    ProducerFenced,
    #[error("another transition of the transaction is in progress")]
    ConcurrentTransactions,
    #[error("the request does not fit the transaction's state")]
    InvalidTxnState,
    #[error("the transaction timeout is out of range")]
    InvalidTransactionTimeout,
}

impl TxnError {
    /// The Kafka error for this refusal. PRODUCER_FENCED is newer than the
    /// request versions before `fenced_since`; those get
    /// INVALID_PRODUCER_EPOCH, as Kafka answers them.
    pub fn code(self, version: i16, fenced_since: i16) -> ResponseError {
        match self {
            TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
            TxnError::ProducerFenced if version < fenced_since => {
                ResponseError::InvalidProducerEpoch
            }
            TxnError::ProducerFenced => ResponseError::ProducerFenced,
            TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
            TxnError::InvalidTxnState => ResponseError::InvalidTxnState,
            TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
        }
    }
}

/// What InitProducerId does with an existing id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// Write this (Empty, epoch bumped) and answer with its producer id and
    /// epoch.
    Ready(TxnMetadata),
    /// An ongoing transaction must be aborted first (fencing its producer):
    /// write this PrepareAbort (epoch bumped), write the markers, and answer
    /// CONCURRENT_TRANSACTIONS so the client retries.
    AbortFirst(TxnMetadata),
}

impl TxnMetadata {
    /// A new id, before its first write (epoch [`NO_EPOCH`]).
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: NO_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: TxnPartitions::new(),
            last_update_ms: now_ms,
            start_ms: -1,
            client_version: TxnVersion::V1,
            previous_producer_id: NO_PRODUCER_ID,
            next_producer_id: NO_PRODUCER_ID,
            last_producer_epoch: NO_EPOCH,
        }
    }

    /// The producer id and epoch the client is to use next (v2: after its
    /// EndTxn; the next id once an exhausted epoch rotates it).
    pub fn client_identity(&self) -> (i64, i16) {
        if self.next_producer_id != NO_PRODUCER_ID {
            (self.next_producer_id, 0)
        } else {
            (self.producer_id, self.producer_epoch)
        }
    }

    /// transactional.id.expiration.ms: an id with no transaction in
    /// progress and no transition for `expiration_ms` is forgotten (a
    /// tombstone is written), as Kafka's coordinator does.
    pub fn is_expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        matches!(
            self.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) && now_ms.saturating_sub(self.last_update_ms) > expiration_ms
    }

    /// Check a timeout asked by InitProducerId.
    pub fn check_timeout(timeout_ms: i32, max_ms: i32) -> Result<(), TxnError> {
        if timeout_ms <= 0 || timeout_ms > max_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        Ok(())
    }

    /// InitProducerId on an existing id (or a new one: epoch NO_EPOCH).
    /// `fresh_producer_id` is used when the epoch would overflow.
    /// `expected`: the producer id and epoch the client holds (KIP-360,
    /// v3+, when it re-initializes to bump its epoch): another producer
    /// id, or an epoch other than the current one or the one before (a
    /// retry whose answer was lost, or the epoch the coordinator bumped when
    /// it aborted a timed-out transaction) is fenced, as in Kafka.
    pub fn prepare_init(
        &self,
        timeout_ms: i32,
        now_ms: i64,
        expected: Option<(i64, i16)>,
        fresh_producer_id: impl FnOnce() -> Option<i64>,
    ) -> Result<InitOutcome, TxnError> {
        if let Some((producer_id, producer_epoch)) = expected
            && self.producer_epoch != NO_EPOCH
            && (producer_id != self.producer_id
                || !(producer_epoch == self.producer_epoch
                    || producer_epoch == self.producer_epoch - 1))
        {
            return Err(TxnError::ProducerFenced);
        }
        match self.state {
            TxnState::PrepareCommit
            | TxnState::PrepareAbort
            | TxnState::PrepareEpochFence
            | TxnState::Dead => Err(TxnError::ConcurrentTransactions),
            TxnState::Ongoing => {
                let mut next = self.bumped_epoch();
                next.state = TxnState::PrepareAbort;
                next.last_update_ms = now_ms;
                Ok(InitOutcome::AbortFirst(next))
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let mut next = if self.producer_epoch >= i16::MAX - 1 {
                    // The epoch is exhausted: a new producer id, epoch 0.
                    let producer_id =
                        fresh_producer_id().ok_or(TxnError::ConcurrentTransactions)?;
                    TxnMetadata {
                        producer_id,
                        producer_epoch: 0,
                        ..self.clone()
                    }
                } else {
                    self.bumped_epoch()
                };
                next.state = TxnState::Empty;
                next.timeout_ms = timeout_ms;
                next.partitions.clear();
                next.start_ms = -1;
                next.last_update_ms = now_ms;
                next.previous_producer_id = NO_PRODUCER_ID;
                next.next_producer_id = NO_PRODUCER_ID;
                next.last_producer_epoch = NO_EPOCH;
                Ok(InitOutcome::Ready(next))
            }
        }
    }

    /// The same id with the epoch one higher, at most `i16::MAX`: a fence
    /// (an abort by InitProducerId or by the timeout) of a producer at the
    /// last usable epoch (`i16::MAX - 1`) writes its markers with
    /// `i16::MAX`, as Kafka's prepareFenceProducerEpoch does, so the
    /// producer is fenced; its next InitProducerId gets a new producer id.
    /// Kept at `i16::MAX - 1`, the markers carried the producer's own epoch
    /// and a zombie at that epoch could go on writing.
    fn bumped_epoch(&self) -> TxnMetadata {
        let mut next = self.clone();
        next.producer_epoch = next.producer_epoch.saturating_add(1);
        next
    }

    /// Check the producer id and epoch a client sends.
    pub fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<(), TxnError> {
        if producer_id != self.producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if producer_epoch != self.producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        Ok(())
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: `None` when every partition is
    /// already in the ongoing transaction (nothing to write).
    pub fn prepare_add_partitions(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        added: &TxnPartitions,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.prepare_add(producer_id, producer_epoch, added, now_ms, TxnVersion::V1)
    }

    /// KIP-890's verification (AddPartitionsToTxn v4+ with VerifyOnly):
    /// `Ok` when the producer's ongoing transaction already holds every
    /// partition of `partitions`.
    pub fn check_partitions_added(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &TxnPartitions,
    ) -> Result<(), TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        match self.state {
            TxnState::Ongoing => {}
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(TxnError::ConcurrentTransactions);
            }
            _ => return Err(TxnError::InvalidTxnState),
        }
        let all_added = partitions.iter().all(|(topic, wanted)| {
            self.partitions
                .get(topic)
                .is_some_and(|held| wanted.is_subset(held))
        });
        if all_added {
            Ok(())
        } else {
            Err(TxnError::InvalidTxnState)
        }
    }

    /// [`Self::prepare_add_partitions`] by a client of protocol `version`
    /// (v2: a partition leader or the group coordinator adding on the
    /// client's behalf). A transaction starts with the version of its first
    /// add.
    pub fn prepare_add(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        added: &TxnPartitions,
        now_ms: i64,
        version: TxnVersion,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        match self.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(TxnError::ConcurrentTransactions);
            }
            TxnState::Dead => return Err(TxnError::InvalidTxnState),
            TxnState::Empty
            | TxnState::Ongoing
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort => {}
        }
        let ongoing = self.state == TxnState::Ongoing;
        let mut next = self.clone();
        if !ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
            next.client_version = version;
        }
        let mut changed = !ongoing;
        for (topic, partitions) in added {
            let entry = next.partitions.entry(topic.clone()).or_default();
            for partition in partitions {
                changed |= entry.insert(*partition);
            }
        }
        if !changed {
            return Ok(None);
        }
        next.state = TxnState::Ongoing;
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// EndTxn: `Ok(None)` answers at once without a write (a retried EndTxn
    /// whose transaction already completed the same way).
    pub fn prepare_end(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, TxnError> {
        self.check_producer(producer_id, producer_epoch)?;
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = self.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.last_update_ms = now_ms;
                Ok(Some(next))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(TxnError::ConcurrentTransactions)
            }
            (TxnState::PrepareEpochFence, _) => Err(TxnError::ConcurrentTransactions),
            _ => Err(TxnError::InvalidTxnState),
        }
    }

    /// EndTxn of protocol v2 (v5+): see the module docs. `fresh_producer_id`
    /// is used when the epoch is exhausted.
    pub fn prepare_end_v2(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
        fresh_producer_id: impl FnOnce() -> Option<i64>,
    ) -> Result<EndV2, TxnError> {
        // A retry of the EndTxn that ended the last transaction: the client
        // still holds the identity from before the bump.
        let ended_as_asked = match self.state {
            TxnState::PrepareCommit | TxnState::CompleteCommit => commit,
            TxnState::PrepareAbort | TxnState::CompleteAbort => !commit,
            _ => false,
        };
        let ended_by = if self.state.is_prepare() || self.previous_producer_id == NO_PRODUCER_ID {
            self.producer_id
        } else {
            self.previous_producer_id
        };
        if ended_as_asked
            && self.client_version == TxnVersion::V2
            && self.last_producer_epoch != NO_EPOCH
            && producer_id == ended_by
            && producer_epoch == self.last_producer_epoch
        {
            if self.state.is_prepare() {
                return Err(TxnError::ConcurrentTransactions);
            }
            return Ok(EndV2::Done(self.producer_id, self.producer_epoch));
        }
        self.check_producer(producer_id, producer_epoch)?;
        match (self.state, commit) {
            (TxnState::Ongoing, _)
            | (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort, false) => {}
            (TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence, _) => {
                return Err(TxnError::ConcurrentTransactions);
            }
            _ => return Err(TxnError::InvalidTxnState),
        }
        let mut next = self.clone();
        if self.state != TxnState::Ongoing {
            // An abort with nothing open: no partitions, only the bump.
            next.partitions.clear();
            next.start_ms = now_ms;
        }
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        next.client_version = TxnVersion::V2;
        next.last_producer_epoch = producer_epoch;
        next.previous_producer_id = NO_PRODUCER_ID;
        if producer_epoch >= i16::MAX - 1 {
            // Exhausted: the markers fence with the largest epoch and the
            // client moves to a new producer id.
            next.next_producer_id = fresh_producer_id().ok_or(TxnError::ConcurrentTransactions)?;
            next.producer_epoch = i16::MAX;
        } else {
            next.producer_epoch = producer_epoch + 1;
        }
        next.last_update_ms = now_ms;
        Ok(EndV2::Write(next))
    }

    /// The coordinator aborts a transaction past its timeout: the epoch is
    /// bumped (the producer is fenced, as Kafka does). `None` unless the id
    /// has an ongoing transaction that timed out.
    pub fn prepare_timeout_abort(&self, now_ms: i64) -> Option<TxnMetadata> {
        if self.state != TxnState::Ongoing
            || now_ms.saturating_sub(self.start_ms) <= i64::from(self.timeout_ms)
        {
            return None;
        }
        let mut next = self.bumped_epoch();
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        Some(next)
    }

    /// After the markers of a PrepareX are written: the CompleteX to write.
    pub fn prepare_complete(&self, now_ms: i64) -> TxnMetadata {
        assert!(
            self.state.is_prepare(),
            "completing a transaction in state {:?}",
            self.state
        );
        let mut next = self.clone();
        next.state = if self.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        if self.next_producer_id != NO_PRODUCER_ID {
            next.previous_producer_id = self.producer_id;
            next.producer_id = self.next_producer_id;
            next.producer_epoch = 0;
            next.next_producer_id = NO_PRODUCER_ID;
        }
        next
    }

    /// Partitions whose markers are still owed (a topic or partition that
    /// no longer exists is dropped by the caller).
    pub fn partition_list(&self) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(move |partition| (topic.clone(), *partition))
            })
            .collect()
    }

    // ---- records ----

    pub fn encode_key(transactional_id: &str) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(KEY_VERSION);
        put_string(&mut out, transactional_id);
        out.freeze()
    }

    pub fn decode_key(mut bytes: &[u8]) -> Result<String, RecordError> {
        let version = get_i16(&mut bytes)?;
        if version != KEY_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        get_string(&mut bytes)
    }

    pub fn encode_value(&self) -> Bytes {
        let v2 = self.client_version == TxnVersion::V2
            || self.previous_producer_id != NO_PRODUCER_ID
            || self.next_producer_id != NO_PRODUCER_ID;
        let mut out = BytesMut::new();
        out.put_i16(if v2 { VALUE_VERSION_V2 } else { VALUE_VERSION });
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.timeout_ms);
        out.put_i8(self.state.code());
        out.put_i32(i32::try_from(self.partitions.len()).unwrap_or(i32::MAX));
        for (topic, partitions) in &self.partitions {
            put_string(&mut out, topic);
            out.put_i32(i32::try_from(partitions.len()).unwrap_or(i32::MAX));
            for partition in partitions {
                out.put_i32(*partition);
            }
        }
        out.put_i64(self.last_update_ms);
        out.put_i64(self.start_ms);
        if v2 {
            out.put_i16(self.client_version.code());
            out.put_i64(self.previous_producer_id);
            out.put_i64(self.next_producer_id);
            out.put_i16(self.last_producer_epoch);
        }
        out.freeze()
    }

    pub fn decode_value(transactional_id: &str, mut bytes: &[u8]) -> Result<Self, RecordError> {
        let version = get_i16(&mut bytes)?;
        if version != VALUE_VERSION && version != VALUE_VERSION_V2 {
            return Err(RecordError::UnknownVersion(version));
        }
        let producer_id = get_i64(&mut bytes)?;
        let producer_epoch = get_i16(&mut bytes)?;
        let timeout_ms = get_i32(&mut bytes)?;
        need(bytes, 1)?;
        let code = bytes.get_i8();
        let state = TxnState::from_code(code).ok_or(RecordError::UnknownState(code))?;
        let topics = get_i32(&mut bytes)?;
        let mut partitions = TxnPartitions::new();
        for _ in 0..topics.max(0) {
            let topic = get_string(&mut bytes)?;
            let count = get_i32(&mut bytes)?;
            let entry = partitions.entry(topic).or_default();
            for _ in 0..count.max(0) {
                entry.insert(get_i32(&mut bytes)?);
            }
        }
        let last_update_ms = get_i64(&mut bytes)?;
        let start_ms = get_i64(&mut bytes)?;
        let mut metadata = TxnMetadata::new(transactional_id, producer_id, timeout_ms, 0);
        metadata.producer_epoch = producer_epoch;
        metadata.state = state;
        metadata.partitions = partitions;
        metadata.last_update_ms = last_update_ms;
        metadata.start_ms = start_ms;
        if version == VALUE_VERSION_V2 {
            metadata.client_version = TxnVersion::from_code(get_i16(&mut bytes)?);
            metadata.previous_producer_id = get_i64(&mut bytes)?;
            metadata.next_producer_id = get_i64(&mut bytes)?;
            metadata.last_producer_epoch = get_i16(&mut bytes)?;
        }
        Ok(metadata)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record truncated")]
    Truncated,
    #[error("unknown record version {0}")]
    UnknownVersion(i16),
    #[error("unknown transaction state {0}")]
    UnknownState(i8),
    #[error("invalid UTF-8 in a string")]
    Utf8,
}

fn put_string(out: &mut BytesMut, text: &str) {
    let length = i16::try_from(text.len()).unwrap_or(i16::MAX);
    out.put_i16(length);
    out.put_slice(&text.as_bytes()[..length as usize]);
}

fn need(bytes: &[u8], count: usize) -> Result<(), RecordError> {
    if bytes.len() < count {
        return Err(RecordError::Truncated);
    }
    Ok(())
}

fn get_i16(bytes: &mut &[u8]) -> Result<i16, RecordError> {
    need(bytes, 2)?;
    Ok(bytes.get_i16())
}

fn get_i32(bytes: &mut &[u8]) -> Result<i32, RecordError> {
    need(bytes, 4)?;
    Ok(bytes.get_i32())
}

fn get_i64(bytes: &mut &[u8]) -> Result<i64, RecordError> {
    need(bytes, 8)?;
    Ok(bytes.get_i64())
}

fn get_string(bytes: &mut &[u8]) -> Result<String, RecordError> {
    let length = usize::try_from(get_i16(bytes)?.max(0)).unwrap_or(0);
    need(bytes, length)?;
    let text = std::str::from_utf8(&bytes[..length])
        .map_err(|_| RecordError::Utf8)?
        .to_string();
    bytes.advance(length);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partitions(list: &[(&str, i32)]) -> TxnPartitions {
        let mut out = TxnPartitions::new();
        for (topic, partition) in list {
            out.entry(topic.to_string()).or_default().insert(*partition);
        }
        out
    }

    fn ready(outcome: Result<InitOutcome, TxnError>) -> TxnMetadata {
        match outcome {
            Ok(InitOutcome::Ready(next)) => next,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    #[test]
    fn a_transaction_goes_empty_ongoing_prepare_complete() {
        let new = TxnMetadata::new("t", 7, 60_000, 1);
        let empty = ready(new.prepare_init(60_000, 2, None, || None));
        assert_eq!((empty.producer_id, empty.producer_epoch), (7, 0));
        assert_eq!(empty.state, TxnState::Empty);
        let added = partitions(&[("a", 0), ("b", 1)]);
        let ongoing = empty
            .prepare_add_partitions(7, 0, &added, 3)
            .expect("add")
            .expect("changed");
        assert_eq!(ongoing.state, TxnState::Ongoing);
        assert_eq!(ongoing.start_ms, 3);
        // The same partitions again: nothing to write.
        assert_eq!(ongoing.prepare_add_partitions(7, 0, &added, 4), Ok(None));
        let more = ongoing
            .prepare_add_partitions(7, 0, &partitions(&[("a", 2)]), 5)
            .expect("add")
            .expect("changed");
        assert_eq!(more.partition_list().len(), 3);
        assert_eq!(more.start_ms, 3, "the start stays");
        let prepare = more
            .prepare_end(7, 0, true, 6)
            .expect("end")
            .expect("write");
        assert_eq!(prepare.state, TxnState::PrepareCommit);
        assert_eq!(
            prepare.prepare_end(7, 0, true, 7),
            Err(TxnError::ConcurrentTransactions),
            "a second EndTxn while the markers are written"
        );
        assert_eq!(
            prepare.prepare_add_partitions(7, 0, &added, 7),
            Err(TxnError::ConcurrentTransactions)
        );
        let complete = prepare.prepare_complete(8);
        assert_eq!(complete.state, TxnState::CompleteCommit);
        assert!(complete.partitions.is_empty());
        assert_eq!(complete.prepare_end(7, 0, true, 9), Ok(None), "a retry");
        assert_eq!(
            complete.prepare_end(7, 0, false, 9),
            Err(TxnError::InvalidTxnState)
        );
        // The next transaction starts from a completed one.
        let next = complete
            .prepare_add_partitions(7, 0, &partitions(&[("c", 0)]), 10)
            .expect("add")
            .expect("changed");
        assert_eq!(next.partition_list(), vec![("c".to_string(), 0)]);
        assert_eq!(next.start_ms, 10);
    }

    #[test]
    fn end_without_a_transaction_is_an_invalid_state() {
        let empty = ready(TxnMetadata::new("t", 7, 1000, 0).prepare_init(1000, 0, None, || None));
        assert_eq!(
            empty.prepare_end(7, 0, true, 1),
            Err(TxnError::InvalidTxnState)
        );
        assert_eq!(
            empty.prepare_end(7, 0, false, 1),
            Err(TxnError::InvalidTxnState)
        );
    }

    #[test]
    fn an_older_epoch_is_fenced_and_another_producer_id_is_unmapped() {
        let empty = ready(TxnMetadata::new("t", 7, 1000, 0).prepare_init(1000, 0, None, || None));
        let again = ready(empty.prepare_init(1000, 1, None, || None));
        assert_eq!(again.producer_epoch, 1);
        let added = partitions(&[("a", 0)]);
        assert_eq!(
            again.prepare_add_partitions(7, 0, &added, 2),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            again.prepare_add_partitions(8, 1, &added, 2),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            TxnError::ProducerFenced.code(1, 2),
            ResponseError::InvalidProducerEpoch
        );
        assert_eq!(
            TxnError::ProducerFenced.code(2, 2),
            ResponseError::ProducerFenced
        );
    }

    #[test]
    fn init_during_a_transaction_aborts_it_with_a_bumped_epoch() {
        let empty = ready(TxnMetadata::new("t", 7, 1000, 0).prepare_init(1000, 0, None, || None));
        let ongoing = empty
            .prepare_add_partitions(7, 0, &partitions(&[("a", 0)]), 1)
            .expect("add")
            .expect("changed");
        let Ok(InitOutcome::AbortFirst(abort)) = ongoing.prepare_init(1000, 2, None, || None)
        else {
            panic!("expected AbortFirst");
        };
        assert_eq!(abort.state, TxnState::PrepareAbort);
        assert_eq!(abort.producer_epoch, 1);
        assert_eq!(abort.partition_list(), vec![("a".to_string(), 0)]);
        assert_eq!(
            abort.prepare_init(1000, 3, None, || None),
            Err(TxnError::ConcurrentTransactions)
        );
        let complete = abort.prepare_complete(4);
        let fresh = ready(complete.prepare_init(1000, 5, None, || None));
        assert_eq!((fresh.producer_epoch, fresh.state), (2, TxnState::Empty));
    }

    #[test]
    fn a_reinit_with_an_older_epoch_or_another_producer_id_is_fenced() {
        let mut current =
            ready(TxnMetadata::new("t", 7, 1000, 0).prepare_init(1000, 0, None, || None));
        current = ready(current.prepare_init(1000, 1, None, || None));
        current = ready(current.prepare_init(1000, 2, None, || None));
        assert_eq!(current.producer_epoch, 2);
        assert_eq!(
            current.prepare_init(1000, 3, Some((7, 0)), || None),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            current.prepare_init(1000, 3, Some((8, 2)), || None),
            Err(TxnError::ProducerFenced)
        );
        for held in [2, 1] {
            let next = ready(current.prepare_init(1000, 3, Some((7, held)), || None));
            assert_eq!(next.producer_epoch, 3);
        }
    }

    #[test]
    fn an_exhausted_epoch_gets_a_new_producer_id() {
        let mut empty =
            ready(TxnMetadata::new("t", 7, 1000, 0).prepare_init(1000, 0, None, || None));
        empty.producer_epoch = i16::MAX - 1;
        let next = ready(empty.prepare_init(1000, 1, None, || Some(99)));
        assert_eq!((next.producer_id, next.producer_epoch), (99, 0));
    }

    /// A fence at the last usable epoch bumps to `i16::MAX` (the zombie at
    /// `i16::MAX - 1` is fenced by the markers), and the next init moves
    /// the id to a new producer id.
    #[test]
    fn a_fence_at_the_last_epoch_bumps_to_the_largest() {
        let mut empty =
            ready(TxnMetadata::new("t", 7, 1000, 0).prepare_init(1000, 0, None, || None));
        empty.producer_epoch = i16::MAX - 1;
        let ongoing = empty
            .prepare_add_partitions(7, i16::MAX - 1, &partitions(&[("a", 0)]), 1)
            .expect("add")
            .expect("changed");
        let timed_out = ongoing.prepare_timeout_abort(5_000).expect("timed out");
        assert_eq!(timed_out.producer_epoch, i16::MAX);
        let Ok(InitOutcome::AbortFirst(abort)) = ongoing.prepare_init(1000, 2, None, || None)
        else {
            panic!("expected AbortFirst");
        };
        assert_eq!(abort.producer_epoch, i16::MAX);
        let complete = abort.prepare_complete(4);
        let fresh = ready(complete.prepare_init(1000, 5, None, || Some(99)));
        assert_eq!((fresh.producer_id, fresh.producer_epoch), (99, 0));
    }

    #[test]
    fn timeouts_are_checked_and_enforced() {
        assert_eq!(TxnMetadata::check_timeout(60_000, 900_000), Ok(()));
        assert_eq!(
            TxnMetadata::check_timeout(900_001, 900_000),
            Err(TxnError::InvalidTransactionTimeout)
        );
        assert_eq!(
            TxnMetadata::check_timeout(0, 900_000),
            Err(TxnError::InvalidTransactionTimeout)
        );
        let empty = ready(TxnMetadata::new("t", 7, 1000, 0).prepare_init(1000, 0, None, || None));
        assert_eq!(empty.prepare_timeout_abort(1_000_000), None, "nothing open");
        let ongoing = empty
            .prepare_add_partitions(7, 0, &partitions(&[("a", 0)]), 100)
            .expect("add")
            .expect("changed");
        assert_eq!(ongoing.prepare_timeout_abort(1100), None, "not yet");
        let abort = ongoing.prepare_timeout_abort(1101).expect("timed out");
        assert_eq!(abort.state, TxnState::PrepareAbort);
        assert_eq!(abort.producer_epoch, 1, "the producer is fenced");
    }

    #[test]
    fn records_round_trip() {
        let empty =
            ready(TxnMetadata::new("txn-ü", 7, 1000, 0).prepare_init(1000, 0, None, || None));
        let ongoing = empty
            .prepare_add_partitions(7, 0, &partitions(&[("a", 0), ("a", 3), ("b", 1)]), 5)
            .expect("add")
            .expect("changed");
        let key = TxnMetadata::encode_key(&ongoing.transactional_id);
        assert_eq!(TxnMetadata::decode_key(&key), Ok("txn-ü".to_string()));
        let value = ongoing.encode_value();
        assert_eq!(TxnMetadata::decode_value("txn-ü", &value), Ok(ongoing));
        assert_eq!(
            TxnMetadata::decode_value("x", &value[..value.len() - 1]),
            Err(RecordError::Truncated)
        );
        for code in 0..=7 {
            let state = TxnState::from_code(code).expect("known");
            assert_eq!(state.code(), code);
            assert_eq!(TxnState::from_name(state.name()), Some(state));
        }
    }
    fn end_v2(
        metadata: &TxnMetadata,
        identity: (i64, i16),
        commit: bool,
        fresh: Option<i64>,
    ) -> Result<EndV2, TxnError> {
        metadata.prepare_end_v2(identity.0, identity.1, commit, 50, || fresh)
    }

    fn written(outcome: Result<EndV2, TxnError>) -> TxnMetadata {
        match outcome {
            Ok(EndV2::Write(next)) => next,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn ongoing_v2(epoch: i16) -> TxnMetadata {
        let mut empty = TxnMetadata::new("v2", 7, 1000, 0);
        empty.producer_epoch = epoch;
        empty
            .prepare_add(7, epoch, &partitions(&[("a", 0)]), 1, TxnVersion::V2)
            .expect("add")
            .expect("changed")
    }

    #[test]
    fn a_v2_end_bumps_the_epoch_and_a_retry_gets_the_new_one() {
        let ongoing = ongoing_v2(3);
        assert_eq!(ongoing.client_version, TxnVersion::V2);
        let prepare = written(end_v2(&ongoing, (7, 3), true, None));
        assert_eq!(prepare.state, TxnState::PrepareCommit);
        assert_eq!(
            prepare.producer_epoch, 4,
            "the markers carry the bumped epoch"
        );
        assert_eq!(prepare.client_identity(), (7, 4));
        assert_eq!(
            end_v2(&prepare, (7, 3), true, None),
            Err(TxnError::ConcurrentTransactions),
            "a retry while the markers are written"
        );
        let complete = prepare.prepare_complete(60);
        assert_eq!(
            end_v2(&complete, (7, 3), true, None),
            Ok(EndV2::Done(7, 4)),
            "a retry after completion gets the new identity"
        );
        assert_eq!(
            end_v2(&complete, (7, 3), false, None),
            Err(TxnError::ProducerFenced),
            "the other outcome with the old epoch is fenced"
        );
        assert_eq!(
            complete.prepare_add(7, 3, &partitions(&[("a", 0)]), 70, TxnVersion::V2),
            Err(TxnError::ProducerFenced),
            "a late write of the ended transaction is fenced"
        );
        assert_eq!(
            end_v2(&complete, (7, 4), true, None),
            Err(TxnError::InvalidTxnState),
            "a commit with nothing open"
        );
        let empty_abort = written(end_v2(&complete, (7, 4), false, None));
        assert_eq!(empty_abort.state, TxnState::PrepareAbort);
        assert!(empty_abort.partitions.is_empty());
        assert_eq!(empty_abort.producer_epoch, 5, "an empty abort bumps too");
    }

    #[test]
    fn an_exhausted_v2_epoch_moves_the_client_to_a_new_producer_id() {
        let ongoing = ongoing_v2(i16::MAX - 1);
        assert_eq!(
            end_v2(&ongoing, (7, i16::MAX - 1), true, None),
            Err(TxnError::ConcurrentTransactions),
            "no fresh id yet: retriable"
        );
        let prepare = written(end_v2(&ongoing, (7, i16::MAX - 1), true, Some(99)));
        assert_eq!(
            (prepare.producer_id, prepare.producer_epoch),
            (7, i16::MAX),
            "markers of the old id with the largest epoch"
        );
        assert_eq!(prepare.client_identity(), (99, 0));
        let complete = prepare.prepare_complete(60);
        assert_eq!((complete.producer_id, complete.producer_epoch), (99, 0));
        assert_eq!(
            end_v2(&complete, (7, i16::MAX - 1), true, None),
            Ok(EndV2::Done(99, 0))
        );
        let value = complete.encode_value();
        assert_eq!(TxnMetadata::decode_value("v2", &value), Ok(complete));
    }

    #[test]
    fn verification_needs_the_partition_in_the_ongoing_transaction() {
        let ongoing = ongoing_v2(0);
        assert_eq!(
            ongoing.check_partitions_added(7, 0, &partitions(&[("a", 0)])),
            Ok(())
        );
        assert_eq!(
            ongoing.check_partitions_added(7, 0, &partitions(&[("a", 1)])),
            Err(TxnError::InvalidTxnState)
        );
        assert_eq!(
            ongoing.check_partitions_added(7, 1, &partitions(&[("a", 0)])),
            Err(TxnError::ProducerFenced)
        );
        let complete = written(end_v2(&ongoing, (7, 0), false, None)).prepare_complete(9);
        assert_eq!(
            complete.check_partitions_added(7, 1, &partitions(&[("a", 0)])),
            Err(TxnError::InvalidTxnState)
        );
    }

    #[test]
    fn only_idle_ids_expire() {
        let ongoing = ongoing_v2(0);
        assert!(!ongoing.is_expired(1_000_000, 10), "a transaction is open");
        let complete = written(end_v2(&ongoing, (7, 0), true, None)).prepare_complete(100);
        assert!(!complete.is_expired(105, 10));
        assert!(complete.is_expired(111, 10));
    }
}
