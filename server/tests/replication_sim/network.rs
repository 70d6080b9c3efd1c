//! The fake network: messages are values, delivered after a random delay.
//! Replication traffic runs over connections (per connection in order, as
//! TCP); a lost message breaks its connection (everything after it on the
//! connection is lost too) and both ends learn it after a delay, as they
//! would from a reset or a timeout. Controller traffic is datagrams (lost
//! or delivered alone). Links can be cut (network partitions); cutting a
//! link breaks its connections.

use std::collections::{BTreeMap, BTreeSet};

use sluice_server::replication::messages::{StateReply, ToFollower};

use super::prng::Prng;

/// Node 0 is the controller; brokers are 1..=3.
pub type Node = i32;
pub const CONTROLLER: Node = 0;

#[derive(Clone, Debug)]
pub enum Payload {
    ToFollower(ToFollower),
    Reply(StateReply),
    /// Kafka's AlterPartition, from a leader to the controller.
    AlterPartition {
        request_id: u64,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    AlterPartitionAnswer {
        request_id: u64,
        /// The committed partition epoch and ISR, or why it was refused.
        outcome: Result<(i32, Vec<i32>), String>,
    },
}

#[derive(Clone, Debug)]
pub struct Envelope {
    pub from: Node,
    pub to: Node,
    /// `None`: a datagram.
    pub connection: Option<u64>,
    pub deliver_at_ms: i64,
    sequence: u64,
    pub payload: Payload,
}

struct Connection {
    ends: (Node, Node),
    last_delivery_ms: i64,
}

/// What a broken connection's end learns.
#[derive(Clone, Copy, Debug)]
pub struct Broken {
    pub connection: u64,
    pub node: Node,
    at_ms: i64,
}

pub struct Network {
    queue: Vec<Envelope>,
    sequence: u64,
    connection_next: u64,
    open: BTreeMap<u64, Connection>,
    cut: BTreeSet<(Node, Node)>,
    /// Crashed nodes: connecting to them fails.
    down: BTreeSet<Node>,
    broken: Vec<Broken>,
    pub loss_per_million: u64,
    pub delay_ms_max: i64,
    pub sent: u64,
    pub lost: u64,
}

fn link(a: Node, b: Node) -> (Node, Node) {
    (a.min(b), a.max(b))
}

impl Network {
    pub fn new(loss_per_million: u64, delay_ms_max: i64) -> Network {
        Network {
            queue: Vec::new(),
            sequence: 0,
            connection_next: 1,
            open: BTreeMap::new(),
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            broken: Vec::new(),
            loss_per_million,
            delay_ms_max,
            sent: 0,
            lost: 0,
        }
    }

    pub fn reachable(&self, a: Node, b: Node) -> bool {
        !self.cut.contains(&link(a, b))
    }

    /// Open a connection from `from` to `to`; `None` when unreachable.
    pub fn connect(&mut self, from: Node, to: Node) -> Option<u64> {
        if !self.reachable(from, to) || self.down.contains(&to) {
            return None;
        }
        let id = self.connection_next;
        self.connection_next += 1;
        self.open.insert(
            id,
            Connection {
                ends: (from, to),
                last_delivery_ms: 0,
            },
        );
        Some(id)
    }

    pub fn is_open(&self, connection: u64) -> bool {
        self.open.contains_key(&connection)
    }

    /// Send on `connection` (`None`: a datagram). Sending on a broken
    /// connection loses the message (its sender learns of the break).
    pub fn send(
        &mut self,
        random: &mut Prng,
        now_ms: i64,
        from: Node,
        to: Node,
        connection: Option<u64>,
        payload: Payload,
    ) {
        self.send_later(random, now_ms, 0, from, to, connection, payload);
    }

    /// As `send`, `extra_ms` later (a slow RPC).
    #[allow(clippy::too_many_arguments)]
    pub fn send_later(
        &mut self,
        random: &mut Prng,
        now_ms: i64,
        extra_ms: i64,
        from: Node,
        to: Node,
        connection: Option<u64>,
        payload: Payload,
    ) {
        self.sent += 1;
        let delay = random.between(1, self.delay_ms_max) + extra_ms;
        let deliver_at_ms = match connection {
            Some(id) => {
                let Some(open) = self.open.get_mut(&id) else {
                    self.lost += 1;
                    return;
                };
                assert!(open.ends == (from, to) || open.ends == (to, from));
                if random.chance(self.loss_per_million) {
                    self.lost += 1;
                    self.break_connection(random, now_ms, id);
                    return;
                }
                let at = (now_ms + delay).max(open.last_delivery_ms);
                open.last_delivery_ms = at;
                at
            }
            None => {
                if !self.reachable(from, to) || random.chance(self.loss_per_million) {
                    self.lost += 1;
                    return;
                }
                now_ms + delay
            }
        };
        self.sequence += 1;
        self.queue.push(Envelope {
            from,
            to,
            connection,
            deliver_at_ms,
            sequence: self.sequence,
            payload,
        });
    }

    /// Break `connection`: what is queued on it is lost; both ends learn
    /// of it after a delay.
    pub fn break_connection(&mut self, random: &mut Prng, now_ms: i64, connection: u64) {
        let Some(open) = self.open.remove(&connection) else {
            return;
        };
        let before = self.queue.len();
        self.queue
            .retain(|envelope| envelope.connection != Some(connection));
        self.lost += (before - self.queue.len()) as u64;
        for node in [open.ends.0, open.ends.1] {
            self.broken.push(Broken {
                connection,
                node,
                at_ms: now_ms + random.between(1, 200),
            });
        }
    }

    fn break_where(
        &mut self,
        random: &mut Prng,
        now_ms: i64,
        matches: impl Fn(Node, Node) -> bool,
    ) {
        let doomed: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, open)| matches(open.ends.0, open.ends.1))
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            self.break_connection(random, now_ms, id);
        }
        // Datagrams in flight over a cut link are lost.
    }

    /// Cut the link between `a` and `b`.
    pub fn cut(&mut self, random: &mut Prng, now_ms: i64, a: Node, b: Node) {
        self.cut.insert(link(a, b));
        self.break_where(random, now_ms, |x, y| link(x, y) == link(a, b));
        let before = self.queue.len();
        self.queue
            .retain(|envelope| link(envelope.from, envelope.to) != link(a, b));
        self.lost += (before - self.queue.len()) as u64;
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// `node` crashed: its connections reset, what was in flight to or
    /// from it is lost.
    pub fn node_down(&mut self, random: &mut Prng, now_ms: i64, node: Node) {
        self.down.insert(node);
        self.break_where(random, now_ms, |x, y| x == node || y == node);
        let before = self.queue.len();
        self.queue
            .retain(|envelope| envelope.from != node && envelope.to != node);
        self.lost += (before - self.queue.len()) as u64;
    }

    /// `node` restarted: it accepts connections again.
    pub fn node_up(&mut self, node: Node) {
        self.down.remove(&node);
    }

    /// Messages due by `now_ms`, in delivery order.
    pub fn due(&mut self, now_ms: i64) -> Vec<Envelope> {
        let mut due: Vec<Envelope> = Vec::new();
        let mut index = 0;
        while index < self.queue.len() {
            if self.queue[index].deliver_at_ms <= now_ms {
                due.push(self.queue.swap_remove(index));
            } else {
                index += 1;
            }
        }
        due.sort_by_key(|envelope| (envelope.deliver_at_ms, envelope.sequence));
        due
    }

    /// Break notices due by `now_ms`.
    pub fn due_breaks(&mut self, now_ms: i64) -> Vec<Broken> {
        let (due, later): (Vec<Broken>, Vec<Broken>) = self
            .broken
            .drain(..)
            .partition(|broken| broken.at_ms <= now_ms);
        self.broken = later;
        due
    }
}
