#!/bin/bash
# Partition lookup (issue 11): broker A built before the change, broker B
# after, side by side; sluice-bench compare runs A B A B on a topic of many
# partitions while perf samples both brokers (flat profile, 299 Hz).
# Build each binary from its commit (e.g. in a git worktree with its own
# CARGO_TARGET_DIR) and pass them as A_BIN and B_BIN; run from the
# repository root. Results: docs/benchmarks.md, "Partition lookup".
set -u
A_BIN=${A_BIN:?the sluice binary before the change}
B_BIN=${B_BIN:?the sluice binary after the change}
BENCH=${BENCH:-target/release/sluice-bench}
PARTITIONS=${PARTITIONS:-5000}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
DATA=${DATA:-target/bench-partition-lookup}
OUT=${OUT:-target/bench-results/partition-lookup}
rm -rf "$DATA" "$OUT"
mkdir -p "$DATA/a" "$DATA/b" "$OUT"
"$A_BIN" --listen 127.0.0.1:19201 --data-dir "$DATA/a" --cores 2 >"$DATA/a.log" 2>&1 &
A=$!
"$B_BIN" --listen 127.0.0.1:19202 --data-dir "$DATA/b" --cores 2 >"$DATA/b.log" 2>&1 &
B=$!
trap 'kill $A $B 2>/dev/null; wait; rm -rf "$DATA"' EXIT
sleep 3
perf record -F 299 -p "$A,$B" -o "$OUT/perf.data" -q >/dev/null 2>&1 &
PERF=$!
# 256 KiB segments: a segment's first preallocation is capped by them, so
# a topic reserves 1.3 GB of disk instead of 5 GB. --keep-topics: a broker
# before the change deletes a 5,000-partition topic one partition at a time
# for minutes, an fsync storm on the disk the other broker's run shares
# (and its next CreateTopics times out behind it); the topics go with the
# data directories at the end.
"$BENCH" compare --a 127.0.0.1:19201 --b 127.0.0.1:19202 --rounds "$ROUNDS" \
    --partitions "$PARTITIONS" --topic-config segment.bytes=262144 \
    --duration "$DURATION" --warmup 2 --keep-topics --out "$OUT"
kill -INT $PERF
wait $PERF
ps -o pid,times,args -p "$A,$B"
for pid in $A $B; do
    echo "== broker pid $pid: hashing and lookup symbols, % of its samples"
    perf report -i "$OUT/perf.data" --pid "$pid" --sort sym --stdio 2>/dev/null |
        grep -E 'sip|Hash|hash|bcmp|memcmp|PartitionTable|Shard::partition' | head -12
done
