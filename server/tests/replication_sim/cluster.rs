//! The simulation loop: three brokers, the controller model, the fake
//! network and clock, a producer, faults (crashes that lose unsynced
//! writes, restarts, network partitions, message loss), reassignments
//! (the partition starts on two or three of the brokers and is moved to
//! another set, grown, shrunk, or the move cancelled, at random times),
//! then healing. One 10 ms step at a time; the checker runs after every
//! step.

use std::fmt::Write as _;

use bytes::Bytes;
use futures_util::FutureExt;
use sluice_engine::batch::BatchBuilder;
use sluice_engine::io::sim::SimIo;
use sluice_engine::{AppendCompletion, LeaderEpoch, Offset, TimestampMs};

use super::broker::{Broker, Bug, Context, MIN_INSYNC, Role, Timing};
use super::checker::{Acked, Checker};
use super::controller::{Controller, ControllerBug};
use super::network::{CONTROLLER, Network, Node, Payload};
use super::prng::Prng;
use sluice_server::replication::messages::ToFollower;

const STEP_MS: i64 = 10;
const BROKERS: [i32; 3] = [1, 2, 3];

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub bug: Bug,
    pub controller_bug: ControllerBug,
    /// Per step: an AlterPartitionReassignments request (a new target of
    /// two or three brokers, or a cancellation) during the faults. Also
    /// whether the partition may start with two replicas (when not 0).
    pub reassign_per_million: u64,
    /// See `broker::Context::guard_stale_answers`.
    pub guard_stale_answers: bool,
    /// See `broker::Context::timeout_clears_pending`.
    pub timeout_clears_pending: bool,
    /// Extra loss of AlterPartition answers (the request may have been
    /// committed; the leader does not know).
    pub answer_loss_per_million: u64,
    /// AlterPartition answers take up to this much longer than other
    /// messages (the commit, then the RPC answer).
    pub answer_delay_ms_max: i64,
    /// A broker's metadata stops following the controller for a while (a
    /// slow metadata fetch), per broker and step.
    pub metadata_stall_per_million: u64,
    /// How long faults are injected before healing.
    pub faults_ms: i64,
    /// How long healing may take before it counts as stuck.
    pub heal_ms_max: i64,
    pub crash_per_million: u64,
    /// Per step and broker: its disk fills (flushes that need space fail
    /// with ENOSPC) for 20-500 ms.
    pub disk_full_per_million: u64,
    pub partition_per_million: u64,
    pub loss_per_million: u64,
    pub produce_per_million: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            bug: Bug::None,
            controller_bug: ControllerBug::None,
            reassign_per_million: 1_000,
            guard_stale_answers: true,
            timeout_clears_pending: false,
            answer_loss_per_million: 50_000,
            metadata_stall_per_million: 2_000,
            answer_delay_ms_max: 100,
            faults_ms: 15_000,
            heal_ms_max: 30_000,
            crash_per_million: 1_500,
            disk_full_per_million: 0,
            partition_per_million: 3_000,
            loss_per_million: 5_000,
            produce_per_million: 300_000,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub acknowledged: u64,
    pub produced: u64,
    pub crashes: u64,
    pub disk_fills: u64,
    /// Appends failed by the leader (rolled back on a full disk).
    pub failed_writes: u64,
    pub partitions: u64,
    pub leader_epochs: u64,
    pub isr_changes: u64,
    pub isr_refusals: u64,
    pub messages: u64,
    pub lost: u64,
    /// Reassignments started or replaced, cancelled, completed (a
    /// shrink may complete at once), and copies deleted by brokers.
    pub reassignments: u64,
    pub cancellations: u64,
    pub completions: u64,
    pub deletions: u64,
}

/// A produce request awaiting acks=all.
struct Pending {
    broker: i32,
    incarnation: u64,
    epoch: LeaderEpoch,
    base: Offset,
    end: Offset,
    write_id: u64,
    sent_ms: i64,
    /// The leader's append, until it resolves: a failed one (a rollback)
    /// is never acknowledged, whatever later takes its offsets.
    completion: Option<AppendCompletion>,
}

pub struct Simulation {
    seed: u64,
    options: Options,
    random: Prng,
    now_ms: i64,
    network: Network,
    controller: Controller,
    brokers: Vec<Broker>,
    checker: Checker,
    trace: Vec<String>,
    timing: Timing,
    /// When each down broker comes back.
    restart_at_ms: [Option<i64>; 3],
    /// Until when each broker's metadata is stalled.
    metadata_stalled_until_ms: [i64; 3],
    heal_partition_at_ms: Option<i64>,
    believed_leader: Option<i32>,
    pending: Vec<Pending>,
    write_next: u64,
    summary: Summary,
    /// Every message in the trace (`SLUICE_SIM_TRACE=messages`).
    verbose: bool,
}

fn describe(payload: &Payload) -> String {
    match payload {
        Payload::ToFollower(ToFollower::Push {
            header,
            start_offset,
            records,
        }) => format!(
            "push #{} epoch {} hw {} at {start_offset} ({} bytes)",
            header.request_id,
            header.leader_epoch.0,
            header.high_watermark,
            records.iter().map(|part| part.len()).sum::<usize>()
        ),
        Payload::ToFollower(ToFollower::Probe { header }) => {
            format!(
                "probe #{} epoch {}",
                header.request_id, header.leader_epoch.0
            )
        }
        Payload::ToFollower(ToFollower::Truncate {
            header,
            epoch,
            end_offset,
        }) => format!(
            "truncate #{} epoch {} to epoch {epoch:?} end {end_offset}",
            header.request_id, header.leader_epoch.0
        ),
        Payload::Reply(reply) => format!(
            "reply #{} {:?} epoch {} log {:?}",
            reply.request_id, reply.status, reply.follower_epoch.0, reply.log
        ),
        other => format!("{other:?}"),
    }
}

fn index(broker: i32) -> usize {
    usize::try_from(broker - 1).expect("brokers are 1..=3")
}

impl Simulation {
    pub fn new(seed: u64, options: Options) -> Simulation {
        let mut random = Prng::new(seed);
        let now_ms = SimIo::NOW_MS_START_DEFAULT;
        // Half the seeds start on two of the three brokers.
        let replicas: Vec<i32> = if options.reassign_per_million > 0 && random.chance(500_000) {
            let mut replicas = BROKERS.to_vec();
            replicas.remove(random.below(3) as usize);
            if random.chance(500_000) {
                replicas.reverse();
            }
            replicas
        } else {
            BROKERS.to_vec()
        };
        let controller = Controller::new(&BROKERS, &replicas, 600, now_ms, options.controller_bug);
        let brokers = BROKERS
            .iter()
            .map(|&id| {
                Broker::new(
                    id,
                    random.next_u64(),
                    &controller.image,
                    now_ms,
                    options.bug == Bug::RollBackOnFullDisk,
                )
            })
            .collect();
        let delay_ms_max = random.pick(&[5, 20, 60]);
        Simulation {
            seed,
            options,
            network: Network::new(options.loss_per_million, delay_ms_max),
            random,
            now_ms,
            controller,
            brokers,
            checker: Checker::default(),
            trace: Vec::new(),
            timing: Timing {
                lag_max_ms: 1_000,
                heartbeat_ms: 100,
                isr_interval_ms: 250,
                isr_answer_timeout_ms: 1_000,
            },
            restart_at_ms: [None; 3],
            metadata_stalled_until_ms: [0; 3],
            heal_partition_at_ms: None,
            believed_leader: Some(replicas[0]),
            pending: Vec::new(),
            write_next: 1,
            summary: Summary::default(),
            verbose: std::env::var("SLUICE_SIM_TRACE").is_ok_and(|value| value == "messages"),
        }
    }

    fn note(&mut self, line: String) {
        self.trace.push(format!("{}: {line}", self.now_ms));
    }

    /// Run to the end; `Err` with the violation and a trace.
    pub fn run(mut self) -> Result<Summary, String> {
        match self.run_inner() {
            Ok(()) => {
                self.summary.leader_epochs = self.controller.image.leader_epoch as u64;
                self.summary.isr_changes = self.controller.accepted;
                self.summary.isr_refusals = self.controller.refused;
                self.summary.messages = self.network.sent;
                self.summary.lost = self.network.lost;
                self.summary.reassignments = self.controller.reassignments;
                self.summary.cancellations = self.controller.cancellations;
                self.summary.completions = self.controller.completions;
                self.summary.deletions = self.brokers.iter().map(|broker| broker.deletions).sum();
                self.summary.acknowledged = self.checker.acked.len() as u64;
                Ok(self.summary)
            }
            Err(violation) => Err(self.report(&violation)),
        }
    }

    fn report(&self, violation: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "seed {}: {violation}", self.seed);
        let _ = writeln!(
            out,
            "at {} ms; controller image {:?}, fenced {:?}",
            self.now_ms, self.controller.image, self.controller.fenced
        );
        for broker in &self.brokers {
            let state = match (&broker.log, &broker.role) {
                (None, _) => "down".to_string(),
                (Some(log), role) => {
                    let role = match role {
                        Role::Leader(leader) => format!(
                            "leader epoch {} hw {} isr {:?} pending {:?} followers {:?}",
                            leader.epoch.0,
                            leader.high_watermark(),
                            leader.isr,
                            leader.pending_isr,
                            leader
                                .followers
                                .values()
                                .map(|progress| (
                                    progress.broker,
                                    progress.phase,
                                    progress.acked_end
                                ))
                                .collect::<Vec<_>>()
                        ),
                        Role::Follower { high_watermark } => {
                            format!(
                                "follower epoch {} hw {high_watermark}",
                                broker.leader_epoch.0
                            )
                        }
                    };
                    format!(
                        "log end {} durable {} epochs {:?}; {role}",
                        log.log_end_offset(),
                        log.durable_end_offset(),
                        log.leader_epoch_entries()
                    )
                }
            };
            let _ = writeln!(out, "broker {}: {state}", broker.id);
        }
        let _ = writeln!(out, "last events:");
        let full = std::env::var_os("SLUICE_SIM_TRACE").is_some();
        let skip = if full {
            0
        } else {
            self.trace.len().saturating_sub(80)
        };
        for line in &self.trace[skip..] {
            let _ = writeln!(out, "  {line}");
        }
        out
    }

    fn run_inner(&mut self) -> Result<(), String> {
        let faults_end_ms = self.now_ms + self.options.faults_ms;
        while self.now_ms < faults_end_ms {
            self.inject_faults();
            self.step(true)?;
        }
        // Heal: network whole, everyone back, no more faults.
        self.note("healing".to_string());
        self.network.heal();
        self.heal_partition_at_ms = None;
        for broker in BROKERS {
            if !self.brokers[index(broker)].is_up() {
                self.restart(broker);
            }
        }
        self.network.loss_per_million = 0;
        self.options.answer_loss_per_million = 0;
        self.options.metadata_stall_per_million = 0;
        for broker in &mut self.brokers {
            broker.io.set_space_limit(None);
            broker.disk_full_until_ms = None;
        }
        let produce_until_ms = self.now_ms + 3_000;
        let heal_end_ms = self.now_ms + self.options.heal_ms_max;
        while self.now_ms < heal_end_ms {
            self.step(self.now_ms < produce_until_ms)?;
            if self.now_ms >= produce_until_ms && self.pending.is_empty() && self.settled() {
                let (brokers, controller) = (&mut self.brokers, &self.controller);
                return self.checker.check_healed(brokers, controller);
            }
        }
        Err("not settled after healing (liveness)".to_string())
    }

    /// Everyone registered and current, no reassignment going on, the
    /// ISR all replicas, the leader's high watermark at its log end and
    /// every replica's log that long.
    fn settled(&mut self) -> bool {
        let image = &self.controller.image;
        if image.isr.len() != image.replicas.len()
            || image.is_reassigning()
            || !self.controller.fenced.is_empty()
        {
            return false;
        }
        let Some(leader_id) = image.leader else {
            return false;
        };
        if self.brokers.iter().any(|broker| {
            !broker.is_up() || !broker.registered || broker.view_version != image.version
        }) {
            return false;
        }
        let replicas = image.replicas.clone();
        let leader = &mut self.brokers[index(leader_id)];
        let log_end = leader.log().log_end_offset();
        if leader.high_watermark() != log_end {
            return false;
        }
        replicas
            .iter()
            .all(|&replica| self.brokers[index(replica)].log().log_end_offset() == log_end)
    }

    /// Maybe an AlterPartitionReassignments request: a random target of
    /// two or three brokers in random order (a move, a growth, a shrink,
    /// a new order, or a replacement of the ongoing target), or a
    /// cancellation of the ongoing one.
    fn reassign(&mut self) {
        if !self.random.chance(self.options.reassign_per_million) {
            return;
        }
        let target = if self.controller.image.is_reassigning() && self.random.chance(300_000) {
            None
        } else {
            let mut brokers = BROKERS.to_vec();
            // Fisher-Yates.
            for at in (1..brokers.len()).rev() {
                let other = self.random.below(at as u64 + 1) as usize;
                brokers.swap(at, other);
            }
            let size = if self.random.chance(500_000) { 2 } else { 3 };
            brokers.truncate(size);
            Some(brokers)
        };
        let before = self.controller.decisions.len();
        let outcome = self.controller.reassign(self.now_ms, target.as_deref());
        let decisions: Vec<String> = self.controller.decisions[before..].to_vec();
        self.trace.extend(decisions);
        if let Err(error) = outcome {
            self.note(format!("reassignment to {target:?} refused: {error}"));
        }
    }

    /// A broker's disk fills (no space beyond what its files use now) and
    /// is freed again later.
    fn fill_disks(&mut self) {
        if self.options.disk_full_per_million == 0 {
            return;
        }
        let now_ms = self.now_ms;
        for broker in BROKERS {
            let at = index(broker);
            match self.brokers[at].disk_full_until_ms {
                Some(until_ms) if now_ms >= until_ms => {
                    self.note(format!("broker {broker}'s disk has space again"));
                    self.brokers[at].io.set_space_limit(None);
                    self.brokers[at].disk_full_until_ms = None;
                }
                Some(_) => {}
                None if self.brokers[at].is_up()
                    && self.random.chance(self.options.disk_full_per_million) =>
                {
                    let used = self.brokers[at].io.space_used_bytes();
                    self.note(format!(
                        "broker {broker}'s disk is full ({used} bytes used)"
                    ));
                    self.brokers[at].io.set_space_limit(Some(used));
                    self.brokers[at].disk_full_until_ms =
                        Some(now_ms + self.random.between(20, 500));
                    self.summary.disk_fills += 1;
                }
                None => {}
            }
        }
    }

    fn restart(&mut self, broker: i32) {
        self.note(format!("broker {broker} restarts"));
        self.brokers[index(broker)].restart(self.now_ms);
        self.network.node_up(broker);
        self.restart_at_ms[index(broker)] = None;
    }

    fn inject_faults(&mut self) {
        self.reassign();
        let now_ms = self.now_ms;
        self.fill_disks();
        for broker in BROKERS {
            let at = index(broker);
            if self.brokers[at].is_up() {
                if self.random.chance(self.options.crash_per_million) {
                    let mode = Broker::crash_mode(&mut self.random);
                    let end = self.brokers[at].log().log_end_offset();
                    let durable = self.brokers[at].log().durable_end_offset();
                    self.note(format!(
                        "broker {broker} crashes ({mode:?}; log end {end}, durable {durable})"
                    ));
                    self.brokers[at].crash(mode);
                    self.network.node_down(&mut self.random, now_ms, broker);
                    self.summary.crashes += 1;
                    let down_ms = self.random.between(50, 3_000);
                    self.restart_at_ms[at] = Some(now_ms + down_ms);
                }
            } else if self.restart_at_ms[at].is_some_and(|at_ms| now_ms >= at_ms) {
                self.restart(broker);
            }
        }
        if let Some(at_ms) = self.heal_partition_at_ms {
            if now_ms >= at_ms {
                self.note("network heals".to_string());
                self.network.heal();
                self.heal_partition_at_ms = None;
            }
        } else if self.random.chance(self.options.partition_per_million) {
            let broker = self.random.pick(&BROKERS);
            let cuts: Vec<(Node, Node)> = match self.random.below(4) {
                // Isolated from everyone.
                0 | 1 => [CONTROLLER, 1, 2, 3]
                    .into_iter()
                    .filter(|&other| other != broker)
                    .map(|other| (broker, other))
                    .collect(),
                // From the controller only.
                2 => vec![(broker, CONTROLLER)],
                // From one other broker.
                _ => {
                    let other = self.random.pick(&BROKERS);
                    if other == broker {
                        vec![(broker, CONTROLLER)]
                    } else {
                        vec![(broker, other)]
                    }
                }
            };
            self.note(format!("network partition: cut {cuts:?}"));
            for (a, b) in cuts {
                self.network.cut(&mut self.random, now_ms, a, b);
            }
            self.summary.partitions += 1;
            self.heal_partition_at_ms = Some(now_ms + self.random.between(100, 4_000));
        }
    }

    fn step(&mut self, produce: bool) -> Result<(), String> {
        self.now_ms += STEP_MS;
        let now_ms = self.now_ms;
        for broker in &self.brokers {
            broker.io.set_now_ms(now_ms);
        }
        self.controller_step();
        self.deliver();
        for broker in &mut self.brokers {
            let mut context = Context {
                network: &mut self.network,
                random: &mut self.random,
                now_ms,
                trace: &mut self.trace,
                timing: self.timing,
                bug: self.options.bug,
                guard_stale_answers: self.options.guard_stale_answers,
                timeout_clears_pending: self.options.timeout_clears_pending,
            };
            broker.drive(&mut context);
        }
        if produce {
            self.produce();
        }
        self.resolve_pending()?;
        let (brokers, controller) = (&mut self.brokers, &self.controller);
        self.checker.check(brokers, controller)
    }

    /// Liveness, registration, and brokers following the metadata.
    fn controller_step(&mut self) {
        let now_ms = self.now_ms;
        let decisions_before = self.controller.decisions.len();
        self.controller.tick(now_ms);
        for broker in BROKERS {
            let at = index(broker);
            if !self.brokers[at].is_up() || !self.network.reachable(broker, CONTROLLER) {
                continue;
            }
            if !self.brokers[at].registered {
                self.controller.register(now_ms, broker);
                self.brokers[at].registered = true;
                self.brokers[at].apply_image(&self.controller.image, now_ms, &mut self.trace);
            } else {
                self.controller.heartbeat(now_ms, broker);
            }
        }
        for broker in BROKERS {
            let at = index(broker);
            let current = self.brokers[at].view_version == self.controller.image.version;
            if self.random.chance(self.options.metadata_stall_per_million) {
                let stall_ms = self.random.between(100, 2_000);
                self.metadata_stalled_until_ms[at] = now_ms + stall_ms;
            }
            if self.brokers[at].is_up()
                && !current
                && now_ms >= self.metadata_stalled_until_ms[at]
                && self.network.reachable(broker, CONTROLLER)
                && self.random.chance(300_000)
            {
                self.brokers[at].apply_image(&self.controller.image, now_ms, &mut self.trace);
            }
        }
        let decisions: Vec<String> = self.controller.decisions[decisions_before..].to_vec();
        self.trace.extend(decisions);
    }

    fn deliver(&mut self) {
        let now_ms = self.now_ms;
        for broken in self.network.due_breaks(now_ms) {
            if broken.node != CONTROLLER && self.brokers[index(broken.node)].is_up() {
                self.brokers[index(broken.node)].on_broken(broken.connection);
            }
        }
        for envelope in self.network.due(now_ms) {
            if envelope
                .connection
                .is_some_and(|connection| !self.network.is_open(connection))
            {
                continue;
            }
            if envelope.to != CONTROLLER && !self.brokers[index(envelope.to)].is_up() {
                continue;
            }
            if self.verbose {
                self.trace.push(format!(
                    "{now_ms}: {} -> {} on {:?}: {}",
                    envelope.from,
                    envelope.to,
                    envelope.connection,
                    describe(&envelope.payload)
                ));
            }
            match envelope.payload {
                Payload::AlterPartition {
                    request_id,
                    leader,
                    leader_epoch,
                    partition_epoch,
                    isr,
                } => {
                    let before = self.controller.decisions.len();
                    let outcome = self.controller.alter_partition(
                        now_ms,
                        leader,
                        leader_epoch,
                        partition_epoch,
                        &isr,
                    );
                    let decisions: Vec<String> = self.controller.decisions[before..].to_vec();
                    self.trace.extend(decisions);
                    if self.random.chance(self.options.answer_loss_per_million) {
                        self.note(format!(
                            "the answer to AlterPartition #{request_id} is lost"
                        ));
                        continue;
                    }
                    let extra_ms = self.random.between(0, self.options.answer_delay_ms_max);
                    self.network.send_later(
                        &mut self.random,
                        now_ms,
                        extra_ms,
                        CONTROLLER,
                        envelope.from,
                        None,
                        Payload::AlterPartitionAnswer {
                            request_id,
                            outcome,
                        },
                    );
                }
                payload => {
                    let broker = &mut self.brokers[index(envelope.to)];
                    let mut context = Context {
                        network: &mut self.network,
                        random: &mut self.random,
                        now_ms,
                        trace: &mut self.trace,
                        timing: self.timing,
                        bug: self.options.bug,
                        guard_stale_answers: self.options.guard_stale_answers,
                        timeout_clears_pending: self.options.timeout_clears_pending,
                    };
                    match payload {
                        Payload::ToFollower(message) => {
                            let reply = broker.follower_apply(&mut context, message);
                            context.network.send(
                                context.random,
                                now_ms,
                                envelope.to,
                                envelope.from,
                                envelope.connection,
                                Payload::Reply(reply),
                            );
                        }
                        Payload::Reply(reply) => {
                            broker.on_reply(&mut context, envelope.from, reply)
                        }
                        Payload::AlterPartitionAnswer {
                            request_id,
                            outcome,
                        } => {
                            broker.on_alter_answer(&mut context, request_id, outcome);
                        }
                        Payload::AlterPartition { .. } => unreachable!("handled above"),
                    }
                }
            }
        }
    }

    fn batch(&mut self, write_id: u64) -> Bytes {
        let mut builder = BatchBuilder::new();
        let count = self.random.between(1, 4) as usize;
        for index in 0..count {
            let size = self.random.between(1, 200) as usize;
            let value: Vec<u8> = (0..size)
                .map(|position| (write_id as usize * 31 + index * 7 + position) as u8)
                .collect();
            let key = format!("write-{write_id}-{index}");
            builder.record(Some(key.as_bytes()), Some(&value), TimestampMs(self.now_ms));
        }
        builder.build()
    }

    fn refresh_leader(&mut self) {
        // Metadata from a random live broker's view (possibly stale).
        let broker = self.random.pick(&BROKERS);
        let broker = &self.brokers[index(broker)];
        if broker.is_up() && broker.registered {
            self.believed_leader = broker.view_leader;
        }
    }

    fn produce(&mut self) {
        if !self.random.chance(self.options.produce_per_million) {
            return;
        }
        let Some(target) = self.believed_leader else {
            self.refresh_leader();
            return;
        };
        let write_id = self.write_next;
        self.write_next += 1;
        let batch = self.batch(write_id);
        let broker = &mut self.brokers[index(target)];
        match broker.produce(&batch) {
            Ok((epoch, base, end, completion)) => {
                self.summary.produced += 1;
                let incarnation = broker.incarnation;
                self.pending.push(Pending {
                    broker: target,
                    incarnation,
                    epoch,
                    base,
                    end,
                    write_id,
                    sent_ms: self.now_ms,
                    completion: Some(completion),
                });
            }
            Err(_) => self.refresh_leader(),
        }
    }

    fn resolve_pending(&mut self) -> Result<(), String> {
        let now_ms = self.now_ms;
        let mut index_pending = 0;
        while index_pending < self.pending.len() {
            let pending = &mut self.pending[index_pending];
            let resolved = pending
                .completion
                .as_mut()
                .and_then(|completion| completion.now_or_never());
            match resolved {
                Some(Err(error)) => {
                    let line = format!(
                        "write {} at {}..{} failed on leader {}: {error}",
                        pending.write_id, pending.base, pending.end, pending.broker
                    );
                    self.trace.push(format!("{now_ms}: {line}"));
                    self.pending.swap_remove(index_pending);
                    self.summary.failed_writes += 1;
                    continue;
                }
                Some(Ok(())) => pending.completion = None,
                None => {}
            }
            let pending = &self.pending[index_pending];
            let broker = &mut self.brokers[index(pending.broker)];
            let alive = broker.is_up()
                && broker.incarnation == pending.incarnation
                && broker
                    .leader_state()
                    .is_some_and(|leader| leader.epoch == pending.epoch);
            if !alive || now_ms - pending.sent_ms > 5_000 {
                self.pending.swap_remove(index_pending);
                self.refresh_leader();
                continue;
            }
            let high_watermark = broker.high_watermark();
            let isr_size = broker.leader_state().map_or(0, |leader| leader.isr.len());
            if high_watermark >= pending.end && isr_size >= MIN_INSYNC {
                let stored = broker.batches(pending.base, pending.end);
                assert_eq!(stored.len(), 1, "one produced batch");
                let (base, bytes) = stored.into_iter().next().expect("one batch");
                assert_eq!(base, pending.base);
                let line = format!(
                    "write {} acknowledged at {base}..{} by leader {} (epoch {}, hw {high_watermark})",
                    pending.write_id, pending.end, pending.broker, pending.epoch.0
                );
                let acked = Acked {
                    write_id: pending.write_id,
                    end: pending.end,
                    bytes,
                };
                self.trace.push(format!("{now_ms}: {line}"));
                self.checker.acknowledge(base, acked)?;
                self.pending.swap_remove(index_pending);
                continue;
            }
            index_pending += 1;
        }
        Ok(())
    }
}
