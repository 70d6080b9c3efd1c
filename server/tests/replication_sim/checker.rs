//! The invariants, checked after every step:
//! - every acknowledged write is on every member of the controller's ISR
//!   that is up, durably and byte-identical (so on any leader it elects);
//! - no divergence at or below a high watermark: every batch below any
//!   replica's high watermark is the same everywhere and forever;
//! - a leader's high watermark never goes back while it leads, and never
//!   passes the durable end of a member of the committed ISR;
//! - at most one leader per leader epoch;
//! - the controller's image is well formed across reassignments: the ISR
//!   is a non-empty subset of the replicas, the leader (the only broker
//!   the controller may elect is an ISR member) one of them, `adding` and
//!   `removing` disjoint parts of the replicas.
//!
//! Membership changes need no other rule: the checks above are about the
//! ISR of the moment, whatever the replica list; a broker that leaves the
//! replicas deletes its copy (a new generation, checked from scratch if
//! it comes back) and can be elected again only after it rejoined the ISR.
//!
//! After healing: no reassignment going on, the ISR is all replicas and
//! the replicas' logs are identical up to the high watermark.

use std::collections::BTreeMap;

use sluice_engine::Offset;
use sluice_engine::batch::BatchHeader;

use super::broker::{Broker, Role};
use super::controller::Controller;

/// An acknowledged write: the batch as the leader stored it.
#[derive(Clone, Debug)]
pub struct Acked {
    pub write_id: u64,
    pub end: Offset,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Checked {
    generation: u64,
    /// Acknowledged writes below this were verified on this broker.
    acked_through: Offset,
    /// Batches below this were compared with the committed ones.
    committed_through: Offset,
}

#[derive(Default)]
pub struct Checker {
    pub acked: BTreeMap<i64, Acked>,
    /// Every batch ever below some replica's high watermark, by base.
    committed: BTreeMap<i64, Vec<u8>>,
    committed_end: Offset,
    checked: BTreeMap<i32, Checked>,
    high_watermarks: BTreeMap<(i32, u64, i32), Offset>,
    leaders: BTreeMap<i32, i32>,
}

fn batch_end(bytes: &[u8]) -> Offset {
    BatchHeader::parse(bytes)
        .expect("a stored batch")
        .next_offset()
}

impl Checker {
    /// A write was acknowledged to the client.
    pub fn acknowledge(&mut self, base: Offset, acked: Acked) -> Result<(), String> {
        if let Some(previous) = self.acked.get(&base.value()) {
            if previous.bytes != acked.bytes {
                return Err(format!(
                    "two different writes acknowledged at offset {base}: write {} and write {}",
                    previous.write_id, acked.write_id
                ));
            }
            return Ok(());
        }
        let overlaps = self
            .acked
            .range(..base.value())
            .next_back()
            .is_some_and(|(_, before)| before.end > base)
            || self
                .acked
                .range(base.value()..)
                .next()
                .is_some_and(|(&after, _)| after < acked.end.value());
        if overlaps {
            return Err(format!(
                "write {} acknowledged at {base} overlaps another acknowledged write",
                acked.write_id
            ));
        }
        self.acked.insert(base.value(), acked);
        Ok(())
    }

    fn compare_committed(&mut self, broker: i32, base: Offset, bytes: &[u8]) -> Result<(), String> {
        if base < self.committed_end {
            match self.committed.get(&base.value()) {
                Some(committed) if committed.as_slice() == bytes => Ok(()),
                Some(_) => Err(format!(
                    "divergence below the high watermark: broker {broker}'s batch at {base} differs from the committed one"
                )),
                None => Err(format!(
                    "divergence below the high watermark: broker {broker} has a batch at {base}, which is inside another committed batch"
                )),
            }
        } else if base == self.committed_end {
            self.committed.insert(base.value(), bytes.to_vec());
            self.committed_end = batch_end(bytes);
            Ok(())
        } else {
            Err(format!(
                "broker {broker}: batch at {base} beyond the committed end {} (a gap)",
                self.committed_end
            ))
        }
    }

    /// The checks of one step.
    pub fn check(&mut self, brokers: &mut [Broker], controller: &Controller) -> Result<(), String> {
        check_image(controller)?;
        for broker in brokers.iter_mut() {
            if !broker.is_up() {
                continue;
            }
            let id = broker.id;
            let mut checked = self.checked.get(&id).copied().unwrap_or_default();
            if checked.generation != broker.generation {
                checked = Checked {
                    generation: broker.generation,
                    ..Checked::default()
                };
            }
            // Agreement below the high watermark.
            let high_watermark = broker.high_watermark();
            if checked.committed_through < high_watermark {
                for (base, bytes) in broker.batches(checked.committed_through, high_watermark) {
                    self.compare_committed(id, base, &bytes)?;
                    checked.committed_through = batch_end(&bytes);
                }
            }
            // Acknowledged writes on every ISR member, durably.
            if controller.image.isr.contains(&id) {
                let durable_end = broker.log().durable_end_offset();
                let pending: Vec<(i64, Acked)> = self
                    .acked
                    .range(checked.acked_through.value()..)
                    .map(|(&base, acked)| (base, acked.clone()))
                    .collect();
                for (base, acked) in pending {
                    if durable_end < acked.end {
                        return Err(format!(
                            "acknowledged write {} at {base} is not durable on ISR member {id} (durable end {durable_end}, log end {})",
                            acked.write_id,
                            broker.log().log_end_offset()
                        ));
                    }
                    let found = broker.batches(Offset(base), acked.end);
                    if found.first().map(|(offset, bytes)| (offset.value(), bytes))
                        != Some((base, &acked.bytes))
                    {
                        return Err(format!(
                            "acknowledged write {} at {base} differs on ISR member {id}",
                            acked.write_id
                        ));
                    }
                    checked.acked_through = acked.end;
                }
            }
            self.checked.insert(id, checked);
            // Leaders: one per epoch, high watermark monotonic.
            if let Role::Leader(leader) = &broker.role {
                let epoch = leader.epoch.0;
                let hw = leader.high_watermark();
                if let Some(&other) = self.leaders.get(&epoch)
                    && other != id
                {
                    return Err(format!("brokers {other} and {id} both led epoch {epoch}"));
                }
                self.leaders.insert(epoch, id);
                let key = (id, broker.incarnation, epoch);
                if let Some(&previous) = self.high_watermarks.get(&key)
                    && hw < previous
                {
                    return Err(format!(
                        "leader {id}'s high watermark went back in epoch {epoch}: {previous} -> {hw}"
                    ));
                }
                self.high_watermarks.insert(key, hw);
            }
        }
        // The current leader's high watermark against the ISR's durable ends.
        let image = &controller.image;
        if let Some(leader_id) = image.leader {
            let leader = &brokers[(leader_id - 1) as usize];
            if leader.is_up()
                && let Role::Leader(state) = &leader.role
                && state.epoch.0 == image.leader_epoch
            {
                let hw = state.high_watermark();
                for &member in &image.isr {
                    let broker = &brokers[(member - 1) as usize];
                    if !broker.is_up() {
                        continue;
                    }
                    let durable_end = broker.log().durable_end_offset();
                    if durable_end < hw {
                        return Err(format!(
                            "leader {leader_id}'s high watermark {hw} (epoch {}) passes ISR member {member}'s durable end {durable_end}",
                            image.leader_epoch
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// After healing: all replicas in the ISR, all replicas' logs
    /// identical up to the leader's high watermark, every acknowledged
    /// write on every replica.
    pub fn check_healed(
        &mut self,
        brokers: &mut [Broker],
        controller: &Controller,
    ) -> Result<(), String> {
        let mut isr = controller.image.isr.clone();
        isr.sort_unstable();
        let mut replicas = controller.image.replicas.clone();
        replicas.sort_unstable();
        if isr != replicas || controller.image.is_reassigning() {
            return Err(format!(
                "after healing the ISR is {isr:?}, not all replicas {replicas:?}, or a reassignment is going on"
            ));
        }
        let leader_id = controller
            .image
            .leader
            .ok_or_else(|| "after healing there is no leader".to_string())?;
        let hw = brokers[(leader_id - 1) as usize].high_watermark();
        let reference = brokers[(leader_id - 1) as usize].batches(Offset::ZERO, hw);
        for broker in brokers.iter() {
            if !replicas.contains(&broker.id) {
                continue;
            }
            let batches = broker.batches(Offset::ZERO, hw);
            if batches != reference {
                return Err(format!(
                    "after healing broker {}'s log differs from leader {leader_id}'s below the high watermark {hw}",
                    broker.id
                ));
            }
        }
        let stored: BTreeMap<i64, &Vec<u8>> = reference
            .iter()
            .map(|(base, bytes)| (base.value(), bytes))
            .collect();
        for (base, acked) in &self.acked {
            if stored.get(base) != Some(&&acked.bytes) {
                return Err(format!(
                    "after healing acknowledged write {} at {base} is missing below the high watermark {hw}",
                    acked.write_id
                ));
            }
        }
        for broker in brokers.iter_mut() {
            self.checked.remove(&broker.id);
        }
        self.check(brokers, controller)
    }
}

/// The controller's image is well formed (see the module docs).
fn check_image(controller: &Controller) -> Result<(), String> {
    let image = &controller.image;
    let mut replicas = image.replicas.clone();
    replicas.sort_unstable();
    replicas.dedup();
    let well_formed = replicas.len() == image.replicas.len()
        && !image.isr.is_empty()
        && image
            .isr
            .iter()
            .all(|member| image.replicas.contains(member))
        && image
            .leader
            .is_none_or(|leader| image.isr.contains(&leader))
        && image
            .adding
            .iter()
            .all(|broker| image.replicas.contains(broker) && !image.removing.contains(broker))
        && image
            .removing
            .iter()
            .all(|broker| image.replicas.contains(broker));
    if well_formed {
        Ok(())
    } else {
        Err(format!("a malformed controller image: {image:?}"))
    }
}
