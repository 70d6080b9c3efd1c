#!/bin/bash
# What a Prometheus scrape costs the data path: one broker, one workload run
# repeatedly, A = nobody scrapes, B = /metrics fetched every second (curl,
# as a Prometheus server would), A B A B ... on the same broker. Prints the
# median of each figure per side, the ratio B/A, and what a scrape took
# (time and size). Run from the repository root after
# `cargo build --release -p sluice-server -p sluice-bench`.
# Results: docs/benchmarks.md, "Metrics scrapes".
#   PRESET (default 100p-1k), ROUNDS (3), DURATION (10 s), INTERVAL (1 s)
set -u
BIN=${BIN:-target/release}
DATA=${DATA:-target/bench-metrics-scrape}
ROUNDS=${ROUNDS:-3}
PRESET=${PRESET:-100p-1k}
DURATION=${DURATION:-10}
INTERVAL=${INTERVAL:-1}
KAFKA=127.0.0.1:19331
ADMIN=127.0.0.1:19332
rm -rf "$DATA"
mkdir -p "$DATA/data" "$DATA/runs"
"$BIN/sluice" --listen "$KAFKA" --admin-listen "$ADMIN" --data-dir "$DATA/data" --cores 2 \
    >"$DATA/broker.log" 2>&1 &
BROKER=$!
SCRAPER=
trap 'kill $SCRAPER $BROKER 2>/dev/null; wait; rm -rf "$DATA/data"' EXIT
for _ in $(seq 100); do
    curl -sf "http://$ADMIN/v1/status/ready" >/dev/null && break
    sleep 0.1
done

scrape_loop() {
    while :; do
        curl -s -o "$DATA/last-scrape.txt" -w '%{time_total} %{size_download}\n' \
            "http://$ADMIN/metrics" >>"$DATA/scrapes.txt"
        sleep "$INTERVAL"
    done
}

for round in $(seq "$ROUNDS"); do
    for side in a b; do
        if [ "$side" = b ]; then
            scrape_loop &
            SCRAPER=$!
        fi
        "$BIN/sluice-bench" run --bootstrap "$KAFKA" --preset "$PRESET" \
            --duration "$DURATION" --out "$DATA/runs/$side-$round" >"$DATA/runs/$side-$round.log" 2>&1 \
            || echo "run $side-$round failed: see $DATA/runs/$side-$round.log"
        if [ -n "$SCRAPER" ]; then
            kill "$SCRAPER" 2>/dev/null
            wait "$SCRAPER" 2>/dev/null
            SCRAPER=
        fi
        echo "round $round side $side done"
    done
done

python3 - "$DATA" "$INTERVAL" <<'EOF'
import glob, json, statistics, sys
data = sys.argv[1]
def figures(side):
    runs = []
    paths = glob.glob(f"{data}/runs/{side}-*/*.json")
    paths.sort(key=lambda path: int(path.split("/runs/")[1].split("/")[0].split("-")[1]))
    for path in paths:
        run = json.load(open(path))
        runs.append({
            "produce MB/s": run["produce"]["mb_per_sec"],
            "consume MB/s": run["consume"]["mb_per_sec"],
            "publish p50 ms": run["latency_us"]["publish"]["p50_us"] / 1000,
            "publish p99 ms": run["latency_us"]["publish"]["p99_us"] / 1000,
            "end-to-end p99 ms": run["latency_us"]["end_to_end"]["p99_us"] / 1000,
        })
    return runs
a, b = figures("a"), figures("b")
print("per run (A B A B ...): produce MB/s, publish p99 ms")
for round_index, (run_a, run_b) in enumerate(zip(a, b), 1):
    print(f"  round {round_index}: A {run_a['produce MB/s']:8.1f} {run_a['publish p99 ms']:8.1f}"
          f"   B {run_b['produce MB/s']:8.1f} {run_b['publish p99 ms']:8.1f}")
print(f"{len(a)} runs without scrapes (A), {len(b)} with a scrape every {sys.argv[2]} s (B)")
print("median of each side, their ratio, and the median of the ratios of each round's pair")
print(f"{'figure':<20}{'A':>12}{'B':>12}{'B/A':>8}{'pairs':>8}")
for key in a[0]:
    median_a = statistics.median(run[key] for run in a)
    median_b = statistics.median(run[key] for run in b)
    ratio = median_b / median_a if median_a else float("nan")
    pairs = statistics.median(
        run_b[key] / run_a[key] for run_a, run_b in zip(a, b) if run_a[key])
    print(f"{key:<20}{median_a:>12.2f}{median_b:>12.2f}{ratio:>8.3f}{pairs:>8.3f}")
scrapes = [line.split() for line in open(f"{data}/scrapes.txt") if line.strip()]
times = sorted(float(time) * 1000 for time, _ in scrapes)
sizes = [int(size) for _, size in scrapes]
print(f"{len(times)} scrapes: median {statistics.median(times):.2f} ms, "
      f"max {times[-1]:.2f} ms, median size {statistics.median(sizes) / 1024:.1f} KiB")
EOF
