#!/bin/bash
# Memory after topic deletion (issue 11), at the scale: one broker,
# CYCLES rounds of sluice-bench (create a topic of PARTITIONS partitions,
# produce and consume for DURATION s, delete it), reading the broker's
# resident set after each round once its partition directories are gone,
# and 10 s later. Run from the repository root after
# `cargo build --release -p sluice-server -p sluice-bench`.
# Results: docs/benchmarks.md, "Memory after topic deletion".
set -u
BIN=${BIN:-target/release}
PARTITIONS=${PARTITIONS:-10000}
CYCLES=${CYCLES:-3}
DURATION=${DURATION:-10}
DATA=${DATA:-target/bench-memory-cycles}
rm -rf "$DATA"
mkdir -p "$DATA/data"
"$BIN/sluice" --listen 127.0.0.1:19203 --data-dir "$DATA/data" --cores 2 >"$DATA/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait; rm -rf "$DATA"' EXIT
sleep 3
rss() { awk '/VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$BROKER/status"; }
echo "empty broker: $(rss)"
for cycle in $(seq 1 "$CYCLES"); do
    started=$(date +%s)
    # 256 KiB segments: 10,000 partitions reserve 2.5 GB of disk, not 10.
    "$BIN/sluice-bench" run --bootstrap 127.0.0.1:19203 --partitions "$PARTITIONS" \
        --topic-config segment.bytes=262144 --duration "$DURATION" --warmup 2 \
        --quiet --out "$DATA/out" >"$DATA/bench-$cycle.txt" 2>&1 ||
        { echo "cycle $cycle: sluice-bench failed"; tail -5 "$DATA/bench-$cycle.txt"; }
    echo "cycle $cycle: bench done after $(($(date +%s) - started)) s: $(rss)"
    while ls "$DATA/data" | grep -v '^__' | grep -q -- '-[0-9]*$'; do sleep 1; done
    echo "cycle $cycle: partition directories gone after $(($(date +%s) - started)) s: $(rss)"
    sleep 10
    echo "cycle $cycle: 10 s later: $(rss)"
done
grep 'returned free memory' "$DATA/broker.log" | sed 's/.*INFO //'
