"""A topic of 6 partitions created by AdminClient; 6000 keyed records from an
idempotent producer with acks=all. Every key stays in one partition and its
records keep their order; each partition's offsets run from 0 with no gap;
every delivery report's offset holds the record it reported."""

from collections import defaultdict

from sluice_test import (
    Deliveries,
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
)

TOPIC = "py-keyed"
PARTITIONS = 6
KEYS = 60
RECORDS = 6000


def scenario(address):
    step(f"create {TOPIC} with {PARTITIONS} partitions")
    admin_client = admin(address)
    create_topic(admin_client, TOPIC, PARTITIONS)
    check(
        partition_count(admin_client, TOPIC) == PARTITIONS,
        f"metadata does not list {PARTITIONS} partitions for {TOPIC}",
    )

    step(f"produce {RECORDS} records over {KEYS} keys, acks=all, idempotent")
    producer = Producer(
        client_config(address, **{"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    )
    deliveries = Deliveries()
    sequence = defaultdict(int)
    records = []
    for index in range(RECORDS):
        key = f"key-{index % KEYS}"
        records.append((key.encode(), f"{key}:{sequence[key]}".encode()))
        sequence[key] += 1
    produce(producer, deliveries, TOPIC, records)
    check(not deliveries.failed, f"failed deliveries: {deliveries.failed[:3]}")
    check(len(deliveries.ok) == RECORDS, f"{len(deliveries.ok)} delivery reports")

    reported = {}
    partition_of_key = {}
    for message in deliveries.ok:
        key = message.key().decode()
        first = partition_of_key.setdefault(key, message.partition())
        check(first == message.partition(), f"{key} went to partitions {first} and {message.partition()}")
        reported[(message.partition(), message.offset())] = message.value()
    used = set(partition_of_key.values())
    check(len(used) == PARTITIONS, f"{KEYS} keys used only partitions {sorted(used)}")

    step("read every partition back")
    seen = defaultdict(list)
    total = 0
    for partition in range(PARTITIONS):
        messages = consume_all(address, TOPIC, partition)
        offsets = [message.offset() for message in messages]
        check(
            offsets == list(range(len(offsets))),
            f"partition {partition}: offsets are not 0..{len(offsets) - 1} without gaps",
        )
        for message in messages:
            total += 1
            key = message.key().decode()
            check(
                partition_of_key.get(key) == partition,
                f"{key} found in partition {partition}, delivered to {partition_of_key.get(key)}",
            )
            check(
                reported.get((partition, message.offset())) == message.value(),
                f"partition {partition} offset {message.offset()} holds {message.value()!r}, "
                f"the delivery report said {reported.get((partition, message.offset()))!r}",
            )
            seen[key].append(int(message.value().decode().split(":")[1]))
    check(total == RECORDS, f"{total} records stored, {RECORDS} produced (duplicates or losses)")
    for key, numbers in seen.items():
        check(numbers == list(range(len(numbers))), f"{key}: records out of order: {numbers[:20]}")
    print(f"{total} records in {PARTITIONS} partitions, every key in order")


if __name__ == "__main__":
    run(scenario)
