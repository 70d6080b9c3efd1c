#!/usr/bin/env bash
# A consumer catching up on a backlog spread over many partitions: its read
# rate, the bytes the broker read from disk for it, and the broker's memory
# (issue 11: "10,000 partitions ... with broker RSS <= 1 GiB"; a consumer
# that falls behind reads such a backlog from disk).
#
#   BINS="dir-a dir-b" ROUNDS=3 bash bench/scripts/catchup_partitions.sh
#
# Per round and build (each dir holds `sluice` and `sluice-bench`, copied
# out of target/release): one broker (2 shards, defaults plus SLUICE_*
# settings from the environment, 1 GiB segments) on free ports, then
# `sluice-bench run --preset catchup` with PARTITIONS partitions and a
# BACKLOG-byte backlog (1 KiB records, max rate, acks=all), whose consumer
# reads the backlog from the start once it is written. The broker's RSS,
# its memory gauges (/metrics, `sluice_memory_*`) and the bytes it read
# from storage (/proc/PID/io read_bytes) are sampled every second.
# Prints per run: produce and catch-up MB/s, bytes read from disk per byte
# of backlog, the RSS peak and the gauges at that peak (MiB). The timeline
# of each run stays in $OUT.
set -euo pipefail

BINS=${BINS:-target/release}
ROUNDS=${ROUNDS:-3}
PARTITIONS=${PARTITIONS:-10000}
BACKLOG=${BACKLOG:-4000000000}
DATA=${DATA:-target/catchup-partitions-data}
OUT=${OUT:-target/catchup-partitions}
mkdir -p "$OUT"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

broker=""
trap '[ -n "$broker" ] && kill "$broker" 2>/dev/null; rm -rf "$DATA"' EXIT

for round in $(seq 1 "$ROUNDS"); do
    for BIN in $BINS; do
        tag="r$round-$(basename "$BIN")"
        rm -rf "$DATA"
        mkdir -p "$DATA"
        port=$(free_port)
        admin=$(free_port)
        "$BIN/sluice" --data-dir "$DATA" --cores 2 --listen "127.0.0.1:$port" \
            --admin-listen "127.0.0.1:$admin" --log-level warn >"$OUT/$tag-broker.log" 2>&1 &
        broker=$!
        sleep 1
        (
            while kill -0 "$broker" 2>/dev/null; do
                rss=$(awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$broker/status" 2>/dev/null || echo 0)
                read=$(awk '/^read_bytes/ { print $2 }' "/proc/$broker/io" 2>/dev/null || echo 0)
                gauges=$(curl -s --max-time 2 "http://127.0.0.1:$admin/metrics" |
                    awk '/^sluice_memory_/ { sub("sluice_memory_", "", $1); sub("_bytes$", "", $1)
                                             printf "%s=%.0f ", $1, $2 / 1048576 }')
                echo "$(date -u +%T) rss=$rss read_bytes=$read $gauges"
                sleep 1
            done
        ) >"$OUT/$tag-memory.txt" &
        sampler=$!
        "$BIN/sluice-bench" run --bootstrap "127.0.0.1:$port" --preset catchup \
            --partitions "$PARTITIONS" --backlog-bytes "$BACKLOG" \
            --topic-config segment.bytes=1073741824 --out "$OUT/$tag" >"$OUT/$tag.txt" 2>&1 || true
        read_bytes=$(awk '/^read_bytes/ { print $2 }' "/proc/$broker/io")
        kill "$broker"
        wait "$broker" 2>/dev/null || true
        broker=""
        wait "$sampler" 2>/dev/null || true
        produce=$(awk '/^produce / { print $4; exit }' "$OUT/$tag.txt")
        consume=$(awk '/^consume / { print $4; exit }' "$OUT/$tag.txt")
        amplification=$(awk -v r="$read_bytes" -v b="$BACKLOG" 'BEGIN { printf "%.2f", r / b }')
        peak=$(sort -t= -k2 -n "$OUT/$tag-memory.txt" | tail -1)
        printf "round %d %s: produce %s MB/s  catch-up %s MB/s  disk read / backlog %s  RSS peak and gauges (MiB): %s\n" \
            "$round" "$BIN" "${produce:-?}" "${consume:-?}" "$amplification" "$(echo "$peak" | cut -d' ' -f2,4-)"
    done
done
