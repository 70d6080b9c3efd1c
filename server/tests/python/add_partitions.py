"""CreatePartitions 3 -> 6 (AdminClient.create_partitions); a new producer
writes into all 6, explicitly and by key; shrinking is refused."""

from confluent_kafka.admin import NewPartitions

from sluice_test import (
    Deliveries,
    KafkaError,
    KafkaException,
    Producer,
    admin,
    check,
    client_config,
    consume_all,
    create_topic,
    partition_count,
    produce,
    run,
    step,
    wait_for,
    TIMEOUT_S,
)

TOPIC = "py-grows"


def scenario(address):
    admin_client = admin(address)
    step(f"create {TOPIC} with 3 partitions, one record in each")
    create_topic(admin_client, TOPIC, 3)
    producer = Producer(client_config(address, acks="all"))
    deliveries = Deliveries()
    for partition in range(3):
        produce(producer, deliveries, TOPIC, [(b"before", f"before {partition}".encode())], partition)

    step("add partitions: 3 -> 6")
    futures = admin_client.create_partitions([NewPartitions(TOPIC, 6)], request_timeout=TIMEOUT_S)
    futures[TOPIC].result(TIMEOUT_S)
    wait_for(lambda: partition_count(admin_client, TOPIC) == 6, "metadata never showed 6 partitions")

    step("produce 10 records into each of the 6 partitions explicitly")
    producer = Producer(client_config(address, acks="all"))
    for partition in range(6):
        records = [(b"explicit", f"p{partition} r{index}".encode()) for index in range(10)]
        produce(producer, deliveries, TOPIC, records, partition)
    step("produce 600 keyed records: the keys spread over all 6")
    keyed = [(f"key-{index}".encode(), b"keyed") for index in range(600)]
    produce(producer, deliveries, TOPIC, keyed)
    check(not deliveries.failed, f"failed deliveries: {deliveries.failed[:3]}")
    keyed_partitions = {message.partition() for message in deliveries.ok if message.value() == b"keyed"}
    check(keyed_partitions == set(range(6)), f"keyed records went only to {sorted(keyed_partitions)}")

    step("read all 6 back")
    for partition in range(6):
        values = [message.value() for message in consume_all(address, TOPIC, partition)]
        explicit = [value for value in values if value.startswith(b"p")]
        check(
            explicit == [f"p{partition} r{index}".encode() for index in range(10)],
            f"partition {partition}: explicit records {explicit}",
        )
        expected_before = 1 if partition < 3 else 0
        before = [value for value in values if value.startswith(b"before")]
        check(len(before) == expected_before, f"partition {partition}: {len(before)} records from before")

    step("shrinking 6 -> 4 is refused with INVALID_PARTITIONS")
    futures = admin_client.create_partitions([NewPartitions(TOPIC, 4)], request_timeout=TIMEOUT_S)
    try:
        futures[TOPIC].result(TIMEOUT_S)
        check(False, "shrinking the partition count succeeded")
    except KafkaException as error:
        code = error.args[0].code()
        check(code == KafkaError.INVALID_PARTITIONS, f"shrinking failed with {error.args[0]}, expected INVALID_PARTITIONS")
    check(partition_count(admin_client, TOPIC) == 6, "the partition count changed")


if __name__ == "__main__":
    run(scenario)
