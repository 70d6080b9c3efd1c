"""`sluice groups list` and `sluice groups describe GROUP` (the binary in
$SLUICE_BIN) against a live group: the group is listed with its state,
every partition has a row whose committed offset, log end and lag match
what the clients see (lag = log end - committed), the member is shown with
its assignment; an unknown group and an unreachable broker are errors
(exit 1) with a readable message; after the member closes the group is
Empty and its offsets are still shown.
"""

import os
import subprocess
import time

from group_support import Ledger, committed_offsets, end_offsets, produce_keyed
from sluice_test import ScenarioFailed, admin, check, create_topic, run, step

TOPIC = "group-cli"
GROUP = "group-cli"
CLIENT_ID = "cli-client"
PARTITIONS = 3
HEADER = [
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "CONSUMER-ID",
    "HOST",
    "CLIENT-ID",
]
CLI_TIMEOUT_S = 20


def sluice(address, *args):
    command = [os.environ["SLUICE_BIN"], "groups", *args]
    if address is not None:
        command += ["--bootstrap", address]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ScenarioFailed(f"{' '.join(command)}: no exit within {CLI_TIMEOUT_S} s")


def sluice_ok(address, *args):
    result = sluice(address, *args)
    check(
        result.returncode == 0,
        f"sluice groups {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}",
    )
    print(result.stdout, flush=True)
    return result.stdout


def table(text, first_header):
    """Rows (split on whitespace) of the table whose header starts with
    first_header, up to the next blank line; header checked."""
    lines = text.splitlines()
    starts = [index for index, line in enumerate(lines) if line.split()[:1] == [first_header]]
    check(len(starts) == 1, f"one table headed {first_header} in:\n{text}")
    rows = []
    for line in lines[starts[0] :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows[0], rows[1:]


def describe_rows(address):
    text = sluice_ok(address, "describe", GROUP)
    header, rows = table(text, "GROUP")
    check(header == HEADER, f"describe header {header}")
    for row in rows:
        check(len(row) == len(HEADER), f"describe row {row} has {len(row)} columns")
    by_partition = {}
    for row in rows:
        check(row[0] == GROUP and row[1] == TOPIC, f"unexpected row {row}")
        by_partition[int(row[2])] = dict(zip(HEADER, row))
    check(sorted(by_partition) == list(range(PARTITIONS)), f"partition rows {sorted(by_partition)} in:\n{text}")
    return text, by_partition


def check_offsets(address, by_partition):
    committed = committed_offsets(address, GROUP, TOPIC, range(PARTITIONS))
    ends = end_offsets(address, TOPIC, range(PARTITIONS))
    for partition, row in by_partition.items():
        shown = None if row["CURRENT-OFFSET"] == "-" else int(row["CURRENT-OFFSET"])
        check(shown == committed[partition], f"partition {partition}: shown committed {shown}, client sees {committed[partition]}")
        check(int(row["LOG-END-OFFSET"]) == ends[partition], f"partition {partition}: shown end {row['LOG-END-OFFSET']}, client sees {ends[partition]}")
        check(
            int(row["LAG"]) == ends[partition] - committed[partition],
            f"partition {partition}: lag {row['LAG']} != {ends[partition]} - {committed[partition]}",
        )
    return sum(int(row["LAG"]) for row in by_partition.values())


def scenario(address):
    create_topic(admin(address), TOPIC, PARTITIONS)
    ledger = Ledger()
    try:
        step("one member consumes and commits, then pauses; more records arrive (lag)")
        worker = ledger.start(address, TOPIC, GROUP, "member", {"client.id": CLIENT_ID})
        ledger.wait_until(lambda: ledger.assignment["member"] == set(range(PARTITIONS)), "member owns all partitions")
        produced = produce_keyed(address, TOPIC, 90, "first")
        wanted = {(partition, offset) for partition, offset, _ in produced}
        ledger.wait_until(lambda: wanted <= ledger.consumed.keys(), "first records consumed")
        worker.send("commit")
        worker.send("pause")
        ledger.wait_until(
            lambda: all(ledger.committed.get(partition, 0) >= offset + 1 for partition, offset in wanted),
            "the member's commit of everything it consumed",
        )
        produce_keyed(address, TOPIC, 30, "lag")

        step("sluice groups list")
        header, rows = table(sluice_ok(address, "list"), "GROUP")
        check(header == ["GROUP", "STATE", "PROTOCOL-TYPE"], f"list header {header}")
        check([GROUP, "Stable", "consumer"] in rows, f"{GROUP} Stable consumer not in {rows}")

        step("sluice groups describe: every partition, offsets and lag as the clients see them")
        text, by_partition = describe_rows(address)
        check(
            text.startswith(f"Group {GROUP}: state Stable, protocol type consumer, protocol range,"),
            f"summary line: {text.splitlines()[0]}",
        )
        lag = check_offsets(address, by_partition)
        check(lag == 30, f"total lag {lag}, 30 records were produced after the commit")
        member_ids = {row["CONSUMER-ID"] for row in by_partition.values()}
        check(len(member_ids) == 1 and next(iter(member_ids)).startswith(CLIENT_ID), f"consumer ids {member_ids}")
        for row in by_partition.values():
            check(row["CLIENT-ID"] == CLIENT_ID and row["HOST"] != "-", f"member columns of {row}")
        header, members = table(text, "CONSUMER-ID")
        check(len(members) == 1, f"member rows {members}")
        member = dict(zip(header, members[0]))
        check(member["#PARTITIONS"] == str(PARTITIONS), f"member row {member}")
        check(
            sorted(member["ASSIGNMENT"].split(",")) == sorted(f"{TOPIC}-{partition}" for partition in range(PARTITIONS)),
            f"member assignment {member['ASSIGNMENT']}",
        )

        step("unknown group and unreachable broker: exit 1 with a readable message")
        result = sluice(address, "describe", "no-such-group")
        check(result.returncode == 1, f"unknown group: exit {result.returncode}\n{result.stdout}{result.stderr}")
        check("does not exist" in result.stderr, f"unknown group message: {result.stderr!r}")
        started = time.monotonic()
        result = sluice("127.0.0.1:1", "list")
        check(result.returncode == 1, f"unreachable broker: exit {result.returncode}")
        check("cannot connect" in result.stderr, f"unreachable broker message: {result.stderr!r}")
        check(time.monotonic() - started < 10, "unreachable broker: took more than 10 s")

        step("after the member closes: Empty, offsets still shown")
        worker.send("close")
        ledger.wait_until(lambda: "member" in ledger.exited, "member closed")
        deadline = time.monotonic() + 15
        while True:
            text, by_partition = describe_rows(address)
            if "state Empty" in text.splitlines()[0]:
                break
            check(time.monotonic() < deadline, f"group not Empty after its only member closed:\n{text}")
            time.sleep(0.2)
        check(f"Consumer group '{GROUP}' has no active members." in text, text)
        check_offsets(address, by_partition)
        for row in by_partition.values():
            check(row["CONSUMER-ID"] == "-", f"a consumer shown in an empty group: {row}")
        check(not ledger.problems, "commit or consume errors:\n" + "\n".join(ledger.problems))
    finally:
        ledger.stop_all()


run(scenario)
