"""Static membership (KIP-345, group.instance.id): a member that restarts
within the session timeout, after a clean close (a static member's close
does not leave the group) or after kill -9, gets the same partitions back
and the other member is not rebalanced.

What is checked about "not rebalanced": the other member's on_assign and
on_revoke callbacks (librdkafka calls them on every rebalance of the eager
protocol) are not called from the moment the first member stops until the
restarted member has its assignment and both have consumed records
produced to every partition afterwards, and for OBSERVE_S more (several
heartbeat intervals, in which a pending rebalance would reach it).
"""

import time

from group_support import Ledger, produce_keyed
from sluice_test import admin, check, create_topic, run, step

TOPIC = "group-static"
GROUP = "group-static"
PARTITIONS = 4
# Longer than a restart of the worker process, shorter than the test.
SESSION_TIMEOUT_MS = 20000
# Heartbeats every 500 ms: a rebalance would reach the other member well
# within this window.
OBSERVE_S = 3


def config(instance):
    return {"group.instance.id": instance, "session.timeout.ms": SESSION_TIMEOUT_MS}


def scenario(address):
    create_topic(admin(address), TOPIC, PARTITIONS)
    ledger = Ledger()
    try:
        step("two static members join")
        ledger.start(address, TOPIC, GROUP, "a-1", config("static-a"))
        ledger.start(address, TOPIC, GROUP, "b", config("static-b"))
        ledger.wait_until(
            lambda: ledger.partitions_disjoint_and_covering(["a-1", "b"], PARTITIONS),
            "two static members own all partitions",
        )
        produced = produce_keyed(address, TOPIC, 80, "warmup")
        wanted = {(partition, offset) for partition, offset, _ in produced}
        ledger.wait_until(lambda: wanted <= ledger.consumed.keys(), "warm-up records consumed")
        owned_by_a = set(ledger.assignment["a-1"])
        b_calls = (ledger.assign_counts["b"], ledger.revoke_counts["b"])
        step(f"a owns {sorted(owned_by_a)}, b {sorted(ledger.assignment['b'])}; b callbacks (assign, revoke) {b_calls}")

        previous = "a-1"
        for number, how in ((2, "close"), (3, "kill9")):
            step(f"a restarts after {'a clean close without leaving' if how == 'close' else 'kill -9'}")
            worker = ledger.workers[previous]
            if how == "close":
                worker.send("commit")
                worker.send("exit")
                check(worker.wait_exit() == 0, f"{previous} exited with an error")
            else:
                worker.kill9()
            ledger.wait_until(lambda: previous in ledger.exited, f"{previous} exit seen")
            name = f"a-{number}"
            ledger.start(address, TOPIC, GROUP, name, config("static-a"))
            ledger.wait_until(lambda: bool(ledger.assignment[name]), f"{name} gets an assignment")
            check(
                ledger.assignment[name] == owned_by_a,
                f"{name} got {sorted(ledger.assignment[name])}, static-a had {sorted(owned_by_a)}\n{ledger.report()}",
            )
            produced = produce_keyed(address, TOPIC, 40, f"after-{how}")
            wanted = {(partition, offset) for partition, offset, _ in produced}
            ledger.wait_until(lambda: wanted <= ledger.consumed.keys(), f"records after the {how} consumed")
            deadline = time.monotonic() + OBSERVE_S
            while time.monotonic() < deadline:
                ledger.pump(0.1)
            check(
                (ledger.assign_counts["b"], ledger.revoke_counts["b"]) == b_calls,
                f"b was rebalanced when static-a restarted after {how}: callbacks (assign, revoke) went "
                f"from {b_calls} to {(ledger.assign_counts['b'], ledger.revoke_counts['b'])}\n{ledger.report()}",
            )
            for partition, offset in wanted:
                owner = "b" if partition not in owned_by_a else name
                check(
                    owner in ledger.consumed[(partition, offset)],
                    f"{partition}/{offset} consumed by {ledger.consumed[(partition, offset)]}, expected {owner}",
                )
            ledger.check_clean()
            previous = name
        check(not ledger.problems, "commit or consume errors:\n" + "\n".join(ledger.problems))
    finally:
        ledger.stop_all()


run(scenario)
