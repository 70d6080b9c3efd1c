"""ListOffsets by timestamp (consumer.offsets_for_times): the offset of the
first record (not batch) whose timestamp is at or after the target, -1 past
the end; earliest/latest are the log start and the high watermark."""

import time

from sluice_test import (
    Deliveries,
    Producer,
    TopicPartition,
    admin,
    check,
    client_config,
    consumer,
    create_topic,
    produce,
    run,
    step,
    watermarks,
    TIMEOUT_S,
)

TOPIC = "py-times"
RECORDS = 100
STEP_MS = 1000


def scenario(address):
    base_ms = int(time.time() * 1000) - 3_600_000
    step(f"create {TOPIC}; produce {RECORDS} records {STEP_MS} ms apart in large batches")
    create_topic(admin(address), TOPIC, 1)
    # linger.ms: many records per batch, so a batch-granular answer is wrong.
    producer = Producer(client_config(address, **{"acks": "all", "linger.ms": 200}))
    deliveries = Deliveries()
    records = [(b"k", f"record {index}".encode(), base_ms + index * STEP_MS) for index in range(RECORDS)]
    produce(producer, deliveries, TOPIC, records, partition=0)
    check(not deliveries.failed, f"failed deliveries: {deliveries.failed[:3]}")

    low, high = watermarks(address, TOPIC, 0)
    check((low, high) == (0, RECORDS), f"watermarks ({low}, {high}), expected (0, {RECORDS})")

    reader = consumer(address)
    try:
        cases = [
            (base_ms - 10_000, 0, "before every record"),
            (base_ms, 0, "the first record's timestamp"),
            (base_ms + 37 * STEP_MS, 37, "exactly record 37's timestamp"),
            (base_ms + 37 * STEP_MS + 1, 38, "just after record 37"),
            (base_ms + 99 * STEP_MS, 99, "the last record's timestamp"),
            (base_ms + 99 * STEP_MS + 1, -1, "after every record"),
        ]
        for target, expected, what in cases:
            step(f"offsets_for_times at {what}")
            [answer] = reader.offsets_for_times([TopicPartition(TOPIC, 0, target)], timeout=TIMEOUT_S)
            check(answer.error is None, f"{what}: error {answer.error}")
            check(
                answer.offset == expected,
                f"offsets_for_times({what}) = {answer.offset}, expected {expected}",
            )
    finally:
        reader.close()


if __name__ == "__main__":
    run(scenario)
