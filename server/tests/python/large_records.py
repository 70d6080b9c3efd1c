"""Record size limits: a 1 MiB record is accepted by a topic whose
max.message.bytes allows it (and read back whole, although larger than the
consumer's max.partition.fetch.bytes); a 10 MiB record is refused with
MESSAGE_TOO_LARGE and nothing is written; a record just over the default
max.message.bytes is refused too; the broker stays healthy."""

from sluice_test import (
    Deliveries,
    KafkaError,
    Producer,
    admin,
    check,
    client_config,
    consume_all,
    create_topic,
    partition_count,
    produce,
    run,
    step,
    watermarks,
)

TOPIC = "py-large"
DEFAULT_TOPIC = "py-large-default"
MEBIBYTE = 1 << 20


def producer_for(address):
    # The client must not refuse large records itself: its limit is far above
    # the broker's, so that MESSAGE_TOO_LARGE can only come from the broker.
    return Producer(
        client_config(
            address,
            **{
                "acks": "all",
                "message.max.bytes": 20_000_000,
                "compression.type": "none",
                "retries": 0,
            },
        )
    )


def scenario(address):
    admin_client = admin(address)
    step(f"create {TOPIC} with max.message.bytes=2097152 and {DEFAULT_TOPIC} with defaults")
    create_topic(admin_client, TOPIC, 1, {"max.message.bytes": "2097152"})
    create_topic(admin_client, DEFAULT_TOPIC, 1)

    step("a 1 MiB record is accepted")
    one_mebibyte = bytes(range(256)) * (MEBIBYTE // 256)
    deliveries = Deliveries()
    produce(producer_for(address), deliveries, TOPIC, [(b"big", one_mebibyte)], partition=0)
    check(not deliveries.failed, f"the 1 MiB record failed: {deliveries.failed}")
    check(deliveries.ok[0].offset() == 0, f"the 1 MiB record landed at offset {deliveries.ok[0].offset()}")

    step("a 10 MiB record is refused with MESSAGE_TOO_LARGE")
    deliveries = Deliveries()
    produce(producer_for(address), deliveries, TOPIC, [(b"huge", b"h" * (10 * MEBIBYTE))], partition=0)
    check(len(deliveries.failed) == 1, f"the 10 MiB record was accepted: {deliveries.ok}")
    error = deliveries.failed[0][0]
    check(error.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"the 10 MiB record failed with {error}, expected MESSAGE_TOO_LARGE")
    check(watermarks(address, TOPIC, 0) == (0, 1), "the refused record changed the log end")

    step("a record just over the default max.message.bytes (1048588) is refused")
    deliveries = Deliveries()
    produce(producer_for(address), deliveries, DEFAULT_TOPIC, [(b"over", b"o" * 1_100_000)], partition=0)
    check(len(deliveries.failed) == 1, "a 1.1 MB record was accepted under the default max.message.bytes")
    error = deliveries.failed[0][0]
    check(error.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"failed with {error}, expected MESSAGE_TOO_LARGE")
    check(watermarks(address, DEFAULT_TOPIC, 0) == (0, 0), "the refused record changed the log end")

    step("the broker is healthy: metadata, a small record, the 1 MiB record read back whole")
    check(partition_count(admin_client, TOPIC) == 1, "metadata after the refusals")
    deliveries = Deliveries()
    produce(producer_for(address), deliveries, TOPIC, [(b"small", b"after")], partition=0)
    check(not deliveries.failed and deliveries.ok[0].offset() == 1, f"a small record after the refusal: {deliveries.failed}")
    messages = consume_all(address, TOPIC, 0)
    check([message.offset() for message in messages] == [0, 1], "offsets read back")
    check(messages[0].value() == one_mebibyte, "the 1 MiB record read back differs")
    check(messages[1].value() == b"after", "the small record read back differs")


if __name__ == "__main__":
    run(scenario)
