"""kafka-python (its own protocol code) in consumer groups: after a manual
consumer.commit() a new consumer of the group resumes exactly after the
committed records; with enable_auto_commit the periodic commits alone
(the first consumer closes without committing) are where the next one
resumes.
"""

import time

from kafka import KafkaConsumer, TopicPartition

from group_support import committed_offsets, end_offsets, produce_keyed
from sluice_test import TIMEOUT_S, ScenarioFailed, admin, check, create_topic, run, step

TOPIC = "kafka-python-commits"
PARTITIONS = 2


def group_consumer(address, group, **settings):
    consumer = KafkaConsumer(
        bootstrap_servers=address,
        group_id=group,
        client_id=f"kafka-python-{group}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        **settings,
    )
    consumer.subscribe([TOPIC])
    return consumer


def consume(consumer, done, what, max_records=10):
    """Poll until done(records) is true; return the records [(p, o)]."""
    records = []
    deadline = time.monotonic() + TIMEOUT_S
    while not done(records):
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{what}: not within {TIMEOUT_S} s; consumed {len(records)}: {records[:20]}")
        for batch in consumer.poll(timeout_ms=200, max_records=max_records).values():
            records.extend((message.partition, message.offset) for message in batch)
    return records


def first_offsets(records):
    first = {}
    for partition, offset in records:
        first.setdefault(partition, offset)
    return first


def check_resume(second, committed, wanted, what):
    check(len(second) == len(set(second)), f"{what}: a record consumed twice")
    check(set(second) == wanted, f"{what}: consumed {sorted(set(second) ^ wanted)[:20]} differently than expected")
    for partition, offset in first_offsets(second).items():
        expected = committed.get(partition) or 0
        check(offset == expected, f"{what}: partition {partition} resumed at {offset}, committed {expected}")


def scenario(address):
    create_topic(admin(address), TOPIC, PARTITIONS)
    produced = produce_keyed(address, TOPIC, 100, "first")
    everything = {(partition, offset) for partition, offset, _ in produced}

    step("manual: consume about half, consumer.commit(), close without committing more")
    first = group_consumer(address, "kp-manual", enable_auto_commit=False)
    taken = consume(first, lambda records: len(records) >= 50, "first manual consumer")
    first.commit()
    first.close(autocommit=False)
    positions = {}
    for partition, offset in taken:
        positions[partition] = max(positions.get(partition, 0), offset + 1)
    committed = committed_offsets(address, "kp-manual", TOPIC, range(PARTITIONS))
    for partition in range(PARTITIONS):
        # A partition assigned but not yet read may be committed at 0.
        allowed = (positions[partition],) if partition in positions else (None, 0)
        check(committed[partition] in allowed, f"committed {committed}, consumed up to {positions}")

    step("manual: a new consumer resumes right after the committed records")
    second = group_consumer(address, "kp-manual", enable_auto_commit=False)
    wanted = everything - set(taken)
    rest = consume(second, lambda records: set(records) >= wanted, "second manual consumer")
    second.close(autocommit=False)
    check_resume(rest, committed, wanted, "manual commit")

    step("auto: consume everything; the periodic auto commit reaches the log end")
    third = group_consumer(address, "kp-auto", enable_auto_commit=True, auto_commit_interval_ms=200)
    consume(third, lambda records: set(records) >= everything, "auto-commit consumer")
    ends = end_offsets(address, TOPIC, range(PARTITIONS))
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        # Auto commits happen inside poll(); keep polling (nothing new comes).
        for batch in third.poll(timeout_ms=200).values():
            raise ScenarioFailed(f"unexpected records after the log end: {batch[:3]}")
        committed = committed_offsets(address, "kp-auto", TOPIC, range(PARTITIONS))
        if committed == ends:
            break
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"auto commits never reached the log ends {ends}: committed {committed}")
    third.close(autocommit=False)

    step("auto: a new consumer reads only what was produced after the auto commits")
    more = produce_keyed(address, TOPIC, 40, "second")
    wanted = {(partition, offset) for partition, offset, _ in more}
    fourth = group_consumer(address, "kp-auto", enable_auto_commit=False)
    rest = consume(fourth, lambda records: set(records) >= wanted, "consumer after auto commits")
    fourth.close(autocommit=False)
    check_resume(rest, committed, wanted, "auto commit")


run(scenario)
