#!/bin/sh
# Benchmark rmqtt against Debian's Mosquitto (issue 5): builds rmqtt and the load generator in
# release mode, installs mosquitto if it is missing, runs rmqtt-bench, and leaves
# results/bench.md, results/bench.jsonl and results/bench.png. Arguments go to rmqtt-bench
# (e.g. --quick, --rounds 5, --only fanin-q0,pairs-q1). Honours CARGO_TARGET_DIR.
set -eu
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"

if [ ! -x /usr/sbin/mosquitto ]; then
    echo "bench.sh: installing mosquitto" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends mosquitto
fi
# Debian starts a system mosquitto on 1883; the benchmark uses its own ports and processes.

cargo build --release --bin rmqtt
cargo build --release -p rmqtt-bench
exec "$target/release/rmqtt-bench" \
    --a-cmd "$target/release/rmqtt -c {conf}" \
    --relay-cmd "$target/release/rmqtt-relay {port}" \
    "$@"
