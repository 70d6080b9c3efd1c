"""The confluent-kafka AdminClient's group calls: list_consumer_groups and
describe_consumer_groups show a consuming group as Stable with its members
and their assignments, and as Empty once every member closed;
delete_consumer_groups refuses a group with members (NON_EMPTY_GROUP),
deletes an empty one together with its committed offsets, and then answers
GROUP_ID_NOT_FOUND. list_consumer_group_offsets answers the committed
offsets; alter_consumer_group_offsets is refused while the group has
members and applied once it is empty. A group that only ever committed offsets (a consumer
with assign(), no subscription) lists as a simple group in state Empty.
"""

import time

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from group_support import Ledger, committed_offsets, produce_keyed
from sluice_test import (
    TIMEOUT_S,
    ScenarioFailed,
    admin,
    check,
    client_config,
    create_topic,
    expect_error,
    run,
    step,
)

TOPIC = "group-admin"
GROUP = "group-admin"
SIMPLE_GROUP = "group-admin-simple"
PARTITIONS = 4


def listing(admin_client):
    result = admin_client.list_consumer_groups(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    check(not result.errors, f"list_consumer_groups errors: {result.errors}")
    return {group.group_id: group for group in result.valid}


def describe(admin_client, group):
    return admin_client.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S)


def admin_offsets(admin_client):
    """{partition: offset} per list_consumer_group_offsets (OffsetFetch)."""
    request = [ConsumerGroupTopicPartitions(GROUP, [TopicPartition(TOPIC, p) for p in range(PARTITIONS)])]
    result = admin_client.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[GROUP].result(TIMEOUT_S)
    for tp in result.topic_partitions:
        check(tp.error is None, f"list_consumer_group_offsets {tp.topic}/{tp.partition}: {tp.error}")
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def alter_offsets(admin_client, offsets):
    """alter_consumer_group_offsets; None on success, else the error(s)."""
    request = [ConsumerGroupTopicPartitions(GROUP, [TopicPartition(TOPIC, p, o) for p, o in offsets.items()])]
    try:
        result = admin_client.alter_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[GROUP].result(TIMEOUT_S)
    except KafkaException as error:
        return [error.args[0]]
    errors = [tp.error for tp in result.topic_partitions if tp.error is not None]
    return errors or None


def wait_listed_state(admin_client, state):
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        groups = listing(admin_client)
        if GROUP in groups and groups[GROUP].state == state:
            return groups[GROUP]
        if time.monotonic() > deadline:
            seen = {name: str(group.state) for name, group in groups.items()}
            raise ScenarioFailed(f"{GROUP} not listed as {state} within {TIMEOUT_S} s: {seen}")
        time.sleep(0.2)


def check_gone(admin_client, what):
    """A group that does not exist: described as Dead (DescribeGroups v5)
    or failing with GROUP_ID_NOT_FOUND (v6)."""
    try:
        described = describe(admin_client, GROUP)
    except Exception as error:  # KafkaException from the future
        code = error.args[0].code() if error.args else None
        check(code == KafkaError.GROUP_ID_NOT_FOUND, f"{what}: describe failed with {error!r}")
        return
    check(
        described.state == ConsumerGroupState.DEAD and not described.members,
        f"{what}: described as {described.state} with {len(described.members)} members",
    )


def scenario(address):
    create_topic(admin(address), TOPIC, PARTITIONS)
    admin_client = admin(address)
    ledger = Ledger()
    try:
        step("two members consume and commit")
        for name in ("admin-a", "admin-b"):
            ledger.start(address, TOPIC, GROUP, name)
        ledger.wait_until(
            lambda: ledger.partitions_disjoint_and_covering(["admin-a", "admin-b"], PARTITIONS),
            "two members own all partitions",
        )
        produced = produce_keyed(address, TOPIC, 60, "admin")
        wanted = {(partition, offset) for partition, offset, _ in produced}
        ledger.wait_until(lambda: wanted <= ledger.consumed.keys(), "records consumed")
        for name in ("admin-a", "admin-b"):
            ledger.workers[name].send("commit")
        ledger.wait_until(
            lambda: all(ledger.committed.get(partition, 0) >= offset + 1 for partition, offset in wanted),
            "commits of everything consumed",
        )

        step("list and describe: Stable, two members, the assignment covers every partition")
        listed = wait_listed_state(admin_client, ConsumerGroupState.STABLE)
        check(not listed.is_simple_consumer_group, "a subscribing group listed as simple")
        described = describe(admin_client, GROUP)
        check(described.state == ConsumerGroupState.STABLE, f"described state {described.state}")
        check(described.partition_assignor == "range", f"assignor {described.partition_assignor!r}")
        check(described.coordinator is not None and described.coordinator.id == 0, f"coordinator {described.coordinator}")
        check(
            sorted(member.client_id for member in described.members) == ["admin-a", "admin-b"],
            f"member client ids {[member.client_id for member in described.members]}",
        )
        assigned = [
            (tp.topic, tp.partition) for member in described.members for tp in member.assignment.topic_partitions
        ]
        check(
            sorted(assigned) == [(TOPIC, partition) for partition in range(PARTITIONS)],
            f"described assignments {sorted(assigned)}",
        )
        for member in described.members:
            mine = {tp.partition for tp in member.assignment.topic_partitions}
            check(mine == ledger.assignment[member.client_id], f"{member.client_id}: described {mine}, has {ledger.assignment[member.client_id]}")

        step("list_consumer_group_offsets; alter_consumer_group_offsets refused while members are active")
        committed = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
        listed_offsets = admin_offsets(admin_client)
        check(listed_offsets == committed, f"list_consumer_group_offsets {listed_offsets}, committed() {committed}")
        errors = alter_offsets(admin_client, {partition: 1 for partition in range(PARTITIONS)})
        check(errors is not None, "alter_consumer_group_offsets succeeded on a group with active members")
        step(f"refused with {errors}")
        after = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
        check(after == committed, f"a refused alter changed the offsets: {committed} -> {after}")

        step("delete_consumer_groups on a group with members: NON_EMPTY_GROUP")
        expect_error(
            admin_client.delete_consumer_groups([GROUP], request_timeout=TIMEOUT_S)[GROUP],
            KafkaError.NON_EMPTY_GROUP,
            "deleting a group with members",
        )

        step("every member closes: Empty, offsets kept")
        # One after the other (Ledger.close_in_turn: closed together, a
        # member's revoke-time commit can follow its own LeaveGroup).
        ledger.close_in_turn(["admin-a", "admin-b"], PARTITIONS)
        wait_listed_state(admin_client, ConsumerGroupState.EMPTY)
        described = describe(admin_client, GROUP)
        check(described.state == ConsumerGroupState.EMPTY, f"described state {described.state}")
        check(not described.members, f"members of an empty group: {described.members}")
        committed = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
        check(all(offset is not None for offset in committed.values()), f"offsets before deleting: {committed}")

        step("alter_consumer_group_offsets on the empty group")
        altered = {partition: partition + 1 for partition in range(PARTITIONS)}
        errors = alter_offsets(admin_client, altered)
        check(errors is None, f"alter_consumer_group_offsets on an empty group: {errors}")
        committed = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
        check(committed == altered, f"after alter_consumer_group_offsets: {committed}, expected {altered}")
        check(admin_offsets(admin_client) == altered, "list_consumer_group_offsets after the alter")

        step("delete_consumer_groups on the empty group: deleted with its offsets")
        admin_client.delete_consumer_groups([GROUP], request_timeout=TIMEOUT_S)[GROUP].result(TIMEOUT_S)
        committed = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
        check(all(offset is None for offset in committed.values()), f"offsets after deleting: {committed}")
        groups = listing(admin_client)
        check(
            GROUP not in groups or groups[GROUP].state == ConsumerGroupState.DEAD,
            f"deleted group listed as {groups.get(GROUP) and groups[GROUP].state}",
        )
        check_gone(admin_client, "after deleting")
        expect_error(
            admin_client.delete_consumer_groups([GROUP], request_timeout=TIMEOUT_S)[GROUP],
            KafkaError.GROUP_ID_NOT_FOUND,
            "deleting a deleted group",
        )

        step("a group that only committed offsets: listed as simple and Empty")
        simple = Consumer(client_config(address, **{"group.id": SIMPLE_GROUP, "enable.auto.commit": False}))
        try:
            simple.assign([TopicPartition(TOPIC, 0, 0)])
            simple.commit(offsets=[TopicPartition(TOPIC, 0, 1)], asynchronous=False)
        finally:
            simple.close()
        groups = listing(admin_client)
        check(SIMPLE_GROUP in groups, f"{SIMPLE_GROUP} not listed: {sorted(groups)}")
        check(groups[SIMPLE_GROUP].state == ConsumerGroupState.EMPTY, f"simple group state {groups[SIMPLE_GROUP].state}")
        check(groups[SIMPLE_GROUP].is_simple_consumer_group, "a group without a protocol type listed as not simple")
        check(not ledger.problems, "commit or consume errors:\n" + "\n".join(ledger.problems))
    finally:
        ledger.stop_all()


run(scenario)
