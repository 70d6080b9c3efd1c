//! The fake network: messages between nodes are delayed (so reordered),
//! dropped, duplicated, or cut by partitions, all from the network's seeded
//! stream. Delivery order is (due time, send sequence): deterministic.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::Message;

use super::prng::Prng;

pub struct Packet {
    pub from: usize,
    pub to: usize,
    pub message: Message,
}

pub struct NetworkFaults {
    pub drop_probability: f64,
    pub duplicate_probability: f64,
    pub delay_ms_max: u64,
}

pub struct Network {
    in_flight: BTreeMap<(u64, u64), Packet>,
    sequence: u64,
    /// Directed links that lose everything.
    cut: BTreeSet<(usize, usize)>,
    pub faults: NetworkFaults,
    prng: Prng,
    pub sent: u64,
    pub dropped: u64,
}

impl Network {
    pub fn new(prng: Prng, faults: NetworkFaults) -> Network {
        Network {
            in_flight: BTreeMap::new(),
            sequence: 0,
            cut: BTreeSet::new(),
            faults,
            prng,
            sent: 0,
            dropped: 0,
        }
    }

    pub fn connected(&self, from: usize, to: usize) -> bool {
        from == to || !self.cut.contains(&(from, to))
    }

    /// Queues `message`; false if it was lost at once.
    pub fn send(&mut self, now_ms: u64, from: usize, to: usize, message: Message) -> bool {
        self.sent += 1;
        if !self.connected(from, to) || self.prng.chance(self.faults.drop_probability) {
            self.dropped += 1;
            return false;
        }
        let copies = if self.prng.chance(self.faults.duplicate_probability) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let due_ms = now_ms + self.prng.range(1, self.faults.delay_ms_max.max(1));
            self.sequence += 1;
            self.in_flight.insert(
                (due_ms, self.sequence),
                Packet {
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
        true
    }

    /// The next packet due at or before `now_ms`, with whether its link is
    /// still up (a partition made after sending also loses it).
    pub fn next_due(&mut self, now_ms: u64) -> Option<(Packet, bool)> {
        let key = *self.in_flight.keys().next()?;
        if key.0 > now_ms {
            return None;
        }
        let packet = self.in_flight.remove(&key)?;
        let up = self.connected(packet.from, packet.to);
        if !up {
            self.dropped += 1;
        }
        Some((packet, up))
    }

    /// Cuts `node` off from every other node, both ways.
    pub fn isolate(&mut self, node: usize, count: usize) {
        for other in (0..count).filter(|other| *other != node) {
            self.cut.insert((node, other));
            self.cut.insert((other, node));
        }
    }

    /// Cuts one direction only.
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.cut.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }
}
