"""ElectLeaders (API 43) through confluent-kafka's AdminClient.elect_leaders.

Usage: elect_leaders.py HOST:PORT TOPIC

Partition 0 of TOPIC must be led by another replica than its preferred one
(which is back in the ISR). A PREFERRED election of it succeeds, a second
one is ELECTION_NOT_NEEDED, an unknown partition is
UNKNOWN_TOPIC_OR_PARTITION, and an election of every partition (None)
answers no error.
"""

import sys

from confluent_kafka import ElectionType, TopicPartition
from confluent_kafka.admin import AdminClient

UNKNOWN_TOPIC_OR_PARTITION = 3
ELECTION_NOT_NEEDED = 84


def code(outcome):
    if outcome is None:
        return 0
    if isinstance(outcome, Exception):
        outcome = outcome.args[0]
    return outcome.code()


def elect(admin, partitions):
    result = admin.elect_leaders(ElectionType.PREFERRED, partitions).result(timeout=60)
    outcome = {(tp.topic, tp.partition): code(error) for tp, error in result.items()}
    print(f"-- elect {partitions}: {outcome}", flush=True)
    return outcome


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    first = elect(admin, [TopicPartition(topic, 0), TopicPartition(topic, 99)])
    expected = {(topic, 0): 0, (topic, 99): UNKNOWN_TOPIC_OR_PARTITION}
    if first != expected:
        sys.exit(f"first election: {first}, expected {expected}")
    again = elect(admin, [TopicPartition(topic, 0)])
    if again != {(topic, 0): ELECTION_NOT_NEEDED}:
        sys.exit(f"second election: {again}, expected ELECTION_NOT_NEEDED")
    every = elect(admin, None)
    if any(error != 0 for error in every.values()):
        sys.exit(f"election of every partition: {every}")
    print("ok", flush=True)


main()
