//! Fetch (API 1), v4..=17: consumers read stored record batches, zero-copy.
//!
//! Runs on the connection's shard. Reads go to the shards that own the
//! partitions (one call per owning shard, concurrently); each owner returns
//! the stored batches as the `Bytes` its log handed out, and the response is
//! framed by hand ([`encode_fetch_response`]) so those buffers become their
//! own iovecs: record bytes are never copied in user space
//! (`net::FETCH_RECORD_BYTES_COPIED` stays 0).
//!
//! Visibility: read_uncommitted consumers read below the high watermark
//! (`PartitionReplica::high_watermark`: what the in-sync replicas hold
//! durably); read_committed ones (isolation_level 1) below the last stable
//! offset (`PartitionReplica::last_stable_offset`, shard/txn_state.rs: no
//! further than the first offset of an open transaction), and they get the
//! aborted transactions overlapping the returned range (producer id, first
//! offset) so that they skip those records. read_uncommitted consumers get
//! a null list, as Kafka answers. Every answer reports the LSO.
//!
//! Kafka's rules (docs: KAFKA-BEHAVIOUR.md "Offsets and fetch"):
//! - an offset below the log start or beyond the log end answers
//!   OFFSET_OUT_OF_RANGE; an offset at the end (or between the high
//!   watermark and the end) answers empty, after the long poll;
//! - `max_bytes` bounds the whole response and `partition_max_bytes` each
//!   partition, except that the first batch of the first partition with
//!   data is returned whole, so a consumer always progresses. The response
//!   may hold less than Kafka's would: each shard reads within its share of
//!   `max_bytes`, and partitions after one whose next batch no longer fits
//!   are not read (`read_all`, decision 0019); the next fetch reads them;
//! - batches are returned whole: a fetch from the middle of a batch returns
//!   that batch, and the client skips the records before its offset;
//! - long poll: while the response holds fewer than `min_bytes`, wait up to
//!   `max_wait_ms` for the high watermark of any fetched partition to move
//!   (shard/notify.rs), then, after `--fetch-debounce-us` (appends that
//!   follow the first join the answer), read again. Errors of the read
//!   (not led here, a leader epoch mismatch, OFFSET_OUT_OF_RANGE) answer at
//!   once. Partitions set aside before any read (unknown topic, partition
//!   or topic id; not authorized: `Resolved::set_aside`) do not: the
//!   others long-poll and the answer holds their errors too, as Kafka's
//!   `erroneous` partitions. A fetch of only such partitions answers at
//!   once (Kafka: `interesting` is empty).
//!   Each owning shard waits for its own partitions and reads them in the
//!   same job (`read_or_wait_on_owner`); the first owner to answer wakes
//!   the others, which read at once.
//!
//! KIP-227 sessions (v7+) are kept per shard, see fetch_session.rs.
//!
//! Leadership (from the published view): a partition this broker does not
//! lead answers NOT_LEADER_OR_FOLLOWER; a `current_leader_epoch` older than
//! the partition's FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH (-1 skips
//! the check). From v16 those answers name the current leader and epoch,
//! and the response lists the leaders' endpoints on the client's listener
//! (KIP-951).

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::authorizer::Access;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_channel::oneshot;
use futures_util::FutureExt;
use futures_util::future::{Either, LocalBoxFuture, join_all, select, select_all};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, FetchRequest};
use sluice_engine::io::Io;
use sluice_engine::{LogError, Offset, ReadLimits};

use crate::handlers::fetch_session::{
    INVALID_SESSION_ID, PartitionFetch, PartitionKey, PartitionOutcome, SessionPlan, TopicKey,
    with_shard_sessions,
};
use crate::handlers::{LeaderEndpoint, LeaderHint, Reply, leader_epoch_error};
use crate::metadata::{ClusterMetadata, PartitionMetadata, TopicMetadata};
use crate::protocol::ResponseFrame;
use crate::shard::notify::HighWatermarkWatch;
use crate::shard::{Shard, ShardGone, ShardId, TopicPartition};

/// Versions from which NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH
/// answers name the current leader and its endpoint (KIP-951).
const LEADER_HINT_VERSION_MIN: i16 = 16;

/// Upper bound of a response's record bytes whatever the client asks
/// (Kafka's fetch.max.bytes default, 55 MiB).
pub const FETCH_RESPONSE_BYTES_MAX: usize = 57_671_680;

/// Buffers in one response frame at most. The frame goes to the socket in
/// one vectored write, and the kernel refuses more than IOV_MAX (1024)
/// iovecs; partitions whose records would not fit are answered without
/// records this time (the client fetches them again).
pub const RESPONSE_PARTS_MAX: usize = 1000;

/// Versions from which Fetch is flexible (compact types, tagged fields).
const FLEXIBLE_VERSION_MIN: i16 = 12;
/// Versions from which topics are named by id.
const TOPIC_ID_VERSION_MIN: i16 = 13;
/// isolation_level of read_committed consumers.
const READ_COMMITTED: i8 = 1;

/// The answer for one partition.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PartitionAnswer {
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Whole stored batches, as the log returned them (never copied).
    pub records: Vec<Bytes>,
    /// Sum of `records` lengths.
    pub records_size: usize,
    /// read_committed only: the aborted transactions overlapping the
    /// returned range, as (producer id, first offset).
    pub aborted_transactions: Vec<(i64, i64)>,
    /// KIP-951 (v16+): the current leader's id and epoch, with
    /// NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH.
    pub current_leader: Option<(i32, i32)>,
}

impl PartitionAnswer {
    /// An error answer for a partition we cannot describe (Kafka reports -1
    /// offsets then).
    pub fn error(error: ResponseError) -> PartitionAnswer {
        PartitionAnswer {
            error_code: error.code(),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            records: Vec::new(),
            records_size: 0,
            aborted_transactions: Vec::new(),
            current_leader: None,
        }
    }
}

/// One topic of a response: its name (written before v13) or its id
/// (written from v13), and its partitions (index, answer).
#[derive(Debug, Clone)]
pub struct TopicAnswer {
    pub name: Arc<str>,
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<(i32, PartitionAnswer)>,
}

/// A whole Fetch response, before framing.
#[derive(Debug, Clone)]
pub struct FetchAnswer {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<TopicAnswer>,
    /// Aborted transactions: an empty list for read_committed consumers,
    /// null for read_uncommitted ones (as Kafka answers).
    pub read_committed: bool,
    /// KIP-951 (v16+): the endpoints of the leaders named in partitions'
    /// `current_leader`, on the client's listener.
    pub node_endpoints: Vec<LeaderEndpoint>,
}

/// `listener`: the name of the listener the client connected on, whose
/// endpoints the KIP-951 leader hints carry.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    correlation_id: i32,
    request: FetchRequest,
    listener: &str,
    access: &Access<'_>,
) -> anyhow::Result<Reply> {
    let read_committed = request.isolation_level == READ_COMMITTED;
    let (fetches, forgotten) = request_partitions(version, &request);
    let begun = with_shard_sessions(|cache| {
        cache.begin(
            version,
            request.session_id,
            request.session_epoch,
            fetches,
            forgotten,
            shard.io.now_ms(),
        )
    });
    let begun = match begun {
        Ok(begun) => begun,
        Err(error) => {
            let answer = FetchAnswer {
                throttle_time_ms: 0,
                error_code: error.code(),
                session_id: INVALID_SESSION_ID,
                topics: Vec::new(),
                read_committed,
                node_endpoints: Vec::new(),
            };
            return Ok(Reply::Frame(encode_fetch_response(
                version,
                correlation_id,
                answer,
            )?));
        }
    };
    let partitions = begun.partitions;
    let resolved = resolve(shard, version, &partitions, listener, access);
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(FETCH_RESPONSE_BYTES_MAX);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let deadline = Instant::now() + max_wait;
    // The first pass reads, and (when the fetch may wait) an owner with
    // nothing to return waits on its own shard; later passes (min_bytes not
    // reached yet) wait for a change from what the last one saw. A partition
    // that failed to resolve for a reason of Kafka's read (not led here, a
    // leader epoch mismatch) is an error answered at once: no owner waits
    // then. Partitions set aside wait with the others, and a fetch of only
    // those answers at once (module docs).
    let read_failed = resolved
        .iter()
        .any(|resolved| resolved.location.is_err() && !resolved.set_aside());
    let interesting = resolved.iter().any(|resolved| !resolved.set_aside());
    let mut pass = if min_bytes > 0 && !max_wait.is_zero() && !read_failed && interesting {
        Pass::ReadOrWait { deadline }
    } else {
        Pass::Read
    };
    let answers = loop {
        let (mut answers, held_back) = read_all(
            shard,
            &partitions,
            &resolved,
            max_bytes,
            read_committed,
            true,
            pass,
        )
        .await;
        let mut total = apply_response_limits(&mut answers, &partitions, max_bytes);
        if total < min_bytes && held_back {
            // A shard's share held back data that reading in order would
            // have answered with: read in order before waiting for more.
            answers = read_all(
                shard,
                &partitions,
                &resolved,
                max_bytes,
                read_committed,
                false,
                Pass::Read,
            )
            .await
            .0;
            total = apply_response_limits(&mut answers, &partitions, max_bytes);
        }
        let failed = answers
            .iter()
            .zip(&resolved)
            .any(|(answer, resolved)| answer.error_code != 0 && !resolved.set_aside());
        if total >= min_bytes || failed || !interesting || Instant::now() >= deadline {
            break answers;
        }
        let observed = observed(&resolved, &answers);
        if observed.is_empty() {
            break answers;
        }
        pass = Pass::WaitThenRead { deadline, observed };
    };
    let outcomes: Vec<PartitionOutcome> = answers
        .iter()
        .map(|answer| PartitionOutcome {
            error_code: answer.error_code,
            high_watermark: answer.high_watermark,
            log_start_offset: answer.log_start_offset,
            records_size: answer.records_size,
        })
        .collect();
    let (session_id, include) = match begun.plan {
        SessionPlan::Sessionless => (INVALID_SESSION_ID, vec![true; answers.len()]),
        SessionPlan::Full => (
            with_shard_sessions(|cache| {
                cache.finish_full(version, &partitions, &outcomes, shard.io.now_ms())
            }),
            vec![true; answers.len()],
        ),
        SessionPlan::Incremental { session_id } => (
            session_id,
            with_shard_sessions(|cache| {
                cache.finish_incremental(session_id, &partitions, &outcomes)
            }),
        ),
    };
    let mut topics: Vec<(TopicKey, TopicAnswer)> = Vec::new();
    let mut node_endpoints: BTreeMap<i32, LeaderEndpoint> = BTreeMap::new();
    for (((fetch, resolved), mut answer), include) in
        partitions.iter().zip(&resolved).zip(answers).zip(include)
    {
        if !include {
            continue;
        }
        if version >= LEADER_HINT_VERSION_MIN
            && let Some(hint) = &resolved.leader
        {
            answer.current_leader = Some((hint.leader_id, hint.leader_epoch));
            if let Some(endpoint) = &hint.endpoint {
                node_endpoints
                    .entry(endpoint.id)
                    .or_insert_with(|| endpoint.clone());
            }
        }
        let entry = (fetch.key.partition, answer);
        match topics.last_mut() {
            Some((key, topic)) if *key == fetch.key.topic => topic.partitions.push(entry),
            _ => topics.push((
                fetch.key.topic.clone(),
                TopicAnswer {
                    name: Arc::clone(&resolved.name),
                    topic_id: resolved.topic_id,
                    partitions: vec![entry],
                },
            )),
        }
    }
    let answer = FetchAnswer {
        throttle_time_ms: 0,
        error_code: 0,
        session_id,
        topics: topics.into_iter().map(|(_, topic)| topic).collect(),
        read_committed,
        node_endpoints: node_endpoints.into_values().collect(),
    };
    Ok(Reply::Frame(encode_fetch_response(
        version,
        correlation_id,
        answer,
    )?))
}

/// The request's partitions, in order, and the forgotten ones (sessions).
fn request_partitions(
    version: i16,
    request: &FetchRequest,
) -> (Vec<PartitionFetch>, Vec<PartitionKey>) {
    let topic_key = |name: &str, id: uuid::Uuid| {
        if version >= TOPIC_ID_VERSION_MIN {
            TopicKey::Id(id)
        } else {
            TopicKey::Name(Arc::from(name))
        }
    };
    let mut fetches = Vec::new();
    for topic in &request.topics {
        let key = topic_key(topic.topic.0.as_str(), topic.topic_id);
        for partition in &topic.partitions {
            fetches.push(PartitionFetch {
                key: PartitionKey {
                    topic: key.clone(),
                    partition: partition.partition,
                },
                fetch_offset: partition.fetch_offset,
                partition_max_bytes: partition.partition_max_bytes,
                current_leader_epoch: partition.current_leader_epoch,
            });
        }
    }
    let mut forgotten = Vec::new();
    for topic in &request.forgotten_topics_data {
        let key = topic_key(topic.topic.0.as_str(), topic.topic_id);
        for partition in &topic.partitions {
            forgotten.push(PartitionKey {
                topic: key.clone(),
                partition: *partition,
            });
        }
    }
    (fetches, forgotten)
}

/// Where a requested partition lives, or why it cannot be fetched.
struct Resolved {
    /// The topic's name and id, for the response.
    name: Arc<str>,
    topic_id: uuid::Uuid,
    location: Result<(TopicPartition, ShardId), ResponseError>,
    /// Where the client should go instead (NOT_LEADER_OR_FOLLOWER and
    /// FENCED_LEADER_EPOCH).
    leader: Option<LeaderHint>,
}

impl Resolved {
    /// Set aside before any read, as Kafka's KafkaApis.handleFetchRequest
    /// puts a partition of an unknown topic id, of a topic the principal
    /// may not read or missing from the metadata in `erroneous`: answered
    /// with its error, it neither reads nor cuts the long poll of the
    /// others short. A consumer whose session holds such a partition would
    /// otherwise fetch at round-trip speed, every answer immediate. Other
    /// errors of resolution (not led here, a leader epoch mismatch) are
    /// errors of Kafka's read, which answer at once.
    fn set_aside(&self) -> bool {
        matches!(
            self.location,
            Err(ResponseError::UnknownTopicOrPartition
                | ResponseError::UnknownTopicId
                | ResponseError::TopicAuthorizationFailed)
        )
    }
}

/// `access`: a topic the principal may not READ answers
/// TOPIC_AUTHORIZATION_FAILED (decided once per topic of the request).
/// Leader hints name the leader's endpoint on `listener`.
fn resolve(
    shard: &Shard,
    version: i16,
    partitions: &[PartitionFetch],
    listener: &str,
    access: &Access<'_>,
) -> Vec<Resolved> {
    let snapshot = shard.metadata.snapshot();
    let by_id: HashMap<uuid::Uuid, &TopicMetadata> = if version >= TOPIC_ID_VERSION_MIN {
        snapshot
            .topics
            .values()
            .map(|topic| (topic.id, topic))
            .collect()
    } else {
        HashMap::new()
    };
    let mut names: HashMap<&str, Arc<str>> = HashMap::new();
    // The previous partition's topic: a request lists a topic's partitions
    // together, so its name or id is hashed once, not once per partition.
    // A topic of the view, with the name its partitions share.
    type Found<'view> = Option<(&'view TopicMetadata, Arc<str>)>;
    let mut last: Option<(&TopicKey, Found<'_>, bool)> = None;
    partitions
        .iter()
        .map(|fetch| {
            let unknown = match &fetch.key.topic {
                TopicKey::Name(_) => ResponseError::UnknownTopicOrPartition,
                TopicKey::Id(_) => ResponseError::UnknownTopicId,
            };
            let (found, readable) = match &last {
                Some((key, found, readable)) if **key == fetch.key.topic => {
                    (found.clone(), *readable)
                }
                _ => {
                    let topic = match &fetch.key.topic {
                        TopicKey::Name(name) => snapshot.topics.get(name.as_ref()),
                        TopicKey::Id(id) => by_id.get(id).copied(),
                    };
                    let found = topic.map(|topic| {
                        let name = names
                            .entry(topic.name.as_str())
                            .or_insert_with(|| Arc::from(topic.name.as_str()));
                        (topic, Arc::clone(name))
                    });
                    let readable = !access.is_enabled() || {
                        let name = match (&found, &fetch.key.topic) {
                            (Some((_, name)), _) => Some(name.as_ref()),
                            (None, TopicKey::Name(name)) => Some(name.as_ref()),
                            (None, TopicKey::Id(_)) => None,
                        };
                        name.is_none_or(|name| {
                            access.allows(AclOperation::Read, ResourceType::Topic, name)
                        })
                    };
                    last = Some((&fetch.key.topic, found.clone(), readable));
                    (found, readable)
                }
            };
            if !readable {
                let (name, topic_id) = match (&found, &fetch.key.topic) {
                    (Some((topic, name)), _) => (Arc::clone(name), topic.id),
                    (None, TopicKey::Name(name)) => (Arc::clone(name), uuid::Uuid::nil()),
                    (None, TopicKey::Id(id)) => (Arc::from(""), *id),
                };
                return Resolved {
                    name,
                    topic_id,
                    location: Err(ResponseError::TopicAuthorizationFailed),
                    leader: None,
                };
            }
            let Some((topic, name)) = found else {
                let (name, topic_id) = match &fetch.key.topic {
                    TopicKey::Name(name) => (Arc::clone(name), uuid::Uuid::nil()),
                    TopicKey::Id(id) => (Arc::from(""), *id),
                };
                return Resolved {
                    name,
                    topic_id,
                    location: Err(unknown),
                    leader: None,
                };
            };
            let state = usize::try_from(fetch.key.partition)
                .ok()
                .and_then(|index| topic.partitions.get(index));
            let location = state
                .ok_or(ResponseError::UnknownTopicOrPartition)
                .and_then(|state| serving(&snapshot, state, fetch.current_leader_epoch))
                .map(|owner| {
                    let topic_partition = TopicPartition {
                        topic: Arc::clone(&name),
                        partition: fetch.key.partition,
                    };
                    (topic_partition, owner)
                });
            let leader = match (&location, state) {
                (
                    Err(ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch),
                    Some(state),
                ) => Some(LeaderHint::of(&snapshot, state, listener)),
                _ => None,
            };
            Resolved {
                name,
                topic_id: topic.id,
                location,
                leader,
            }
        })
        .collect()
}

/// The shard serving `partition` for a client that knows leader epoch
/// `requested` (-1: unknown). A replica held here checks the epoch first,
/// as Kafka: a client behind on elections is told so (FENCED_LEADER_EPOCH)
/// rather than only that this broker does not lead.
pub(crate) fn serving(
    view: &ClusterMetadata,
    partition: &PartitionMetadata,
    requested: i32,
) -> Result<ShardId, ResponseError> {
    if partition.local_shard.is_some()
        && let Some(error) = leader_epoch_error(partition.leader_epoch, requested)
    {
        return Err(error);
    }
    crate::handlers::serving_shard(view, partition)
}

/// One partition read, sent to its owning shard.
struct ReadSpec {
    /// Position in the request (and response).
    slot: usize,
    topic_partition: TopicPartition,
    /// The id of the topic the request was resolved to: a replica of
    /// another id (the topic deleted and created again during a long poll)
    /// answers as a deleted one.
    topic_id: uuid::Uuid,
    fetch_offset: i64,
    partition_max_bytes: usize,
    /// isolation_level 1: read below the last stable offset.
    read_committed: bool,
}

/// Run `work` on shard `target`: directly when it is this shard, else
/// through its inbox.
pub(crate) async fn on_shard<R, F, W>(
    shard: &Rc<Shard>,
    target: ShardId,
    work: W,
) -> Result<R, ShardGone>
where
    R: Send + 'static,
    F: Future<Output = R> + 'static,
    W: FnOnce(Rc<Shard>) -> F + Send + 'static,
{
    if target == shard.id {
        Ok(work(Rc::clone(shard)).await)
    } else {
        shard.shards.call(target, work).await
    }
}

/// How one pass of a fetch meets its partitions' owners.
enum Pass {
    /// Read and return.
    Read,
    /// Read; an owner with nothing to return (every partition caught up,
    /// no error) waits on its own shard until one of them changes, the
    /// deadline, or another owner's answer, then reads again
    /// ([`read_or_wait_on_owner`]).
    ReadOrWait { deadline: Instant },
    /// Wait as above for a change from what the last pass saw, then read.
    WaitThenRead {
        deadline: Instant,
        observed: BTreeMap<ShardId, Vec<Observed>>,
    },
}

/// Read every partition (concurrently per owning shard). One answer per
/// partition, in request order, each within its partition limit and what
/// its shard may read; [`apply_response_limits`] then applies the limits
/// across shards in request order.
///
/// With `shared`, when the partition limits add up to more than
/// `max_bytes`, each shard reads within its share of `max_bytes`, in
/// proportion to its partitions' limits; otherwise (and with one shard)
/// each reads within `max_bytes`. Why: every shard reading up to
/// `max_bytes` read the whole response once per shard, and the response
/// limits threw the rest away: with [`fills_the_response`], it is why a
/// consumer catching up on 10,000 partitions over two shards read 21.8 GB
/// from disk for a 4 GB backlog (12.3-14.3 GB with the shares alone; issue
/// 11). The shares sum to `max_bytes`, so nothing read is thrown
/// away but an oversized first batch; a response whose data is all on one
/// shard comes back smaller than in order, and the consumer's next fetch
/// reads on. Returns whether a share held back a read (some partition with
/// records to read was read with less than its own limit because of it).
///
/// With a waiting `pass`, the first owner to answer tells the others to
/// stop waiting and read (dropping their `wake`), so the answer holds what
/// every shard has by then. Waiting and reading in
/// one job per owner costs a long-polling fetch one cross-shard call per
/// other shard (two wake-ups, three when this shard answers first), not a
/// read, a wait and a second read (six): issue 11, docs/benchmarks.md,
/// sixteenth session.
async fn read_all(
    shard: &Rc<Shard>,
    partitions: &[PartitionFetch],
    resolved: &[Resolved],
    max_bytes: usize,
    read_committed: bool,
    shared: bool,
    pass: Pass,
) -> (Vec<PartitionAnswer>, bool) {
    let mut answers: Vec<Option<PartitionAnswer>> = vec![None; partitions.len()];
    let mut groups: BTreeMap<ShardId, Vec<ReadSpec>> = BTreeMap::new();
    for (slot, (fetch, resolved)) in partitions.iter().zip(resolved).enumerate() {
        match &resolved.location {
            Err(error) => answers[slot] = Some(PartitionAnswer::error(*error)),
            Ok((topic_partition, owner)) => groups.entry(*owner).or_default().push(ReadSpec {
                slot,
                topic_partition: topic_partition.clone(),
                topic_id: resolved.topic_id,
                fetch_offset: fetch.fetch_offset,
                partition_max_bytes: usize::try_from(fetch.partition_max_bytes).unwrap_or(0),
                read_committed,
            }),
        }
    }
    let limits = |specs: &[ReadSpec]| {
        specs.iter().fold(0_usize, |sum, spec| {
            sum.saturating_add(spec.partition_max_bytes)
        })
    };
    let all_limits = groups
        .values()
        .fold(0_usize, |sum, specs| sum.saturating_add(limits(specs)));
    let split = shared && groups.len() > 1 && all_limits > max_bytes;
    let (deadline, mut observed) = match pass {
        Pass::Read => (None, None),
        Pass::ReadOrWait { deadline } => (Some(deadline), None),
        Pass::WaitThenRead { deadline, observed } => (Some(deadline), Some(observed)),
    };
    // Dropped once the first owner answers: the others stop waiting.
    let mut wakes = Vec::new();
    let reads: Vec<LocalBoxFuture<'_, _>> = groups
        .into_iter()
        .map(|(owner, specs)| {
            let slots: Vec<usize> = specs.iter().map(|spec| spec.slot).collect();
            let share = if split {
                // Floor of max_bytes x (this shard's limits / all limits): the
                // shares never add up to more than max_bytes.
                let share = max_bytes as u128 * limits(&specs) as u128 / all_limits.max(1) as u128;
                usize::try_from(share).unwrap_or(max_bytes)
            } else {
                max_bytes
            };
            let wait = deadline.map(|deadline| {
                let (wake, woken) = oneshot::channel::<()>();
                wakes.push(wake);
                OwnerWait {
                    deadline,
                    observed: observed
                        .as_mut()
                        .map(|observed| observed.remove(&owner).unwrap_or_default()),
                    woken,
                }
            });
            async move {
                let result = on_shard(shard, owner, move |owner_shard| {
                    read_or_wait_on_owner(owner_shard, specs, share, wait)
                })
                .await;
                (slots, result)
            }
            .boxed_local()
        })
        .collect();
    let results = if wakes.is_empty() || reads.is_empty() {
        join_all(reads).await
    } else {
        let (first, _, rest) = select_all(reads).await;
        drop(wakes);
        let mut results = join_all(rest).await;
        results.push(first);
        results
    };
    let mut held_back = false;
    for (slots, result) in results {
        match result {
            Ok((read, limited)) => {
                held_back |= split && limited;
                for (slot, answer) in read {
                    answers[slot] = Some(answer);
                }
            }
            Err(gone) => {
                tracing::debug!(%gone, "fetch from a stopping shard");
                for slot in slots {
                    answers[slot] =
                        Some(PartitionAnswer::error(ResponseError::NotLeaderOrFollower));
                }
            }
        }
    }
    let answers = answers
        .into_iter()
        .map(|answer| {
            answer.unwrap_or_else(|| PartitionAnswer::error(ResponseError::UnknownServerError))
        })
        .collect();
    (answers, held_back)
}

/// How an owner of a long-polling fetch waits.
struct OwnerWait {
    deadline: Instant,
    /// What the last pass saw of this owner's partitions; `None`: read
    /// first and wait only if that finds nothing to return.
    observed: Option<Vec<Observed>>,
    /// Resolves (its sender dropped) when another owner has answered, or
    /// the fetch is gone.
    woken: oneshot::Receiver<()>,
}

/// On the owning shard: [`read_on_owner`], and with `wait`, the long poll
/// for this shard's partitions. With nothing observed yet, read first and
/// return at once if any partition has an error or records to read (even
/// ones a limit held back: the requester decides what to do with them).
/// Otherwise wait until a partition's high watermark or log start moves,
/// the deadline, or `woken`; after a change, let the appends that follow
/// it land for `--fetch-debounce-us` (never past the deadline, cut short
/// by `woken`) so a consumer that keeps up gets several appends per answer;
/// then read.
async fn read_or_wait_on_owner(
    owner: Rc<Shard>,
    specs: Vec<ReadSpec>,
    max_bytes: usize,
    wait: Option<OwnerWait>,
) -> (Vec<(usize, PartitionAnswer)>, bool) {
    let Some(mut wait) = wait else {
        return read_on_owner(&owner, &specs, max_bytes).await;
    };
    let observed = match wait.observed.take() {
        Some(observed) => observed,
        None => {
            let read = read_on_owner(&owner, &specs, max_bytes).await;
            let caught_up = read.0.iter().zip(&specs).all(|((_, answer), spec)| {
                answer.error_code == 0
                    && answer.records_size == 0
                    && spec.fetch_offset >= visible_end(spec, answer)
            });
            // Another owner answered already: this read is the answer.
            if !caught_up || !matches!(wait.woken.try_recv(), Ok(None)) {
                return read;
            }
            read.0
                .iter()
                .zip(&specs)
                .map(|((_, answer), spec)| Observed {
                    topic_partition: spec.topic_partition.clone(),
                    topic_id: spec.topic_id,
                    high_watermark: answer.high_watermark,
                    log_start_offset: answer.log_start_offset,
                })
                .collect()
        }
    };
    let changed = wait_on_owner(Rc::clone(&owner), observed, wait.deadline, &mut wait.woken).await;
    if changed {
        debounce(owner.config.fetch_debounce, wait.deadline, &mut wait.woken).await;
    }
    read_on_owner(&owner, &specs, max_bytes).await
}

/// On the owning shard: answer `specs` as if read in order, sharing
/// `max_bytes`, with the first partition that returns data getting its
/// first batch whole.
///
/// Reading them one after the other kept one disk read in flight per fetch
/// (a catch-up consumer read at a quarter of the disk's bandwidth, and one
/// of 1,000 partitions fell further behind with every fetch that went to
/// disk). So the partitions are read in windows: while the partition
/// limits of the next partitions add up within what is left of
/// `max_bytes`, each one's in-order limit is its own partition limit,
/// whatever the earlier ones return, so that window is read at once. Walking
/// its answers in order keeps each one, except an empty answer where the
/// in-order read would have returned the first batch whole (a batch larger
/// than the partition limit) and an answer that no longer fits after such a
/// batch, which are read again. The next window starts with what the
/// earlier ones left of `max_bytes`; a partition whose limit exceeds what
/// is left is read alone, as in order. The answer is the in-order one
/// (`concurrent_reads_answer_what_reading_in_order_answers` in tests.rs).
///
/// Also returns whether `max_bytes` held a read back: some partition with
/// records to read was read with less than its own limit because less than
/// that was left.
async fn read_on_owner(
    owner: &Rc<Shard>,
    specs: &[ReadSpec],
    max_bytes: usize,
) -> (Vec<(usize, PartitionAnswer)>, bool) {
    let mut remaining = max_bytes;
    let mut held_back = false;
    let mut have_data = false;
    // A partition's next batch did not fit what was left.
    let mut full = false;
    let mut answers = Vec::with_capacity(specs.len());
    let mut next = 0;
    while next < specs.len() {
        let mut budget = 0_usize;
        let window = specs[next..]
            .iter()
            .take_while(|spec| {
                budget = budget.saturating_add(spec.partition_max_bytes);
                budget <= remaining
            })
            .count()
            .max(1);
        let window = &specs[next..next + window];
        next += window.len();
        // A window of one is read below, with its in-order limit.
        let mut early = Vec::with_capacity(window.len());
        if window.len() > 1 {
            for group in window.chunks(JOIN_GROUP_MAX) {
                early.extend(
                    join_all(
                        group.iter().map(|spec| {
                            read_partition(owner, spec, spec.partition_max_bytes, false)
                        }),
                    )
                    .await,
                );
            }
        }
        let mut early = early.into_iter();
        for spec in window {
            let limit = if full {
                0
            } else {
                remaining.min(spec.partition_max_bytes)
            };
            let answer = match early.next() {
                // An earlier oversized first batch can shrink `limit`
                // below the partition limit: then the answer may not fit
                // any more.
                Some(answer)
                    if answer.records_size <= limit
                        && (have_data
                            || answer.error_code != 0
                            || answer.records_size > 0
                            || spec.fetch_offset >= visible_end(spec, &answer)) =>
                {
                    answer
                }
                _ => read_partition(owner, spec, limit, !have_data).await,
            };
            full |= fills_the_response(spec, limit, have_data, &answer);
            // Held back: read with less than its own limit, and it had
            // records to read (a partition at its end lost nothing).
            held_back |= limit < spec.partition_max_bytes
                && answer.error_code == 0
                && spec.fetch_offset < visible_end(spec, &answer);
            remaining = remaining.saturating_sub(answer.records_size);
            have_data |= answer.records_size > 0;
            answers.push((spec.slot, answer));
        }
        if next < specs.len() {
            yield_now().await;
        }
    }
    (answers, held_back)
}

/// What `spec`'s consumer may read up to, per `answer`.
fn visible_end(spec: &ReadSpec, answer: &PartitionAnswer) -> i64 {
    if spec.read_committed {
        answer.last_stable_offset
    } else {
        answer.high_watermark
    }
}

/// Whether `answer` (read with `limit`, after earlier partitions returned
/// data or not) shows the response full: the partition has records to
/// read, but its next batch did not fit what the earlier partitions left.
/// The partitions after it are then answered without reading: each read
/// would read up to what is left (from disk, in a catch-up) and find the
/// same, throwing the bytes away. A consumer catching up on 10,000
/// partitions still read 3.1-3.6 GB from disk per GB it received that way
/// once each shard read within its share (issue 11). The response is then
/// smaller than Kafka's by at most what was left (less than that batch);
/// those partitions are read by the next fetch.
fn fills_the_response(
    spec: &ReadSpec,
    limit: usize,
    had_data: bool,
    answer: &PartitionAnswer,
) -> bool {
    had_data
        && limit < spec.partition_max_bytes
        && answer.error_code == 0
        && answer.records_size == 0
        && spec.fetch_offset < visible_end(spec, answer)
}

/// Reads of a window are joined in groups of at most this many: up to 30
/// futures, `join_all` polls them in place (one allocation for the group);
/// past it, it makes each one a task of a `FuturesOrdered` (an allocation,
/// a waker and a queue push per partition: 6-8 % of the broker's CPU with
/// a consumer fetching 1,000 partitions, issue 11). A group's reads still
/// run at once, so a catch-up has up to 30 partition reads in flight.
const JOIN_GROUP_MAX: usize = 30;

/// Let the shard's other tasks run before this one goes on: reads answered
/// from memory complete without suspending, and a fetch of thousands of
/// partitions would otherwise hold the shard for milliseconds, with every
/// produce whose append waits in this shard's inbox stalled behind it.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|context| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            context.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// The reference [`read_on_owner`] must agree with: one partition after
/// the other, each within what the earlier ones left, none read after the
/// first whose next batch no longer fit ([`fills_the_response`]).
#[cfg(test)]
async fn read_in_order(
    owner: Rc<Shard>,
    specs: Vec<ReadSpec>,
    max_bytes: usize,
) -> Vec<(usize, PartitionAnswer)> {
    let mut remaining = max_bytes;
    let mut have_data = false;
    let mut full = false;
    let mut answers = Vec::with_capacity(specs.len());
    for spec in &specs {
        let limit = if full {
            0
        } else {
            remaining.min(spec.partition_max_bytes)
        };
        let answer = read_partition(&owner, spec, limit, !have_data).await;
        full |= fills_the_response(spec, limit, have_data, &answer);
        remaining = remaining.saturating_sub(answer.records_size);
        have_data |= answer.records_size > 0;
        answers.push((spec.slot, answer));
    }
    answers
}

async fn read_partition(
    owner: &Shard,
    spec: &ReadSpec,
    limit: usize,
    min_one_batch: bool,
) -> PartitionAnswer {
    let Some(replica) = owner.partition_of(&spec.topic_partition, spec.topic_id) else {
        return PartitionAnswer::error(ResponseError::UnknownTopicOrPartition);
    };
    let log = &replica.log;
    let high_watermark = replica.high_watermark();
    let last_stable_offset = replica.last_stable_offset();
    // What this consumer may read.
    let visible_end = if spec.read_committed {
        last_stable_offset
    } else {
        high_watermark
    };
    let log_start = log.log_start_offset();
    let mut answer = PartitionAnswer {
        error_code: 0,
        high_watermark: high_watermark.value(),
        last_stable_offset: last_stable_offset.value(),
        log_start_offset: log_start.value(),
        records: Vec::new(),
        records_size: 0,
        aborted_transactions: Vec::new(),
        current_leader: None,
    };
    if spec.fetch_offset < log_start.value() || spec.fetch_offset > log.log_end_offset().value() {
        answer.error_code = ResponseError::OffsetOutOfRange.code();
        return answer;
    }
    // A log read stops at a segment's end: read on from where it stopped.
    let mut offset = Offset(spec.fetch_offset);
    while offset < visible_end {
        let first = min_one_batch && answer.records.is_empty();
        if answer.records_size >= limit && !first {
            break;
        }
        let limits = ReadLimits {
            max_bytes: limit.saturating_sub(answer.records_size),
            min_one_batch: first,
            max_offset: visible_end,
        };
        match log.read(offset, limits).await {
            Ok(result) => {
                if result.records.is_empty() || result.next_offset <= offset {
                    break;
                }
                answer.records_size += result.records.iter().map(Bytes::len).sum::<usize>();
                answer.records.extend(result.records);
                offset = result.next_offset;
                // The next batch does not fit what is left of the limit.
                // Reading again would only say so, after waiting for the
                // read-ahead the read above just issued from there: every
                // catch-up fetch then waited for the next fetch's disk
                // reads (engine/src/readahead.rs).
                if result.full {
                    break;
                }
            }
            Err(error) => {
                if answer.records.is_empty() {
                    answer.error_code = match error {
                        // Retention moved the log start meanwhile.
                        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
                        _ => ResponseError::KafkaStorageError,
                    }
                    .code();
                }
                tracing::warn!(partition = %spec.topic_partition, %error, "fetch read failed");
                break;
            }
        }
    }
    if spec.read_committed && answer.records_size > 0 {
        answer.aborted_transactions = replica
            .aborted_transactions(Offset(spec.fetch_offset), offset)
            .into_iter()
            .map(|aborted| (aborted.producer_id.0, aborted.first_offset.value()))
            .collect();
    }
    answer
}

/// Apply `max_bytes` and the partition limits across the whole response, in
/// request order, and the iovec budget. Only the first partition with
/// records may exceed them, by its first batch. Returns the bytes kept.
fn apply_response_limits(
    answers: &mut [PartitionAnswer],
    partitions: &[PartitionFetch],
    max_bytes: usize,
) -> usize {
    let mut total = 0usize;
    // The size prefix, and the piece before the first records.
    let mut parts = 2usize;
    for (answer, fetch) in answers.iter_mut().zip(partitions) {
        if answer.records_size == 0 {
            continue;
        }
        let first = total == 0;
        let partition_max = usize::try_from(fetch.partition_max_bytes).unwrap_or(0);
        let limit = partition_max.min(max_bytes.saturating_sub(total));
        if answer.records_size > limit {
            let records = std::mem::take(&mut answer.records);
            let (kept, size) = take_batches(records, limit, first);
            answer.records = kept;
            answer.records_size = size;
        }
        // Each buffer of records, plus the piece that follows them.
        if parts + answer.records.len() + 1 > RESPONSE_PARTS_MAX {
            answer.records.clear();
            answer.records_size = 0;
        }
        if answer.records_size > 0 {
            parts += answer.records.len() + 1;
        }
        total += answer.records_size;
    }
    total
}

/// The whole batches of `records` that fit in `limit` bytes (the first one
/// whatever its size when `first_whole`), slicing buffers, never copying.
fn take_batches(records: Vec<Bytes>, limit: usize, first_whole: bool) -> (Vec<Bytes>, usize) {
    let mut kept = Vec::new();
    let mut size = 0usize;
    for buffer in records {
        if size + buffer.len() <= limit {
            size += buffer.len();
            kept.push(buffer);
            continue;
        }
        let mut cut = 0usize;
        while let Some(batch_size) = batch_size_at(&buffer, cut) {
            let whole_first = first_whole && size == 0;
            if size + batch_size > limit && !whole_first {
                break;
            }
            size += batch_size;
            cut += batch_size;
        }
        if cut > 0 {
            kept.push(buffer.slice(..cut));
        }
        break;
    }
    (kept, size)
}

/// The size of the batch at `position` of `buffer` (stored batches: the
/// engine validated them), `None` at the end.
fn batch_size_at(buffer: &[u8], position: usize) -> Option<usize> {
    let length_field = buffer.get(position + 8..position + 12)?;
    let length = i32::from_be_bytes([
        length_field[0],
        length_field[1],
        length_field[2],
        length_field[3],
    ]);
    let size = 12 + usize::try_from(length).ok()?;
    (position + size <= buffer.len()).then_some(size)
}

/// What a waiting fetch saw of a partition: it wakes when this changes.
struct Observed {
    topic_partition: TopicPartition,
    topic_id: uuid::Uuid,
    high_watermark: i64,
    log_start_offset: i64,
}

fn observed(
    resolved: &[Resolved],
    answers: &[PartitionAnswer],
) -> BTreeMap<ShardId, Vec<Observed>> {
    let mut groups: BTreeMap<ShardId, Vec<Observed>> = BTreeMap::new();
    for (resolved, answer) in resolved.iter().zip(answers) {
        if let Ok((topic_partition, owner)) = &resolved.location
            && answer.error_code == 0
        {
            groups.entry(*owner).or_default().push(Observed {
                topic_partition: topic_partition.clone(),
                topic_id: resolved.topic_id,
                high_watermark: answer.high_watermark,
                log_start_offset: answer.log_start_offset,
            });
        }
    }
    groups
}

/// After a waiting owner saw a change: let the appends that follow the
/// first one land before reading, for `debounce` (`--fetch-debounce-us`),
/// never past the fetch's deadline, and no longer once `woken` (another
/// owner answered: this one reads at once). A consumer that keeps up then
/// gets several producers' appends per answer instead of one fetch round
/// trip per append.
async fn debounce(debounce: Duration, deadline: Instant, woken: &mut oneshot::Receiver<()>) {
    let left = deadline.saturating_duration_since(Instant::now());
    let pause = debounce.min(left);
    if !pause.is_zero() && matches!(woken.try_recv(), Ok(None)) {
        let _ = select(pin!(compio::time::sleep(pause)), woken).await;
    }
}

/// On the owning shard: wait until a partition's high watermark or log
/// start moves (or it disappears), `deadline`, or `woken`. Returns whether
/// a partition changed.
async fn wait_on_owner(
    owner: Rc<Shard>,
    observed: Vec<Observed>,
    deadline: Instant,
    woken: &mut oneshot::Receiver<()>,
) -> bool {
    loop {
        let mut replicas = Vec::with_capacity(observed.len());
        for seen in &observed {
            let Some(replica) = owner.partition_of(&seen.topic_partition, seen.topic_id) else {
                return true;
            };
            if replica.high_watermark().value() != seen.high_watermark
                || replica.log.log_start_offset().value() != seen.log_start_offset
            {
                return true;
            }
            replicas.push(replica);
        }
        let now = Instant::now();
        if now >= deadline || replicas.is_empty() {
            return false;
        }
        let pause = (deadline - now).min(HighWatermarkWatch::fallback_poll_interval());
        let changed = select_all(
            replicas
                .iter()
                .map(|replica| replica.high_watermark_watch.changed()),
        );
        let sleep = pin!(compio::time::sleep(pause));
        let either = select(changed, sleep);
        if !matches!(woken.try_recv(), Ok(None)) {
            return false;
        }
        if let Either::Right(_) = select(either, &mut *woken).await {
            return false;
        }
    }
}

/// Append an unsigned varint.
fn put_unsigned_varint(buffer: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buffer.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buffer.put_u8(value as u8);
}

fn put_array_length(buffer: &mut BytesMut, flexible: bool, length: usize) -> anyhow::Result<()> {
    if flexible {
        put_unsigned_varint(buffer, u32::try_from(length + 1)?);
    } else {
        buffer.put_i32(i32::try_from(length)?);
    }
    Ok(())
}

fn put_string(buffer: &mut BytesMut, flexible: bool, value: &str) -> anyhow::Result<()> {
    if flexible {
        put_unsigned_varint(buffer, u32::try_from(value.len() + 1)?);
    } else {
        buffer.put_i16(i16::try_from(value.len())?);
    }
    buffer.put_slice(value.as_bytes());
    Ok(())
}

/// Frame a Fetch response: the size, the response header and the body,
/// with every partition's record buffers as parts of their own (moved, not
/// copied). Everything else is encoded into pieces of one buffer.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    answer: FetchAnswer,
) -> anyhow::Result<ResponseFrame> {
    anyhow::ensure!(
        (4..=17).contains(&version),
        "Fetch v{version} is not framed here"
    );
    let flexible = version >= FLEXIBLE_VERSION_MIN;
    // parts[0] is the size prefix, set at the end.
    let mut parts: Vec<Bytes> = vec![Bytes::new()];
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(correlation_id);
    if ApiKey::Fetch.response_header_version(version) >= 1 {
        put_unsigned_varint(&mut buffer, 0); // header tagged fields
    }
    buffer.put_i32(answer.throttle_time_ms);
    if version >= 7 {
        buffer.put_i16(answer.error_code);
        buffer.put_i32(answer.session_id);
    } else {
        anyhow::ensure!(answer.error_code == 0 && answer.session_id == INVALID_SESSION_ID);
    }
    put_array_length(&mut buffer, flexible, answer.topics.len())?;
    for topic in answer.topics {
        if version >= TOPIC_ID_VERSION_MIN {
            buffer.put_slice(topic.topic_id.as_bytes());
        } else {
            put_string(&mut buffer, flexible, &topic.name)?;
        }
        put_array_length(&mut buffer, flexible, topic.partitions.len())?;
        for (partition_index, partition) in topic.partitions {
            buffer.put_i32(partition_index);
            buffer.put_i16(partition.error_code);
            buffer.put_i64(partition.high_watermark);
            buffer.put_i64(partition.last_stable_offset);
            if version >= 5 {
                buffer.put_i64(partition.log_start_offset);
            }
            if answer.read_committed {
                put_array_length(&mut buffer, flexible, partition.aborted_transactions.len())?;
                for (producer_id, first_offset) in &partition.aborted_transactions {
                    buffer.put_i64(*producer_id);
                    buffer.put_i64(*first_offset);
                    if flexible {
                        put_unsigned_varint(&mut buffer, 0); // its tagged fields
                    }
                }
            } else if flexible {
                put_unsigned_varint(&mut buffer, 0); // null compact array
            } else {
                buffer.put_i32(-1); // null array
            }
            if version >= 11 {
                buffer.put_i32(-1); // preferred_read_replica: none
            }
            let records_size: usize = partition.records.iter().map(Bytes::len).sum();
            assert_eq!(records_size, partition.records_size);
            if flexible {
                put_unsigned_varint(&mut buffer, u32::try_from(records_size + 1)?);
            } else {
                buffer.put_i32(i32::try_from(records_size)?);
            }
            if records_size > 0 {
                parts.push(buffer.split().freeze());
                parts.extend(
                    partition
                        .records
                        .into_iter()
                        .filter(|records| !records.is_empty()),
                );
            }
            if flexible {
                // Partition tagged fields: current_leader (tag 1) when set.
                match partition.current_leader {
                    Some((leader_id, leader_epoch)) => {
                        put_unsigned_varint(&mut buffer, 1);
                        put_unsigned_varint(&mut buffer, 1); // tag
                        put_unsigned_varint(&mut buffer, 9); // size
                        buffer.put_i32(leader_id);
                        buffer.put_i32(leader_epoch);
                        put_unsigned_varint(&mut buffer, 0); // its tagged fields
                    }
                    None => put_unsigned_varint(&mut buffer, 0),
                }
            }
        }
        if flexible {
            put_unsigned_varint(&mut buffer, 0); // topic tagged fields
        }
    }
    if flexible {
        // Top-level tagged fields: node_endpoints (tag 0, v16+) when any.
        if answer.node_endpoints.is_empty() || version < LEADER_HINT_VERSION_MIN {
            put_unsigned_varint(&mut buffer, 0);
        } else {
            let mut endpoints = BytesMut::new();
            put_array_length(&mut endpoints, true, answer.node_endpoints.len())?;
            for endpoint in &answer.node_endpoints {
                endpoints.put_i32(endpoint.id);
                put_string(&mut endpoints, true, &endpoint.host)?;
                endpoints.put_i32(endpoint.port);
                match &endpoint.rack {
                    Some(rack) => put_string(&mut endpoints, true, rack)?,
                    None => put_unsigned_varint(&mut endpoints, 0), // null
                }
                put_unsigned_varint(&mut endpoints, 0); // its tagged fields
            }
            put_unsigned_varint(&mut buffer, 1);
            put_unsigned_varint(&mut buffer, 0); // tag
            put_unsigned_varint(&mut buffer, u32::try_from(endpoints.len())?);
            buffer.put_slice(&endpoints);
        }
    }
    if !buffer.is_empty() {
        parts.push(buffer.freeze());
    }
    let size: usize = parts.iter().map(Bytes::len).sum();
    parts[0] = Bytes::copy_from_slice(&i32::try_from(size)?.to_be_bytes());
    Ok(ResponseFrame { parts })
}

#[cfg(test)]
mod tests;
