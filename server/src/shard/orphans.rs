//! The startup sweep of the data directory's partition directories: runs
//! once, on the main thread, after the broker has caught up with the
//! metadata log and before any partition opens
//! ([`remove_orphan_partition_dirs`]). It must be given the caught-up
//! image's view, never the (empty) published one: a topic missing from
//! the view it is given loses its data.
//!
//! Invariant it establishes: every directory named `<topic>-<partition>`
//! that remains records (in its `partition.metadata`, shard/partition.rs)
//! the id that the metadata gives that topic, and this broker holds a
//! replica of that partition. So a partition directory that a crash kept after its
//! topic was deleted is never served, not even when a topic of the same
//! name is created again (it has a new id). The sweep:
//! - removes `*-delete` directories (removals a crash interrupted);
//! - removes, durably ([`remove_dir_durably`]), directories of topics the
//!   metadata does not hold, of another topic id, or of a partition the
//!   topic does not have or of which this broker holds no replica;
//! - adopts directories without `partition.metadata` (made by the previous
//!   Sluice version) whose topic and partition exist: it writes the topic's
//!   id into them (the upgrade path); without such a topic they are orphans.
//!
//! Only directories whose names parse as partition directories are
//! touched ([`parse_partition_dir_name`], [`parse_delete_dir_name`]); the
//! other entries (cluster-metadata.json, sluice.lock, controller/,
//! producer-id-block, temporary files) are left alone, and so is a
//! directory holding a `sluice.lock` (another broker's data directory,
//! such as a dev cluster's `node-1`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metadata::ClusterMetadata;
use crate::shard::TopicPartition;
use crate::shard::partition::{
    DELETE_DIR_SUFFIX, PARTITION_METADATA_FILE_NAME, PartitionDirError, delete_dir_path,
    encode_partition_metadata, kafka_topic_id_string, recorded_topic_id, remove_dir_if_present,
};

/// What the sweep did, for the startup log and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Directories kept as they were (their id matches).
    pub kept: Vec<String>,
    /// Previous-version directories given their topic's id.
    pub adopted: Vec<String>,
    /// Directories removed: orphans and `-delete` leftovers.
    pub removed: Vec<String>,
}

/// Sweep `data_dir` against `metadata`, the view of the caught-up image
/// (see the module docs). When Ok,
/// every removal and adoption is durable. Fails on the first I/O error, or
/// on a `partition.metadata` that cannot be read for a topic the metadata
/// holds (whose data it is cannot be told; nothing is removed).
pub fn remove_orphan_partition_dirs(
    data_dir: &Path,
    metadata: &ClusterMetadata,
) -> Result<SweepReport, PartitionDirError> {
    let topics: HashMap<&str, TopicIdentity> = metadata
        .topics
        .values()
        .map(|topic| {
            let identity = TopicIdentity {
                id: topic.id,
                held: topic
                    .partitions
                    .iter()
                    .map(|partition| partition.local_shard.is_some())
                    .collect(),
            };
            (topic.name.as_str(), identity)
        })
        .collect();
    sweep(data_dir, &topics)
}

/// What the sweep needs to know of a topic.
#[derive(Clone, Debug)]
struct TopicIdentity {
    id: uuid::Uuid,
    /// By partition index: whether this broker holds a replica of it.
    held: Vec<bool>,
}

/// [`remove_orphan_partition_dirs`] against a topic name -> identity map.
fn sweep(
    data_dir: &Path,
    topics: &HashMap<&str, TopicIdentity>,
) -> Result<SweepReport, PartitionDirError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PartitionDirError::Io { path, source }
    };
    let mut report = SweepReport::default();
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(data_dir).map_err(io_error(data_dir))? {
        let entry = entry.map_err(io_error(data_dir))?;
        let file_type = entry.file_type().map_err(io_error(&entry.path()))?;
        if !file_type.is_dir() {
            continue;
        }
        if let Ok(name) = entry.file_name().into_string() {
            entries.push(name);
        }
    }
    entries.sort();
    for name in entries {
        let dir = data_dir.join(&name);
        if dir.join(crate::datadir::LOCK_FILE_NAME).exists() {
            continue;
        }
        if parse_delete_dir_name(&name).is_some() {
            tracing::info!(dir = %dir.display(), "removing an interrupted partition removal");
            remove_dir_if_present(&dir)?;
            report.removed.push(name);
            continue;
        }
        let Some(topic_partition) = parse_partition_dir_name(&name) else {
            continue;
        };
        let expected = topics
            .get(topic_partition.topic.as_ref())
            .filter(|topic| {
                let index = topic_partition.partition as usize;
                topic.held.get(index).copied().unwrap_or(false)
            })
            .map(|topic| topic.id);
        let recorded = match recorded_topic_id(&dir) {
            Ok(recorded) => recorded,
            // Unreadable, for a partition nobody has: an orphan either way.
            Err(PartitionDirError::Malformed { .. }) if expected.is_none() => {
                Some(uuid::Uuid::nil())
            }
            Err(error) => return Err(error),
        };
        match (recorded, expected) {
            (Some(recorded), Some(expected)) if recorded == expected => report.kept.push(name),
            (None, Some(expected)) => {
                tracing::info!(dir = %dir.display(), topic_id = %kafka_topic_id_string(expected),
                    "adopting a partition directory of the previous version");
                write_partition_metadata(&dir, expected)?;
                report.adopted.push(name);
            }
            (recorded, _) => {
                tracing::warn!(
                    dir = %dir.display(),
                    recorded = ?recorded.map(kafka_topic_id_string),
                    expected = ?expected.map(kafka_topic_id_string),
                    "removing a partition directory of a topic that does not exist \
                     (deleted, or deleted and created again)"
                );
                remove_dir_durably(&dir, recorded)?;
                report.removed.push(name);
            }
        }
    }
    if !report.adopted.is_empty() || !report.removed.is_empty() {
        tracing::info!(
            kept = report.kept.len(),
            adopted = report.adopted.len(),
            removed = report.removed.len(),
            "swept the partition directories"
        );
    }
    Ok(report)
}

/// `<topic>-<partition>` as [`TopicPartition::dir`] names it: the
/// partition is the decimal after the last '-' (topic names may contain
/// '-' and '.'), written as Rust writes an i32 >= 0 (no sign, no leading
/// zero), and the topic is a valid topic name.
pub fn parse_partition_dir_name(name: &str) -> Option<TopicPartition> {
    let (topic, partition) = name.rsplit_once('-')?;
    if partition.is_empty() || !partition.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let partition: i32 = partition.parse().ok()?;
    let topic_partition = TopicPartition::new(topic, partition);
    if topic_partition.to_string() != name || crate::metadata::validate_topic_name(topic).is_err() {
        return None;
    }
    Some(topic_partition)
}

/// `<topic>-<partition>.<anything without '.'>-delete`, as
/// [`delete_dir_path`] names a partition directory being removed: the
/// partition it was.
pub fn parse_delete_dir_name(name: &str) -> Option<TopicPartition> {
    let stem = name.strip_suffix(DELETE_DIR_SUFFIX)?;
    let (partition_dir, unique) = stem.rsplit_once('.')?;
    if unique.is_empty() {
        return None;
    }
    parse_partition_dir_name(partition_dir)
}

/// Write `partition.metadata` into `dir` durably: a temporary file with a
/// name of its own, fsync, rename, fsync of `dir`.
fn write_partition_metadata(dir: &Path, topic_id: uuid::Uuid) -> Result<(), PartitionDirError> {
    static TEMPORARY_COUNT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(PARTITION_METADATA_FILE_NAME);
    let temporary = dir.join(format!(
        "{PARTITION_METADATA_FILE_NAME}.{}-{}.tmp",
        std::process::id(),
        TEMPORARY_COUNT.fetch_add(1, Ordering::Relaxed)
    ));
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PartitionDirError::Io { path, source }
    };
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(&encode_partition_metadata(topic_id))?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)
    })();
    if let Err(error) = written {
        // A name of our own; the log's recovery removes `*.tmp` anyway.
        let _ = std::fs::remove_file(&temporary);
        return Err(io_error(&path)(error));
    }
    sync_dir(dir)
}

/// Remove `dir` as shard/partition.rs's `remove_partition_dir` does, on
/// the calling thread: rename to `<dir>.<id>-delete`, fsync the parent,
/// remove.
fn remove_dir_durably(dir: &Path, recorded: Option<uuid::Uuid>) -> Result<(), PartitionDirError> {
    let doomed: PathBuf = delete_dir_path(dir, recorded.unwrap_or_else(uuid::Uuid::new_v4));
    remove_dir_if_present(&doomed)?;
    std::fs::rename(dir, &doomed).map_err(|source| PartitionDirError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    remove_dir_if_present(&doomed)
}

fn sync_dir(dir: &Path) -> Result<(), PartitionDirError> {
    std::fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| PartitionDirError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::shard::partition::{decode_partition_metadata, parse_kafka_topic_id};

    #[test]
    fn partition_dir_names_parse_from_the_last_dash() {
        let parsed = |name| parse_partition_dir_name(name).map(|tp| tp.to_string());
        assert_eq!(parsed("orders-0").as_deref(), Some("orders-0"));
        let dashed = parse_partition_dir_name("my-topic.v2-17").unwrap();
        assert_eq!(dashed.topic.as_ref(), "my-topic.v2");
        assert_eq!(dashed.partition, 17);
        assert_eq!(
            parse_partition_dir_name("__consumer_offsets-49")
                .unwrap()
                .partition,
            49
        );
        assert_eq!(parsed("a-b-0").as_deref(), Some("a-b-0"));
        // The topic "topic-" is a valid name.
        assert_eq!(parsed("topic--1").as_deref(), Some("topic--1"));
        for not_a_partition in [
            "cluster-metadata.json",
            "sluice.lock",
            "controller",
            "producer-id-block",
            "topic-",
            "-0",
            "topic-+1",
            "topic-01",
            "topic-2147483648",
            "topic-1.tmp",
            "to pic-1",
            "..-1",
            "lost+found",
        ] {
            assert_eq!(parsed(not_a_partition), None, "{not_a_partition}");
        }
    }

    #[test]
    fn delete_dir_names_parse_and_match_what_removal_writes() {
        let id = uuid::Uuid::new_v4();
        let path = delete_dir_path(Path::new("/data/my.topic-name-3"), id);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            name,
            format!("my.topic-name-3.{}-delete", kafka_topic_id_string(id))
        );
        let parsed = parse_delete_dir_name(name).unwrap();
        assert_eq!(parsed.topic.as_ref(), "my.topic-name");
        assert_eq!(parsed.partition, 3);
        // Kafka's own form (a UUID without dashes) parses too.
        assert!(parse_delete_dir_name("t-0.0123456789abcdef0123456789abcdef-delete").is_some());
        for not_deleting in [
            "t-0",
            "t-0-delete",
            "t-0.-delete",
            "t.x-delete",
            "t-0.id-deleted",
        ] {
            assert_eq!(parse_delete_dir_name(not_deleting), None, "{not_deleting}");
        }
    }

    /// Kafka prints a topic id as URL-safe base64 of its 16 bytes without
    /// padding; the file is `version: 0\ntopic_id: <id>`.
    #[test]
    fn partition_metadata_is_kafkas_format() {
        let id = uuid::Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
        // base64url("00112233445566778899aabbccddeeff" as bytes), unpadded.
        assert_eq!(kafka_topic_id_string(id), "ABEiM0RVZneImaq7zN3u_w");
        assert_eq!(
            kafka_topic_id_string(uuid::Uuid::nil()),
            "AAAAAAAAAAAAAAAAAAAAAA"
        );
        assert_eq!(
            kafka_topic_id_string(uuid::Uuid::max()),
            "_____________________w"
        );
        let content = encode_partition_metadata(id);
        assert_eq!(content, b"version: 0\ntopic_id: ABEiM0RVZneImaq7zN3u_w");
        assert_eq!(decode_partition_metadata(&content), Ok(id));
        // Kafka's reader also takes a trailing newline and more whitespace.
        assert_eq!(
            decode_partition_metadata(b"version:  0\ntopic_id:\tABEiM0RVZneImaq7zN3u_w\n"),
            Ok(id)
        );
        for _ in 0..1000 {
            let id = uuid::Uuid::new_v4();
            let text = kafka_topic_id_string(id);
            assert_eq!(text.len(), 22);
            assert_eq!(parse_kafka_topic_id(&text), Some(id), "{text}");
        }
        for bad in [
            &b""[..],
            b"version: 1\ntopic_id: ABEiM0RVZneImaq7zN3u_w",
            b"version: 0",
            b"version:0\ntopic_id: ABEiM0RVZneImaq7zN3u_w",
            b"topic_id: ABEiM0RVZneImaq7zN3u_w\nversion: 0",
            b"version: 0\ntopic_id: ABEiM0RVZneImaq7zN3u_x",
            b"version: 0\ntopic_id: ABEiM0RVZneImaq7zN3u/w",
            b"version: 0\ntopic_id: ABEiM0RVZneImaq7zN3u",
            b"version: 0\ntopic_id: ABEiM0RVZneImaq7zN3u_w\nmore: 1",
            b"version: 0\ntopic_id: 00112233-4455-6677-8899-aabbccddeeff",
        ] {
            assert!(
                decode_partition_metadata(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn topic(held: &[bool]) -> TopicIdentity {
        TopicIdentity {
            id: uuid::Uuid::new_v4(),
            held: held.to_vec(),
        }
    }

    fn make_dir(data_dir: &Path, name: &str, topic_id: Option<uuid::Uuid>) {
        let dir = data_dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("00000000000000000000.log"), b"records").unwrap();
        if let Some(id) = topic_id {
            std::fs::write(
                dir.join(PARTITION_METADATA_FILE_NAME),
                encode_partition_metadata(id),
            )
            .unwrap();
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The sweep keeps matching directories, adopts previous-version ones
    /// of existing partitions, removes orphans and `-delete` leftovers, and
    /// leaves every other entry alone.
    #[test]
    fn the_sweep_keeps_adopts_and_removes_by_topic_id() {
        let data_dir =
            std::env::temp_dir().join(format!("sluice-orphans-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(data_dir.join("controller")).unwrap();
        std::fs::write(data_dir.join("cluster-metadata.json"), b"{}").unwrap();
        std::fs::write(data_dir.join("sluice.lock"), b"1").unwrap();
        std::fs::write(data_dir.join("producer-id-block"), b"1").unwrap();
        std::fs::write(data_dir.join("orders-0.tmp"), b"1").unwrap();
        let live = topic(&[true, true]);
        let legacy = topic(&[true]);
        let elsewhere = topic(&[true, false]);
        let metadata: HashMap<&str, TopicIdentity> = [
            ("live-topic.v1", live.clone()),
            ("again", topic(&[true])),
            ("legacy", legacy.clone()),
            ("elsewhere", elsewhere.clone()),
        ]
        .into();
        make_dir(&data_dir, "live-topic.v1-0", Some(live.id));
        make_dir(&data_dir, "live-topic.v1-1", Some(live.id));
        make_dir(&data_dir, "live-topic.v1-2", Some(live.id));
        make_dir(&data_dir, "again-0", Some(uuid::Uuid::new_v4()));
        // Partition 1 of "elsewhere" has no replica on this broker.
        make_dir(&data_dir, "elsewhere-0", Some(elsewhere.id));
        make_dir(&data_dir, "elsewhere-1", Some(elsewhere.id));
        make_dir(&data_dir, "legacy-0", None);
        make_dir(&data_dir, "legacy-1", None);
        make_dir(&data_dir, "deleted-0", Some(uuid::Uuid::new_v4()));
        make_dir(&data_dir, "deleted-legacy-0", None);
        make_dir(&data_dir, "gone-0.AAAAAAAAAAAAAAAAAAAAAA-delete", None);
        make_dir(&data_dir, "node-1", None);
        std::fs::write(data_dir.join("node-1").join("sluice.lock"), b"").unwrap();

        let report = sweep(&data_dir, &metadata).unwrap();
        assert_eq!(
            report.kept,
            ["elsewhere-0", "live-topic.v1-0", "live-topic.v1-1"]
        );
        assert_eq!(report.adopted, ["legacy-0"]);
        assert_eq!(
            report.removed,
            [
                "again-0",
                "deleted-0",
                "deleted-legacy-0",
                "elsewhere-1",
                "gone-0.AAAAAAAAAAAAAAAAAAAAAA-delete",
                "legacy-1",
                "live-topic.v1-2",
            ]
        );
        assert_eq!(
            names(&data_dir),
            [
                "cluster-metadata.json",
                "controller",
                "elsewhere-0",
                "legacy-0",
                "live-topic.v1-0",
                "live-topic.v1-1",
                "node-1",
                "orders-0.tmp",
                "producer-id-block",
                "sluice.lock",
            ]
        );
        assert_eq!(
            names(&data_dir.join("legacy-0")),
            ["00000000000000000000.log", PARTITION_METADATA_FILE_NAME]
        );
        assert_eq!(
            recorded_topic_id(&data_dir.join("legacy-0")).unwrap(),
            Some(legacy.id)
        );

        // A second sweep changes nothing.
        let again = sweep(&data_dir, &metadata).unwrap();
        assert_eq!(
            again.kept,
            [
                "elsewhere-0",
                "legacy-0",
                "live-topic.v1-0",
                "live-topic.v1-1"
            ]
        );
        assert!(again.adopted.is_empty() && again.removed.is_empty());

        // A damaged file of an existing partition stops the sweep.
        std::fs::write(
            data_dir.join("legacy-0").join(PARTITION_METADATA_FILE_NAME),
            b"version: 0\ntopic_id: ???",
        )
        .unwrap();
        let error = sweep(&data_dir, &metadata).unwrap_err();
        assert!(
            matches!(error, PartitionDirError::Malformed { .. }),
            "{error}"
        );
        assert!(data_dir.join("legacy-0").exists());
        std::fs::remove_dir_all(&data_dir).unwrap();
    }
}
