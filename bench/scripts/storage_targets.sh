#!/usr/bin/env bash
# Issue 11's targets in one command: every target measured against its
# same-run reference, ROUNDS times, with the median and a verdict each.
# Run it on the machine the targets are judged on (a quiet one: the figures
# are ratios, but a busy core moves them), from the repository root, after
# `cargo build --release -p sluice-server -p sluice-bench`:
#
#   BIN=target/release ROUNDS=3 bash bench/scripts/storage_targets.sh
#
# OUT (target/storage-targets) keeps every script's output; DATA
# (target/storage-targets-data) holds the brokers' data while they run.
# It runs the scripts each target was measured with in docs/benchmarks.md:
#   1. cpu_per_gb.sh (one build): the raw disk baseline of the round, then
#      `16p-1k` (max rate), `50mb` and `catchup` (a BACKLOG-byte backlog):
#      max-rate MB/s / raw O_DIRECT write; 50 MB/s broker CPU-s per GB,
#      publish p99 / the round's raw 4 KiB write + fdatasync p99, publish
#      p99.9, end-to-end p99; catch-up MB/s / raw O_DIRECT read.
#   2. catchup_beside.sh: the 50 MB/s publish p99 beside a catch-up of
#      BESIDE_BACKLOG bytes / alone (16 GB by default: a 10 GB read ends
#      within the producer's window here, and the rest of the window is
#      then measured alone).
#   3. partitions_rss.sh (16, 1,000, 10,000 partitions, the default 1 GiB
#      segments, cold: WARMUP 3 s): MB/s against 16 partitions, broker RSS
#      peak at 10,000.
#   4. restart.sh (100 partitions filled for FILL_SECS: 12-13 GB here at
#      the default 10 s; it needs the test venv that `bash .ci/test` builds,
#      and is skipped with a note without it or with RESTART=0): serving
#      after a clean stop and after kill -9.
# Each script's own output stays under $OUT/<script>; the verdict table
# is printed and written to $OUT/targets.txt. The CPU target's reference
# is the issue's (21-22 CPU-s per GB when it was filed: at most half,
# 10.75); every other one is measured in the same round.
# Disk, one at a time: BACKLOG, then BESIDE_BACKLOG bytes, ~10 GB for
# 10,000 segment files' first preallocation, the restart's fill.
set -euo pipefail

BIN=$(cd "${BIN:-target/release}" && pwd)
ROUNDS=${ROUNDS:-3}
BACKLOG=${BACKLOG:-10000000000}
BESIDE_BACKLOG=${BESIDE_BACKLOG:-16000000000}
RESTART=${RESTART:-1}
FILL_SECS=${FILL_SECS:-10}
OUT=${OUT:-target/storage-targets}
DATA=${DATA:-target/storage-targets-data}
mkdir -p "$OUT" "$DATA"
OUT=$(cd "$OUT" && pwd)
DATA=$(cd "$DATA" && pwd)
SCRIPTS=$(cd "$(dirname "$0")" && pwd)

echo "== cpu_per_gb.sh (max rate, 50 MB/s, catch-up)"
A=$BIN ROUNDS=$ROUNDS PRESETS="16p-1k 50mb catchup" BACKLOG=$BACKLOG \
  OUT="$OUT/cpu_per_gb" DATA="$DATA/cpu_per_gb" bash "$SCRIPTS/cpu_per_gb.sh"

echo "== catchup_beside.sh"
BIN=$BIN ROUNDS=$ROUNDS BACKLOG=$BESIDE_BACKLOG OUT="$OUT/catchup_beside" \
  DATA="$DATA/catchup_beside" bash "$SCRIPTS/catchup_beside.sh" | tee "$OUT/catchup_beside.txt"

echo "== partitions_rss.sh"
BINS=$BIN ROUNDS=$ROUNDS COUNTS="16 1000 10000" WARMUP=3 SEGMENT_BYTES=1073741824 \
  OUT="$OUT/partitions_rss" DATA="$DATA/partitions_rss" \
  bash "$SCRIPTS/partitions_rss.sh" | tee "$OUT/partitions_rss.txt"

if [ "$RESTART" = 1 ] && [ ! -x "${PY:-target/test-venv/bin/python}" ]; then
  echo "== restart.sh skipped: no test venv at ${PY:-target/test-venv/bin/python} (bash .ci/test builds it)"
  RESTART=0
fi
rm -f "$OUT/restart.txt"
if [ "$RESTART" = 1 ]; then
  echo "== restart.sh"
  for round in $(seq 1 "$ROUNDS"); do
    # A failed round is reported as such; the verdicts still follow.
    BIN=$BIN PARTITIONS=100 FILL_SECS=$FILL_SECS DATA="$DATA/restart" \
      bash "$SCRIPTS/restart.sh" | tee -a "$OUT/restart.txt" ||
      echo "restart.sh failed in round $round" | tee -a "$OUT/restart.txt"
  done
fi
# Only what the scripts made: DATA may be a directory of the user's.
rm -rf "$DATA/cpu_per_gb" "$DATA/catchup_beside" "$DATA/partitions_rss" "$DATA/restart"
rmdir "$DATA" 2>/dev/null || true

python3 - "$OUT" "$ROUNDS" <<'EOF' | tee "$OUT/targets.txt"
import csv, json, re, statistics, sys
from pathlib import Path

out, rounds = Path(sys.argv[1]), int(sys.argv[2])
rows = list(csv.DictReader(open(out / "cpu_per_gb/results.tsv"), delimiter="\t"))
# Only this run's rows: results.tsv is appended to across runs.
rows = rows[-3 * rounds:]
per_round = {}
for row in rows:
    per_round.setdefault(int(row["round"]), {})[row["preset"]] = row

def run_json(preset, round_):
    return json.load(open(next((out / "cpu_per_gb" / f"{preset}-A-{round_}").glob("*-native.json"))))

def percentile(summary, kind, name):
    return summary["latency_us"][kind][name + "_us"] / 1000.0

targets = []  # (name, values, verdict function, format)
max_rate, cpu, p99_ratio, p999, e2e, catchup = [], [], [], [], [], []
for round_, presets in sorted(per_round.items()):
    baseline = json.load(open(out / f"cpu_per_gb/baseline-{round_}.json"))
    raw_sync_p99_ms = baseline["disk"]["write_and_fdatasync_latency"]["p99_us"] / 1000.0
    max_rate.append(float(presets["16p-1k"]["MB/s"]) / float(presets["16p-1k"]["raw_write_MB/s"]))
    cpu.append(float(presets["50mb"]["broker_cpu_s_per_gb"]))
    fifty = run_json("50mb", round_)
    p99_ratio.append(percentile(fifty, "publish", "p99") / raw_sync_p99_ms)
    p999.append(percentile(fifty, "publish", "p99_9"))
    e2e.append(percentile(fifty, "end_to_end", "p99"))
    catchup.append(float(presets["catchup"]["MB/s"]) / float(presets["catchup"]["raw_read_MB/s"]))

# A round whose catch-up ended before the producer's window did measures
# the rest of that window alone: left out, and counted.
beside_lines = [line for line in open(out / "catchup_beside.txt") if re.match(r"^\d+\t", line)]
beside = [float(line.split("\t")[3]) for line in beside_lines if "read ended" not in line]
beside_left_out = len(beside_lines) - len(beside)
# A round counts only if its 16-partition reference ran (a failed run
# prints "?" and would make the next count the reference) and the
# broker's memory was sampled (an RSS peak of 0: it never was).
ratios = {1000: [], 10000: []}
rss = []
reference_ran = False
for line in open(out / "partitions_rss.txt"):
    found = re.search(r"partitions\s+(\d+): produce\s+(\S+) MB/s\s+ratio ([\d.]+) .* RSS peak\s+(\d+) MiB", line)
    if not found:
        continue
    count, mbps, ratio, peak = int(found.group(1)), found.group(2), float(found.group(3)), int(found.group(4))
    if count == 16:
        reference_ran = mbps != "?" and ratio == 1.0
    elif count in ratios and reference_ran and mbps != "?":
        ratios[count].append(ratio)
        if count == 10000 and peak > 0:
            rss.append(float(peak))
restart_clean, restart_kill = [], []
if (out / "restart.txt").exists():
    for line in open(out / "restart.txt"):
        # "never": not serving within restart.sh's 300 s (or its client failed).
        found = re.search(r"serving after (never|[\d.]+) s", line)
        if found:
            seconds = float("inf") if found.group(1) == "never" else float(found.group(1))
            (restart_clean if line.startswith("clean stop") else restart_kill).append(seconds)

table = [
    ("max-rate ingest / raw O_DIRECT write", max_rate, ">=", 0.8),
    ("50 MB/s broker CPU-s per GB (issue: <= half of 21.5)", cpu, "<=", 10.75),
    ("50 MB/s publish p99 / raw 4 KiB write+fdatasync p99", p99_ratio, "<=", 3.0),
    ("50 MB/s publish p99.9, ms", p999, "<=", 2.0),
    ("50 MB/s end-to-end p99, ms", e2e, "<=", 1.5),
    ("1,000 partitions / 16 partitions", ratios[1000], ">=", 0.8),
    ("10,000 partitions / 16 partitions", ratios[10000], ">=", 0.6),
    ("10,000 partitions broker RSS peak, MiB", rss, "<=", 1024),
    ("catch-up of the backlog / raw O_DIRECT read", catchup, ">=", 0.8),
    ("50 MB/s publish p99 beside a catch-up / alone", beside, "<=", 2.0),
    ("restart after a clean stop, 100 partitions: serving after s", restart_clean, "<=", 1.0),
    ("restart after kill -9 (report only), s", restart_kill, None, None),
]
print("%-62s %-34s %8s  %s" % ("target", "per round", "median", "verdict"))
for name, values, op, bound in table:
    if not values:
        print("%-62s %-34s %8s  %s" % (name, "-", "-", "not measured"))
        continue
    median = statistics.median(values)
    if op is None:
        verdict = "reported"
    else:
        met = median >= bound if op == ">=" else median <= bound
        verdict = ("MET" if met else "MISSED") + " (%s %g)" % (op, bound)
    print("%-62s %-34s %8.3f  %s" % (name, " ".join("%.3g" % v for v in values), median, verdict))
if beside_left_out:
    print("(%d beside round(s) left out: the catch-up read ended before the producer; raise BESIDE_BACKLOG)"
          % beside_left_out)
EOF
