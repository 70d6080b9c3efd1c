"""ACLs seen by real clients (confluent-kafka / librdkafka) against a broker
started with --authorizer standard.

Arguments: SASL_ADDRESS PLAINTEXT_ADDRESS PASSWORD. The broker's
SASL_PLAINTEXT listener (SCRAM-SHA-512) knows the users alice and admin
(both with PASSWORD; admin is a super user); its PLAINTEXT listener is the
unauthenticated admin path (User:ANONYMOUS is a super user there, which is
how this test grants itself the first ACLs).

- alice with only READ on acl-read cannot produce to it
  (TOPIC_AUTHORIZATION_FAILED) and lists only the topics she may describe;
- a PREFIXED ALLOW grants the topics fam.*, not others;
- a DENY beats an ALLOW of ALL;
- alice consumes acl-read in a group she may READ, and not in another
  (GROUP_AUTHORIZATION_FAILED);
- the super user admin does everything alice may not;
- CreateAcls from alice is CLUSTER_AUTHORIZATION_FAILED;
- alice's idempotent producer works with WRITE on a topic; a transactional
  id needs WRITE on it (TRANSACTIONAL_ID_AUTHORIZATION_FAILED before).
"""

import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from sluice_test import ScenarioFailed, check, step

TIMEOUT_S = 30


def sasl(address, user, password):
    return {
        "bootstrap.servers": address,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
    }


def produce(config, topic, count=5):
    """Produce `count` records; returns the delivery error codes seen."""
    errors = []

    def delivered(error, _message):
        if error is not None:
            errors.append(error.code())

    producer = Producer({**config, "acks": "all", "message.timeout.ms": 10000})
    for index in range(count):
        producer.produce(topic, value=f"record {index}".encode(), on_delivery=delivered)
    remaining = producer.flush(TIMEOUT_S)
    check(remaining == 0, f"{topic}: {remaining} records neither delivered nor failed")
    return errors


def binding(resource_type, name, pattern, principal, operation, permission):
    return AclBinding(resource_type, name, pattern, principal, "*", operation, permission)


def scenario(sasl_address, plaintext_address, password):
    suffix = uuid.uuid4().hex[:6]
    readable, other, denied = f"acl-read-{suffix}", f"acl-other-{suffix}", f"acl-denied-{suffix}"
    family = [f"fam{suffix}.a", f"fam{suffix}.b"]
    group, other_group = f"alice-group-{suffix}", f"other-group-{suffix}"
    admin_plain = AdminClient({"bootstrap.servers": plaintext_address})
    alice = sasl(sasl_address, "alice", password)
    admin = sasl(sasl_address, "admin", password)

    step("the unauthenticated admin path creates the topics and the ACLs")
    topics = [readable, other, denied] + family
    for name, future in admin_plain.create_topics([NewTopic(t, 1, 1) for t in topics]).items():
        future.result(TIMEOUT_S)
    allow, deny = AclPermissionType.ALLOW, AclPermissionType.DENY
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    bindings = [
        binding(ResourceType.TOPIC, readable, literal, "User:alice", AclOperation.READ, allow),
        binding(ResourceType.TOPIC, f"fam{suffix}.", prefixed, "User:alice", AclOperation.WRITE, allow),
        binding(ResourceType.TOPIC, denied, literal, "User:alice", AclOperation.ALL, allow),
        binding(ResourceType.TOPIC, denied, literal, "User:alice", AclOperation.WRITE, deny),
        binding(ResourceType.GROUP, group, literal, "User:alice", AclOperation.READ, allow),
    ]
    for created, future in admin_plain.create_acls(bindings).items():
        future.result(TIMEOUT_S)

    step("admin (super user) fills acl-read")
    errors = produce(admin, readable, 10)
    check(errors == [], f"admin producing to {readable}: {errors}")

    step("alice (READ only) cannot produce to acl-read")
    errors = produce(alice, readable)
    check(errors and all(code == KafkaError.TOPIC_AUTHORIZATION_FAILED for code in errors),
          f"alice producing to {readable}: expected TOPIC_AUTHORIZATION_FAILED, got {errors}")

    step("alice lists only the topics she may describe")
    listed = {t for t in AdminClient(alice).list_topics(timeout=TIMEOUT_S).topics if suffix in t}
    expected = {readable, denied} | set(family)
    check(listed == expected, f"alice lists {sorted(listed)}, expected {sorted(expected)}")
    listed = set(AdminClient(admin).list_topics(timeout=TIMEOUT_S).topics)
    check(set(topics) <= listed, f"admin lists {sorted(listed)}, expected all of {topics}")

    step("a prefixed ALLOW lets alice write the family, not other topics")
    for name in family:
        errors = produce(alice, name)
        check(errors == [], f"alice producing to {name}: {errors}")
    errors = produce(alice, other)
    check(errors and all(code == KafkaError.TOPIC_AUTHORIZATION_FAILED for code in errors),
          f"alice producing to {other}: expected TOPIC_AUTHORIZATION_FAILED, got {errors}")

    step("a DENY of WRITE beats an ALLOW of ALL")
    errors = produce(alice, denied)
    check(errors and all(code == KafkaError.TOPIC_AUTHORIZATION_FAILED for code in errors),
          f"alice producing to {denied}: expected TOPIC_AUTHORIZATION_FAILED, got {errors}")

    step("alice consumes acl-read in the group she may read")
    consumer = Consumer({**alice, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([readable])
    values = []
    deadline = time.time() + 60
    while len(values) < 10 and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        check(message.error() is None, f"alice consuming {readable}: {message.error()}")
        values.append(message.value())
    check(len(values) == 10, f"alice read {len(values)} of 10 records")
    consumer.commit(asynchronous=False)
    consumer.close()

    step("and not in a group she may not")
    consumer = Consumer({**alice, "group.id": other_group, "auto.offset.reset": "earliest"})
    consumer.subscribe([readable])
    refused = None
    deadline = time.time() + 30
    while refused is None and time.time() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is not None:
            refused = message.error().code()
        elif message is not None:
            raise ScenarioFailed(f"alice read {readable} in {other_group}")
    consumer.close()
    check(refused == KafkaError.GROUP_AUTHORIZATION_FAILED,
          f"alice in {other_group}: expected GROUP_AUTHORIZATION_FAILED, got {refused}")

    step("alice may not create ACLs")
    alice_admin = AdminClient(alice)
    for created, future in alice_admin.create_acls(
            [binding(ResourceType.TOPIC, other, literal, "User:alice", AclOperation.ALL, allow)]).items():
        try:
            future.result(TIMEOUT_S)
            raise ScenarioFailed("alice created an ACL")
        except KafkaException as error:
            code = error.args[0].code()
            check(code == KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                  f"alice's CreateAcls: expected CLUSTER_AUTHORIZATION_FAILED, got {error}")

    step("alice's idempotent producer may write (WRITE on some topic is enough)")
    errors = produce({**alice, "enable.idempotence": True}, family[0])
    check(errors == [], f"alice's idempotent producer on {family[0]}: {errors}")

    step("alice may not use a transactional id she was not granted")
    transactional_id = f"tx-alice-{suffix}"
    producer = Producer({**alice, "transactional.id": transactional_id})
    try:
        producer.init_transactions(TIMEOUT_S)
        raise ScenarioFailed(f"alice initialised transactions with {transactional_id}")
    except KafkaException as error:
        code = error.args[0].code()
        check(code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
              f"alice's init_transactions: expected TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "
              f"got {error}")

    step("granted WRITE on it, she commits a transaction to the family")
    for created, future in admin_plain.create_acls([binding(
            ResourceType.TRANSACTIONAL_ID, transactional_id, literal, "User:alice",
            AclOperation.WRITE, allow)]).items():
        future.result(TIMEOUT_S)
    producer = Producer({**alice, "transactional.id": transactional_id})
    producer.init_transactions(TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(family[1], value=b"in a transaction")
    producer.commit_transaction(TIMEOUT_S)

    step("the super user admin writes every topic")
    for name in [other, denied] + family:
        errors = produce(admin, name)
        check(errors == [], f"admin producing to {name}: {errors}")


def main():
    if len(sys.argv) != 4:
        print(f"usage: {sys.argv[0]} SASL_ADDRESS PLAINTEXT_ADDRESS PASSWORD", file=sys.stderr)
        sys.exit(2)
    try:
        scenario(sys.argv[1], sys.argv[2], sys.argv[3])
    except ScenarioFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
