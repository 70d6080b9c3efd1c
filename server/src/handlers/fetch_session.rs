//! KIP-227 incremental fetch sessions: the per-shard session cache.
//!
//! A Fetch request (v7+) names a session id and epoch:
//! - epoch -1 (FINAL): a sessionless full fetch; a session id given with it
//!   is closed.
//! - epoch 0 (INITIAL): a full fetch that opens a new session (closing the
//!   one named, if any). The response carries the new session's id, and the
//!   next request on it must carry epoch 1.
//! - epoch > 0: an incremental fetch on an existing session. The request
//!   carries only partitions that were added or changed, plus
//!   `forgotten_topics_data`; the broker fetches every partition of the
//!   session but answers only those with news (records, an error, or a high
//!   watermark or log start offset different from what the session last
//!   reported). Unknown id: FETCH_SESSION_ID_NOT_FOUND; wrong epoch:
//!   INVALID_FETCH_SESSION_EPOCH; a session created with topic ids used with
//!   names (or the reverse): FETCH_SESSION_TOPIC_ID_ERROR.
//!
//! Sessions live in the cache of the shard that serves the connection (one
//! cache per shard thread, [`with_shard_sessions`]); a client reconnecting to
//! another shard gets FETCH_SESSION_ID_NOT_FOUND and starts a new session, as
//! after a broker restart. The cache holds at most [`SESSIONS_PER_SHARD_MAX`]
//! sessions.
//!
//! Eviction, as Kafka's FetchSessionCache.tryEvict: a full fetch that finds
//! the cache full may take the place of a session unused for more than
//! [`SESSION_EVICTION_MS`] (min.incremental.fetch.session.eviction.ms), the
//! least recently used first, or else of a session with fewer partitions
//! than its own that had been open for more than [`SESSION_EVICTION_MS`]
//! when last used (the fewest partitions first). Otherwise it is answered
//! without a session (session id 0, the client keeps sending full fetches)
//! and no session is disturbed: evicting the least recently used session
//! whatever its use made more active consumers than the cache holds evict
//! each other on every poll, each full fetch closing a session that its
//! consumer then found gone. Kafka's privileged (follower) sessions do not
//! occur: followers replicate over replication links, not Fetch, so every
//! session here is a consumer's.
//!
//! Memory bound: the sessions of a shard remember at most
//! [`SESSION_PARTITIONS_PER_SHARD_MAX`] partitions in all (a cached
//! partition costs about 200 bytes, so about 50 MiB per shard). Kafka has
//! no such bound, and a client adding partitions (existing or not) to its
//! session request after request grew the cache without limit. A full
//! fetch whose session would not fit evicts sessions by the rule above
//! until it does, or is answered without a session when they do not make
//! room (one with more partitions than the whole bound always is). An
//! incremental fetch that grows its session past the bound evicts the
//! least recently used other sessions; past what fits even alone it closes
//! its own: FETCH_SESSION_ID_NOT_FOUND, after which clients start over
//! with a full fetch.
//!
//! Pure bookkeeping: no I/O, no awaits. The fetch handler calls [`begin`]
//! before reading and `finish_*` once it knows what it answers.
//!
//! [`begin`]: FetchSessionCache::begin

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;

/// Sessions kept per shard (Kafka's max.incremental.fetch.session.cache.slots
/// defaults to 1000 for the whole broker).
pub const SESSIONS_PER_SHARD_MAX: usize = 1000;

/// How long a session must be unused before a new one may take its place,
/// and open before one with more partitions may (Kafka's
/// min.incremental.fetch.session.eviction.ms default, module docs).
pub const SESSION_EVICTION_MS: i64 = 120_000;

/// Partitions the sessions of one shard remember in all (module docs):
/// 50 consumers each fetching 5,000 partitions from the shard.
pub const SESSION_PARTITIONS_PER_SHARD_MAX: usize = 250_000;

/// Session id of "no session".
pub const INVALID_SESSION_ID: i32 = 0;
/// Epoch of a full fetch that opens a session.
pub const INITIAL_EPOCH: i32 = 0;
/// Epoch of a sessionless full fetch (and of a closing one).
pub const FINAL_EPOCH: i32 = -1;
/// Fetch versions from which requests name topics by id.
const TOPIC_ID_VERSION_MIN: i16 = 13;
/// Fetch versions from which sessions exist.
pub const SESSION_VERSION_MIN: i16 = 7;

/// How a fetch request names a topic: by name before v13, by id from v13.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKey {
    Name(Arc<str>),
    Id(uuid::Uuid),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic: TopicKey,
    pub partition: i32,
}

/// One partition to fetch, as the request (or the session) gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionFetch {
    pub key: PartitionKey,
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    /// -1 when the client does not check (or before v9).
    pub current_leader_epoch: i32,
}

/// What a response says about a partition, as far as sessions care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOutcome {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records_size: usize,
}

/// How to answer a fetch, decided by [`FetchSessionCache::begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionPlan {
    /// Answer every partition; session id 0 in the response.
    Sessionless,
    /// Answer every partition, then open a session
    /// ([`FetchSessionCache::finish_full`]) and return its id.
    Full,
    /// Answer the partitions with news only
    /// ([`FetchSessionCache::finish_incremental`]).
    Incremental { session_id: i32 },
}

/// The partitions a fetch reads, in answer order, and how to answer.
#[derive(Debug)]
pub struct BegunFetch {
    pub plan: SessionPlan,
    pub partitions: Vec<PartitionFetch>,
}

/// A partition as its session remembers it.
#[derive(Clone, Debug)]
struct CachedPartition {
    fetch: PartitionFetch,
    /// What the last response reported; -1 until reported (and after an
    /// error), so that the next response includes the partition.
    high_watermark: i64,
    log_start_offset: i64,
}

struct FetchSession {
    /// The epoch the next request must carry.
    epoch: i32,
    uses_topic_ids: bool,
    /// The cache's use order (logical clock) at its last use.
    last_used: u64,
    /// Wall-clock times (ms) of its opening and last use, for eviction.
    created_ms: i64,
    last_used_ms: i64,
    /// Answer order: partitions that returned records move to the back so
    /// that the others get the response's byte budget next time (Kafka does
    /// the same).
    order: BTreeMap<u64, PartitionKey>,
    partitions: HashMap<PartitionKey, (u64, CachedPartition)>,
    next_position: u64,
}

impl FetchSession {
    fn new(epoch: i32, uses_topic_ids: bool, last_used: u64, now_ms: i64) -> FetchSession {
        FetchSession {
            epoch,
            uses_topic_ids,
            last_used,
            created_ms: now_ms,
            last_used_ms: now_ms,
            order: BTreeMap::new(),
            partitions: HashMap::new(),
            next_position: 0,
        }
    }

    fn push_back(&mut self, cached: CachedPartition) {
        let position = self.next_position;
        self.next_position += 1;
        let key = cached.fetch.key.clone();
        if let Some((old_position, _)) = self.partitions.remove(&key) {
            self.order.remove(&old_position);
        }
        self.order.insert(position, key.clone());
        self.partitions.insert(key, (position, cached));
    }

    fn remove(&mut self, key: &PartitionKey) {
        if let Some((position, _)) = self.partitions.remove(key) {
            self.order.remove(&position);
        }
    }

    /// Add or update the partitions of an incremental request. An update
    /// keeps what the session last reported, so the partition is answered
    /// only if it has news.
    fn update(&mut self, fetches: Vec<PartitionFetch>) {
        for fetch in fetches {
            match self.partitions.get_mut(&fetch.key) {
                Some((_, cached)) => cached.fetch = fetch,
                None => self.push_back(CachedPartition {
                    fetch,
                    high_watermark: -1,
                    log_start_offset: -1,
                }),
            }
        }
    }

    fn fetches(&self) -> Vec<PartitionFetch> {
        self.order
            .values()
            .filter_map(|key| self.partitions.get(key))
            .map(|(_, cached)| cached.fetch.clone())
            .collect()
    }

    /// Unused for longer than [`SESSION_EVICTION_MS`] at `now_ms`: any new
    /// session may take its place.
    fn is_stale(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_used_ms) > SESSION_EVICTION_MS
    }

    /// A new session with more partitions may take its place: it had been
    /// open for longer than [`SESSION_EVICTION_MS`] when last used (Kafka
    /// files a session as evictable when it is used, so a session idle
    /// since before that age stays protected until it is stale).
    fn is_evictable_by_value(&self) -> bool {
        self.last_used_ms.saturating_sub(self.created_ms) > SESSION_EVICTION_MS
    }

    fn assert_invariants(&self) {
        assert_eq!(self.order.len(), self.partitions.len());
        assert!(
            self.epoch > 0,
            "a cached session expects an incremental epoch"
        );
    }
}

/// The epoch after `epoch` (wraps to 1, never to 0 or -1).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

/// The fetch sessions of one shard. See the module docs.
pub struct FetchSessionCache {
    sessions: HashMap<i32, FetchSession>,
    capacity: usize,
    /// Bound of `cached_partitions` (module docs).
    partition_capacity: usize,
    /// Partitions remembered by all sessions (asserted against a count).
    cached_partitions: usize,
    /// Logical clock for least-recently-used eviction.
    clock: u64,
}

impl FetchSessionCache {
    /// A cache of at most `capacity` sessions and
    /// [`SESSION_PARTITIONS_PER_SHARD_MAX`] partitions.
    pub fn new(capacity: usize) -> FetchSessionCache {
        FetchSessionCache::with_limits(capacity, SESSION_PARTITIONS_PER_SHARD_MAX)
    }

    /// A cache of at most `capacity` sessions remembering at most
    /// `partition_capacity` partitions in all.
    pub fn with_limits(capacity: usize, partition_capacity: usize) -> FetchSessionCache {
        assert!(capacity > 0 && partition_capacity > 0);
        FetchSessionCache {
            sessions: HashMap::new(),
            capacity,
            partition_capacity,
            cached_partitions: 0,
            clock: 0,
        }
    }

    /// Partitions remembered by all sessions.
    pub fn cached_partitions(&self) -> usize {
        self.cached_partitions
    }

    /// Remove a session, with its partitions from the count.
    fn close(&mut self, session_id: i32) {
        if let Some(session) = self.sessions.remove(&session_id) {
            self.cached_partitions -= session.partitions.len();
        }
    }

    /// Evict least recently used sessions other than `keep` until `more`
    /// partitions (at most the whole bound) fit beside the rest.
    fn make_room(&mut self, keep: i32, more: usize) {
        assert!(more <= self.partition_capacity);
        while self.cached_partitions + more > self.partition_capacity {
            let oldest = self
                .sessions
                .iter()
                .filter(|(id, _)| **id != keep)
                .min_by_key(|(_, session)| session.last_used)
                .map(|(id, _)| *id);
            let Some(oldest) = oldest else {
                unreachable!("{more} partitions fit in an empty cache");
            };
            self.close(oldest);
        }
    }

    /// Make room for a new session of `size` partitions (at most the whole
    /// bound) at `now_ms`, by the eviction rule of the module docs: stale
    /// sessions, least recently used first, then sessions evictable by
    /// value with fewer partitions, fewest first (Kafka's EvictableKey
    /// order: size, then id). Evicts only if that makes room; `false`
    /// (nothing evicted) otherwise.
    fn try_make_room_for_new(&mut self, size: usize, now_ms: i64) -> bool {
        assert!(size <= self.partition_capacity);
        let fits = |sessions: usize, partitions: usize| {
            sessions < self.capacity && partitions + size <= self.partition_capacity
        };
        let (mut sessions, mut partitions) = (self.sessions.len(), self.cached_partitions);
        if fits(sessions, partitions) {
            return true;
        }
        let mut stale: Vec<(u64, i32)> = Vec::new();
        let mut smaller: Vec<(usize, i32)> = Vec::new();
        for (id, session) in &self.sessions {
            if session.is_stale(now_ms) {
                stale.push((session.last_used, *id));
            } else if session.is_evictable_by_value() && session.partitions.len() < size {
                smaller.push((session.partitions.len(), *id));
            }
        }
        stale.sort_unstable();
        smaller.sort_unstable();
        let candidates = stale.iter().map(|(_, id)| *id);
        let candidates = candidates.chain(smaller.iter().map(|(_, id)| *id));
        let mut evicted = Vec::new();
        for id in candidates {
            if fits(sessions, partitions) {
                break;
            }
            let Some(session) = self.sessions.get(&id) else {
                unreachable!("candidates are sessions of the cache");
            };
            sessions -= 1;
            partitions -= session.partitions.len();
            evicted.push(id);
        }
        if !fits(sessions, partitions) {
            return false;
        }
        for id in evicted {
            self.close(id);
        }
        true
    }

    fn assert_count(&self) {
        debug_assert_eq!(
            self.cached_partitions,
            self.sessions
                .values()
                .map(|session| session.partitions.len())
                .sum::<usize>()
        );
        assert!(self.cached_partitions <= self.partition_capacity);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn contains(&self, session_id: i32) -> bool {
        self.sessions.contains_key(&session_id)
    }

    /// The epoch the next request on `session_id` must carry.
    pub fn expected_epoch(&self, session_id: i32) -> Option<i32> {
        self.sessions.get(&session_id).map(|session| session.epoch)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Decide how to answer a request and which partitions to read, at
    /// wall-clock time `now_ms` (the session's last use, for eviction).
    /// `Err` is the top-level error to answer with (nothing read).
    pub fn begin(
        &mut self,
        version: i16,
        session_id: i32,
        epoch: i32,
        fetches: Vec<PartitionFetch>,
        forgotten: Vec<PartitionKey>,
        now_ms: i64,
    ) -> Result<BegunFetch, ResponseError> {
        if version < SESSION_VERSION_MIN {
            return Ok(BegunFetch {
                plan: SessionPlan::Sessionless,
                partitions: fetches,
            });
        }
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            // A full request closes the session it names.
            if session_id != INVALID_SESSION_ID {
                self.close(session_id);
            }
            let plan = if epoch == FINAL_EPOCH {
                SessionPlan::Sessionless
            } else {
                SessionPlan::Full
            };
            return Ok(BegunFetch {
                plan,
                partitions: fetches,
            });
        }
        if epoch < FINAL_EPOCH {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        let now = self.tick();
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Err(ResponseError::FetchSessionIdNotFound);
        };
        if session.epoch != epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        if session.uses_topic_ids != (version >= TOPIC_ID_VERSION_MIN) {
            return Err(ResponseError::FetchSessionTopicIdError);
        }
        let before = session.partitions.len();
        session.update(fetches);
        for key in &forgotten {
            session.remove(key);
        }
        let after = session.partitions.len();
        session.last_used = now;
        session.last_used_ms = now_ms;
        self.cached_partitions = self.cached_partitions - before + after;
        if after == 0 {
            // Nothing left to fetch: Kafka drops the session and answers
            // sessionless.
            self.close(session_id);
            return Ok(BegunFetch {
                plan: SessionPlan::Sessionless,
                partitions: Vec::new(),
            });
        }
        if after > self.partition_capacity {
            // It would not fit alone: it goes, the others stay.
            self.close(session_id);
            self.assert_count();
            return Err(ResponseError::FetchSessionIdNotFound);
        }
        if self.cached_partitions > self.partition_capacity {
            // Grown past the bound: the least recently used others go.
            self.cached_partitions -= after;
            self.make_room(session_id, after);
            self.cached_partitions += after;
        }
        self.assert_count();
        let Some(session) = self.sessions.get_mut(&session_id) else {
            unreachable!("make_room keeps the session it grows");
        };
        session.epoch = next_epoch(session.epoch);
        session.assert_invariants();
        Ok(BegunFetch {
            plan: SessionPlan::Incremental { session_id },
            partitions: session.fetches(),
        })
    }

    /// Open a session for a full fetch that was answered with `outcomes`
    /// (one per partition, in order), at wall-clock time `now_ms`. Returns
    /// its id, or [`INVALID_SESSION_ID`] when there is nothing to remember
    /// or no room for it (module docs: eviction).
    pub fn finish_full(
        &mut self,
        version: i16,
        partitions: &[PartitionFetch],
        outcomes: &[PartitionOutcome],
        now_ms: i64,
    ) -> i32 {
        assert_eq!(partitions.len(), outcomes.len());
        if partitions.is_empty() || partitions.len() > self.partition_capacity {
            return INVALID_SESSION_ID;
        }
        if !self.try_make_room_for_new(partitions.len(), now_ms) {
            self.assert_count();
            return INVALID_SESSION_ID;
        }
        let now = self.tick();
        let mut session = FetchSession::new(
            next_epoch(INITIAL_EPOCH),
            version >= TOPIC_ID_VERSION_MIN,
            now,
            now_ms,
        );
        for (fetch, outcome) in partitions.iter().zip(outcomes) {
            let mut cached = CachedPartition {
                fetch: fetch.clone(),
                high_watermark: -1,
                log_start_offset: -1,
            };
            record_outcome(&mut cached, outcome);
            session.push_back(cached);
        }
        session.assert_invariants();
        let session_id = self.new_session_id();
        self.cached_partitions += session.partitions.len();
        self.sessions.insert(session_id, session);
        assert!(self.sessions.len() <= self.capacity);
        self.assert_count();
        session_id
    }

    /// For an incremental fetch answered with `outcomes` (one per partition
    /// that `begin` returned, in order): which partitions the response
    /// includes. Updates what the session remembers.
    pub fn finish_incremental(
        &mut self,
        session_id: i32,
        partitions: &[PartitionFetch],
        outcomes: &[PartitionOutcome],
    ) -> Vec<bool> {
        assert_eq!(partitions.len(), outcomes.len());
        let Some(session) = self.sessions.get_mut(&session_id) else {
            // Evicted while the fetch waited: answer everything.
            return vec![true; partitions.len()];
        };
        let mut include = Vec::with_capacity(partitions.len());
        for (fetch, outcome) in partitions.iter().zip(outcomes) {
            let Some((_, cached)) = session.partitions.get_mut(&fetch.key) else {
                include.push(true);
                continue;
            };
            let must_respond = outcome.records_size > 0
                || outcome.error_code != 0
                || cached.high_watermark != outcome.high_watermark
                || cached.log_start_offset != outcome.log_start_offset;
            record_outcome(cached, outcome);
            if outcome.records_size > 0 {
                let cached = cached.clone();
                session.push_back(cached);
            }
            include.push(must_respond);
        }
        session.assert_invariants();
        include
    }

    /// A random positive id not in use (ids are not guessable from others).
    fn new_session_id(&self) -> i32 {
        loop {
            let bytes = uuid::Uuid::new_v4().into_bytes();
            let id = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & i32::MAX;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

fn record_outcome(cached: &mut CachedPartition, outcome: &PartitionOutcome) {
    if outcome.error_code != 0 {
        // Forget what was reported so the partition is answered again once
        // the error is gone.
        cached.high_watermark = -1;
        cached.log_start_offset = -1;
    } else {
        cached.high_watermark = outcome.high_watermark;
        cached.log_start_offset = outcome.log_start_offset;
    }
}

thread_local! {
    /// The cache of the shard running on this thread.
    static SHARD_SESSIONS: RefCell<FetchSessionCache> =
        RefCell::new(FetchSessionCache::new(SESSIONS_PER_SHARD_MAX));
}

/// Run `work` on this shard's session cache. Must not be re-entered.
pub fn with_shard_sessions<T>(work: impl FnOnce(&mut FetchSessionCache) -> T) -> T {
    SHARD_SESSIONS.with(|cache| work(&mut cache.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wall clock of tests that do not move it.
    const NOW: i64 = 1_700_000_000_000;

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            topic: TopicKey::Name(Arc::from(topic)),
            partition,
        }
    }

    fn fetch(topic: &str, partition: i32, offset: i64) -> PartitionFetch {
        PartitionFetch {
            key: key(topic, partition),
            fetch_offset: offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
        }
    }

    fn outcome(high_watermark: i64, records_size: usize) -> PartitionOutcome {
        PartitionOutcome {
            error_code: 0,
            high_watermark,
            log_start_offset: 0,
            records_size,
        }
    }

    /// Open a session over t-0 and t-1 (both at high watermark 10).
    fn open(cache: &mut FetchSessionCache) -> i32 {
        let id = open_at(cache, 2, NOW);
        assert_ne!(id, INVALID_SESSION_ID);
        id
    }

    /// A full fetch of `partitions` partitions of t at `now_ms`: the id of
    /// the session opened, or INVALID_SESSION_ID.
    fn open_at(cache: &mut FetchSessionCache, partitions: i32, now_ms: i64) -> i32 {
        let fetches: Vec<PartitionFetch> = (0..partitions)
            .map(|partition| fetch("t", partition, 0))
            .collect();
        let begun = cache
            .begin(12, 0, INITIAL_EPOCH, fetches, vec![], now_ms)
            .expect("full fetch");
        assert_eq!(begun.plan, SessionPlan::Full);
        let outcomes = vec![outcome(10, 0); begun.partitions.len()];
        cache.finish_full(12, &begun.partitions, &outcomes, now_ms)
    }

    /// An incremental fetch on `id` at `now_ms`, with nothing new.
    fn use_at(cache: &mut FetchSessionCache, id: i32, now_ms: i64) {
        let epoch = cache.expected_epoch(id).expect("a cached session");
        let begun = cache
            .begin(12, id, epoch, vec![], vec![], now_ms)
            .expect("incremental");
        let outcomes = vec![outcome(10, 0); begun.partitions.len()];
        let _ = cache.finish_incremental(id, &begun.partitions, &outcomes);
    }

    #[test]
    fn a_full_fetch_with_epoch_zero_opens_a_session_expecting_epoch_one() {
        let mut cache = FetchSessionCache::new(10);
        let id = open(&mut cache);
        assert!(id > 0);
        assert_eq!(cache.expected_epoch(id), Some(1));
    }

    #[test]
    fn an_incremental_fetch_reads_the_whole_session_and_answers_only_news() {
        let mut cache = FetchSessionCache::new(10);
        let id = open(&mut cache);
        // The client sends only t-0 (its offset moved).
        let begun = cache
            .begin(12, id, 1, vec![fetch("t", 0, 5)], vec![], NOW)
            .expect("incremental");
        assert_eq!(begun.plan, SessionPlan::Incremental { session_id: id });
        assert_eq!(begun.partitions, vec![fetch("t", 0, 5), fetch("t", 1, 0)]);
        // t-0 unchanged, t-1 got a new high watermark.
        let include =
            cache.finish_incremental(id, &begun.partitions, &[outcome(10, 0), outcome(12, 0)]);
        assert_eq!(include, vec![false, true]);
        assert_eq!(cache.expected_epoch(id), Some(2));
        // Nothing changed: nothing answered; the offset sent before is kept.
        let begun = cache
            .begin(12, id, 2, vec![], vec![], NOW)
            .expect("incremental");
        assert_eq!(begun.partitions[0].fetch_offset, 5);
        let include =
            cache.finish_incremental(id, &begun.partitions, &[outcome(10, 0), outcome(12, 0)]);
        assert_eq!(include, vec![false, false]);
    }

    #[test]
    fn partitions_with_records_or_errors_are_always_answered() {
        let mut cache = FetchSessionCache::new(10);
        let id = open(&mut cache);
        let begun = cache
            .begin(12, id, 1, vec![], vec![], NOW)
            .expect("incremental");
        let error = PartitionOutcome {
            error_code: ResponseError::OffsetOutOfRange.code(),
            ..outcome(10, 0)
        };
        let include = cache.finish_incremental(id, &begun.partitions, &[outcome(10, 7), error]);
        assert_eq!(include, vec![true, true]);
        // After an error the partition is answered again even without news.
        let begun = cache
            .begin(12, id, 2, vec![], vec![], NOW)
            .expect("incremental");
        // t-0 returned records, so it moved to the back.
        assert_eq!(begun.partitions[0].key, key("t", 1));
        let include =
            cache.finish_incremental(id, &begun.partitions, &[outcome(10, 0), outcome(10, 0)]);
        assert_eq!(include, vec![true, false]);
    }

    #[test]
    fn added_partitions_are_answered_and_forgotten_ones_are_dropped() {
        let mut cache = FetchSessionCache::new(10);
        let id = open(&mut cache);
        let begun = cache
            .begin(12, id, 1, vec![fetch("u", 0, 0)], vec![key("t", 0)], NOW)
            .expect("incremental");
        assert_eq!(begun.partitions, vec![fetch("t", 1, 0), fetch("u", 0, 0)]);
        let include =
            cache.finish_incremental(id, &begun.partitions, &[outcome(10, 0), outcome(0, 0)]);
        assert_eq!(
            include,
            vec![false, true],
            "a new partition is always answered once"
        );
    }

    #[test]
    fn forgetting_every_partition_closes_the_session() {
        let mut cache = FetchSessionCache::new(10);
        let id = open(&mut cache);
        let begun = cache
            .begin(12, id, 1, vec![], vec![key("t", 0), key("t", 1)], NOW)
            .expect("incremental");
        assert_eq!(begun.plan, SessionPlan::Sessionless);
        assert!(begun.partitions.is_empty());
        assert!(!cache.contains(id));
    }

    #[test]
    fn an_unknown_session_id_is_fetch_session_id_not_found() {
        let mut cache = FetchSessionCache::new(10);
        let error = cache
            .begin(12, 1234, 1, vec![], vec![], NOW)
            .expect_err("unknown");
        assert_eq!(error, ResponseError::FetchSessionIdNotFound);
    }

    #[test]
    fn a_wrong_epoch_is_invalid_fetch_session_epoch_and_keeps_the_session() {
        let mut cache = FetchSessionCache::new(10);
        let id = open(&mut cache);
        for epoch in [2, 7, -2] {
            let error = cache
                .begin(12, id, epoch, vec![], vec![], NOW)
                .expect_err("epoch");
            assert_eq!(error, ResponseError::InvalidFetchSessionEpoch);
        }
        assert_eq!(cache.expected_epoch(id), Some(1));
        assert!(cache.begin(12, id, 1, vec![], vec![], NOW).is_ok());
    }

    #[test]
    fn a_session_opened_with_names_refuses_topic_ids() {
        let mut cache = FetchSessionCache::new(10);
        let id = open(&mut cache);
        let error = cache
            .begin(13, id, 1, vec![], vec![], NOW)
            .expect_err("ids");
        assert_eq!(error, ResponseError::FetchSessionTopicIdError);
    }

    #[test]
    fn a_full_fetch_naming_a_session_closes_it() {
        let mut cache = FetchSessionCache::new(10);
        let id = open(&mut cache);
        let begun = cache
            .begin(12, id, INITIAL_EPOCH, vec![fetch("t", 0, 0)], vec![], NOW)
            .expect("full");
        assert_eq!(begun.plan, SessionPlan::Full);
        assert!(!cache.contains(id));
        let id = open(&mut cache);
        let begun = cache
            .begin(12, id, FINAL_EPOCH, vec![fetch("t", 0, 0)], vec![], NOW)
            .expect("final");
        assert_eq!(begun.plan, SessionPlan::Sessionless);
        assert!(!cache.contains(id));
    }

    #[test]
    fn sessionless_requests_open_nothing() {
        let mut cache = FetchSessionCache::new(10);
        let begun = cache
            .begin(12, 0, FINAL_EPOCH, vec![fetch("t", 0, 0)], vec![], NOW)
            .expect("sessionless");
        assert_eq!(begun.plan, SessionPlan::Sessionless);
        let begun = cache
            .begin(6, 0, 0, vec![fetch("t", 0, 0)], vec![], NOW)
            .expect("v6");
        assert_eq!(
            begun.plan,
            SessionPlan::Sessionless,
            "no sessions before v7"
        );
        assert!(cache.is_empty());
    }

    /// More consumers than the cache holds must not evict each other on
    /// every poll: as Kafka, a full fetch finding the cache full of
    /// sessions in use is answered without a session (id 0) and the others
    /// keep theirs; a session unused for more than SESSION_EVICTION_MS
    /// gives its place.
    #[test]
    fn a_full_cache_keeps_sessions_in_use_and_evicts_only_stale_ones() {
        let mut cache = FetchSessionCache::new(2);
        let first = open_at(&mut cache, 2, NOW);
        let second = open_at(&mut cache, 2, NOW);
        use_at(&mut cache, first, NOW + 60_000);
        use_at(&mut cache, second, NOW + 60_000);
        assert_eq!(open_at(&mut cache, 2, NOW + 60_000), INVALID_SESSION_ID);
        assert!(cache.contains(first) && cache.contains(second));
        assert_eq!(cache.expected_epoch(first), Some(2), "the session goes on");
        // The second is used again; the first has been idle for exactly
        // SESSION_EVICTION_MS, which is not yet stale.
        use_at(&mut cache, second, NOW + 170_000);
        let at = NOW + 60_000 + SESSION_EVICTION_MS;
        assert_eq!(open_at(&mut cache, 2, at), INVALID_SESSION_ID);
        assert!(cache.contains(first) && cache.contains(second));
        let third = open_at(&mut cache, 2, at + 1);
        assert_ne!(third, INVALID_SESSION_ID);
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(first), "stale: evicted");
        assert!(cache.contains(second) && cache.contains(third));
    }

    /// As Kafka's EvictableKey: a new session may take the place of one
    /// with strictly fewer partitions, the fewest first, provided that one
    /// had been open for more than SESSION_EVICTION_MS when last used.
    #[test]
    fn a_larger_session_takes_the_place_of_a_smaller_one_open_long_enough() {
        let mut cache = FetchSessionCache::new(2);
        let one = open_at(&mut cache, 1, NOW);
        let two = open_at(&mut cache, 2, NOW);
        use_at(&mut cache, one, NOW + 100_000);
        use_at(&mut cache, two, NOW + 100_000);
        // Both too young to be evicted by value.
        assert_eq!(open_at(&mut cache, 3, NOW + 100_000), INVALID_SESSION_ID);
        use_at(&mut cache, one, NOW + 121_000);
        use_at(&mut cache, two, NOW + 121_000);
        let three = open_at(&mut cache, 3, NOW + 121_000);
        assert_ne!(three, INVALID_SESSION_ID);
        assert!(!cache.contains(one), "the fewest partitions go first");
        assert!(cache.contains(two) && cache.contains(three));
        // As many partitions as the smallest evictable one is not enough,
        // and the new session is too young.
        assert_eq!(open_at(&mut cache, 2, NOW + 122_000), INVALID_SESSION_ID);
        assert!(cache.contains(two) && cache.contains(three));
    }

    /// Bounded by partitions: a full fetch evicts stale (or smaller, old
    /// enough) sessions until its own fits, or evicts none when they do not
    /// make room; one larger than the whole bound gets no session (id 0:
    /// the client keeps sending full fetches).
    #[test]
    fn sessions_remember_a_bounded_number_of_partitions() {
        let mut cache = FetchSessionCache::with_limits(10, 5);
        let first = open(&mut cache);
        let second = open(&mut cache);
        assert_eq!(cache.cached_partitions(), 4);
        // Both in use: no room, nobody evicted.
        assert_eq!(open_at(&mut cache, 2, NOW), INVALID_SESSION_ID);
        assert!(cache.contains(first) && cache.contains(second));
        // The second goes stale while the first is used.
        let later = NOW + SESSION_EVICTION_MS + 1;
        use_at(&mut cache, first, later);
        let third = open_at(&mut cache, 2, later);
        assert!(cache.contains(first) && !cache.contains(second) && cache.contains(third));
        assert_eq!(cache.cached_partitions(), 4);
        // The first goes stale, but evicting it alone does not make room
        // for 4 partitions beside the third's 2 (in use, too young to be
        // evicted by value): nothing is evicted.
        use_at(&mut cache, third, later + 1_000);
        let latest = later + SESSION_EVICTION_MS + 1;
        assert_eq!(open_at(&mut cache, 4, latest), INVALID_SESSION_ID);
        assert!(cache.contains(first) && cache.contains(third));

        let six: Vec<PartitionFetch> = (0..6).map(|partition| fetch("u", partition, 0)).collect();
        let begun = cache
            .begin(12, 0, INITIAL_EPOCH, six, vec![], NOW)
            .expect("full fetch");
        assert_eq!(begun.plan, SessionPlan::Full);
        let id = cache.finish_full(12, &begun.partitions, &[outcome(10, 0); 6], NOW);
        assert_eq!(id, INVALID_SESSION_ID, "larger than the whole bound");
        assert_eq!(cache.len(), 2, "nothing was evicted for it");
        assert_eq!(cache.cached_partitions(), 4);
    }

    /// An incremental fetch that adds partitions past the bound evicts the
    /// other sessions first; past what fits alone, its own session closes
    /// with FETCH_SESSION_ID_NOT_FOUND, and the count goes with it.
    #[test]
    fn a_session_grown_past_the_bound_is_closed() {
        let mut cache = FetchSessionCache::with_limits(10, 5);
        let other = open(&mut cache);
        let id = open(&mut cache);
        let begun = cache
            .begin(
                12,
                id,
                1,
                vec![fetch("u", 0, 0), fetch("u", 1, 0)],
                vec![],
                NOW,
            )
            .expect("grows to 4 beside 2: the other session goes");
        assert_eq!(begun.partitions.len(), 4);
        assert!(!cache.contains(other));
        assert_eq!(cache.cached_partitions(), 4);
        let _ = cache.finish_incremental(id, &begun.partitions, &[outcome(10, 0); 4]);
        let grown = cache.begin(
            12,
            id,
            2,
            vec![fetch("u", 2, 0), fetch("u", 3, 0)],
            vec![],
            NOW,
        );
        assert_eq!(grown.err(), Some(ResponseError::FetchSessionIdNotFound));
        assert!(!cache.contains(id));
        assert_eq!(cache.cached_partitions(), 0);
        // Forgetting partitions gives their room back.
        let id = open(&mut cache);
        let begun = cache
            .begin(12, id, 1, vec![fetch("u", 0, 0)], vec![key("t", 0)], NOW)
            .expect("incremental");
        assert_eq!(begun.partitions.len(), 2);
        assert_eq!(cache.cached_partitions(), 2);
    }

    #[test]
    fn epochs_wrap_to_one() {
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(0), 1);
    }
}
