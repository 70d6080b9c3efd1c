#!/bin/bash
# One fdatasync per partition file (A, --sync file) against one syncfs per
# shard round (B, --sync filesystem): the engine benchmark, A B A B A B, on
# a data directory that should be on a filesystem of its own (syncfs also
# writes back everything else dirty on its filesystem). Prints each run's
# max-rate ratio to the raw O_DIRECT bandwidth of the same run, syncs/s,
# group-commit p99 and CPU per GB, then the medians per mode.
# Run from the repository root after `cargo build --release -p sluice-bench`.
#   DIR=/mnt/data/bench PARTITIONS=16 bench/scripts/sync_mode.sh
# A dedicated filesystem on this VM (what docs/benchmarks.md used):
#   dd if=/dev/zero of=/work/loopfs.img bs=4M count=3072 oflag=direct
#   losetup -f --show --direct-io=on /work/loopfs.img      # -> /dev/loopN
#   mkfs.ext4 -E lazy_itable_init=0,lazy_journal_init=0 /dev/loopN
#   mount /dev/loopN /mnt/sluice-data
# Results: docs/benchmarks.md, "One sync per shard (--sync-mode filesystem)".
set -eu
BIN=${BIN:-target/release}
DIR=${DIR:?set DIR to a directory on the filesystem under test}
PARTITIONS=${PARTITIONS:-16}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-target/sync-mode-$PARTITIONS}
mkdir -p "$OUT" "$DIR"
for round in $(seq 1 "$ROUNDS"); do
    for mode in file filesystem; do
        "$BIN/sluice-bench" engine --dir "$DIR" --partitions "$PARTITIONS" \
            --duration-secs 5 --warmup-secs 1 --baseline-secs 2 --sync "$mode" \
            --json "$OUT/$mode-$round.json" >"$OUT/$mode-$round.txt" 2>&1
    done
done
python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
rows = {}
for path in sorted(glob.glob(sys.argv[1] + "/*.json")):
    mode = path.rsplit("/", 1)[1].split("-")[0]
    run = json.load(open(path))
    top, half = run["runs"][0], run["runs"][1]
    raw = run["baseline"]["before"]["direct_write"]["mb_per_sec"]
    cpu = top["cpu"]["process_user_percent"] + top["cpu"]["process_system_percent"]
    row = {
        "ratio": top["mb_per_sec"] / raw,
        "mb_s": top["mb_per_sec"],
        "syncs_s": (top["committer"]["fsyncs"] + top["committer"].get("filesystem_syncs", 0)) / top["elapsed_secs"],
        "p99_ms_half": half["group_commit_latency"]["p99_us"] / 1000,
        "cpu_s_per_gb": cpu / 100 * 1000 / top["mb_per_sec"],
    }
    rows.setdefault(mode, []).append(row)
    print(f"{path}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
for mode, runs in rows.items():
    print(f"median {mode}: " + ", ".join(
        f"{k} {statistics.median(r[k] for r in runs):.2f}" for k in runs[0]))
PY
