//! The controller service over real TCP on 127.0.0.1: voters on file
//! stores in temp dirs, an observer broker, leader failover, restart from
//! the data dir, fencing, garbage on the peer port, and a single voter
//! with no peers. Ports are picked free by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_server::controller::BrokerId;
use sluice_server::controller::quorum_controller::CreateTopicRequest;
use sluice_server::controller::records::Listener;
use sluice_server::controller::rpc::{ErrorKind, RequestError};
use sluice_server::controller::service::{ControllerHandle, ServiceConfig, block_on, start};
use sluice_server::controller::types::{LeaderEpoch, PartitionEpoch, PartitionIndex, TopicId};

fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("controller_service")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free loopback address, picked as the broker tests pick theirs
/// (outside the kernel's ephemeral range; see `support::reserve_port`).
fn free_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::reserve_port()))
}

fn config(
    node: i32,
    voters: &[(BrokerId, String)],
    listen: Option<SocketAddr>,
    dir: &std::path::Path,
) -> ServiceConfig {
    let mut config = ServiceConfig::single_node(
        BrokerId(node),
        dir.join(format!("node-{node}")),
        vec![Listener {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 19092 + node as u16,
        }],
        2,
    );
    config.voters = voters.to_vec();
    config.listen = listen;
    config.tick_interval_ms = 20;
    config.heartbeat_interval_ms = 200;
    config.session_timeout_ms = 1500;
    config.request_timeout_ms = 15_000;
    config.snapshot_interval_entries = 16;
    config
}

fn topic(name: &str) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partition_count: 2,
        replication_factor: 1,
        assignment: None,
        configs: vec![("retention.ms".into(), "60000".into())],
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every node shows the same image (same offset), and it holds every
/// acknowledged topic exactly once with the id it was acknowledged with.
fn converge(nodes: &[&ControllerHandle], acknowledged: &BTreeMap<String, TopicId>) {
    // An acknowledgement can come from a leader that stopped right after:
    // the others learn that commit from the next leader, so wait for it.
    wait_until("images to converge", Duration::from_secs(20), || {
        let first = nodes[0].image();
        nodes.iter().all(|node| *node.image() == *first)
            && acknowledged
                .keys()
                .all(|name| first.topic_by_name(name).is_some())
    });
    let image = nodes[0].image();
    for (name, topic_id) in acknowledged {
        let topic = image
            .topic_by_name(name)
            .unwrap_or_else(|| panic!("acknowledged topic {name} is missing"));
        assert_eq!(topic.topic_id, *topic_id, "{name} has its acknowledged id");
        assert!(topic.partitions.len() >= 2);
    }
    let named = image
        .topics()
        .values()
        .filter(|topic| acknowledged.contains_key(&topic.name))
        .count();
    assert_eq!(
        named,
        acknowledged.len(),
        "each acknowledged topic exactly once"
    );
}

fn create(
    handle: &ControllerHandle,
    name: &str,
    acknowledged: &mut BTreeMap<String, TopicId>,
    everyone: &[&ControllerHandle],
) {
    let created = block_on(handle.create_topic(topic(name)))
        .unwrap_or_else(|error| panic!("create {name} via node {}: {error}", handle.node_id()));
    acknowledged.insert(name.into(), created.topic_id);
    for node in everyone {
        block_on(node.wait_applied(created.offset)).unwrap();
        assert!(
            node.image().topic_by_name(name).is_some(),
            "node {} shows {name} once it applied {}",
            node.node_id(),
            created.offset
        );
    }
}

#[test]
fn a_single_voter_creates_topics_with_no_peers_and_restarts_with_them() {
    let dir = temp_dir("single");
    let config = ServiceConfig::single_node(
        BrokerId(0),
        dir.clone(),
        vec![Listener {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
        }],
        4,
    );
    assert!(config.listen.is_none(), "no extra port for a single node");
    let handle = start(config.clone()).unwrap();
    assert!(handle.wait_ready(Duration::from_secs(10)));
    assert_eq!(handle.active_controller(), Some(BrokerId(0)));
    // Registered is not yet placeable: its first heartbeat unfences it (a
    // create before that found 0 live brokers on a loaded machine).
    wait_until("the broker unfenced", Duration::from_secs(10), || {
        handle.image().active_brokers().count() == 1
    });
    let mut acknowledged = BTreeMap::new();
    for index in 0..5 {
        create(
            &handle,
            &format!("solo-{index}"),
            &mut acknowledged,
            &[&handle],
        );
    }
    let duplicate = block_on(handle.create_topic(topic("solo-0")));
    assert!(matches!(
        duplicate,
        Err(RequestError::Rejected {
            kind: ErrorKind::TopicAlreadyExists,
            ..
        })
    ));
    let offset = block_on(handle.create_partitions("solo-1", 4, None)).unwrap();
    block_on(handle.wait_applied(offset)).unwrap();
    assert_eq!(
        handle
            .image()
            .topic_by_name("solo-1")
            .unwrap()
            .partitions
            .len(),
        4
    );
    let block = block_on(handle.allocate_producer_ids()).unwrap();
    assert_eq!(block.count, 1000);
    let offset = block_on(handle.delete_topic("solo-4")).unwrap();
    block_on(handle.wait_applied(offset)).unwrap();
    acknowledged.remove("solo-4");
    let image = handle.image();
    assert!(image.topic_by_name("solo-4").is_none());
    handle.shutdown();

    // Controlled shutdown moved the RF 1 leaderships away (epochs moved);
    // the topics and their ids are what must come back.
    let names = |image: &sluice_server::controller::MetadataImage| -> Vec<(String, TopicId)> {
        image
            .topics()
            .values()
            .map(|topic| (topic.name.clone(), topic.topic_id))
            .collect()
    };
    let before = names(&image);
    let handle = start(config).unwrap();
    assert!(handle.wait_ready(Duration::from_secs(10)));
    assert_eq!(
        names(&handle.image()),
        before,
        "the restart replays the log"
    );
    converge(&[&handle], &acknowledged);
    wait_until("the broker unfenced again", Duration::from_secs(10), || {
        handle.image().active_brokers().count() == 1
    });
    create(&handle, "solo-after", &mut acknowledged, &[&handle]);
    handle.stop();
}

#[test]
fn three_voters_fail_over_restart_and_an_observer_follows() {
    let dir = temp_dir("three");
    let addresses: Vec<SocketAddr> = (0..3).map(|_| free_address()).collect();
    let voters: Vec<(BrokerId, String)> = addresses
        .iter()
        .enumerate()
        .map(|(index, address)| (BrokerId(index as i32), address.to_string()))
        .collect();
    let mut nodes: Vec<Option<ControllerHandle>> = (0..3)
        .map(|index| {
            Some(
                start(config(
                    index,
                    &voters,
                    Some(addresses[index as usize]),
                    &dir,
                ))
                .unwrap(),
            )
        })
        .collect();
    let observer = start(config(3, &voters, None, &dir)).unwrap();

    // One leader, every broker registered and known to every image.
    wait_until(
        "a leader all voters agree on",
        Duration::from_secs(10),
        || {
            let leaders: Vec<_> = nodes
                .iter()
                .map(|node| node.as_ref().unwrap().active_controller())
                .collect();
            leaders[0].is_some() && leaders.iter().all(|leader| *leader == leaders[0])
        },
    );
    for node in nodes.iter().flatten().chain([&observer]) {
        assert!(
            node.wait_ready(Duration::from_secs(10)),
            "node {} registers",
            node.node_id()
        );
    }
    wait_until("every broker unfenced", Duration::from_secs(10), || {
        observer.image().active_brokers().count() == 4
    });

    // Creates through every node: the leader, followers (forwarded) and
    // the observer (forwarded over the peer protocol).
    let mut acknowledged = BTreeMap::new();
    {
        let everyone: Vec<&ControllerHandle> = nodes.iter().flatten().chain([&observer]).collect();
        for (index, node) in everyone.iter().enumerate() {
            for round in 0..3 {
                create(
                    node,
                    &format!("t-{index}-{round}"),
                    &mut acknowledged,
                    &everyone,
                );
            }
        }
        converge(&everyone, &acknowledged);
    }

    // Garbage on a peer port closes that connection; the service goes on.
    let leader = nodes[0].as_ref().unwrap().active_controller().unwrap();
    for address in &addresses {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n")
            .unwrap();
        let mut buffer = [0u8; 16];
        let read = stream.read(&mut buffer);
        assert!(
            matches!(read, Ok(0)) || read.is_err(),
            "the connection is closed, not answered: {read:?}"
        );
    }
    {
        let everyone: Vec<&ControllerHandle> = nodes.iter().flatten().chain([&observer]).collect();
        create(&observer, "after-garbage", &mut acknowledged, &everyone);
    }

    // Stop the leader: another voter takes over and creates go on.
    let stopped = leader.0 as usize;
    nodes[stopped].take().unwrap().stop();
    let survivors: Vec<&ControllerHandle> = nodes.iter().flatten().chain([&observer]).collect();
    wait_until("a new leader", Duration::from_secs(10), || {
        survivors[0]
            .active_controller()
            .is_some_and(|id| id != leader)
    });
    for (index, node) in survivors.iter().enumerate() {
        create(
            node,
            &format!("failover-{index}"),
            &mut acknowledged,
            &survivors,
        );
    }

    // The stopped broker misses its session and is fenced.
    wait_until(
        "the stopped broker to be fenced",
        Duration::from_secs(15),
        || {
            survivors[0]
                .image()
                .broker(leader)
                .is_some_and(|broker| broker.fenced)
        },
    );
    let fenced_at = survivors[0].image();
    for topic in fenced_at.topics().values() {
        for partition in &topic.partitions {
            assert_ne!(
                partition.leader,
                Some(leader),
                "a fenced broker leads nothing"
            );
        }
    }

    // Restart it from its data dir: it catches up to the same image and
    // registers again.
    nodes[stopped] =
        Some(start(config(leader.0, &voters, Some(addresses[stopped]), &dir)).unwrap());
    let everyone: Vec<&ControllerHandle> = nodes.iter().flatten().chain([&observer]).collect();
    assert!(
        nodes[stopped]
            .as_ref()
            .unwrap()
            .wait_ready(Duration::from_secs(15))
    );
    wait_until(
        "the restarted broker unfenced",
        Duration::from_secs(15),
        || {
            everyone[0]
                .image()
                .broker(leader)
                .is_some_and(|broker| !broker.fenced)
        },
    );
    create(
        nodes[stopped].as_ref().unwrap(),
        "after-restart",
        &mut acknowledged,
        &everyone,
    );
    converge(&everyone, &acknowledged);

    for node in everyone {
        node.stop();
    }
}

#[test]
fn a_silent_observer_is_fenced_after_its_session() {
    let dir = temp_dir("fence");
    let address = free_address();
    let voters = vec![(BrokerId(0), address.to_string())];
    let voter = start(config(0, &voters, Some(address), &dir)).unwrap();
    let observer = start(config(1, &voters, None, &dir)).unwrap();
    assert!(voter.wait_ready(Duration::from_secs(10)));
    assert!(observer.wait_ready(Duration::from_secs(10)));
    wait_until("the observer unfenced", Duration::from_secs(10), || {
        voter
            .image()
            .broker(BrokerId(1))
            .is_some_and(|broker| !broker.fenced)
    });
    // An RF 1 topic on both brokers, then the observer goes silent.
    let created = block_on(voter.create_topic(CreateTopicRequest {
        partition_count: 4,
        ..topic("spread")
    }))
    .unwrap();
    block_on(observer.wait_applied(created.offset)).unwrap();
    observer.stop();
    let stopped_at = Instant::now();
    wait_until(
        "the silent observer fenced",
        Duration::from_secs(10),
        || {
            voter
                .image()
                .broker(BrokerId(1))
                .is_some_and(|broker| broker.fenced)
        },
    );
    assert!(
        stopped_at.elapsed() >= Duration::from_millis(1000),
        "not before its session ran out"
    );
    let image = voter.image();
    let partitions = &image.topic_by_name("spread").unwrap().partitions;
    assert!(partitions.iter().all(|p| p.leader != Some(BrokerId(1))));
    assert!(
        partitions.iter().any(|p| p.leader.is_none()),
        "its RF 1 partitions are offline"
    );
    voter.stop();
}

#[test]
fn stopping_the_leader_during_a_burst_of_creates_loses_no_acknowledged_topic() {
    let dir = temp_dir("burst");
    let addresses: Vec<SocketAddr> = (0..3).map(|_| free_address()).collect();
    let voters: Vec<(BrokerId, String)> = addresses
        .iter()
        .enumerate()
        .map(|(index, address)| (BrokerId(index as i32), address.to_string()))
        .collect();
    let nodes: Vec<ControllerHandle> = (0..3)
        .map(|index| {
            start(config(
                index,
                &voters,
                Some(addresses[index as usize]),
                &dir,
            ))
            .unwrap()
        })
        .collect();
    let observer = start(config(3, &voters, None, &dir)).unwrap();
    for node in nodes.iter().chain([&observer]) {
        assert!(node.wait_ready(Duration::from_secs(10)));
    }
    let leader = nodes[0].active_controller().unwrap();
    let callers: Vec<ControllerHandle> = nodes
        .iter()
        .filter(|node| node.node_id() != leader)
        .chain([&observer])
        .cloned()
        .collect();
    let workers: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(worker, handle)| {
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                let mut already = Vec::new();
                for round in 0..40 {
                    let name = format!("burst-{worker}-{round}");
                    match block_on(handle.create_topic(topic(&name))) {
                        Ok(created) => acknowledged.push((name, created.topic_id)),
                        // A retry after the first attempt committed.
                        Err(RequestError::Rejected {
                            kind: ErrorKind::TopicAlreadyExists,
                            ..
                        }) => already.push(name),
                        Err(error) => panic!("create {name}: {error}"),
                    }
                }
                (acknowledged, already)
            })
        })
        .collect();
    // Stop the leader in the middle of the burst.
    wait_until("the burst to be under way", Duration::from_secs(10), || {
        observer.image().topics().len() >= 15
    });
    nodes[leader.0 as usize].stop();
    let stopped_with = observer.image().topics().len();
    let mut acknowledged = BTreeMap::new();
    let mut already = Vec::new();
    for worker in workers {
        let (acked, existing) = worker.join().unwrap();
        acknowledged.extend(acked);
        already.extend(existing);
    }
    let survivors: Vec<&ControllerHandle> = nodes
        .iter()
        .filter(|node| node.node_id() != leader)
        .chain([&observer])
        .collect();
    converge(&survivors, &acknowledged);
    let image = survivors[0].image();
    for name in &already {
        assert!(image.topic_by_name(name).is_some(), "{name} exists");
    }
    assert_eq!(acknowledged.len() + already.len(), 120);
    assert!(stopped_with < 120, "the leader stopped during the burst");
    for node in survivors {
        node.stop();
    }
}

#[test]
fn alter_partition_is_forwarded_checked_and_the_preferred_leader_returns() {
    let dir = temp_dir("alter");
    let address = free_address();
    let voters = vec![(BrokerId(0), address.to_string())];
    let mut voter_config = config(0, &voters, Some(address), &dir);
    voter_config.leader_imbalance_check_interval_ms = 300;
    let voter = start(voter_config).unwrap();
    let one = start(config(1, &voters, None, &dir)).unwrap();
    let mut two = start(config(2, &voters, None, &dir)).unwrap();
    for node in [&voter, &one, &two] {
        assert!(node.wait_ready(Duration::from_secs(10)));
    }
    wait_until("every broker unfenced", Duration::from_secs(10), || {
        voter.image().active_brokers().count() == 3
    });
    // Broker 2 (an observer: its requests go over the peer protocol) is
    // the preferred leader.
    let created = block_on(voter.create_topic(CreateTopicRequest {
        partition_count: 1,
        replication_factor: 3,
        assignment: Some(vec![vec![BrokerId(2), BrokerId(1), BrokerId(0)]]),
        ..topic("altered")
    }))
    .unwrap();
    let topic_id = created.topic_id;
    block_on(two.wait_applied(created.offset)).unwrap();
    let partition = PartitionIndex(0);
    let shrink = || {
        two.alter_partition(
            topic_id,
            partition,
            LeaderEpoch(0),
            PartitionEpoch(0),
            vec![BrokerId(2), BrokerId(1)],
        )
    };
    let reply = block_on(shrink()).unwrap();
    assert_eq!(reply.isr, vec![BrokerId(2), BrokerId(1)]);
    assert_eq!(
        (reply.leader_epoch, reply.partition_epoch),
        (LeaderEpoch(0), PartitionEpoch(1))
    );
    block_on(two.wait_applied(reply.offset)).unwrap();
    let state = two.image().partition(topic_id, partition).unwrap().clone();
    assert_eq!(state.isr, reply.isr);
    assert_eq!(state.partition_epoch, PartitionEpoch(1));
    // The same request again (a retry after a lost answer): the same state.
    let again = block_on(shrink()).unwrap();
    assert_eq!(
        (again.isr, again.partition_epoch),
        (reply.isr.clone(), PartitionEpoch(1))
    );
    // A stale partition epoch, and a broker that does not lead.
    let stale = block_on(two.alter_partition(
        topic_id,
        partition,
        LeaderEpoch(0),
        PartitionEpoch(0),
        vec![BrokerId(2)],
    ));
    assert_eq!(
        stale.unwrap_err().kind(),
        Some(ErrorKind::InvalidUpdateVersion)
    );
    let not_leader = block_on(one.alter_partition(
        topic_id,
        partition,
        LeaderEpoch(0),
        PartitionEpoch(1),
        vec![BrokerId(1), BrokerId(2)],
    ));
    assert_eq!(
        not_leader.unwrap_err().kind(),
        Some(ErrorKind::NotLeaderOrFollower)
    );

    // Broker 2 goes silent: fenced, broker 1 leads with ISR [1].
    two.stop();
    wait_until("broker 2 fenced", Duration::from_secs(10), || {
        voter
            .image()
            .partition(topic_id, partition)
            .is_some_and(|state| state.leader == Some(BrokerId(1)))
    });
    // It comes back, and the new leader adds it to the ISR again.
    two = start(config(2, &voters, None, &dir)).unwrap();
    assert!(two.wait_ready(Duration::from_secs(10)));
    wait_until("broker 2 unfenced", Duration::from_secs(10), || {
        voter.image().active_brokers().count() == 3
    });
    let state = voter
        .image()
        .partition(topic_id, partition)
        .unwrap()
        .clone();
    assert_eq!(state.isr, vec![BrokerId(1)]);
    let reply = block_on(one.alter_partition(
        topic_id,
        partition,
        state.leader_epoch,
        state.partition_epoch,
        vec![BrokerId(1), BrokerId(2)],
    ))
    .unwrap();
    assert_eq!(reply.leader_epoch, state.leader_epoch);
    // The periodic rebalance gives the partition back to broker 2.
    wait_until("the preferred leader back", Duration::from_secs(10), || {
        voter
            .image()
            .partition(topic_id, partition)
            .is_some_and(|state| state.leader == Some(BrokerId(2)))
    });
    let state = voter
        .image()
        .partition(topic_id, partition)
        .unwrap()
        .clone();
    assert_eq!(state.leader_epoch.0, reply.leader_epoch.0 + 1);
    for node in [&voter, &one, &two] {
        node.stop();
    }
}
