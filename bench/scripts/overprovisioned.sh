#!/bin/bash
# Pinned shards (A) against --overprovisioned (B) on a host whose core 0 is
# kept busy by another process (a shell busy loop pinned there): the 50mb
# preset, A B A B A B, with sluice-bench compare. Run from the repository
# root after `cargo build --release -p sluice-server -p sluice-bench`.
# Results: docs/benchmarks.md, "Shared hosts (--overprovisioned)".
set -u
BIN=${BIN:-target/release}
DATA=${DATA:-target/bench-overprovisioned}
ROUNDS=${ROUNDS:-3}
rm -rf "$DATA"
mkdir -p "$DATA/a" "$DATA/b"
"$BIN/sluice" --listen 127.0.0.1:19301 --data-dir "$DATA/a" --cores 2 >"$DATA/a.log" 2>&1 &
A=$!
"$BIN/sluice" --listen 127.0.0.1:19302 --admin-listen none --data-dir "$DATA/b" --cores 2 --overprovisioned >"$DATA/b.log" 2>&1 &
B=$!
sleep 3
taskset -c 0 sh -c 'while :; do :; done' &
HOG=$!
trap 'kill $HOG $A $B 2>/dev/null; wait; rm -rf "$DATA"' EXIT
"$BIN/sluice-bench" compare --a 127.0.0.1:19301 --b 127.0.0.1:19302 \
    --preset 50mb --rounds "$ROUNDS" --duration 10
