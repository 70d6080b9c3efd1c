#!/bin/bash
# Catch-up read with and without engine read-ahead: broker A runs with
# --read-ahead false, broker B with the default (on); the catchup preset
# (a backlog produced with no consumer, then one consumer reading it from
# the start), A B A B, with sluice-bench compare; then the raw O_DIRECT
# read bandwidth of the same disk (sluice-bench baseline) for the ratio.
# Run from the repository root after
# `cargo build --release -p sluice-server -p sluice-bench`.
# Results: docs/benchmarks.md, "Catch-up read with read-ahead".
set -u
BIN=${BIN:-target/release}
DATA=${DATA:-target/bench-read-ahead}
ROUNDS=${ROUNDS:-2}
BACKLOG=${BACKLOG:-1073741824}
rm -rf "$DATA"
mkdir -p "$DATA/a" "$DATA/b" "$DATA/raw"
"$BIN/sluice" --listen 127.0.0.1:19311 --data-dir "$DATA/a" --read-ahead false >"$DATA/a.log" 2>&1 &
A=$!
"$BIN/sluice" --listen 127.0.0.1:19312 --admin-listen none --data-dir "$DATA/b" >"$DATA/b.log" 2>&1 &
B=$!
trap 'kill $A $B 2>/dev/null; wait; rm -rf "$DATA"' EXIT
sleep 3
"$BIN/sluice-bench" compare --a 127.0.0.1:19311 --b 127.0.0.1:19312 \
    --preset catchup --backlog-bytes "$BACKLOG" --rounds "$ROUNDS"
"$BIN/sluice-bench" baseline --dir "$DATA/raw"
