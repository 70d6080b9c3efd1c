//! The controller's production driver: one control-plane thread per
//! process, its peer connections, and `ControllerHandle`, the API brokers
//! use. Nothing here runs on a data shard; shards only read the published
//! image (an `Arc` swapped per applied round) and await `wait_applied`.
//!
//! Threads of one process (all blocking std I/O, named `sluice-ctl-*`):
//! - `controller` (voters): owns the `RaftNode`, its store and the
//!   `QuorumController`. It ticks on a jittered timer (80 to 120 % of the
//!   tick interval per tick; raft-rs's own election draw is neutralised, so
//!   this is the election jitter), steps inbound messages, answers broker
//!   requests when `can_decide`, drives Ready (write, apply, sync, send),
//!   answers each proposal once a committed batch at its offset has its
//!   term, and publishes the image.
//! - `follower` (observers, brokers that are not voters): long-polls
//!   MetadataFetch from the voters and applies the committed batches (or a
//!   snapshot) to its own image.
//! - `listener` + one thread per inbound connection: frames in, events to
//!   the controller thread, responses out. A bad frame closes that
//!   connection only.
//! - one `sender` per peer voter: a bounded queue of Raft messages, one
//!   outbound connection with reconnect and backoff; a message it cannot
//!   deliver is reported (`report_unreachable`, `report_snapshot`).
//! - `heartbeat`: registers this broker, then heartbeats every
//!   `heartbeat_interval_ms` with its applied offset; controlled shutdown.
//! - one short-lived `call` thread per handle request: routes it to the
//!   active controller (local channel or peer connection), following
//!   NOT_CONTROLLER hints and retrying until the request's deadline.
//!
//! What `Ok` promises: a handle call returned `Ok` once its batch committed
//! (it is in a majority's durable log). It is visible in a given node's
//! image only after that node applied it: `wait_applied(offset)`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use raft::eraftpb::{Message, MessageType};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::RaftNode;
use super::image::MetadataImage;
use super::logger;
use super::node::{CommittedBatch, NodeError, Output, Proposal, ProposeError, RaftNodeConfig};
use super::quorum_controller::{
    AlterPartitionDecision, AlterPartitionReply, AlterPartitionRequest, CreateTopicRequest,
    DirectoryReplaced, HeartbeatRequest, LEADER_IMBALANCE_CHECK_INTERVAL_MS_DEFAULT,
    QuorumController, RegistrationDecision, RegistrationRequest,
};
use super::records::{
    AccessControlEntry, ConfigResource, Listener, MetadataRecord, RecordBatch,
    RemoveAccessControlEntry, RemoveUserScramCredential,
};
use super::rpc::{ErrorKind, FetchedBatch, Reply, Request, RequestError, Response};
use super::storage::{FileRaftStore, MemRaftStore, RaftLogStore, StoreError};
use super::types::{
    BrokerEpoch, BrokerId, DirectoryId, IncarnationId, LeaderEpoch, MetadataOffset,
    PRODUCER_ID_BLOCK_SIZE, PartitionEpoch, PartitionIndex, TopicId,
};
use crate::peer::auth::PeerSecret;
use crate::peer::{self, PeerError, read_frame, write_frame};

/// Committed batches a voter keeps in memory to answer MetadataFetch; a
/// follower further behind gets the image snapshot instead.
const RECENT_BATCHES_MAX: usize = 4096;
/// Batches in one MetadataFetch answer.
const FETCH_BATCHES_MAX: usize = 512;
/// Raft messages queued per peer before new ones are dropped (and the peer
/// reported unreachable): Raft retransmits, so dropping is safe.
const PEER_QUEUE_CAPACITY: usize = 1024;
/// How often the active controller looks for expired broker sessions.
const SESSION_CHECK_INTERVAL_MS: u64 = 250;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// How long a follower's MetadataFetch waits at the voter for new batches.
const FETCH_WAIT_MS: u32 = 500;

/// How long a clean stop waits for the controller to acknowledge the
/// controlled shutdown before it stops anyway.
const CONTROLLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Where the voter keeps its Raft log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `FileRaftStore` in `<data_dir>/controller/`.
    File,
    /// `MemRaftStore`: nothing survives the process (tests).
    Memory,
}

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub node_id: BrokerId,
    /// Every voter and its controller address (`host:port`). One voter that
    /// is this node: a single-node cluster, no peer traffic at all.
    pub voters: Vec<(BrokerId, String)>,
    /// Where this node accepts peer connections. Required for a voter of a
    /// multi-voter group; `None` binds nothing (single voter, observer).
    pub listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    /// The Kafka listeners this broker registers (advertised to clients).
    pub listeners: Vec<Listener>,
    pub shard_count: u32,
    pub rack: Option<String>,
    /// The id of this broker's data directory, sent with its registration
    /// (`crate::datadir::directory_id`); `None` registers without one, as
    /// a broker of an older version does.
    pub directory_id: Option<DirectoryId>,
    pub tick_interval_ms: u64,
    /// Kafka's broker.heartbeat.interval.ms.
    pub heartbeat_interval_ms: u64,
    /// Kafka's broker.session.timeout.ms.
    pub session_timeout_ms: u64,
    /// How long a handle call keeps retrying (leader changes included).
    pub request_timeout_ms: u64,
    pub snapshot_interval_entries: u64,
    /// How often the active controller moves leaderships back to preferred
    /// replicas (Kafka's leader.imbalance.check.interval.seconds, in ms);
    /// 0 disables the rebalance.
    pub leader_imbalance_check_interval_ms: u64,
    /// The cluster's inter-broker secret: every peer connection, in and
    /// out, starts with the mutual proof of `peer::auth`. `None`: peer
    /// connections are not authenticated.
    pub peer_secret: Option<PeerSecret>,
}

impl ServiceConfig {
    /// Today's single node: voter and only broker, node `node_id`.
    pub fn single_node(
        node_id: BrokerId,
        data_dir: PathBuf,
        listeners: Vec<Listener>,
        shard_count: u32,
    ) -> ServiceConfig {
        ServiceConfig {
            node_id,
            voters: vec![(node_id, String::new())],
            listen: None,
            data_dir,
            store: StoreKind::File,
            listeners,
            shard_count,
            rack: None,
            directory_id: None,
            tick_interval_ms: 100,
            heartbeat_interval_ms: 2000,
            session_timeout_ms: 9000,
            request_timeout_ms: 30_000,
            snapshot_interval_entries: 1000,
            leader_imbalance_check_interval_ms: LEADER_IMBALANCE_CHECK_INTERVAL_MS_DEFAULT,
            peer_secret: None,
        }
    }

    pub fn is_voter(&self) -> bool {
        self.voters.iter().any(|(id, _)| *id == self.node_id)
    }

    fn voter_address(&self, id: BrokerId) -> Option<&str> {
        self.voters
            .iter()
            .find(|(voter, _)| *voter == id)
            .map(|(_, address)| address.as_str())
    }
}

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("controller config: {0}")]
    Config(String),
    #[error("controller store: {0}")]
    Store(#[from] StoreError),
    #[error("controller raft node: {0}")]
    Node(#[from] NodeError),
    #[error("controller listener {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("spawn a controller thread: {0}")]
    Spawn(io::Error),
}

/// A block of producer ids now owned by this broker: `[first, first + count)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub count: i64,
    pub offset: MetadataOffset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreatedTopic {
    pub topic_id: TopicId,
    pub offset: MetadataOffset,
}

enum Event {
    Raft(Message),
    Request {
        request: Request,
        reply: flume::Sender<Response>,
    },
    SendFailed {
        to: BrokerId,
        snapshot: bool,
    },
    SnapshotSent {
        to: BrokerId,
    },
    Stop,
}

#[derive(Default)]
struct BrokerState {
    epoch: Option<BrokerEpoch>,
    fenced: bool,
    want_shut_down: bool,
    should_shut_down: bool,
}

/// State shared by every thread of one service and its handles.
struct Shared {
    config: ServiceConfig,
    image: Mutex<Arc<MetadataImage>>,
    applied: Condvar,
    waiters: Mutex<Vec<(MetadataOffset, oneshot::Sender<()>)>>,
    /// The active controller as last known (-1: none).
    leader: AtomicI32,
    stopping: AtomicBool,
    /// To the controller thread (voters only).
    events: Option<flume::Sender<Event>>,
    inbound: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
    broker: Mutex<BrokerState>,
    broker_changed: Condvar,
    /// Idle request connections per controller.
    pool: Mutex<HashMap<BrokerId, Vec<TcpStream>>>,
    local_address: Option<SocketAddr>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on a controller thread stops the process (release profile);
    // in tests the poisoned state is still consistent enough to shut down.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn leader(&self) -> Option<BrokerId> {
        match self.leader.load(Ordering::Acquire) {
            id if id >= 0 => Some(BrokerId(id)),
            _ => None,
        }
    }

    fn set_leader(&self, leader: Option<BrokerId>) {
        self.leader
            .store(leader.map_or(-1, |id| id.0), Ordering::Release);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&lock(&self.image))
    }

    /// Publishes a newer image and wakes whoever waits for its offset.
    fn publish(&self, image: MetadataImage) {
        let offset = image.offset();
        let mut waiters = lock(&self.waiters);
        *lock(&self.image) = Arc::new(image);
        self.applied.notify_all();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            waiters.drain(..).partition(|(wanted, _)| *wanted <= offset);
        *waiters = waiting;
        drop(waiters);
        for (_, sender) in ready {
            let _ = sender.send(());
        }
    }

    fn spawn(
        self: &Arc<Self>,
        name: &str,
        body: impl FnOnce(Arc<Shared>) + Send + 'static,
    ) -> Result<(), ServiceError> {
        let shared = Arc::clone(self);
        let handle = thread::Builder::new()
            .name(format!("sluice-ctl-{name}"))
            .spawn(move || body(shared))
            .map_err(ServiceError::Spawn)?;
        lock(&self.threads).push(handle);
        Ok(())
    }
}

/// The broker-facing API of the controller service. Cheap to clone; every
/// clone talks to the same service. Calls route to the active controller
/// (this node's own, or a peer over the peer protocol) and retry across
/// leader changes until `request_timeout_ms`.
#[derive(Clone)]
pub struct ControllerHandle {
    shared: Arc<Shared>,
}

/// Starts the service: opens the store (voters), binds the peer listener
/// (if configured), and starts the threads. Returns once they run; the
/// first leader is elected in the background (`wait_ready`).
pub fn start(config: ServiceConfig) -> Result<ControllerHandle, ServiceError> {
    if config.voters.is_empty() {
        return Err(ServiceError::Config("no controller voters".into()));
    }
    if config.is_voter() && config.voters.len() > 1 && config.listen.is_none() {
        return Err(ServiceError::Config(format!(
            "voter {} of a {}-voter group needs a controller listen address",
            config.node_id,
            config.voters.len()
        )));
    }
    let listener = match config.listen {
        Some(address) => Some(
            TcpListener::bind(address).map_err(|source| ServiceError::Bind { address, source })?,
        ),
        None => None,
    };
    let local_address = match &listener {
        Some(listener) => Some(listener.local_addr().map_err(|source| ServiceError::Bind {
            address: config.listen.expect("bound"),
            source,
        })?),
        None => None,
    };
    let voter = config.is_voter();
    let (events, receiver) = if voter {
        let (sender, receiver) = flume::unbounded();
        (Some(sender), Some(receiver))
    } else {
        (None, None)
    };
    let shared = Arc::new(Shared {
        config: config.clone(),
        image: Mutex::new(Arc::new(MetadataImage::new())),
        applied: Condvar::new(),
        waiters: Mutex::new(Vec::new()),
        leader: AtomicI32::new(-1),
        stopping: AtomicBool::new(false),
        events,
        inbound: Mutex::new(HashMap::new()),
        next_connection: AtomicU64::new(0),
        threads: Mutex::new(Vec::new()),
        broker: Mutex::new(BrokerState::default()),
        broker_changed: Condvar::new(),
        pool: Mutex::new(HashMap::new()),
        local_address,
    });
    if let Some(receiver) = receiver {
        let voters: Vec<u64> = config.voters.iter().map(|(id, _)| id.raft_id()).collect();
        let mut node_config = RaftNodeConfig::new(
            config.node_id,
            config.voters.iter().map(|(id, _)| *id).collect(),
        );
        node_config.snapshot_interval_entries = config.snapshot_interval_entries;
        let raft_logger = logger::tracing_logger(config.node_id.0);
        match config.store {
            StoreKind::File => {
                let store = FileRaftStore::open(&config.data_dir.join("controller"), &voters)?;
                let node = RaftNode::new(node_config, store, &raft_logger)?;
                start_controller(&shared, node, receiver)?;
            }
            StoreKind::Memory => {
                let node =
                    RaftNode::new(node_config, MemRaftStore::bootstrap(&voters), &raft_logger)?;
                start_controller(&shared, node, receiver)?;
            }
        }
    } else {
        shared.spawn("follower", follower_loop)?;
    }
    if let Some(listener) = listener {
        shared.spawn("listener", move |shared| accept_loop(shared, listener))?;
    }
    shared.spawn("heartbeat", heartbeat_loop)?;
    Ok(ControllerHandle { shared })
}

fn start_controller<S: RaftLogStore + Send + 'static>(
    shared: &Arc<Shared>,
    mut node: RaftNode<S>,
    events: flume::Receiver<Event>,
) -> Result<(), ServiceError> {
    let config = &shared.config;
    let events_sender = shared
        .events
        .clone()
        .expect("voters have a controller thread");
    let mut peers = HashMap::new();
    for (id, address) in &config.voters {
        if *id == config.node_id {
            continue;
        }
        let (sender, receiver) = flume::bounded(PEER_QUEUE_CAPACITY);
        peers.insert(*id, sender);
        let (to, address, events) = (*id, address.clone(), events_sender.clone());
        shared.spawn(&format!("send-{to}"), move |shared| {
            sender_loop(shared, to, address, receiver, events)
        })?;
    }
    if config.voters.len() == 1 {
        node.campaign().map_err(NodeError::from)?;
    }
    // Whatever the store held (snapshot + committed tail) is the image to
    // start from; raft-rs hands the tail back on the first Ready.
    let output = node.drive()?;
    shared.publish(node.image().clone());
    let seed = config.node_id.raft_id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut controller_loop = ControllerLoop {
        shared: Arc::clone(shared),
        node,
        controller: QuorumController::new(config.session_timeout_ms)
            .with_leader_imbalance_check_interval_ms(config.leader_imbalance_check_interval_ms),
        active: false,
        pending: Vec::new(),
        fetches: Vec::new(),
        recent: VecDeque::new(),
        peers,
        start: Instant::now(),
        random: seed,
        next_tick: Instant::now(),
        next_session_check_ms: 0,
    };
    controller_loop.route(output);
    shared.spawn("controller", move |_| controller_loop.run(events))
}

struct PendingProposal {
    proposal: Proposal,
    kind: PendingKind,
    reply: flume::Sender<Response>,
}

enum PendingKind {
    Registered(BrokerEpoch),
    TopicCreated(TopicId),
    Committed,
    ProducerIds {
        first: i64,
    },
    /// The partition's state once committed (the offset is filled in then).
    PartitionAltered(AlterPartitionReply),
    /// Nobody waits (heartbeat state changes, fencing).
    Silent,
}

struct ParkedFetch {
    after: MetadataOffset,
    deadline: Instant,
    reply: flume::Sender<Response>,
}

struct ControllerLoop<S: RaftLogStore> {
    shared: Arc<Shared>,
    node: RaftNode<S>,
    controller: QuorumController,
    active: bool,
    pending: Vec<PendingProposal>,
    fetches: Vec<ParkedFetch>,
    /// Contiguous committed batches ending at the image's offset.
    recent: VecDeque<FetchedBatch>,
    peers: HashMap<BrokerId, flume::Sender<Message>>,
    start: Instant,
    random: u64,
    next_tick: Instant,
    next_session_check_ms: u64,
}

impl<S: RaftLogStore> ControllerLoop<S> {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// 80 to 120 % of the tick interval (SplitMix64): the election jitter.
    fn jittered_tick(&mut self) -> Duration {
        self.random = self.random.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.random;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let interval_us = self.shared.config.tick_interval_ms * 1000;
        let low = interval_us * 8 / 10;
        Duration::from_micros(low + z % (interval_us * 4 / 10 + 1))
    }

    fn run(mut self, events: flume::Receiver<Event>) {
        info!(node = %self.node.node_id(), "controller thread started");
        loop {
            let wait = self
                .next_deadline()
                .saturating_duration_since(Instant::now());
            match events.recv_timeout(wait) {
                Ok(Event::Stop) | Err(flume::RecvTimeoutError::Disconnected) => break,
                Ok(event) => {
                    self.handle(event);
                    // Take whatever else queued up before one drive (one sync).
                    while let Ok(event) = events.try_recv() {
                        if matches!(event, Event::Stop) {
                            return self.stop();
                        }
                        self.handle(event);
                    }
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
            if self.shared.stopping() {
                break;
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.node.tick();
                self.next_tick = now + self.jittered_tick();
                self.check_sessions();
            }
            if let Err(error) = self.drive() {
                // A store error is fatal (no fsync retry): stop this voter,
                // and report it as a storage failure, which halts the
                // `sluice` process (engine failure.rs): a broker serving on
                // with a metadata view that no longer moves would keep
                // leading partitions the cluster gave to others.
                tracing::error!(node = %self.node.node_id(), %error, "controller stopped");
                sluice_engine::failure::report(
                    &self.shared.config.data_dir.join("controller"),
                    &format!("the controller's Raft store failed: {error}"),
                );
                break;
            }
            self.expire_fetches();
        }
        self.stop();
    }

    fn stop(self) {
        info!(node = %self.node.node_id(), "controller thread stopped");
        // Dropping the pending replies tells their callers Stopped.
    }

    fn next_deadline(&self) -> Instant {
        self.fetches
            .iter()
            .map(|fetch| fetch.deadline)
            .fold(self.next_tick, Instant::min)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Raft(message) => {
                let from_voter = self
                    .shared
                    .config
                    .voters
                    .iter()
                    .any(|(id, _)| id.raft_id() == message.from);
                if message.to != self.node.node_id().raft_id() || !from_voter {
                    warn!(
                        from = message.from,
                        to = message.to,
                        "raft message not for this group"
                    );
                    return;
                }
                if let Err(error) = self.node.step(message) {
                    debug!(%error, "raft step refused a message");
                }
            }
            Event::Request { request, reply } => self.request(request, reply),
            Event::SendFailed { to, snapshot } => {
                self.node.report_unreachable(to);
                if snapshot {
                    self.node.report_snapshot(to, false);
                }
            }
            Event::SnapshotSent { to } => self.node.report_snapshot(to, true),
            Event::Stop => {}
        }
    }

    fn drive(&mut self) -> Result<(), NodeError> {
        if !self.node.has_work() {
            self.update_role();
            return Ok(());
        }
        let output = self.node.drive()?;
        self.route(output);
        Ok(())
    }

    fn update_role(&mut self) {
        let can_decide = self.node.can_decide();
        if can_decide && !self.active {
            info!(node = %self.node.node_id(), term = self.node.term(), "active controller");
            let now_ms = self.now_ms();
            self.controller.become_active(self.node.image(), now_ms);
        }
        self.active = can_decide;
        self.shared.set_leader(self.node.leader());
    }

    fn route(&mut self, output: Output) {
        for message in output.messages {
            let to = BrokerId::from_raft_id(message.to);
            let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let sent = self
                .peers
                .get(&to)
                .is_some_and(|peer| peer.try_send(message).is_ok());
            if !sent {
                self.node.report_unreachable(to);
                if snapshot {
                    self.node.report_snapshot(to, false);
                }
            }
        }
        if output.snapshot_loaded.is_some() {
            self.recent.clear();
            let offset = self.node.image().offset();
            // Proposals the snapshot covers: their outcome is not known here.
            let pending = std::mem::take(&mut self.pending);
            for proposal in pending {
                if proposal.proposal.offset <= offset {
                    let _ = proposal.reply.send(Err(RequestError::rejected(
                        ErrorKind::ProposalLost,
                        "leadership changed before the proposal was seen committed",
                    )));
                } else {
                    self.pending.push(proposal);
                }
            }
        }
        let changed = output.snapshot_loaded.is_some() || !output.committed.is_empty();
        for batch in output.committed {
            self.committed(&batch);
            self.recent.push_back(FetchedBatch {
                offset: batch.offset,
                records: batch.records,
            });
            if self.recent.len() > RECENT_BATCHES_MAX {
                self.recent.pop_front();
            }
        }
        if changed {
            self.shared.publish(self.node.image().clone());
            self.answer_fetches();
        }
        self.update_role();
    }

    /// Answers the proposals a committed batch decides.
    fn committed(&mut self, batch: &CommittedBatch) {
        let pending = std::mem::take(&mut self.pending);
        for proposal in pending {
            if proposal.proposal.offset > batch.offset {
                self.pending.push(proposal);
                continue;
            }
            let as_proposed =
                proposal.proposal.offset == batch.offset && proposal.proposal.term == batch.term;
            let offset = batch.offset;
            let response = match (&batch.result, as_proposed) {
                (_, false) => Err(RequestError::rejected(
                    ErrorKind::ProposalLost,
                    "a new leader replaced the proposal",
                )),
                // Decided against an older image, refused by the current
                // one (e.g. a replica placed on a broker fenced in between):
                // nothing was applied, so deciding again is safe; the
                // caller's retry sees the current image.
                (Err(error), true) => Err(RequestError::rejected(
                    ErrorKind::ProposalLost,
                    format!("refused when committed, to be decided again: {error}"),
                )),
                (Ok(()), true) => Ok(match proposal.kind {
                    PendingKind::Registered(broker_epoch) => Reply::Registered { broker_epoch },
                    PendingKind::TopicCreated(topic_id) => Reply::TopicCreated { topic_id, offset },
                    PendingKind::Committed | PendingKind::Silent => Reply::Committed { offset },
                    PendingKind::ProducerIds { first } => Reply::ProducerIds {
                        first,
                        count: PRODUCER_ID_BLOCK_SIZE,
                        offset,
                    },
                    PendingKind::PartitionAltered(reply) => {
                        Reply::PartitionAltered(AlterPartitionReply { offset, ..reply })
                    }
                }),
            };
            let _ = proposal.reply.send(response);
        }
    }

    fn check_sessions(&mut self) {
        if !self.active {
            return;
        }
        let now_ms = self.now_ms();
        if now_ms < self.next_session_check_ms {
            return;
        }
        self.next_session_check_ms = now_ms + SESSION_CHECK_INTERVAL_MS;
        for records in self.controller.tick(self.node.image(), now_ms) {
            info!(
                ?records,
                "fencing a broker, completing reassignments or electing preferred leaders"
            );
            let (reply, _) = flume::bounded(1);
            self.propose(records, PendingKind::Silent, reply);
        }
    }

    fn propose(
        &mut self,
        records: Vec<MetadataRecord>,
        kind: PendingKind,
        reply: flume::Sender<Response>,
    ) {
        match self.node.propose(&RecordBatch::new(records)) {
            Ok(proposal) => self.pending.push(PendingProposal {
                proposal,
                kind,
                reply,
            }),
            Err(ProposeError::NotLeader { leader }) => {
                let _ = reply.send(Err(RequestError::NotController { leader }));
            }
            Err(ProposeError::Dropped) => {
                let _ = reply.send(Err(RequestError::rejected(
                    ErrorKind::ProposalLost,
                    "raft dropped the proposal",
                )));
            }
        }
    }

    fn request(&mut self, request: Request, reply: flume::Sender<Response>) {
        if let Request::MetadataFetch { after, max_wait_ms } = request {
            match self.fetch(after) {
                Some(response) => {
                    let _ = reply.send(response);
                }
                None if max_wait_ms == 0 => {
                    let _ = reply.send(Ok(Reply::Batches {
                        batches: Vec::new(),
                        leader: self.node.leader(),
                    }));
                }
                None => self.fetches.push(ParkedFetch {
                    after,
                    deadline: Instant::now() + Duration::from_millis(u64::from(max_wait_ms)),
                    reply,
                }),
            }
            return;
        }
        if !self.active || !self.node.can_decide() {
            let leader = self.node.leader().filter(|id| *id != self.node.node_id());
            let _ = reply.send(Err(RequestError::NotController { leader }));
            return;
        }
        let now_ms = self.now_ms();
        let image = self.node.image();
        let decided = match request {
            Request::RegisterBroker(request) => {
                let next = self
                    .node
                    .next_offset()
                    .expect("the active controller leads");
                match self
                    .controller
                    .register_broker(image, next, &request, now_ms)
                {
                    RegistrationDecision::AlreadyRegistered(broker_epoch) => {
                        Err(Ok(Reply::Registered { broker_epoch }))
                    }
                    RegistrationDecision::Propose {
                        records,
                        broker_epoch,
                        directory_replaced,
                    } => {
                        if let Some(replaced) = &directory_replaced {
                            warn_directory_replaced(replaced);
                        }
                        Ok((records, PendingKind::Registered(broker_epoch)))
                    }
                }
            }
            Request::Heartbeat(request) => {
                match self.controller.heartbeat(image, &request, now_ms) {
                    Err(error) => Err(Err(error.into())),
                    Ok(decision) => {
                        if !decision.records.is_empty() {
                            let (silent, _) = flume::bounded(1);
                            self.propose(decision.records, PendingKind::Silent, silent);
                        }
                        Err(Ok(Reply::Heartbeat {
                            is_fenced: decision.is_fenced,
                            is_caught_up: decision.is_caught_up,
                            should_shut_down: decision.should_shut_down,
                        }))
                    }
                }
            }
            Request::CreateTopic(request) => {
                let topic_id = TopicId(uuid::Uuid::new_v4());
                self.controller
                    .create_topic(image, &request, topic_id)
                    .map(|records| (records, PendingKind::TopicCreated(topic_id)))
                    .map_err(|error| Err(error.into()))
            }
            Request::DeleteTopic { name } => self
                .controller
                .delete_topic(image, &name, None)
                .map(|records| (records, PendingKind::Committed))
                .map_err(|error| Err(error.into())),
            Request::DeleteTopicWithId { name, topic_id } => self
                .controller
                .delete_topic(image, &name, Some(topic_id))
                .map(|records| (records, PendingKind::Committed))
                .map_err(|error| Err(error.into())),
            Request::CreatePartitions {
                name,
                total_count,
                assignment,
            } => self
                .controller
                .create_partitions(image, &name, total_count, assignment.as_deref())
                .map(|records| (records, PendingKind::Committed))
                .map_err(|error| Err(error.into())),
            Request::AlterConfigs { resource, changes } => self
                .controller
                .alter_configs(image, &resource, &changes)
                .map(|records| (records, PendingKind::Committed))
                .map_err(|error| Err(error.into())),
            Request::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => self
                .controller
                .allocate_producer_ids(image, broker_id, broker_epoch)
                .map(|records| {
                    let first = records
                        .iter()
                        .find_map(|record| match record {
                            MetadataRecord::ProducerIds(ids) => {
                                Some(ids.next_block_start - PRODUCER_ID_BLOCK_SIZE)
                            }
                            _ => None,
                        })
                        .expect("an allocation is one ProducerIds record");
                    (records, PendingKind::ProducerIds { first })
                })
                .map_err(|error| Err(error.into())),
            Request::AlterPartition(request) => {
                match self.controller.alter_partition(image, &request) {
                    Ok(AlterPartitionDecision::Current(reply)) => {
                        Err(Ok(Reply::PartitionAltered(reply)))
                    }
                    Ok(AlterPartitionDecision::Propose { records, reply }) => {
                        Ok((records, PendingKind::PartitionAltered(reply)))
                    }
                    Err(error) => Err(Err(error.into())),
                }
            }
            Request::AlterScramCredentials {
                upsertions,
                deletions,
            } => {
                let records: Vec<MetadataRecord> = deletions
                    .into_iter()
                    .map(|(name, mechanism)| {
                        MetadataRecord::RemoveUserScramCredential(RemoveUserScramCredential {
                            name,
                            mechanism,
                        })
                    })
                    .chain(
                        upsertions
                            .into_iter()
                            .map(MetadataRecord::UserScramCredential),
                    )
                    .collect();
                if records.is_empty() {
                    Err(Err(RequestError::rejected(
                        ErrorKind::InvalidRequest,
                        "no credential to alter",
                    )))
                } else {
                    Ok((records, PendingKind::Committed))
                }
            }
            Request::AlterAcls {
                creations,
                deletions,
            } => {
                let acls = image.acls();
                let mut records: Vec<MetadataRecord> = deletions
                    .into_iter()
                    .filter(|id| acls.get(id).is_some())
                    .map(|id| {
                        MetadataRecord::RemoveAccessControlEntry(RemoveAccessControlEntry { id })
                    })
                    .collect();
                let mut created: Vec<&crate::auth::acl::AclBinding> = Vec::new();
                for binding in &creations {
                    if binding.validate().is_err()
                        || acls.find(binding).is_some()
                        || created.contains(&binding)
                    {
                        continue;
                    }
                    created.push(binding);
                    records.push(MetadataRecord::AccessControlEntry(AccessControlEntry {
                        id: uuid::Uuid::new_v4(),
                        binding: binding.clone(),
                    }));
                }
                if records.is_empty() {
                    Err(Ok(Reply::Committed {
                        offset: image.offset(),
                    }))
                } else {
                    Ok((records, PendingKind::Committed))
                }
            }
            Request::ElectPreferredLeaders { partitions } => {
                let records = super::quorum_controller::elect_preferred_leaders(image, &partitions);
                if records.is_empty() {
                    Err(Ok(Reply::Committed {
                        offset: image.offset(),
                    }))
                } else {
                    Ok((records, PendingKind::Committed))
                }
            }
            Request::ElectUncleanLeaders { partitions } => {
                let records = super::quorum_controller::elect_unclean_leaders(image, &partitions);
                if records.is_empty() {
                    Err(Ok(Reply::Committed {
                        offset: image.offset(),
                    }))
                } else {
                    Ok((records, PendingKind::Committed))
                }
            }
            Request::AlterReassignments { reassignments } => {
                alter_reassignments(image, &reassignments)
                    .map(|records| (records, PendingKind::Committed))
            }
            Request::MetadataFetch { .. } => unreachable!("answered above"),
        };
        match decided {
            Ok((records, kind)) => self.propose(records, kind, reply),
            Err(response) => {
                let _ = reply.send(response);
            }
        }
    }

    /// Committed batches after `after`, the snapshot if `after` is before
    /// what is kept, or `None` when nothing is newer.
    fn fetch(&self, after: MetadataOffset) -> Option<Response> {
        let image = self.node.image();
        if after >= image.offset() {
            return None;
        }
        let leader = self.node.leader();
        let first_kept = self.recent.front().map(|batch| batch.offset);
        let covered = first_kept.is_some_and(|first| first.0 <= after.0 + 1);
        if !covered {
            return Some(Ok(Reply::Snapshot {
                image: image.encode_snapshot(),
                leader,
            }));
        }
        let batches = self
            .recent
            .iter()
            .filter(|batch| batch.offset > after)
            .take(FETCH_BATCHES_MAX)
            .cloned()
            .collect();
        Some(Ok(Reply::Batches { batches, leader }))
    }

    fn answer_fetches(&mut self) {
        let fetches = std::mem::take(&mut self.fetches);
        for fetch in fetches {
            match self.fetch(fetch.after) {
                Some(response) => {
                    let _ = fetch.reply.send(response);
                }
                None => self.fetches.push(fetch),
            }
        }
    }

    fn expire_fetches(&mut self) {
        let now = Instant::now();
        let leader = self.node.leader();
        self.fetches.retain(|fetch| {
            if fetch.deadline > now {
                return true;
            }
            let _ = fetch.reply.send(Ok(Reply::Batches {
                batches: Vec::new(),
                leader,
            }));
            false
        });
    }
}

/// Sends Raft messages to one peer voter over one connection, reconnecting
/// with backoff. A message that cannot go now is dropped and reported.
fn sender_loop(
    shared: Arc<Shared>,
    to: BrokerId,
    address: String,
    messages: flume::Receiver<Message>,
    events: flume::Sender<Event>,
) {
    let mut stream: Option<TcpStream> = None;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at = Instant::now();
    while let Ok(message) = messages.recv() {
        if shared.stopping() {
            break;
        }
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        if stream.is_none() && Instant::now() >= retry_at {
            match connect(&address, shared.config.peer_secret.as_ref()) {
                Ok(connected) => {
                    backoff = BACKOFF_MIN;
                    stream = Some(connected);
                }
                Err(error) => {
                    debug!(%to, %address, %error, "controller peer unreachable");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        let delivered = match stream.as_mut() {
            Some(connection) => {
                let payload = super::node::encode_message(&message);
                match write_frame(connection, peer::kind::RAFT_MESSAGE, 0, &payload) {
                    Ok(()) => true,
                    Err(error) => {
                        debug!(%to, %error, "controller peer connection lost");
                        stream = None;
                        retry_at = Instant::now() + backoff;
                        false
                    }
                }
            }
            None => false,
        };
        let event = match (delivered, snapshot) {
            (true, true) => Some(Event::SnapshotSent { to }),
            (true, false) => None,
            (false, _) => Some(Event::SendFailed { to, snapshot }),
        };
        if let Some(event) = event {
            let _ = events.send(event);
        }
    }
}

/// How often a failing outbound authentication is logged as a warning.
const AUTH_FAILURE_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// A new peer connection to `address`, authenticated when the cluster has
/// a secret (a refusal is an error of kind `PermissionDenied`, logged here).
fn connect(address: &str, secret: Option<&PeerSecret>) -> io::Result<TcpStream> {
    let resolved = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&resolved, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    if let Some(secret) = secret {
        match peer::io::authenticate_client(&mut stream, secret) {
            Ok(()) => {}
            Err(PeerError::Io(error)) => return Err(error),
            Err(error) => {
                // Retried every heartbeat: say it once per interval.
                static LAST_WARNED: Mutex<Option<Instant>> = Mutex::new(None);
                let mut last = lock(&LAST_WARNED);
                if last.is_none_or(|at| at.elapsed() >= AUTH_FAILURE_WARN_INTERVAL) {
                    *last = Some(Instant::now());
                    warn!(%address, %error, "controller peer authentication failed");
                } else {
                    debug!(%address, %error, "controller peer authentication failed");
                }
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    error.to_string(),
                ));
            }
        }
    }
    Ok(stream)
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    if let Err(error) = listener.set_nonblocking(true) {
        warn!(%error, "controller listener");
        return;
    }
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, peer_address)) => {
                let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                let registered = stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.set_nodelay(true))
                    .and_then(|()| stream.try_clone());
                match registered {
                    Ok(clone) => {
                        lock(&shared.inbound).insert(id, clone);
                    }
                    Err(error) => {
                        warn!(%error, "controller connection setup");
                        continue;
                    }
                }
                let spawned = Arc::clone(&shared);
                let result =
                    thread::Builder::new()
                        .name("sluice-ctl-conn".into())
                        .spawn(move || {
                            serve_connection(&spawned, stream, peer_address);
                            lock(&spawned.inbound).remove(&id);
                        });
                if let Err(error) = result {
                    warn!(%error, "spawn a controller connection thread");
                    lock(&shared.inbound).remove(&id);
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(error) => {
                warn!(%error, "controller listener accept");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// One inbound peer connection: Raft messages go to the controller thread;
/// each request is answered on the same connection, in order.
fn serve_connection(shared: &Shared, mut stream: TcpStream, peer_address: SocketAddr) {
    if let Some(secret) = &shared.config.peer_secret
        && let Err(error) = peer::io::authenticate_server(&mut stream, secret)
    {
        if !shared.stopping() {
            warn!(peer = %peer_address, %error, "controller peer connection refused");
        }
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    loop {
        let frame = match read_frame(&mut stream) {
            Ok(frame) => frame,
            Err(PeerError::Closed) => return,
            Err(error) => {
                if !shared.stopping() {
                    warn!(peer = %peer_address, %error, "closing a controller peer connection");
                }
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        match frame.kind {
            peer::kind::RAFT_MESSAGE => match super::node::decode_message(&frame.payload) {
                Ok(message) => {
                    if let Some(events) = &shared.events {
                        let _ = events.send(Event::Raft(message));
                    }
                }
                Err(error) => {
                    warn!(peer = %peer_address, %error, "undecodable raft message; closing");
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
            },
            peer::kind::CONTROLLER_REQUEST => {
                let request = match Request::decode(&frame.payload) {
                    Ok(request) => request,
                    Err(error) => {
                        warn!(peer = %peer_address, %error, "undecodable controller request; closing");
                        let _ = stream.shutdown(Shutdown::Both);
                        return;
                    }
                };
                let response = answer_locally(shared, request);
                if response == Err(RequestError::Stopped) {
                    // This node is going away: the caller retries elsewhere.
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                let payload = super::rpc::encode_response(&response);
                if let Err(error) =
                    write_frame(&mut stream, peer::kind::CONTROLLER_RESPONSE, 0, &payload)
                {
                    debug!(peer = %peer_address, %error, "controller response not delivered");
                    return;
                }
            }
            peer::kind::AUTH_HELLO => {
                warn!(
                    peer = %peer_address,
                    reason = peer::auth::unexpected_hello_reason(),
                    "controller peer connection refused"
                );
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            other => {
                warn!(peer = %peer_address, kind = other, "unexpected peer frame kind; closing");
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Asks this node's own controller thread (a voter), or says where the
/// active controller is (an observer).
fn answer_locally(shared: &Shared, request: Request) -> Response {
    let Some(events) = &shared.events else {
        return Err(RequestError::NotController {
            leader: shared.leader(),
        });
    };
    let wait = match &request {
        Request::MetadataFetch { max_wait_ms, .. } => u64::from(*max_wait_ms),
        _ => 0,
    } + shared.config.request_timeout_ms;
    let (reply, answer) = flume::bounded(1);
    if events.send(Event::Request { request, reply }).is_err() {
        return Err(RequestError::Stopped);
    }
    match answer.recv_timeout(Duration::from_millis(wait)) {
        Ok(response) => response,
        Err(flume::RecvTimeoutError::Timeout) => Err(RequestError::Timeout),
        Err(flume::RecvTimeoutError::Disconnected) => Err(RequestError::Stopped),
    }
}

/// One request over the peer protocol to `to`, on a pooled connection.
fn call_remote(
    shared: &Shared,
    to: BrokerId,
    request: &Request,
    timeout: Duration,
) -> io::Result<Response> {
    let pooled = lock(&shared.pool).get_mut(&to).and_then(Vec::pop);
    let mut stream = match pooled {
        Some(stream) => stream,
        None => {
            let address = shared.config.voter_address(to).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{to} is not a voter"))
            })?;
            connect(address, shared.config.peer_secret.as_ref())?
        }
    };
    stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    let exchange = (|| -> Result<Response, PeerError> {
        write_frame(
            &mut stream,
            peer::kind::CONTROLLER_REQUEST,
            0,
            &request.encode(),
        )?;
        let frame = read_frame(&mut stream)?;
        if frame.kind != peer::kind::CONTROLLER_RESPONSE {
            return Err(
                io::Error::new(io::ErrorKind::InvalidData, "not a controller response").into(),
            );
        }
        super::rpc::decode_response(&frame.payload)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()).into())
    })();
    match exchange {
        Ok(response) => {
            lock(&shared.pool).entry(to).or_default().push(stream);
            Ok(response)
        }
        Err(PeerError::Io(error)) => Err(error),
        Err(error) => Err(io::Error::other(error.to_string())),
    }
}

/// Sends `request` to the active controller, following NOT_CONTROLLER
/// hints and retrying on lost proposals and unreachable controllers until
/// `deadline`. Blocking; runs on a `call` or `heartbeat` thread.
fn route_request(shared: &Shared, request: &Request, deadline: Instant) -> Response {
    let config = &shared.config;
    let mut hint = shared.leader();
    let mut rotation = config
        .voters
        .iter()
        .position(|(id, _)| *id == config.node_id)
        .unwrap_or(0);
    let mut backoff = BACKOFF_MIN;
    // An earlier attempt may have reached the controller and committed
    // without an answer reaching us (the leader died, a timeout).
    let mut uncertain = false;
    loop {
        if shared.stopping() {
            return Err(RequestError::Stopped);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(RequestError::Timeout);
        }
        let target = hint.or_else(|| shared.leader()).unwrap_or_else(|| {
            rotation = (rotation + 1) % config.voters.len();
            config.voters[rotation].0
        });
        let remaining = deadline - now;
        let result = if target == config.node_id && shared.events.is_some() {
            Ok(answer_locally(shared, request.clone()))
        } else {
            // A peer that is stopping is as good as unreachable.
            call_remote(shared, target, request, remaining).and_then(|response| match response {
                Err(RequestError::Stopped) => Err(io::Error::other("controller stopping")),
                response => Ok(response),
            })
        };
        match result {
            Ok(Err(RequestError::NotController { leader })) => {
                hint = leader.filter(|leader| *leader != target);
                if hint.is_none() {
                    // Nobody known: give the election time, then ask around.
                    thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if shared.leader() == Some(target) {
                        shared.set_leader(None);
                    }
                }
                if !config.is_voter() {
                    shared.set_leader(hint);
                }
            }
            Ok(Err(error)) if error.is_retriable() => {
                thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Ok(Err(RequestError::Timeout)) => {
                hint = None;
                uncertain = true;
            }
            Ok(response) => {
                if !config.is_voter() {
                    shared.set_leader(Some(target));
                }
                if uncertain {
                    return created_by_an_earlier_attempt(shared, request, response, deadline);
                }
                return response;
            }
            Err(error) => {
                debug!(%target, %error, "controller unreachable");
                hint = None;
                uncertain = true;
                if shared.leader() == Some(target) && !config.is_voter() {
                    shared.set_leader(None);
                }
                thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if shared.leader() == Some(target) {
                    // A voter's own view still names the dead leader until
                    // the election; ask the others meanwhile.
                    rotation = (rotation + 1) % config.voters.len();
                    let next = config.voters[rotation].0;
                    hint = (next != target).then_some(next);
                }
            }
        }
    }
}

/// A creation retried after an attempt whose outcome is unknown, answered
/// TOPIC_ALREADY_EXISTS: the earlier attempt most likely committed it. When
/// the committed topic has the partition count asked for, answer as the
/// creation (Kafka's client would otherwise report its own successful
/// creation as a failure). Another client's creation of the same name and
/// shape at the same moment is indistinguishable, and both are told
/// "created".
fn created_by_an_earlier_attempt(
    shared: &Shared,
    request: &Request,
    response: Response,
    deadline: Instant,
) -> Response {
    let Request::CreateTopic(create) = request else {
        return response;
    };
    let Err(RequestError::Rejected {
        kind: ErrorKind::TopicAlreadyExists,
        ..
    }) = &response
    else {
        return response;
    };
    let wanted = create
        .assignment
        .as_ref()
        .map_or(create.partition_count, |assignment| assignment.len() as i32);
    // The leader has it committed; this node's image may lag a moment.
    while Instant::now() < deadline && !shared.stopping() {
        let image = shared.image();
        if let Some(topic) = image.topic_by_name(&create.name) {
            if topic.partitions.len() as i32 == wanted {
                info!(topic = %create.name, "a retried creation had committed: answered as created");
                return Ok(Reply::TopicCreated {
                    topic_id: topic.topic_id,
                    offset: image.offset(),
                });
            }
            return response;
        }
        thread::sleep(Duration::from_millis(10));
    }
    response
}

/// Observers: follow the committed log by MetadataFetch from the voters.
fn follower_loop(shared: Arc<Shared>) {
    let voters: Vec<BrokerId> = shared.config.voters.iter().map(|(id, _)| *id).collect();
    let mut rotation = 0;
    let mut backoff = BACKOFF_MIN;
    while !shared.stopping() {
        let target = shared
            .leader()
            .filter(|id| voters.contains(id))
            .unwrap_or(voters[rotation % voters.len()]);
        let image = shared.image();
        let request = Request::MetadataFetch {
            after: image.offset(),
            max_wait_ms: FETCH_WAIT_MS,
        };
        let timeout = Duration::from_millis(u64::from(FETCH_WAIT_MS) + 5000);
        let failed = match call_remote(&shared, target, &request, timeout) {
            Ok(Ok(Reply::Batches { batches, leader })) => {
                shared.set_leader(leader);
                if !batches.is_empty() {
                    let mut next = (*image).clone();
                    for batch in batches {
                        if batch.offset <= next.offset() {
                            continue;
                        }
                        // A refusal is the same on every node; it still
                        // moves the offset.
                        let _ = next.apply_batch(batch.offset, &batch.records);
                    }
                    shared.publish(next);
                }
                false
            }
            Ok(Ok(Reply::Snapshot {
                image: bytes,
                leader,
            })) => {
                shared.set_leader(leader);
                match MetadataImage::decode_snapshot(&bytes) {
                    Ok(next) if next.offset() > image.offset() => {
                        shared.publish(next);
                        false
                    }
                    Ok(_) => false,
                    Err(error) => {
                        warn!(%target, %error, "undecodable metadata snapshot");
                        true
                    }
                }
            }
            Ok(other) => {
                debug!(%target, ?other, "metadata fetch refused");
                true
            }
            Err(error) => {
                debug!(%target, %error, "metadata fetch failed");
                true
            }
        };
        if failed {
            rotation += 1;
            shared.set_leader(None);
            thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        } else {
            backoff = BACKOFF_MIN;
        }
    }
}

/// Registers this broker, then heartbeats until the service stops.
fn heartbeat_loop(shared: Arc<Shared>) {
    let config = &shared.config;
    let interval = Duration::from_millis(config.heartbeat_interval_ms);
    let mut incarnation = IncarnationId(uuid::Uuid::new_v4());
    let mut backoff = BACKOFF_MIN;
    while !shared.stopping() {
        let epoch = lock(&shared.broker).epoch;
        let deadline = Instant::now() + interval.max(Duration::from_millis(1000));
        let Some(broker_epoch) = epoch else {
            let request = Request::RegisterBroker(RegistrationRequest {
                broker_id: config.node_id,
                incarnation_id: incarnation,
                listeners: config.listeners.clone(),
                shard_count: config.shard_count,
                rack: config.rack.clone(),
                directory_id: config.directory_id,
            });
            match route_request(&shared, &request, deadline) {
                Ok(Reply::Registered { broker_epoch }) => {
                    info!(node = %config.node_id, epoch = broker_epoch.0, "broker registered");
                    lock(&shared.broker).epoch = Some(broker_epoch);
                    backoff = BACKOFF_MIN;
                    // Heartbeat as soon as the registration is applied here,
                    // so the broker is unfenced without a lost interval.
                    wait_applied_blocking(&shared, MetadataOffset(broker_epoch.0), interval);
                }
                other => {
                    debug!(?other, "broker registration not done yet");
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            continue;
        };
        let want_shut_down = lock(&shared.broker).want_shut_down;
        let request = Request::Heartbeat(HeartbeatRequest {
            broker_id: config.node_id,
            broker_epoch,
            current_metadata_offset: shared.image().offset(),
            want_fence: false,
            want_shut_down,
        });
        match route_request(&shared, &request, deadline) {
            Ok(Reply::Heartbeat {
                is_fenced,
                should_shut_down,
                ..
            }) => {
                let mut broker = lock(&shared.broker);
                broker.fenced = is_fenced;
                broker.should_shut_down |= should_shut_down;
                shared.broker_changed.notify_all();
            }
            Err(RequestError::Rejected {
                kind: ErrorKind::StaleBrokerEpoch | ErrorKind::UnknownBroker,
                message,
            }) => {
                warn!(%message, "broker registration lost; registering again");
                incarnation = IncarnationId(uuid::Uuid::new_v4());
                lock(&shared.broker).epoch = None;
                continue;
            }
            other => debug!(?other, "heartbeat not answered"),
        }
        let broker = lock(&shared.broker);
        let pause = if broker.want_shut_down && !broker.should_shut_down {
            interval.min(Duration::from_millis(100))
        } else {
            interval
        };
        // Woken early by a controlled-shutdown request.
        let _ = shared.broker_changed.wait_timeout(broker, pause);
    }
}

/// The warning of a registration from a replaced disk (decided, to be
/// proposed): which broker, which directories, and what it costs.
fn warn_directory_replaced(replaced: &DirectoryReplaced) {
    let name = |topic: &str, partition: PartitionIndex| format!("{topic}-{}", partition.0);
    let mut consequences = Vec::new();
    let leaderless: Vec<String> = replaced
        .isr_emptied
        .iter()
        .filter(|(_, _, leader)| leader.is_none())
        .map(|(topic, partition, _)| name(topic, *partition))
        .collect();
    if !leaderless.is_empty() {
        consequences.push(format!(
            "partitions left without a leader until an unclean election (ElectLeaders \
             UNCLEAN, or unclean.leader.election.enable) gives them one: {}",
            leaderless.join(", ")
        ));
    }
    let uncleanly_led: Vec<String> = replaced
        .isr_emptied
        .iter()
        .filter_map(|(topic, partition, leader)| {
            leader.map(|leader| format!("{} (to {leader})", name(topic, *partition)))
        })
        .collect();
    if !uncleanly_led.is_empty() {
        consequences.push(format!(
            "partitions given another leader at once (unclean.leader.election.enable): {}",
            uncleanly_led.join(", ")
        ));
    }
    let sole: Vec<String> = replaced
        .sole_replica
        .iter()
        .map(|(topic, partition)| name(topic, *partition))
        .collect();
    if !sole.is_empty() {
        consequences.push(format!(
            "partitions it is the only replica of, which it leads again with whatever its \
             disk holds: {}",
            sole.join(", ")
        ));
    }
    if consequences.is_empty() {
        consequences.push("it was the last in-sync replica of no partition".to_string());
    }
    warn!(
        broker = %replaced.broker_id,
        previous_directory_id = %replaced.previous,
        directory_id = %replaced.current,
        "broker {} registers with data directory {} instead of {}: its disk was replaced or \
         wiped, so it leaves every ISR, also as the last member; {}",
        replaced.broker_id,
        replaced.current,
        replaced.previous,
        consequences.join("; "),
    );
}

fn wait_applied_blocking(shared: &Shared, offset: MetadataOffset, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut image = lock(&shared.image);
    while image.offset() < offset {
        let now = Instant::now();
        if now >= deadline || shared.stopping() {
            return false;
        }
        image = shared
            .applied
            .wait_timeout(image, deadline - now)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
    true
}

impl ControllerHandle {
    pub fn node_id(&self) -> BrokerId {
        self.shared.config.node_id
    }

    /// The controller listener's bound address, if any.
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.shared.local_address
    }

    /// The latest image this node applied (a snapshot: it never changes).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.shared.image()
    }

    pub fn applied_offset(&self) -> MetadataOffset {
        self.shared.image().offset()
    }

    /// Resolves once this node's image reached `offset`; `Err(Stopped)` if
    /// the service stops first. Runtime-neutral (a oneshot), so a compio
    /// shard can await it.
    pub fn wait_applied(
        &self,
        offset: MetadataOffset,
    ) -> impl Future<Output = Result<(), RequestError>> + Send + 'static {
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiters = lock(&self.shared.waiters);
            if self.shared.image().offset() >= offset {
                let _ = sender.send(());
            } else if !self.shared.stopping() {
                waiters.push((offset, sender));
            }
        }
        async move { receiver.await.map_err(|_| RequestError::Stopped) }
    }

    /// Blocks (not on a shard!) until `offset` is applied or `timeout`.
    pub fn wait_applied_timeout(&self, offset: MetadataOffset, timeout: Duration) -> bool {
        wait_applied_blocking(&self.shared, offset, timeout)
    }

    /// The active controller as this node last knew it.
    pub fn active_controller(&self) -> Option<BrokerId> {
        self.shared.leader()
    }

    /// This broker's registration epoch, once registered.
    pub fn broker_epoch(&self) -> Option<BrokerEpoch> {
        lock(&self.shared.broker).epoch
    }

    /// Whether the controller last said this broker is fenced.
    pub fn is_fenced(&self) -> bool {
        let broker = lock(&self.shared.broker);
        broker.epoch.is_none() || broker.fenced
    }

    /// Sends `request` to the active controller from a fresh `call` thread
    /// and awaits the answer.
    pub fn call(&self, request: Request) -> impl Future<Output = Response> + Send + 'static {
        let (sender, receiver) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let deadline = Instant::now() + Duration::from_millis(shared.config.request_timeout_ms);
        let spawned = thread::Builder::new()
            .name("sluice-ctl-call".into())
            .spawn(move || {
                let _ = sender.send(route_request(&shared, &request, deadline));
            });
        async move {
            if let Err(error) = spawned {
                warn!(%error, "spawn a controller call thread");
                return Err(RequestError::Stopped);
            }
            receiver.await.unwrap_or(Err(RequestError::Stopped))
        }
    }

    pub async fn create_topic(
        &self,
        request: CreateTopicRequest,
    ) -> Result<CreatedTopic, RequestError> {
        match self.call(Request::CreateTopic(request)).await? {
            Reply::TopicCreated { topic_id, offset } => Ok(CreatedTopic { topic_id, offset }),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<MetadataOffset, RequestError> {
        committed(self.call(Request::DeleteTopic { name: name.into() }).await)
    }

    /// Delete topic `name` only while it has id `topic_id`
    /// (`Request::DeleteTopicWithId`).
    pub async fn delete_topic_with_id(
        &self,
        name: &str,
        topic_id: TopicId,
    ) -> Result<MetadataOffset, RequestError> {
        committed(
            self.call(Request::DeleteTopicWithId {
                name: name.into(),
                topic_id,
            })
            .await,
        )
    }

    pub async fn create_partitions(
        &self,
        name: &str,
        total_count: i32,
        assignment: Option<Vec<Vec<BrokerId>>>,
    ) -> Result<MetadataOffset, RequestError> {
        let request = Request::CreatePartitions {
            name: name.into(),
            total_count,
            assignment,
        };
        committed(self.call(request).await)
    }

    /// Create, replace or delete SCRAM credentials, in one batch.
    pub async fn alter_scram_credentials(
        &self,
        upsertions: Vec<crate::controller::records::UserScramCredential>,
        deletions: Vec<(String, u8)>,
    ) -> Result<MetadataOffset, RequestError> {
        committed(
            self.call(Request::AlterScramCredentials {
                upsertions,
                deletions,
            })
            .await,
        )
    }

    /// Create ACL bindings (those already stored are kept as they are)
    /// and delete bindings by id, in one batch.
    pub async fn alter_acls(
        &self,
        creations: Vec<crate::auth::acl::AclBinding>,
        deletions: Vec<uuid::Uuid>,
    ) -> Result<MetadataOffset, RequestError> {
        committed(
            self.call(Request::AlterAcls {
                creations,
                deletions,
            })
            .await,
        )
    }

    /// ElectLeaders (PREFERRED): move the leadership of each partition to
    /// its preferred replica where that is possible (see
    /// `Request::ElectPreferredLeaders`).
    pub async fn elect_preferred_leaders(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<MetadataOffset, RequestError> {
        committed(
            self.call(Request::ElectPreferredLeaders { partitions })
                .await,
        )
    }

    /// AlterPartitionReassignments: start, replace or (`None`) cancel the
    /// reassignment of each (topic, partition); see
    /// `Request::AlterReassignments`.
    pub async fn alter_reassignments(
        &self,
        reassignments: Vec<(String, i32, Option<Vec<BrokerId>>)>,
    ) -> Result<MetadataOffset, RequestError> {
        committed(
            self.call(Request::AlterReassignments { reassignments })
                .await,
        )
    }

    /// ElectLeaders (UNCLEAN): give each leaderless partition a leader,
    /// out of the ISR if need be (see `Request::ElectUncleanLeaders`).
    pub async fn elect_unclean_leaders(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<MetadataOffset, RequestError> {
        committed(self.call(Request::ElectUncleanLeaders { partitions }).await)
    }

    pub async fn alter_configs(
        &self,
        resource: ConfigResource,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<MetadataOffset, RequestError> {
        committed(self.call(Request::AlterConfigs { resource, changes }).await)
    }

    /// AlterPartition (KIP-497 / KIP-841): this broker, the leader of
    /// `topic_id`/`partition` at `leader_epoch` and `partition_epoch` (the
    /// state it last applied), sets the ISR to `new_isr` (which holds this
    /// broker). Routed to the active controller.
    ///
    /// `Ok` is the committed state (`isr`, the unchanged `leader_epoch`,
    /// `partition_epoch` + 1, and the offset that holds it); an ISR already
    /// in place (a retry) answers the current state. Refusals are
    /// `RequestError::Rejected` with kind `StaleBrokerEpoch`,
    /// `UnknownBroker`, `UnknownTopic`, `UnknownTopicOrPartition`,
    /// `NotLeaderOrFollower`, `FencedLeaderEpoch`, `InvalidUpdateVersion`
    /// (the leader must apply the newer metadata first), `InvalidRequest`
    /// (malformed ISR) or `IneligibleReplica` (a fenced, shutting-down or
    /// unregistered broker cannot join).
    pub async fn alter_partition(
        &self,
        topic_id: TopicId,
        partition: PartitionIndex,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        new_isr: Vec<BrokerId>,
    ) -> Result<AlterPartitionReply, RequestError> {
        let broker_epoch = self.broker_epoch().ok_or_else(|| {
            RequestError::rejected(
                ErrorKind::UnknownBroker,
                "this broker is not registered yet",
            )
        })?;
        let request = Request::AlterPartition(AlterPartitionRequest {
            broker_id: self.node_id(),
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
        });
        match self.call(request).await? {
            Reply::PartitionAltered(reply) => Ok(reply),
            other => Err(unexpected(other)),
        }
    }

    /// A new block of producer ids for this broker (it must be registered).
    pub async fn allocate_producer_ids(&self) -> Result<ProducerIdBlock, RequestError> {
        let broker_epoch = self.broker_epoch().ok_or_else(|| {
            RequestError::rejected(
                ErrorKind::UnknownBroker,
                "this broker is not registered yet",
            )
        })?;
        let request = Request::AllocateProducerIds {
            broker_id: self.node_id(),
            broker_epoch,
        };
        match self.call(request).await? {
            Reply::ProducerIds {
                first,
                count,
                offset,
            } => Ok(ProducerIdBlock {
                first,
                count,
                offset,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Controlled shutdown: asks the controller to move this broker's
    /// leaderships away and waits (up to the request timeout) until it
    /// says the broker may stop, then stops the service. Blocking.
    pub fn shutdown(&self) {
        // Bounded: with the quorum gone (a whole cluster stopping at once)
        // nobody can acknowledge, and the broker must still stop.
        let timeout = Duration::from_millis(self.shared.config.request_timeout_ms)
            .min(CONTROLLED_SHUTDOWN_WAIT);
        let deadline = Instant::now() + timeout;
        let mut broker = lock(&self.shared.broker);
        broker.want_shut_down = true;
        self.shared.broker_changed.notify_all();
        while broker.epoch.is_some() && !broker.should_shut_down {
            let now = Instant::now();
            if now >= deadline {
                warn!(node = %self.node_id(), "controlled shutdown timed out; stopping anyway");
                break;
            }
            broker = self
                .shared
                .broker_changed
                .wait_timeout(broker, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        drop(broker);
        self.stop();
    }

    /// Stops every thread of the service at once (no controlled shutdown),
    /// as a crash would, and waits for them. The store is closed when this
    /// returns, so the same data dir may be opened again.
    pub fn stop(&self) {
        let shared = &self.shared;
        if shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(events) = &shared.events {
            let _ = events.send(Event::Stop);
        }
        shared.broker_changed.notify_all();
        shared.applied.notify_all();
        for stream in lock(&shared.inbound).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for stream in lock(&shared.pool).values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
        lock(&shared.waiters).clear();
        lock(&shared.pool).clear();
    }

    /// Blocks until some voter is the active controller and this node's
    /// image shows this broker registered, or `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(epoch) = self.broker_epoch()
                && self
                    .image()
                    .broker(self.node_id())
                    .is_some_and(|broker| broker.broker_epoch == epoch)
            {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// The records of an AlterReassignments request; `Err` is the answer
/// when there is nothing to propose (a refusal, or nothing to change).
#[allow(clippy::type_complexity)]
fn alter_reassignments(
    image: &MetadataImage,
    reassignments: &[(String, i32, Option<Vec<BrokerId>>)],
) -> Result<Vec<MetadataRecord>, Response> {
    use super::reassignment::{ReassignmentError, alter};
    let mut records = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (topic, partition, target) in reassignments {
        if !seen.insert((topic, *partition)) {
            continue;
        }
        let decided = image
            .topic_by_name(topic)
            .ok_or(ReassignmentError::UnknownTopicOrPartition)
            .and_then(|found| {
                alter(
                    image,
                    found.topic_id,
                    PartitionIndex(*partition),
                    target.as_deref(),
                )
            });
        match decided {
            Ok(partition_records) => records.extend(partition_records),
            Err(error) => {
                let kind = match error {
                    ReassignmentError::UnknownTopicOrPartition => {
                        ErrorKind::UnknownTopicOrPartition
                    }
                    ReassignmentError::InvalidReplicaAssignment(_) => {
                        ErrorKind::InvalidReplicaAssignment
                    }
                    ReassignmentError::NoReassignmentInProgress => ErrorKind::InvalidRequest,
                };
                return Err(Err(RequestError::rejected(
                    kind,
                    format!("{topic}-{partition}: {error}"),
                )));
            }
        }
    }
    if records.is_empty() {
        return Err(Ok(Reply::Committed {
            offset: image.offset(),
        }));
    }
    Ok(records)
}

fn committed(response: Response) -> Result<MetadataOffset, RequestError> {
    match response? {
        Reply::Committed { offset } => Ok(offset),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> RequestError {
    RequestError::rejected(ErrorKind::Internal, format!("unexpected reply {reply:?}"))
}

/// Runs a future to completion on the calling thread (for threads outside
/// any runtime: the CLI, tests, the broker's startup).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}
