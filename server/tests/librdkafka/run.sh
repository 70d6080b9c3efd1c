#!/usr/bin/env bash
# Run librdkafka's own test suite (tests/NNNN-*.c of the librdkafka that the
# rdkafka crate vendors) against a real sluice: a single broker, and a
# three-broker `sluice dev-cluster` for the tests that create topics with
# three replicas. See README.md beside this file for the selection and why.
#
# Usage: server/tests/librdkafka/run.sh [--extended] [TEST...]
#   --extended  the selection below and the extended one
#   TEST      test numbers (0103, 0129, ...); default: the selection below.
#             A test not in it runs against the single broker, or against
#             the cluster with LIBRDKAFKA_SUITE_BROKER=cluster.
# Environment:
#   SLUICE_BIN                 the broker binary (default: target/debug/sluice,
#                              built with cargo when missing)
#   LIBRDKAFKA_SUITE_DIR       build and run directory (default:
#                              <target>/librdkafka-suite)
#   LIBRDKAFKA_TEST_TIMEOUT_S  wall-clock limit of one test-runner run (900)
#   TEST_LEVEL, TEST_DEBUG, SUBTESTS  passed to librdkafka's test runner
#   LIBRDKAFKA_RUNNER_ARGS     more test-runner flags, e.g. "-Q" (quick mode)
#                              or "-E -K" (no sockem, no known issues)
# Exit status: 0 when every selected test passed, 1 when one failed, 2 for a
# build or broker start failure.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
work=${LIBRDKAFKA_SUITE_DIR:-$target/librdkafka-suite}
runner_timeout_s=${LIBRDKAFKA_TEST_TIMEOUT_S:-900}
jobs=$(nproc 2>/dev/null || echo 2)

# The broker version the test runner assumes (TEST_KAFKA_VERSION): it gates
# sub-tests on broker features. Sluice serves the APIs of Kafka 3.x with
# KIP-360 (producer epoch bumps) and without KIP-848 (the new consumer group
# protocol); the tests use the classic protocol, their default.
kafka_version=3.9.0

# Which broker each test runs against. `cluster`: the test creates topics
# with replication factor 3 (test_create_topic_wait_exists(..., 3, ...)).
declare -A test_broker=(
    [0061]=single  # consumer lag with aborted transactions (LSO)
    [0076]=single  # produce retries over a faulty socket (sockem), idempotent
    [0086]=single  # purging queued and in-flight produce requests
    [0090]=single  # idempotent producer: implicit acks
    [0094]=single  # idempotent producer, message timeouts (sockem)
    [0098]=cluster # read_committed consumer over transactional scenarios
    [0099]=single  # committed offsets with metadata
    [0102]=single  # static group membership (classic protocol)
    [0103]=cluster # transactional producer
    [0129]=single  # fetching a partition whose records were all aborted
    [0137]=single  # batch consume: seek, pause/resume, control records
)
# What `cargo test` runs: the two runners take about as long (~3 min).
default_selection=(0061 0090 0098 0099 0102 0103 0129 0137)
# Idempotent producer tests that pass too and add about 3 minutes.
extended_selection=(0076 0086 0094)

log() { echo "== librdkafka suite: $*"; }
die() {
    echo "librdkafka suite: $*" >&2
    exit 2
}

case ${LIBRDKAFKA_SUITE_BROKER:-single} in
single | cluster) ;;
*) die "LIBRDKAFKA_SUITE_BROKER must be single or cluster" ;;
esac
selection=()
for argument in "$@"; do
    case $argument in
    --extended) selection+=("${default_selection[@]}" "${extended_selection[@]}") ;;
    [0-9][0-9][0-9][0-9])
        if [[ -z ${test_broker[$argument]:-} ]]; then
            test_broker[$argument]=${LIBRDKAFKA_SUITE_BROKER:-single}
        fi
        selection+=("$argument")
        ;;
    *) die "unknown argument $argument (usage: run.sh [--extended] [TEST...])" ;;
    esac
done
if ((${#selection[@]} == 0)); then
    selection=("${default_selection[@]}")
fi

# ---------------------------------------------------------------------------
# librdkafka's source: the version Cargo.lock pins for rdkafka-sys, from the
# cargo registry (present after `cargo fetch` or any build).
rdkafka_sys_version=$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' \
    "$repo/Cargo.lock")
[[ -n $rdkafka_sys_version ]] || die "rdkafka-sys is not in Cargo.lock"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
find_source() {
    local candidate
    for candidate in "$cargo_home"/registry/src/*/"rdkafka-sys-$rdkafka_sys_version"/librdkafka; do
        if [[ -f $candidate/tests/test.c ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
if ! source_dir=$(find_source); then
    log "rdkafka-sys $rdkafka_sys_version is not in $cargo_home/registry: cargo fetch"
    (cd "$repo" && cargo fetch --locked) >&2
    source_dir=$(find_source) || die "no librdkafka source for rdkafka-sys $rdkafka_sys_version"
fi

# ---------------------------------------------------------------------------
# Build librdkafka and the test runner once; a later run reuses them while
# the stamp (version, configure flags, patches) matches.
#
# configure: no TLS, SASL, zstd or libcurl (the tests selected need none of
# them; a broker without them is what CI has), the bundled lz4, no
# optimisation (the build takes about a minute on two cores instead of four).
configure_flags=(--disable-ssl --disable-gssapi --disable-zstd --disable-curl
    --disable-lz4-ext --disable-optimization --disable-debug-symbols)
# Patches to the copied tests (reasons in README.md).
# 0098: run only the half that produces with librdkafka; the other half runs
# Kafka's Java client (tests/java/TransactionProducerCli), which needs Kafka's
# jars from KAFKA_PATH.
patch_0098_from='do_test_consumer_txn_test(true /\* with java producer \*/);'
patch_0098_to='/* sluice: no Java producer (KAFKA_PATH) here */'
# RapidJSON (Debian: rapidjson-dev, headers only) is found by configure; the
# tests 0098 and 0101 need it, else they skip themselves.
rapidjson=absent
if [[ -f /usr/include/rapidjson/schema.h ]]; then
    rapidjson=present
fi
stamp_text="rdkafka-sys $rdkafka_sys_version; configure ${configure_flags[*]}; patch 0098-java v1; rapidjson $rapidjson"
build_dir=$work/librdkafka-$rdkafka_sys_version
stamp=$build_dir/.sluice-build-stamp

build_started=$SECONDS
mkdir -p "$work"
# One build at a time (cargo test and a manual run may overlap).
exec 9>"$work/build.lock"
flock 9
if [[ -x $build_dir/tests/test-runner && "$(cat "$stamp" 2>/dev/null)" == "$stamp_text" ]]; then
    log "reusing the build in $build_dir"
else
    log "building librdkafka $rdkafka_sys_version and its test runner in $build_dir"
    for tool in cc c++ make; do
        command -v "$tool" >/dev/null || die "$tool is missing (Debian: build-essential)"
    done
    rm -rf "$build_dir"
    mkdir -p "$work"
    cp -a "$source_dir" "$build_dir"
    chmod -R u+w "$build_dir"
    sed -i "s|$patch_0098_from|$patch_0098_to|" "$build_dir/tests/0098-consumer-txn.cpp"
    grep -qF "$patch_0098_to" "$build_dir/tests/0098-consumer-txn.cpp" ||
        die "the 0098 patch no longer applies: update run.sh"
    build_log=$work/build.log
    if ! (
        cd "$build_dir"
        ./configure "${configure_flags[@]}"
        make -j"$jobs" libs
        make -C tests -j"$jobs" test-runner
    ) >"$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die "the build failed; its log: $build_log"
    fi
    echo "$stamp_text" >"$stamp"
fi
flock -u 9
if ! grep -q '^#define WITH_RAPIDJSON 1' "$build_dir/config.h" &&
    [[ " ${selection[*]} " == *" 0098 "* ]]; then
    # Under CI a skip would pass unnoticed: .ci/test installs rapidjson-dev.
    if [[ -n ${CI:-} && ${CI:-} != false && ${CI:-} != 0 ]]; then
        die "RapidJSON is missing (Debian: rapidjson-dev), and CI is set: test 0098 would skip"
    fi
    log "WARNING: RapidJSON is missing (Debian: rapidjson-dev): test 0098 skips itself"
fi
build_seconds=$((SECONDS - build_started))
log "build: ${build_seconds}s"

# ---------------------------------------------------------------------------
# The brokers.
sluice=${SLUICE_BIN:-$target/debug/sluice}
if [[ ! -x $sluice ]]; then
    log "building $sluice"
    (cd "$repo" && cargo build -p sluice-server --bin sluice) >&2
fi
[[ -x $sluice ]] || die "no sluice binary at $sluice"

# Each run in run-PID; those of finished runs are removed.
for old_run in "$work"/run-*; do
    [[ -d $old_run ]] || continue
    kill -0 "${old_run##*/run-}" 2>/dev/null || rm -rf "$old_run"
done
run_dir=$work/run-$$
mkdir -p "$run_dir"

declare -A broker_pid=() runner_pid=()
stop_broker() {
    local kind=$1 pid=${broker_pid[$1]:-} waited=0
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        # SIGTERM: a broker flushes and exits; dev-cluster stops its brokers.
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null && ((waited < 120)); do
            sleep 0.5
            waited=$((waited + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    broker_pid[$kind]=
}
cleanup() {
    local kind
    for kind in "${!runner_pid[@]}"; do
        [[ -n ${runner_pid[$kind]} ]] && kill -TERM "${runner_pid[$kind]}" 2>/dev/null
    done
    for kind in "${!broker_pid[@]}"; do
        stop_broker "$kind"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A base port P with P + 10 i, P + 10 i + 1 and P + 10 i + 2 (Kafka,
# controller, admin HTTP) unused for i < count, and not handed out before
# by this run (a broker may not listen yet). Below the kernel's ephemeral
# range (ip_local_port_range, 32768-60999 by default): a port in it can be
# taken as the local port of any outgoing connection between this check
# and the broker's bind, which failed a CI run ("cannot listen on
# 127.0.0.1:58122 ... address in use").
used_bases=" "
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_base_port() {
    local count=$1 base index bases
    bases=$(((ephemeral_low - 20000 - 10 * count) / 100))
    ((bases >= 10)) || die "no room below the ephemeral ports (from $ephemeral_low) for broker ports"
    for _ in $(seq 1 50); do
        base=$((20000 + RANDOM % bases * 100))
        [[ $used_bases == *" $base "* ]] && continue
        for ((index = 0; index < count; index++)); do
            if port_in_use $((base + 10 * index)) || port_in_use $((base + 10 * index + 1)) \
                || port_in_use $((base + 10 * index + 2)); then
                continue 2
            fi
        done
        echo "$base"
        return 0
    done
    die "no free ports found"
}

# start_broker KIND: start a single broker or a three-broker dev-cluster
# with its data under run_dir/KIND, and write run_dir/KIND/test.conf.
declare -A bootstrap=() broker_count=()
start_broker() {
    local kind=$1 base
    base=$(free_base_port 3)
    used_bases+="$base "
    mkdir -p "$run_dir/$kind"
    # librdkafka's "default" test scenario (tests/scenarios/default.json):
    # auto-created topics have 4 partitions (and 3 replicas on the cluster).
    # The tests produce to partitions 1-3 of auto-created topics.
    if [[ $kind == single ]]; then
        broker_count[$kind]=1
        bootstrap[$kind]=127.0.0.1:$base
        "$sluice" serve --listen "127.0.0.1:$base" --data-dir "$run_dir/$kind/data" \
            --admin-listen "127.0.0.1:$((base + 2))" --cores 2 --default-partitions 4 >"$run_dir/$kind/sluice.log" 2>&1 &
    else
        broker_count[$kind]=3
        bootstrap[$kind]=127.0.0.1:$base,127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20))
        # dev-cluster passes its environment on to the brokers it starts.
        SLUICE_DEFAULT_PARTITIONS=4 SLUICE_DEFAULT_REPLICATION_FACTOR=3 \
            "$sluice" dev-cluster --nodes 3 --data-dir "$run_dir/$kind/data" \
            --base-port "$base" >"$run_dir/$kind/sluice.log" 2>&1 &
    fi
    broker_pid[$kind]=$!
    cat >"$run_dir/$kind/test.conf" <<CONF
bootstrap.servers=${bootstrap[$kind]}
test.topic.random=true
test.timeout.multiplier=2
CONF
}

# await_broker KIND: wait until every broker of KIND is registered.
await_broker() {
    local kind=$1 started=$SECONDS log=$run_dir/$1/sluice.log
    while ((SECONDS - started < 90)); do
        if ! kill -0 "${broker_pid[$kind]}" 2>/dev/null; then
            tail -n 30 "$log" >&2
            die "sluice ($kind) exited during its start; its log: $log"
        fi
        if (($("$sluice" cluster info --bootstrap "${bootstrap[$kind]}" --format json \
            2>/dev/null | grep -c '"node_id"') >= broker_count[$kind])); then
            log "sluice ($kind, ${broker_count[$kind]} broker(s)) serving at ${bootstrap[$kind]}"
            return 0
        fi
        sleep 0.5
    done
    tail -n 30 "$log" >&2
    die "sluice ($kind) did not serve within 90 s; its log: $log"
}

# ---------------------------------------------------------------------------
# Run: one test-runner per broker kind, each on its own fresh broker(s), the
# two kinds at the same time (the tests mostly wait: on two cores this takes
# the time of the longer one). Within a runner the tests run one at a time
# (-p1), as their timing assumptions expect.
declare -A test_list=()
kinds=()
for kind in single cluster; do
    tests=()
    for test in "${selection[@]}"; do
        if [[ ${test_broker[$test]} == "$kind" ]]; then
            tests+=("$test")
        fi
    done
    if ((${#tests[@]})); then
        test_list[$kind]=$(
            IFS=,
            echo "${tests[*]}"
        )
        kinds+=("$kind")
    fi
done

for kind in "${kinds[@]}"; do
    start_broker "$kind"
done
for kind in "${kinds[@]}"; do
    await_broker "$kind"
done

run_started=$SECONDS
for kind in "${kinds[@]}"; do
    log "tests ${test_list[$kind]} against $kind; output: $run_dir/$kind/test-runner.log"
    (
        cd "$build_dir/tests"
        export LD_LIBRARY_PATH=../src:../src-cpp
        export RDKAFKA_TEST_CONF=$run_dir/$kind/test.conf
        export TESTS=${test_list[$kind]} TEST_KAFKA_VERSION=$kafka_version
        export TEST_MODE=bare RDKAFKA_GITVER=$rdkafka_sys_version
        # Line-buffered: the runner aborts (assert) when a test failed, which
        # would lose a block-buffered stdout and with it the summary table.
        exec timeout --signal=TERM --kill-after=10 "$runner_timeout_s" \
            stdbuf -oL -eL ./test-runner -p1 ${LIBRDKAFKA_RUNNER_ARGS:-}
    ) >"$run_dir/$kind/test-runner.log" 2>&1 &
    runner_pid[$kind]=$!
done

failed=0
summary=()
for kind in "${kinds[@]}"; do
    status=0
    wait "${runner_pid[$kind]}" || status=$?
    runner_pid[$kind]=
    stop_broker "$kind"
    # The runner's log: colours stripped, as it is read from files and CI.
    sed 's/\x1b\[[0-9;]*m//g' "$run_dir/$kind/test-runner.log"
    if ((status != 0)); then
        failed=1
        summary+=("tests ${test_list[$kind]} against $kind FAILED (exit $status); logs: $run_dir/$kind/{test-runner,sluice}.log")
    else
        summary+=("tests ${test_list[$kind]} against $kind passed")
    fi
done
run_seconds=$((SECONDS - run_started))

for line in "${summary[@]}"; do
    log "$line"
done
log "build ${build_seconds}s, tests ${run_seconds}s"
exit "$failed"
