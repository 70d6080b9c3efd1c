"""DeleteTopics: the topic leaves the metadata, its configs cannot be
described, a second delete is UNKNOWN_TOPIC_OR_PART, and a topic
created again under the same name starts empty."""

from confluent_kafka.admin import ConfigResource, ResourceType

from sluice_test import (
    Deliveries,
    KafkaError,
    Producer,
    admin,
    check,
    expect_error,
    client_config,
    create_topic,
    partition_count,
    produce,
    run,
    step,
    wait_for,
    watermarks,
    TIMEOUT_S,
)

TOPIC = "py-deleted"


def scenario(address):
    admin_client = admin(address)
    step(f"create {TOPIC} with 2 partitions and write 20 records")
    create_topic(admin_client, TOPIC, 2)
    producer = Producer(client_config(address, acks="all"))
    deliveries = Deliveries()
    produce(producer, deliveries, TOPIC, [(f"k{i}".encode(), b"doomed") for i in range(20)])
    check(not deliveries.failed, f"failed deliveries: {deliveries.failed[:3]}")
    del producer

    step("delete it")
    admin_client.delete_topics([TOPIC], operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)[TOPIC].result(TIMEOUT_S)
    wait_for(lambda: partition_count(admin_client, TOPIC) is None, "the deleted topic is still listed")

    step("describe its configs: UNKNOWN_TOPIC_OR_PARTITION")
    resource = ConfigResource(ResourceType.TOPIC, TOPIC)
    expect_error(
        admin_client.describe_configs([resource], request_timeout=TIMEOUT_S)[resource],
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        "describing a deleted topic",
    )

    step("delete it again: UNKNOWN_TOPIC_OR_PARTITION")
    expect_error(
        admin_client.delete_topics([TOPIC], request_timeout=TIMEOUT_S)[TOPIC],
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        "deleting a deleted topic",
    )

    step("create it again: a new, empty topic")
    create_topic(admin_client, TOPIC, 1)
    check(partition_count(admin_client, TOPIC) == 1, "the re-created topic has 1 partition")
    low, high = watermarks(address, TOPIC, 0)
    check((low, high) == (0, 0), f"the re-created topic is not empty: watermarks ({low}, {high})")


if __name__ == "__main__":
    run(scenario)
