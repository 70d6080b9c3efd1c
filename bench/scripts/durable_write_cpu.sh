#!/usr/bin/env bash
# The machine's CPU per durable write (issue 11: broker CPU per GB at 50
# MB/s). At 50 MB/s the bench's producer (linger 0) sends ~17,000 produce
# requests a second and the broker does one durable write per request;
# this measures what that many O_DSYNC writes cost with nothing else
# running: fio, 16 files, 4 KiB O_DIRECT O_DSYNC writes at RATE_IOPS a
# second, queue depth 4, SECONDS_EACH seconds, into fallocated space and
# into space written before, REPEAT times alternating. Prints per run the
# whole machine's busy CPU-seconds (/proc/stat, fio and kernel threads
# included), per write, and the device writes per durable write
# (/proc/diskstats).
#
#   DIR=/path/on/the/data/filesystem bash bench/scripts/durable_write_cpu.sh
set -euo pipefail

DIR=${DIR:-target/durable-write-cpu}
RATE_IOPS=${RATE_IOPS:-15000}
SECONDS_EACH=${SECONDS_EACH:-8}
REPEAT=${REPEAT:-2}

. "$(dirname "$0")/lib/fio.sh"
trap 'rm -rf "$DIR/w"' EXIT
device=$(basename "$(df --output=source "$DIR" | tail -1)")
ticks=$(getconf CLK_TCK)

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
device_writes() { awk -v d="$device" '$3==d{print $8}' /proc/diskstats; }

run() { # label fio-args...
    local label=$1
    shift
    local busy0 writes0
    busy0=$(busy)
    writes0=$(device_writes)
    fio --name=w --directory="$DIR/w" --nrfiles=16 --filesize=256m --rw=write \
        --file_service_type=roundrobin --bs=4k --ioengine=io_uring --direct=1 --sync=dsync \
        --iodepth=4 --rate_iops="$RATE_IOPS" --runtime="$SECONDS_EACH" --time_based \
        --output-format=json "$@" >"$DIR/out.json"
    python3 - "$label" "$busy0" "$(busy)" "$writes0" "$(device_writes)" "$ticks" "$DIR/out.json" <<'PY'
import json, sys
label, busy0, busy1, writes0, writes1, ticks, path = sys.argv[1:]
job = json.load(open(path))["jobs"][0]["write"]
ops = job["total_ios"]
cpu = (int(busy1) - int(busy0)) / int(ticks)
pct = job["clat_ns"]["percentile"]
device = (int(writes1) - int(writes0)) / ops if writes0 else float("nan")
print("%-12s %6.0f writes/s  machine CPU %5.2f s (%4.1f us per write)  device writes per write %.2f  p50 %.3f p99 %.3f ms"
      % (label, job["iops"], cpu, cpu / ops * 1e6, device,
         pct["50.000000"] / 1e6, pct["99.000000"] / 1e6))
PY
}

for _ in $(seq "$REPEAT"); do
    rm -rf "$DIR/w"
    mkdir -p "$DIR/w"
    run fallocated --fallocate=native
    rm -rf "$DIR/w"
    mkdir -p "$DIR/w"
    fio --name=w --directory="$DIR/w" --nrfiles=16 --filesize=256m --rw=write --bs=1m \
        --ioengine=io_uring --direct=1 --iodepth=8 >/dev/null
    sync
    sleep 6 # the journal commits the written extents before the run
    run written --fallocate=none --overwrite=1
done
