"""What TLS costs a client, same broker, same run: produce and consume
throughput and produce latency (p50/p99, from send to delivery report)
over PLAINTEXT, SSL and SASL_SSL (SCRAM-SHA-512), in alternating rounds
(A B C A B C ...) so drift affects every listener alike.

Usage: tls_overhead.py PLAINTEXT_ADDR SSL_ADDR SASL_SSL_ADDR CERT_DIR USER PASSWORD [ROUNDS] [RECORDS]
CERT_DIR holds ca.pem, client.pem, client.key (as server/tests/security.rs
makes them). Uses confluent-kafka (librdkafka), acks=all, 1 KiB records.
"""

import os
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer

RECORD_BYTES = 1024


def percentile(sorted_values, fraction):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def produce(config, topic, records):
    producer = Producer({**config, "acks": "all", "linger.ms": 5, "batch.size": 131072,
                         "queue.buffering.max.messages": 1000000})
    payload = b"x" * RECORD_BYTES
    latencies = []

    def delivered(error, message, sent=None):
        if error is not None:
            raise RuntimeError(str(error))

    started = time.perf_counter()
    for index in range(records):
        sent = time.perf_counter()
        producer.produce(topic, payload, partition=0,
                         on_delivery=lambda error, message, sent=sent: latencies.append(time.perf_counter() - sent))
        if index % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return records / elapsed, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000


def consume(config, topic, records):
    consumer = Consumer({**config, "group.id": f"tls-bench-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    count = 0
    started = None
    while count < records:
        messages = consumer.consume(10000, 5.0)
        if messages and started is None:
            started = time.perf_counter()
        count += sum(1 for message in messages if message.error() is None)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def main():
    plaintext, ssl, sasl_ssl, certs, user, password = sys.argv[1:7]
    rounds = int(sys.argv[7]) if len(sys.argv) > 7 else 3
    records = int(sys.argv[8]) if len(sys.argv) > 8 else 100000
    ca = os.path.join(certs, "ca.pem")
    listeners = {
        "PLAINTEXT": {"bootstrap.servers": plaintext},
        "SSL": {"bootstrap.servers": ssl, "security.protocol": "SSL", "ssl.ca.location": ca,
                "ssl.certificate.location": os.path.join(certs, "client.pem"),
                "ssl.key.location": os.path.join(certs, "client.key")},
        "SASL_SSL": {"bootstrap.servers": sasl_ssl, "security.protocol": "SASL_SSL", "ssl.ca.location": ca,
                     "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password},
    }
    results = {name: [] for name in listeners}
    for round_index in range(rounds):
        for name, config in listeners.items():
            topic = f"tls-bench-{name.lower()}-{round_index}-{uuid.uuid4().hex[:6]}"
            produced, p50, p99 = produce(config, topic, records)
            consumed = consume(config, topic, records)
            results[name].append((produced, p50, p99, consumed))
            print(f"round {round_index} {name:9} produce {produced:9.0f} rec/s ({produced * RECORD_BYTES / 1e6:6.1f} MB/s) "
                  f"p50 {p50:7.2f} ms p99 {p99:7.2f} ms | consume {consumed:9.0f} rec/s", flush=True)
    print()
    print("median over rounds | produce rec/s | p50 ms | p99 ms | consume rec/s | produce vs PLAINTEXT | consume vs PLAINTEXT")
    medians = {}
    for name, rows in results.items():
        columns = list(zip(*rows))
        medians[name] = [sorted(column)[len(column) // 2] for column in columns]
    base = medians["PLAINTEXT"]
    for name, (produced, p50, p99, consumed) in medians.items():
        print(f"{name} | {produced:.0f} | {p50:.2f} | {p99:.2f} | {consumed:.0f} | "
              f"{produced / base[0]:.2f} | {consumed / base[3]:.2f}")


if __name__ == "__main__":
    main()
