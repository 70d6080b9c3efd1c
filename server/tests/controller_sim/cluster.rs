//! One simulated cluster: three controller voters and one broker that
//! follows the metadata log as a Raft learner, all on one thread, driven by
//! a fake clock in 10 ms steps. Every node is also a broker (combined
//! mode): it registers, heartbeats, and is fenced when silent.
//!
//! A run has a fault phase (crashes that lose unsynced writes, restarts,
//! partitions, message loss, delay, duplication), then a healing phase (all
//! nodes up, network whole, the workload still running), then a quiet
//! phase without workload, at the end of which every node must hold the
//! same image as the committed log.
//!
//! The workload includes AlterPartition requests from partition leaders
//! and from other brokers, with current and stale epochs and with valid
//! and malformed ISRs; topics turn unclean leader election on and off; the
//! preferred-leader rebalance runs every few seconds. A committed
//! AlterPartition must leave exactly the state its reply promised.

use sluice_server::controller::image::MetadataImage;
use sluice_server::controller::logger;
use sluice_server::controller::node::{Output, Proposal, RaftNode, RaftNodeConfig};
use sluice_server::controller::quorum_controller::{
    AlterPartitionDecision, AlterPartitionReply, AlterPartitionRequest, CreateTopicRequest,
    HeartbeatRequest, QuorumController, RegistrationDecision, RegistrationRequest,
    UNCLEAN_LEADER_ELECTION_ENABLE,
};
use sluice_server::controller::records::{ConfigResource, Listener, MetadataRecord, RecordBatch};
use sluice_server::controller::storage::memory::SyncPolicy;
use sluice_server::controller::storage::{MemRaftStore, RaftLogStore};
use sluice_server::controller::types::{
    BrokerEpoch, BrokerId, DirectoryId, IncarnationId, LeaderEpoch, MetadataOffset, PartitionEpoch,
    PartitionIndex, TopicId,
};

use super::checker::Checker;
use super::network::{Network, NetworkFaults};
use super::prng::{Prng, TraceHash};

const VOTERS: usize = 3;
const LEARNERS: usize = 1;
const NODES: usize = VOTERS + LEARNERS;
const STEP_MS: u64 = 10;
const TICK_MS: u64 = 100;
const HEARTBEAT_INTERVAL_MS: u64 = 2000;
const SESSION_TIMEOUT_MS: u64 = 9000;
const CONTROLLER_TICK_MS: u64 = 500;
/// Preferred-leader rebalance interval (Kafka's is 300 s; the run is 46 s).
const LEADER_IMBALANCE_CHECK_MS: u64 = 5000;
/// Per 10 ms step, for a voter catching up after a wipe with part of the
/// log durable.
const CATCHING_UP_CRASH_PROBABILITY: f64 = 0.02;
const TOPIC_NAMES: [&str; 10] = [
    "orders", "payments", "users", "clicks", "audit", "logs", "events", "metrics", "alerts", "jobs",
];

pub struct Options {
    pub fault_phase_ms: u64,
    pub heal_phase_ms: u64,
    pub quiet_phase_ms: u64,
    pub sync_policy: SyncPolicy,
    /// Compact the Raft log into a snapshot every this many entries.
    pub snapshot_interval_entries: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fault_phase_ms: 30_000,
            heal_phase_ms: 12_000,
            quiet_phase_ms: 4_000,
            sync_policy: SyncPolicy::Honest,
            snapshot_interval_entries: 16,
        }
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub trace_hash: u64,
    pub committed: usize,
    pub acknowledged: usize,
    pub crashes: u64,
    /// Crashes that also wiped a voter's Raft log.
    pub wipes: u64,
    /// Crashes of a voter part-way through catching up (after a wipe or
    /// its first start) that kept the entries it held.
    pub catching_up_restarts: u64,
    pub snapshots_loaded: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub topics: usize,
    /// AlterPartition requests committed as proposed.
    pub partitions_altered: usize,
}

enum Operation {
    Register {
        incarnation: IncarnationId,
    },
    AlterPartition {
        topic_id: TopicId,
        partition: PartitionIndex,
        reply: AlterPartitionReply,
    },
    Heartbeat,
    Other,
}

struct PendingProposal {
    proposal: Proposal,
    operation: Operation,
    /// The broker the operation is for.
    broker: usize,
    records: Vec<MetadataRecord>,
}

struct Slot {
    id: BrokerId,
    node: Option<RaftNode<MemRaftStore>>,
    /// A crashed node's store, as a power loss left it.
    crashed_store: Option<MemRaftStore>,
    /// A voter whose disk was wiped, until its log holds this index (the
    /// highest commit index any node knew at the wipe).
    wiped_until: Option<u64>,
    restart_at_ms: u64,
    next_tick_ms: u64,
    persist_at_ms: Option<u64>,
    /// The controller logic, on voters; active while the node can decide.
    controller: QuorumController,
    active: bool,
    pending: Vec<PendingProposal>,
    last_checked_offset: MetadataOffset,
    // The broker side of the node.
    incarnation: IncarnationId,
    broker_epoch: Option<BrokerEpoch>,
    registering: bool,
    next_heartbeat_ms: u64,
    want_shut_down: bool,
}

pub struct Simulation {
    options: Options,
    now_ms: u64,
    slots: Vec<Slot>,
    network: Network,
    checker: Checker,
    faults: Prng,
    workload: Prng,
    timing: Prng,
    trace: TraceHash,
    crash_probability: f64,
    /// Of a voter's crashes, the share that also wipe its Raft log (a
    /// replaced disk): drawn from their own stream, so that a seed's other
    /// faults stay as they were.
    wipe_probability: f64,
    wipes: Prng,
    partition_probability: f64,
    persist_delay_ms_max: u64,
    crashes: u64,
    wipes_done: u64,
    catching_up_restarts: u64,
    snapshots_loaded: u64,
    next_controller_tick_ms: u64,
    partitions_altered: usize,
}

fn new_controller() -> QuorumController {
    QuorumController::new(SESSION_TIMEOUT_MS)
        .with_leader_imbalance_check_interval_ms(LEADER_IMBALANCE_CHECK_MS)
}

fn node_config(index: usize, options: &Options) -> RaftNodeConfig {
    let voters = (0..VOTERS).map(|voter| BrokerId(voter as i32)).collect();
    let mut config = RaftNodeConfig::new(BrokerId(index as i32), voters);
    config.snapshot_interval_entries = options.snapshot_interval_entries;
    config
}

fn new_store(options: &Options) -> MemRaftStore {
    let voters: Vec<u64> = (0..VOTERS).map(|i| BrokerId(i as i32).raft_id()).collect();
    let learners: Vec<u64> = (VOTERS..NODES)
        .map(|i| BrokerId(i as i32).raft_id())
        .collect();
    MemRaftStore::bootstrap_with_learners(&voters, &learners).with_policy(options.sync_policy)
}

impl Simulation {
    pub fn new(seed: u64, options: Options) -> Result<Simulation, String> {
        let mut setup = Prng::new(seed, 0);
        // Swarm testing: each seed picks its own fault rates.
        let faults = NetworkFaults {
            drop_probability: *setup.pick(&[0.0, 0.01, 0.05, 0.2]),
            duplicate_probability: *setup.pick(&[0.0, 0.01, 0.05]),
            delay_ms_max: *setup.pick(&[1, 10, 50, 200, 600]),
        };
        let crash_probability = *setup.pick(&[0.0, 0.001, 0.004, 0.01]);
        let partition_probability = *setup.pick(&[0.0, 0.001, 0.004]);
        let persist_delay_ms_max = *setup.pick(&[0, 10, 40]);
        let mut wipes = Prng::new(seed, 5);
        let wipe_probability = *wipes.pick(&[0.0, 0.2, 0.5]);
        let mut timing = Prng::new(seed, 4);
        let mut slots = Vec::new();
        for index in 0..NODES {
            let node = RaftNode::new(
                node_config(index, &options),
                new_store(&options),
                &logger::discard(),
            )
            .map_err(|error| format!("node {index} does not start: {error}"))?;
            slots.push(Slot {
                id: BrokerId(index as i32),
                node: Some(node),
                crashed_store: None,
                wiped_until: None,
                restart_at_ms: 0,
                next_tick_ms: timing.range(1, TICK_MS),
                persist_at_ms: None,
                controller: new_controller(),
                active: false,
                pending: Vec::new(),
                last_checked_offset: MetadataOffset::NONE,
                incarnation: IncarnationId(setup.uuid()),
                broker_epoch: None,
                registering: false,
                next_heartbeat_ms: timing.range(0, HEARTBEAT_INTERVAL_MS),
                want_shut_down: false,
            });
        }
        Ok(Simulation {
            options,
            now_ms: 0,
            slots,
            network: Network::new(Prng::new(seed, 1), faults),
            checker: Checker::default(),
            faults: Prng::new(seed, 2),
            workload: Prng::new(seed, 3),
            timing,
            trace: TraceHash::default(),
            crash_probability,
            wipe_probability,
            wipes,
            partition_probability,
            persist_delay_ms_max,
            crashes: 0,
            wipes_done: 0,
            catching_up_restarts: 0,
            snapshots_loaded: 0,
            next_controller_tick_ms: CONTROLLER_TICK_MS,
            partitions_altered: 0,
        })
    }

    pub fn run(mut self) -> Result<Summary, String> {
        let heal_at = self.options.fault_phase_ms;
        let quiet_at = heal_at + self.options.heal_phase_ms;
        let end_at = quiet_at + self.options.quiet_phase_ms;
        while self.now_ms < end_at {
            self.now_ms += STEP_MS;
            if self.now_ms == heal_at {
                self.heal()?;
            }
            let faults_on = self.now_ms < heal_at;
            let workload_on = self.now_ms < quiet_at;
            self.deliver()?;
            self.tick_nodes()?;
            self.persist_nodes()?;
            if faults_on {
                self.inject_faults()?;
            }
            self.restart_due()?;
            self.note_caught_up();
            if workload_on {
                self.workload()?;
            }
            self.check()?;
        }
        self.check_end()?;
        self.trace.mix(self.checker.committed_count() as u64);
        Ok(Summary {
            trace_hash: self.trace.value(),
            committed: self.checker.committed_count(),
            acknowledged: self.checker.acknowledged_count(),
            crashes: self.crashes,
            wipes: self.wipes_done,
            catching_up_restarts: self.catching_up_restarts,
            snapshots_loaded: self.snapshots_loaded,
            messages_sent: self.network.sent,
            messages_dropped: self.network.dropped,
            topics: self.checker.image().topics().len(),
            partitions_altered: self.partitions_altered,
        })
    }

    fn alive(&self, index: usize) -> bool {
        self.slots[index].node.is_some()
    }

    // --- Raft plumbing -------------------------------------------------

    fn deliver(&mut self) -> Result<(), String> {
        while let Some((packet, up)) = self.network.next_due(self.now_ms) {
            let (from, to) = (packet.from, packet.to);
            let message_type = packet.message.get_msg_type();
            let is_snapshot = message_type == raft::eraftpb::MessageType::MsgSnapshot;
            self.trace.mix(self.now_ms);
            self.trace.mix(((from as u64) << 8) | to as u64);
            self.trace.mix(message_type as u64);
            self.trace.mix(packet.message.term);
            self.trace.mix(packet.message.index);
            let delivered = up && self.alive(to);
            if delivered {
                let node = self.slots[to].node.as_mut().expect("alive");
                // Errors concern the message (stale, unknown sender): drop it.
                let _ = node.step(packet.message);
                self.process(to)?;
            }
            if is_snapshot && self.alive(from) {
                let to_id = self.slots[to].id;
                let node = self.slots[from].node.as_mut().expect("alive");
                node.report_snapshot(to_id, delivered);
                self.process(from)?;
            }
        }
        Ok(())
    }

    fn tick_nodes(&mut self) -> Result<(), String> {
        for index in 0..NODES {
            if !self.alive(index) || self.slots[index].next_tick_ms > self.now_ms {
                continue;
            }
            // The election jitter: ticks arrive 80..120 ms apart.
            let interval = self.timing.range(TICK_MS - 20, TICK_MS + 20);
            self.slots[index].next_tick_ms = self.now_ms + interval;
            self.slots[index].node.as_mut().expect("alive").tick();
            self.process(index)?;
        }
        Ok(())
    }

    fn persist_nodes(&mut self) -> Result<(), String> {
        for index in 0..NODES {
            let due = self.slots[index]
                .persist_at_ms
                .is_some_and(|at| at <= self.now_ms);
            if !self.alive(index) || !due {
                continue;
            }
            self.slots[index].persist_at_ms = None;
            let output = self.slots[index]
                .node
                .as_mut()
                .expect("alive")
                .persist()
                .map_err(|error| format!("node {index} persist: {error}"))?;
            self.route(index, output)?;
            self.process(index)?;
        }
        Ok(())
    }

    /// Handles every Ready of node `index`; schedules its sync.
    fn process(&mut self, index: usize) -> Result<(), String> {
        loop {
            let Some(node) = self.slots[index].node.as_mut() else {
                return Ok(());
            };
            if !node.has_ready() {
                break;
            }
            let output = node
                .handle_ready()
                .map_err(|error| format!("node {index} handle_ready: {error}"))?;
            self.route(index, output)?;
        }
        let now_ms = self.now_ms;
        let delay = self.timing.range(0, self.persist_delay_ms_max);
        let slot = &mut self.slots[index];
        let node = slot.node.as_ref().expect("alive");
        if node.has_work() && slot.persist_at_ms.is_none() {
            slot.persist_at_ms = Some(now_ms + delay);
        }
        if node.is_leader() {
            self.checker.leader(node.term(), slot.id)?;
        }
        let can_decide = node.can_decide() && index < VOTERS;
        if can_decide && !slot.active {
            slot.controller.become_active(node.image(), now_ms);
        }
        slot.active = can_decide;
        Ok(())
    }

    fn route(&mut self, index: usize, output: Output) -> Result<(), String> {
        for message in output.messages {
            let to = BrokerId::from_raft_id(message.to).0 as usize;
            let is_snapshot = message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot;
            let sent = self.network.send(self.now_ms, index, to, message);
            if !sent && is_snapshot {
                let node = self.slots[index].node.as_mut().expect("alive");
                node.report_snapshot(BrokerId(to as i32), false);
            }
        }
        let id = self.slots[index].id;
        if output.snapshot_loaded.is_some() {
            self.snapshots_loaded += 1;
            let node = self.slots[index].node.as_ref().expect("alive");
            self.checker.check_image(id, node.image())?;
        }
        for batch in &output.committed {
            self.trace.mix(batch.offset.0 as u64);
            self.trace.mix(batch.term);
            self.checker.applied(id, batch)?;
            // Answer the clients whose proposal this node made.
            let pending = std::mem::take(&mut self.slots[index].pending);
            for proposal in pending {
                if proposal.proposal.offset > batch.offset {
                    self.slots[index].pending.push(proposal);
                    continue;
                }
                let committed_as_proposed = proposal.proposal.offset == batch.offset
                    && proposal.proposal.term == batch.term;
                if committed_as_proposed {
                    if batch.result.is_ok() {
                        self.checker.acknowledge(
                            batch.offset,
                            batch.term,
                            proposal.records.clone(),
                        );
                        if let Operation::AlterPartition {
                            topic_id,
                            partition,
                            reply,
                        } = &proposal.operation
                        {
                            self.partitions_altered += 1;
                            check_altered(
                                &self.checker,
                                batch.offset,
                                *topic_id,
                                *partition,
                                reply,
                            )?;
                        }
                    }
                    self.answer(proposal, batch.result.is_ok());
                } else {
                    self.answer(proposal, false);
                }
            }
        }
        Ok(())
    }

    /// The client of a proposal learns its outcome.
    fn answer(&mut self, proposal: PendingProposal, committed: bool) {
        let broker = &mut self.slots[proposal.broker];
        if let Operation::Register { incarnation } = proposal.operation
            && incarnation == broker.incarnation
        {
            broker.registering = false;
            if committed {
                let epoch = proposal.records.iter().find_map(|record| match record {
                    MetadataRecord::RegisterBroker(register) => Some(register.broker_epoch),
                    _ => None,
                });
                broker.broker_epoch = epoch;
            }
        }
    }

    // --- Faults ----------------------------------------------------------

    fn inject_faults(&mut self) -> Result<(), String> {
        if self.faults.chance(self.crash_probability) {
            let index = self.faults.index(NODES);
            if self.alive(index) {
                let down_ms = self.faults.range(200, 6000);
                self.crash(index, down_ms);
            }
        }
        // A voter catching up after a wipe that holds part of the log
        // crashes more often than the others (from the wipes' stream, so
        // that seeds without wipes stay as they were): the restart with
        // part of the log is what the store's marker is for.
        for index in 0..VOTERS {
            let slot = &self.slots[index];
            let partial = slot.wiped_until.is_some()
                && slot
                    .node
                    .as_ref()
                    .is_some_and(|node| node.store().durable().last_index() > 0);
            if partial && self.wipes.chance(CATCHING_UP_CRASH_PROBABILITY) {
                let down_ms = self.wipes.range(200, 3000);
                self.crash(index, down_ms);
            }
        }
        if self.faults.chance(self.partition_probability) {
            if self.network.is_partitioned() {
                self.network.heal();
                self.trace.mix(0x4ea1);
            } else if self.faults.chance(0.7) {
                let index = self.faults.index(NODES);
                self.network.isolate(index, NODES);
                self.trace.mix(0x150 + index as u64);
            } else {
                let from = self.faults.index(NODES);
                let to = self.faults.index(NODES);
                self.network.cut_one_way(from, to);
                self.trace.mix(0x1000 + ((from as u64) << 4) + to as u64);
            }
        }
        Ok(())
    }

    /// Power loss: the node's memory and unsynced writes are gone.
    fn crash(&mut self, index: usize, down_ms: u64) {
        let slot = &mut self.slots[index];
        let Some(node) = slot.node.take() else {
            return;
        };
        self.crashes += 1;
        self.trace.mix(0xc0 + index as u64);
        let known_commit = node.commit_index();
        let was_catching_up = node.is_catching_up();
        slot.crashed_store = Some(node.into_store().crash());
        // A voter that crashes part-way through catching up after a wipe
        // is wiped again, or comes back with the part of the log it holds
        // (its store's marker keeps it catching up: RaftNode::new).
        let catching_up = slot.wiped_until.is_some();
        let wipe = if catching_up {
            self.wipes.chance(0.3)
        } else {
            self.wipe_allowed(index) && self.wipes.chance(self.wipe_probability)
        };
        let holds_entries = self.slots[index]
            .crashed_store
            .as_ref()
            .is_some_and(|store| store.core().last_index() > 0);
        if was_catching_up && holds_entries && !wipe {
            self.catching_up_restarts += 1;
            self.trace.mix(0xca + index as u64);
        }
        if wipe {
            let known_commit = (0..NODES)
                .filter_map(|other| self.slots[other].node.as_ref().map(RaftNode::commit_index))
                .fold(known_commit, u64::max)
                .max(self.slots[index].wiped_until.unwrap_or(0));
            self.wipes_done += 1;
            self.trace.mix(0x3e + index as u64);
            let slot = &mut self.slots[index];
            slot.crashed_store = Some(new_store(&self.options));
            slot.wiped_until = Some(known_commit);
        }
        let slot = &mut self.slots[index];
        slot.restart_at_ms = self.now_ms + down_ms;
        slot.persist_at_ms = None;
        slot.active = false;
        slot.pending.clear();
        slot.controller = new_controller();
        slot.broker_epoch = None;
        slot.registering = false;
        slot.want_shut_down = false;
        slot.last_checked_offset = MetadataOffset::NONE;
    }

    /// A voter's disk may be wiped when no other voter is still catching
    /// up from a wipe (two wiped voters of three have lost a majority's
    /// log: no Raft survives that) or from its first start (which gives no
    /// vote either until a leader has reached it: with the wiped one, a
    /// quorum short until one restarts), and every voter holds an entry (the
    /// guard lets a voter with an empty log vote for a candidate with an
    /// empty log, which a wiped one may do twice in a term).
    fn wipe_allowed(&self, index: usize) -> bool {
        index < VOTERS
            && (0..VOTERS).all(|voter| {
                let slot = &self.slots[voter];
                let last_index = slot
                    .node
                    .as_ref()
                    .map(|node| node.store().core().last_index())
                    .or_else(|| {
                        slot.crashed_store
                            .as_ref()
                            .map(|store| store.core().last_index())
                    })
                    .unwrap_or(0);
                let catching_up = slot.node.as_ref().is_some_and(RaftNode::is_catching_up);
                last_index > 0 && (voter == index || (slot.wiped_until.is_none() && !catching_up))
            })
    }

    /// A wiped voter whose durable log reaches what was committed at the
    /// wipe has caught up.
    fn note_caught_up(&mut self) {
        for slot in &mut self.slots {
            if let (Some(until), Some(node)) = (slot.wiped_until, slot.node.as_ref())
                && node.store().durable().last_index() >= until
            {
                slot.wiped_until = None;
            }
        }
    }

    fn restart_due(&mut self) -> Result<(), String> {
        for index in 0..NODES {
            if self.slots[index].node.is_none() && self.slots[index].restart_at_ms <= self.now_ms {
                self.restart(index)?;
            }
        }
        Ok(())
    }

    fn restart(&mut self, index: usize) -> Result<(), String> {
        let Some(store) = self.slots[index].crashed_store.take() else {
            return Ok(());
        };
        self.trace.mix(0x5e + index as u64);
        let node = RaftNode::new(node_config(index, &self.options), store, &logger::discard())
            .map_err(|error| format!("node {index} does not restart: {error}"))?;
        let slot = &mut self.slots[index];
        slot.node = Some(node);
        slot.next_tick_ms = self.now_ms + self.timing.range(1, TICK_MS);
        slot.incarnation = IncarnationId(self.workload.uuid());
        self.process(index)
    }

    fn heal(&mut self) -> Result<(), String> {
        self.network.heal();
        self.network.faults.drop_probability = 0.0;
        self.network.faults.duplicate_probability = 0.0;
        self.network.faults.delay_ms_max = self.network.faults.delay_ms_max.min(50);
        for index in 0..NODES {
            self.slots[index].restart_at_ms = self.now_ms;
        }
        self.restart_due()
    }

    // --- Workload --------------------------------------------------------

    /// A voter that may decide now (several during a partition is possible:
    /// a deposed leader does not know yet).
    fn deciding_controller(&mut self) -> Option<usize> {
        let candidates: Vec<usize> = (0..VOTERS)
            .filter(|index| self.slots[*index].active)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(*self.workload.pick(&candidates))
    }

    fn propose(
        &mut self,
        controller: usize,
        broker: usize,
        operation: Operation,
        records: Vec<MetadataRecord>,
    ) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        let node = self.slots[controller]
            .node
            .as_mut()
            .expect("active means alive");
        let Ok(proposal) = node.propose(&RecordBatch::new(records.clone())) else {
            return Ok(());
        };
        self.slots[controller].pending.push(PendingProposal {
            proposal,
            operation,
            broker,
            records,
        });
        self.process(controller)
    }

    fn workload(&mut self) -> Result<(), String> {
        let Some(controller) = self.deciding_controller() else {
            return Ok(());
        };
        self.brokers(controller)?;
        if !self.slots[controller].active {
            return Ok(());
        }
        if self.now_ms >= self.next_controller_tick_ms {
            self.next_controller_tick_ms = self.now_ms + CONTROLLER_TICK_MS;
            let slot = &mut self.slots[controller];
            let node = slot.node.as_ref().expect("active means alive");
            let batches = slot.controller.tick(node.image(), self.now_ms);
            for batch in batches {
                self.propose(controller, controller, Operation::Other, batch)?;
            }
        }
        if !self.slots[controller].active {
            return Ok(());
        }
        let roll = self.workload.below(1000);
        let slot = &self.slots[controller];
        let image = slot.node.as_ref().expect("active means alive").image();
        let records = match roll {
            0..=39 => {
                let request = CreateTopicRequest {
                    name: (*self.workload.pick(&TOPIC_NAMES)).to_string(),
                    partition_count: self.workload.range(1, 4) as i32,
                    replication_factor: self.workload.range(1, 3) as i32,
                    assignment: None,
                    configs: vec![
                        ("retention.ms".into(), self.workload.range(1, 9).to_string()),
                        (
                            UNCLEAN_LEADER_ELECTION_ENABLE.into(),
                            self.workload.chance(0.3).to_string(),
                        ),
                    ],
                };
                let topic_id = TopicId(self.workload.uuid());
                slot.controller.create_topic(image, &request, topic_id).ok()
            }
            40..=54 => {
                let name = *self.workload.pick(&TOPIC_NAMES);
                slot.controller.delete_topic(image, name, None).ok()
            }
            55..=69 => {
                let name = *self.workload.pick(&TOPIC_NAMES);
                let total = self.workload.range(1, 6) as i32;
                slot.controller
                    .create_partitions(image, name, total, None)
                    .ok()
            }
            70..=89 => {
                let broker = self.workload.index(NODES);
                match self.slots[broker].broker_epoch {
                    Some(epoch) => slot
                        .controller
                        .allocate_producer_ids(image, BrokerId(broker as i32), epoch)
                        .ok(),
                    None => None,
                }
            }
            90..=94 => {
                let name = *self.workload.pick(&TOPIC_NAMES);
                let value = self.workload.chance(0.5).to_string();
                slot.controller
                    .alter_configs(
                        image,
                        &ConfigResource::Topic(name.into()),
                        &[(UNCLEAN_LEADER_ELECTION_ENABLE.into(), Some(value))],
                    )
                    .ok()
            }
            95..=124 => return self.alter_partition(controller),
            _ => None,
        };
        if let Some(records) = records {
            self.propose(controller, controller, Operation::Other, records)?;
        }
        Ok(())
    }

    /// A random AlterPartition: mostly from the leader with its current
    /// epochs and an ISR of replicas that holds it; sometimes from another
    /// broker, with stale or future epochs, or a malformed ISR. Whatever
    /// the controller decides, the image's checks must hold.
    fn alter_partition(&mut self, controller: usize) -> Result<(), String> {
        let image = self.slots[controller]
            .node
            .as_ref()
            .expect("active means alive")
            .image();
        let partitions: Vec<(TopicId, usize)> = image
            .topics()
            .values()
            .flat_map(|topic| (0..topic.partitions.len()).map(|index| (topic.topic_id, index)))
            .collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let (topic_id, index) = *self.workload.pick(&partitions);
        let partition = PartitionIndex(index as i32);
        let state = image
            .partition(topic_id, partition)
            .expect("listed")
            .clone();
        let requester = match state.leader {
            Some(leader) if self.workload.chance(0.85) => leader,
            _ => BrokerId(self.workload.index(NODES) as i32),
        };
        let Some(broker_epoch) = image.broker(requester).map(|b| b.broker_epoch) else {
            return Ok(());
        };
        let mut new_isr: Vec<BrokerId> = state
            .replicas
            .iter()
            .copied()
            .filter(|replica| *replica == requester || self.workload.chance(0.6))
            .collect();
        if self.workload.chance(0.05) {
            new_isr.push(BrokerId(self.workload.index(NODES + 1) as i32));
        }
        let skew = |prng: &mut Prng| match prng.below(20) {
            0 => -1,
            1 => 1,
            _ => 0,
        };
        let request = AlterPartitionRequest {
            broker_id: requester,
            broker_epoch: if self.workload.chance(0.03) {
                BrokerEpoch(broker_epoch.0 - 1)
            } else {
                broker_epoch
            },
            topic_id,
            partition,
            leader_epoch: LeaderEpoch(state.leader_epoch.0 + skew(&mut self.workload)),
            partition_epoch: PartitionEpoch(state.partition_epoch.0 + skew(&mut self.workload)),
            new_isr,
        };
        let slot = &self.slots[controller];
        match slot.controller.alter_partition(image, &request) {
            Ok(AlterPartitionDecision::Propose { records, reply }) => {
                // Accepted means valid against the committed image.
                let accepted = Some(request.broker_id) == state.leader
                    && request.leader_epoch == state.leader_epoch
                    && request.partition_epoch == state.partition_epoch;
                if !accepted {
                    return Err(format!("accepted an invalid AlterPartition {request:?}"));
                }
                let operation = Operation::AlterPartition {
                    topic_id,
                    partition,
                    reply,
                };
                self.propose(controller, controller, operation, records)
            }
            Ok(AlterPartitionDecision::Current(reply)) => {
                if reply.isr != state.isr || reply.partition_epoch != state.partition_epoch {
                    return Err(format!(
                        "a retry answered {reply:?}, the image holds {state:?}"
                    ));
                }
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    /// Broker registrations and heartbeats, to the deciding controller,
    /// when the network lets them through.
    fn brokers(&mut self, controller: usize) -> Result<(), String> {
        for broker in 0..NODES {
            if !self.alive(broker) || self.slots[broker].next_heartbeat_ms > self.now_ms {
                continue;
            }
            self.slots[broker].next_heartbeat_ms = self.now_ms
                + self
                    .timing
                    .range(HEARTBEAT_INTERVAL_MS - 200, HEARTBEAT_INTERVAL_MS + 200);
            if !self.network.connected(broker, controller)
                || !self.network.connected(controller, broker)
            {
                continue;
            }
            if !self.slots[controller].active {
                return Ok(());
            }
            let now_ms = self.now_ms;
            let broker_offset = self.slots[broker]
                .node
                .as_ref()
                .expect("alive")
                .image()
                .offset();
            let (records, operation) = match self.slots[broker].broker_epoch {
                None if self.slots[broker].registering => continue,
                None => {
                    let request = RegistrationRequest {
                        broker_id: BrokerId(broker as i32),
                        incarnation_id: self.slots[broker].incarnation,
                        listeners: vec![Listener {
                            name: "PLAINTEXT".into(),
                            host: "127.0.0.1".into(),
                            port: 19092 + broker as u16,
                        }],
                        shard_count: 2,
                        rack: None,
                        // A crash keeps the disk (the simulated store).
                        directory_id: Some(DirectoryId(uuid::Uuid::from_u128(broker as u128 + 1))),
                    };
                    let slot = &mut self.slots[controller];
                    let node = slot.node.as_ref().expect("active means alive");
                    let next = node.next_offset().expect("active means leader");
                    match slot
                        .controller
                        .register_broker(node.image(), next, &request, now_ms)
                    {
                        RegistrationDecision::AlreadyRegistered(epoch) => {
                            self.slots[broker].broker_epoch = Some(epoch);
                            continue;
                        }
                        RegistrationDecision::Propose { records, .. } => {
                            self.slots[broker].registering = true;
                            let incarnation = self.slots[broker].incarnation;
                            (records, Operation::Register { incarnation })
                        }
                    }
                }
                Some(epoch) => {
                    if self.workload.chance(0.01) {
                        self.slots[broker].want_shut_down = true;
                    }
                    let request = HeartbeatRequest {
                        broker_id: BrokerId(broker as i32),
                        broker_epoch: epoch,
                        current_metadata_offset: broker_offset,
                        want_fence: false,
                        want_shut_down: self.slots[broker].want_shut_down,
                    };
                    let slot = &mut self.slots[controller];
                    let node = slot.node.as_ref().expect("active means alive");
                    match slot.controller.heartbeat(node.image(), &request, now_ms) {
                        Ok(decision) => {
                            if decision.should_shut_down && broker != controller {
                                // Controlled shutdown done: stop, come back.
                                let down_ms = self.faults.range(100, 3000);
                                self.crash(broker, down_ms);
                            }
                            (decision.records, Operation::Heartbeat)
                        }
                        Err(_) => {
                            // Stale epoch: the broker registers again.
                            self.slots[broker].broker_epoch = None;
                            continue;
                        }
                    }
                }
            };
            self.propose(controller, broker, operation, records)?;
            if !self.slots[controller].active {
                return Ok(());
            }
        }
        Ok(())
    }

    // --- Checks ----------------------------------------------------------

    fn check(&mut self) -> Result<(), String> {
        for index in 0..NODES {
            let Some(node) = self.slots[index].node.as_ref() else {
                continue;
            };
            let id = self.slots[index].id;
            self.checker
                .check_log(id, node.store(), node.commit_index())?;
            let offset = node.image().offset();
            if offset != self.slots[index].last_checked_offset {
                self.checker.check_image(id, node.image())?;
                self.slots[index].last_checked_offset = offset;
            }
        }
        Ok(())
    }

    fn check_end(&mut self) -> Result<(), String> {
        self.checker.check_acknowledged()?;
        let leaders: Vec<usize> = (0..VOTERS)
            .filter(|index| self.slots[*index].active)
            .collect();
        if leaders.len() != 1 {
            return Err(format!(
                "after healing, {} voters can decide (expected one)",
                leaders.len()
            ));
        }
        let reference = self.checker.image().clone();
        for slot in &self.slots {
            let node = slot.node.as_ref().ok_or("a node is down after healing")?;
            if *node.image() != reference {
                return Err(format!(
                    "node {} did not converge: offset {} vs committed {}",
                    slot.id,
                    node.image().offset(),
                    reference.offset()
                ));
            }
        }
        check_image_equals_replay(&reference, &self.checker)?;
        Ok(())
    }
}

/// A committed AlterPartition left the partition as its reply promised.
fn check_altered(
    checker: &Checker,
    offset: MetadataOffset,
    topic_id: TopicId,
    partition: PartitionIndex,
    reply: &AlterPartitionReply,
) -> Result<(), String> {
    let Some(image) = checker.image_at(offset) else {
        return Ok(());
    };
    let state = image
        .partition(topic_id, partition)
        .ok_or("an altered partition vanished in the batch that altered it")?;
    if state.isr != reply.isr
        || state.leader_epoch != reply.leader_epoch
        || state.partition_epoch != reply.partition_epoch
    {
        return Err(format!(
            "AlterPartition at {offset} promised {reply:?}, committed {state:?}"
        ));
    }
    Ok(())
}

/// The reference image against a replay of the records of a snapshot of
/// it: the image -> snapshot -> image path on real data.
fn check_image_equals_replay(image: &MetadataImage, _checker: &Checker) -> Result<(), String> {
    let decoded = MetadataImage::decode_snapshot(&image.encode_snapshot())
        .map_err(|error| format!("final image does not round-trip: {error}"))?;
    if decoded != *image {
        return Err("final image differs after a snapshot round trip".into());
    }
    Ok(())
}
