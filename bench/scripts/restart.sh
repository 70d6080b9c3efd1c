#!/bin/bash
# Restart time (issue 11): a broker holding PARTITIONS partitions with data
# written by sluice-bench for FILL_SECS, stopped cleanly (SIGTERM) and
# restarted, then killed with SIGKILL while a producer writes and
# restarted. "Serving" = Metadata lists every partition with a leader and
# an acks=all produce to the last partition is acknowledged (confluent-kafka
# from the test venv), timed from the restart's spawn. Run from the
# repository root after `cargo build --release -p sluice-server -p sluice-bench`
# and once `bash .ci/test` (or the tests) built target/test-venv.
#   DATA=/mnt/sluice-data/restart PARTITIONS=100 FILL_SECS=30 bench/scripts/restart.sh
#   PARTITIONS=10000 FILL_SECS=10 SEGMENT_BYTES=262144 bench/scripts/restart.sh
# Results: docs/benchmarks.md, "Restart time".
set -u
BIN=${BIN:-target/release}
PY=${PY:-target/test-venv/bin/python}
PARTITIONS=${PARTITIONS:-100}
FILL_SECS=${FILL_SECS:-30}
SEGMENT_BYTES=${SEGMENT_BYTES:-1073741824}
DATA=${DATA:-target/bench-restart}
PORT=${PORT:-19411}
rm -rf "$DATA"
mkdir -p "$DATA/data"
start() {
    "$BIN/sluice" --listen 127.0.0.1:$PORT --admin-listen none --data-dir "$DATA/data" \
        --cores 2 --default-partitions "$PARTITIONS" >>"$DATA/broker.log" 2>&1 &
    BROKER=$!
    SPAWNED=$(date +%s.%N)
}
serving_after() {
    "$PY" - "$PORT" "$PARTITIONS" "$SPAWNED" <<'PY'
import sys, time
from confluent_kafka import Producer, KafkaException
from confluent_kafka.admin import AdminClient
port, partitions, spawned = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
bootstrap = f"127.0.0.1:{port}"
deadline = time.time() + 300
while time.time() < deadline:
    try:
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
        topic = next((t for n, t in meta.topics.items() if n.startswith("restart")), None)
        if topic is None or len(topic.partitions) < partitions or any(
            p.leader < 0 for p in topic.partitions.values()):
            raise KafkaException("not all partitions led yet")
        done = []
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                             "message.timeout.ms": 2000})
        producer.produce(topic.topic, b"probe", partition=partitions - 1,
                         on_delivery=lambda err, msg: done.append(err))
        producer.flush(3)
        if done and done[0] is None:
            print(f"{time.time() - spawned:.2f}")
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
print("never")
PY
}
rss() { awk '/VmRSS/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$BROKER/status"; }
start
trap 'kill -9 $BROKER 2>/dev/null; wait; rm -rf "$DATA"' EXIT
sleep 2
"$BIN/sluice-bench" run --bootstrap 127.0.0.1:$PORT --partitions "$PARTITIONS" \
    --topic-prefix restart --keep-topics --topic-config segment.bytes="$SEGMENT_BYTES" \
    --duration "$FILL_SECS" --warmup 1 --quiet --out "$DATA/out" >"$DATA/fill.txt" 2>&1 ||
    { echo "fill failed"; tail -5 "$DATA/fill.txt"; exit 1; }
echo "filled: $(du -sh "$DATA/data" | cut -f1) in $PARTITIONS partitions; broker RSS $(rss)"
STOPPING=$(date +%s.%N)
kill -TERM $BROKER; wait $BROKER
echo "clean stop took $(echo "$(date +%s.%N) - $STOPPING" | bc) s"
start
echo "clean stop, restart: serving after $(serving_after) s; RSS $(rss)"
"$BIN/sluice-bench" run --bootstrap 127.0.0.1:$PORT --partitions "$PARTITIONS" \
    --topic-prefix restart --keep-topics --duration 30 --warmup 0 --quiet \
    --out "$DATA/out2" >"$DATA/load.txt" 2>&1 &
LOAD=$!
sleep 5
kill -9 $BROKER; wait $BROKER 2>/dev/null
kill $LOAD 2>/dev/null; wait $LOAD 2>/dev/null
start
echo "kill -9 under load, restart: serving after $(serving_after) s; RSS $(rss)"
grep -E "recovered log" "$DATA/broker.log" | tail -1 | cut -c1-200
# Where the kill -9 restart went, from the broker's log of that start: the
# engine's recovery scans, then the producer table and transaction state
# rebuilt from the log (server/src/shard/tail_replay.rs).
python3 - "$DATA/broker.log" <<'PY'
import re
import sys
from datetime import datetime
lines = open(sys.argv[1], errors="replace").read().splitlines()
starts = [i for i, line in enumerate(lines) if "controller thread started" in line]
if not starts:
    sys.exit(0)
run = lines[starts[-1]:]
def at(line):
    return datetime.fromisoformat(line.split()[0].rstrip("Z"))
def last(key):
    times = [at(line) for line in run if key in line]
    return (max(times) - at(run[0])).total_seconds() if times else None
scanned = sum(int(found) for line in run
              for found in re.findall(r"(\d+) bytes scanned", line))
phases = [("engine recovery scans done", last("recovered log")),
          ("transaction state rebuilt", last("transaction state recovered")),
          ("serving", last("sluice is serving"))]
print("kill -9 restart phases (s from the controller's start): " + ", ".join(
    f"{name} {value:.2f}" for name, value in phases if value is not None)
    + f"; engine scanned {scanned / 1e9:.2f} GB")
PY
