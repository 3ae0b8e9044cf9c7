#!/bin/sh
# Benchmark rmqtt against Debian's Mosquitto (with and without set_tcp_nodelay) and rumqttd
# (issues 5 and 14): builds rmqtt and the load generator in release mode, installs mosquitto if
# it is missing and rumqttd from crates.io into target/bench-peers once (skipped with a note if
# that fails), runs rmqtt-bench, and leaves results/bench.md, results/bench.jsonl and
# results/bench.png. Arguments go to rmqtt-bench (e.g. --quick, --rounds 5, --parity,
# --only fanin-q0,pairs-q1). Honours CARGO_TARGET_DIR; BENCH_NO_RUMQTTD=1 skips rumqttd.
set -eu
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"

if [ ! -x /usr/sbin/mosquitto ]; then
    echo "bench.sh: installing mosquitto" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends mosquitto
fi
# Debian starts a system mosquitto on 1883; the benchmark uses its own ports and processes.

# rumqttd 0.20 from crates.io, built once into a cache under target/ (a few minutes). Its
# lock file pins a `metrics` release that today's rustc rejects, so an unlocked build follows
# a failed --locked one. Bounded in time; the benchmark runs without it if neither works.
peers="$target/bench-peers"
rumqttd="$peers/rumqttd/bin/rumqttd"
if [ "${BENCH_NO_RUMQTTD:-0}" != 1 ] && [ ! -x "$rumqttd" ]; then
    mkdir -p "$peers"
    echo "bench.sh: installing rumqttd into $peers (log: $peers/rumqttd-install.log)" >&2
    for locked in --locked ""; do
        if CARGO_TARGET_DIR="$peers/build" timeout 1200 cargo install rumqttd $locked \
            --root "$peers/rumqttd" >>"$peers/rumqttd-install.log" 2>&1; then
            break
        fi
    done
    [ -x "$rumqttd" ] || echo "bench.sh: rumqttd could not be installed; running without it" >&2
fi

cargo build --release --bin rmqtt
cargo build --release -p rmqtt-bench
exec "$target/release/rmqtt-bench" \
    --a-cmd "$target/release/rmqtt -c {conf}" \
    --relay-cmd "$target/release/rmqtt-relay {port}" \
    --rumqttd-cmd "$rumqttd -q -c {conf}" \
    "$@"
