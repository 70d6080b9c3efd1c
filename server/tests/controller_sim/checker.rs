//! The simulation's oracle. It keeps the reference committed log (the
//! longest committed prefix any node has applied) and the images obtained by
//! applying it in order, and checks every node against them:
//! - every batch a node applies equals the reference's at that offset
//!   (term, records, and whether the image refused it): committed entries
//!   are never lost, changed or reordered;
//! - every node's Raft log up to its commit index matches the reference;
//! - every node's image equals the reference image at the node's offset
//!   (after a snapshot load too);
//! - at most one leader per term;
//! - every batch acknowledged to a client is in the reference log at its
//!   offset with its term, exactly once.

use std::collections::{BTreeMap, VecDeque};

use sluice_server::controller::image::{ApplyError, MetadataImage};
use sluice_server::controller::node::CommittedBatch;
use sluice_server::controller::records::{MetadataRecord, RecordBatch};
use sluice_server::controller::storage::RaftLogStore;
use sluice_server::controller::types::{
    BrokerId, LeaderEpoch, MetadataOffset, PartitionIndex, TopicId,
};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Reference {
    term: u64,
    records: Vec<MetadataRecord>,
    result: Result<(), ApplyError>,
}

type PartitionLeaders = BTreeMap<(TopicId, PartitionIndex, LeaderEpoch), Option<BrokerId>>;

/// How many recent reference images are kept for comparing lagging nodes.
const IMAGES_KEPT: usize = 512;

#[derive(Default)]
pub struct Checker {
    /// Entry at offset i is `log[i - 1]`.
    log: Vec<Reference>,
    image: MetadataImage,
    images: VecDeque<MetadataImage>,
    leaders: BTreeMap<u64, BrokerId>,
    /// The leader of each (topic, partition, leader epoch) ever committed.
    partition_leaders: PartitionLeaders,
    acknowledged: Vec<(MetadataOffset, u64, Vec<MetadataRecord>)>,
}

impl Checker {
    pub fn committed_count(&self) -> usize {
        self.log.len()
    }

    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn applied(&mut self, node: BrokerId, batch: &CommittedBatch) -> Result<(), String> {
        let index = usize::try_from(batch.offset.0).map_err(|_| "negative offset")?;
        let entry = Reference {
            term: batch.term,
            records: batch.records.clone(),
            result: batch.result.clone(),
        };
        if index == 0 || index > self.log.len() + 1 {
            return Err(format!(
                "node {node} applied offset {index} but the committed log ends at {}",
                self.log.len()
            ));
        }
        if index <= self.log.len() {
            let reference = &self.log[index - 1];
            if *reference != entry {
                return Err(format!(
                    "node {node} applied a different entry at {index}: {entry:?}, committed \
                     before: {reference:?}"
                ));
            }
            return Ok(());
        }
        let result = self.image.apply_batch(batch.offset, &batch.records);
        let empty = MetadataImage::new();
        let before = self.images.back().unwrap_or(&empty);
        check_partitions(
            before,
            &self.image,
            batch.offset,
            &mut self.partition_leaders,
        )?;
        if result != batch.result {
            return Err(format!(
                "node {node} applied {index} with {:?}, the reference image says {result:?}",
                batch.result
            ));
        }
        self.log.push(entry);
        self.images.push_back(self.image.clone());
        if self.images.len() > IMAGES_KEPT {
            self.images.pop_front();
        }
        Ok(())
    }

    /// The reference image at `offset` (None when too old to be kept).
    pub fn image_at(&self, offset: MetadataOffset) -> Option<MetadataImage> {
        let index = usize::try_from(offset.0).ok()?;
        if index == 0 {
            return Some(MetadataImage::new());
        }
        if index > self.log.len() {
            return None;
        }
        let back = self.log.len() - index;
        if back < self.images.len() {
            return self.images.get(self.images.len() - 1 - back).cloned();
        }
        // Replay the prefix (rare: a node far behind).
        let mut image = MetadataImage::new();
        for (position, entry) in self.log[..index].iter().enumerate() {
            let _ = image.apply_batch(MetadataOffset(position as i64 + 1), &entry.records);
        }
        Some(image)
    }

    pub fn check_image(&self, node: BrokerId, image: &MetadataImage) -> Result<(), String> {
        let Some(expected) = self.image_at(image.offset()) else {
            return Err(format!(
                "node {node} has an image at {} beyond the committed log ({})",
                image.offset(),
                self.log.len()
            ));
        };
        if *image != expected {
            return Err(format!(
                "node {node}'s image at {} differs from the committed log's:\n{image:?}\n{expected:?}",
                image.offset()
            ));
        }
        Ok(())
    }

    pub fn leader(&mut self, term: u64, node: BrokerId) -> Result<(), String> {
        let previous = *self.leaders.entry(term).or_insert(node);
        if previous != node {
            return Err(format!(
                "term {term} has two leaders: {previous} and {node}"
            ));
        }
        Ok(())
    }

    /// The node's Raft log up to its commit index agrees with the
    /// reference (where the reference reaches).
    pub fn check_log<S: RaftLogStore>(
        &self,
        node: BrokerId,
        store: &S,
        commit_index: u64,
    ) -> Result<(), String> {
        let core = store.core();
        for entry in &core.entries {
            if entry.index > commit_index {
                break;
            }
            let Some(reference) = self.log.get(entry.index as usize - 1) else {
                break;
            };
            if reference.term != entry.term {
                return Err(format!(
                    "node {node} holds term {} at committed index {}, the committed log term {}",
                    entry.term, entry.index, reference.term
                ));
            }
        }
        Ok(())
    }

    pub fn acknowledge(&mut self, offset: MetadataOffset, term: u64, records: Vec<MetadataRecord>) {
        self.acknowledged.push((offset, term, records));
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.len()
    }

    /// Every acknowledged batch is in the committed log at its offset, and
    /// its records appear at no other offset.
    pub fn check_acknowledged(&self) -> Result<(), String> {
        let encode = |records: &[MetadataRecord]| RecordBatch::new(records.to_vec()).encode();
        let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for entry in &self.log {
            if !entry.records.is_empty() {
                *seen.entry(encode(&entry.records)).or_insert(0) += 1;
            }
        }
        for (offset, term, records) in &self.acknowledged {
            let entry = self.log.get(offset.0 as usize - 1);
            if entry.is_none_or(|entry| entry.term != *term || entry.records != *records) {
                return Err(format!(
                    "acknowledged batch at {offset} (term {term}) is not in the committed log: \
                     {entry:?}"
                ));
            }
            let count = seen.get(&encode(records)).copied().unwrap_or(0);
            // Fencing and heartbeat batches may legitimately repeat; unique
            // ones (topics with fresh ids, registrations) must not.
            let unique = records.iter().any(|record| {
                matches!(
                    record,
                    MetadataRecord::Topic(_) | MetadataRecord::RegisterBroker(_)
                )
            });
            if unique && count != 1 {
                return Err(format!(
                    "acknowledged batch at {offset} committed {count} times"
                ));
            }
        }
        Ok(())
    }
}

/// Replication invariants of the reference image after a batch, against
/// the image before it:
/// - every ISR is non-empty and holds the leader, an active broker;
/// - brokers that join an ISR are active (never fenced or shutting
///   down);
/// - the leader epoch changes exactly when the leader does (no
///   replicas are removed here), and never goes back;
/// - a changed partition has the next partition epoch;
/// - at most one leader per leader epoch, over the whole run.
fn check_partitions(
    before: &MetadataImage,
    image: &MetadataImage,
    offset: MetadataOffset,
    partition_leaders: &mut PartitionLeaders,
) -> Result<(), String> {
    let active = |id: BrokerId| image.broker(id).is_some_and(|b| b.is_active());
    for topic in image.topics().values() {
        for (index, state) in topic.partitions.iter().enumerate() {
            let partition = PartitionIndex(index as i32);
            let at = format!("at {offset}: {} partition {index}", topic.name);
            if state.isr.is_empty() {
                return Err(format!("{at}: empty ISR"));
            }
            if let Some(leader) = state.leader
                && (!state.isr.contains(&leader) || !active(leader))
            {
                return Err(format!("{at}: leader {leader} not an active ISR member"));
            }
            if let Some(old) = before.partition(topic.topic_id, partition) {
                if let Some(joiner) = state
                    .isr
                    .iter()
                    .find(|member| !old.isr.contains(member) && !active(**member))
                {
                    return Err(format!("{at}: inactive broker {joiner} joined the ISR"));
                }
                if (old.leader != state.leader) != (old.leader_epoch != state.leader_epoch) {
                    return Err(format!(
                        "{at}: leader {:?} -> {:?} with epoch {:?} -> {:?}",
                        old.leader, state.leader, old.leader_epoch, state.leader_epoch
                    ));
                }
                if state.leader_epoch < old.leader_epoch {
                    return Err(format!("{at}: leader epoch went back"));
                }
                if old != state && state.partition_epoch.0 != old.partition_epoch.0 + 1 {
                    return Err(format!(
                        "{at}: partition epoch {:?} -> {:?}",
                        old.partition_epoch, state.partition_epoch
                    ));
                }
            }
            let key = (topic.topic_id, partition, state.leader_epoch);
            match partition_leaders.get(&key) {
                Some(leader) if *leader != state.leader => {
                    return Err(format!(
                        "{at}: two leaders in leader epoch {:?}: {leader:?} and {:?}",
                        state.leader_epoch, state.leader
                    ));
                }
                Some(_) => {}
                None => {
                    partition_leaders.insert(key, state.leader);
                }
            }
        }
    }
    Ok(())
}
