"""A member that closes sends LeaveGroup, and the group rebalances at
once: the remaining member gets every partition long before the session
timeout (30 s here) would have removed the leaver, and resumes each taken
over partition at the leaver's last commit.
"""

from group_support import Ledger, produce_keyed
from sluice_test import admin, check, create_topic, run, step

TOPIC = "group-leave"
GROUP = "group-leave"
PARTITIONS = 4
SESSION_TIMEOUT_MS = 30000
# Well under the session timeout: only a LeaveGroup explains a takeover
# this fast.
TAKEOVER_TIMEOUT_S = 15


def scenario(address):
    create_topic(admin(address), TOPIC, PARTITIONS)
    ledger = Ledger()
    config = {"session.timeout.ms": SESSION_TIMEOUT_MS}
    try:
        step("two members share the topic")
        ledger.start(address, TOPIC, GROUP, "stays", config)
        ledger.start(address, TOPIC, GROUP, "leaves", config)
        ledger.wait_until(
            lambda: ledger.partitions_disjoint_and_covering(["stays", "leaves"], PARTITIONS),
            "two members own all partitions",
        )
        produced = produce_keyed(address, TOPIC, 80, "before")
        wanted = {(partition, offset) for partition, offset, _ in produced}
        ledger.wait_until(lambda: wanted <= ledger.consumed.keys(), "records consumed")

        step("one member closes (LeaveGroup); the other takes everything over")
        ledger.workers["leaves"].send("close")
        ledger.wait_until(lambda: "leaves" in ledger.exited, "the leaver closed")
        ledger.wait_until(
            lambda: ledger.assignment["stays"] == set(range(PARTITIONS)),
            f"the remaining member owns all partitions well before the {SESSION_TIMEOUT_MS} ms session timeout",
            TAKEOVER_TIMEOUT_S,
        )
        produced = produce_keyed(address, TOPIC, 40, "after")
        wanted = {(partition, offset) for partition, offset, _ in produced}
        ledger.wait_until(lambda: wanted <= ledger.consumed.keys(), "records after the leave consumed")
        ledger.check_clean()
        twice = sorted(key for key, who in ledger.consumed.items() if len(who) > 1)
        check(not twice, f"records consumed twice although the leaver committed on close: {twice[:20]}")
        check(not ledger.problems, "commit or consume errors:\n" + "\n".join(ledger.problems))
    finally:
        ledger.stop_all()


run(scenario)
