//! A 3-broker cluster whose inter-broker traffic is authenticated
//! (docs/decisions/0014-inter-broker-auth.md): controller and replication
//! connections prove the cluster's secret (`--inter-broker-secret-file`),
//! and the brokers' Kafka requests to each other (transaction markers,
//! KIP-890 verification) go over a SASL_SSL listener
//! (`--inter-broker-listener-name`) as the SCRAM user `broker`, a super
//! user, while the authorizer refuses the same calls from a registered
//! broker's address without that login.
//!
//! Shown with real processes and librdkafka: an RF=3 topic replicates
//! (full ISRs, acks=all) and transactions spanning partitions led by all
//! three brokers commit and abort; peers without the secret (a bare
//! frame, a made-up proof, the wrong secret) are refused on the
//! controller and replication ports while the cluster goes on; a broker
//! restarted with the wrong secret stays out of the ISR and comes back
//! once given the right one.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, RequestKind, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_server::peer::auth::PeerSecret;
use sluice_server::peer::frame::encode_frame;
use sluice_server::peer::{PeerError, kind};
use support::cluster::{Cluster, wait_until};
use support::{certs, kafka, require_tool, reserve_port, run_with_timeout, wire};

const TOPIC: &str = "ib-auth";
const PARTITIONS: i32 = 6;
const SECRET: &str = "5f1d0c3e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d";
const WRONG_SECRET: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const BROKER_USER: &str = "broker";
const BROKER_PASSWORD: &str = "inter-broker-test-password";
const TIMEOUT: Duration = Duration::from_secs(60);
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// CLUSTER_AUTHORIZATION_FAILED.
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

struct SecuredCluster {
    cluster: Cluster,
    dir: PathBuf,
    replication_ports: Vec<u16>,
}

impl SecuredCluster {
    fn start() -> Option<SecuredCluster> {
        let openssl = require_tool("openssl")?;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("inter-broker-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        certs::make_certificates(&openssl, &dir, "unused");
        for node in 1..=3 {
            std::fs::write(dir.join(format!("secret-{node}")), format!("{SECRET}\n")).unwrap();
        }
        std::fs::write(dir.join("broker-password"), BROKER_PASSWORD).unwrap();
        let file = |name: &str| dir.join(name).display().to_string();
        let secure_ports: Vec<u16> = (0..3).map(|_| reserve_port()).collect();
        let replication_ports: Vec<u16> = (0..3).map(|_| reserve_port()).collect();
        let common = [
            "--broker-heartbeat-interval-ms",
            "500",
            "--replica-lag-time-max-ms",
            "3000",
            "--listener-security-protocol-map",
            "PLAINTEXT:PLAINTEXT,SECURE:SASL_SSL",
            "--ssl-certificate",
            &file("server.pem"),
            "--ssl-key",
            &file("server.key"),
            "--inter-broker-listener-name",
            "SECURE",
            "--inter-broker-ssl-ca",
            &file("ca.pem"),
            "--inter-broker-sasl-mechanism",
            "SCRAM-SHA-512",
            "--inter-broker-sasl-username",
            BROKER_USER,
            "--inter-broker-sasl-password-file",
            &file("broker-password"),
            "--authorizer",
            "standard",
            "--super-users",
            "User:broker",
            // Topics, groups and transactional ids stay open to the test's
            // PLAINTEXT clients; the cluster resource gets an ACL below,
            // after which only `broker` may send the brokers' calls.
            "--allow-everyone-if-no-acl-found",
            "true",
        ]
        .map(str::to_string);
        let common: Vec<&str> = common.iter().map(String::as_str).collect();
        let node_args = |node: i32| {
            let index = usize::try_from(node - 1).unwrap();
            vec![
                "--listeners".to_string(),
                format!("SECURE://127.0.0.1:{}", secure_ports[index]),
                "--replication-listen".to_string(),
                format!("127.0.0.1:{}", replication_ports[index]),
                "--inter-broker-secret-file".to_string(),
                file(&format!("secret-{node}")),
            ]
        };
        let mut cluster = Cluster::start_with_node_args("ib-auth", 3, &common, &node_args);
        // The brokers' own user goes in offline (nobody may create users
        // yet); once node 1 is back it proposes it to the metadata log.
        cluster.stop(1);
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args([
                "user",
                "bootstrap",
                BROKER_USER,
                "--password",
                BROKER_PASSWORD,
            ])
            .args(["--mechanism", "SCRAM-SHA-512", "--data-dir"])
            .arg(cluster.data_dir(1));
        let output = run_with_timeout(command, TIMEOUT, "sluice user bootstrap");
        assert!(
            output.status.success(),
            "sluice user bootstrap: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.start_again(1);
        let secured = SecuredCluster {
            cluster,
            dir,
            replication_ports,
        };
        for node in 1..=3 {
            wait_until(
                &format!("node {node} knows the user {BROKER_USER}"),
                TIMEOUT,
                || {
                    let output = secured.sluice(node, &["user", "list"]);
                    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
                    if output.status.success() && stdout.contains(BROKER_USER) {
                        Ok(())
                    } else {
                        Err(format!(
                            "{stdout}{}",
                            String::from_utf8_lossy(&output.stderr)
                        ))
                    }
                },
            );
        }
        // An ACL on the cluster resource: from now on nobody but the super
        // user has CLUSTER_ACTION (allow-everyone applies to resources no
        // ACL names).
        let output = secured.sluice(
            1,
            &[
                "acl",
                "create",
                "--allow-principal",
                "User:ops",
                "--operation",
                "Describe",
                "--cluster",
            ],
        );
        assert!(
            output.status.success(),
            "acl create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(secured)
    }

    /// `sluice ARGS --bootstrap` node `node`'s PLAINTEXT listener.
    fn sluice(&self, node: i32, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(args)
            .args(["--bootstrap", &self.cluster.broker(node).bootstrap()])
            .env_remove("SLUICE_PROFILE")
            .env("XDG_CONFIG_HOME", &self.dir);
        run_with_timeout(command, TIMEOUT, &format!("sluice {args:?}"))
    }

    fn secret_file(&self, node: i32) -> PathBuf {
        self.dir.join(format!("secret-{node}"))
    }
}

impl Drop for SecuredCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One acks=all record `{prefix}-{partition}` to each partition.
fn produce_to_every_partition(bootstrap: &str, prefix: &str) {
    for partition in 0..PARTITIONS {
        let record = kafka::Record {
            key: None,
            value: Some(format!("{prefix}-{partition}").into_bytes()),
            headers: Vec::new(),
        };
        kafka::produce_all(
            bootstrap,
            TOPIC,
            Some(partition),
            &[record],
            &[("acks", "all")],
        );
    }
}

fn transactional_producer(bootstrap: &str, id: &str) -> BaseProducer {
    let producer: BaseProducer = kafka::config(bootstrap)
        .set("transactional.id", id)
        .create()
        .expect("creating a transactional producer");
    producer
        .init_transactions(TXN_TIMEOUT)
        .unwrap_or_else(|error| panic!("init_transactions({id}): {error}"));
    producer
}

fn send(producer: &BaseProducer, partition: i32, value: &str) {
    let record = BaseRecord::<(), str>::to(TOPIC)
        .partition(partition)
        .payload(value);
    producer
        .send(record)
        .unwrap_or_else(|(error, _)| panic!("send to {TOPIC}/{partition}: {error}"));
}

/// Every value of the topic, read to the end its isolation level allows.
fn read_all(bootstrap: &str, committed: bool) -> BTreeSet<(i32, String)> {
    kafka::read_values(bootstrap, TOPIC, PARTITIONS, committed)
        .into_iter()
        .collect()
}

/// Whether the peer at `port` closes a connection that sent `bytes`
/// (within a few seconds), having answered nothing but `allowed` bytes.
fn closes_after(port: u16, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(bytes).map_err(|error| error.to_string())?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => Ok(answer),
        Err(error) => Err(format!("still open after 15 s: {error}")),
    }
}

/// Send one WriteTxnMarkers over `node`'s PLAINTEXT listener, from the
/// address every broker registered (127.0.0.1); the partition's error.
fn marker_from_a_brokers_address(cluster: &Cluster, node: i32) -> i16 {
    let mut stream = wire::connect(cluster.broker(node).address());
    let request = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(4242.into())
            .with_producer_epoch(0)
            .with_transaction_result(false)
            .with_coordinator_epoch(0)
            .with_topics(vec![
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_indexes(vec![0]),
            ]),
    ]);
    let mut body = wire::call(
        &mut stream,
        ApiKey::WriteTxnMarkers,
        1,
        RequestKind::WriteTxnMarkers(request),
    );
    let response = WriteTxnMarkersResponse::decode(&mut body, 1).unwrap();
    response.markers[0].topics[0].partitions[0].error_code
}

#[test]
fn a_cluster_with_authenticated_inter_broker_traffic_replicates_and_commits_transactions() {
    let Some(mut secured) = SecuredCluster::start() else {
        return;
    };
    let bootstrap = secured.cluster.bootstrap();
    kafka::create_topic_replicated(&bootstrap, TOPIC, PARTITIONS, 3, &[]);
    let states = secured
        .cluster
        .wait_for_full_isr(TOPIC, PARTITIONS as usize, TIMEOUT);
    let leaders: BTreeSet<i32> = states.values().map(|state| state.leader).collect();
    assert_eq!(
        leaders.len(),
        3,
        "partitions led by all three brokers: {states:?}"
    );

    // Without the brokers' login, a registered broker's address is no
    // longer enough for a broker's call.
    assert_eq!(
        marker_from_a_brokers_address(&secured.cluster, 1),
        CLUSTER_AUTHORIZATION_FAILED
    );

    // Replication (authenticated peer connections): acks=all records.
    produce_to_every_partition(&bootstrap, "plain");
    // Transactions whose markers go to other brokers over SASL_SSL as
    // `broker`; librdkafka's partition additions are verified by the
    // leaders with the coordinator (KIP-890 part 1) the same way.
    let transactional = transactional_producer(&bootstrap, "ib-auth-txn");
    transactional.begin_transaction().unwrap();
    for partition in 0..PARTITIONS {
        send(&transactional, partition, &format!("committed-{partition}"));
    }
    transactional.commit_transaction(TXN_TIMEOUT).unwrap();
    transactional.begin_transaction().unwrap();
    for partition in 0..PARTITIONS {
        send(&transactional, partition, &format!("aborted-{partition}"));
    }
    transactional.flush(TXN_TIMEOUT).unwrap();
    transactional.abort_transaction(TXN_TIMEOUT).unwrap();
    let expected: BTreeSet<(i32, String)> = (0..PARTITIONS)
        .flat_map(|partition| {
            [
                (partition, format!("plain-{partition}")),
                (partition, format!("committed-{partition}")),
            ]
        })
        .collect();
    assert_eq!(read_all(&bootstrap, true), expected);
    assert_eq!(read_all(&bootstrap, false).len(), 3 * PARTITIONS as usize);

    // Peers without the secret are refused on both peer ports.
    let replication_port = secured.replication_ports[1];
    let controller_port = secured.cluster.controller_port(1);
    let bare = encode_frame(kind::REPLICA_PROBE, 0, &[0u8; 64]).unwrap();
    assert_eq!(closes_after(replication_port, &bare), Ok(Vec::new()));
    let raft = encode_frame(kind::RAFT_MESSAGE, 0, &[0u8; 16]).unwrap();
    assert_eq!(closes_after(controller_port, &raft), Ok(Vec::new()));
    // A prober that says hello and makes up its proof gets the challenge
    // (nothing it can use) and then the door.
    let mut hello = encode_frame(
        kind::AUTH_HELLO,
        0,
        &[[1u8].as_slice(), &[7u8; 32]].concat(),
    )
    .unwrap();
    hello.extend(encode_frame(kind::AUTH_PROOF, 0, &[9u8; 32]).unwrap());
    for port in [replication_port, controller_port] {
        let answer = closes_after(port, &hello).unwrap();
        let challenge_only = 20 + 64;
        assert_eq!(answer.len(), challenge_only, "port {port}: no AUTH_OK");
    }
    // A peer holding another secret finds out from the server's proof.
    std::fs::write(secured.dir.join("wrong"), WRONG_SECRET).unwrap();
    let wrong = PeerSecret::load(&secured.dir.join("wrong")).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", controller_port)).unwrap();
    match sluice_server::peer::io::authenticate_client(&mut stream, &wrong) {
        Err(PeerError::Handshake(error)) => {
            assert!(error.to_string().contains("proof is wrong"), "{error}");
        }
        other => panic!("authenticated with the wrong secret: {other:?}"),
    }
    drop(stream);
    wait_until("both refusals logged", TIMEOUT, || {
        let (node2, node1) = (
            secured.cluster.broker(2).stderr_all(),
            secured.cluster.broker(1).stderr_all(),
        );
        (node2.contains("replication connection refused")
            && node1.contains("controller peer connection refused"))
        .then_some(())
        .ok_or("not yet".to_string())
    });

    // A broker restarted with the wrong secret cannot rejoin: writes go on
    // without it, and it comes back once given the right one.
    secured.cluster.stop(3);
    std::fs::write(secured.secret_file(3), WRONG_SECRET).unwrap();
    secured.cluster.broker_mut(3).spawn();
    wait_until("node 3 is refused by its peers", TIMEOUT, || {
        secured
            .cluster
            .broker(3)
            .stderr_all()
            .contains("peer authentication failed")
            .then_some(())
            .ok_or("not yet".to_string())
    });
    produce_to_every_partition(&bootstrap, "without-3");
    for partition in 0..PARTITIONS {
        let isr = secured.cluster.isr(1, TOPIC, partition).unwrap();
        assert!(!isr.contains(&3), "{TOPIC}/{partition} ISR {isr:?}");
    }
    secured.cluster.stop(3);
    std::fs::write(secured.secret_file(3), SECRET).unwrap();
    secured.cluster.start_again(3);
    secured
        .cluster
        .wait_for_full_isr(TOPIC, PARTITIONS as usize, TIMEOUT);
    let values = read_all(&bootstrap, true);
    assert_eq!(values.len(), 3 * PARTITIONS as usize, "{values:?}");
    assert!(values.contains(&(0, "without-3-0".to_string())));
}
