"""Features Sluice does not serve yet fail at once with an error the client
reports, instead of a client retrying until its timeout:

- a consumer with group.protocol=consumer (KIP-848): poll() reports a fatal
  error naming ConsumerGroupHeartbeat, which the broker refuses with
  UNSUPPORTED_VERSION.

(Transactional producers used to be refused here too; the broker serves
transactions now: transactional_producer.py.)

"At once" is checked against a bound far below the clients' own timeouts
(a KIP-848 consumer would poll forever).
"""

import time

from confluent_kafka import Consumer, KafkaError, KafkaException

from sluice_test import check, run, step

FAIL_FAST_S = 10


def kip848_consumer_fails_fast(address):
    step("a consumer with group.protocol=consumer")
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": "kip848",
            "group.protocol": "consumer",
        }
    )
    consumer.subscribe(["kip848-topic"])
    started = time.monotonic()
    deadline = started + FAIL_FAST_S
    try:
        while time.monotonic() < deadline:
            try:
                message = consumer.poll(0.5)
            except KafkaException as error:
                kafka_error = error.args[0]
            else:
                if message is None or message.error() is None:
                    continue
                kafka_error = message.error()
            print(f"   error after {time.monotonic() - started:.2f}s: {kafka_error}")
            # librdkafka reports a fatal consumer error as an event with
            # code _FATAL (its fatal() flag is set only on the underlying one).
            if kafka_error.fatal() or kafka_error.code() == KafkaError._FATAL:
                # librdkafka words it itself ("ConsumerGroupHeartbeat fatal
                # error: Broker: Unsupported version"); the broker's message
                # (set group.protocol=classic) is what the Java client shows.
                check(
                    "ConsumerGroupHeartbeat" in kafka_error.str(),
                    f"the fatal error does not name the refused API: {kafka_error}",
                )
                return
    finally:
        consumer.close()
    raise AssertionError(f"no fatal error within {FAIL_FAST_S}s")


def scenario(address):
    kip848_consumer_fails_fast(address)


if __name__ == "__main__":
    run(scenario)
