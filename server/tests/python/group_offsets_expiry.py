"""Offsets retention (broker started with --offsets-retention-ms 2000):
the committed offsets of a group that still has a member do not expire,
however old; once the group is empty for longer than the retention, they
are gone (OffsetFetch answers no offset).
"""

import time

from group_support import Ledger, committed_offsets, produce_keyed
from sluice_test import TIMEOUT_S, ScenarioFailed, admin, check, create_topic, run, step

TOPIC = "group-expiry"
GROUP = "group-expiry"
PARTITIONS = 2
RETENTION_S = 2.0


def scenario(address):
    create_topic(admin(address), TOPIC, PARTITIONS)
    ledger = Ledger()
    try:
        step("a member consumes and commits")
        worker = ledger.start(address, TOPIC, GROUP, "keeper")
        ledger.wait_until(lambda: ledger.assignment["keeper"] == set(range(PARTITIONS)), "member owns all partitions")
        produced = produce_keyed(address, TOPIC, 20, "expiry")
        wanted = {(partition, offset) for partition, offset, _ in produced}
        ledger.wait_until(lambda: wanted <= ledger.consumed.keys(), "records consumed")
        worker.send("commit")
        ledger.wait_until(
            lambda: all(ledger.committed.get(partition, 0) >= offset + 1 for partition, offset in wanted),
            "the commit",
        )
        expected = {partition: ledger.committed[partition] for partition in range(PARTITIONS)}

        step(f"while the member lives, the offsets outlive the retention ({RETENTION_S} s)")
        until = time.monotonic() + RETENTION_S + 1.5
        while time.monotonic() < until:
            committed = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
            check(committed == expected, f"offsets of a group with a member changed: {committed}, committed {expected}")
            ledger.pump(0.3)

        step("the member closes; the empty group's offsets expire")
        worker.send("close")
        ledger.wait_until(lambda: "keeper" in ledger.exited, "member closed")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            committed = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
            if all(offset is None for offset in committed.values()):
                break
            check(
                all(offset in (None, expected[partition]) for partition, offset in committed.items()),
                f"offsets changed while expiring: {committed}, committed {expected}",
            )
            if time.monotonic() > deadline:
                raise ScenarioFailed(
                    f"offsets still there {TIMEOUT_S} s after the group became empty "
                    f"(retention {RETENTION_S} s): {committed}"
                )
            time.sleep(0.2)
        check(not ledger.problems, "commit or consume errors:\n" + "\n".join(ledger.problems))
    finally:
        ledger.stop_all()


run(scenario)
