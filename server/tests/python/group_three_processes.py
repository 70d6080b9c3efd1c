"""Three confluent-kafka consumer processes in one group share a
6-partition topic; one is killed with SIGKILL and the other two take over
its partitions from its last commit; after a clean close, a new generation
of processes resumes exactly at the committed offsets.

Checked (group_support.Ledger, as events arrive): every member starts each
newly assigned partition at the committed offset, and nothing below an
acknowledged commit is delivered twice. At the end: every produced record
was consumed; duplicates only on the killed member's partitions, at or
after its last commit there.

Members close one after the other (Ledger.close_in_turn), each once the
rest own the partitions of the previous one: closed together, a member
could commit after its own LeaveGroup (a librdkafka ordering, see there).
"""

from group_support import Ledger, committed_offsets, end_offsets, produce_keyed
from sluice_test import admin, check, create_topic, run, step

TOPIC = "group-three"
GROUP = "group-three-processes"
PARTITIONS = 6
FIRST_COUNT = 600
SECOND_COUNT = 300
THIRD_COUNT = 150
# Session timeout 6 s: the takeover waits for it, plus a rebalance.
TAKEOVER_TIMEOUT_S = 60


def scenario(address):
    create_topic(admin(address), TOPIC, PARTITIONS)
    ledger = Ledger()
    try:
        names = ["first", "second", "third"]
        step("three consumer processes join the group")
        for name in names:
            ledger.start(address, TOPIC, GROUP, name)
        ledger.wait_until(
            lambda: ledger.partitions_disjoint_and_covering(names, PARTITIONS),
            "three members with disjoint assignments covering all six partitions",
        )
        step(f"assignments: { {name: sorted(ledger.assignment[name]) for name in names} }")

        step(f"produce {FIRST_COUNT} keyed records, all consumed")
        produced = produce_keyed(address, TOPIC, FIRST_COUNT, "first")
        wanted = {(partition, offset) for partition, offset, _ in produced}
        ledger.wait_until(lambda: wanted <= ledger.consumed.keys(), f"all {FIRST_COUNT} records consumed")
        for partition, offset, key in produced:
            check(ledger.keys[(partition, offset)] == key, f"{partition}/{offset}: key differs")

        victim = "first"
        victim_partitions = set(ledger.assignment[victim])
        step(f"kill -9 {victim} (owns {sorted(victim_partitions)}, last commit {ledger.last_commit[victim]})")
        ledger.workers[victim].kill9()
        ledger.wait_until(lambda: victim in ledger.exited, f"{victim} exit seen")
        victim_commit = dict(ledger.last_commit[victim])
        survivors = ["second", "third"]

        step(f"produce {SECOND_COUNT} more; the survivors take over after the session timeout")
        produced += produce_keyed(address, TOPIC, SECOND_COUNT, "second")
        ledger.wait_until(
            lambda: ledger.partitions_disjoint_and_covering(survivors, PARTITIONS),
            "the two survivors own all six partitions",
            TAKEOVER_TIMEOUT_S,
        )
        wanted = {(partition, offset) for partition, offset, _ in produced}
        ledger.wait_until(
            lambda: wanted <= ledger.consumed.keys(),
            f"all {len(wanted)} records consumed after the takeover",
            TAKEOVER_TIMEOUT_S,
        )
        ledger.check_clean()
        duplicates = {key: who for key, who in ledger.consumed.items() if len(who) > 1}
        for (partition, offset), who in sorted(duplicates.items()):
            check(
                partition in victim_partitions and offset >= victim_commit.get(partition, 0),
                f"partition {partition} offset {offset} consumed by {who}: only records of the killed "
                f"member's partitions {sorted(victim_partitions)} at or after its last commit "
                f"{victim_commit} may be consumed twice\n{ledger.report()}",
            )
        step(f"{len(duplicates)} records redelivered after the kill (allowed: after the last commit)")

        step("survivors commit and close one after the other (leaving the group)")
        ledger.close_in_turn(survivors, PARTITIONS)
        check(not ledger.problems, "commit or consume errors:\n" + "\n".join(ledger.problems))
        ends = end_offsets(address, TOPIC, range(PARTITIONS))
        committed = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
        check(committed == ends, f"committed offsets {committed} differ from the log ends {ends}")

        step(f"produce {THIRD_COUNT} more; two new processes resume at the committed offsets")
        before = set(ledger.consumed)
        third = produce_keyed(address, TOPIC, THIRD_COUNT, "third")
        newcomers = ["fourth", "fifth"]
        for name in newcomers:
            ledger.start(address, TOPIC, GROUP, name)
        wanted = {(partition, offset) for partition, offset, _ in third}
        ledger.wait_until(
            lambda: wanted <= ledger.consumed.keys()
            and ledger.partitions_disjoint_and_covering(newcomers, PARTITIONS),
            f"the {THIRD_COUNT} new records consumed by the new members",
        )
        ledger.pump(0.5)
        ledger.check_clean()
        redelivered = sorted(
            key for key in before if any(name in newcomers for name in ledger.consumed[key])
        )
        check(not redelivered, f"committed records delivered again to the new members: {redelivered[:20]}")
        twice = sorted(key for key in wanted if len(ledger.consumed[key]) != 1)
        check(not twice, f"new records consumed more than once: {twice[:20]}\n{ledger.report()}")
        ledger.close_in_turn(newcomers, PARTITIONS)
        check(not ledger.problems, "commit or consume errors:\n" + "\n".join(ledger.problems))
    finally:
        ledger.stop_all()


run(scenario)
