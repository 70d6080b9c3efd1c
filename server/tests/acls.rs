//! ACLs (issue 13, part 2) against a real `sluice` started with
//! `--authorizer standard`: real clients (confluent-kafka, kcat) see
//! Kafka's authorization errors, and `sluice acl` creates, lists and
//! deletes bindings.
//!
//! The broker has a SASL_PLAINTEXT listener (SCRAM-SHA-512 users alice and
//! admin, admin a super user) and the harness's PLAINTEXT listener, where
//! the unauthenticated principal User:ANONYMOUS is made a super user: the
//! admin subcommands do not authenticate yet, so that is how the test (and
//! an operator on a loopback listener) grants the first ACLs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::cluster::{Cluster, wait_until};

use std::process::Command;
use std::time::Duration;

use support::{
    Broker, require_python, require_tool, reserve_port, run_with_input, run_with_timeout,
};

const TIMEOUT: Duration = Duration::from_secs(180);
const PASSWORD: &str = "acl-test-password";

struct AclBroker {
    broker: Broker,
    sasl_port: u16,
}

impl AclBroker {
    fn start(name: &str) -> AclBroker {
        let sasl_port = reserve_port();
        let listeners = format!("SASL_PLAINTEXT://127.0.0.1:{sasl_port}");
        let broker = Broker::start_with_args(
            name,
            &[
                "--listeners",
                &listeners,
                "--authorizer",
                "standard",
                "--super-users",
                "User:admin;User:ANONYMOUS",
                "--group-initial-rebalance-delay-ms",
                "0",
            ],
        );
        let acl_broker = AclBroker { broker, sasl_port };
        for user in ["alice", "admin"] {
            let output = acl_broker.sluice(&["user", "create", user, "--password", PASSWORD]);
            assert!(
                output.status.success(),
                "sluice user create {user}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        acl_broker
    }

    fn sluice(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(args)
            .arg("--bootstrap")
            .arg(self.broker.bootstrap());
        run_with_timeout(command, TIMEOUT, "sluice")
    }

    fn sasl_address(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }
}

/// Run `sluice <args> --bootstrap <bootstrap>`; panics unless it succeeds.
fn sluice_succeeds(bootstrap: &str, args: &[&str]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(args).arg("--bootstrap").arg(bootstrap);
    let output = run_with_timeout(command, TIMEOUT, "sluice");
    assert!(
        output.status.success(),
        "sluice {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn confluent_kafka_sees_topic_and_group_authorization_prefixed_grants_deny_wins_and_super_users() {
    let Some(python) = require_python() else {
        return;
    };
    let mut acl_broker = AclBroker::start("acls_confluent");
    let script = support::repo_root().join("server/tests/python/acl_clients.py");
    let mut command = Command::new(python);
    command
        .arg(&script)
        .arg(acl_broker.sasl_address())
        .arg(acl_broker.broker.bootstrap())
        .arg(PASSWORD)
        .current_dir(script.parent().unwrap());
    let output = run_with_timeout(command, TIMEOUT, "acl_clients.py");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "acl_clients.py failed:\n{}\n{}\nbroker:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        acl_broker.broker.stderr_tail()
    );
    acl_broker.broker.assert_running();
}

/// kcat with the system librdkafka (see security.rs: the one cargo test
/// puts on LD_LIBRARY_PATH has no SCRAM).
fn kcat_as(kcat: &std::path::Path, acl_broker: &AclBroker, user: &str) -> Command {
    let mut command = Command::new(kcat);
    command.env_remove("LD_LIBRARY_PATH");
    command.args([
        "-b",
        &acl_broker.sasl_address(),
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-512",
        "-X",
        &format!("sasl.username={user}"),
        "-X",
        &format!("sasl.password={PASSWORD}"),
    ]);
    command
}

#[test]
fn kcat_is_refused_a_topic_it_may_only_read_and_an_allow_created_with_sluice_acl_lets_it_write() {
    let Some(kcat) = require_tool("kcat") else {
        return;
    };
    let acl_broker = AclBroker::start("acls_kcat");
    let output = acl_broker.sluice(&["topic", "create", "orders", "--partitions", "1"]);
    assert!(
        output.status.success(),
        "topic create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = acl_broker.sluice(&[
        "acl",
        "create",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "orders",
    ]);
    assert!(
        output.status.success(),
        "acl create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let produce = |what: &str| {
        let mut command = kcat_as(&kcat, &acl_broker, "alice");
        command.args(["-P", "-t", "orders", "-p", "0"]);
        run_with_input(command, Some(b"one\ntwo\n".to_vec()), TIMEOUT, what)
    };
    let output = produce("kcat produce with READ only");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("Topic authorization failed"),
        "kcat produce with READ only: {}\n{stderr}",
        output.status
    );
    let output = acl_broker.sluice(&[
        "acl",
        "create",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Write",
        "--topic",
        "orders",
    ]);
    assert!(output.status.success());
    let output = produce("kcat produce with WRITE");
    assert!(
        output.status.success(),
        "kcat produce with WRITE: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn sluice_acl_creates_lists_and_deletes_bindings() {
    let acl_broker = AclBroker::start("acls_cli");
    let run = |args: &[&str]| {
        let output = acl_broker.sluice(args);
        assert!(
            output.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    run(&[
        "acl",
        "create",
        "--allow-principal",
        "User:alice",
        "--allow-principal",
        "User:bob",
        "--operation",
        "Read",
        "--operation",
        "Describe",
        "--topic",
        "orders",
        "--group",
        "billing",
    ]);
    run(&[
        "acl",
        "create",
        "--deny-principal",
        "User:mallory",
        "--host",
        "10.0.0.9",
        "--operation",
        "All",
        "--topic",
        "pay.",
        "--resource-pattern-type",
        "prefixed",
    ]);
    run(&[
        "acl",
        "create",
        "--allow-principal",
        "User:ops",
        "--operation",
        "Alter",
        "--cluster",
    ]);
    run(&[
        "acl",
        "create",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Write",
        "--transactional-id",
        "tx-1",
    ]);
    let table = run(&["acl", "list"]);
    println!("{table}");
    // 2 principals x 2 operations x 2 resources, 1 deny, 1 cluster, 1 txn.
    let lines: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(lines.len(), 11, "{table}");
    assert!(table.contains("PREFIXED") && table.contains("mallory") && table.contains("DENY"));
    assert!(table.contains("kafka-cluster") && table.contains("TRANSACTIONAL_ID"));
    let json = run(&["acl", "list", "--topic", "orders", "--format", "json"]);
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let bindings = parsed.as_array().unwrap();
    assert_eq!(bindings.len(), 4, "{json}");
    assert!(
        bindings
            .iter()
            .all(|binding| binding["resource_name"] == "orders")
    );
    let deleted = run(&[
        "acl",
        "delete",
        "--allow-principal",
        "User:bob",
        "--topic",
        "orders",
        "--group",
        "billing",
    ]);
    println!("{deleted}");
    assert!(deleted.contains("4"), "{deleted}");
    let table = run(&["acl", "list"]);
    assert!(!table.contains("User:bob"), "{table}");
    assert_eq!(table.lines().skip(1).count(), 7, "{table}");
    run(&["acl", "delete", "--all"]);
    assert_eq!(run(&["acl", "list"]).lines().skip(1).count(), 0);
}

#[test]
fn sluice_acl_refuses_bad_flags_with_a_clear_error() {
    let acl_broker = AclBroker::start("acls_cli_errors");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "acl",
                "create",
                "--allow-principal",
                "User:alice",
                "--operation",
                "Fly",
                "--topic",
                "t",
            ],
            "unknown operation",
        ),
        (
            &[
                "acl",
                "create",
                "--allow-principal",
                "User:alice",
                "--topic",
                "t",
            ],
            "--operation",
        ),
        (
            &[
                "acl",
                "create",
                "--allow-principal",
                "alice",
                "--operation",
                "Read",
                "--topic",
                "t",
            ],
            "User:name",
        ),
        (
            &[
                "acl",
                "create",
                "--allow-principal",
                "User:alice",
                "--operation",
                "Read",
            ],
            "--topic",
        ),
        (
            &[
                "acl",
                "create",
                "--allow-principal",
                "User:alice",
                "--operation",
                "Read",
                "--topic",
                "t",
                "--resource-pattern-type",
                "fuzzy",
            ],
            "pattern type",
        ),
        (&["acl", "delete"], "--all"),
    ];
    for (args, expected) in cases {
        let output = acl_broker.sluice(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "sluice {args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "sluice {args:?}: expected {expected:?} in:\n{stderr}"
        );
    }
}

/// Brokers call each other's PLAINTEXT listener as User:ANONYMOUS; with the
/// cluster resource closed by an ACL, their WriteTxnMarkers and
/// AddPartitionsToTxn verification pass as broker-to-broker calls
/// (CLUSTER_ACTION for a registered broker's address), so alice's
/// transaction over partitions led by three brokers commits and aborts.
#[test]
fn a_transaction_over_three_brokers_commits_with_the_authorizer_on() {
    const PARTITIONS: i32 = 6;
    let Some(python) = require_python() else {
        return;
    };
    let sasl_ports: Vec<u16> = (0..3).map(|_| reserve_port()).collect();
    let node_args = |node: i32| {
        let port = sasl_ports[usize::try_from(node - 1).unwrap()];
        vec![
            "--listeners".to_string(),
            format!("SASL_PLAINTEXT://127.0.0.1:{port}"),
        ]
    };
    // Open while nothing names the cluster: the test creates the user and
    // the ACLs as User:ANONYMOUS, then closes the cluster to it.
    let cluster = Cluster::start_with_node_args(
        "acls-txn",
        3,
        &[
            "--broker-heartbeat-interval-ms",
            "500",
            "--group-initial-rebalance-delay-ms",
            "0",
            "--authorizer",
            "standard",
            "--allow-everyone-if-no-acl-found",
            "true",
        ],
        &node_args,
    );
    let bootstrap = cluster.bootstrap();
    let sluice = |args: &[&str]| sluice_succeeds(&bootstrap, args);
    sluice(&["user", "create", "alice", "--password", PASSWORD]);
    sluice(&[
        "topic",
        "create",
        "acl-txn",
        "--partitions",
        &PARTITIONS.to_string(),
    ]);
    for (operation, resource, name) in [
        ("Write", "--topic", "acl-txn"),
        ("Read", "--topic", "acl-txn"),
        ("Write", "--transactional-id", "alice-txn"),
        ("Read", "--group", "alice-group"),
    ] {
        sluice(&[
            "acl",
            "create",
            "--allow-principal",
            "User:alice",
            "--operation",
            operation,
            resource,
            name,
        ]);
    }
    // The test's own Metadata calls (below) are User:ANONYMOUS's.
    sluice(&[
        "acl",
        "create",
        "--allow-principal",
        "User:ANONYMOUS",
        "--operation",
        "Describe",
        "--topic",
        "acl-txn",
    ]);
    sluice(&[
        "acl",
        "create",
        "--allow-principal",
        "User:ANONYMOUS",
        "--operation",
        "Describe",
        "--cluster",
    ]);
    // Every broker has applied the last ACL and leads some partition.
    wait_until(
        "every broker sees the cluster ACL and the topic's leaders",
        Duration::from_secs(60),
        || {
            let leaders = cluster
                .leaders(1, "acl-txn")
                .ok_or_else(|| "no leaders yet".to_string())?;
            if leaders.len() == PARTITIONS as usize {
                Ok(())
            } else {
                Err(format!("leaders {leaders:?}"))
            }
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let script = support::repo_root().join("server/tests/python/acl_cluster_transaction.py");
    let bootstrap: Vec<String> = sasl_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let mut command = Command::new(python);
    command
        .arg(&script)
        .arg(bootstrap.join(","))
        .arg(PASSWORD)
        .arg("acl-txn")
        .arg(PARTITIONS.to_string())
        .arg("alice-txn")
        .arg("alice-group")
        .current_dir(script.parent().unwrap());
    let output = run_with_timeout(command, TIMEOUT, "acl_cluster_transaction.py");
    assert!(
        output.status.success(),
        "acl_cluster_transaction.py failed:\n{}\n{}\nbrokers:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.stderr_tails()
    );
}

#[test]
fn the_broker_refuses_bad_authorizer_flags_at_start() {
    let data_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("acls-bad-flags-{}", std::process::id()));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--authorizer", "standard", "--super-users", "admin"],
            "--super-users",
        ),
        (&["--authorizer", "acl-please"], "--authorizer"),
    ];
    for (args, expected) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(*args)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "none"])
            .arg("--data-dir")
            .arg(&data_dir);
        let output = run_with_timeout(command, TIMEOUT, "sluice with bad flags");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "sluice {args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "sluice {args:?}: expected {expected:?} in:\n{stderr}"
        );
    }
}

/// The error code of topic `name` in a Metadata v10 answer on `stream`.
fn metadata_topic_error(stream: &mut std::net::TcpStream, name: &'static str) -> i16 {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        ApiKey, MetadataRequest, MetadataResponse, RequestKind, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};

    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str(name)))),
        ]))
        .with_allow_auto_topic_creation(false);
    let mut body =
        support::wire::call(stream, ApiKey::Metadata, 10, RequestKind::Metadata(request));
    let response = MetadataResponse::decode(&mut body, 10).unwrap();
    assert_eq!(response.topics.len(), 1);
    response.topics[0].error_code
}

/// An IPv4 client of a dual-stack listener (`[::]`) is known by its IPv4
/// address, as Kafka knows it (Java hands it over as an `Inet4Address`):
/// an ACL for host 127.0.0.1 applies to it there as on an IPv4 listener.
/// The socket reports it as `::ffff:127.0.0.1`, which no ACL host matched.
#[test]
fn an_acl_for_an_ipv4_host_applies_to_that_client_on_a_dual_stack_listener() {
    if let Err(error) = std::net::TcpListener::bind("[::]:0") {
        let reason = format!("binding [::] fails: {error}");
        return support::missing_tool("IPv6", &reason).unwrap_or(());
    }
    let dual_port = reserve_port();
    let listeners = format!("DUAL://[::]:{dual_port}");
    // No super user: nothing guards the cluster, so the CLI (anonymous)
    // may create the topic and the one ACL that guards it.
    let broker = Broker::start_with_args(
        "acls_dual_stack",
        &[
            "--listeners",
            &listeners,
            "--listener-security-protocol-map",
            "DUAL:PLAINTEXT",
            "--authorizer",
            "standard",
            "--allow-everyone-if-no-acl-found",
            "true",
        ],
    );
    let bootstrap = broker.bootstrap();
    let sluice = |args: &[&str]| sluice_succeeds(&bootstrap, args);
    sluice(&["topic", "create", "guarded", "--partitions", "1"]);
    sluice(&[
        "acl",
        "create",
        "--allow-principal",
        "User:ANONYMOUS",
        "--host",
        "127.0.0.1",
        "--operation",
        "Describe",
        "--topic",
        "guarded",
    ]);
    let none = 0;
    let mut ipv4_listener = support::wire::connect(broker.address());
    assert_eq!(metadata_topic_error(&mut ipv4_listener, "guarded"), none);
    let dual_address: std::net::SocketAddr = format!("127.0.0.1:{dual_port}").parse().unwrap();
    let mut dual_listener = support::wire::connect(dual_address);
    assert_eq!(
        metadata_topic_error(&mut dual_listener, "guarded"),
        none,
        "the ACL for 127.0.0.1 applies to 127.0.0.1 on the [::] listener"
    );
}

/// DescribeAcls v3 for every binding on `stream`.
fn describe_every_acl(
    stream: &mut std::net::TcpStream,
) -> kafka_protocol::messages::DescribeAclsResponse {
    use kafka_protocol::messages::{
        ApiKey, DescribeAclsRequest, DescribeAclsResponse, RequestKind,
    };
    use kafka_protocol::protocol::Decodable;

    let any = 1;
    let request = DescribeAclsRequest::default()
        .with_resource_type_filter(any)
        .with_pattern_type_filter(any)
        .with_operation(any)
        .with_permission_type(any);
    let mut body = support::wire::call(
        stream,
        ApiKey::DescribeAcls,
        3,
        RequestKind::DescribeAcls(request),
    );
    DescribeAclsResponse::decode(&mut body, 3).unwrap()
}

/// Without an authorizer nothing enforces ACLs: Kafka's CreateAcls,
/// DescribeAcls and DeleteAcls then answer SECURITY_DISABLED (AclApis)
/// and store nothing, so no client (on PLAINTEXT: anyone) plants bindings
/// that start to bind once the authorizer is turned on. `sluice acl` says
/// so. Started again with the authorizer, the broker holds no binding.
#[test]
fn without_an_authorizer_the_acl_apis_answer_security_disabled_and_store_nothing() {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    use kafka_protocol::messages::{
        ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
        RequestKind,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    const SECURITY_DISABLED: i16 = 54;
    let (any, topic, literal, all, allow) = (1, 2, 3, 2, 3);

    let mut broker = Broker::start("acls_security_disabled");
    let mut stream = support::wire::connect(broker.address());
    let creation = AclCreation::default()
        .with_resource_type(topic)
        .with_resource_name(StrBytes::from_static_str("orders"))
        .with_resource_pattern_type(literal)
        .with_principal(StrBytes::from_static_str("User:mallory"))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(all)
        .with_permission_type(allow);
    let request = CreateAclsRequest::default().with_creations(vec![creation.clone(), creation]);
    let mut body = support::wire::call(
        &mut stream,
        ApiKey::CreateAcls,
        3,
        RequestKind::CreateAcls(request),
    );
    let created = CreateAclsResponse::decode(&mut body, 3).unwrap();
    assert_eq!(
        created
            .results
            .iter()
            .map(|result| result.error_code)
            .collect::<Vec<_>>(),
        vec![SECURITY_DISABLED, SECURITY_DISABLED]
    );

    let described = describe_every_acl(&mut stream);
    assert_eq!(described.error_code, SECURITY_DISABLED);
    assert!(described.resources.is_empty());

    let filter = DeleteAclsFilter::default()
        .with_resource_type_filter(any)
        .with_pattern_type_filter(any)
        .with_operation(any)
        .with_permission_type(any);
    let request = DeleteAclsRequest::default().with_filters(vec![filter]);
    let mut body = support::wire::call(
        &mut stream,
        ApiKey::DeleteAcls,
        3,
        RequestKind::DeleteAcls(request),
    );
    let deleted = DeleteAclsResponse::decode(&mut body, 3).unwrap();
    assert_eq!(deleted.filter_results.len(), 1);
    assert_eq!(deleted.filter_results[0].error_code, SECURITY_DISABLED);
    assert!(deleted.filter_results[0].matching_acls.is_empty());

    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args([
        "acl",
        "create",
        "--allow-principal",
        "User:mallory",
        "--operation",
        "All",
        "--topic",
        "orders",
        "--bootstrap",
        &broker.bootstrap(),
    ]);
    let output = run_with_timeout(command, TIMEOUT, "sluice acl create");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("--authorizer standard"),
        "sluice acl create without an authorizer: {}\n{stderr}",
        output.status
    );

    drop(stream);
    broker.stop();
    broker.set_args(&[
        "--authorizer",
        "standard",
        "--super-users",
        "User:ANONYMOUS",
    ]);
    broker.start_again();
    let mut stream = support::wire::connect(broker.address());
    let described = describe_every_acl(&mut stream);
    assert_eq!(described.error_code, 0);
    assert!(
        described.resources.is_empty(),
        "stored while the authorizer was off: {:?}",
        described.resources
    );
}

/// OffsetDelete needs READ on each topic besides DELETE on the group, as
/// Kafka's handleOffsetDeleteRequest: alice, with only DELETE on group
/// `cleanup`, is answered TOPIC_AUTHORIZATION_FAILED for the partition of
/// `ledger` and its committed offset stays; once she may READ `ledger`
/// the same request deletes it.
#[test]
fn offset_delete_needs_read_on_the_topic_besides_delete_on_the_group() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{
        GroupId, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use sluice_server::admin::client::Connection;
    use sluice_server::admin::security::{
        ClientSecurity, SaslMechanism, SecurityProtocol, TlsFiles,
    };
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    let group = || GroupId(StrBytes::from_static_str("cleanup"));
    let topic = || TopicName(StrBytes::from_static_str("ledger"));

    let acl_broker = AclBroker::start("acls_offset_delete");
    let run = |args: &[&str]| {
        let output = acl_broker.sluice(args);
        assert!(
            output.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&["topic", "create", "ledger", "--partitions", "1"]);
    // The super user (ANONYMOUS on the PLAINTEXT listener) commits.
    let mut super_user = Connection::open(&acl_broker.broker.bootstrap()).unwrap();
    let commit = OffsetCommitRequest::default()
        .with_group_id(group())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(5),
                ]),
        ]);
    let committed = super_user.send(&commit, 7).unwrap();
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let mut committed_offset = || {
        let request = OffsetFetchRequest::default()
            .with_group_id(group())
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0]),
            ]));
        let response = super_user.send(&request, 7).unwrap();
        assert_eq!(response.error_code, 0);
        assert_eq!(response.topics[0].partitions[0].error_code, 0);
        response.topics[0].partitions[0].committed_offset
    };
    assert_eq!(committed_offset(), 5);

    run(&[
        "acl",
        "create",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Delete",
        "--group",
        "cleanup",
    ]);
    let alice = ClientSecurity::new(
        SecurityProtocol::SaslPlaintext,
        SaslMechanism::ScramSha512,
        Some("alice".to_string()),
        Some(PASSWORD.to_string()),
        &TlsFiles::default(),
    )
    .unwrap();
    let mut alice = Connection::open_with(&acl_broker.sasl_address(), &alice).unwrap();
    let delete = OffsetDeleteRequest::default()
        .with_group_id(group())
        .with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0),
                ]),
        ]);
    let deleted = alice.send(&delete, 0).unwrap();
    assert_eq!(
        deleted.error_code, 0,
        "DELETE on the group is enough for it"
    );
    assert_eq!(deleted.topics.len(), 1);
    assert_eq!(deleted.topics[0].name, topic());
    assert_eq!(
        deleted.topics[0].partitions[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    assert_eq!(committed_offset(), 5, "the offset stays");

    run(&[
        "acl",
        "create",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "ledger",
    ]);
    let deleted = alice.send(&delete, 0).unwrap();
    assert_eq!(deleted.error_code, 0);
    assert_eq!(deleted.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        committed_offset(),
        -1,
        "deleted once alice may READ the topic"
    );
}

/// A principal that may create a topic but not DESCRIBE_CONFIGS it gets
/// the topic created and, from CreateTopics v5, no configs: Kafka answers
/// TOPIC_AUTHORIZATION_FAILED in topic_config_error_code and leaves the
/// configs, partition count and replication factor out. With
/// DESCRIBE_CONFIGS on the topic they are answered.
#[test]
fn create_topics_answers_the_configs_only_to_who_may_describe_them() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use sluice_server::admin::client::Connection;
    use sluice_server::admin::security::{
        ClientSecurity, SaslMechanism, SecurityProtocol, TlsFiles,
    };
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

    let acl_broker = AclBroker::start("acls_create_topics_configs");
    for topic in ["hidden", "shown"] {
        let output = acl_broker.sluice(&[
            "acl",
            "create",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Create",
            "--topic",
            topic,
        ]);
        assert!(output.status.success(), "acl create");
    }
    let output = acl_broker.sluice(&[
        "acl",
        "create",
        "--allow-principal",
        "User:alice",
        "--operation",
        "DescribeConfigs",
        "--topic",
        "shown",
    ]);
    assert!(output.status.success(), "acl create");
    let alice = ClientSecurity::new(
        SecurityProtocol::SaslPlaintext,
        SaslMechanism::ScramSha512,
        Some("alice".to_string()),
        Some(PASSWORD.to_string()),
        &TlsFiles::default(),
    )
    .unwrap();
    let mut alice = Connection::open_with(&acl_broker.sasl_address(), &alice).unwrap();
    let topic = |name: &'static str| {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)
    };
    let request = CreateTopicsRequest::default().with_topics(vec![topic("hidden"), topic("shown")]);
    let response = alice.send(&request, 7).unwrap();
    let hidden = &response.topics[0];
    assert_eq!(hidden.name.0.as_str(), "hidden");
    assert_eq!(hidden.error_code, 0, "created");
    assert_eq!(hidden.topic_config_error_code, TOPIC_AUTHORIZATION_FAILED);
    assert!(
        hidden.configs.as_ref().is_none_or(Vec::is_empty),
        "{:?}",
        hidden.configs
    );
    assert_eq!((hidden.num_partitions, hidden.replication_factor), (-1, -1));
    let shown = &response.topics[1];
    assert_eq!(shown.name.0.as_str(), "shown");
    assert_eq!((shown.error_code, shown.topic_config_error_code), (0, 0));
    assert!(
        shown.configs.as_ref().is_some_and(|configs| configs
            .iter()
            .any(|config| config.name.as_str() == "cleanup.policy")),
        "{:?}",
        shown.configs
    );
    assert_eq!((shown.num_partitions, shown.replication_factor), (1, 1));
}
