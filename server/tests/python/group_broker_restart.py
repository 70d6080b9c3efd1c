"""Committed offsets (with their metadata strings) survive a broker
restart: GROUP_RESTART=stop (SIGTERM, clean) or kill9 (SIGKILL: every
acknowledged commit must still be there). After the restart, OffsetFetch
(the client's committed()) answers the same offsets and a group consumer
resumes from them.
"""

import os
import time

from confluent_kafka import Consumer, TopicPartition

from group_support import NO_OFFSET, harness, produce_keyed
from sluice_test import TIMEOUT_S, ScenarioFailed, admin, check, client_config, create_topic, run, step

TOPIC = "group-restart"
GROUP = "group-restart"
PARTITIONS = 3


def committed_with_metadata(address):
    reader = Consumer(client_config(address, **{"group.id": GROUP, "enable.auto.commit": False}))
    try:
        answer = reader.committed([TopicPartition(TOPIC, partition) for partition in range(PARTITIONS)], timeout=TIMEOUT_S)
    finally:
        reader.close()
    result = {}
    for tp in answer:
        check(tp.error is None, f"committed() of partition {tp.partition}: {tp.error}")
        result[tp.partition] = None if tp.offset == NO_OFFSET else (tp.offset, tp.metadata)
    return result


def scenario(address):
    mode = os.environ.get("GROUP_RESTART", "stop")
    check(mode in ("stop", "kill9"), f"GROUP_RESTART={mode!r}")
    create_topic(admin(address), TOPIC, PARTITIONS)
    produced = produce_keyed(address, TOPIC, 150, "before")
    per_partition = {}
    for partition, offset, _ in produced:
        per_partition[partition] = max(per_partition.get(partition, -1), offset + 1)
    check(len(per_partition) == PARTITIONS, f"records reached only partitions {sorted(per_partition)}")

    step("a group member commits chosen offsets with metadata")
    consumer = Consumer(
        client_config(
            address,
            **{
                "group.id": GROUP,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
            },
        )
    )
    consumer.subscribe([TOPIC])
    deadline = time.monotonic() + TIMEOUT_S
    while not consumer.assignment():
        check(time.monotonic() < deadline, "no assignment")
        consumer.poll(0.1)
    expected = {partition: (end // (partition + 2), f"meta-{partition}") for partition, end in per_partition.items()}
    consumer.commit(
        offsets=[TopicPartition(TOPIC, partition, offset, metadata) for partition, (offset, metadata) in expected.items()],
        asynchronous=False,
    )
    consumer.close()
    before = committed_with_metadata(address)
    check(before == expected, f"before the restart: committed {before}, expected {expected}")

    step(f"broker {mode}, then start on the same data directory")
    harness(f"broker {mode}")
    harness("broker start")
    after = committed_with_metadata(address)
    check(after == expected, f"after the {mode} restart: committed {after}, expected {expected}")

    step("a group consumer resumes at the committed offsets")
    consumer = Consumer(
        client_config(
            address,
            **{"group.id": GROUP, "enable.auto.commit": False, "auto.offset.reset": "earliest"},
        )
    )
    consumer.subscribe([TOPIC])
    wanted = {(partition, offset) for partition, end in per_partition.items() for offset in range(expected[partition][0], end)}
    seen = []
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not wanted <= set(seen):
            if time.monotonic() > deadline:
                missing = sorted(wanted - set(seen))
                raise ScenarioFailed(f"after the restart: {len(missing)} records not consumed, first {missing[:10]}")
            message = consumer.poll(0.1)
            if message is None:
                continue
            check(message.error() is None, f"consume error: {message.error()}")
            seen.append((message.partition(), message.offset()))
    finally:
        consumer.close()
    below = sorted(record for record in seen if record[1] < expected[record[0]][0])
    check(not below, f"records below the committed offsets were delivered: {below[:10]}")
    check(len(seen) == len(set(seen)), "a record was consumed twice")


run(scenario)
