"""Helpers for the consumer-group scenarios (server/tests/groups.rs).

- Worker: a group_worker.py consumer process, its events read by a thread
  into one queue shared by all workers (arrival order = real order closely
  enough: an event is printed before the action that could contradict it).
- Ledger: folds those events into what the group did, and records every
  violation of Kafka's group semantics as it happens:
    * a member's first record of a newly assigned partition is not at the
      partition's committed offset (or at the log start when none);
    * a record below an acknowledged committed offset is delivered again.
- harness(): ask the Rust test (which owns the broker process) to stop,
  kill or start it; the answer comes on stdin.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from sluice_test import (
    TIMEOUT_S,
    Consumer,
    Deliveries,
    Producer,
    ScenarioFailed,
    TopicPartition,
    check,
    client_config,
    produce,
    step,
)

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "group_worker.py")
# librdkafka's "no committed offset" marker (OFFSET_INVALID).
NO_OFFSET = -1001


def harness(command):
    """Have the Rust harness run `command` ("broker stop", "broker kill9",
    "broker start") and wait for its "ok"."""
    print(f"@@ {command}", flush=True)
    answer = sys.stdin.readline().strip()
    check(answer == "ok", f"harness answered {answer!r} to {command!r}")


class Worker:
    """A consumer process (group_worker.py)."""

    def __init__(self, events, bootstrap, topic, group, name, config=None):
        self.name = name
        self.events = events
        self.stderr_lines = []
        self.process = subprocess.Popen(
            [sys.executable, WORKER, bootstrap, topic, group, name, json.dumps(config or {})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "garbage", "line": line}
            self.events.put((self.name, event))
        self.events.put((self.name, {"event": "exited"}))

    def _read_stderr(self):
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip())

    def send(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def kill9(self):
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT_S)

    def wait_exit(self, timeout_s=TIMEOUT_S):
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise ScenarioFailed(f"worker {self.name} did not exit within {timeout_s} s")

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT_S)


class Ledger:
    """What the workers of one group did, from their events."""

    def __init__(self):
        self.events = queue.Queue()
        self.workers = {}
        self.assignment = {}  # worker -> set of partitions it owns now
        self.fresh = {}  # worker -> partitions assigned, no record yet
        self.consumed = {}  # (partition, offset) -> [worker, ...]
        self.keys = {}  # (partition, offset) -> key
        self.committed = {}  # partition -> highest acknowledged commit
        self.last_commit = {}  # worker -> {partition: offset}
        self.assign_counts = {}  # worker -> number of on_assign calls
        self.revoke_counts = {}  # worker -> number of on_revoke calls
        self.violations = []
        self.problems = []  # commit failures, consumer errors, garbage
        self.exited = set()
        self.history = []  # the last events, for failure messages

    def start(self, bootstrap, topic, group, name, config=None):
        worker = Worker(self.events, bootstrap, topic, group, name, config)
        self.workers[name] = worker
        self.assignment[name] = set()
        self.fresh[name] = set()
        self.last_commit[name] = {}
        self.assign_counts[name] = 0
        self.revoke_counts[name] = 0
        self.exited.discard(name)
        return worker

    def stop_all(self):
        for worker in self.workers.values():
            worker.stop()

    def _apply(self, name, event):
        self.history.append((name, event))
        del self.history[:-40]
        kind = event.get("event")
        if kind == "assigned":
            self.assign_counts[name] += 1
            self.assignment[name] = set(event["partitions"])
            self.fresh[name] = set(event["partitions"])
        elif kind in ("revoked", "lost"):
            if kind == "revoked":
                self.revoke_counts[name] += 1
            self.assignment[name] -= set(event["partitions"])
            self.fresh[name] -= set(event["partitions"])
        elif kind == "record":
            key = (event["partition"], event["offset"])
            partition, offset = key
            committed = self.committed.get(partition)
            if partition in self.fresh[name]:
                self.fresh[name].discard(partition)
                expected = committed if committed is not None else 0
                if offset != expected:
                    self.violations.append(
                        f"{name} started partition {partition} at offset {offset}, "
                        f"but the committed offset was {committed} (expected {expected})"
                    )
            if key in self.consumed and committed is not None and offset < committed:
                self.violations.append(
                    f"{name} was redelivered partition {partition} offset {offset} "
                    f"(first consumed by {self.consumed[key]}), below the committed offset {committed}"
                )
            self.consumed.setdefault(key, []).append(name)
            self.keys[key] = event.get("key")
        elif kind == "committed":
            for partition, offset in event["offsets"].items():
                partition = int(partition)
                self.last_commit[name][partition] = offset
                self.committed[partition] = max(self.committed.get(partition, offset), offset)
        elif kind in ("commit_failed", "error", "garbage"):
            self.problems.append(f"{name}: {event}")
        elif kind == "exited":
            self.exited.add(name)
            self.assignment[name] = set()
            self.fresh[name] = set()

    def pump(self, timeout_s):
        """Apply the events that arrive within timeout_s (at least one wait)."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                name, event = self.events.get(timeout=max(remaining, 0))
            except queue.Empty:
                return
            self._apply(name, event)
            if time.monotonic() >= deadline:
                return

    def wait_until(self, condition, what, timeout_s=TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"{what}: not within {timeout_s} s\n{self.report()}")
            self.pump(0.1)

    def check_clean(self):
        check(not self.violations, "group semantics violated:\n  " + "\n  ".join(self.violations) + "\n" + self.report())

    def report(self):
        lines = [
            f"assignments: { {name: sorted(parts) for name, parts in self.assignment.items()} }",
            f"committed: {dict(sorted(self.committed.items()))}",
            f"records consumed: {len(self.consumed)} distinct, "
            f"{sum(len(names) for names in self.consumed.values())} deliveries",
            f"assign/revoke calls: {self.assign_counts} / {self.revoke_counts}",
            f"exited: {sorted(self.exited)}",
        ]
        if self.violations:
            lines.append("violations: " + "; ".join(self.violations[:20]))
        if self.problems:
            lines.append("problems: " + "; ".join(self.problems[:20]))
        lines.append("last events:")
        lines.extend(f"  {name}: {event}" for name, event in self.history[-25:])
        for name, worker in self.workers.items():
            tail = [line for line in worker.stderr_lines if line][-5:]
            if tail:
                lines.append(f"{name} stderr tail: " + " | ".join(tail))
        return "\n".join(lines)

    def close_in_turn(self, names, partition_count):
        """Have the workers `names` commit and close (leaving the group) one
        at a time: the next is told only after the previous one exited with
        status 0 and the rest own its partitions, so that no rebalance is
        under way when a member closes.

        Members told together race in librdkafka (2.16, eager protocol):
        when a member's heartbeat learns of the other's LeaveGroup while it
        commits before close(), a revoke waits for its application; close()
        then sends the member's own LeaveGroup at once (resetting its
        member id) and only afterwards runs the revoke callback, whose
        commit the coordinator refuses with UNKNOWN_MEMBER_ID, as Kafka's
        does."""
        remaining = list(names)
        while remaining:
            name = remaining.pop(0)
            self.workers[name].send("close")
            self.wait_until(lambda: name in self.exited, f"{name} closed")
            check(self.workers[name].wait_exit() == 0, f"{name} exited with an error")
            if remaining:
                self.wait_until(
                    lambda: self.partitions_disjoint_and_covering(remaining, partition_count),
                    f"{remaining} own the partitions {name} left",
                )

    def partitions_disjoint_and_covering(self, names, partition_count):
        """The live members `names` all own something, nothing twice, and
        together every partition."""
        owned = [self.assignment[name] for name in names]
        union = set().union(*owned)
        return (
            all(owned)
            and sum(len(parts) for parts in owned) == len(union)
            and union == set(range(partition_count))
        )


def produce_keyed(address, topic, count, tag):
    """Produce `count` keyed records; return [(partition, offset, key)]."""
    producer = Producer(client_config(address, acks="all", **{"enable.idempotence": True}))
    deliveries = Deliveries()
    records = [(f"{tag}-{index}".encode(), f"value {tag} {index}".encode()) for index in range(count)]
    produce(producer, deliveries, topic, records)
    check(not deliveries.failed, f"deliveries failed: {deliveries.failed[:3]}")
    return [(message.partition(), message.offset(), message.key().decode()) for message in deliveries.ok]


def committed_offsets(address, group, topic, partitions):
    """{partition: committed offset or None} per OffsetFetch (the client's
    committed()), asked by a consumer that does not join the group."""
    reader = Consumer(client_config(address, **{"group.id": group, "enable.auto.commit": False}))
    try:
        answer = reader.committed([TopicPartition(topic, partition) for partition in partitions], timeout=TIMEOUT_S)
    finally:
        reader.close()
    result = {}
    for tp in answer:
        check(tp.error is None, f"committed() of {topic}/{tp.partition}: {tp.error}")
        result[tp.partition] = None if tp.offset == NO_OFFSET else tp.offset
    return result


def end_offsets(address, topic, partitions):
    reader = Consumer(client_config(address, **{"group.id": "sluice-group-tests-watermarks"}))
    try:
        return {
            partition: reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)[1]
            for partition in partitions
        }
    finally:
        reader.close()


__all__ = ["harness", "Worker", "Ledger", "produce_keyed", "committed_offsets", "end_offsets", "step", "check"]
