"""kafka-python (a pure-Python client with its own protocol code): producer
(acks=all, plain and gzip) and consumer by manual assignment round trip
keyed records with headers, in order, at the offsets the producer was told."""

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from sluice_test import check, run, step

TOPIC = "kp-round-trip"
RECORDS = 2000


def scenario(address):
    sent = []
    offsets = []
    for compression in (None, "gzip"):
        step(f"produce {RECORDS // 2} records, compression {compression}")
        producer = KafkaProducer(bootstrap_servers=address, acks="all", linger_ms=5, compression_type=compression)
        futures = []
        for index in range(len(sent), len(sent) + RECORDS // 2):
            key = f"key-{index % 17}".encode()
            value = f"value {index} ".encode() * (1 + index % 13)
            headers = [("index", str(index).encode()), ("compression", str(compression).encode())]
            sent.append((key, value, headers))
            futures.append(producer.send(TOPIC, key=key, value=value, headers=headers, partition=0))
        producer.flush(60)
        for future in futures:
            metadata = future.get(timeout=60)
            offsets.append(metadata.offset)
        producer.close(30)
    check(offsets == list(range(RECORDS)), f"offsets reported: {offsets[:5]}...{offsets[-5:]}")

    step("consume them back by manual assignment")
    consumer = KafkaConsumer(
        bootstrap_servers=address,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    partition = TopicPartition(TOPIC, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    received = []
    deadline = time.monotonic() + 60
    while len(received) < RECORDS and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            received.extend(records)
    consumer.close()
    check(len(received) == RECORDS, f"received {len(received)} of {RECORDS} records")
    for index, (record, (key, value, headers)) in enumerate(zip(received, sent)):
        check(record.offset == index, f"record {index} at offset {record.offset}")
        check(record.key == key and record.value == value, f"record {index} differs")
        check(list(record.headers) == headers, f"record {index} headers {record.headers} != {headers}")


if __name__ == "__main__":
    run(scenario)
