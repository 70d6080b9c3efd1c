"""One confluent-kafka group consumer, run as its own process by the
consumer-group scenarios (group_support.Worker starts it).

usage: group_worker.py BOOTSTRAP TOPIC GROUP NAME [CONFIG_JSON]

It subscribes to TOPIC in GROUP and prints one JSON event per line on
stdout, flushed at once, so that the scenario sees what it does even if it
is killed with SIGKILL:
  {"event": "assigned", "partitions": [..]}      on_assign (eager protocol)
  {"event": "revoked", "partitions": [..]}       on_revoke, after committing
  {"event": "record", "partition": p, "offset": o, "key": k}
  {"event": "committed", "offsets": {p: next}}   after a commit succeeded
  {"event": "commit_failed", "error": ".."}
  {"event": "paused"}                            after "pause"
  {"event": "closed"}                            after close()
Commits are manual and synchronous: every COMMIT_EVERY records, in on_revoke
(so that a rebalance never redelivers what was consumed), on the "commit"
command and when closing. Commands on stdin, one per line: "commit",
"pause" (stop fetching, stay a member), "close" (commit, close, exit 0),
"exit" (close without committing: for static members, close() does not
leave the group).
"""

import json
import queue
import sys
import threading

from confluent_kafka import Consumer, KafkaException, TopicPartition

COMMIT_EVERY = 25


def emit(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main():
    bootstrap, topic, group, name = sys.argv[1:5]
    extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    config = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "client.id": name,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
    }
    config.update(extra)
    consumer = Consumer(config)
    # Next offset to commit per partition, for partitions this member owns.
    positions = {}
    since_commit = [0]

    def commit(partitions=None):
        chosen = {
            partition: offset
            for partition, offset in positions.items()
            if partitions is None or partition in partitions
        }
        if not chosen:
            return
        try:
            consumer.commit(
                offsets=[TopicPartition(topic, partition, offset) for partition, offset in chosen.items()],
                asynchronous=False,
            )
        except KafkaException as error:
            emit(event="commit_failed", error=str(error))
            return
        since_commit[0] = 0
        emit(event="committed", offsets={str(partition): offset for partition, offset in chosen.items()})

    def on_assign(_consumer, partitions):
        emit(event="assigned", partitions=sorted(tp.partition for tp in partitions))

    def on_revoke(_consumer, partitions):
        revoked = {tp.partition for tp in partitions}
        commit(revoked)
        for partition in revoked:
            positions.pop(partition, None)
        emit(event="revoked", partitions=sorted(revoked))

    def on_lost(_consumer, partitions):
        for tp in partitions:
            positions.pop(tp.partition, None)
        emit(event="lost", partitions=sorted(tp.partition for tp in partitions))

    commands = queue.Queue()

    def read_commands():
        for line in sys.stdin:
            commands.put(line.strip())
        commands.put("eof")

    threading.Thread(target=read_commands, daemon=True).start()
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    while True:
        try:
            command = commands.get_nowait()
        except queue.Empty:
            command = None
        if command == "commit":
            commit()
        elif command == "pause":
            consumer.pause(consumer.assignment())
            emit(event="paused")
        elif command in ("close", "eof"):
            commit()
            consumer.close()
            emit(event="closed")
            return
        elif command == "exit":
            consumer.close()
            emit(event="closed")
            return
        message = consumer.poll(0.1)
        if message is None:
            continue
        if message.error() is not None:
            emit(event="error", error=str(message.error()))
            continue
        key = message.key().decode() if message.key() is not None else None
        emit(event="record", partition=message.partition(), offset=message.offset(), key=key)
        positions[message.partition()] = message.offset() + 1
        since_commit[0] += 1
        if since_commit[0] >= COMMIT_EVERY:
            commit()


if __name__ == "__main__":
    main()
