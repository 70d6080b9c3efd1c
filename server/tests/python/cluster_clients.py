"""Python clients on a three-broker cluster (server/tests/cluster.rs).

The test created TOPIC with PARTITIONS partitions whose leaders are spread
over the three brokers, and gives this script one broker's address only: the
clients must learn the other leaders from Metadata and follow them.

confluent-kafka and kafka-python each produce to every partition (acks=all)
and read every partition back by manual assignment; then a consumer group of
two confluent-kafka members subscribes to the topic, reads every record, and
commits positions that a third client reads back as the end offsets.
"""

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition

from sluice_test import (
    Deliveries,
    check,
    client_config,
    consume_all,
    produce,
    run,
    step,
    watermarks,
)

TOPIC = "cluster-clients"
PARTITIONS = 12
RECORDS = 25
GROUP = "cluster-group"
GROUP_TIMEOUT_S = 90


def confluent_round_trip(address):
    step(f"confluent-kafka produces {RECORDS} records to each of {PARTITIONS} partitions")
    producer = Producer(client_config(address, acks="all", **{"message.timeout.ms": 30000}))
    for partition in range(PARTITIONS):
        deliveries = Deliveries()
        records = [(b"ck", f"confluent {partition} {index}".encode()) for index in range(RECORDS)]
        produce(producer, deliveries, TOPIC, records, partition=partition)
        check(not deliveries.failed, f"partition {partition}: failed deliveries {deliveries.failed[:3]}")
        check(len(deliveries.ok) == RECORDS, f"partition {partition}: {len(deliveries.ok)} delivered")
        check(
            all(message.partition() == partition for message in deliveries.ok),
            f"partition {partition}: records delivered elsewhere",
        )
    step("confluent-kafka reads every partition back")
    for partition in range(PARTITIONS):
        values = [message.value().decode() for message in consume_all(address, TOPIC, partition)]
        ours = [value for value in values if value.startswith("confluent ")]
        expected = [f"confluent {partition} {index}" for index in range(RECORDS)]
        check(ours == expected, f"partition {partition}: read {ours[:3]}... expected {expected[:3]}...")


def kafka_python_round_trip(address):
    step(f"kafka-python produces {RECORDS} records to each partition")
    producer = KafkaProducer(bootstrap_servers=address, acks="all", linger_ms=5)
    futures = []
    for partition in range(PARTITIONS):
        for index in range(RECORDS):
            value = f"kafka-python {partition} {index}".encode()
            futures.append((partition, producer.send(TOPIC, key=b"kp", value=value, partition=partition)))
    producer.flush(60)
    for partition, future in futures:
        metadata = future.get(timeout=60)
        check(metadata.partition == partition, f"record for {partition} landed in {metadata.partition}")
    producer.close(30)

    step("kafka-python reads every partition back")
    consumer = KafkaConsumer(
        bootstrap_servers=address, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    partitions = [KafkaTopicPartition(TOPIC, partition) for partition in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    end_offsets = consumer.end_offsets(partitions)
    received = {partition: [] for partition in range(PARTITIONS)}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = all(consumer.position(tp) >= end_offsets[tp] for tp in partitions)
        if done:
            break
        for tp, records in consumer.poll(timeout_ms=500).items():
            received[tp.partition].extend(record.value.decode() for record in records)
    consumer.close()
    for partition in range(PARTITIONS):
        ours = [value for value in received[partition] if value.startswith("kafka-python ")]
        expected = [f"kafka-python {partition} {index}" for index in range(RECORDS)]
        check(ours == expected, f"partition {partition}: kafka-python read {len(ours)} of {RECORDS}")


def group_member(address):
    return Consumer(
        client_config(
            address,
            **{
                "group.id": GROUP,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10000,
            },
        )
    )


def at_end(member, ends):
    """Whether the member's position in each partition it holds is the end."""
    return all(tp.offset == ends[tp.partition] for tp in member.position(member.assignment()))


def group_spans_the_topic(address):
    ends = {partition: watermarks(address, TOPIC, partition)[1] for partition in range(PARTITIONS)}
    step(f"a group of two members reads every record (end offsets {ends})")
    members = [group_member(address), group_member(address)]
    for member in members:
        member.subscribe([TOPIC])
    seen = set()
    wanted = {(partition, offset) for partition, end in ends.items() for offset in range(end)}
    deadline = time.monotonic() + GROUP_TIMEOUT_S
    while True:
        # Both members poll, so that each takes part in every rebalance.
        for member in members:
            message = member.poll(0.1)
            if message is None:
                continue
            check(message.error() is None, f"group member: {message.error()}")
            seen.add((message.partition(), message.offset()))
        assignments = [member.assignment() for member in members]
        spread = all(assignments) and {tp.partition for a in assignments for tp in a} == set(range(PARTITIONS))
        if spread and wanted <= seen and all(at_end(member, ends) for member in members):
            break
        check(
            time.monotonic() < deadline,
            f"group: {len(seen & wanted)} of {len(wanted)} records, assignments "
            f"{[[tp.partition for tp in a] for a in assignments]}",
        )
    step(f"members hold {[[tp.partition for tp in member.assignment()] for member in members]}; commit")
    for member in members:
        positions = member.position(member.assignment())
        member.commit(offsets=positions, asynchronous=False)
    for member in members:
        member.close()

    step("a fresh client reads the committed offsets")
    reader = group_member(address)
    committed = reader.committed([TopicPartition(TOPIC, partition) for partition in range(PARTITIONS)], timeout=30)
    reader.close()
    got = {tp.partition: tp.offset for tp in committed}
    check(got == ends, f"committed {got}, end offsets {ends}")


def scenario(address):
    confluent_round_trip(address)
    kafka_python_round_trip(address)
    group_spans_the_topic(address)


if __name__ == "__main__":
    run(scenario)
