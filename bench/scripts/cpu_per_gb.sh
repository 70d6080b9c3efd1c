#!/usr/bin/env bash
# Broker CPU per GB, A/B (issue 11): two builds of sluice + sluice-bench, the
# same workloads alternately (A B A B ...), and the raw disk baseline once per
# round, so every figure has a same-round reference.
#
#   A=/path/to/dir-with-old-binaries B=/path/to/dir-with-new-binaries \
#   ROUNDS=3 PRESETS="16p-1k 50mb catchup" bash bench/scripts/cpu_per_gb.sh
#
# Each directory holds `sluice` and `sluice-bench` (copy them out of
# target/release: a build in the shared tree would replace them mid-run).
# A_ENV and B_ENV (optional, e.g. B_ENV="SLUICE_SEGMENT_WRITES=fdatasync")
# are settings each side's embedded broker runs with, so that A and B can
# be one binary with two configurations (A=B=dir).
# EXTRA_ARGS (optional) are added to every sluice-bench run, e.g.
# EXTRA_ARGS="--partitions 1000 --topic-config segment.bytes=16777216"
# for a catch-up read of 1,000 partitions.
# Per run it prints throughput and broker CPU-seconds per GB: for the
# produce presets the bench's own figure (utime + stime of the broker over
# the measured window / GB acknowledged); for `catchup` the broker's
# utime + stime from the start of the catch-up read to the end of the run
# (topic deletion and clean stop included, alike for A and B; sampled
# from /proc/<pid>/stat every 0.2 s) per GB consumed. Results go to
# $OUT/results.tsv (OUT defaults to target/cpu-per-gb).
set -euo pipefail

A=${A:?directory with the A binaries}
# Without B, only A runs (bench/scripts/storage_targets.sh).
B=${B:-}
ROUNDS=${ROUNDS:-3}
PRESETS=${PRESETS:-"16p-1k 50mb catchup"}
DURATION=${DURATION:-10}
BACKLOG=${BACKLOG:-3000000000}
OUT=${OUT:-target/cpu-per-gb}
DATA=${DATA:-target/cpu-per-gb-data}
mkdir -p "$OUT" "$DATA"
OUT=$(cd "$OUT" && pwd)
DATA=$(cd "$DATA" && pwd)
TICKS=$(getconf CLK_TCK)
RESULTS=$OUT/results.tsv
[ -s "$RESULTS" ] || printf 'time\tround\tbuild\tpreset\tMB/s\tbroker_cpu_s_per_gb\traw_write_MB/s\traw_read_MB/s\tload1\tdevice_flushes/s\tdevice_writes/s\n' >"$RESULTS"
# The block device under DATA, for its flush and write counts in
# /proc/diskstats (fields 19 and 8), averaged over each whole run.
DEVICE=${DEVICE:-$(basename "$(df --output=source "$DATA" | tail -1)")}

device_counts() { # -> "flushes writes" completed so far on $DEVICE
  awk -v device="$DEVICE" '$3 == device { print $19, $8 }' /proc/diskstats
}

cpu_ticks() { # utime + stime of a pid, in clock ticks
  awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || true
}

run_one() { # round build-name bin-dir preset raw-write raw-read
  local round=$1 name=$2 bin=$3 preset=$4 raw_write=$5 raw_read=$6
  local settings_var="${name}_ENV"
  local -a settings
  read -r -a settings <<<"${!settings_var:-}"
  local tag="$preset-$name-$round" log="$OUT/$preset-$name-$round.log"
  local -a extra
  read -r -a extra <<<"${EXTRA_ARGS:-}"
  local args=(--embedded --sluice-bin "$bin/sluice" --data-dir "$DATA/$tag"
    --out "$OUT/$tag" --preset "$preset" "${extra[@]}")
  if [ "$preset" = catchup ]; then
    args+=(--backlog-bytes "$BACKLOG")
  else
    args+=(--duration "$DURATION")
  fi
  local counts_before started
  counts_before=$(device_counts)
  started=$(date +%s.%N)
  env "${settings[@]}" "$bin/sluice-bench" "${args[@]}" >"$log" 2>&1 &
  local bench=$! broker="" start="" last=""
  # Only the catch-up's CPU is sampled here; the produce presets take the
  # bench's own figure. Sampling starts processes five times a second
  # (pgrep, awk, grep), and beside a 50 MB/s run that alone moved its
  # publish p99 from ~0.31 to ~0.81 ms (docs/benchmarks.md, fifteenth
  # session).
  while [ "$preset" = catchup ] && kill -0 "$bench" 2>/dev/null; do
    [ -n "$broker" ] || broker=$(pgrep -P "$bench" -x sluice | head -1 || true)
    if [ -n "$broker" ]; then
      local now
      now=$(cpu_ticks "$broker")
      [ -z "$now" ] || last=$now
      if [ -z "$start" ] && grep -q "catch-up: consumers read" "$log"; then start=$last; fi
    fi
    sleep 0.2
  done
  wait "$bench" || { echo "run $tag failed, see $log" >&2; return 1; }
  local device_rates
  device_rates=$(python3 -c 'import sys, time
before, after = sys.argv[1].split(), sys.argv[2].split()
elapsed = time.time() - float(sys.argv[3])
print("%.0f\t%.0f" % tuple((int(a) - int(b)) / elapsed for a, b in zip(after, before)))' \
    "${counts_before:-0 0}" "$(device_counts || echo 0 0)" "$started")
  local json
  json=$(ls "$OUT/$tag"/*-native.json)
  python3 - "$json" "$preset" "${start:-0}" "${last:-0}" "$TICKS" <<'EOF' >"$OUT/$tag.figures"
import json, sys
summary = json.load(open(sys.argv[1]))
preset, start, last, ticks = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if preset == "catchup":
    consume = summary["consume"]
    cpu = (last - start) / ticks
    print(consume["mb_per_sec"], round(cpu / (consume["bytes"] / 1e9), 3))
else:
    print(summary["produce"]["mb_per_sec"], summary["cpu"]["broker_cpu_secs_per_gb_produced"])
EOF
  read -r mbps cpu_per_gb <"$OUT/$tag.figures"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%H:%M:%S)" "$round" "$name" "$preset" \
    "$mbps" "$cpu_per_gb" "$raw_write" "$raw_read" "$(cut -d' ' -f1 /proc/loadavg)" "$device_rates" | tee -a "$RESULTS"
  rm -rf "${DATA:?}/$tag"
}

for round in $(seq 1 "$ROUNDS"); do
  "$A/sluice-bench" baseline --dir "$DATA" --seconds 3 --json "$OUT/baseline-$round.json" >/dev/null 2>&1
  read -r raw_write raw_read < <(python3 - "$OUT/baseline-$round.json" <<'EOF'
import json, sys
baseline = json.load(open(sys.argv[1]))
print(baseline["disk"]["direct_write"]["mb_per_sec"], baseline["direct_read"]["mb_per_sec"])
EOF
)
  for preset in $PRESETS; do
    run_one "$round" A "$A" "$preset" "$raw_write" "$raw_read"
    [ -z "$B" ] || run_one "$round" B "$B" "$preset" "$raw_write" "$raw_read"
  done
done
