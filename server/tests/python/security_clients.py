"""confluent-kafka and kafka-python over SASL_SSL with SCRAM-SHA-512 and
over SSL with a client certificate: produce, consume in a group with a
committed offset; a wrong password and an untrusted certificate are refused
with the error each client documents, quickly.

Arguments: SASL_SSL_ADDRESS SSL_ADDRESS CERT_DIR USER PASSWORD. CERT_DIR
holds ca.pem, client.pem/client.key (signed by ca.pem, CN=alice) and
rogue.pem/rogue.key (self-signed: untrusted). Made at test time.
"""

import os
import ssl
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from sluice_test import ScenarioFailed, check, step

REFUSAL_S_MAX = 10


def confluent_round_trip(name, config):
    topic = f"sec-{name}-{uuid.uuid4().hex[:8]}"
    step(f"confluent-kafka {name}: produce 100 records to {topic}")
    producer = Producer({**config, "acks": "all"})
    for index in range(100):
        producer.produce(topic, key=str(index).encode(), value=f"value {index}".encode())
    remaining = producer.flush(30)
    check(remaining == 0, f"{name}: {remaining} records not delivered")

    step(f"confluent-kafka {name}: consume them in a group and commit")
    group = f"group-{name}-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    values = []
    deadline = time.time() + 60
    while len(values) < 100 and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            raise ScenarioFailed(f"{name}: consume error {message.error()}")
        values.append(message.value().decode())
    check(values == [f"value {index}" for index in range(100)], f"{name}: consumed {values[:3]}... ({len(values)})")
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, 0)], timeout=30)
    check(committed[0].offset == 100, f"{name}: committed offset {committed[0].offset}")
    consumer.close()


def confluent_refused(name, config, expected_codes):
    """A client with these settings fails: librdkafka reports the error
    through error_cb, and metadata requests fail."""
    step(f"confluent-kafka {name}: refused")
    errors = []
    started = time.time()
    producer = Producer({**config, "error_cb": errors.append, "socket.timeout.ms": 5000})
    # The refusal arrives through error_cb: wait for it, not for a timeout.
    while time.time() - started < REFUSAL_S_MAX and not {e.code() for e in errors} & expected_codes:
        producer.poll(0.05)
    elapsed = time.time() - started
    try:
        producer.list_topics(timeout=2)
        raise ScenarioFailed(f"{name}: metadata succeeded, expected a refusal")
    except KafkaException:
        pass
    codes = {error.code() for error in errors}
    check(codes & expected_codes, f"{name}: errors {[str(error) for error in errors]}")
    check(elapsed < REFUSAL_S_MAX + 1, f"{name}: refusal took {elapsed:.1f}s")
    print(f"   refused with {[str(error) for error in errors if error.code() in expected_codes][:1]} in {elapsed:.2f}s")


def kafka_python_round_trip(name, config):
    from kafka import KafkaConsumer, KafkaProducer

    topic = f"sec-kp-{name}-{uuid.uuid4().hex[:8]}"
    step(f"kafka-python {name}: produce 50 records to {topic}")
    producer = KafkaProducer(acks="all", **config)
    futures = [producer.send(topic, value=f"kp {index}".encode(), partition=0) for index in range(50)]
    producer.flush(30)
    offsets = [future.get(timeout=30).offset for future in futures]
    check(offsets == list(range(50)), f"{name}: offsets {offsets[:5]}")
    producer.close(10)

    step(f"kafka-python {name}: consume in a group and commit")
    consumer = KafkaConsumer(topic, group_id=f"kp-group-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=30000, **config)
    values = []
    for message in consumer:
        values.append(message.value.decode())
        if len(values) == 50:
            break
    check(values == [f"kp {index}" for index in range(50)], f"{name}: consumed {values[:3]} ({len(values)})")
    consumer.commit()
    from kafka import TopicPartition as KpTopicPartition
    committed = consumer.committed(KpTopicPartition(topic, 0))
    check(committed == 50, f"{name}: committed {committed}")
    consumer.close()


def kafka_python_refused(name, config, log_patterns):
    """kafka-python logs the broker's refusal on its `kafka` logger
    (SaslAuthenticationFailedError, or the TLS error) and its admin client
    fails to start; both must happen quickly."""
    import logging

    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError as KpError

    step(f"kafka-python {name}: refused")
    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Capture(level=logging.DEBUG)
    logger = logging.getLogger("kafka")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    started = time.time()
    try:
        client = KafkaAdminClient(request_timeout_ms=5000, api_version_auto_timeout_ms=REFUSAL_S_MAX * 1000,
                                  **config)
        client.close()
        raise ScenarioFailed(f"{name}: the admin client connected, expected a refusal")
    except (KpError, ssl.SSLError) as error:
        # An untrusted certificate surfaces as the TLS layer's ssl.SSLError.
        elapsed = time.time() - started
        records.append(f"{type(error).__name__}: {error}")
        print(f"   failed with {type(error).__name__} in {elapsed:.2f}s")
    finally:
        logger.removeHandler(handler)
    matching = [record for record in records if any(pattern in record for pattern in log_patterns)]
    check(matching, f"{name}: none of {log_patterns} logged: {records[-5:]}")
    print(f"   logged: {matching[0][:200]}")
    check(elapsed < REFUSAL_S_MAX + 1, f"{name}: refusal took {elapsed:.1f}s")


def main():
    if len(sys.argv) != 6:
        print(f"usage: {sys.argv[0]} SASL_SSL_ADDRESS SSL_ADDRESS CERT_DIR USER PASSWORD", file=sys.stderr)
        sys.exit(2)
    sasl_ssl, ssl, certs, user, password = sys.argv[1:]
    ca = os.path.join(certs, "ca.pem")
    scram = {
        "bootstrap.servers": sasl_ssl,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": ca,
    }
    mtls = {
        "bootstrap.servers": ssl,
        "security.protocol": "SSL",
        "ssl.ca.location": ca,
        "ssl.certificate.location": os.path.join(certs, "client.pem"),
        "ssl.key.location": os.path.join(certs, "client.key"),
    }
    try:
        confluent_round_trip("sasl-ssl-scram-sha-512", scram)
        confluent_round_trip("ssl-client-certificate", mtls)
        confluent_refused("wrong-password", {**scram, "sasl.password": "not-" + password},
                          {KafkaError._AUTHENTICATION})
        confluent_refused("untrusted-certificate", {
            **mtls,
            "ssl.certificate.location": os.path.join(certs, "rogue.pem"),
            "ssl.key.location": os.path.join(certs, "rogue.key"),
        }, {KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})

        kp_scram = {
            "bootstrap_servers": sasl_ssl,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": password,
            "ssl_cafile": ca,
        }
        kp_mtls = {
            "bootstrap_servers": ssl,
            "security_protocol": "SSL",
            "ssl_cafile": ca,
            "ssl_certfile": os.path.join(certs, "client.pem"),
            "ssl_keyfile": os.path.join(certs, "client.key"),
        }
        kafka_python_round_trip("sasl-ssl-scram-sha-512", kp_scram)
        kafka_python_round_trip("ssl-client-certificate", kp_mtls)
        kafka_python_refused("wrong-password", {**kp_scram, "sasl_plain_password": "not-" + password},
                             ["SaslAuthenticationFailedError"])
        kafka_python_refused("untrusted-certificate", {
            **kp_mtls,
            "ssl_certfile": os.path.join(certs, "rogue.pem"),
            "ssl_keyfile": os.path.join(certs, "rogue.key"),
        }, ["SSLError"])
    except ScenarioFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
