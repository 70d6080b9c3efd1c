#!/usr/bin/env bash
# Does deleting a large topic stall produce to the others? (issue 11: tail
# latency.) Per round, against one broker (`sluice`, 2 shards, defaults):
#   1. fill a topic of 16 partitions with about FILL_SECONDS of max-rate
#      1 KiB records (kept);
#   2. run the `50mb` preset on another topic for DURATION seconds, and
#      DELETE_AFTER seconds into it delete the filled topic (`sluice topic
#      delete`);
#   3. run the same `50mb` preset again with nothing deleted beside it.
# Prints the producer's publish p99 / p99.9 / max with and without the
# deletion, the filled topic's size, and how long the deletion took.
#
#   A=/dir/with/old/binaries B=/dir/with/new/binaries ROUNDS=3 bash bench/scripts/delete_beside.sh
#
# A and B (directories holding `sluice` and `sluice-bench`) run alternately,
# each with a broker of its own; B may be left out.
set -euo pipefail

A=${A:?directory with the A binaries}
B=${B:-}
ROUNDS=${ROUNDS:-3}
FILL_SECONDS=${FILL_SECONDS:-10}
DURATION=${DURATION:-8}
DELETE_AFTER=${DELETE_AFTER:-4}
DATA=${DATA:-target/delete-beside-data}
OUT=${OUT:-target/delete-beside}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

publish() { # json -> "p99 p99.9 max" of publish, in ms
  python3 - "$1" <<'EOF'
import json, sys
publish = json.load(open(sys.argv[1]))["latency_us"]["publish"]
print(" ".join("%.2f" % (publish[key] / 1000) for key in ("p99_us", "p99_9_us", "max_us")))
EOF
}

run_side() { # round name bin-dir
  local round=$1 name=$2 bin=$3 tag="$2-$1"
  local port bootstrap broker
  port=$(free_port)
  bootstrap=127.0.0.1:$port
  rm -rf "$DATA"
  "$bin/sluice" --data-dir "$DATA" --listen "$bootstrap" --admin-listen none \
    --log-level warn >"$OUT/$tag.broker.log" 2>&1 &
  broker=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  "$bin/sluice-bench" run --bootstrap "$bootstrap" --preset 16p-1k --consumers 0 \
    --duration "$FILL_SECONDS" --warmup 0 --keep-topics --topic-prefix fill --quiet \
    --out "$OUT/$tag-fill" >"$OUT/$tag-fill.log" 2>&1
  local topic size
  topic=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["topics"][0])' \
    "$(ls "$OUT/$tag-fill"/*-native.json)")
  size=$(du -sb "$DATA" | cut -f1)
  "$bin/sluice-bench" run --bootstrap "$bootstrap" --preset 50mb --duration "$DURATION" \
    --warmup 1 --quiet --out "$OUT/$tag-deleting" >"$OUT/$tag-deleting.log" 2>&1 &
  local bench=$!
  sleep "$((DELETE_AFTER + 1))"
  local started ended
  started=$(date +%s.%N)
  "$bin/sluice" topic delete "$topic" --bootstrap "$bootstrap" >"$OUT/$tag-delete.log" 2>&1
  ended=$(date +%s.%N)
  wait $bench
  "$bin/sluice-bench" run --bootstrap "$bootstrap" --preset 50mb --duration "$DURATION" \
    --warmup 1 --quiet --out "$OUT/$tag-quiet" >"$OUT/$tag-quiet.log" 2>&1
  kill $broker
  wait $broker 2>/dev/null || true
  rm -rf "$DATA"
  printf '%s\t%s\t%s\t%s\t%.2f\t%s\n' "$round" "$name" \
    "$(publish "$(ls "$OUT/$tag-deleting"/*-native.json)" | tr ' ' '/')" \
    "$(publish "$(ls "$OUT/$tag-quiet"/*-native.json)" | tr ' ' '/')" \
    "$(python3 -c "print(($ended - $started))")" "$((size / 1000000)) MB"
}

printf 'round\tbuild\tdeleting: publish p99/p99.9/max ms\tnothing deleted: p99/p99.9/max ms\tdelete s\tdeleted\n'
for round in $(seq 1 "$ROUNDS"); do
  run_side "$round" A "$A"
  [ -z "$B" ] || run_side "$round" B "$B"
done
