#!/usr/bin/env bash
# What a catch-up's reads cost a producer's durable writes on this disk
# (issue 11: a 50 MB/s producer beside a catch-up keeps its p99 within 2x
# of alone), with fio, so the read path's part size and parts in flight
# (engine/src/io/read_parts.rs, docs/decisions/0018-read-parts.md) are
# chosen from what the device does.
#
#   DIR=/path/on/the/data/filesystem bash bench/scripts/read_beside_writes.sh
#
# Writes: 16 fallocated files, 16 KiB O_DSYNC writes at queue depth 4 and
# 50 MB/s (a producer's flushes). Reads: 16 files written before, read
# sequentially with O_DIRECT at each SIZES x DEPTHS (READS_ONLY=1: only
# the reads, no writes). Each pattern runs SECONDS_EACH, REPEAT times,
# alternating. Prints read MB/s and the writes' p50 / p99 / p99.9.
set -euo pipefail

DIR=${DIR:-target/read-beside-writes}
SIZES=${SIZES:-"256k 128k 64k"}
DEPTHS=${DEPTHS:-"1 2 4"}
SECONDS_EACH=${SECONDS_EACH:-5}
REPEAT=${REPEAT:-2}

. "$(dirname "$0")/lib/fio.sh"
trap 'rm -rf "$DIR/r" "$DIR/w"' EXIT
mkdir -p "$DIR/r" "$DIR/w"

fio --name=prep --directory="$DIR/r" --nrfiles=16 --filesize=512m --rw=write --bs=1m \
    --direct=1 --ioengine=io_uring --iodepth=8 >/dev/null

common=(--ioengine=io_uring --direct=1 --runtime="$SECONDS_EACH" --time_based
    --output-format=json)
writes=(--name=w --directory="$DIR/w" --nrfiles=16 --filesize=256m --fallocate=native
    --rw=write --file_service_type=roundrobin --sync=dsync --bs=16k --iodepth=4 --rate=50m)

report() {
    python3 -c '
import json, sys
label = sys.argv[1]
read_mb, write = 0.0, None
for job in json.load(sys.stdin)["jobs"]:
    if job["jobname"] == "r":
        read_mb = job["read"]["bw_bytes"] / 1e6
    else:
        write = job["write"]["clat_ns"]
line = "%-16s read %7.0f MB/s" % (label, read_mb)
if write:
    pct = write.get("percentile", {})
    p = lambda k: pct.get(k, 0) / 1e6
    line += "  writes p50 %6.2f  p99 %6.2f  p99.9 %6.2f ms" % (
        p("50.000000"), p("99.000000"), p("99.900000"))
print(line)
' "$1"
}

for _ in $(seq "$REPEAT"); do
    rm -rf "$DIR/w"/*
    fio "${common[@]}" "${writes[@]}" | report "writes alone"
    for size in $SIZES; do
        for depth in $DEPTHS; do
            reads=(--name=r --directory="$DIR/r" --nrfiles=16 --filesize=512m --rw=read
                --file_service_type=roundrobin --bs="$size" --iodepth="$depth")
            rm -rf "$DIR/w"/*
            if [[ ${READS_ONLY:-0} == 1 ]]; then
                fio "${common[@]}" "${reads[@]}" | report "$size x $depth"
            else
                fio "${common[@]}" "${reads[@]}" "${writes[@]}" | report "$size x $depth"
            fi
        done
    done
done
