"""Deleting a topic deletes the committed offsets of every group for it
(Kafka's group coordinator does so when the partitions are deleted), so
that a re-created topic of the same name is not read from stale offsets;
offsets of other topics stay.
"""

import time

from confluent_kafka import Consumer

from group_support import committed_offsets
from sluice_test import TIMEOUT_S, ScenarioFailed, TopicPartition, admin, check, client_config, create_topic, run, step

GROUP = "group-deleted-topic"
GONE = "deleted-topic"
KEPT = "kept-topic"


def scenario(address):
    admin_client = admin(address)
    create_topic(admin_client, GONE, 2)
    create_topic(admin_client, KEPT, 1)

    step("commit offsets for two topics")
    consumer = Consumer(client_config(address, **{"group.id": GROUP, "enable.auto.commit": False}))
    try:
        result = consumer.commit(
            offsets=[TopicPartition(GONE, 0, 5), TopicPartition(GONE, 1, 6), TopicPartition(KEPT, 0, 7)],
            asynchronous=False,
        )
        check(all(tp.error is None for tp in result), f"commit: {result}")
    finally:
        consumer.close()
    check(committed_offsets(address, GROUP, GONE, [0, 1]) == {0: 5, 1: 6}, "offsets of the topic to delete")

    step("delete one topic: its offsets go, the other topic's stay")
    admin_client.delete_topics([GONE], request_timeout=TIMEOUT_S)[GONE].result(TIMEOUT_S)
    deadline = time.monotonic() + 15
    while True:
        gone = committed_offsets(address, GROUP, GONE, [0, 1])
        if gone == {0: None, 1: None}:
            break
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"offsets of the deleted topic {GONE} still committed 15 s after deleting it: {gone}")
        time.sleep(0.2)
    kept = committed_offsets(address, GROUP, KEPT, [0])
    check(kept == {0: 7}, f"offsets of {KEPT} after deleting {GONE}: {kept}")

    step("a re-created topic of the same name has no committed offsets")
    create_topic(admin_client, GONE, 2)
    again = committed_offsets(address, GROUP, GONE, [0, 1])
    check(again == {0: None, 1: None}, f"the re-created {GONE} has committed offsets {again}")


run(scenario)
