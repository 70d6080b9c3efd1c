"""A transaction over partitions led by several brokers, with the
authorizer on: alice (SASL) has WRITE on the topic and the transactional
id, and READ on the topic and her group; the brokers' own calls to each
other (WriteTxnMarkers, AddPartitionsToTxn verification) are authorized
as broker-to-broker calls. Committed records are read back with
read_committed, aborted ones are not.

Arguments: SASL_BOOTSTRAP PASSWORD TOPIC PARTITIONS TRANSACTIONAL_ID GROUP.
"""

import sys
import time

from confluent_kafka import Consumer, Producer

from sluice_test import ScenarioFailed, check, step

TIMEOUT_S = 60


def main():
    bootstrap, password, topic, partitions, transactional_id, group = sys.argv[1:7]
    partitions = int(partitions)
    alice = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": password,
    }
    step(f"alice commits one record to each of {partitions} partitions, then aborts more")
    producer = Producer({**alice, "transactional.id": transactional_id})
    producer.init_transactions(TIMEOUT_S)
    producer.begin_transaction()
    for partition in range(partitions):
        producer.produce(topic, value=f"committed-{partition}".encode(), partition=partition)
    producer.commit_transaction(TIMEOUT_S)
    producer.begin_transaction()
    for partition in range(partitions):
        producer.produce(topic, value=f"aborted-{partition}".encode(), partition=partition)
    producer.flush(TIMEOUT_S)
    producer.abort_transaction(TIMEOUT_S)

    step("read_committed sees the committed records only")
    consumer = Consumer({**alice, "group.id": group, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values = []
    deadline = time.time() + TIMEOUT_S
    while len(values) < partitions and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        check(message.error() is None, f"consuming: {message.error()}")
        values.append(message.value().decode())
    # A little longer: nothing aborted may follow.
    end = time.time() + 2
    while time.time() < end:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value().decode())
    consumer.close()
    expected = sorted(f"committed-{partition}" for partition in range(partitions))
    check(sorted(values) == expected, f"read {sorted(values)}, expected {expected}")
    print("OK", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ScenarioFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
