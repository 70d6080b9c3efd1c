"""Topic configs through AdminClient: set at creation, described with their
sources, changed by IncrementalAlterConfigs (SET, DELETE) and by the legacy
AlterConfigs (which replaces the whole set); bad names and values are
refused with INVALID_CONFIG and change nothing; a missing topic is
UNKNOWN_TOPIC_OR_PARTITION."""

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, ResourceType, NewTopic

from sluice_test import (
    KafkaError,
    admin,
    check,
    expect_error,
    create_topic,
    partition_count,
    run,
    step,
    TIMEOUT_S,
)

TOPIC = "py-configs"


def describe(admin_client, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    futures = admin_client.describe_configs([resource], request_timeout=TIMEOUT_S)
    return futures[resource].result(TIMEOUT_S)


def value(entries, name):
    entry = entries.get(name)
    check(entry is not None, f"DescribeConfigs does not list {name}")
    return entry.value


def incremental(admin_client, topic, entries):
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    futures = admin_client.incremental_alter_configs([resource], request_timeout=TIMEOUT_S)
    return futures[resource]


def scenario(address):
    admin_client = admin(address)
    step(f"create {TOPIC} with retention.ms=3600000")
    create_topic(admin_client, TOPIC, 1, {"retention.ms": "3600000"})

    step("describe: the explicit value and the defaults, with their sources")
    entries = describe(admin_client, TOPIC)
    retention = entries["retention.ms"]
    check(retention.value == "3600000", f"retention.ms is {retention.value}")
    check(
        ConfigSource(retention.source) == ConfigSource.DYNAMIC_TOPIC_CONFIG,
        f"retention.ms source is {retention.source}, expected DYNAMIC_TOPIC_CONFIG",
    )
    check(not retention.is_default, "retention.ms set at creation is reported as a default")
    max_bytes = entries["max.message.bytes"]
    check(max_bytes.value == "1048588", f"default max.message.bytes is {max_bytes.value}")
    check(max_bytes.is_default, "default max.message.bytes is not reported as a default")
    check(value(entries, "cleanup.policy") == "delete", "default cleanup.policy")

    step("IncrementalAlterConfigs: SET max.message.bytes, DELETE retention.ms")
    incremental(
        admin_client,
        TOPIC,
        [
            ConfigEntry("max.message.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    ).result(TIMEOUT_S)
    entries = describe(admin_client, TOPIC)
    check(value(entries, "max.message.bytes") == "2097152", "max.message.bytes after SET")
    check(value(entries, "retention.ms") == "604800000", "retention.ms after DELETE is the default")
    check(entries["retention.ms"].is_default, "retention.ms after DELETE is not reported as a default")

    step("IncrementalAlterConfigs with an unknown name or a bad value: INVALID_CONFIG, nothing changes")
    expect_error(
        incremental(admin_client, TOPIC, [ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)]),
        KafkaError.INVALID_CONFIG,
        "unknown config name",
    )
    expect_error(
        incremental(admin_client, TOPIC, [ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)]),
        KafkaError.INVALID_CONFIG,
        "retention.ms=soon",
    )
    entries = describe(admin_client, TOPIC)
    check(value(entries, "max.message.bytes") == "2097152", "a refused alter changed max.message.bytes")
    check(value(entries, "retention.ms") == "604800000", "a refused alter changed retention.ms")

    step("AlterConfigs (legacy) replaces the whole set: max.message.bytes returns to its default")
    resource = ConfigResource(ResourceType.TOPIC, TOPIC, set_config={"cleanup.policy": "compact"})
    admin_client.alter_configs([resource], request_timeout=TIMEOUT_S)[resource].result(TIMEOUT_S)
    entries = describe(admin_client, TOPIC)
    check(value(entries, "cleanup.policy") == "compact", "cleanup.policy after AlterConfigs")
    check(value(entries, "max.message.bytes") == "1048588", "AlterConfigs kept a config it did not name")

    step("DescribeConfigs of a missing topic: UNKNOWN_TOPIC_OR_PARTITION")
    missing = ConfigResource(ResourceType.TOPIC, "py-no-such-topic")
    futures = admin_client.describe_configs([missing], request_timeout=TIMEOUT_S)
    expect_error(futures[missing], KafkaError.UNKNOWN_TOPIC_OR_PART, "describing a missing topic")

    step("CreateTopics with a bad config: INVALID_CONFIG, no topic")
    futures = admin_client.create_topics(
        [NewTopic("py-bad-config", num_partitions=1, replication_factor=1, config={"retention.ms": "forever"})],
        request_timeout=TIMEOUT_S,
    )
    expect_error(futures["py-bad-config"], KafkaError.INVALID_CONFIG, "creating with retention.ms=forever")
    check(partition_count(admin_client, "py-bad-config") is None, "the refused topic exists")

    step("CreateTopics with validate_only: nothing created")
    futures = admin_client.create_topics(
        [NewTopic("py-validate-only", num_partitions=2, replication_factor=1)],
        validate_only=True,
        request_timeout=TIMEOUT_S,
    )
    futures["py-validate-only"].result(TIMEOUT_S)
    check(partition_count(admin_client, "py-validate-only") is None, "validate_only created the topic")


if __name__ == "__main__":
    run(scenario)
