#!/usr/bin/env bash
# Device ceilings of the write patterns a shard could use (issue 11), with
# fio, so that a flush-path design is judged against what this disk and
# filesystem can do before it is built (docs/decisions/0017-shard-journal.md).
#
#   DIR=/path/on/the/data/filesystem RATE=700m bash bench/scripts/device_patterns.sh
#
# Patterns (io_uring, O_DIRECT, SECONDS each):
#   per-partition: what Sluice does today (--sync-mode write-through): each
#     partition's flush is one O_DSYNC write into its own fallocated
#     (unwritten) segment file. 1000 files x 64 KiB (the 1,000-partition
#     bench's flush size) at queue depth 20, and 16 files x 128 KiB at 10,
#     at full speed and, for 1000, at RATE (the bench's operating point),
#     also in bursts of 15 submitted and completed together (one produce
#     request of the bench carries ~15 partitions' batches).
#   extents: one file, 64 KiB O_DSYNC writes at queue depth 16, into
#     fallocated space versus space written before (the extent conversion
#     and journal commit each durable write into fresh space costs).
#   journal: a shard journal: two pre-written journal files (one per shard)
#     taking 512 KiB O_DSYNC writes at queue depth 4, while the 1000
#     segment files take the same bytes as plain (not durable) 64 KiB
#     writes: at full speed and with both at RATE. An append would be
#     acknowledged by its journal write.
# Prints per job: MB/s, mean and p50 / p99 completion latency.
set -euo pipefail

DIR=${DIR:-target/device-patterns}
RATE=${RATE:-700m}
SECONDS_EACH=${SECONDS_EACH:-6}

. "$(dirname "$0")/lib/fio.sh"
trap 'rm -rf "$DIR/seg" "$DIR/one" "$DIR/jrn"' EXIT

common=(--ioengine=io_uring --direct=1 --runtime="$SECONDS_EACH" --time_based
    --output-format=json)

report() {
    python3 -c '
import json, sys
label = sys.argv[1]
for job in json.load(sys.stdin)["jobs"]:
    w = job["write"]
    pct = w["clat_ns"].get("percentile", {})
    p = lambda k: pct.get(k, 0) / 1e6
    print("%-34s %-4s %8.1f MB/s  clat mean %6.3f ms  p50 %6.3f  p99 %6.3f" % (
        label, job["jobname"], w["bw_bytes"] / 1e6, w["clat_ns"]["mean"] / 1e6,
        p("50.000000"), p("99.000000")))
' "$1"
}

segments() { # files size_mib
    rm -rf "$DIR/seg"
    mkdir -p "$DIR/seg"
    echo --name=seg --directory="$DIR/seg" --nrfiles="$1" --filesize="$2"m \
        --fallocate=native --rw=write --file_service_type=random
}

fio "${common[@]}" $(segments 1000 16) --sync=dsync --bs=64k --iodepth=20 |
    report "per-partition 1000 x 64k, max"
fio "${common[@]}" $(segments 1000 16) --sync=dsync --bs=64k --iodepth=20 --rate="$RATE" |
    report "per-partition 1000 x 64k @ $RATE"
fio "${common[@]}" $(segments 1000 16) --sync=dsync --bs=64k --iodepth=30 --rate="$RATE" \
    --iodepth_batch_submit=15 --iodepth_batch_complete_min=15 |
    report "per-partition 1000 x 64k @ $RATE, bursts"
fio "${common[@]}" $(segments 16 1024) --sync=dsync --bs=128k --iodepth=10 |
    report "per-partition 16 x 128k, max"

rm -rf "$DIR/one"
mkdir -p "$DIR/one"
fio "${common[@]}" --name=fresh --filename="$DIR/one/f" --size=20g --fallocate=native \
    --rw=write --sync=dsync --bs=64k --iodepth=16 | report "extents: fallocated"
fio --name=prep --filename="$DIR/one/f" --size=4g --rw=write --bs=1m --direct=1 \
    --ioengine=io_uring --iodepth=4 >/dev/null
fio "${common[@]}" --name=written --filename="$DIR/one/f" --size=4g \
    --rw=write --sync=dsync --bs=64k --iodepth=16 | report "extents: written before"
rm -rf "$DIR/one"

rm -rf "$DIR/jrn"
mkdir -p "$DIR/jrn"
fio --name=prep --directory="$DIR/jrn" --nrfiles=2 --filesize=1g --rw=write --bs=1m \
    --direct=1 --ioengine=io_uring --iodepth=4 >/dev/null
journal=(--name=jrn --filename="$DIR/jrn/prep.0.0:$DIR/jrn/prep.1.0" --size=2g
    --rw=write --sync=dsync --bs=512k --iodepth=4)
fio "${common[@]}" "${journal[@]}" $(segments 1000 16) --bs=64k --iodepth=20 |
    report "journal + plain segments, max"
fio "${common[@]}" "${journal[@]}" --rate="$RATE" $(segments 1000 16) --bs=64k --iodepth=20 \
    --rate="$RATE" | report "journal + plain segments @ $RATE"
