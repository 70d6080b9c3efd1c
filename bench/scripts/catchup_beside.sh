#!/usr/bin/env bash
# A 50 MB/s producer beside a catch-up read (issue 11: "a 50 MB/s producer
# running beside it keeps its publish p99 within 2x of its p99 without the
# catch-up").
#
#   BIN=target/release ROUNDS=3 BACKLOG=10000000000 bash bench/scripts/catchup_beside.sh
#
# One broker (`sluice`, 2 shards, defaults plus SLUICE_* settings from the
# environment) on a free port. Per round:
#   1. alone: the `50mb` preset (16 partitions, 1 KiB records, acks=all,
#      linger 0) for DURATION seconds;
#   2. beside: the `catchup` preset with a BACKLOG-byte backlog on its own
#      topic; once its consumer starts reading the backlog from the start,
#      the same `50mb` run starts on a third topic.
# Prints per round the producer's publish p50/p99/p99.9 alone and beside,
# the p99 ratio (target <= 2), the catch-up read's MB/s, and the median
# time a log flush waited for durability (the broker's
# sluice_commit_sync_duration_seconds histogram, as a bucket bound) alone
# and beside: the device's share of the latency. Every run's
# JSON summary stays under $OUT. The backlog needs BACKLOG bytes of disk;
# each run deletes its topic.
set -euo pipefail

BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-3}
BACKLOG=${BACKLOG:-10000000000}
DURATION=${DURATION:-8}
SETTLE=${SETTLE:-10}
DATA=${DATA:-target/catchup-beside-data}
OUT=${OUT:-target/catchup-beside}
rm -rf "$DATA"
mkdir -p "$DATA" "$OUT"
OUT=$(cd "$OUT" && pwd)
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
admin=127.0.0.1:$(free_port)
bootstrap=127.0.0.1:$port

"$BIN/sluice" --data-dir "$DATA" --listen "$bootstrap" --admin-listen "$admin" \
  --log-level warn >"$OUT/broker.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

latency() { # json -> "p50 p99 p99.9" of publish, in ms
  python3 - "$1" <<'EOF'
import json, sys
publish = json.load(open(sys.argv[1]))["latency_us"]["publish"]
print(" ".join("%.2f" % (publish[key] / 1000) for key in ("p50_us", "p99_us", "p99_9_us")))
EOF
}

scrape() { # -> the broker's metrics, to $1
  curl -sf "http://$admin/metrics" >"$1"
}

flush_median() { # before.prom after.prom -> median log-flush durability wait, ms (bucket bound)
  python3 - "$1" "$2" <<'EOF'
import re, sys
def buckets(path):
    counts = {}
    for line in open(path):
        match = re.match(r'sluice_commit_sync_duration_seconds_bucket\{.*le="([^"]+)".*\} (\S+)', line)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + float(match.group(2))
    return counts
before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
delta = sorted(((float(le), after[le] - before.get(le, 0)) for le in after), key=lambda pair: pair[0])
total = delta[-1][1] if delta else 0
for bound, count in delta:
    if total and count >= total / 2:
        print("<=%.2f" % (bound * 1000))
        break
else:
    print("-")
EOF
}

produce_50mb() { # tag -> runs the 50 MB/s preset, prints its latency line and flush median
  scrape "$OUT/$1.before.prom"
  "$BIN/sluice-bench" run --bootstrap "$bootstrap" --preset 50mb --duration "$DURATION" \
    --warmup 1 --quiet --out "$OUT/$1" >"$OUT/$1.log" 2>&1
  scrape "$OUT/$1.after.prom"
  echo "$(latency "$(ls "$OUT/$1"/*-native.json)") $(flush_median "$OUT/$1.before.prom" "$OUT/$1.after.prom")"
}

printf 'round\talone p50/p99/p99.9 ms\tbeside p50/p99/p99.9 ms\tp99 ratio\tcatch-up MB/s\tflush median ms alone/beside\tload\n'
for round in $(seq 1 "$ROUNDS"); do
  read -r a50 a99 a999 aflush < <(produce_50mb "alone-$round")
  # The catch-up keeps its topic: deleting it inside the producer's window
  # (a read of 10 GB now ends within 8 s) would measure the deletion, whose
  # trim of the files holds the device's writes ("Deleting a large topic
  # beside a producer" in docs/benchmarks.md), not the read.
  "$BIN/sluice-bench" run --bootstrap "$bootstrap" --preset catchup --backlog-bytes "$BACKLOG" \
    --keep-topics --topic-prefix "catchup-$round" \
    --out "$OUT/catchup-$round" >"$OUT/catchup-$round.log" 2>&1 &
  catchup=$!
  until grep -q "catch-up: consumers read" "$OUT/catchup-$round.log"; do
    kill -0 $catchup 2>/dev/null || { echo "catch-up run $round failed: $OUT/catchup-$round.log" >&2; exit 1; }
    sleep 0.1
  done
  read -r b50 b99 b999 bflush < <(produce_50mb "beside-$round")
  still_reading=$(kill -0 $catchup 2>/dev/null && echo yes || echo no)
  wait $catchup
  mapfile -t kept < <("$BIN/sluice" topic list --bootstrap "$bootstrap" | awk -v prefix="catchup-$round-" 'index($1, prefix) == 1 {print $1}')
  if [ "${#kept[@]}" -gt 0 ]; then
    "$BIN/sluice" topic delete --bootstrap "$bootstrap" "${kept[@]}" >/dev/null
    # Let the files' removal finish before the next round's alone run.
    sleep "$SETTLE"
  fi
  catchup_mbps=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["consume"]["mb_per_sec"])' \
    "$(ls "$OUT/catchup-$round"/*-native.json)")
  ratio=$(python3 -c "print(round($b99 / $a99, 2))")
  printf '%s\t%s/%s/%s\t%s/%s/%s\t%s\t%s%s\t%s/%s\t%s\n' "$round" "$a50" "$a99" "$a999" "$b50" "$b99" "$b999" \
    "$ratio" "$catchup_mbps" "$([ "$still_reading" = yes ] || echo ' (read ended before the producer)')" \
    "$aflush" "$bflush" "$(cut -d' ' -f1 /proc/loadavg)"
done
