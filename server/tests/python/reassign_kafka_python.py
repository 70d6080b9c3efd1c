"""Partition reassignment (KIP-455) driven by kafka-python's own protocol
code: its AlterPartitionReassignments and ListPartitionReassignments request
classes (its admin client has no method for them yet), sent to any broker.

Usage: reassign_kafka_python.py HOST:PORT TOPIC

TOPIC has one partition with one replica. The script writes 300 records,
moves the partition to the two other brokers (its leader moves with it),
follows ListPartitionReassignments until it is done, checks the metadata,
reads every record back from the new leader with kafka-python's consumer,
and checks the refusals: an unknown broker (INVALID_REPLICA_ASSIGNMENT), a
cancellation with nothing in progress (NO_REASSIGNMENT_IN_PROGRESS), an
unknown partition (UNKNOWN_TOPIC_OR_PARTITION).
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.protocol.admin import (
    AlterPartitionReassignmentsRequest_v0,
    ListPartitionReassignmentsRequest_v0,
)

UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REPLICA_ASSIGNMENT = 39
NO_REASSIGNMENT_IN_PROGRESS = 85
RECORDS = 300


def alter(admin, topic, partition, replicas):
    request = AlterPartitionReassignmentsRequest_v0(
        timeout_ms=30000,
        topics=[(topic, [(partition, replicas, {})], {})],
        tags={},
    )
    response = admin.send_request(request)
    print(f"-- alter {topic}/{partition} -> {replicas}: {response}", flush=True)
    if response.error_code != 0:
        sys.exit(f"AlterPartitionReassignments failed as a whole: {response}")
    [(name, partitions, _)] = response.responses
    [(index, code, message, _)] = partitions
    if (name, index) != (topic, partition):
        sys.exit(f"answer for {name}/{index}, asked {topic}/{partition}")
    return code, message


def ongoing(admin, topic):
    request = ListPartitionReassignmentsRequest_v0(
        timeout_ms=30000, topics=[(topic, [0], {})], tags={}
    )
    response = admin.send_request(request)
    if response.error_code != 0:
        sys.exit(f"ListPartitionReassignments failed: {response}")
    return [
        (name, index, replicas, adding, removing)
        for (name, partitions, _) in response.topics
        for (index, replicas, adding, removing, _) in partitions
    ]


def partition_state(admin, topic):
    [description] = admin.describe_topics([topic])
    [partition] = description["partitions"]
    return partition


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    brokers = sorted(broker["node_id"] for broker in admin.describe_cluster()["brokers"])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for index in range(RECORDS):
        producer.send(topic, value=f"moved-{index}".encode(), partition=0)
    producer.flush(timeout=60)
    before = partition_state(admin, topic)
    print(f"-- before: {before}", flush=True)
    target = [broker for broker in brokers if broker not in before["replicas"]]
    if len(target) != 2:
        sys.exit(f"expected two other brokers, got {target} of {brokers}")

    code, message = alter(admin, topic, 0, target)
    if code != 0:
        sys.exit(f"the move was refused: {code} {message}")
    deadline = time.time() + 120
    while True:
        moving = ongoing(admin, topic)
        state = partition_state(admin, topic)
        done = (
            not moving
            and sorted(state["replicas"]) == target
            and sorted(state["isr"]) == target
            and state["leader"] in target
        )
        if done:
            break
        if time.time() > deadline:
            sys.exit(f"not moved in time: in progress {moving}, metadata {state}")
        time.sleep(0.3)
    print(f"-- after: {state}", flush=True)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=20000,
    )
    consumer.assign([TopicPartition(topic, 0)])
    values = [message.value.decode() for message in consumer]
    consumer.close()
    expected = [f"moved-{index}" for index in range(RECORDS)]
    if values[:RECORDS] != expected:
        sys.exit(f"read back {len(values)} records, first {values[:3]}; expected {RECORDS}")

    code, _ = alter(admin, topic, 0, [99])
    if code != INVALID_REPLICA_ASSIGNMENT:
        sys.exit(f"an unknown broker: {code}, expected INVALID_REPLICA_ASSIGNMENT")
    code, _ = alter(admin, topic, 0, None)
    if code != NO_REASSIGNMENT_IN_PROGRESS:
        sys.exit(f"cancelling nothing: {code}, expected NO_REASSIGNMENT_IN_PROGRESS")
    code, _ = alter(admin, topic, 7, target)
    if code != UNKNOWN_TOPIC_OR_PARTITION:
        sys.exit(f"an unknown partition: {code}, expected UNKNOWN_TOPIC_OR_PARTITION")
    admin.close()
    producer.close()
    print("ok", flush=True)


main()
