"""Transactions with confluent-kafka (the current librdkafka): a
transaction over three partitions of two topics committed and another
aborted, read back read_committed and read_uncommitted, with an open
transaction holding read_committed readers back at its first offset (the
last stable offset); a consume-transform-produce loop whose output and
input offsets commit together, an aborted transaction nobody reading
committed sees, and a second producer with the same transactional.id
fencing the first.
"""

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from sluice_test import TIMEOUT_S, admin, check, create_topic, run, step


def read_all(address, partitions, committed):
    """(topic, partition, value) of every record of `partitions` (a list of
    (topic, partition)), up to the end the isolation level allows."""
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": "txn-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0) for topic, partition in partitions])
    records = []
    ended = set()
    try:
        while len(ended) < len(partitions):
            message = consumer.poll(TIMEOUT_S)
            check(message is not None, f"reading {partitions} timed out")
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    ended.add((message.topic(), message.partition()))
                    continue
                raise KafkaException(message.error())
            records.append((message.topic(), message.partition(), message.value().decode()))
    finally:
        consumer.close()
    return sorted(records)


def two_topics(address):
    admin_client = admin(address)
    create_topic(admin_client, "py-txn-a", 2)
    create_topic(admin_client, "py-txn-b", 1)
    partitions = [("py-txn-a", 0), ("py-txn-a", 1), ("py-txn-b", 0)]
    producer = Producer({"bootstrap.servers": address, "transactional.id": "py-txn-two-topics"})
    producer.init_transactions(TIMEOUT_S)

    step("a transaction over three partitions of two topics, committed")
    producer.begin_transaction()
    for topic, partition in partitions:
        producer.produce(topic, value=f"committed-{topic}-{partition}", partition=partition)
    producer.commit_transaction(TIMEOUT_S)
    committed = sorted(
        (topic, partition, f"committed-{topic}-{partition}") for topic, partition in partitions
    )

    step("another over the same partitions, aborted")
    producer.begin_transaction()
    for topic, partition in partitions:
        producer.produce(topic, value=f"aborted-{topic}-{partition}", partition=partition)
    producer.flush(TIMEOUT_S)
    producer.abort_transaction(TIMEOUT_S)
    aborted = sorted(
        (topic, partition, f"aborted-{topic}-{partition}") for topic, partition in partitions
    )
    check(read_all(address, partitions, True) == committed, "read_committed: the commit only")
    check(
        read_all(address, partitions, False) == sorted(committed + aborted),
        "read_uncommitted: both transactions",
    )

    step("an open transaction holds read_committed readers at its first offset")
    producer.begin_transaction()
    producer.produce("py-txn-a", value="open-then-committed", partition=0)
    producer.flush(TIMEOUT_S)
    check(
        read_all(address, partitions, True) == committed,
        "read_committed stops before the open transaction",
    )
    check(
        ("py-txn-a", 0, "open-then-committed") in read_all(address, partitions, False),
        "read_uncommitted reads into the open transaction",
    )
    producer.commit_transaction(TIMEOUT_S)
    check(
        read_all(address, partitions, True)
        == sorted(committed + [("py-txn-a", 0, "open-then-committed")]),
        "read_committed reads it once committed",
    )


def read(address, topic, committed):
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": "txn-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    try:
        while True:
            message = consumer.poll(TIMEOUT_S)
            check(message is not None, f"reading {topic} timed out")
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    return values
                raise KafkaException(message.error())
            values.append(message.value().decode())
    finally:
        consumer.close()


def scenario(address):
    two_topics(address)
    admin_client = admin(address)
    create_topic(admin_client, "py-txn-in", 1)
    create_topic(admin_client, "py-txn-out", 1)
    step("ten input records")
    plain = Producer({"bootstrap.servers": address})
    for index in range(10):
        plain.produce("py-txn-in", value=f"in-{index}", partition=0)
    plain.flush(TIMEOUT_S)

    step("consume-transform-produce in one transaction")
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": "py-txn-group",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition("py-txn-in", 0, 0)])
    producer = Producer({"bootstrap.servers": address, "transactional.id": "py-txn"})
    producer.init_transactions(TIMEOUT_S)
    producer.begin_transaction()
    consumed = 0
    while consumed < 10:
        message = consumer.poll(TIMEOUT_S)
        check(message is not None and not message.error(), f"consuming: {message}")
        producer.produce("py-txn-out", value=message.value().decode().upper(), partition=0)
        consumed += 1
    producer.send_offsets_to_transaction(
        [TopicPartition("py-txn-in", 0, 10)], consumer.consumer_group_metadata(), TIMEOUT_S
    )
    producer.commit_transaction(TIMEOUT_S)
    committed = consumer.committed([TopicPartition("py-txn-in", 0)], TIMEOUT_S)
    check(committed[0].offset == 10, f"the input offset committed with the output: {committed}")
    consumer.close()

    step("an aborted transaction")
    producer.begin_transaction()
    producer.produce("py-txn-out", value="ABORTED", partition=0)
    producer.flush(TIMEOUT_S)
    producer.abort_transaction(TIMEOUT_S)
    expected = [f"IN-{index}" for index in range(10)]
    check(read(address, "py-txn-out", True) == expected, "read_committed sees the commit only")
    check(
        read(address, "py-txn-out", False) == expected + ["ABORTED"],
        "read_uncommitted sees the aborted record too",
    )

    step("a second producer with the same transactional.id fences the first")
    producer.begin_transaction()
    producer.produce("py-txn-out", value="ZOMBIE", partition=0)
    producer.flush(TIMEOUT_S)
    successor = Producer({"bootstrap.servers": address, "transactional.id": "py-txn"})
    successor.init_transactions(TIMEOUT_S)
    try:
        producer.commit_transaction(TIMEOUT_S)
    except KafkaException as error:
        print(f"   the zombie's commit failed: {error.args[0]}")
        check(error.args[0].fatal() or error.args[0].txn_requires_abort(), "fenced")
    else:
        raise AssertionError("the fenced producer committed")
    successor.begin_transaction()
    successor.produce("py-txn-out", value="SUCCESSOR", partition=0)
    successor.commit_transaction(TIMEOUT_S)
    check(
        read(address, "py-txn-out", True) == expected + ["SUCCESSOR"],
        "the zombie's records are aborted",
    )


if __name__ == "__main__":
    run(scenario)
