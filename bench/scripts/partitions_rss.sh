#!/bin/bash
# Throughput and memory by partition count (issue 11: "10,000 partitions on
# 2 cores >= 0.6 of the 16-partition throughput, with broker RSS <= 1 GiB").
# ROUNDS rounds of sluice-bench --embedded (2 shards, max rate, acks=all,
# 1 KiB records, 256 KiB segments so 10,000 partitions fit a small disk,
# 256 MiB retention per partition) at
# each of COUNTS partitions, in that order within a round; the embedded
# broker's resident set is sampled every second while the bench runs. Prints
# per run: produce MB/s, its ratio to the round's first count, peak and
# last RSS, the memory gauges at the peak and the load average. Run from the repository root after
# `cargo build --release -p sluice-server -p sluice-bench`:
#   DATA=/mnt/sluice-rss bench/scripts/partitions_rss.sh
#   COUNTS="16 10000" ROUNDS=1 SMAPS=1 bench/scripts/partitions_rss.sh
# SEGMENT_BYTES=1073741824 runs the broker's default segment size (segment
# files preallocate from 1 MiB, so 10,000 partitions need ~10 GB); the small
# default measures a segment roll every 256 KiB (file creation, see
# docs/benchmarks.md "Fetch windows, and what limits 10,000 partitions").
# A/B: BINS="dir-a dir-b" (each with sluice and sluice-bench, copied out of
# target/release) runs every count with each build in turn within a round,
# so each build's ratio has a same-round reference.
# The embedded broker inherits the environment (SLUICE_* settings).
# Results: docs/benchmarks.md, "Restart time and 10,000 partitions".
set -u
BINS=${BINS:-${BIN:-target/release}}
DATA=${DATA:-target/bench-partitions-rss}
COUNTS=${COUNTS:-16 1000 10000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
# WARMUP=40 measures 10,000 partitions at steady state: every partition has
# created its segment file and written before the window starts.
WARMUP=${WARMUP:-3}
SEGMENT_BYTES=${SEGMENT_BYTES:-262144}
# Retention keeps the 16-partition runs within a small disk (the cleaner
# applies it every 2 s).
RETENTION_BYTES=${RETENTION_BYTES:-268435456}
export SLUICE_LOG_CLEANER_INTERVAL_MS=${SLUICE_LOG_CLEANER_INTERVAL_MS:-2000}
OUT=${OUT:-$DATA/out}
mkdir -p "$DATA" "$OUT"
trap 'rm -rf "$DATA/run"' EXIT
for round in $(seq 1 "$ROUNDS"); do
  build=0
  for BIN in $BINS; do
    build=$((build + 1))
    first=""
    for count in $COUNTS; do
        rm -rf "$DATA/run"
        tag="r$round-b$build-p$count"
        "$BIN/sluice-bench" run --embedded --data-dir "$DATA/run" --broker-cores 2 \
            --partitions "$count" --topic-config segment.bytes="$SEGMENT_BYTES" \
            --topic-config retention.bytes="$RETENTION_BYTES" \
            --duration "$DURATION" --warmup "$WARMUP" --quiet --out "$OUT/$tag" \
            >"$OUT/$tag.txt" 2>&1 &
        bench=$!
        peak=0
        last=0
        broker=""
        admin=""
        at_peak="?"
        while kill -0 $bench 2>/dev/null; do
            if [ -z "$broker" ]; then
                broker=$(pgrep -P $bench -x sluice | head -1)
                # The broker's admin address, for its memory gauges.
                [ -n "$broker" ] && admin=$(tr '\0' '\n' <"/proc/$broker/cmdline" 2>/dev/null |
                    awk 'take { print; exit } $0 == "--admin-listen" { take = 1 }')
            fi
            if [ -n "$broker" ] && [ -r "/proc/$broker/status" ]; then
                kib=$(awk '/VmRSS/ { print $2 }' "/proc/$broker/status" 2>/dev/null)
                if [ -n "$kib" ]; then
                    last=$kib
                    if [ "$kib" -gt "$peak" ]; then
                        peak=$kib
                        # Where the memory is at the peak (MiB): write chunks
                        # live / retained / pooled, malloc in use / free.
                        [ -n "$admin" ] && at_peak=$(curl -s --max-time 2 "http://$admin/metrics" |
                            awk '/^sluice_memory_/ { v = v sprintf("%.0f/", $2 / 1048576) }
                                 END { print (v == "" ? "?" : substr(v, 1, length(v) - 1)) }')
                    fi
                    [ -n "${SMAPS:-}" ] && cp "/proc/$broker/smaps_rollup" "$OUT/r$round-p$count.smaps" 2>/dev/null
                fi
            fi
            sleep 1
        done
        wait $bench
        mbps=$(awk '/^produce / { print $4; exit }' "$OUT/$tag.txt")
        consumed=$(awk '/^consume / { print $4; exit }' "$OUT/$tag.txt")
        e2e_p99=$(awk '/^end-to-end / { print $6; exit }' "$OUT/$tag.txt")
        [ -z "$first" ] && first=$mbps
        ratio=$(awk -v a="${mbps:-0}" -v b="${first:-1}" 'BEGIN { printf "%.3f", a / b }')
        printf "round %d build %s partitions %5d: produce %7s MB/s  ratio %s  consume %7s MB/s  e2e p99 %s ms  RSS peak %4d MiB last %4d MiB  at peak chunks/retained/pooled/malloc-used/malloc-free %s MiB  load %s\n" \
            "$round" "$BIN" "$count" "${mbps:-?}" "$ratio" "${consumed:-?}" "${e2e_p99:-?}" \
            $((peak / 1024)) $((last / 1024)) "$at_peak" "$(cut -d' ' -f1-3 /proc/loadavg)"
    done
  done
done
