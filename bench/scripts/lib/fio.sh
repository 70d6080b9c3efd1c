# Sourced by the fio scripts (device_patterns.sh, read_beside_writes.sh,
# durable_write_cpu.sh) after they set DIR: installs fio if it is missing
# and makes DIR an existing absolute path.
if ! command -v fio >/dev/null; then
    apt-get install -y fio >/dev/null
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
