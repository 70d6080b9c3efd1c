//! Dynamic broker configs through real brokers: the topic-config defaults
//! altered as the cluster-wide default (BROKER resource "") and for one
//! broker (BROKER resource "<id>") with IncrementalAlterConfigs (raw
//! requests) and AlterConfigs (rdkafka's AdminClient); described on the
//! broker and on topics with Kafka's sources and synonyms; acting at once
//! on topics without their own value (message.max.bytes refuses larger
//! batches with MESSAGE_TOO_LARGE, log.segment.bytes with
//! log.retention.bytes deletes old segments); refused with clear errors;
//! on a three-broker cluster, the default applies on every broker and a
//! broker's own value on that broker only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    ApiKey, DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, RequestKind,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::admin::{AlterConfig, ResourceSpecifier};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};
use support::Broker;
use support::cluster::{Cluster, wait_until};
use support::kafka;
use support::wire;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;

/// Kafka's config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DYNAMIC_BROKER_CONFIG: i8 = 2;
const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
const DEFAULT_CONFIG: i8 = 5;

const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;

/// IncrementalAlterConfigs v1 of one resource: its error code and message.
fn incremental(
    address: SocketAddr,
    resource_type: i8,
    name: &str,
    changes: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, Option<String>) {
    let configs = changes
        .iter()
        .map(|(config, operation, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(config.to_string()))
                .with_config_operation(*operation)
                .with_value(value.map(|value| StrBytes::from_string(value.to_string())))
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configs(configs),
        ])
        .with_validate_only(validate_only);
    let mut stream = wire::connect(address);
    let mut body = wire::call(
        &mut stream,
        ApiKey::IncrementalAlterConfigs,
        1,
        RequestKind::IncrementalAlterConfigs(request),
    );
    let response = IncrementalAlterConfigsResponse::decode(&mut body, 1).expect("a response");
    assert_eq!(response.responses.len(), 1, "one resource answered");
    let result = &response.responses[0];
    (
        result.error_code,
        result
            .error_message
            .as_ref()
            .map(|message| message.to_string()),
    )
}

/// [`incremental`], which must succeed.
fn alter(address: SocketAddr, resource_type: i8, name: &str, changes: &[(&str, i8, Option<&str>)]) {
    let (code, message) = incremental(address, resource_type, name, changes, false);
    assert_eq!(
        code, 0,
        "IncrementalAlterConfigs {name:?} {changes:?}: {message:?}"
    );
}

/// DescribeConfigs v3 of one resource, with synonyms.
fn describe(address: SocketAddr, resource_type: i8, name: &str) -> DescribeConfigsResult {
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ])
        .with_include_synonyms(true);
    let mut stream = wire::connect(address);
    let mut body = wire::call(
        &mut stream,
        ApiKey::DescribeConfigs,
        3,
        RequestKind::DescribeConfigs(request),
    );
    let response = DescribeConfigsResponse::decode(&mut body, 3).expect("a response");
    let result = response.results.into_iter().next().expect("one result");
    assert_eq!(
        result.error_code, 0,
        "DescribeConfigs {name:?}: {:?}",
        result.error_message
    );
    result
}

/// One config of a described resource: value, source, read-only, and the
/// synonyms' (name, value, source).
#[derive(Debug, PartialEq, Eq)]
struct Described {
    value: Option<String>,
    source: i8,
    read_only: bool,
    synonyms: Vec<(String, Option<String>, i8)>,
}

fn entry(result: &DescribeConfigsResult, name: &str) -> Option<Described> {
    let config = result
        .configs
        .iter()
        .find(|config| config.name.as_str() == name)?;
    Some(Described {
        value: config.value.as_ref().map(|value| value.to_string()),
        source: config.config_source,
        read_only: config.read_only,
        synonyms: config
            .synonyms
            .iter()
            .map(|synonym| {
                (
                    synonym.name.to_string(),
                    synonym.value.as_ref().map(|value| value.to_string()),
                    synonym.source,
                )
            })
            .collect(),
    })
}

/// (value, source) of config `name` of `resource_type`/`resource`.
fn value_and_source(
    address: SocketAddr,
    resource_type: i8,
    resource: &str,
    name: &str,
) -> (Option<String>, i8) {
    let described = entry(&describe(address, resource_type, resource), name)
        .unwrap_or_else(|| panic!("{name} is not described for {resource:?}"));
    (described.value, described.source)
}

/// Produce one record of `size` value bytes to `topic`/`partition`: its
/// offset, or the delivery error.
fn produce_sized(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    size: usize,
) -> Result<i64, KafkaError> {
    produce_many(bootstrap, topic, partition, size, 1)
        .pop()
        .expect("one delivery report")
}

/// Produce `count` records of `size` value bytes, one batch each, to
/// `topic`/`partition`: each one's offset or delivery error, in order.
fn produce_many(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    size: usize,
    count: usize,
) -> Vec<Result<i64, KafkaError>> {
    let (producer, reports) = kafka::producer(
        bootstrap,
        &[
            ("acks", "all"),
            ("retries", "0"),
            ("linger.ms", "0"),
            ("max.in.flight.requests.per.connection", "1"),
        ],
    );
    let payload = vec![b'x'; size];
    for index in 0..count {
        let record: BaseRecord<'_, [u8], [u8], Box<usize>> =
            BaseRecord::with_opaque_to(topic, Box::new(index))
                .partition(partition)
                .payload(&payload[..]);
        producer
            .send(record)
            .map_err(|(error, _)| error)
            .expect("queueing the record");
        producer
            .flush(Duration::from_secs(30))
            .expect("flushing the producer");
    }
    let mut reports = std::mem::take(&mut *reports.0.lock().expect("reports"));
    assert_eq!(reports.len(), count, "one delivery report per record");
    reports.sort_by_key(|(index, _)| *index);
    reports
        .into_iter()
        .map(|(_, outcome)| outcome.map(|(_, offset)| offset))
        .collect()
}

fn assert_too_large(outcome: Result<i64, KafkaError>, what: &str) {
    match outcome {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {}
        other => panic!("{what}: expected MESSAGE_TOO_LARGE, got {other:?}"),
    }
}

#[test]
fn a_cluster_default_and_a_brokers_value_set_the_topic_defaults_until_deleted() {
    let broker = Broker::start("dynamic-broker-configs");
    let bootstrap = broker.bootstrap();
    let address = broker.address();
    kafka::create_topic(&bootstrap, "plain", 1, &[]);
    kafka::create_topic(&bootstrap, "own", 1, &[("max.message.bytes", "1048588")]);
    assert!(produce_sized(&bootstrap, "plain", 0, 5000).is_ok());

    // validate_only checks and changes nothing.
    let (code, message) = incremental(
        address,
        BROKER,
        "",
        &[("message.max.bytes", SET, Some("2000"))],
        true,
    );
    assert_eq!(code, 0, "{message:?}");
    assert_eq!(
        value_and_source(address, TOPIC, "plain", "max.message.bytes"),
        (Some("1048588".to_string()), DEFAULT_CONFIG)
    );
    assert!(describe(address, BROKER, "").configs.is_empty());

    // The cluster-wide default.
    alter(
        address,
        BROKER,
        "",
        &[("message.max.bytes", SET, Some("2000"))],
    );
    let cluster = entry(&describe(address, BROKER, ""), "message.max.bytes").unwrap();
    assert_eq!(cluster.value.as_deref(), Some("2000"));
    assert_eq!(cluster.source, DYNAMIC_DEFAULT_BROKER_CONFIG);
    assert!(!cluster.read_only);
    assert_eq!(
        entry(&describe(address, BROKER, "0"), "message.max.bytes").unwrap(),
        Described {
            value: Some("2000".to_string()),
            source: DYNAMIC_DEFAULT_BROKER_CONFIG,
            read_only: false,
            synonyms: vec![
                (
                    "message.max.bytes".to_string(),
                    Some("2000".to_string()),
                    DYNAMIC_DEFAULT_BROKER_CONFIG
                ),
                (
                    "message.max.bytes".to_string(),
                    Some("1048588".to_string()),
                    DEFAULT_CONFIG
                ),
            ],
        }
    );
    let plain = entry(&describe(address, TOPIC, "plain"), "max.message.bytes").unwrap();
    assert_eq!(plain.value.as_deref(), Some("2000"));
    assert_eq!(plain.source, DYNAMIC_DEFAULT_BROKER_CONFIG);
    assert_eq!(
        plain.synonyms[0],
        (
            "message.max.bytes".to_string(),
            Some("2000".to_string()),
            DYNAMIC_DEFAULT_BROKER_CONFIG
        )
    );
    assert!(
        entry(&describe(address, BROKER, "0"), "broker.id")
            .unwrap()
            .read_only
    );

    // It acts at once on the topic without its own value; the topic's own
    // value wins.
    assert_too_large(produce_sized(&bootstrap, "plain", 0, 5000), "plain at 2000");
    assert!(produce_sized(&bootstrap, "plain", 0, 100).is_ok());
    assert!(produce_sized(&bootstrap, "own", 0, 5000).is_ok());
    assert_eq!(
        value_and_source(address, TOPIC, "own", "max.message.bytes"),
        (Some("1048588".to_string()), DYNAMIC_TOPIC_CONFIG)
    );

    // This broker's own value (legacy AlterConfigs, through rdkafka) wins
    // over the cluster default.
    let admin = kafka::admin(&bootstrap);
    let per_broker =
        AlterConfig::new(ResourceSpecifier::Broker(0)).set("message.max.bytes", "3000");
    let results = kafka::block_on(admin.alter_configs([&per_broker], &kafka::admin_options()))
        .expect("AlterConfigs of broker 0");
    for result in results {
        result.unwrap_or_else(|(_, code)| panic!("AlterConfigs broker 0: {code:?}"));
    }
    let own = entry(&describe(address, BROKER, "0"), "message.max.bytes").unwrap();
    assert_eq!(own.value.as_deref(), Some("3000"));
    assert_eq!(own.source, DYNAMIC_BROKER_CONFIG);
    let sources: Vec<i8> = own.synonyms.iter().map(|synonym| synonym.2).collect();
    assert_eq!(
        sources,
        vec![
            DYNAMIC_BROKER_CONFIG,
            DYNAMIC_DEFAULT_BROKER_CONFIG,
            DEFAULT_CONFIG
        ]
    );
    assert_eq!(
        value_and_source(address, TOPIC, "plain", "max.message.bytes"),
        (Some("3000".to_string()), DYNAMIC_BROKER_CONFIG)
    );
    assert!(produce_sized(&bootstrap, "plain", 0, 2500).is_ok());

    // DELETE returns to the layer below: the cluster default, then Kafka's.
    alter(address, BROKER, "0", &[("message.max.bytes", DELETE, None)]);
    assert_eq!(
        value_and_source(address, TOPIC, "plain", "max.message.bytes"),
        (Some("2000".to_string()), DYNAMIC_DEFAULT_BROKER_CONFIG)
    );
    assert_too_large(
        produce_sized(&bootstrap, "plain", 0, 2500),
        "plain back at 2000",
    );
    alter(address, BROKER, "", &[("message.max.bytes", DELETE, None)]);
    assert_eq!(
        value_and_source(address, TOPIC, "plain", "max.message.bytes"),
        (Some("1048588".to_string()), DEFAULT_CONFIG)
    );
    assert!(describe(address, BROKER, "").configs.is_empty());
    assert!(produce_sized(&bootstrap, "plain", 0, 5000).is_ok());

    // min.insync.replicas: acks=all needs that many in-sync replicas (the
    // topic has one).
    alter(
        address,
        BROKER,
        "",
        &[("min.insync.replicas", SET, Some("2"))],
    );
    match produce_sized(&bootstrap, "plain", 0, 100) {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas)) => {}
        other => panic!("min.insync.replicas 2 with one replica: {other:?}"),
    }
    alter(
        address,
        BROKER,
        "",
        &[("min.insync.replicas", DELETE, None)],
    );
    assert!(produce_sized(&bootstrap, "plain", 0, 100).is_ok());

    // A list config takes APPEND.
    alter(
        address,
        BROKER,
        "",
        &[("log.cleanup.policy", APPEND, Some("compact"))],
    );
    assert_eq!(
        value_and_source(address, TOPIC, "plain", "cleanup.policy"),
        (
            Some("delete,compact".to_string()),
            DYNAMIC_DEFAULT_BROKER_CONFIG
        )
    );
    alter(address, BROKER, "", &[("log.cleanup.policy", DELETE, None)]);
}

#[test]
fn bad_broker_config_changes_are_refused_and_change_nothing() {
    let broker = Broker::start("dynamic-broker-config-errors");
    let address = broker.address();
    let refused = [
        (
            "",
            "log.retention.mss",
            Some("1"),
            INVALID_CONFIG,
            "Unknown broker config",
        ),
        (
            "",
            "broker.id",
            Some("7"),
            INVALID_REQUEST,
            "Cannot update these configs dynamically",
        ),
        (
            "0",
            "log.dirs",
            Some("/tmp"),
            INVALID_REQUEST,
            "Cannot update these configs dynamically",
        ),
        (
            "",
            "message.max.bytes",
            Some("lots"),
            INVALID_CONFIG,
            "message.max.bytes",
        ),
        (
            "0",
            "log.segment.bytes",
            Some("13"),
            INVALID_CONFIG,
            "at least 14",
        ),
        (
            "",
            "log.cleanup.policy",
            Some("shred"),
            INVALID_CONFIG,
            "log.cleanup.policy",
        ),
        (
            "",
            "retention.ms",
            Some("1000"),
            INVALID_CONFIG,
            "Unknown broker config",
        ),
        (
            "0",
            "unclean.leader.election.enable",
            Some("true"),
            INVALID_REQUEST,
            "cluster-wide default",
        ),
        (
            "zero",
            "log.retention.ms",
            Some("1000"),
            INVALID_REQUEST,
            "broker id",
        ),
        (
            "9",
            "log.retention.ms",
            Some("1000"),
            INVALID_REQUEST,
            "not registered",
        ),
        (
            "",
            "sasl.kerberos.min.time.before.relogin",
            Some("58000"),
            INVALID_REQUEST,
            "broker id must be specified",
        ),
        (
            "",
            "background.threads",
            Some("0"),
            INVALID_CONFIG,
            "at least 1",
        ),
    ];
    for (resource, name, value, code, words) in refused {
        let (answered, message) =
            incremental(address, BROKER, resource, &[(name, SET, value)], false);
        assert_eq!(answered, code, "{resource:?} {name}={value:?}: {message:?}");
        let message = message.unwrap_or_default();
        assert!(
            message.contains(words),
            "{resource:?} {name}={value:?}: {message:?} should say {words:?}"
        );
    }
    // Nothing was set.
    assert!(describe(address, BROKER, "").configs.is_empty());
    assert_eq!(
        value_and_source(address, BROKER, "0", "log.segment.bytes"),
        (Some("1073741824".to_string()), DEFAULT_CONFIG)
    );

    // Defaults that would leave a topic's configs contradicting each other.
    kafka::create_topic(
        &broker.bootstrap(),
        "lagging",
        1,
        &[("min.compaction.lag.ms", "5000")],
    );
    let (code, message) = incremental(
        address,
        BROKER,
        "",
        &[("log.cleaner.max.compaction.lag.ms", SET, Some("1000"))],
        false,
    );
    assert_eq!(code, INVALID_CONFIG, "{message:?}");
    assert!(message.unwrap_or_default().contains("lagging"));

    // The legacy API refuses the same way (rdkafka's AlterConfigs result
    // drops per-resource errors: a raw request).
    for (name, value, code) in [
        ("log.retention.mss", "1", INVALID_CONFIG),
        ("broker.id", "7", INVALID_REQUEST),
        ("log.retention.ms", "-2", INVALID_CONFIG),
    ] {
        let (answered, message) = legacy_alter(address, BROKER, "0", &[(name, value)]);
        assert_eq!(answered, code, "AlterConfigs {name}={value}: {message:?}");
    }
    assert_eq!(
        legacy_alter(address, BROKER, "0", &[("log.retention.ms", "1000")]).0,
        0
    );
    assert_eq!(
        value_and_source(address, BROKER, "0", "log.retention.ms"),
        (Some("1000".to_string()), DYNAMIC_BROKER_CONFIG)
    );
    // Kafka's dynamic configs that tune what Sluice does not have are
    // accepted and described (librdkafka's admin test sets them).
    alter(
        address,
        BROKER,
        "",
        &[("background.threads", SET, Some("9"))],
    );
    assert_eq!(
        value_and_source(address, BROKER, "0", "background.threads"),
        (Some("9".to_string()), DYNAMIC_DEFAULT_BROKER_CONFIG)
    );
    alter(address, BROKER, "", &[("background.threads", DELETE, None)]);
    assert_eq!(
        legacy_alter(
            address,
            BROKER,
            "0",
            &[("sasl.kerberos.min.time.before.relogin", "58000")]
        )
        .0,
        0
    );
    // The legacy API replaces the whole set: an empty one clears it.
    assert_eq!(legacy_alter(address, BROKER, "0", &[]).0, 0);
    assert_eq!(
        value_and_source(address, BROKER, "0", "log.retention.ms"),
        (Some("604800000".to_string()), DEFAULT_CONFIG)
    );
}

/// AlterConfigs v1 (legacy: the resource's whole set) of one resource: its
/// error code and message.
fn legacy_alter(
    address: SocketAddr,
    resource_type: i8,
    name: &str,
    configs: &[(&str, &str)],
) -> (i16, Option<String>) {
    use kafka_protocol::messages::alter_configs_request::{
        AlterConfigsResource as LegacyResource, AlterableConfig as LegacyConfig,
    };
    use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
    let request = AlterConfigsRequest::default().with_resources(vec![
        LegacyResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(
                configs
                    .iter()
                    .map(|(config, value)| {
                        LegacyConfig::default()
                            .with_name(StrBytes::from_string(config.to_string()))
                            .with_value(Some(StrBytes::from_string(value.to_string())))
                    })
                    .collect(),
            ),
    ]);
    let mut stream = wire::connect(address);
    let mut body = wire::call(
        &mut stream,
        ApiKey::AlterConfigs,
        1,
        RequestKind::AlterConfigs(request),
    );
    let response = AlterConfigsResponse::decode(&mut body, 1).expect("a response");
    let result = &response.responses[0];
    (
        result.error_code,
        result
            .error_message
            .as_ref()
            .map(|message| message.to_string()),
    )
}

#[test]
fn log_segment_and_retention_bytes_defaults_delete_old_segments() {
    let mut broker =
        Broker::start_with_args("dynamic-retention", &["--log-cleaner-interval-ms", "200"]);
    let bootstrap = broker.bootstrap();
    let address = broker.address();
    kafka::create_topic(&bootstrap, "retained", 1, &[]);
    kafka::create_topic(&bootstrap, "kept", 1, &[("retention.bytes", "-1")]);
    alter(
        address,
        BROKER,
        "",
        &[
            ("log.segment.bytes", SET, Some("4096")),
            ("log.retention.bytes", SET, Some("8192")),
        ],
    );
    for topic in ["retained", "kept"] {
        for outcome in produce_many(&bootstrap, topic, 0, 1000, 40) {
            outcome.unwrap_or_else(|error| panic!("producing to {topic}: {error}"));
        }
    }
    wait_until(
        "retention deletes old segments",
        Duration::from_secs(30),
        || {
            let (low, high) = kafka::watermarks(&bootstrap, "retained", 0);
            if low > 0 {
                Ok(())
            } else {
                Err(format!("log start {low}, end {high}"))
            }
        },
    );
    assert_eq!(
        kafka::watermarks(&bootstrap, "kept", 0).0,
        0,
        "the topic's own retention.bytes wins"
    );
    assert_eq!(
        value_and_source(address, TOPIC, "retained", "retention.bytes"),
        (Some("8192".to_string()), DYNAMIC_DEFAULT_BROKER_CONFIG)
    );

    // The defaults are in the metadata log: after a restart the logs open
    // with them.
    alter(
        address,
        BROKER,
        "",
        &[("message.max.bytes", SET, Some("2000"))],
    );
    broker.restart();
    assert_eq!(
        value_and_source(broker.address(), TOPIC, "kept", "max.message.bytes"),
        (Some("2000".to_string()), DYNAMIC_DEFAULT_BROKER_CONFIG)
    );
    assert_too_large(
        produce_sized(&broker.bootstrap(), "kept", 0, 5000),
        "kept after a restart",
    );
}

#[test]
fn on_a_cluster_the_default_applies_on_every_broker_and_a_brokers_value_on_it_alone() {
    let cluster = Cluster::start("dynamic-broker-configs", 3, &[]);
    let bootstrap = cluster.bootstrap();
    kafka::create_topic_replicated(&bootstrap, "spread", 6, 1, &[]);
    let leaders = wait_until("every partition led", Duration::from_secs(30), || {
        cluster
            .leaders(1, "spread")
            .filter(|leaders| leaders.len() == 6 && leaders.values().all(|leader| *leader > 0))
            .ok_or_else(|| format!("{:?}", cluster.leaders(1, "spread")))
    });
    assert!(
        leaders.values().any(|leader| *leader == 2) && leaders.values().any(|leader| *leader != 2),
        "partitions on broker 2 and on others: {leaders:?}"
    );

    alter(
        cluster.broker(1).address(),
        BROKER,
        "",
        &[("message.max.bytes", SET, Some("2000"))],
    );
    for node in cluster.nodes() {
        let address = cluster.broker(node).address();
        wait_until(
            "the default described everywhere",
            Duration::from_secs(30),
            || {
                let described = value_and_source(address, TOPIC, "spread", "max.message.bytes");
                if described == (Some("2000".to_string()), DYNAMIC_DEFAULT_BROKER_CONFIG) {
                    Ok(())
                } else {
                    Err(format!("broker {node}: {described:?}"))
                }
            },
        );
        assert_eq!(
            value_and_source(address, BROKER, &node.to_string(), "message.max.bytes"),
            (Some("2000".to_string()), DYNAMIC_DEFAULT_BROKER_CONFIG)
        );
    }
    for partition in leaders.keys() {
        assert_too_large(
            produce_sized(&bootstrap, "spread", *partition, 5000),
            &format!("partition {partition} led by {}", leaders[partition]),
        );
    }

    // Broker 2's own value: on broker 2 only.
    alter(
        cluster.broker(2).address(),
        BROKER,
        "2",
        &[("message.max.bytes", SET, Some("10000"))],
    );
    assert_eq!(
        value_and_source(
            cluster.broker(2).address(),
            BROKER,
            "2",
            "message.max.bytes"
        ),
        (Some("10000".to_string()), DYNAMIC_BROKER_CONFIG)
    );
    // Brokers 1 and 3 keep the cluster default.
    for node in [1, 3] {
        assert_eq!(
            value_and_source(
                cluster.broker(node).address(),
                BROKER,
                &node.to_string(),
                "message.max.bytes"
            ),
            (Some("2000".to_string()), DYNAMIC_DEFAULT_BROKER_CONFIG)
        );
    }
    for (partition, leader) in &leaders {
        let outcome = produce_sized(&bootstrap, "spread", *partition, 5000);
        if *leader == 2 {
            assert!(
                outcome.is_ok(),
                "partition {partition} on broker 2: {outcome:?}"
            );
        } else {
            assert_too_large(outcome, &format!("partition {partition} led by {leader}"));
        }
    }
}
