"""Shared helpers for the Python interop scenarios.

Each scenario script takes the broker's bootstrap address as its only
argument, prints what it does, and exits non-zero with a clear message on the
first failure. server/tests/python_clients.rs starts a broker per script and
runs it with the test venv's interpreter.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 30


class ScenarioFailed(Exception):
    pass


def bootstrap():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} HOST:PORT", file=sys.stderr)
        sys.exit(2)
    return sys.argv[1]


def step(message):
    print(f"-- {message}", flush=True)


def check(condition, message):
    if not condition:
        raise ScenarioFailed(message)


def run(scenario):
    """Run scenario(bootstrap) and turn a failure into exit status 1."""
    address = bootstrap()
    try:
        scenario(address)
    except ScenarioFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KafkaException as error:
        print(f"FAILED with a Kafka error: {error!r}", file=sys.stderr, flush=True)
        raise
    print("OK", flush=True)


def expect_error(future, code, what):
    """The admin future fails with error code `code`."""
    try:
        future.result(TIMEOUT_S)
    except KafkaException as error:
        got = error.args[0].code()
        check(got == code, f"{what}: failed with {error.args[0]}, expected {KafkaError(code).name()}")
        return
    raise ScenarioFailed(f"{what}: succeeded, expected {KafkaError(code).name()}")


def client_config(address, **extra):
    config = {"bootstrap.servers": address, "broker.address.family": "v4"}
    config.update(extra)
    return config


def admin(address):
    return AdminClient(client_config(address))


def create_topic(admin_client, name, partitions, config=None):
    futures = admin_client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=TIMEOUT_S,
    )
    futures[name].result(TIMEOUT_S)


def partition_count(admin_client, topic):
    """Partitions of topic per a metadata request for all topics (which,
    unlike a request naming the topic, never auto-creates it), or None."""
    metadata = admin_client.list_topics(timeout=TIMEOUT_S)
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return None
    return len(described.partitions)


def wait_for(condition, message, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise ScenarioFailed(message)


class Deliveries:
    """Delivery reports, in the order they arrive."""

    def __init__(self):
        self.ok = []
        self.failed = []

    def __call__(self, error, message):
        if error is None:
            self.ok.append(message)
        else:
            self.failed.append((error, message))


def produce(producer, deliveries, topic, records, partition=None):
    """records: (key, value) pairs, or (key, value, timestamp_ms)."""
    for record in records:
        key, value = record[0], record[1]
        kwargs = {"key": key, "value": value, "on_delivery": deliveries}
        if len(record) > 2:
            kwargs["timestamp"] = record[2]
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(60)
    check(remaining == 0, f"{remaining} records still undelivered after 60 s")


def consumer(address):
    # group.id is required by the client but unused: partitions are assigned
    # by hand and nothing is committed (consumer groups are not served yet).
    return Consumer(
        client_config(
            address,
            **{
                "group.id": "sluice-interop-unused",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
            },
        )
    )


def watermarks(address, topic, partition):
    reader = consumer(address)
    try:
        return reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
    finally:
        reader.close()


def consume_range(address, topic, partition, start, end):
    """Messages of topic/partition from offset start up to end (exclusive)."""
    reader = consumer(address)
    messages = []
    try:
        reader.assign([TopicPartition(topic, partition, start)])
        next_offset = start
        last_progress = time.monotonic()
        while next_offset < end:
            check(
                time.monotonic() - last_progress < TIMEOUT_S,
                f"consuming {topic}/{partition}: stuck at offset {next_offset} of {end}",
            )
            message = reader.poll(0.2)
            if message is None:
                continue
            if message.error() is not None:
                raise ScenarioFailed(f"consuming {topic}/{partition}: {message.error()}")
            check(
                message.offset() >= next_offset,
                f"{topic}/{partition}: offset {message.offset()} after {next_offset}",
            )
            messages.append(message)
            next_offset = message.offset() + 1
            last_progress = time.monotonic()
    finally:
        reader.close()
    return messages


def consume_all(address, topic, partition):
    low, high = watermarks(address, topic, partition)
    return consume_range(address, topic, partition, low, high)


__all__ = [
    "KafkaError",
    "KafkaException",
    "Producer",
    "TopicPartition",
]
