"""confluent-kafka (current librdkafka from the wheel): metadata lists the
broker and the topic, 5000 lines produced come back identical and in order
(the same scenario kcat.rs runs with Debian's old librdkafka)."""

import time

from confluent_kafka import Consumer, Producer, TopicPartition

from sluice_test import check, run, step

TOPIC = "confluent-lines"
LINES = [f"{number}" for number in range(1, 5001)]


def scenario(address):
    step("produce 5000 lines")
    producer = Producer({"bootstrap.servers": address, "acks": "all"})
    failures = []
    for line in LINES:
        producer.produce(TOPIC, value=line.encode(), partition=0, on_delivery=lambda error, _: failures.append(error) if error else None)
        producer.poll(0)
    check(producer.flush(60) == 0, "messages left undelivered")
    check(not failures, f"delivery failures: {failures[:3]}")

    step("metadata lists the broker and the topic")
    metadata = producer.list_topics(timeout=10)
    check(len(metadata.brokers) == 1, f"brokers: {metadata.brokers}")
    check(TOPIC in metadata.topics, f"topics: {list(metadata.topics)}")

    step("consume them back")
    consumer = Consumer({"bootstrap.servers": address, "group.id": "unused-by-assign", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    received = []
    deadline = time.monotonic() + 60
    while len(received) < len(LINES) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        check(message.error() is None, f"consume error: {message.error()}")
        received.append(message.value().decode())
    consumer.close()
    check(received == LINES, f"received {len(received)} lines, first differing at {next((i for i, (a, b) in enumerate(zip(received, LINES)) if a != b), None)}")


if __name__ == "__main__":
    run(scenario)
