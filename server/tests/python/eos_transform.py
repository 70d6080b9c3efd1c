"""One life of an exactly-once consume-transform-produce process, for
server/tests/exactly_once.rs, which kill -9's it at random points and starts
it again until the whole input is transformed.

usage: eos_transform.py HOST:PORT INPUT OUTPUT GROUP TRANSACTIONAL_ID

A fixed transactional.id (init_transactions fences the killed predecessor
and aborts its open transaction) and a read_committed consumer in a group
with static membership (the successor takes the killed member's place at
once instead of waiting for its session to expire). Each polled batch is one
transaction: the records, transformed, to OUTPUT under the same key, and
the consumer's positions through send_offsets_to_transaction.

Prints "committed <records>" after each commit and "done" (exit 0) once the
group's position on every partition of INPUT is its end.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

TIMEOUT_S = 30
BATCH_RECORDS_MAX = 50


def main():
    address, input_topic, output_topic, group, transactional_id = sys.argv[1:6]
    producer = Producer(
        {
            "bootstrap.servers": address,
            "broker.address.family": "v4",
            "transactional.id": transactional_id,
            "linger.ms": 0,
        }
    )
    producer.init_transactions(TIMEOUT_S)
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "broker.address.family": "v4",
            "group.id": group,
            "group.instance.id": f"{transactional_id}-member",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([input_topic])
    metadata = consumer.list_topics(input_topic, timeout=TIMEOUT_S)
    partitions = sorted(metadata.topics[input_topic].partitions)
    ends = {
        partition: consumer.get_watermark_offsets(
            TopicPartition(input_topic, partition), timeout=TIMEOUT_S
        )[1]
        for partition in partitions
    }
    print(f"started, input ends {ends}", flush=True)
    transformed = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        messages = consumer.consume(num_messages=BATCH_RECORDS_MAX, timeout=0.5)
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
        if messages:
            producer.begin_transaction()
            for message in messages:
                producer.produce(
                    output_topic,
                    key=message.key(),
                    value=message.value() + b":transformed",
                )
            # A partition of the assignment not read yet has no position.
            positions = [
                entry for entry in consumer.position(consumer.assignment()) if entry.offset >= 0
            ]
            producer.send_offsets_to_transaction(
                positions, consumer.consumer_group_metadata(), TIMEOUT_S
            )
            producer.commit_transaction(TIMEOUT_S)
            transformed += len(messages)
            print(f"committed {transformed}", flush=True)
            continue
        assignment = consumer.assignment()
        if len(assignment) == len(partitions):
            committed = consumer.committed(assignment, timeout=TIMEOUT_S)
            if all(entry.offset == ends[entry.partition] for entry in committed):
                print(f"done: committed {committed}", flush=True)
                consumer.close()
                return
    print("FAILED: the input was not transformed within 120 s", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
