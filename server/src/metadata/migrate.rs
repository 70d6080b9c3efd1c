//! Upgrade from the single-node version, and the cluster id.
//!
//! The single-node broker kept its metadata in `<data>/cluster-metadata.json`
//! (topics, their configs, a cluster id) and the next free producer id in
//! `<data>/producer-id-block`. On the first start of this version the
//! topics are created through the controller (same names, partition counts
//! and configs; new topic ids), producer-id blocks are taken until past the
//! old one, and the file is renamed `cluster-metadata.json.migrated`, so the
//! migration runs once. The partition directories stay where they are and
//! are adopted by name when they open (shard/partition.rs). Committed
//! offsets live in `__consumer_offsets`, which is migrated like any topic.
//!
//! Each step is idempotent, so a crash in the middle re-runs it: a topic
//! that already exists is skipped.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::controller::quorum_controller::CreateTopicRequest;
use crate::controller::rpc::{ErrorKind, RequestError};
use crate::controller::service::{ControllerHandle, block_on};

const LEGACY_FILE: &str = "cluster-metadata.json";
const LEGACY_MIGRATED: &str = "cluster-metadata.json.migrated";
const LEGACY_PRODUCER_IDS: &str = "producer-id-block";
/// Where the cluster id is kept once known.
const CLUSTER_ID_FILE: &str = "cluster.id";

#[derive(Deserialize)]
struct LegacyMetadata {
    #[serde(default)]
    cluster_id: String,
    topics: BTreeMap<String, LegacyTopic>,
}

#[derive(Deserialize)]
struct LegacyTopic {
    partitions: Vec<serde_json::Value>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// This broker's cluster id: the one recorded in the data directory, else
/// the single-node version's, else one derived from the voters (so every
/// broker of a cluster derives the same), recorded for next time.
pub fn cluster_id(data_dir: &Path, voters: &[(i32, String)]) -> anyhow::Result<String> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let legacy = [LEGACY_FILE, LEGACY_MIGRATED]
        .iter()
        .filter_map(|name| std::fs::read(data_dir.join(name)).ok())
        .filter_map(|bytes| serde_json::from_slice::<LegacyMetadata>(&bytes).ok())
        .map(|legacy| legacy.cluster_id)
        .find(|id| !id.is_empty());
    let id = legacy.unwrap_or_else(|| derived_cluster_id(voters));
    write_durably(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// 32 hex digits from the voters' ids and endpoints.
fn derived_cluster_id(voters: &[(i32, String)]) -> String {
    let text: String = voters
        .iter()
        .map(|(id, endpoint)| format!("{id}@{endpoint},"))
        .collect();
    (0u32..4)
        .map(|salt| {
            let salted = format!("{salt}:{text}");
            format!("{:08x}", crc32c::crc32c(salted.as_bytes()))
        })
        .collect()
}

fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Migrate `<data>/cluster-metadata.json`, if there is one (module docs).
pub fn from_single_node_json(data_dir: &Path, controller: &ControllerHandle) -> anyhow::Result<()> {
    let path = data_dir.join(LEGACY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let legacy: LegacyMetadata = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not valid metadata", path.display()))?;
    tracing::info!(
        topics = legacy.topics.len(),
        "migrating the single-node metadata"
    );
    for (name, topic) in &legacy.topics {
        if controller.image().topic_by_name(name).is_some() {
            continue;
        }
        let request = CreateTopicRequest {
            name: name.clone(),
            partition_count: i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX),
            replication_factor: 1,
            assignment: None,
            configs: topic.configs.clone().into_iter().collect(),
        };
        match block_on(controller.create_topic(request)) {
            Ok(created) => {
                block_on(controller.wait_applied(created.offset))
                    .map_err(|error| anyhow::anyhow!("{error}"))?;
            }
            Err(RequestError::Rejected {
                kind: ErrorKind::TopicAlreadyExists,
                ..
            }) => {}
            Err(error) => anyhow::bail!("creating topic {name}: {error}"),
        }
    }
    migrate_producer_ids(data_dir, controller)?;
    std::fs::rename(&path, data_dir.join(LEGACY_MIGRATED))
        .with_context(|| format!("renaming {}", path.display()))?;
    std::fs::File::open(data_dir)?.sync_all()?;
    tracing::info!("single-node metadata migrated");
    Ok(())
}

/// Take producer-id blocks from the controller until past the single-node
/// version's next free id, so no id it handed out is handed out again.
fn migrate_producer_ids(data_dir: &Path, controller: &ControllerHandle) -> anyhow::Result<()> {
    const BLOCKS_MAX: usize = 100_000;
    let path = data_dir.join(LEGACY_PRODUCER_IDS);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let Ok(next_free) = text.trim().parse::<i64>() else {
        return Ok(());
    };
    for _ in 0..BLOCKS_MAX {
        if controller.image().producer_ids().next_block_start >= next_free {
            return Ok(());
        }
        block_on(controller.allocate_producer_ids()).map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    anyhow::bail!("producer ids up to {next_free} need more than {BLOCKS_MAX} blocks")
}
