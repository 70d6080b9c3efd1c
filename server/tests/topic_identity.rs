//! Partition directories carry their topic's id (`partition.metadata`), so
//! a directory that outlived its topic is never served: not after a crash
//! lost the removal of a deleted topic's directories, not when a topic of
//! the same name is created again. Directories of unknown topics and
//! interrupted removals (`-delete`) are removed at start; directories of
//! the previous Sluice version (no `partition.metadata`) of an existing
//! topic are adopted with their data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use support::Broker;
use support::kafka::{self, Record};

fn records(count: usize, tag: &str) -> Vec<Record> {
    (0..count)
        .map(|index| Record {
            key: Some(format!("key-{index}").into_bytes()),
            value: Some(format!("{tag} {index}").into_bytes()),
            headers: Vec::new(),
        })
        .collect()
}

/// DeleteTopics; panics unless the topic was deleted.
fn delete_topic(bootstrap: &str, name: &str) {
    let admin = kafka::admin(bootstrap);
    let results = kafka::block_on(admin.delete_topics(&[name], &kafka::admin_options()))
        .unwrap_or_else(|error| panic!("DeleteTopics {name}: {error}"));
    for result in results {
        if let Err((topic, code)) = result {
            panic!("DeleteTopics {topic}: {code:?}");
        }
    }
}

/// Copy a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Names of the data directory's entries, sorted.
fn entries(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The partition directories of `topic` (and their `-delete` forms).
fn partition_dirs(data_dir: &Path, topic: &str) -> Vec<String> {
    entries(data_dir)
        .into_iter()
        .filter(|name| {
            name.strip_prefix(topic)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|rest| rest.split(['.', '-']).next())
                .is_some_and(|partition| partition.parse::<i32>().is_ok())
        })
        .collect()
}

/// The records the broker serves for `topic`/`partition`, from the start.
fn served(bootstrap: &str, topic: &str, partition: i32) -> Vec<Vec<u8>> {
    kafka::consume_all(bootstrap, topic, partition)
        .into_iter()
        .map(|consumed| consumed.record.value.unwrap_or_default())
        .collect()
}

/// The bug of issue 9: DeleteTopics saved the metadata, then a crash lost
/// the removal of the partition directories; the topic created again under
/// the same name served the deleted topic's records at offsets 0-4. The
/// crash is simulated by copying the directories back after the delete.
#[test]
fn a_topic_created_again_after_a_lost_removal_starts_empty() {
    let mut broker = Broker::start("identity_recreate");
    let bootstrap = broker.bootstrap();
    let data_dir = broker.data_dir().to_path_buf();
    let aside = data_dir.parent().unwrap().join("aside");
    kafka::create_topic(&bootstrap, "t", 2, &[]);
    let placed = kafka::produce_all(&bootstrap, "t", Some(0), &records(5, "old"), &[]);
    assert_eq!(placed.last(), Some(&(0, 4)));
    let old_dirs = partition_dirs(&data_dir, "t");
    assert_eq!(old_dirs, ["t-0", "t-1"]);
    for name in &old_dirs {
        assert!(
            data_dir.join(name).join("partition.metadata").exists(),
            "{name} has no partition.metadata"
        );
        copy_tree(&data_dir.join(name), &aside.join(name));
    }

    delete_topic(&bootstrap, "t");
    broker.stop();
    // The removal was lost in a crash: the directories are back.
    for name in &old_dirs {
        copy_tree(&aside.join(name), &data_dir.join(name));
    }
    broker.start_again();
    kafka::create_topic(&bootstrap, "t", 2, &[]);

    for partition in 0..2 {
        assert_eq!(
            kafka::watermarks(&bootstrap, "t", partition),
            (0, 0),
            "t-{partition} of the new topic is not empty\n{}",
            broker.stderr_tail()
        );
        assert!(served(&bootstrap, "t", partition).is_empty());
    }
    let placed = kafka::produce_all(&bootstrap, "t", Some(0), &records(1, "new"), &[]);
    assert_eq!(
        placed,
        [(0, 0)],
        "the new topic's first record is at offset 0"
    );
    assert_eq!(served(&bootstrap, "t", 0), [b"new 0".to_vec()]);

    // Only the new topic's directories are on disk, recording its id.
    assert_eq!(partition_dirs(&data_dir, "t"), ["t-0", "t-1"]);
    for name in &old_dirs {
        let old = std::fs::read(aside.join(name).join("partition.metadata")).unwrap();
        let new = std::fs::read(data_dir.join(name).join("partition.metadata")).unwrap();
        assert_ne!(old, new, "{name} still records the deleted topic's id");
    }
    broker.restart();
    assert_eq!(served(&bootstrap, "t", 0), [b"new 0".to_vec()]);
}

/// A directory whose topic is not in the metadata (its deletion was lost
/// in a crash) and a `-delete` leftover (a removal interrupted) are removed
/// at start; the other entries of the data directory stay.
#[test]
fn directories_of_unknown_topics_and_delete_leftovers_are_removed_at_start() {
    let mut broker = Broker::start("identity_orphans");
    let bootstrap = broker.bootstrap();
    let data_dir = broker.data_dir().to_path_buf();
    kafka::create_topic(&bootstrap, "kept", 1, &[]);
    kafka::create_topic(&bootstrap, "gone.topic-x", 1, &[]);
    kafka::produce_all(&bootstrap, "kept", Some(0), &records(3, "kept"), &[]);
    kafka::produce_all(&bootstrap, "gone.topic-x", Some(0), &records(3, "g"), &[]);
    let gone = data_dir.join("gone.topic-x-0");
    let saved = data_dir.parent().unwrap().join("gone-saved");
    copy_tree(&gone, &saved);
    delete_topic(&bootstrap, "gone.topic-x");
    broker.stop();

    copy_tree(&saved, &gone);
    // A previous-version directory of a topic that does not exist.
    let legacy_orphan = data_dir.join("never-created-0");
    copy_tree(&saved, &legacy_orphan);
    std::fs::remove_file(legacy_orphan.join("partition.metadata")).unwrap();
    // A removal a crash interrupted.
    let leftover: PathBuf = data_dir.join("kept-0.AAAAAAAAAAAAAAAAAAAAAA-delete");
    copy_tree(&saved, &leftover);
    // Not partition directories: left alone.
    std::fs::create_dir_all(data_dir.join("notes")).unwrap();
    std::fs::write(data_dir.join("notes-1"), b"a file, not a directory").unwrap();
    let before = entries(&data_dir);

    broker.start_again();
    let after = entries(&data_dir);
    for removed in [
        "gone.topic-x-0",
        "never-created-0",
        "kept-0.AAAAAAAAAAAAAAAAAAAAAA-delete",
    ] {
        assert!(before.contains(&removed.to_string()));
        assert!(
            !after.contains(&removed.to_string()),
            "{removed} is still in the data directory: {after:?}\n{}",
            broker.stderr_tail()
        );
    }
    for kept in ["kept-0", "notes", "notes-1", "sluice.lock", "controller"] {
        assert!(
            after.contains(&kept.to_string()),
            "{kept} was removed: {after:?}"
        );
    }
    assert!(
        !after.iter().any(|name| name.ends_with("-delete")),
        "{after:?}"
    );
    assert_eq!(
        served(&bootstrap, "kept", 0),
        [b"kept 0".to_vec(), b"kept 1".to_vec(), b"kept 2".to_vec()]
    );
    let counts = kafka::topic_partition_counts(&bootstrap).unwrap();
    assert!(!counts.contains_key("gone.topic-x"), "{counts:?}");
    assert!(!counts.contains_key("never-created"), "{counts:?}");
}

/// A data directory of the previous version has no `partition.metadata`:
/// the directories of existing topics are adopted (the file is written with
/// the topic's id) and keep their records across restarts.
#[test]
fn previous_version_directories_of_existing_topics_are_adopted_with_their_data() {
    let mut broker = Broker::start("identity_upgrade");
    let bootstrap = broker.bootstrap();
    let data_dir = broker.data_dir().to_path_buf();
    kafka::create_topic(&bootstrap, "legacy-topic", 2, &[]);
    let sent = records(20, "legacy");
    kafka::produce_all(&bootstrap, "legacy-topic", Some(1), &sent, &[]);
    broker.stop();
    let files: Vec<PathBuf> = ["legacy-topic-0", "legacy-topic-1"]
        .iter()
        .map(|name| data_dir.join(name).join("partition.metadata"))
        .collect();
    let written: Vec<Vec<u8>> = files
        .iter()
        .map(|file| std::fs::read(file).unwrap())
        .collect();
    assert!(
        String::from_utf8_lossy(&written[0]).starts_with("version: 0\ntopic_id: "),
        "{:?}",
        String::from_utf8_lossy(&written[0])
    );
    // As the previous version left it.
    for file in &files {
        std::fs::remove_file(file).unwrap();
    }

    broker.start_again();
    let expected: Vec<Vec<u8>> = sent
        .iter()
        .map(|record| record.value.clone().unwrap())
        .collect();
    assert_eq!(served(&bootstrap, "legacy-topic", 1), expected);
    for (file, before) in files.iter().zip(&written) {
        assert_eq!(
            &std::fs::read(file).unwrap(),
            before,
            "{} does not record the topic's id again",
            file.display()
        );
    }
    broker.restart();
    assert_eq!(served(&bootstrap, "legacy-topic", 1), expected);
    let placed = kafka::produce_all(
        &bootstrap,
        "legacy-topic",
        Some(1),
        &records(1, "more"),
        &[],
    );
    assert_eq!(placed, [(1, 20)]);
}

/// Metadata asked by a topic id no topic has (v12+) answers
/// UNKNOWN_TOPIC_ID, as Kafka (found by a read-only audit: it answered
/// UNKNOWN_TOPIC_OR_PARTITION); an existing topic's id names it.
#[test]
fn metadata_by_an_unknown_topic_id_is_unknown_topic_id() {
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use sluice_server::admin::client::Connection;

    const UNKNOWN_TOPIC_ID: i16 = 100;
    let broker = Broker::start("metadata-by-id");
    let bootstrap = broker.bootstrap();
    kafka::create_topic(&bootstrap, "named", 1, &[]);
    let mut connection = Connection::open(&bootstrap).expect("connecting");
    let by_name = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            kafka_protocol::protocol::StrBytes::from_static_str("named").into(),
        ))]))
        .with_allow_auto_topic_creation(false);
    let (named, _) = connection.call(&by_name, 12..=12).expect("Metadata");
    let id = named.topics[0].topic_id;
    let by_id = |topic_id| {
        MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default()
                    .with_topic_id(topic_id)
                    .with_name(None),
            ]))
            .with_allow_auto_topic_creation(false)
    };
    let (found, _) = connection.call(&by_id(id), 12..=12).expect("Metadata");
    assert_eq!(found.topics[0].error_code, 0);
    assert_eq!(
        found.topics[0].name.as_ref().map(|name| name.0.as_str()),
        Some("named")
    );
    let unknown = uuid::Uuid::from_u128(id.as_u128() ^ 1);
    let (missing, _) = connection.call(&by_id(unknown), 12..=12).expect("Metadata");
    assert_eq!(missing.topics[0].error_code, UNKNOWN_TOPIC_ID);
}
